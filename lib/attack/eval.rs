//! The `attack` command (SPEC §6): clean accuracy and robust accuracy under
//! a list of attacks on a fixed evaluation subset, with per-sample results,
//! a summary row, AutoAttack-style sanity warnings, and resume.
//!
//! Outputs in `--out`:
//! - `per_sample.csv`: `index,label,clean_correct,<attack>…,worst_case`
//!   (index into the test split; 1 = correct / robust, 0 = not);
//! - `summary.csv`: one header and one row (checkpoint, dataset, norm, ε,
//!   subset size and fingerprint, seed, clean accuracy, accuracy per attack
//!   and per AutoAttack component (cumulative), worst-case accuracy, seconds
//!   per attack);
//! - `attack-state.json`: the settings and every finished attack's
//!   per-sample flags, written after each attack, so a rerun continues
//!   where a preempted one stopped and never repeats a finished attack;
//! - `subset.json`: the evaluation subset, when drawn here (no `--subset`).
//!
//! Every file is written under a temporary name and renamed.
use super::autoattack::{seed_for, Component, STANDARD};
use super::spsa::{spsa, SpsaConfig};
use super::{
    cross_entropy, fooled_mask, logits_no_grad, loss_and_grad, margin, mask_indices,
    parse_fraction, per_sample_norm, pgd, Norm, PgdConfig, Start, Threat,
};
use crate::checkpoint;
use crate::data::subset::{EvalSubset, DEFAULT_SIZE};
use crate::data::{self, DatasetName, Task};
use crate::device::{device_name, parse_device};
use crate::error::{Error, Result};
use crate::fsutil::{ensure_writable_dir, write_atomically, write_bytes_atomically};
use crate::models::Model;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Name of the resume state in `--out`.
pub const STATE_FILE: &str = "attack-state.json";
/// Name of the per-sample results in `--out`.
pub const PER_SAMPLE_FILE: &str = "per_sample.csv";
/// Name of the summary row in `--out`.
pub const SUMMARY_FILE: &str = "summary.csv";
/// Name of a subset drawn by `attack` itself.
pub const SUBSET_FILE: &str = "subset.json";
const STATE_FORMAT: &str = "taser-attack-state/1";

/// One attack of the `--attacks` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttackKind {
    /// AutoAttack `standard`.
    AutoAttack,
    /// One AutoAttack component alone (on every clean-correct point).
    Component(Component),
    /// SPSA (SPEC §6 settings).
    Spsa,
    /// PGD-K with cross-entropy, step 2.5ε/K, uniform start.
    Pgd(usize),
    /// PGD-K with the margin (CW) loss, step 2.5ε/K, uniform start.
    CwPgd(usize),
}

const ATTACK_HELP: &str = "expected aa, apgd-ce, apgd-t, fab-t, square, spsa, pgdK or cw-pgdK \
                           (K ≥ 1 steps, e.g. pgd20, cw-pgd100)";

impl FromStr for AttackKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<AttackKind> {
        let bad = || Error::invalid("--attacks", s, ATTACK_HELP);
        let steps = |k: &str| -> Result<usize> {
            match k.parse::<usize>() {
                Ok(k) if k >= 1 => Ok(k),
                _ => Err(bad()),
            }
        };
        Ok(match s.trim() {
            "aa" => AttackKind::AutoAttack,
            "apgd-ce" => AttackKind::Component(Component::ApgdCe),
            "apgd-t" => AttackKind::Component(Component::ApgdT),
            "fab-t" => AttackKind::Component(Component::FabT),
            "square" => AttackKind::Component(Component::Square),
            "spsa" => AttackKind::Spsa,
            t => {
                if let Some(k) = t.strip_prefix("cw-pgd") {
                    AttackKind::CwPgd(steps(k)?)
                } else if let Some(k) = t.strip_prefix("pgd") {
                    AttackKind::Pgd(steps(k)?)
                } else {
                    return Err(bad());
                }
            }
        })
    }
}

impl fmt::Display for AttackKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttackKind::AutoAttack => f.write_str("aa"),
            AttackKind::Component(c) => f.write_str(c.name()),
            AttackKind::Spsa => f.write_str("spsa"),
            AttackKind::Pgd(k) => write!(f, "pgd{k}"),
            AttackKind::CwPgd(k) => write!(f, "cw-pgd{k}"),
        }
    }
}

impl AttackKind {
    /// Whether the attack uses the model's gradients.
    pub fn white_box(self) -> bool {
        match self {
            AttackKind::Component(c) => c.white_box(),
            AttackKind::Spsa => false,
            _ => true,
        }
    }

    /// Runs the attack on one batch of clean-correct points; returns the
    /// adversarial batch and the fooled mask. (AutoAttack is run by the
    /// evaluator component by component, not through here.)
    pub fn run_batch(
        self,
        model: &Model,
        x: &Tensor,
        y: &Tensor,
        threat: &Threat,
    ) -> (Tensor, Tensor) {
        match self {
            AttackKind::AutoAttack => {
                let r = super::autoattack::autoattack_standard(model, x, y, threat, 0);
                let fooled = r.robust.logical_not();
                (r.adv, fooled)
            }
            AttackKind::Component(c) => c.run(model, x, y, threat),
            AttackKind::Spsa => spsa(model, x, y, &SpsaConfig::standard(*threat)),
            AttackKind::Pgd(k) | AttackKind::CwPgd(k) => {
                let cfg = PgdConfig {
                    threat: *threat,
                    steps: k,
                    step_size: 2.5 * threat.eps / k as f64,
                    start: Start::Uniform,
                    bn_train: false,
                };
                let adv = if matches!(self, AttackKind::Pgd(_)) {
                    pgd(model, x, &cfg, &|z: &Tensor| cross_entropy(z, y))
                } else {
                    pgd(model, x, &cfg, &|z: &Tensor| -margin(z, y))
                };
                let fooled = fooled_mask(&logits_no_grad(model, &adv), y);
                (adv, fooled)
            }
        }
    }
}

/// Parses and checks an `--attacks` list (no duplicates, at least one).
pub fn parse_attacks(list: &[String]) -> Result<Vec<AttackKind>> {
    let mut out: Vec<AttackKind> = Vec::new();
    for s in list.iter().filter(|s| !s.trim().is_empty()) {
        let a: AttackKind = s.parse()?;
        if out.contains(&a) {
            return Err(Error::invalid("--attacks", s, "is listed twice"));
        }
        out.push(a);
    }
    if out.is_empty() {
        return Err(Error::invalid("--attacks", "", ATTACK_HELP));
    }
    Ok(out)
}

/// The `attack` command's settings.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalConfig {
    /// Checkpoint to evaluate: the .safetensors file written by `train` or
    /// `finetune`, with its .json sidecar beside it.
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
    /// auto, cpu or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Points per attack batch.
    #[arg(long, default_value_t = 250)]
    pub batch_size: usize,
    /// Folder with the data files (default: the repository's data/cache).
    #[arg(long, env = "TASER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// libtorch CPU threads (0: libtorch's default).
    #[arg(long, default_value_t = 0)]
    pub threads: i32,
    /// Finish at most N attacks in this invocation, then stop (the state is
    /// saved; rerun the same command to continue). For job slots shorter
    /// than the whole evaluation.
    #[arg(long)]
    pub stop_after: Option<usize>,
}

/// What the resume state must match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateConfig {
    pub checkpoint_sha256: String,
    pub dataset: String,
    pub norm: Norm,
    pub eps: f64,
    pub attacks: Vec<String>,
    pub seed: u64,
    pub subset_fingerprint: String,
    pub n_points: usize,
    pub batch_size: usize,
}

/// Per-sample results of one finished attack (or AutoAttack component).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttackResult {
    pub name: String,
    /// Correct under the attack (false where the clean point is wrong).
    pub robust: Vec<bool>,
    pub seconds: f64,
    /// AutoAttack only: robust flags after each component (cumulative).
    #[serde(default)]
    pub components: Vec<AttackResult>,
}

/// The resume state file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub format: String,
    pub version: String,
    /// The checkpoint path as given (informational; its hash is compared).
    pub checkpoint: String,
    pub config: StateConfig,
    pub clean_correct: Vec<bool>,
    pub finished: Vec<AttackResult>,
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

fn sha16(bytes: &[u8]) -> String {
    Sha256::digest(bytes)[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Fingerprint of an evaluation subset: data set, test-split fingerprint and
/// indices.
pub fn subset_fingerprint(s: &EvalSubset) -> String {
    let idx: Vec<String> = s.indices.iter().map(|i| i.to_string()).collect();
    sha16(
        format!(
            "{}|{}|{}|{}",
            s.dataset,
            s.split,
            s.test_fingerprint,
            idx.join(",")
        )
        .as_bytes(),
    )
}

fn warn(warnings: &mut Vec<String>, text: String) {
    eprintln!("warning: {text}");
    warnings.push(text);
}

fn accuracy(flags: &[bool]) -> f64 {
    if flags.is_empty() {
        0.0
    } else {
        flags.iter().filter(|&&b| b).count() as f64 / flags.len() as f64
    }
}

fn to_flags(mask: &Tensor) -> Vec<bool> {
    Vec::<bool>::try_from(&mask.to_device(Device::Cpu).to_kind(Kind::Bool)).expect("bool mask")
}

/// Runs one attack over the points where `robust_in` holds, in batches;
/// returns the robust mask over all points. Checks every returned batch is
/// inside the threat set and decides robustness by the model's prediction
/// on it.
fn attack_points(
    run: &dyn Fn(&Tensor, &Tensor) -> (Tensor, Tensor),
    model: &Model,
    (x, y): (&Tensor, &Tensor),
    robust_in: &Tensor,
    threat: &Threat,
    batch_size: usize,
    name: &str,
) -> Result<Tensor> {
    let idx = mask_indices(robust_in);
    let mut robust = robust_in.copy();
    let n = idx.numel() as i64;
    let pb = crate::progress::bar(n as u64, name);
    let mut start = 0i64;
    while start < n {
        let len = (batch_size as i64).min(n - start);
        let bidx = idx.narrow(0, start, len);
        let (xb, yb) = (x.index_select(0, &bidx), y.index_select(0, &bidx));
        let (adv, _) = run(&xb, &yb);
        if !threat.contains(&adv, &xb) {
            let dist = per_sample_norm(&(&adv - &xb), threat.norm)
                .max()
                .double_value(&[]);
            return Err(Error::invalid(
                "attack",
                name,
                format!(
                    "returned a point outside the threat set (distance {dist}, ε = {}, or outside [0,1]); \
                     this is a bug, please report it",
                    threat.eps
                ),
            ));
        }
        let wrong = fooled_mask(&logits_no_grad(model, &adv), &yb);
        robust = robust.index_copy(0, &bidx, &wrong.logical_not());
        start += len;
        pb.set_position(start as u64);
    }
    pb.finish_and_clear();
    Ok(robust)
}

fn run_one(
    kind: AttackKind,
    model: &Model,
    x: &Tensor,
    y: &Tensor,
    clean: &Tensor,
    threat: &Threat,
    cfg: &EvalConfig,
) -> Result<AttackResult> {
    let name = kind.to_string();
    let started = Instant::now();
    match kind {
        AttackKind::AutoAttack => {
            let mut robust = clean.copy();
            let mut components = Vec::new();
            for c in STANDARD {
                let t0 = Instant::now();
                tch::manual_seed(seed_for(cfg.seed, c.name()));
                let run = |xb: &Tensor, yb: &Tensor| c.run(model, xb, yb, threat);
                let label = format!("aa/{}", c.name());
                robust =
                    attack_points(&run, model, (x, y), &robust, threat, cfg.batch_size, &label)?;
                let r = AttackResult {
                    name: c.name().to_string(),
                    robust: to_flags(&robust),
                    seconds: t0.elapsed().as_secs_f64(),
                    components: vec![],
                };
                eprintln!(
                    "  aa/{:<8} robust accuracy {:.4} ({:.1} s)",
                    c.name(),
                    accuracy(&r.robust),
                    r.seconds
                );
                components.push(r);
            }
            Ok(AttackResult {
                name,
                robust: to_flags(&robust),
                seconds: started.elapsed().as_secs_f64(),
                components,
            })
        }
        _ => {
            tch::manual_seed(seed_for(cfg.seed, &name));
            let run = |xb: &Tensor, yb: &Tensor| kind.run_batch(model, xb, yb, threat);
            let robust = attack_points(&run, model, (x, y), clean, threat, cfg.batch_size, &name)?;
            Ok(AttackResult {
                name,
                robust: to_flags(&robust),
                seconds: started.elapsed().as_secs_f64(),
                components: vec![],
            })
        }
    }
}

fn file_sha(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::MissingInput {
        path: path.to_path_buf(),
        reason: e.to_string(),
        fix: "give the path of a .safetensors checkpoint written by `train` or `finetune`".into(),
    })?;
    Ok(sha16(&bytes))
}

fn describe_differences(a: &StateConfig, b: &StateConfig) -> String {
    let mut d = Vec::new();
    if a.checkpoint_sha256 != b.checkpoint_sha256 {
        d.push("checkpoint weights differ".to_string());
    }
    if a.dataset != b.dataset {
        d.push(format!("data set {} vs {}", a.dataset, b.dataset));
    }
    if a.norm != b.norm {
        d.push(format!("--norm {:?} vs {:?}", a.norm, b.norm));
    }
    if a.eps != b.eps {
        d.push(format!("--eps {} vs {}", a.eps, b.eps));
    }
    if a.attacks != b.attacks {
        d.push(format!(
            "--attacks {} vs {}",
            a.attacks.join(","),
            b.attacks.join(",")
        ));
    }
    if a.seed != b.seed {
        d.push(format!("--seed {} vs {}", a.seed, b.seed));
    }
    if a.subset_fingerprint != b.subset_fingerprint || a.n_points != b.n_points {
        d.push(format!(
            "subset {} ({} points) vs {} ({} points)",
            a.subset_fingerprint, a.n_points, b.subset_fingerprint, b.n_points
        ));
    }
    if a.batch_size != b.batch_size {
        d.push(format!("--batch-size {} vs {}", a.batch_size, b.batch_size));
    }
    d.join("; ")
}

fn load_state(path: &Path) -> Result<Option<State>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let state: State = serde_json::from_str(&text).map_err(|e| Error::CorruptInput {
        path: path.to_path_buf(),
        reason: e.to_string(),
        fix: "delete it to start the evaluation afresh, or choose a new --out".into(),
    })?;
    if state.format != STATE_FORMAT {
        return Err(Error::CorruptInput {
            path: path.to_path_buf(),
            reason: format!("format `{}` is not `{STATE_FORMAT}`", state.format),
            fix: "choose a new --out".into(),
        });
    }
    Ok(Some(state))
}

fn save_state(path: &Path, state: &State) -> Result<()> {
    let text = serde_json::to_string(state).expect("state serialises");
    write_bytes_atomically(path, text.as_bytes())
}

/// Runs the evaluation `cfg` describes (see the module documentation).
pub fn evaluate(cfg: &EvalConfig) -> Result<EvalSummary> {
    // Check every input before writing anything.
    let threat = Threat {
        norm: cfg.norm,
        eps: cfg.eps,
    };
    threat.validate("--eps")?;
    let attacks = parse_attacks(&cfg.attacks)?;
    if cfg.batch_size == 0 {
        return Err(Error::invalid("--batch-size", 0, "must be ≥ 1"));
    }
    if cfg.n_eval == 0 {
        return Err(Error::invalid("--n-eval", 0, "must be ≥ 1"));
    }
    if cfg.threads > 0 {
        tch::set_num_threads(cfg.threads);
    }
    let device = parse_device(&cfg.device)?;
    let (model, meta) = checkpoint::load(&cfg.checkpoint, device)?;
    let sidecar = checkpoint::sidecar_path(&cfg.checkpoint);
    let dataset: DatasetName = meta.dataset.parse().map_err(|_| Error::CorruptInput {
        path: sidecar.clone(),
        reason: format!("unknown data set `{}`", meta.dataset),
        fix: "use a checkpoint written by this suite".into(),
    })?;
    let data_dir = cfg.data_dir.clone().unwrap_or_else(data::default_data_dir);
    let data = data::load(dataset, &data_dir, meta.seed)?;
    if data.task != Task::Classification {
        return Err(Error::invalid(
            "--checkpoint",
            cfg.checkpoint.display(),
            format!(
                "is a {} regression model; attacks need a classifier",
                data.name
            ),
        ));
    }
    if meta.model.input_shape != data.input_shape || meta.model.num_outputs != data.num_outputs {
        return Err(Error::CheckpointMismatch {
            path: cfg.checkpoint.clone(),
            reason: format!(
                "its model takes inputs {:?} with {} outputs, but {} has inputs {:?} and {} classes",
                meta.model.input_shape, meta.model.num_outputs, data.name, data.input_shape, data.num_outputs
            ),
            fix: format!("use a checkpoint trained on {}", data.name),
        });
    }
    let (subset, subset_drawn) = match &cfg.subset {
        Some(path) => {
            let s = EvalSubset::load(path)?;
            s.check_against(&data, path)?;
            (s, false)
        }
        None => (EvalSubset::draw(&data, cfg.n_eval, cfg.seed), true),
    };
    let n = subset.indices.len();
    let state_config = StateConfig {
        checkpoint_sha256: file_sha(&cfg.checkpoint)?,
        dataset: data.name.to_string(),
        norm: cfg.norm,
        eps: cfg.eps,
        attacks: attacks.iter().map(|a| a.to_string()).collect(),
        seed: cfg.seed,
        subset_fingerprint: subset_fingerprint(&subset),
        n_points: n,
        batch_size: cfg.batch_size,
    };
    let state_path = cfg.out.join(STATE_FILE);
    let previous = load_state(&state_path)?;
    if let Some(prev) = &previous {
        if prev.config != state_config {
            return Err(Error::invalid(
                "--out",
                cfg.out.display(),
                format!(
                    "holds an evaluation with other settings ({}). Fix: rerun with the same flags to \
                     continue it, or choose a new --out",
                    describe_differences(&prev.config, &state_config)
                ),
            ));
        }
    }
    ensure_writable_dir(&cfg.out)?;
    if subset_drawn {
        let path = cfg.out.join(SUBSET_FILE);
        if !path.exists() {
            subset.save(&path)?;
        }
    }

    let mut warnings = Vec::new();
    let index = Tensor::from_slice(&subset.indices.iter().map(|&i| i as i64).collect::<Vec<_>>());
    let x = data.test.x.index_select(0, &index).to_device(device);
    let y = data.test.y.index_select(0, &index).to_device(device);

    // Clean pass, and AutoAttack-style checks of the model.
    let mut clean_parts = Vec::new();
    let mut zero_grad = 0i64;
    let mut start = 0i64;
    while start < n as i64 {
        let len = (cfg.batch_size as i64).min(n as i64 - start);
        let (xb, yb) = (x.narrow(0, start, len), y.narrow(0, start, len));
        let (logits, _, grad) = loss_and_grad(&model, &xb, &|z: &Tensor| cross_entropy(z, &yb));
        let correct = fooled_mask(&logits, &yb).logical_not();
        let zero = per_sample_norm(&grad, Norm::Linf)
            .eq(0.0)
            .logical_and(&correct);
        zero_grad += zero.sum(Kind::Int64).int64_value(&[]);
        if start == 0 {
            let again = logits_no_grad(&model, &xb);
            let diff = (&again - &logits).abs().max().double_value(&[]);
            let scale = logits.abs().max().double_value(&[]).max(1.0);
            if diff > 1e-5 * scale {
                warn(
                    &mut warnings,
                    format!(
                        "two forward passes on the same inputs differ (max |Δlogit| = {diff:.3e}): the model's \
                         outputs are randomised or non-deterministic, so these attacks may overstate its \
                         robustness (an EOT evaluation would be needed)"
                    ),
                );
            }
        }
        clean_parts.push(correct);
        start += len;
    }
    let clean = Tensor::cat(&clean_parts, 0);
    let clean_flags = to_flags(&clean);
    if zero_grad > 0 {
        warn(
            &mut warnings,
            format!(
                "{zero_grad} of {} correctly classified points have an all-zero input gradient of the \
                 cross-entropy: gradient-based attacks cannot move them, so white-box results there are \
                 unreliable (gradient masking or a saturated softmax)",
                clean_flags.iter().filter(|&&b| b).count()
            ),
        );
    }
    let mut state = match previous {
        Some(prev) => {
            if prev.clean_correct != clean_flags {
                return Err(Error::invalid(
                    "--out",
                    cfg.out.display(),
                    "its saved clean predictions differ from this run's (non-deterministic model or another \
                     device). Fix: choose a new --out",
                ));
            }
            prev
        }
        None => State {
            format: STATE_FORMAT.into(),
            version: crate::VERSION.into(),
            checkpoint: cfg.checkpoint.display().to_string(),
            config: state_config.clone(),
            clean_correct: clean_flags.clone(),
            finished: vec![],
        },
    };
    save_state(&state_path, &state)?;
    eprintln!(
        "{} on {} points of {} ({:?}, ε = {:.6}): clean accuracy {:.4}",
        cfg.checkpoint.display(),
        n,
        data.name,
        cfg.norm,
        cfg.eps,
        accuracy(&clean_flags)
    );

    let mut ran_now = Vec::new();
    for kind in &attacks {
        let name = kind.to_string();
        if state.finished.iter().any(|r| r.name == name) {
            eprintln!("{name}: already finished (from {STATE_FILE})");
            continue;
        }
        if cfg.stop_after.is_some_and(|k| ran_now.len() >= k) {
            break;
        }
        let result = run_one(*kind, &model, &x, &y, &clean, &threat, cfg)?;
        eprintln!(
            "{name}: robust accuracy {:.4} ({:.1} s)",
            accuracy(&result.robust),
            result.seconds
        );
        state.finished.push(result);
        save_state(&state_path, &state)?;
        ran_now.push(name);
    }
    let complete = attacks
        .iter()
        .all(|a| state.finished.iter().any(|r| r.name == a.to_string()));

    // Results in the order of --attacks.
    let results: Vec<&AttackResult> = attacks
        .iter()
        .filter_map(|a| state.finished.iter().find(|r| r.name == a.to_string()))
        .collect();
    let worst: Vec<bool> = (0..n)
        .map(|i| clean_flags[i] && results.iter().all(|r| r.robust[i]))
        .collect();
    let mut accuracies = Vec::new();
    for r in &results {
        accuracies.push((r.name.clone(), accuracy(&r.robust)));
        for c in &r.components {
            accuracies.push((format!("{}/{}", r.name, c.name), accuracy(&c.robust)));
        }
    }
    black_box_warnings(&attacks, &results, &mut warnings);

    if complete {
        write_per_sample(
            &cfg.out.join(PER_SAMPLE_FILE),
            &subset,
            &data.test.y,
            &clean_flags,
            &results,
            &worst,
        )?;
        let dev = device_name(device);
        write_summary(
            &cfg.out.join(SUMMARY_FILE),
            cfg,
            &state_config,
            &dev,
            accuracy(&clean_flags),
            &results,
            accuracy(&worst),
        )?;
    }
    Ok(EvalSummary {
        complete,
        ran_now,
        n_points: n,
        clean_accuracy: accuracy(&clean_flags),
        accuracies,
        worst_case_accuracy: accuracy(&worst),
        warnings,
        out: cfg.out.clone(),
    })
}

/// Warns when a black-box attack (Square, SPSA) breaks points the white-box
/// attacks left robust, a sign of gradient masking.
fn black_box_warnings(
    attacks: &[AttackKind],
    results: &[&AttackResult],
    warnings: &mut Vec<String>,
) {
    for r in results {
        if let Some(sq) = r.components.iter().find(|c| c.name == "square") {
            let before = &r.components[r.components.len() - 2];
            let k = before
                .robust
                .iter()
                .zip(&sq.robust)
                .filter(|(b, a)| **b && !**a)
                .count();
            if k > 0 {
                warn(
                    warnings,
                    format!(
                        "within AutoAttack, Square (black-box) broke {k} points that APGD-CE, APGD-T and FAB-T \
                         left robust: the white-box attacks may be hampered by gradient masking"
                    ),
                );
            }
        }
    }
    let white: Vec<&&AttackResult> = results
        .iter()
        .filter(|r| {
            attacks
                .iter()
                .any(|a| a.to_string() == r.name && a.white_box())
        })
        .collect();
    if white.is_empty() {
        return;
    }
    for r in results {
        let black = attacks
            .iter()
            .any(|a| a.to_string() == r.name && !a.white_box());
        if !black {
            continue;
        }
        let k = (0..r.robust.len())
            .filter(|&i| !r.robust[i] && white.iter().all(|w| w.robust[i]))
            .count();
        if k > 0 {
            let names: Vec<&str> = white.iter().map(|w| w.name.as_str()).collect();
            warn(
                warnings,
                format!(
                    "{} (black-box) broke {k} points that every white-box attack run ({}) left robust: \
                     the gradients may be masked, so white-box figures overstate robustness",
                    r.name,
                    names.join(", ")
                ),
            );
        }
    }
}

fn csv_err(path: &Path, e: impl ToString) -> Error {
    Error::OutputFailed {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn write_per_sample(
    path: &Path,
    subset: &EvalSubset,
    labels: &Tensor,
    clean: &[bool],
    results: &[&AttackResult],
    worst: &[bool],
) -> Result<()> {
    let labels: Vec<i64> = Vec::<i64>::try_from(&labels.to_kind(Kind::Int64)).expect("labels");
    write_atomically(path, |tmp| {
        let mut w = csv::Writer::from_path(tmp).map_err(|e| csv_err(tmp, e))?;
        let mut header = vec!["index".to_string(), "label".into(), "clean_correct".into()];
        header.extend(results.iter().map(|r| r.name.clone()));
        header.push("worst_case".into());
        w.write_record(&header).map_err(|e| csv_err(tmp, e))?;
        for (i, &idx) in subset.indices.iter().enumerate() {
            let b = |v: bool| if v { "1" } else { "0" }.to_string();
            let mut row = vec![idx.to_string(), labels[idx].to_string(), b(clean[i])];
            row.extend(results.iter().map(|r| b(r.robust[i])));
            row.push(b(worst[i]));
            w.write_record(&row).map_err(|e| csv_err(tmp, e))?;
        }
        w.flush().map_err(|e| csv_err(tmp, e))
    })
}

fn write_summary(
    path: &Path,
    cfg: &EvalConfig,
    sc: &StateConfig,
    device: &str,
    clean: f64,
    results: &[&AttackResult],
    worst: f64,
) -> Result<()> {
    let mut header: Vec<String> = [
        "checkpoint",
        "dataset",
        "norm",
        "eps",
        "n_eval",
        "subset_fingerprint",
        "seed",
        "device",
        "clean_acc",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let norm = match cfg.norm {
        Norm::Linf => "linf",
        Norm::L2 => "l2",
    };
    let mut row: Vec<String> = vec![
        cfg.checkpoint.display().to_string(),
        sc.dataset.clone(),
        norm.into(),
        format!("{}", cfg.eps),
        sc.n_points.to_string(),
        sc.subset_fingerprint.clone(),
        sc.seed.to_string(),
        device.into(),
        format!("{clean:.6}"),
    ];
    for r in results {
        header.push(format!("acc_{}", r.name));
        row.push(format!("{:.6}", accuracy(&r.robust)));
        for c in &r.components {
            header.push(format!("acc_{}_{}", r.name, c.name));
            row.push(format!("{:.6}", accuracy(&c.robust)));
        }
    }
    header.push("acc_worst_case".into());
    row.push(format!("{worst:.6}"));
    for r in results {
        header.push(format!("seconds_{}", r.name));
        row.push(format!("{:.3}", r.seconds));
        for c in &r.components {
            header.push(format!("seconds_{}_{}", r.name, c.name));
            row.push(format!("{:.3}", c.seconds));
        }
    }
    write_atomically(path, |tmp| {
        let mut w = csv::Writer::from_path(tmp).map_err(|e| csv_err(tmp, e))?;
        w.write_record(&header).map_err(|e| csv_err(tmp, e))?;
        w.write_record(&row).map_err(|e| csv_err(tmp, e))?;
        w.flush().map_err(|e| csv_err(tmp, e))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attack_names_parse_and_print() {
        for s in [
            "aa",
            "apgd-ce",
            "apgd-t",
            "fab-t",
            "square",
            "spsa",
            "pgd20",
            "cw-pgd100",
        ] {
            assert_eq!(s.parse::<AttackKind>().unwrap().to_string(), s);
        }
        for bad in ["pgd", "pgd0", "cw-pgdx", "fgsm", ""] {
            let e = bad.parse::<AttackKind>().unwrap_err().to_string();
            assert!(e.contains("--attacks") && e.contains("pgdK"), "{e}");
        }
        let dup = parse_attacks(&["aa".into(), "aa".into()])
            .unwrap_err()
            .to_string();
        assert!(dup.contains("twice"), "{dup}");
    }

    fn result(name: &str, robust: &[bool], components: Vec<AttackResult>) -> AttackResult {
        AttackResult {
            name: name.into(),
            robust: robust.to_vec(),
            seconds: 0.0,
            components,
        }
    }

    #[test]
    fn black_box_attacks_beating_white_box_ones_are_warned_about() {
        let (t, f) = (true, false);
        let comps = vec![
            result("apgd-ce", &[t, t, f], vec![]),
            result("apgd-t", &[t, t, f], vec![]),
            result("fab-t", &[t, t, f], vec![]),
            result("square", &[t, f, f], vec![]),
        ];
        let aa = result("aa", &[t, f, f], comps);
        let spsa = result("spsa", &[f, f, f], vec![]);
        let pgd = result("pgd20", &[t, t, f], vec![]);
        let attacks = parse_attacks(&["aa".into(), "spsa".into(), "pgd20".into()]).unwrap();
        let mut w = Vec::new();
        black_box_warnings(&attacks, &[&aa, &spsa, &pgd], &mut w);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("Square") && w[0].contains("broke 1 points"));
        assert!(w[1].contains("spsa") && w[1].contains("broke 1 points"));
        // No warning when the white-box attacks found everything.
        let spsa = result("spsa", &[t, f, f], vec![]);
        let aa = result("aa", &[t, f, f], vec![]);
        let mut w = Vec::new();
        black_box_warnings(&attacks, &[&aa, &spsa, &pgd], &mut w);
        assert!(w.is_empty(), "{w:?}");
    }
}
