//! The `attack` command (docs/METHOD.md, "Attacks and their budgets"): clean accuracy and robust accuracy under
//! a list of attacks on a fixed evaluation subset, with per-sample results,
//! a summary row, AutoAttack-style sanity warnings, and resume.
//!
//! [`evaluate`] is the driver; its rooms are [`super::grammar`] (the
//! `--attacks` names), [`super::inputs`] (checkpoint, data, subset),
//! [`super::checks`] (the clean pass and the sanity warnings),
//! [`super::run`] (one attack over the points), [`super::state`] (resume)
//! and [`super::results`] (the CSV files).
//!
//! Outputs in `--out` (names from [`crate::layout`]):
//! - `per_sample.csv` and `summary.csv` (format in [`super::results`]),
//!   written once every attack has finished;
//! - `attack-state.json`: the settings and every finished attack's
//!   per-sample flags, written after each attack, so a rerun continues
//!   where a preempted one stopped and never repeats a finished attack;
//! - `subset.json`: the evaluation subset, when drawn here (no `--subset`).
//!
//! Every file is written under a temporary name and renamed.
use super::checks::{black_box_warnings, clean_pass, warn};
use super::grammar::{parse_attacks, AttackKind};
use super::inputs::Inputs;
use super::results::{write_per_sample, write_summary, PerSampleRows};
use super::run::{to_flags, Target};
use super::spsa::SPSA_INPUTS_PER_PASS;
use super::square::WindowRange;
use super::state::{
    accuracy, checkpoint_sha, subset_fingerprint, AttackResult, EvalIdentity, State,
};
use super::{parse_fraction, Norm, Threat};
use crate::data::subset::DEFAULT_SIZE;
use crate::device::device_name;
use crate::error::{Error, Result};
use crate::fsutil::ensure_writable_dir;
use crate::layout::{self, EvalRun};
use crate::outdir;
use crate::runtime::RuntimeArgs;
use std::fmt;
use std::path::PathBuf;
use tch::Tensor;

/// The `attack` command's settings.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalConfig {
    /// Checkpoint to evaluate: the .safetensors file written by `train` or
    /// `finetune`, with its .json sidecar beside it
    /// (model.safetensors; with `train --val-size` also model-best.safetensors,
    /// and model-last.safetensors under --select best, each with its own
    /// .json).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Attacks, comma-separated: aa (AutoAttack standard: apgd-ce, apgd-t,
    /// fab-t, square, each on the points still robust), apgd-ce, apgd-t,
    /// fab-t, square (one component alone), spsa, pgdK (PGD-K with
    /// cross-entropy, step 2.5ε/K, uniform start; e.g. pgd20), cw-pgdK
    /// (PGD-K with the margin loss).
    #[arg(long, value_delimiter = ',', default_value = "aa,spsa,pgd20")]
    pub attacks: Vec<String>,
    /// Threat-model norm: linf or l2.
    #[arg(long, value_enum, default_value = "linf")]
    pub norm: Norm,
    /// Attack radius ε > 0 (inputs in [0,1]); fractions like 8/255 accepted.
    #[arg(long, value_parser = parse_fraction)]
    pub eps: f64,
    /// Evaluation subset file (JSON written by `attack` or the sweep). If
    /// absent, --n-eval test points are drawn with --seed and the subset is
    /// saved as subset.json in --out.
    #[arg(long)]
    pub subset: Option<PathBuf>,
    /// Subset size when no --subset is given (all test points if fewer).
    #[arg(long, default_value_t = DEFAULT_SIZE)]
    pub n_eval: usize,
    /// Output directory (created; a rerun with the same flags resumes it).
    #[arg(long)]
    pub out: PathBuf,
    /// Seed of the subset draw and of every attack's random choices.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Points per attack batch.
    #[arg(long, default_value_t = 250)]
    pub batch_size: usize,
    /// Where Square (alone or inside aa) draws its square's offset along a
    /// side of h pixels with square side s: reference = 0 … h − s − 1, as
    /// the official AutoAttack code (the last row and column are never
    /// moved; what published "AutoAttack standard" numbers mean); full =
    /// 0 … h − s, every position (a stronger Square, not comparable with
    /// published numbers). Recorded in attack-state.json and summary.csv.
    #[arg(long, value_enum, default_value_t = WindowRange::Reference)]
    pub square_window_range: WindowRange,
    /// At most N model inputs in one SPSA forward pass: each point of an
    /// attack batch needs 2 × 128 = 256 perturbed inputs per iteration
    /// (128 directions, ±δ), split into passes of at most N (at least 256
    /// per point when N allows). Bounds SPSA's memory on large models
    /// (WRN-70-16 needs far fewer than the default on one GPU); the result
    /// does not change beyond the last bits of the sums (the directions
    /// are drawn in the same order).
    #[arg(
        long,
        default_value_t = SPSA_INPUTS_PER_PASS,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
    )]
    pub spsa_inputs_per_pass: usize,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Finish at most N attacks in this invocation, then stop (the state is
    /// saved; rerun the same command to continue). For job slots shorter
    /// than the whole evaluation.
    #[arg(long)]
    pub stop_after: Option<usize>,
}

/// What an evaluation produced.
#[derive(Debug, Clone)]
pub struct EvalSummary {
    /// Every attack finished (the CSVs were written).
    pub complete: bool,
    /// Attacks run by this invocation.
    pub ran_now: Vec<String>,
    pub n_points: usize,
    pub clean_accuracy: f64,
    /// Accuracy per finished attack (and `aa/<component>` entries).
    pub accuracies: Vec<(String, f64)>,
    pub worst_case_accuracy: f64,
    pub warnings: Vec<String>,
    pub out: PathBuf,
}

impl fmt::Display for EvalSummary {
    /// `name = accuracy` lines (clean, each attack, worst case) and where
    /// the results are, or how to continue a stopped evaluation.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "clean = {:.6}", self.clean_accuracy)?;
        for (name, acc) in &self.accuracies {
            writeln!(f, "{name} = {acc:.6}")?;
        }
        if self.complete {
            writeln!(f, "worst_case = {:.6}", self.worst_case_accuracy)?;
            write!(f, "results: {}", self.out.display())
        } else {
            write!(
                f,
                "stopped before every attack finished (--stop-after); rerun the same command to continue"
            )
        }
    }
}

impl EvalConfig {
    /// Checks the flags that need no file: the threat, the attack list, the
    /// batch and subset sizes.
    ///
    /// Errors: [`Error::InvalidArgument`] naming the flag.
    pub fn check(&self) -> Result<(Threat, Vec<AttackKind>)> {
        let threat = Threat {
            norm: self.norm,
            eps: self.eps,
        };
        threat.check("--eps")?;
        let attacks = parse_attacks(&self.attacks)?;
        if self.batch_size == 0 {
            return Err(Error::invalid("--batch-size", 0, "must be ≥ 1"));
        }
        if self.n_eval == 0 {
            return Err(Error::invalid("--n-eval", 0, "must be ≥ 1"));
        }
        Ok((threat, attacks))
    }

    /// The long names of the command's flags (without dashes).
    pub fn flag_names() -> Vec<String> {
        let cmd = <EvalConfig as clap::Args>::augment_args(clap::Command::new("attack"));
        cmd.get_arguments()
            .filter_map(|a| a.get_long().map(String::from))
            .collect()
    }
}

/// Runs the evaluation `cfg` describes (see the module documentation),
/// holding `--out` ([`outdir::run_in`]): a second run on the same `--out` is
/// refused, naming the holder. When it fails, every finished file stays
/// (`attack-state.json` with the attacks finished so far, `subset.json`),
/// the message names them and says that the same command continues; only
/// partial files and folders it created that are left empty are removed.
///
/// Errors: every input is checked before anything is written
/// ([`Error::InvalidArgument`], among others for an ε on the wrong scale
/// ([`Threat::check_scale`]), [`Error::MissingInput`],
/// [`Error::CorruptInput`] (also for non-finite weights or a bad subset),
/// [`Error::CheckpointMismatch`], and [`Error::InvalidArgument`] on `--out`
/// when it holds an evaluation with other settings); [`Error::Unwritable`]
/// for `--out`; [`Error::OutputInUse`] when another run writes it;
/// [`Error::NonFinite`] when the model's logits or input gradients stop
/// being finite; I/O errors while writing.
pub fn evaluate(cfg: &EvalConfig) -> Result<EvalSummary> {
    outdir::run_in(&cfg.out, || continue_hint(&cfg.out), || evaluate_in(cfg))
}

/// How to continue a failed evaluation in `out`: the same command, which
/// resumes from the attacks `attack-state.json` lists as finished.
fn continue_hint(out: &std::path::Path) -> String {
    let finished = State::load(&EvalRun::at(out).state())
        .ok()
        .flatten()
        .map(|s| {
            s.finished
                .iter()
                .map(|r| r.name.clone())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    if finished.is_empty() {
        "rerun the same command (no attack had finished)".into()
    } else {
        format!(
            "rerun the same command; it continues from {} and does not repeat the finished \
             attacks ({})",
            layout::ATTACK_STATE,
            finished.join(", ")
        )
    }
}

fn evaluate_in(cfg: &EvalConfig) -> Result<EvalSummary> {
    let (threat, attacks) = cfg.check()?;
    let runtime = cfg.runtime.resolve()?;
    let inputs = Inputs::load(cfg, &runtime)?;
    let mut warnings = Vec::new();
    let input_dim = inputs.data.input_shape.iter().product::<i64>() as usize;
    if let Some(w) = threat.check_scale("--eps", input_dim)? {
        warn(&mut warnings, w);
    }
    let run = EvalRun::at(&cfg.out);
    let identity = identity(cfg, &attacks, &inputs)?;
    let previous = open_out(cfg, &identity, &inputs, &run)?;

    let (x, y) = inputs.points(runtime.device);
    let clean = clean_pass(&inputs.model, &x, &y, cfg.batch_size, &mut warnings)?;
    let clean_flags = to_flags(&clean);
    let mut state = match previous {
        Some(prev) => {
            prev.check_clean(&clean_flags, &cfg.out)?;
            prev
        }
        None => State::new(&cfg.checkpoint, identity, clean_flags),
    };
    state.save(&run.state())?;
    eprintln!(
        "{} on {} points of {} ({:?}, ε = {:.6}): clean accuracy {:.4}",
        cfg.checkpoint.display(),
        state.clean_correct.len(),
        inputs.data.name,
        cfg.norm,
        cfg.eps,
        accuracy(&state.clean_correct)
    );
    let target = Target {
        model: &inputs.model,
        x: &x,
        y: &y,
        threat,
        seed: cfg.seed,
        batch_size: cfg.batch_size,
        square_window: cfg.square_window_range,
        spsa_inputs_per_pass: cfg.spsa_inputs_per_pass,
    };
    let ran_now = run_attacks(&target, &attacks, &clean, &mut state, &run, cfg.stop_after)?;

    // Results in the order of --attacks.
    let results: Vec<&AttackResult> = attacks
        .iter()
        .filter_map(|a| state.finished(&a.to_string()))
        .collect();
    let complete = results.len() == attacks.len();
    let worst = worst_case(&state.clean_correct, &results);
    black_box_warnings(&attacks, &results, &mut warnings);
    if complete {
        let rows = PerSampleRows {
            index: &inputs.subset.indices,
            label: &inputs.labels(),
            clean_correct: &state.clean_correct,
            attacks: &results,
            worst_case: &worst,
        };
        write_per_sample(&run.per_sample(), &rows)?;
        let device = device_name(runtime.device);
        write_summary(
            &run.summary(),
            &state.config,
            &cfg.checkpoint,
            &device,
            &runtime.record,
            &rows,
        )?;
    }
    Ok(EvalSummary {
        complete,
        ran_now,
        n_points: state.clean_correct.len(),
        clean_accuracy: accuracy(&state.clean_correct),
        accuracies: accuracies(&results),
        worst_case_accuracy: accuracy(&worst),
        warnings,
        out: cfg.out.clone(),
    })
}

/// The identity this run would save or resume.
fn identity(cfg: &EvalConfig, attacks: &[AttackKind], inputs: &Inputs) -> Result<EvalIdentity> {
    Ok(EvalIdentity {
        checkpoint_sha256: checkpoint_sha(&cfg.checkpoint)?,
        dataset: inputs.data.name.to_string(),
        norm: cfg.norm,
        eps: cfg.eps,
        attacks: attacks.iter().map(|a| a.to_string()).collect(),
        seed: cfg.seed,
        subset_fingerprint: subset_fingerprint(&inputs.subset),
        n_points: inputs.subset.indices.len(),
        batch_size: cfg.batch_size,
        square_window_range: attacks
            .iter()
            .any(|a| a.runs_square())
            .then_some(cfg.square_window_range),
        model: Some(inputs.model.spec.clone()),
    })
}

/// Reads the saved state of `--out`, refuses one of another identity than
/// `now`, and only then creates `--out` and saves a subset drawn here.
fn open_out(
    cfg: &EvalConfig,
    now: &EvalIdentity,
    inputs: &Inputs,
    run: &EvalRun,
) -> Result<Option<State>> {
    let previous = State::load(&run.state())?;
    if let Some(prev) = &previous {
        prev.check_identity(now, &cfg.out, &EvalConfig::flag_names())?;
    }
    ensure_writable_dir(run.dir())?;
    if inputs.subset_drawn && !run.subset().exists() {
        inputs.subset.save(&run.subset())?;
    }
    Ok(previous)
}

/// Runs the attacks `state` has not finished, in order, saving the state
/// after each; stops after `stop_after` of them. Returns their names.
fn run_attacks(
    target: &Target<'_>,
    attacks: &[AttackKind],
    clean: &Tensor,
    state: &mut State,
    run: &EvalRun,
    stop_after: Option<usize>,
) -> Result<Vec<String>> {
    let mut ran_now = Vec::new();
    for kind in attacks {
        let name = kind.to_string();
        if state.finished(&name).is_some() {
            eprintln!("{name}: already finished (from {})", layout::ATTACK_STATE);
            continue;
        }
        if stop_after.is_some_and(|k| ran_now.len() >= k) {
            break;
        }
        let result = target.run(*kind, clean)?;
        eprintln!(
            "{name}: robust accuracy {:.4} ({:.1} s)",
            accuracy(&result.robust),
            result.seconds
        );
        state.finished.push(result);
        state.save(&run.state())?;
        ran_now.push(name);
    }
    Ok(ran_now)
}

/// Correct and robust to every attack of `results`, per point.
fn worst_case(clean: &[bool], results: &[&AttackResult]) -> Vec<bool> {
    (0..clean.len())
        .map(|i| clean[i] && results.iter().all(|r| r.robust[i]))
        .collect()
}

/// Accuracy per attack, each AutoAttack component after its attack as
/// `aa/<component>`.
fn accuracies(results: &[&AttackResult]) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for r in results {
        out.push((r.name.clone(), accuracy(&r.robust)));
        for c in &r.components {
            out.push((format!("{}/{}", r.name, c.name), accuracy(&c.robust)));
        }
    }
    out
}
