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
use spec::Spec;
use std::collections::BTreeMap;
use std::path::PathBuf;

pub use metrics::ROBUST_AVG;
pub use pairing::{symbol, Pair, RowInput};

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
    pub out: PathBuf,
}

/// Baseline, treatment and Δ of one metric in one row.
#[derive(Debug, Clone)]
pub struct MetricResult {
    pub baseline: f64,
    pub treatment: f64,
    pub delta: f64,
    pub interval: Interval,
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
    /// train_seconds(treatment) / train_seconds(baseline), means over seeds.
    pub overhead: Option<f64>,
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
    /// The spec's `cluster_by_seed` (false for explicit pairs).
    pub cluster_by_seed: bool,
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
    let cluster_by_seed = opts.cluster_by_seed.unwrap_or(plan.cluster_by_seed);
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
    let report = assemble(opts, plan, compared, cluster_by_seed, notes);
    write_outputs(report, &opts.out)
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
                cluster_by_seed: false,
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
        rows: compared.rows,
        metrics: compared.metrics,
        attacks,
        resamples: opts.resamples,
        seed: opts.seed,
        level: opts.level,
        interval: opts.interval,
        cluster_by_seed,
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
mod testing;
