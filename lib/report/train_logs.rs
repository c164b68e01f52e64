//! The per-epoch logs of a sweep's training runs, copied out of the run
//! folders beside an analysis: `<label>-metrics.csv` for each finished
//! grid point, the label being the value of one grid parameter.
use super::finished_points;
use crate::error::{Error, Result};
use crate::fsutil::{ensure_writable_dir, write_bytes_atomically};
use crate::layout::{JobDir, METRICS};
use crate::sweep::grid::Step;
use std::path::{Path, PathBuf};

/// Copies each finished point's per-epoch log (its model step's metrics
/// file, byte for byte) of the sweep output `runs` to
/// `out/<value of label_by>-metrics.csv` (creating `out`); returns the
/// files written. Every point's label is checked before any file is
/// written.
///
/// Errors: [`Error::MissingInput`] without finished points or when a
/// point's log cannot be read; [`Error::CorruptInput`] when a point has no
/// parameter `label_by` or two points share its value; write errors.
pub fn train_logs(runs: &Path, label_by: &str, out: &Path) -> Result<Vec<PathBuf>> {
    let points = finished_points(runs, None)?;
    let mut copies: Vec<(PathBuf, PathBuf)> = Vec::new();
    for p in &points {
        let label = p.params.get(label_by).ok_or_else(|| Error::CorruptInput {
            path: p.dir.clone(),
            reason: format!("no grid parameter `{label_by}`"),
            fix: "give --label-by a parameter of the grid (sweep plan lists them)".into(),
        })?;
        let to = out.join(format!("{label}-{METRICS}"));
        if copies.iter().any(|(_, t)| *t == to) {
            return Err(Error::CorruptInput {
                path: runs.to_path_buf(),
                reason: format!("two grid points have {label_by} = {label}"),
                fix: "give --label-by a parameter that tells the points apart".into(),
            });
        }
        let job = JobDir::at(&p.dir);
        let from = [Step::Train, Step::Finetune]
            .iter()
            .map(|s| job.train_step(s.name()).metrics())
            .find(|m| m.is_file())
            .unwrap_or_else(|| job.train_step(Step::Train.name()).metrics());
        copies.push((from, to));
    }
    ensure_writable_dir(out)?;
    for (from, to) in &copies {
        let bytes = std::fs::read(from).map_err(|e| Error::MissingInput {
            path: from.clone(),
            reason: e.to_string(),
            fix: "run the sweep again (sweep run) to finish its training".into(),
        })?;
        write_bytes_atomically(to, &bytes)?;
    }
    Ok(copies.into_iter().map(|(_, to)| to).collect())
}
