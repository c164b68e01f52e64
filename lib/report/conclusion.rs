//! The closing sentence of a comparison (`report conclusion`, the last line
//! of `make demo`): for each bootstrap output named, which of its pair rows
//! (not the average rows) have a Δ whose interval lies above 0, below 0,
//! or around 0, on one metric, with Δ and the interval in percentage
//! points:
//!
//! ```text
//!   On Robust (AA), TASER vs the λ = 0 fine-tune: higher on Standard
//!   (+8.0 [+5.2, +11.1]), lower on PGD-AT (−5.0 [−7.5, −2.5]); TASER vs …
//! ```
//!
//! Each interval is the row's own (comparisons.csv's `<metric>_lower`,
//! `_upper`), as the table prints it.
use crate::error::{Error, Result};
use crate::stats::plot::{Delta, Deltas};
use crate::stats::table::metric_name;
use std::path::Path;

/// One comparison of the sentence: a bootstrap's comparisons.csv and what
/// it compares ("TASER vs the λ = 0 fine-tune").
#[derive(Debug, Clone)]
pub struct Clause<'a> {
    pub comparisons: &'a Path,
    pub subject: &'a str,
}

/// The sentence over `clauses` on `metric` (a column prefix of
/// comparisons.csv: clean, aa, spsa, robust_avg, …).
///
/// Errors: [`Error::MissingInput`] / [`Error::CorruptInput`] for a
/// comparisons.csv that cannot be read; [`Error::InvalidArgument`] naming
/// `--metric` when a file has no such column or no pair row with it.
pub fn conclusion(clauses: &[Clause], metric: &str) -> Result<String> {
    let mut parts = Vec::with_capacity(clauses.len());
    let mut level = 0.95;
    for c in clauses {
        let deltas = Deltas::read(c.comparisons)?;
        level = deltas.level;
        let rows: Vec<(&str, Delta)> = deltas
            .rows
            .iter()
            .filter(|r| !r.average)
            .filter_map(|r| Some((r.label.as_str(), *r.metrics.get(metric)?)))
            .collect();
        if rows.is_empty() {
            return Err(Error::invalid(
                "--metric",
                metric,
                format!(
                    "{} has no pair row with it; its metrics: {}",
                    c.comparisons.display(),
                    deltas.metrics.join(", ")
                ),
            ));
        }
        parts.push(format!("{}: {}", c.subject, clause(&rows)));
    }
    Ok(format!(
        "On {} ({:.0}% paired bootstrap intervals, points), {}.",
        metric_name(metric),
        100.0 * level,
        parts.join("; ")
    ))
}

/// "higher on A (+x [l, u]), lower on B (…), no difference detected on C (…)".
fn clause(rows: &[(&str, Delta)]) -> String {
    let words = ["higher on", "lower on", "no difference detected on"];
    let side = |d: &Delta| match (d.lower > 0.0, d.upper < 0.0) {
        (true, _) => 0,
        (_, true) => 1,
        _ => 2,
    };
    let mut out: Vec<String> = Vec::new();
    for (k, word) in words.iter().enumerate() {
        let listed: Vec<String> = rows
            .iter()
            .filter(|(_, d)| side(d) == k)
            .map(|(l, d)| format!("{l} {}", cell(d)))
            .collect();
        if !listed.is_empty() {
            out.push(format!("{word} {}", listed.join(", ")));
        }
    }
    out.join(", ")
}

/// "(+8.0 [+5.2, +11.1])" from fractions.
fn cell(d: &Delta) -> String {
    format!(
        "({:+.1} [{:+.1}, {:+.1}])",
        100.0 * d.delta,
        100.0 * d.lower,
        100.0 * d.upper
    )
    .replace('-', "−")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_sorted_by_where_their_interval_lies() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("comparisons.csv");
        std::fs::write(
            &csv,
            "row,kind,family,strength,seeds,points,overhead,aa_delta,aa_lower,aa_upper,interval,level\n\
             Standard,pair,Standard,0.1,1,200,,0.08,0.052,0.111,percentile,0.95\n\
             PGD-AT,pair,PGD-AT,0.1,1,200,,-0.05,-0.075,-0.025,percentile,0.95\n\
             MART,pair,MART,0.1,1,200,,0.01,-0.02,0.04,percentile,0.95\n\
             Avg.,average,Avg.,,1,200,,0.013,-0.01,0.03,percentile,0.95\n",
        )
        .unwrap();
        let clauses = [Clause {
            comparisons: &csv,
            subject: "TASER vs the control",
        }];
        let s = conclusion(&clauses, "aa").unwrap();
        assert_eq!(
            s,
            "On Robust (AA) (95% paired bootstrap intervals, points), TASER vs the control: \
             higher on Standard (+8.0 [+5.2, +11.1]), lower on PGD-AT (−5.0 [−7.5, −2.5]), \
             no difference detected on MART (+1.0 [−2.0, +4.0])."
        );
        let e = conclusion(&clauses, "spsa").unwrap_err().to_string();
        assert!(e.contains("--metric") && e.contains("aa"), "{e}");
    }
}
