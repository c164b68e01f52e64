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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::bootstrap::{IntervalKind, Settings};
    use crate::stats::compare::{compare, subset_groups};
    use crate::stats::pairing::explicit_row;
    use crate::stats::testing::evaluation;
    use serde_json::json;

    /// A row whose pair has these clean outcomes, on subset `fingerprint`.
    fn row(label: &str, fingerprint: &str, baseline: &[u8], treatment: &[u8]) -> RowInput {
        let b = evaluation("b", fingerprint, &[("clean", baseline)], json!({}));
        let t = evaluation("t", fingerprint, &[("clean", treatment)], json!({}));
        explicit_row(b, t, label.into()).unwrap()
    }

    fn all_rows(rows: &[RowInput]) -> Vec<AverageRow> {
        resolve(&default_specs(rows.len()), rows, &mut Vec::new())
    }

    /// Results of every row and average row, percentile 95% intervals.
    fn results(rows: &[RowInput], averages: &[AverageRow]) -> (Vec<RowResult>, Vec<String>) {
        let mut notes = Vec::new();
        let groups = subset_groups(rows, &mut notes).unwrap();
        let settings = Settings {
            resamples: 4000,
            seed: 11,
            cluster_by_seed: false,
        };
        let c = compare(
            rows,
            averages,
            &groups,
            &settings,
            IntervalKind::Percentile,
            0.95,
        )
        .unwrap();
        (c.rows, notes)
    }

    #[test]
    fn by_default_one_average_spans_all_rows_when_there_are_several() {
        let one = [row("A", "fp", &[0, 1], &[1, 1])];
        assert!(all_rows(&one).is_empty());
        let three = [
            one[0].clone(),
            row("B", "fp", &[0, 1], &[1, 1]),
            row("C", "fp", &[0, 1], &[1, 1]),
        ];
        assert_eq!(
            all_rows(&three),
            [AverageRow {
                label: AVERAGE_LABEL.into(),
                members: vec![0, 1, 2]
            }]
        );
    }

    #[test]
    fn include_and_exclude_pick_members_by_family() {
        let rows = [
            row("A", "fp", &[0, 1], &[1, 1]),
            row("B", "fp", &[0, 1], &[1, 1]),
            row("C", "fp", &[0, 1], &[1, 1]),
        ];
        let spec = |label: &str, include: Option<&[&str]>, exclude: &[&str]| AverageSpec {
            label: label.into(),
            include: include.map(|l| l.iter().map(|s| s.to_string()).collect()),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
        };
        let specs = [
            spec("no A", None, &["A"]),
            spec("A and C", Some(&["A", "C"]), &[]),
            spec("none", Some(&["B"]), &["B"]),
        ];
        check_names(&specs, &rows, Path::new("cmp.toml")).unwrap();
        let mut notes = Vec::new();
        let averages = resolve(&specs, &rows, &mut notes);
        let members: Vec<(&str, &[usize])> = averages
            .iter()
            .map(|a| (a.label.as_str(), a.members.as_slice()))
            .collect();
        assert_eq!(members, [("no A", &[1, 2][..]), ("A and C", &[0, 2][..])]);
        assert_eq!(
            notes,
            ["average `none` has no member rows and is not shown"]
        );

        let e = check_names(
            &[spec("typo", Some(&["D"]), &[])],
            &rows,
            Path::new("cmp.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("cmp.toml") && e.contains("names row `D`"), "{e}");
    }

    #[test]
    fn the_average_delta_is_the_mean_and_its_interval_comes_from_the_same_indices() {
        // Row A: d = (1, 1, 1, 0), Δ_A = 3/4; row B: d = (0, 0, 0, 1),
        // Δ_B = 1/4, on the same 4 points. Per point (d_A + d_B)/2 = 1/2, so
        // with the same drawn indices every resample of the average is
        // exactly 1/2: Δ̄ = 1/2 with interval [1/2, 1/2]. Row A alone: A* =
        // (draws among points 0–2)/4 with P(A* ≤ 0) = 1/256 < 2.5% <
        // P(A* ≤ 1/4) = 13/256 and P(A* < 1) = 1 − (3/4)⁴ < 97.5%, so its
        // interval is [1/4, 1].
        let rows = [
            row("A", "fp", &[0, 0, 0, 0], &[1, 1, 1, 0]),
            row("B", "fp", &[1, 1, 1, 0], &[1, 1, 1, 1]),
        ];
        let (results, notes) = results(&rows, &all_rows(&rows));
        assert!(notes.is_empty(), "{notes:?}");
        let [a, b, avg] = &results[..] else {
            panic!("{results:?}")
        };
        let (ca, cb, cavg) = (
            &a.metrics["clean"],
            &b.metrics["clean"],
            &avg.metrics["clean"],
        );
        assert_eq!((ca.delta, cb.delta), (0.75, 0.25));
        assert_eq!((ca.interval.lower, ca.interval.upper), (0.25, 1.0));
        assert_eq!(cavg.delta, (ca.delta + cb.delta) / 2.0);
        assert_eq!((cavg.interval.lower, cavg.interval.upper), (0.5, 0.5));
        // Accuracies: means of the members' (0, 3/4) and (3/4, 1).
        assert_eq!((cavg.baseline, cavg.treatment), (0.375, 0.875));
        assert!(avg.average && !a.average);
        assert_eq!(
            (avg.label.as_str(), avg.seeds, avg.points),
            (AVERAGE_LABEL, 1, 4)
        );
        assert_eq!(avg.notes, ["mean of A, B (joint resamples)"]);
        assert_eq!(avg.overhead, None);
    }

    #[test]
    fn rows_on_different_subsets_are_resampled_independently() {
        // The same outcomes as above, but B on another subset: its indices
        // are drawn apart from A's, so the average spreads around 1/2.
        let rows = [
            row("A", "fp1", &[0, 0, 0, 0], &[1, 1, 1, 0]),
            row("B", "fp2", &[1, 1, 1, 0], &[1, 1, 1, 1]),
        ];
        let (results, notes) = results(&rows, &all_rows(&rows));
        assert_eq!(
            notes,
            ["2 different evaluation subsets: rows on different subsets are resampled independently"]
        );
        let avg = &results[2].metrics["clean"];
        assert_eq!(avg.delta, 0.5);
        assert!(
            avg.interval.lower < 0.5 && avg.interval.upper > 0.5,
            "{avg:?}"
        );
    }

    #[test]
    fn an_average_has_only_the_metrics_all_its_rows_have() {
        let with_aa = |label: &str| {
            let (b, t): (&[u8], &[u8]) = (&[0, 1, 1], &[1, 1, 1]);
            let be = evaluation("b", "fp", &[("clean", b), ("aa", b)], json!({}));
            let te = evaluation("t", "fp", &[("clean", t), ("aa", t)], json!({}));
            explicit_row(be, te, label.into()).unwrap()
        };
        let rows = [with_aa("A"), row("B", "fp", &[0, 1, 1], &[1, 1, 1])];
        let (results, _) = results(&rows, &all_rows(&rows));
        assert!(results[0].metrics.contains_key("aa"));
        let avg: Vec<&String> = results[2].metrics.keys().collect();
        assert_eq!(avg, ["clean"]);
    }
}
