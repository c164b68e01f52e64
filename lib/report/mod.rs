//! Reports rebuilt from finished runs: tables (CSV, Markdown) and figures
//! (SVG). [`toy`] rebuilds TASER Table 1 and Figure 2 from the toy runs;
//! [`score_toy`] SCORE's Figures 1–3 from the toy-score runs.
pub mod score_toy;
pub mod svg;
pub mod toy;

use crate::checkpoint::{self, CheckpointMeta};
use crate::error::{Error, Result};
use crate::fsutil::write_bytes_atomically;
use std::path::{Path, PathBuf};

/// Writes a text file atomically, creating its folder.
pub fn write_text(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    write_bytes_atomically(path, text.as_bytes())
}

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

/// Every finished run of `dataset` under `runs` (sub-folders holding a
/// `model.safetensors` with its sidecar): the checkpoint's path, its sidecar
/// and a lookup of its final metrics that names the run when one is
/// missing. `make_target` is the Makefile target that trains the runs (the
/// fix named when there are none).
pub fn finished_runs(
    runs: &Path,
    dataset: &str,
    make_target: &str,
) -> Result<Vec<(PathBuf, CheckpointMeta)>> {
    let entries = std::fs::read_dir(runs).map_err(|e| Error::MissingInput {
        path: runs.to_path_buf(),
        reason: e.to_string(),
        fix: format!("run `make {make_target}` (it trains the runs first)"),
    })?;
    let mut out = Vec::new();
    for entry in entries.filter_map(|e| e.ok()) {
        let ckpt = entry.path().join("model.safetensors");
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
