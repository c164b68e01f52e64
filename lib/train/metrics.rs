//! `metrics.csv` (one row per epoch, written and read here) and the
//! summary metrics of a finished run (the sidecar's `metrics` and the
//! `key = value` lines `train` prints).
use crate::csvio;
use crate::error::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// One row of `metrics.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub lr: f64,
    /// The training attack's ε at the epoch's last step: ε_s of the
    /// `--eps-warmup-epochs` ramp, ε·min(1, (s+1)/(E·S)), the configured ε
    /// after it or without one; 0 for a run with no training attack
    /// (standard training, regression, toy-score). Empty in rows written
    /// before the column existed.
    #[serde(default)]
    pub train_eps: Option<f64>,
    /// The method's task loss (without the regulariser), averaged over the epoch.
    pub train_loss: f64,
    pub train_acc: Option<f64>,
    pub test_loss: f64,
    pub test_acc: Option<f64>,
    /// Mean squared error on the out-of-distribution split (toy-sin).
    pub ood_loss: Option<f64>,
    /// Mean Stein penalty R over the epoch's batches (before λ).
    pub penalty: Option<f64>,
    /// Mean and standard deviation of the Stein residuals r(x) of the epoch.
    pub residual_mean: Option<f64>,
    pub residual_std: Option<f64>,
    /// toy-score: R_Standard, R_Madry and R_SCORE of the run's distance after
    /// the epoch, estimated on the test split (grid inner maximum).
    #[serde(default)]
    pub risk_standard: Option<f64>,
    #[serde(default)]
    pub risk_madry: Option<f64>,
    #[serde(default)]
    pub risk_score: Option<f64>,
    /// The penalty's instruments after the epoch (TASER or grad-norm
    /// penalty, λ > 0, or the TASER penalty watched at λ = 0 with `--scores`; see
    /// [`crate::stein::penalty::instruments`]): mean ‖∇ₓm‖ and mean m
    /// on the fixed probe batch, λR / (train_loss + λR) (the penalty's share of
    /// the total loss, in [0, 1)), the mean cosine of s̃ and
    /// ∇ₓm, the one-probe Hutchinson noise share; and the global centre D
    /// the epoch used (`--center global`).
    #[serde(default)]
    pub grad_norm_mean: Option<f64>,
    #[serde(default)]
    pub probe_mean: Option<f64>,
    #[serde(default)]
    pub penalty_ratio: Option<f64>,
    #[serde(default)]
    pub score_grad_cosine: Option<f64>,
    #[serde(default)]
    pub hutchinson_noise_share: Option<f64>,
    /// The plain estimator's expected R̂ at the run's K and the unbiased
    /// estimate of R on the probe batch (full Hutchinson residual only).
    #[serde(default)]
    pub penalty_plain: Option<f64>,
    #[serde(default)]
    pub penalty_unbiased: Option<f64>,
    #[serde(default)]
    pub global_center: Option<f64>,
    /// Clean and PGD-K accuracy on the validation split after the epoch
    /// (`--val-size` > 0, every `--val-every` epochs; `--val-attack`).
    #[serde(default)]
    pub val_acc: Option<f64>,
    #[serde(default)]
    pub val_robust_acc: Option<f64>,
    pub seconds: f64,
}

/// Writes `rows` as `metrics.csv` at `path`, atomically.
pub fn write_metrics(path: &Path, rows: &[EpochMetrics]) -> Result<()> {
    csvio::write_records(path, rows)
}

/// Reads a run's `metrics.csv` (empty when there is none yet).
///
/// Errors: [`crate::Error::CorruptInput`] naming the line and column of a
/// value that does not fit.
pub fn read_metrics(path: &Path) -> Result<Vec<EpochMetrics>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let fixes = csvio::Fixes {
        missing: "train the run again into a new output directory",
        corrupt: "delete the output directory and train again",
    };
    csvio::read_records(path, fixes)
}

/// The final metrics of a run from its rows: the last epoch's losses,
/// accuracies, penalty and risks, the global centre (`--center global`),
/// the training time over all runs (`train_seconds`) and, when this run
/// resumed another, its own time (`seconds_this_run`).
pub fn summary_metrics(
    rows: &[EpochMetrics],
    global_center: Option<f64>,
    seconds_this_run: Option<f64>,
) -> BTreeMap<String, f64> {
    let last = rows.last().expect("at least one epoch");
    let mut metrics = BTreeMap::new();
    metrics.insert("test_loss".into(), last.test_loss);
    metrics.insert("train_loss".into(), last.train_loss);
    for (key, value) in [
        ("test_acc", last.test_acc),
        ("train_acc", last.train_acc),
        ("ood_loss", last.ood_loss),
        ("penalty", last.penalty),
        ("residual_mean", last.residual_mean),
        ("residual_std", last.residual_std),
        ("risk_standard", last.risk_standard),
        ("risk_madry", last.risk_madry),
        ("risk_score", last.risk_score),
        ("grad_norm_mean", last.grad_norm_mean),
        ("probe_mean", last.probe_mean),
        ("penalty_ratio", last.penalty_ratio),
        ("score_grad_cosine", last.score_grad_cosine),
        ("hutchinson_noise_share", last.hutchinson_noise_share),
        ("penalty_plain", last.penalty_plain),
        ("penalty_unbiased", last.penalty_unbiased),
        ("stein_global_center", global_center),
        ("val_acc", last.val_acc),
        ("val_robust_acc", last.val_robust_acc),
        ("seconds_this_run", seconds_this_run),
    ] {
        if let Some(v) = value {
            metrics.insert(key.into(), v);
        }
    }
    metrics.insert("train_seconds".into(), rows.iter().map(|r| r.seconds).sum());
    metrics
}

/// One line of progress for batch logs.
pub fn epoch_line(row: &EpochMetrics, epochs: usize) -> String {
    let opt =
        |name: &str, v: Option<f64>| v.map(|v| format!("  {name} {v:.4}")).unwrap_or_default();
    format!(
        "epoch {:>3}/{epochs}  lr {:.4e}  train loss {:.4}{}  test loss {:.4}{}{}{}{}{}{}{}{}{}  {:.1}s",
        row.epoch,
        row.lr,
        row.train_loss,
        opt("acc", row.train_acc),
        row.test_loss,
        opt("acc", row.test_acc),
        opt("ood", row.ood_loss),
        opt("penalty", row.penalty),
        opt("residual", row.residual_mean),
        opt("R_standard", row.risk_standard),
        opt("R_madry", row.risk_madry),
        opt("R_score", row.risk_score),
        opt("val acc", row.val_acc),
        opt("val robust", row.val_robust_acc),
        row.seconds
    )
}

/// The best validated epoch of `rows` (1-based) and its criterion:
/// `val_robust_acc`, or `val_acc` under `--val-attack none`; the earliest
/// on ties. `None` without validation.
pub fn best_validated(rows: &[EpochMetrics]) -> Option<(usize, f64)> {
    rows.iter()
        .filter_map(|r| Some((r.epoch, r.val_robust_acc.or(r.val_acc)?)))
        .fold(None, |b: Option<(usize, f64)>, (e, c)| match b {
            Some((_, bc)) if bc >= c => b,
            _ => Some((e, c)),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(epoch: usize, seconds: f64) -> EpochMetrics {
        EpochMetrics {
            epoch,
            lr: 0.1,
            train_eps: Some(0.05),
            train_loss: 1.0 / epoch as f64,
            train_acc: Some(0.5),
            test_loss: 2.0,
            test_acc: None,
            ood_loss: None,
            penalty: Some(0.25),
            residual_mean: None,
            residual_std: None,
            risk_standard: None,
            risk_madry: None,
            risk_score: None,
            grad_norm_mean: Some(1.5),
            probe_mean: Some(-0.5),
            penalty_ratio: None,
            score_grad_cosine: None,
            hutchinson_noise_share: Some(0.25),
            penalty_plain: None,
            penalty_unbiased: None,
            val_acc: None,
            val_robust_acc: None,
            global_center: None,
            seconds,
        }
    }

    #[test]
    fn rows_survive_a_write_and_read_and_a_missing_file_reads_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.csv");
        assert!(read_metrics(&path).unwrap().is_empty());
        let rows = vec![row(1, 1.5), row(2, 2.5)];
        write_metrics(&path, &rows).unwrap();
        assert_eq!(read_metrics(&path).unwrap(), rows);
    }

    /// A run resumed across the upgrade keeps its old rows: a metrics.csv
    /// written before `train_eps` existed reads with the column empty.
    #[test]
    fn rows_written_before_train_eps_read_with_it_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.csv");
        write_metrics(&path, &[row(1, 1.5)]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let k = text
            .lines()
            .next()
            .unwrap()
            .split(',')
            .position(|h| h == "train_eps")
            .unwrap();
        let old: Vec<String> = text
            .lines()
            .map(|l| {
                let mut cells: Vec<&str> = l.split(',').collect();
                cells.remove(k);
                cells.join(",")
            })
            .collect();
        std::fs::write(&path, old.join("\n") + "\n").unwrap();
        let read = read_metrics(&path).unwrap();
        assert_eq!(read[0].train_eps, None);
        assert_eq!(read[0].train_loss, 1.0);
    }

    #[test]
    fn the_summary_is_the_last_row_with_the_time_of_every_epoch() {
        let m = summary_metrics(&[row(1, 1.5), row(2, 2.5)], Some(0.75), None);
        assert_eq!(m["train_loss"], 0.5);
        assert_eq!(m["train_acc"], 0.5);
        assert_eq!(m["penalty"], 0.25);
        assert_eq!(m["stein_global_center"], 0.75);
        assert_eq!(m["train_seconds"], 4.0);
        assert!(!m.contains_key("test_acc") && !m.contains_key("seconds_this_run"));
    }
}
