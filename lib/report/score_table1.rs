//! SCORE's Table 1 on digits from the sweep of
//! `sweeps/score-table1-digits.toml` (PGD-AT with each `--loss` at each
//! `--lr`, the attack step on the `best` and `last` checkpoints): one row
//! per finished grid point with the best validation epoch and the clean,
//! PGD-20 and AutoAttack accuracy in % (one decimal) of both checkpoints.
//!
//! Writes `table.csv` (columns [`COLUMNS`]) and `table.md`. Rows go by
//! loss, then learning rate, each in the order the grid lists them.
use super::finished_points;
use crate::checkpoint;
use crate::csvio;
use crate::error::{Error, Result};
use crate::fsutil::write_text;
use crate::layout::JobDir;
use crate::sweep::{grid::Step, results::Row};
use std::path::Path;

/// The columns of table.csv.
pub const COLUMNS: [&str; 9] = [
    "loss",
    "lr",
    "best_epoch",
    "best_clean",
    "best_pgd20",
    "best_aa",
    "last_clean",
    "last_pgd20",
    "last_aa",
];

/// results.csv's accuracy columns of one checkpoint's evaluation, in the
/// order of table.csv.
const ACCURACIES: [&str; 3] = ["clean_acc", "acc_pgd20", "acc_aa"];

/// One row of the table: loss, lr, best epoch, then the six accuracies in
/// % rounded to one decimal (text as written).
fn table_row(point: &Row) -> Result<Vec<String>> {
    let corrupt = |what: String| Error::CorruptInput {
        path: point.dir.clone(),
        reason: what,
        fix: "run the grid sweeps/score-table1-digits.toml (make score-table1-digits)".into(),
    };
    let param = |k: &str| {
        point
            .params
            .get(k)
            .cloned()
            .ok_or_else(|| corrupt(format!("no grid parameter `{k}`")))
    };
    let weights = JobDir::at(&point.dir)
        .train_step(Step::Train.name())
        .weights();
    let meta = checkpoint::read_meta(&weights)?;
    let best_epoch = meta.hyperparameters["validation"]["best_epoch"]
        .as_u64()
        .ok_or_else(|| corrupt("its model has no validation best_epoch".into()))?;
    let mut row = vec![param("loss")?, param("lr")?, best_epoch.to_string()];
    for checkpoint in ["best", "last"] {
        for acc in ACCURACIES {
            let key = format!("attack_{checkpoint}_{acc}");
            let v: f64 = point
                .metrics
                .get(&key)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| corrupt(format!("no metric `{key}`")))?;
            row.push(format!("{:.1}", 100.0 * v));
        }
    }
    Ok(row)
}

/// The position of `value` among the distinct values of parameter `key` in
/// plan order.
fn rank(points: &[Row], key: &str, value: Option<&String>) -> usize {
    let mut seen: Vec<&String> = Vec::new();
    for p in points {
        if let Some(v) = p.params.get(key) {
            if !seen.contains(&v) {
                seen.push(v);
            }
        }
    }
    value
        .and_then(|v| seen.iter().position(|s| *s == v))
        .unwrap_or(usize::MAX)
}

/// Rebuilds table.csv and table.md in `out` from the sweep output `runs`;
/// returns the Markdown table.
///
/// Errors: [`Error::MissingInput`] without finished points;
/// [`Error::CorruptInput`] naming a point without the loss/lr parameters,
/// a best epoch or a checkpoint's accuracy; write errors.
pub fn score_table1(runs: &Path, out: &Path) -> Result<String> {
    let mut points = finished_points(runs, Some("score-table1-digits"))?;
    let order = points.clone();
    points.sort_by_key(|p| {
        (
            rank(&order, "loss", p.params.get("loss")),
            rank(&order, "lr", p.params.get("lr")),
        )
    });
    let rows = points.iter().map(table_row).collect::<Result<Vec<_>>>()?;
    csvio::write_table(&out.join("table.csv"), &COLUMNS, &rows)?;
    let mut md = String::from(
        "| loss | lr | best epoch | best: clean | PGD-20 | AA | last: clean | PGD-20 | AA |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for r in &rows {
        md.push_str(&format!("| {} |\n", r.join(" | ")));
    }
    write_text(&out.join("table.md"), &md)?;
    Ok(md)
}
