//! From rows of pairs to results, in memory: rows on the same evaluation
//! subset form a *subset group* and share their resampled indices
//! ([`subset_groups`]); each (row, metric) becomes one series of paired
//! differences; each row and each average row becomes one statistic (the
//! mean of its member series); all are resampled jointly
//! ([`super::bootstrap::resample`]) and turned into [`RowResult`]s
//! ([`compare`]).
use super::average::AverageRow;
use super::bootstrap::{self, Distribution, IntervalKind, Series, Settings};
use super::eval::{check_pairable, Evaluation};
use super::metrics::{outcomes, row_metrics, table_order, RowMetrics};
use super::pairing::RowInput;
use super::{MetricResult, Overhead, RowResult};
use crate::error::Result;
use std::collections::BTreeMap;

/// An output row: the k-th comparison row or the k-th average row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowRef {
    Row(usize),
    Average(usize),
}

/// The subset groups of a table's rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubsetGroups {
    /// Points of each group (its subset size).
    pub sizes: Vec<usize>,
    /// The group of each row.
    pub of_row: Vec<usize>,
}

impl SubsetGroups {
    /// Points of row `k`'s subset.
    pub fn points(&self, k: usize) -> usize {
        self.sizes[self.of_row[k]]
    }
}

/// Groups rows by evaluation subset (same `subset_fingerprint` and `index`
/// column), in order of first appearance, after checking that the seeds of
/// each row were evaluated on the same points. Notes when there are several
/// groups (they are resampled independently).
///
/// Errors: [`crate::Error::CorruptInput`] when two seeds of a row differ in
/// their points (see [`check_pairable`]).
pub fn subset_groups(rows: &[RowInput], notes: &mut Vec<String>) -> Result<SubsetGroups> {
    let mut firsts: Vec<&Evaluation> = Vec::new();
    let mut of_row = Vec::new();
    for r in rows {
        let first = &r.pairs[0].baseline;
        for p in &r.pairs[1..] {
            check_pairable(first, &p.baseline)?;
        }
        let g = match firsts
            .iter()
            .position(|e| e.fingerprint == first.fingerprint && e.index == first.index)
        {
            Some(g) => g,
            None => {
                firsts.push(first);
                firsts.len() - 1
            }
        };
        of_row.push(g);
    }
    if firsts.len() > 1 {
        notes.push(format!(
            "{} different evaluation subsets: rows on different subsets are resampled independently",
            firsts.len()
        ));
    }
    Ok(SubsetGroups {
        sizes: firsts.iter().map(|e| e.len()).collect(),
        of_row,
    })
}

/// One statistic to resample: the Δ of `metric` in an output row, the mean
/// of its member series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statistic {
    pub row: RowRef,
    pub metric: String,
    /// Indices into the series.
    pub series: Vec<usize>,
}

/// The series of every (row, metric) and the accuracies they come from.
struct RowSeries {
    series: Vec<Series>,
    /// (row, metric) → index into `series`.
    index: BTreeMap<(usize, String), usize>,
    /// (row, metric) → (baseline, treatment) accuracy, means over seeds.
    levels: BTreeMap<(usize, String), (f64, f64)>,
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// One series per (row, metric): per seed slot, dᵢ = treatment outcomeᵢ −
/// baseline outcomeᵢ.
fn row_series(rows: &[RowInput], columns: &[RowMetrics], groups: &SubsetGroups) -> RowSeries {
    let mut out = RowSeries {
        series: Vec::new(),
        index: BTreeMap::new(),
        levels: BTreeMap::new(),
    };
    for (k, r) in rows.iter().enumerate() {
        for m in &columns[k].metrics {
            let mut slots = Vec::new();
            let (mut b_acc, mut t_acc) = (Vec::new(), Vec::new());
            for p in &r.pairs {
                let b = outcomes(&p.baseline, m, &columns[k].robust);
                let t = outcomes(&p.treatment, m, &columns[k].robust);
                b_acc.push(mean(&b));
                t_acc.push(mean(&t));
                slots.push(t.iter().zip(&b).map(|(t, b)| t - b).collect());
            }
            out.index.insert((k, m.clone()), out.series.len());
            out.levels
                .insert((k, m.clone()), (mean(&b_acc), mean(&t_acc)));
            out.series.push(Series {
                group: groups.of_row[k],
                slots,
            });
        }
    }
    out
}

/// The statistics: every (row, metric) on its own, then every (average
/// row, metric in `metrics` order) whose member rows all have the metric.
fn statistics(
    columns: &[RowMetrics],
    averages: &[AverageRow],
    metrics: &[String],
    index: &BTreeMap<(usize, String), usize>,
) -> Vec<Statistic> {
    let mut stats = Vec::new();
    for (k, c) in columns.iter().enumerate() {
        for m in &c.metrics {
            stats.push(Statistic {
                row: RowRef::Row(k),
                metric: m.clone(),
                series: vec![index[&(k, m.clone())]],
            });
        }
    }
    for (a, avg) in averages.iter().enumerate() {
        for m in metrics {
            let members: Option<Vec<usize>> = avg
                .members
                .iter()
                .map(|k| index.get(&(*k, m.clone())).copied())
                .collect();
            if let Some(series) = members {
                stats.push(Statistic {
                    row: RowRef::Average(a),
                    metric: m.clone(),
                    series,
                });
            }
        }
    }
    stats
}

/// The row's [`Overhead`]: from the timed steps when every evaluation of
/// the row has them, else from train_seconds when every one has that;
/// `None` otherwise.
fn overhead(r: &RowInput) -> Option<Overhead> {
    let ratio = |of: fn(&Evaluation) -> Option<f64>| {
        let b: Option<Vec<f64>> = r.pairs.iter().map(|p| of(&p.baseline)).collect();
        let t: Option<Vec<f64>> = r.pairs.iter().map(|p| of(&p.treatment)).collect();
        match (b, t) {
            (Some(b), Some(t)) if mean(&b) > 0.0 => Some(mean(&t) / mean(&b)),
            _ => None,
        }
    };
    ratio(|e| e.step_overhead)
        .map(Overhead::TimedSteps)
        .or_else(|| ratio(|e| e.train_seconds).map(Overhead::WallTime))
}

/// A comparison row's output before its metrics.
fn row_result(r: &RowInput, points: usize, notes: &[String]) -> RowResult {
    RowResult {
        label: r.label.clone(),
        average: false,
        family: r.family.clone(),
        x: r.x,
        seeds: r.pairs.len(),
        points,
        overhead: overhead(r),
        metrics: BTreeMap::new(),
        notes: notes.to_vec(),
    }
}

/// The results of a table: the rows' and average rows' Δ of each metric
/// they have, with intervals of `kind` at `level` (a BCa fallback adds a
/// note `metric: …` to its row).
pub struct Compared {
    /// The comparison rows, then the average rows.
    pub rows: Vec<RowResult>,
    /// Every metric of any row, in table order.
    pub metrics: Vec<String>,
}

/// Resamples every row and average row of a table jointly (one
/// [`bootstrap::resample`] call) and collects the results. `groups` comes
/// from [`subset_groups`] of the same rows.
///
/// Errors: those of [`bootstrap::resample`] (e.g. clustering by seed with
/// rows of different seed counts).
pub fn compare(
    rows: &[RowInput],
    averages: &[AverageRow],
    groups: &SubsetGroups,
    settings: &Settings,
    kind: IntervalKind,
    level: f64,
) -> Result<Compared> {
    let columns: Vec<RowMetrics> = rows.iter().map(row_metrics).collect();
    let metrics = table_order(&columns);
    let data = row_series(rows, &columns, groups);
    let stats = statistics(&columns, averages, &metrics, &data.index);
    let members: Vec<Vec<usize>> = stats.iter().map(|s| s.series.clone()).collect();
    let dists = bootstrap::resample(&data.series, &members, settings)?;

    let points: Vec<usize> = (0..rows.len()).map(|k| groups.points(k)).collect();
    let mut row_results: Vec<RowResult> = rows
        .iter()
        .enumerate()
        .map(|(k, r)| row_result(r, points[k], &columns[k].notes))
        .collect();
    let mut average_results: Vec<RowResult> =
        averages.iter().map(|a| a.result(rows, &points)).collect();
    for (stat, dist) in stats.iter().zip(&dists) {
        let m = &stat.metric;
        let (result, levels) = match stat.row {
            RowRef::Row(k) => (&mut row_results[k], data.levels[&(k, m.clone())]),
            RowRef::Average(a) => (
                &mut average_results[a],
                averages[a].levels(|k| data.levels[&(k, m.clone())]),
            ),
        };
        record(result, m, levels, dist, kind, level);
    }
    row_results.extend(average_results);
    Ok(Compared {
        rows: row_results,
        metrics,
    })
}

/// Enters one metric's result ((baseline, treatment) accuracy `levels`,
/// Δ = the distribution's estimate, its interval) into a row, noting a BCa
/// fallback.
fn record(
    row: &mut RowResult,
    metric: &str,
    (baseline, treatment): (f64, f64),
    dist: &Distribution,
    kind: IntervalKind,
    level: f64,
) {
    let interval = dist.interval(kind, level);
    if let Some(n) = &interval.note {
        row.notes.push(format!("{metric}: {n}"));
    }
    row.metrics.insert(
        metric.to_string(),
        MetricResult {
            baseline,
            treatment,
            delta: dist.estimate,
            significant: interval.excludes_zero(),
            interval,
            p_value: dist.p_value(),
            adjusted_p: None,
        },
    );
}
