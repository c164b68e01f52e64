//! Paired bootstrap comparisons of evaluations (docs/METHOD.md, "Bootstrap statistics"): Δ = acc(treatment)
//! − acc(baseline) on a shared evaluation subset with seeded percentile or
//! BCa intervals, average rows from joint resamples, and the TASER paper's
//! Table 2 / Table 3 layouts (CSV, Markdown, LaTeX) with figures (SVG and
//! PNG, drawn by [`crate::figure`]).
//!
//! Modules, in the order [`run`] uses them: [`eval`] reads `attack`
//! outputs, [`spec`] reads a comparison spec, [`pairing`] pairs baselines
//! with treatments and groups the pairs into rows, [`average`] resolves the
//! average rows, [`metrics`] picks each row's metric columns, [`compare`]
//! builds the series and statistics that [`bootstrap`] resamples (Φ and
//! Φ⁻¹ for BCa from statrs), and [`table`] and [`plot`] write the outputs.
pub mod average;
pub mod bootstrap;
pub mod compare;
pub mod eval;
pub mod measurement;
pub mod metrics;
pub mod pairing;
pub mod plot;
pub mod spec;
pub mod table;

use crate::error::{Error, Result};
use crate::fsutil::ensure_writable_dir;
use average::AverageRow;
use bootstrap::{Interval, IntervalKind, Settings};
use compare::Compared;
pub use spec::ArmLabels;
use spec::Spec;
use std::collections::BTreeMap;
use std::path::PathBuf;

pub use metrics::ROBUST_AVG;
pub use pairing::{axis_label, symbol, Pair, RowInput};

/// Where the pairs come from.
#[derive(Debug, Clone)]
pub enum PairSource {
    /// Explicit (baseline dir, treatment dir, optional label), in order.
    Explicit(Vec<(PathBuf, PathBuf, Option<String>)>),
    /// A comparison spec applied to a sweep directory.
    Spec { spec: PathBuf, runs: PathBuf },
}

impl PairSource {
    /// Explicit pairs from the `--baseline`, `--treatment` and `--label`
    /// lists: paired by position; `labels` is empty or has one per pair.
    ///
    /// Errors: [`Error::InvalidArgument`] when the lists' lengths disagree.
    pub fn explicit(
        baselines: Vec<PathBuf>,
        treatments: Vec<PathBuf>,
        labels: Vec<String>,
    ) -> Result<PairSource> {
        if baselines.len() != treatments.len() {
            return Err(Error::invalid(
                "--baseline/--treatment",
                format!(
                    "{} baselines but {} treatments",
                    baselines.len(),
                    treatments.len()
                ),
                "they pair in order",
            ));
        }
        if !labels.is_empty() && labels.len() != baselines.len() {
            return Err(Error::invalid(
                "--label",
                format!("{} labels for {} pairs", labels.len(), baselines.len()),
                "give one per pair or none",
            ));
        }
        let labels = labels.into_iter().map(Some).chain(std::iter::repeat(None));
        Ok(PairSource::Explicit(
            baselines
                .into_iter()
                .zip(treatments)
                .zip(labels)
                .map(|((b, t), l)| (b, t, l))
                .collect(),
        ))
    }
}

/// Options of one `bootstrap` run.
#[derive(Debug, Clone)]
pub struct Options {
    pub source: PairSource,
    pub resamples: usize,
    pub seed: u64,
    /// Confidence level, e.g. 0.95.
    pub level: f64,
    pub interval: IntervalKind,
    /// Overrides the spec's `cluster_by_seed` when set.
    pub cluster_by_seed: Option<bool>,
    /// Adjustment of the rows' tests for their number.
    pub multiplicity: Multiplicity,
    pub out: PathBuf,
}

/// How the significance marks of a table's rows account for their number
/// (`--multiplicity`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Multiplicity {
    /// Each row's interval on its own.
    #[default]
    None,
    /// Holm's step-down adjustment (Holm 1979) of the rows' bootstrap
    /// p-values, per column: the family-wise error stays ≤ 1 − level.
    Holm,
}

/// Holm's step-down adjusted p-values of `p`, in `p`'s order: with the
/// p-values sorted p₍₁₎ ≤ … ≤ p₍ₘ₎, p̃₍ᵢ₎ = max_{j≤i} min(1, (m − j + 1)·p₍ⱼ₎).
pub fn holm(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut adjusted = vec![0.0; m];
    let mut running: f64 = 0.0;
    for (rank, &i) in order.iter().enumerate() {
        running = running.max(((m - rank) as f64 * p[i]).min(1.0));
        adjusted[i] = running;
    }
    adjusted
}

/// Applies `multiplicity` to the comparison rows (not the averages) of
/// `rows`, column by column, and marks each Δ significant or not at `level`.
fn adjust(rows: &mut [RowResult], multiplicity: Multiplicity, level: f64) {
    if multiplicity == Multiplicity::None {
        return;
    }
    let metrics: std::collections::BTreeSet<String> = rows
        .iter()
        .flat_map(|r| r.metrics.keys().cloned())
        .collect();
    for metric in metrics {
        let at: Vec<usize> = (0..rows.len())
            .filter(|&i| !rows[i].average && rows[i].metrics.contains_key(&metric))
            .collect();
        let p: Vec<f64> = at
            .iter()
            .map(|&i| rows[i].metrics[&metric].p_value)
            .collect();
        for (&i, q) in at.iter().zip(holm(&p)) {
            let r = rows[i].metrics.get_mut(&metric).expect("present");
            r.adjusted_p = Some(q);
            r.significant = q < 1.0 - level;
        }
    }
}

/// Baseline, treatment and Δ of one metric in one row.
#[derive(Debug, Clone)]
pub struct MetricResult {
    pub baseline: f64,
    pub treatment: f64,
    pub delta: f64,
    pub interval: Interval,
    /// Two-sided bootstrap p-value of Δ = 0 ([`bootstrap::Distribution::p_value`]).
    pub p_value: f64,
    /// Holm-adjusted p over the comparison rows of this column
    /// (`--multiplicity holm`; `None` otherwise and for average rows).
    pub adjusted_p: Option<f64>,
    /// Whether Δ ≠ 0 at the run's level: the adjusted p < 1 − level when
    /// there is one, else the interval excludes 0.
    pub significant: bool,
}

/// How much longer a treatment's training step is than its baseline's
/// (the tables' Overhead column).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Overhead {
    /// mean penalty_step_overhead(treatment) / mean
    /// penalty_step_overhead(baseline) over the seeds: each run's step with
    /// its penalty over the same step without it, timed in isolation after
    /// training (crate::train::timing; 1 for a run without a penalty).
    TimedSteps(f64),
    /// mean train_seconds(treatment) / mean train_seconds(baseline): wall
    /// time under whatever load the runs had, for runs that recorded no
    /// timed steps.
    WallTime(f64),
}

impl Overhead {
    /// The ratio, whichever way it was measured.
    pub fn ratio(&self) -> f64 {
        match *self {
            Overhead::TimedSteps(r) | Overhead::WallTime(r) => r,
        }
    }

    /// comparisons.csv's `overhead_source`.
    pub fn source(&self) -> &'static str {
        match self {
            Overhead::TimedSteps(_) => "timed-steps",
            Overhead::WallTime(_) => "wall-time",
        }
    }
}

/// One output row (a comparison or an average of comparisons).
#[derive(Debug, Clone)]
pub struct RowResult {
    pub label: String,
    pub average: bool,
    pub family: String,
    pub x: Option<f64>,
    pub seeds: usize,
    pub points: usize,
    /// How much longer the treatment's training step is than the baseline's.
    pub overhead: Option<Overhead>,
    pub metrics: BTreeMap<String, MetricResult>,
    pub notes: Vec<String>,
}

/// Everything a run computed, as written to --out.
#[derive(Debug, Clone)]
pub struct Report {
    pub title: String,
    pub caption: String,
    /// Name of the varied hyperparameter (x axis), e.g. "lambda".
    pub vary: String,
    /// The arms' names in the tables.
    pub arms: ArmLabels,
    pub rows: Vec<RowResult>,
    /// Metric columns in table order: clean, robust_avg, attacks, worst_case.
    pub metrics: Vec<String>,
    /// Attacks of the per-attack table.
    pub attacks: Vec<String>,
    pub resamples: usize,
    pub seed: u64,
    pub level: f64,
    pub interval: IntervalKind,
    pub cluster_by_seed: bool,
    pub multiplicity: Multiplicity,
    pub notes: Vec<String>,
    pub files: Vec<PathBuf>,
}

/// What one run compares, before any resampling: the rows, the average
/// rows over them, and the table's text and settings.
#[derive(Debug, Clone)]
pub struct Plan {
    pub rows: Vec<RowInput>,
    pub averages: Vec<AverageRow>,
    pub title: String,
    pub caption: String,
    /// Name of the varied hyperparameter (x axis), e.g. "lambda".
    pub vary: String,
    /// Attack columns the spec asks for (empty: every evaluated attack).
    pub attacks: Vec<String>,
    /// The arms' names in the tables.
    pub arms: ArmLabels,
    /// The spec's `cluster_by_seed` (`None`: by the rows' seeds; explicit
    /// pairs have one seed each).
    pub cluster_by_seed: Option<bool>,
}

/// Runs the whole analysis: reads and pairs the inputs (refusing anything
/// that does not line up), resamples, and writes tables and plots to
/// `opts.out` (each file atomically). Nothing is written when an input is
/// refused.
///
/// Errors: [`Error::InvalidArgument`] for options out of their domain;
/// [`Error::MissingInput`]/[`Error::CorruptInput`] for evaluations or a
/// spec that cannot be read or do not pair; [`Error::Unwritable`] or
/// [`Error::OutputFailed`] when `opts.out` cannot be written;
/// [`Error::OutputInUse`] when another run is writing it.
pub fn run(opts: &Options) -> Result<Report> {
    check(opts)?;
    let mut notes = Vec::new();
    // Rows of baseline/treatment pairs (explicit or by the spec's rule) and
    // the average rows over them.
    let plan = load_plan(&opts.source, &mut notes)?;
    let asked = opts.cluster_by_seed.or(plan.cluster_by_seed);
    let cluster_by_seed = clustering(asked, &plan.rows, &mut notes);
    // Seeds of a row on the same points; rows on one subset share indices.
    let groups = compare::subset_groups(&plan.rows, &mut notes)?;
    // Every row and average row resampled jointly, then their intervals.
    let settings = Settings {
        resamples: opts.resamples,
        seed: opts.seed,
        cluster_by_seed,
    };
    let compared = compare::compare(
        &plan.rows,
        &plan.averages,
        &groups,
        &settings,
        opts.interval,
        opts.level,
    )?;
    let mut compared = compared;
    adjust(&mut compared.rows, opts.multiplicity, opts.level);
    let report = assemble(opts, plan, compared, cluster_by_seed, notes);
    write_outputs(report, &opts.out)
}

/// Fewer seeds (clusters) than this and a clustered interval is noted as
/// likely too narrow.
pub const FEW_CLUSTERS: usize = 5;

/// Whether to resample seeds, then points: as `asked` (`--cluster-by-seed`,
/// else the spec's `cluster_by_seed`), or, when neither says, whenever
/// every row has the same number ≥ 2 of seeds — the seeds' own variation
/// (one model per seed) is then part of the interval. Notes when rows
/// with several seeds are left unclustered and when there are fewer than
/// [`FEW_CLUSTERS`] seeds.
pub fn clustering(asked: Option<bool>, rows: &[RowInput], notes: &mut Vec<String>) -> bool {
    let counts: std::collections::BTreeSet<usize> = rows.iter().map(|r| r.pairs.len()).collect();
    let most = counts.iter().copied().max().unwrap_or(0);
    let equal = counts.len() == 1;
    let cluster = asked.unwrap_or(equal && most >= 2);
    if !cluster && most >= 2 {
        notes.push(format!(
            "not clustered by seed although rows have up to {most} seeds{}: the interval treats models of different seeds as one and is too narrow",
            if equal { "" } else { " (rows differ in seed count, which clustering needs equal)" }
        ));
    }
    if cluster && most < FEW_CLUSTERS {
        notes.push(format!(
            "clustered by seed with only {most} seeds: with fewer than {FEW_CLUSTERS} clusters a cluster bootstrap is itself too narrow; read the intervals as optimistic"
        ));
    }
    cluster
}

/// Refuses a level outside (0, 1) and fewer than 10 resamples.
fn check(opts: &Options) -> Result<()> {
    if !(opts.level > 0.0 && opts.level < 1.0) {
        return Err(Error::invalid(
            "--level",
            opts.level,
            "must lie strictly between 0 and 1, e.g. 0.95",
        ));
    }
    if opts.resamples < 10 {
        return Err(Error::invalid(
            "--resamples",
            opts.resamples,
            "must be at least 10 (10000 is the default)",
        ));
    }
    Ok(())
}

/// Loads and pairs the evaluations of `source` into rows and resolves the
/// average rows: for explicit pairs one row each and, when there are
/// several, one [`average::AVERAGE_LABEL`] row over all; for a spec, its
/// rows and averages (see [`pairing::spec_rows`]). In both modes, refuses
/// a pair, row or average that mixes measurements
/// ([`measurement::check_plan`]).
pub fn load_plan(source: &PairSource, notes: &mut Vec<String>) -> Result<Plan> {
    match source {
        PairSource::Explicit(list) => {
            let rows = pairing::explicit_rows(list)?;
            let averages = average::resolve(&average::default_specs(rows.len()), &rows, notes);
            measurement::check_plan(&rows, &averages, notes)?;
            Ok(Plan {
                rows,
                averages,
                title: "Paired bootstrap comparison".to_string(),
                caption: String::new(),
                vary: pairing::EXPLICIT_VARY.to_string(),
                attacks: Vec::new(),
                arms: ArmLabels::default(),
                cluster_by_seed: None,
            })
        }
        PairSource::Spec { spec, runs } => {
            let spec = Spec::load(spec)?;
            let rows = pairing::spec_rows(&spec, runs, notes)?;
            let specs = match &spec.averages {
                Some(list) => list.clone(),
                None => average::default_specs(rows.len()),
            };
            average::check_names(&specs, &rows, &spec.path)?;
            let averages = average::resolve(&specs, &rows, notes);
            measurement::check_plan(&rows, &averages, notes)?;
            Ok(Plan {
                rows,
                averages,
                title: spec.title,
                caption: spec.caption,
                vary: spec.vary,
                attacks: spec.attacks,
                arms: spec.arms,
                cluster_by_seed: spec.cluster_by_seed,
            })
        }
    }
}

/// The report of a run (without files yet): the results with the run's
/// settings and notes.
fn assemble(
    opts: &Options,
    plan: Plan,
    compared: Compared,
    cluster_by_seed: bool,
    mut notes: Vec<String>,
) -> Report {
    if cluster_by_seed {
        notes.push("clustered by seed: each resample draws seeds, then points".into());
    }
    let attacks = metrics::attack_columns(&compared.metrics, plan.attacks, &mut notes);
    Report {
        title: plan.title,
        caption: plan.caption,
        vary: plan.vary,
        arms: plan.arms,
        rows: compared.rows,
        metrics: compared.metrics,
        attacks,
        resamples: opts.resamples,
        seed: opts.seed,
        level: opts.level,
        interval: opts.interval,
        cluster_by_seed,
        multiplicity: opts.multiplicity,
        notes,
        files: Vec::new(),
    }
}

/// Writes the tables and plots of `report` into `out` (created if needed)
/// and records their paths in `report.files`, holding `out`
/// ([`crate::outdir::run_in`]: another run writing it is refused; a
/// failure names the files already written and removes partial ones).
fn write_outputs(mut report: Report, out: &std::path::Path) -> Result<Report> {
    let hint = || "rerun the same command (it writes every file again)".to_string();
    crate::outdir::run_in(out, hint, || {
        ensure_writable_dir(out)?;
        report.files = table::write_all(&report, out)?;
        report.files.extend(plot::write_all(&report, out)?);
        Ok(report)
    })
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&table::table2_markdown(self))?;
        writeln!(f)?;
        for p in &self.files {
            writeln!(f, "wrote {}", p.display())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod calibration;
#[cfg(test)]
mod testing;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::pairing::explicit_row;
    use crate::stats::testing::evaluation;
    use serde_json::json;

    /// A row with `seeds` pairs of the same outcomes.
    fn row(seeds: usize) -> RowInput {
        let mut r = explicit_row(
            evaluation("b", "fp", &[("clean", &[1, 0, 1])], json!({})),
            evaluation("t", "fp", &[("clean", &[1, 1, 1])], json!({})),
            "r".into(),
        )
        .unwrap();
        r.pairs = vec![r.pairs[0].clone(); seeds];
        r
    }

    #[test]
    fn rows_with_equal_seeds_are_clustered_by_default_and_few_clusters_are_noted() {
        // (--cluster-by-seed, seeds per row, clustered, notes expected)
        type Case = (Option<bool>, Vec<usize>, bool, &'static [&'static str]);
        let cases: [Case; 6] = [
            (None, vec![3, 3], true, &["only 3 seeds"]),
            (None, vec![5, 5], true, &[]),
            (None, vec![1, 1], false, &[]),
            (None, vec![3, 2], false, &["rows differ in seed count"]),
            (Some(false), vec![3, 3], false, &["not clustered by seed"]),
            (Some(true), vec![6, 6], true, &[]),
        ];
        for (asked, seeds, want, noted) in cases {
            let rows: Vec<RowInput> = seeds.iter().map(|&s| row(s)).collect();
            let mut notes = Vec::new();
            assert_eq!(
                clustering(asked, &rows, &mut notes),
                want,
                "{asked:?} {seeds:?}"
            );
            assert_eq!(notes.len(), noted.len(), "{asked:?} {seeds:?}: {notes:?}");
            for (n, want) in notes.iter().zip(noted) {
                assert!(n.contains(want), "{n}");
            }
        }
    }

    #[test]
    fn holm_adjusts_step_down_and_keeps_the_order_monotone() {
        // Sorted 0.005, 0.01, 0.03, 0.04 → ×4, ×3, ×2, ×1 = 0.02, 0.03,
        // 0.06, 0.04 → running maximum 0.02, 0.03, 0.06, 0.06.
        let got = holm(&[0.01, 0.04, 0.03, 0.005]);
        let want = [0.03, 0.06, 0.06, 0.02];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{got:?}");
        }
        assert_eq!(holm(&[0.5, 0.9]), vec![1.0, 1.0]);
        assert!(holm(&[]).is_empty());
    }

    #[test]
    fn holm_unmarks_what_only_many_rows_made_significant() {
        // Ten rows, one Δ clearly ≠ 0 and nine borderline ones (p ≈ 0.02):
        // each borderline interval excludes 0, Holm keeps only the clear one.
        let mut rows: Vec<RowResult> = (0..10)
            .map(|i| {
                let p = if i == 0 { 0.0001 } else { 0.02 };
                let metric = MetricResult {
                    baseline: 0.5,
                    treatment: 0.6,
                    delta: 0.1,
                    interval: Interval {
                        lower: 0.01,
                        upper: 0.2,
                        note: None,
                    },
                    p_value: p,
                    adjusted_p: None,
                    significant: true,
                };
                RowResult {
                    label: format!("r{i}"),
                    average: false,
                    family: "f".into(),
                    x: None,
                    seeds: 1,
                    points: 100,
                    overhead: None,
                    metrics: [("aa".to_string(), metric)].into_iter().collect(),
                    notes: Vec::new(),
                }
            })
            .collect();
        adjust(&mut rows, Multiplicity::None, 0.95);
        assert!(rows.iter().all(|r| r.metrics["aa"].significant));
        adjust(&mut rows, Multiplicity::Holm, 0.95);
        let marked: Vec<bool> = rows.iter().map(|r| r.metrics["aa"].significant).collect();
        assert_eq!(marked, [vec![true], vec![false; 9]].concat());
        assert!((rows[0].metrics["aa"].adjusted_p.unwrap() - 0.001).abs() < 1e-12);
    }
}
