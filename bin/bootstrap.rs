//! `bootstrap`: paired bootstrap confidence intervals and the papers' tables and plots.
use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use taser::exit::{self, Status};
use taser::stats::bootstrap::IntervalKind;
use taser::stats::{self, Multiplicity, Options, PairSource};

/// Paired bootstrap intervals for accuracy differences between evaluations
/// written by `attack`, and the TASER paper's Table 2 / Table 3 with plots.
///
/// For each comparison, Δ = acc(treatment) − acc(baseline) on the points both
/// were evaluated on (same subset_fingerprint and index column, else refused),
/// resampled B times with replacement (seeded ChaCha8), with a percentile or
/// BCa interval. "Robust avg" is the per-point mean of AutoAttack (aa) and SPSA.
/// Average rows resample the same points for every pair at once.
///
/// Only what was measured the same way is compared: a pair, the seeds of a
/// row and the rows of an average must agree on data set, norm, ε and
/// attacks (attack-state.json's identity, else summary.csv), else refused
/// naming each differing property with both values.
///
/// Pairs come either explicitly (--baseline DIR --treatment DIR, repeatable,
/// paired in order, with optional --label per pair) or from a comparison spec
/// applied to a sweep directory (--spec analysis/table2.toml --runs DIR).
///
/// Outputs in --out (each written atomically): comparisons.csv, table2.md,
/// table2.tex, table3.md, table3.tex, forest.svg + forest.png and, when the treatments
/// have a λ (or the spec's varied hyperparameter), delta_vs_<vary>.svg + .png.
///
/// Examples:
///   bootstrap --baseline runs/std/eval --treatment runs/std-taser/eval --out analysis/demo
///
///   bootstrap --spec analysis/table2.toml --runs sweeps/out/cifar --out analysis/table2
///
/// Exit codes: 0 ok; 1 a failed computation (an I/O error, an output that
/// could not be written part-way, another run writing --out); 2 bad usage or input (a flag out of its
/// domain, unequal --baseline/--treatment/--label counts, a missing or
/// corrupt evaluation, unpaired or mismatched evaluations, a comparison
/// across threat models, a bad spec, an unwritable --out). Nothing is written to --out when an input is refused.
#[derive(Parser, Debug)]
#[command(version, about, long_about, args_override_self = true)]
struct Args {
    /// Evaluation directory of a baseline (repeatable; pairs with the
    /// --treatment of the same position).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["spec", "runs"])]
    baseline: Vec<PathBuf>,
    /// Evaluation directory of a treatment (repeatable).
    #[arg(long, value_name = "DIR")]
    treatment: Vec<PathBuf>,
    /// Row label of the pair at the same position (default: directory name).
    #[arg(long, value_name = "NAME")]
    label: Vec<String>,
    /// Comparison spec (TOML or JSON) pairing a sweep's grid points by rule.
    #[arg(long, value_name = "FILE", requires = "runs")]
    spec: Option<PathBuf>,
    /// Sweep output directory the spec is applied to.
    #[arg(long, value_name = "DIR", requires = "spec")]
    runs: Option<PathBuf>,
    /// Number of bootstrap resamples B.
    #[arg(long, default_value_t = 10_000)]
    resamples: usize,
    /// Seed of the resampling generator (recorded in every output).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Confidence level of the intervals.
    #[arg(long, default_value_t = 0.95)]
    level: f64,
    /// Interval kind.
    #[arg(long, value_enum, default_value_t = IntervalKind::Percentile)]
    interval: IntervalKind,
    /// Resample seeds, then points: true or false (overrides the spec's cluster_by_seed).
    /// Unset: clustered whenever every row has the same number ≥ 2 of seeds.
    #[arg(long, value_name = "BOOL")]
    cluster_by_seed: Option<bool>,
    /// Adjust the bold marks for the number of rows: none (each row's interval on its own) or
    /// holm (Holm's step-down adjustment of the rows' bootstrap p-values, per column; the
    /// family-wise error stays ≤ 1 − level). comparisons.csv has both p-values either way.
    #[arg(long, value_enum, default_value = "none")]
    multiplicity: Multiplicity,
    /// Output directory.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

fn options(a: Args) -> taser::Result<Options> {
    let source = match (a.spec, a.runs) {
        (Some(spec), Some(runs)) => PairSource::Spec { spec, runs },
        _ => PairSource::explicit(a.baseline, a.treatment, a.label)?,
    };
    Ok(Options {
        source,
        resamples: a.resamples,
        seed: a.seed,
        level: a.level,
        interval: a.interval,
        cluster_by_seed: a.cluster_by_seed,
        multiplicity: a.multiplicity,
        out: a.out,
    })
}

fn run(args: Args) -> anyhow::Result<Status> {
    let report = stats::run(&options(args)?).context("bootstrap failed")?;
    print!("{report}");
    Ok(Status::Ok)
}

fn main() -> ExitCode {
    let args = exit::parse_args::<Args>();
    exit::run_main(|| run(args))
}
