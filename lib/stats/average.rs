//! Average rows (TASER Table 2's "Avg."): the mean Δ over m member rows,
//! Δ̄ = (1/m)·Σₖ Δₖ, with its interval from joint resamples: each resample applies the same
//! drawn point indices to every member row on a subset (see
//! [`super::bootstrap`]), so the interval reflects how the rows' Δ move
//! together — never an average of the rows' own intervals. The baseline and
//! treatment accuracies shown are the means of the members' too.
use super::pairing::RowInput;
use super::spec::AverageSpec;
use super::RowResult;
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// Label of the default average row (over all rows).
pub const AVERAGE_LABEL: &str = "Avg.";

/// An average row, resolved against the table's rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AverageRow {
    pub label: String,
    /// Indices of the member rows (into the table's rows), ascending, never
    /// empty.
    pub members: Vec<usize>,
}

/// The average rows a table has when its spec names none (or pairs are
/// explicit): one [`AVERAGE_LABEL`] row over all rows when there are
/// several, none otherwise.
pub fn default_specs(rows: usize) -> Vec<AverageSpec> {
    if rows > 1 {
        vec![AverageSpec {
            label: AVERAGE_LABEL.into(),
            include: None,
            exclude: Vec::new(),
        }]
    } else {
        Vec::new()
    }
}

/// Refuses an average whose `include`/`exclude` names a row family that is
/// not in the table ([`Error::CorruptInput`] on `spec_path`).
pub fn check_names(specs: &[AverageSpec], rows: &[RowInput], spec_path: &Path) -> Result<()> {
    for a in specs {
        for name in a.include.iter().flatten().chain(&a.exclude) {
            if !rows.iter().any(|r| &r.family == name) {
                return Err(Error::CorruptInput {
                    path: spec_path.to_path_buf(),
                    reason: format!(
                        "average `{}` names row `{name}`, which is not a row of the table",
                        a.label
                    ),
                    fix: "use the labels of the [[row]] entries".into(),
                });
            }
        }
    }
    Ok(())
}

/// The member rows of each average: the rows whose family is included (all
/// when `include` is absent) and not excluded. An average with no member is
/// left out, with a note.
pub fn resolve(
    specs: &[AverageSpec],
    rows: &[RowInput],
    notes: &mut Vec<String>,
) -> Vec<AverageRow> {
    let mut averages = Vec::new();
    for a in specs {
        let members: Vec<usize> = (0..rows.len())
            .filter(|&k| {
                a.include
                    .as_ref()
                    .is_none_or(|inc| inc.contains(&rows[k].family))
                    && !a.exclude.contains(&rows[k].family)
            })
            .collect();
        if members.is_empty() {
            notes.push(format!(
                "average `{}` has no member rows and is not shown",
                a.label
            ));
        } else {
            averages.push(AverageRow {
                label: a.label.clone(),
                members,
            });
        }
    }
    averages
}

impl AverageRow {
    /// The output row before its metrics: the largest member seed count,
    /// the members' mean subset size (`points[k]` of row k, integer
    /// division), no overhead, and a note naming the members.
    pub fn result(&self, rows: &[RowInput], points: &[usize]) -> RowResult {
        RowResult {
            label: self.label.clone(),
            average: true,
            family: self.label.clone(),
            x: None,
            seeds: self
                .members
                .iter()
                .map(|k| rows[*k].pairs.len())
                .max()
                .unwrap_or(0),
            points: self.members.iter().map(|k| points[*k]).sum::<usize>() / self.members.len(),
            overhead: None,
            metrics: BTreeMap::new(),
            notes: vec![format!(
                "mean of {} (joint resamples)",
                self.members
                    .iter()
                    .map(|k| rows[*k].label.clone())
                    .collect::<Vec<_>>()
                    .join(", ")
            )],
        }
    }

    /// The mean (baseline, treatment) accuracy over the members, from each
    /// member row's `(baseline, treatment)` given by `levels`.
    pub fn levels(&self, levels: impl Fn(usize) -> (f64, f64)) -> (f64, f64) {
        let n = self.members.len() as f64;
        let (sb, st) = self.members.iter().fold((0.0, 0.0), |(sb, st), k| {
            let (b, t) = levels(*k);
            (sb + b, st + t)
        });
        (sb / n, st / n)
    }
}
