//! Reports rebuilt from finished runs: tables (CSV, Markdown) and figures
//! (SVG and PNG, drawn by [`crate::figure`]). [`toy`] rebuilds TASER Table 1
//! and Figure 2 from the toy runs; [`score_toy`] SCORE's Figures 1–3 from
//! the toy-score runs; [`score_table1`] SCORE's Table 1 on digits and
//! [`digits_methods`] the methods table with its bootstrap, from their
//! sweeps; [`train_logs`] copies a sweep's per-epoch training logs;
//! [`diagnose`] takes the TASER penalty of checkpoints apart;
//! [`conclusion`] says in one sentence what bootstrap tables show. Each figure is a function of a CSV written beside
//! it, so [`redraw`] draws the figures of an output folder again without
//! the runs.
pub mod conclusion;
pub mod diagnose;
pub mod digits_methods;
pub mod run_record;
pub mod score_table1;
pub mod score_toy;
pub mod toy;
pub mod train_logs;

use crate::checkpoint::{self, CheckpointMeta};
use crate::csvio;
use crate::error::{Error, Result};
use crate::layout::{JobDir, TrainRun, COMPARISONS, JOBS_DIR};
use crate::stats::plot::{self, Deltas};
use crate::sweep::{grid::Step, results, status::JobStatus};
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// Mean and sample standard deviation (n − 1; 0 for one value).
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = if values.len() > 1 {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// Every finished run of `dataset` under `runs` (the folders of
/// [`run_folders`] holding final weights with their sidecar): the checkpoint's path, its sidecar
/// and a lookup of its final metrics that names the run when one is
/// missing. `make_target` is the Makefile target that trains the runs (the
/// fix named when there are none).
pub fn finished_runs(
    runs: &Path,
    dataset: &str,
    make_target: &str,
) -> Result<Vec<(PathBuf, CheckpointMeta)>> {
    let mut out = Vec::new();
    for folder in run_folders(runs, make_target)? {
        let ckpt = folder.weights();
        if !checkpoint::sidecar_path(&ckpt).exists() {
            continue;
        }
        let meta = checkpoint::read_meta(&ckpt)?;
        if meta.dataset == dataset {
            out.push((ckpt, meta));
        }
    }
    if out.is_empty() {
        return Err(Error::MissingInput {
            path: runs.to_path_buf(),
            reason: format!("no finished {dataset} run in it"),
            fix: format!("run `make {make_target}`"),
        });
    }
    Ok(out)
}

/// The training folders under `runs`: for a `sweep run --out` folder (one
/// holding `jobs/`), the model folder (`train/` or `finetune/`) of each
/// finished grid point; otherwise each sub-folder.
///
/// Errors: [`Error::MissingInput`] when `runs` cannot be read, naming
/// `make <make_target>` as the fix.
pub fn run_folders(runs: &Path, make_target: &str) -> Result<Vec<TrainRun>> {
    let missing = |e: std::io::Error| Error::MissingInput {
        path: runs.to_path_buf(),
        reason: e.to_string(),
        fix: format!("run `make {make_target}` (it trains the runs first)"),
    };
    if runs.join(JOBS_DIR).is_dir() {
        let rows = results::scan(runs)?;
        return Ok(rows
            .iter()
            .filter(|r| r.status == JobStatus::Ok)
            .flat_map(|r| {
                [Step::Train, Step::Finetune].map(|s| JobDir::at(&r.dir).train_step(s.name()))
            })
            .filter(|t| t.weights().is_file())
            .collect());
    }
    let entries = std::fs::read_dir(runs).map_err(missing)?;
    Ok(entries
        .filter_map(|e| e.ok())
        .map(|e| TrainRun::at(e.path()))
        .collect())
}

/// The finished grid points of the sweep whose `--out` is `runs` (rows of
/// its results, in plan order). `make_target`, when the report belongs to
/// one shipped grid, is the Makefile target that runs it (named in the
/// fixes).
///
/// Errors: [`Error::MissingInput`] naming `runs` when it holds no `jobs/`
/// folder (it is no `sweep run --out` folder) or none of its grid points
/// has finished (the reason counts the pending and failed ones);
/// [`results::scan`]'s errors when `jobs/` cannot be read.
pub fn finished_points(runs: &Path, make_target: Option<&str>) -> Result<Vec<results::Row>> {
    let shipped = make_target
        .map(|t| format!(" (`make {t}` runs its grid)"))
        .unwrap_or_default();
    if !runs.join(JOBS_DIR).is_dir() {
        return Err(Error::MissingInput {
            path: runs.to_path_buf(),
            reason: format!("no {JOBS_DIR}/ folder in it: it is not the --out folder of a sweep"),
            fix: format!("give --runs the folder of `sweep run GRID --out DIR`{shipped}"),
        });
    }
    let all = results::scan(runs)?;
    let count = |s: JobStatus| all.iter().filter(|r| r.status == s).count();
    let (pending, failed) = (count(JobStatus::Pending), count(JobStatus::Failed));
    let rows: Vec<results::Row> = all
        .into_iter()
        .filter(|r| r.status == JobStatus::Ok)
        .collect();
    if rows.is_empty() {
        return Err(Error::MissingInput {
            path: runs.to_path_buf(),
            reason: format!("no finished grid point in it ({pending} pending, {failed} failed)"),
            fix: format!(
                "finish the sweep: run `sweep run GRID --out {d}` again{shipped}; \
                 `sweep collect {d}` writes why points failed into results.csv",
                d = runs.display()
            ),
        });
    }
    Ok(rows)
}

/// A final metric of a run's sidecar, or an error naming the sidecar.
pub fn run_metric(ckpt: &Path, meta: &CheckpointMeta, key: &str) -> Result<f64> {
    meta.metrics
        .get(key)
        .copied()
        .ok_or_else(|| Error::CorruptInput {
            path: checkpoint::sidecar_path(ckpt),
            reason: format!("no metric `{key}`"),
            fix: "retrain the run with this version of `train`".into(),
        })
}

/// Reads every row of a CSV that a report wrote (to redraw its figure).
///
/// Errors: [`Error::MissingInput`] when it cannot be opened,
/// [`Error::CorruptInput`] when a row does not fit `T`; both name
/// `rebuild`, the command that writes the file.
pub fn read_csv<T: DeserializeOwned>(path: &Path, rebuild: &str) -> Result<Vec<T>> {
    let missing = format!("run `{rebuild}` (it writes this file)");
    let corrupt = format!("run `{rebuild}` again to rewrite it");
    let fixes = csvio::Fixes {
        missing: &missing,
        corrupt: &corrupt,
    };
    csvio::read_records(path, fixes)
}

/// Draws the figures of an output folder again from the CSVs beside them,
/// without the runs: `predictions` from a `report toy-table1` folder's
/// predictions.csv, `figure1`–`figure3` from a `report score-toy` folder's
/// curves.csv, runs.csv and figure3.csv, `forest` and `delta_vs_<vary>`
/// from a `bootstrap` folder's comparisons.csv. Each as .svg and .png;
/// returns the files written.
///
/// Errors: [`Error::MissingInput`] when `dir` holds none of these CSVs; the
/// readers' errors when one does not parse.
pub fn redraw(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    if dir.join(toy::PREDICTIONS_CSV).is_file() {
        written.extend(toy::redraw(dir)?);
    }
    if dir.join(score_toy::figures::CURVES_CSV).is_file() {
        written.extend(score_toy::figures::redraw(dir)?);
    }
    if dir.join(COMPARISONS).is_file() {
        written.extend(plot::draw_all(&Deltas::read(&dir.join(COMPARISONS))?, dir)?);
    }
    if written.is_empty() {
        return Err(Error::MissingInput {
            path: dir.to_path_buf(),
            reason: format!(
                "no {}, {} or {COMPARISONS} in it",
                toy::PREDICTIONS_CSV,
                score_toy::figures::CURVES_CSV
            ),
            fix: "name a folder that `report` or `bootstrap` wrote".into(),
        });
    }
    Ok(written)
}
