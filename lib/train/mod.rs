//! Training (`train`): data → model → optimiser loop → checkpoints.
//!
//! Reproducibility: the model is initialised after `tch::manual_seed(seed)`;
//! epoch e shuffles and augments with a generator seeded from (seed, e) and
//! reseeds libtorch from it too, so a run resumed after epoch e ends with the
//! same weights as an uninterrupted one (optimiser state is checkpointed).
//!
//! Outputs in `--out`: `model.safetensors` + `model.json` (final),
//! `metrics.csv` (one row per epoch), and the resume state
//! `resume.safetensors` (weights, optimiser state, epoch counter) with
//! `resume.json` (the configuration it belongs to).
pub mod awp;
pub mod ema;
pub mod method;
pub mod posterior;
pub mod regularizer;

use crate::checkpoint::{self, CheckpointMeta};
use crate::data::augment::{Augment, CropFlip};
use crate::data::{self, Dataset, DatasetName, Split, Task};
use crate::device::{device_name, parse_device};
use crate::error::{Error, Result};
use crate::fsutil::{ensure_writable_dir, write_atomically, write_bytes_atomically};
use crate::models::{Activation, Arch, Model, ModelSpec};
use crate::progress;
use crate::stein::Center;
use ema::Ema;
pub use method::Method;
use method::{MethodArgs, MethodSettings};
use crate::optim::{Optimizer, OptimizerConfig, OptimizerKind};
use posterior::{PosteriorArgs, PosteriorSettings};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use regularizer::{l2_term, RegArgs, Regularizer};
use crate::optim::schedule::{Schedule, ScheduleKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Kind, Tensor};

/// Every hyperparameter of a training run: what the sidecar records and
/// what must match for `--resume`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct TrainConfig {
    /// Data set: digits (8×8, 10 classes; embedded default), cifar10, cifar100
    /// (binary files in --data-dir), toy-sin (1-D regression, generated),
    /// toy-score (SCORE's 1-D binary problem with a known posterior,
    /// generated; trained with --objective/--distance).
    #[arg(long, default_value = "digits")]
    pub dataset: DatasetName,
    /// Model: mlp, cnn-small, resnet18, preact-resnet18, wrn-D-K (e.g. wrn-28-10).
    #[arg(long, default_value = "cnn-small")]
    pub model: Arch,
    /// Non-linearity of the model.
    #[arg(long, value_enum, default_value = "relu")]
    pub activation: Activation,
    /// Hidden widths of the mlp, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "256,256")]
    pub mlp_hidden: Vec<i64>,
    /// Training method.
    #[arg(long, value_enum, default_value = "standard")]
    pub method: Method,
    /// Optimiser.
    #[arg(long, value_enum, default_value = "sgd")]
    pub optimizer: OptimizerKind,
    /// Peak learning rate η_max (the default suits digits; CIFAR SGD runs
    /// usually take 0.1 with --batch-size 128).
    #[arg(long, default_value_t = 0.02)]
    pub lr: f64,
    /// Final learning rate η_min of the cosine schedules.
    #[arg(long, default_value_t = 0.0)]
    pub lr_min: f64,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// Use Nesterov momentum (SGD).
    #[arg(long)]
    pub nesterov: bool,
    /// Adam's β₁ and β₂.
    #[arg(long, value_delimiter = ',', num_args = 2, default_value = "0.9,0.999")]
    pub adam_betas: Vec<f64>,
    /// Adam's ε.
    #[arg(long, default_value_t = 1e-8)]
    pub adam_eps: f64,
    /// L2 weight decay (added to the gradient, as PyTorch's SGD and Adam do).
    #[arg(long, default_value_t = 5e-4)]
    pub weight_decay: f64,
    /// Learning-rate schedule (per step).
    #[arg(long, value_enum, default_value = "cosine")]
    pub schedule: ScheduleKind,
    /// Warm-up length in epochs (warmup-cosine).
    #[arg(long, default_value_t = 0.0)]
    pub warmup_epochs: f64,
    /// Milestone epochs of the piecewise schedule, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub milestones: Vec<usize>,
    /// Factor applied at each milestone (piecewise).
    #[arg(long, default_value_t = 0.1)]
    pub lr_gamma: f64,
    /// Number of epochs.
    #[arg(long, default_value_t = 30)]
    pub epochs: usize,
    /// Mini-batch size (a final batch of one sample is dropped).
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Seed of initialisation, shuffling, augmentation (and of toy data).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Augmentation: auto = random crop (pad 4) + flip on CIFAR, none elsewhere.
    #[arg(long, value_enum, default_value = "auto")]
    pub augment: Augment,
    /// Flags of the robust methods (attack, divergence, β, AWP, EMA).
    #[command(flatten)]
    #[serde(flatten)]
    pub robust: MethodArgs,
    /// The regulariser (TASER penalty or ℓ2), off unless --lambda > 0.
    #[command(flatten)]
    #[serde(flatten)]
    pub reg: RegArgs,
    /// The objectives of SCORE's toy (toy-score only).
    #[command(flatten)]
    #[serde(flatten)]
    pub posterior: PosteriorArgs,
}

/// Where and how to run, not part of the result's identity.
#[derive(Debug, Clone, clap::Args)]
pub struct RunOptions {
    /// Output directory (created; must be writable).
    #[arg(long)]
    pub out: PathBuf,
    /// Folder with the data files (default: the repository's data/cache).
    #[arg(long, env = "TASER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// auto, cpu or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Continue from the resume state in --out (start fresh if there is none).
    #[arg(long)]
    pub resume: bool,
    /// libtorch CPU threads (0: libtorch's default).
    #[arg(long, default_value_t = 0)]
    pub threads: i32,
    /// Batch size of evaluation passes.
    #[arg(long, default_value_t = 512)]
    pub eval_batch_size: usize,
    /// Write metrics.csv and the resume state every N epochs (and at the end).
    #[arg(long, default_value_t = 1)]
    pub checkpoint_every: usize,
    /// Print an epoch line every N epochs (and at the end).
    #[arg(long, default_value_t = 1)]
    pub log_every: usize,
}

impl TrainConfig {
    /// Checks every value's domain before any work is done.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(Error::invalid("--epochs", 0, "must be ≥ 1"));
        }
        if self.batch_size < 2 {
            return Err(Error::invalid(
                "--batch-size",
                self.batch_size,
                "must be ≥ 2",
            ));
        }
        self.optimizer_config().validate()?;
        self.reg.validate()?;
        if self.posterior.resolve(self.dataset)?.is_some() {
            let refuse = |flag: &str, value: &dyn std::fmt::Display| {
                Err(Error::invalid(
                    flag,
                    value,
                    "toy-score trains one of SCORE's objectives: choose it with --objective (standard, madry, score) and --distance; --method, --clip, --label-smoothing and the TASER penalty do not apply",
                ))
            };
            if self.method != Method::Standard {
                return refuse("--method", &format!("{:?}", self.method).to_lowercase());
            }
            if let Some(c) = self.robust.clip {
                return refuse("--clip", &c);
            }
            if self.robust.label_smoothing > 0.0 {
                return refuse("--label-smoothing", &self.robust.label_smoothing);
            }
        }
        self.schedule().validate(self.epochs)
    }

    /// Loads the data set of this run (toy-score with its --train-size).
    pub fn load_data(&self, data_dir: &Path) -> Result<Dataset> {
        data::load_sized(self.dataset, data_dir, self.seed, self.posterior.train_size)
    }

    pub fn optimizer_config(&self) -> OptimizerConfig {
        OptimizerConfig {
            kind: self.optimizer,
            momentum: self.momentum,
            nesterov: self.nesterov,
            beta1: self.adam_betas.first().copied().unwrap_or(0.9),
            beta2: self.adam_betas.get(1).copied().unwrap_or(0.999),
            eps: self.adam_eps,
            weight_decay: self.weight_decay,
        }
    }

    pub fn schedule(&self) -> Schedule {
        Schedule {
            kind: self.schedule,
            lr_max: self.lr,
            lr_min: self.lr_min,
            warmup_epochs: self.warmup_epochs,
            milestones: self.milestones.clone(),
            gamma: self.lr_gamma,
        }
    }

    fn uses_crop_flip(&self) -> bool {
        match self.augment {
            Augment::Auto => matches!(self.dataset, DatasetName::Cifar10 | DatasetName::Cifar100),
            Augment::None => false,
            Augment::CropFlip => true,
        }
    }

    /// The model spec for `data`.
    pub fn model_spec(&self, data: &Dataset) -> ModelSpec {
        ModelSpec {
            arch: self.model,
            activation: self.activation,
            mlp_hidden: self.mlp_hidden.clone(),
            input_shape: data.input_shape.clone(),
            num_outputs: data.num_outputs,
        }
    }
}

/// One row of `metrics.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub lr: f64,
    /// The method's task loss (without the regulariser), averaged over the epoch.
    pub train_loss: f64,
    pub train_acc: Option<f64>,
    pub test_loss: f64,
    pub test_acc: Option<f64>,
    /// Mean squared error on the out-of-distribution split (toy-sin).
    pub ood_loss: Option<f64>,
    /// Mean Stein penalty R over the epoch's batches (before λ).
    pub penalty: Option<f64>,
    /// Mean and standard deviation of the Stein residuals r(x) of the epoch.
    pub residual_mean: Option<f64>,
    pub residual_std: Option<f64>,
    /// toy-score: R_Standard, R_Madry and R_SCORE of the run's distance after
    /// the epoch, estimated on the test split (grid inner maximum).
    #[serde(default)]
    pub risk_standard: Option<f64>,
    #[serde(default)]
    pub risk_madry: Option<f64>,
    #[serde(default)]
    pub risk_score: Option<f64>,
    pub seconds: f64,
}

/// Loss and accuracy of a model on a split.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    pub loss: f64,
    /// `None` for regression.
    pub accuracy: Option<f64>,
}

/// The task loss: mean cross-entropy (classification), mean squared error
/// of the single output (regression) or the posterior gap
/// mean |sigmoid(z) − p_d(y=1|x)| (toy-score, SCORE's self-consistency).
pub fn task_loss(task: Task, output: &Tensor, y: &Tensor) -> Tensor {
    match task {
        Task::Classification => output.cross_entropy_for_logits(y),
        Task::Regression => output.view([-1]).mse_loss(y, tch::Reduction::Mean),
        Task::Posterior => (output.view([-1]).sigmoid() - y).abs().mean(Kind::Float),
    }
}

/// Evaluates `model` on `split` in eval mode, in batches.
pub fn evaluate(model: &Model, task: Task, split: &Split, batch_size: usize) -> Evaluation {
    let _guard = tch::no_grad_guard();
    let n = split.len();
    let device = model.device();
    let mut loss_sum = 0.0;
    let mut correct = 0i64;
    let mut start = 0;
    while start < n {
        let len = (batch_size as i64).min(n - start);
        let x = split.x.narrow(0, start, len).to_device(device);
        let y = split.y.narrow(0, start, len).to_device(device);
        let out = model.forward_t(&x, false);
        loss_sum += task_loss(task, &out, &y).double_value(&[]) * len as f64;
        if task == Task::Classification {
            correct += out
                .argmax(-1, false)
                .eq_tensor(&y)
                .sum(Kind::Int64)
                .int64_value(&[]);
        }
        start += len;
    }
    Evaluation {
        loss: loss_sum / n.max(1) as f64,
        accuracy: (task == Task::Classification).then(|| correct as f64 / n.max(1) as f64),
    }
}

/// Seed of epoch `epoch`'s shuffling and augmentation, mixed from the run's
/// seed (SplitMix64 finaliser, so nearby seeds give unrelated streams).
pub fn epoch_seed(seed: u64, epoch: usize) -> u64 {
    let mut z = seed
        ^ (epoch as u64)
            .wrapping_add(1)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub checkpoint: PathBuf,
    pub metrics: BTreeMap<String, f64>,
    pub already_complete: bool,
}

/// The lines `train` and `finetune` print at the end: `key = value` per
/// metric, then the checkpoint's path (easy to grep in batch logs).
impl std::fmt::Display for TrainSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.already_complete {
            writeln!(f, "already complete: {}", self.checkpoint.display())?;
        }
        for (k, v) in &self.metrics {
            writeln!(f, "{k} = {v:.6}")?;
        }
        write!(f, "checkpoint: {}", self.checkpoint.display())
    }
}

const RESUME_WEIGHTS: &str = "resume.safetensors";
const RESUME_CONFIG: &str = "resume.json";
const FINAL_WEIGHTS: &str = "model.safetensors";
const METRICS: &str = "metrics.csv";

/// The configuration a resume state belongs to.
#[derive(Debug, Serialize, Deserialize)]
struct ResumeConfig {
    version: String,
    config: TrainConfig,
}

fn write_metrics(path: &Path, rows: &[EpochMetrics]) -> Result<()> {
    write_atomically(path, |tmp| {
        let mut w = csv::Writer::from_path(tmp).map_err(|e| Error::io(tmp, e.into()))?;
        for r in rows {
            w.serialize(r).map_err(|e| Error::io(tmp, e.into()))?;
        }
        w.flush().map_err(|e| Error::io(tmp, e))
    })
}

/// Reads a run's `metrics.csv` (empty when there is none yet).
pub fn read_metrics(path: &Path) -> Result<Vec<EpochMetrics>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let mut r = csv::Reader::from_path(path).map_err(|e| Error::io(path, e.into()))?;
    r.deserialize()
        .collect::<std::result::Result<Vec<EpochMetrics>, _>>()
        .map_err(|e| Error::CorruptInput {
            path: path.to_path_buf(),
            reason: e.to_string(),
            fix: "delete the output directory and train again".into(),
        })
}

/// Lists the differing top-level keys of two configurations.
fn config_differences(a: &TrainConfig, b: &TrainConfig) -> Vec<String> {
    let (a, b) = (
        serde_json::to_value(a).unwrap(),
        serde_json::to_value(b).unwrap(),
    );
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return vec![];
    };
    a.iter()
        .filter(|(k, v)| b.get(*k) != Some(v))
        .map(|(k, v)| {
            format!(
                "{k}: saved {} vs now {}",
                b.get(k).cloned().unwrap_or_default(),
                v
            )
        })
        .collect()
}

/// State restored from `--out` when resuming.
struct Restored {
    epochs_done: usize,
    rows: Vec<EpochMetrics>,
    global_center: Option<f64>,
}

fn restore(
    cfg: &TrainConfig,
    out: &Path,
    model: &mut Model,
    opt: &mut Optimizer,
    ema: Option<&mut Ema>,
) -> Result<Option<Restored>> {
    let cfg_path = out.join(RESUME_CONFIG);
    let weights_path = out.join(RESUME_WEIGHTS);
    if !cfg_path.exists() || !weights_path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
    let saved: ResumeConfig = serde_json::from_str(&text).map_err(|e| Error::CorruptInput {
        path: cfg_path.clone(),
        reason: e.to_string(),
        fix: "delete the output directory and train again".into(),
    })?;
    let diffs = config_differences(cfg, &saved.config);
    if !diffs.is_empty() {
        return Err(Error::CheckpointMismatch {
            path: weights_path,
            reason: format!("it belongs to another configuration ({})", diffs.join("; ")),
            fix: "resume with the same flags, or choose another --out".into(),
        });
    }
    let tensors = checkpoint::read_tensors(&weights_path)?;
    let strip = |prefix: &str, part: Vec<(String, Tensor)>| -> Vec<(String, Tensor)> {
        part.into_iter()
            .map(|(n, t)| (n[prefix.len()..].to_string(), t))
            .collect()
    };
    let (model_part, rest): (Vec<_>, Vec<_>) = tensors
        .into_iter()
        .partition(|(n, _)| n.starts_with("model."));
    let (ema_part, rest): (Vec<_>, Vec<_>) =
        rest.into_iter().partition(|(n, _)| n.starts_with("ema."));
    checkpoint::load_tensors_into(model, &strip("model.", model_part), &weights_path)?;
    if let Some(ema) = ema {
        checkpoint::load_tensors_into(&mut ema.model, &strip("ema.", ema_part), &weights_path)?;
    }
    opt.load_state(&rest)
        .map_err(|reason| Error::CorruptInput {
            path: weights_path.clone(),
            reason,
            fix: "delete the output directory and train again".into(),
        })?;
    let epochs_done = rest
        .iter()
        .find(|(n, _)| n == "epochs_completed")
        .map(|(_, t)| t.int64_value(&[0]) as usize)
        .ok_or_else(|| Error::CorruptInput {
            path: weights_path.clone(),
            reason: "no epoch counter".into(),
            fix: "delete the output directory and train again".into(),
        })?;
    // metrics.csv is written before the resume state, so it may hold one
    // epoch more than the state; that epoch is recomputed.
    let rows = read_metrics(&out.join(METRICS))?
        .into_iter()
        .filter(|r| r.epoch <= epochs_done)
        .collect();
    let global_center = rest
        .iter()
        .find(|(n, _)| n == "stein.global_center")
        .map(|(_, t)| t.double_value(&[0]));
    Ok(Some(Restored {
        epochs_done,
        rows,
        global_center,
    }))
}

fn save_resume_state(
    out: &Path,
    model: &Model,
    opt: &Optimizer,
    ema: Option<&Ema>,
    epochs_done: usize,
    global_center: Option<f64>,
) -> Result<()> {
    let mut tensors: Vec<(String, Tensor)> = checkpoint::model_tensors(model)
        .into_iter()
        .map(|(n, t)| (format!("model.{n}"), t))
        .collect();
    tensors.extend(opt.state_tensors());
    if let Some(ema) = ema {
        tensors.extend(ema.state_tensors());
    }
    tensors.push((
        "epochs_completed".into(),
        Tensor::from_slice(&[epochs_done as i64]),
    ));
    if let Some(c) = global_center {
        tensors.push(("stein.global_center".into(), Tensor::from_slice(&[c])));
    }
    checkpoint::write_tensors(&out.join(RESUME_WEIGHTS), &tensors)
}

/// What one optimisation step reports (detached tensors, left on the
/// device so that the loop does not synchronise every step).
#[derive(Debug)]
pub struct StepOutput {
    /// The method's task loss (without the regulariser).
    pub task_loss: Tensor,
    /// Correct predictions in the batch (classification).
    pub correct: Option<Tensor>,
    pub stein: Option<regularizer::SteinStats>,
}

/// What a step minimises, besides the batch: the method, the regulariser
/// and, for fine-tuning, the frozen teacher.
pub struct Objective<'a> {
    pub task: Task,
    pub method: &'a MethodSettings,
    pub regularizer: &'a Regularizer,
    /// AWP's γ when weight perturbation is on for this step.
    pub awp_gamma: Option<f64>,
    /// Fine-tuning's frozen teacher f_θ0 and its weight α (TASER eq. 26).
    pub teacher: Option<(&'a Model, f64)>,
    /// toy-score: the SCORE objective that replaces the method's loss.
    pub posterior: Option<&'a PosteriorSettings>,
}

/// One mini-batch: inputs, targets, their indices in the training split
/// and the augmentation `x` received (both for precomputed scores).
pub struct Batch<'a> {
    pub x: &'a Tensor,
    pub y: &'a Tensor,
    pub indices: &'a [i64],
    pub aug: Option<&'a CropFlip>,
}

/// One optimisation step (TASER eq. 25/26): the method's loss (on its
/// adversarial batch), plus α·KL(f_θ0(x) ‖ f_θ(x)) when fine-tuning, plus
/// λ(t)·R on the clean batch; with AWP the gradient is taken at the
/// perturbed weights and the perturbation removed after the update. `step`
/// drives the λ ramp.
pub fn train_step(
    model: &Model,
    opt: &mut Optimizer,
    obj: &Objective,
    batch: &Batch,
    step: usize,
    lr: f64,
) -> Result<StepOutput> {
    let (x, y) = (batch.x, batch.y);
    let classification = obj.task == Task::Classification;
    let x_adv = if classification {
        obj.method.adversarial_batch(model, x, y)
    } else {
        None
    };
    let base_loss = || {
        if let Some(objective) = obj.posterior {
            let (loss, logits_at_worst_case) = objective.loss(model, x, y);
            method::MethodLoss {
                loss,
                clean_logits: None,
                logits_for_accuracy: logits_at_worst_case,
            }
        } else if classification {
            obj.method.loss(model, x, x_adv.as_ref(), y)
        } else {
            let z = model.forward_t(x, true);
            method::MethodLoss {
                loss: task_loss(obj.task, &z, y),
                clean_logits: Some(z.shallow_clone()),
                logits_for_accuracy: z,
            }
        }
    };
    let perturbation = obj
        .awp_gamma
        .map(|gamma| awp::perturb(model, gamma, &|| base_loss().loss));
    let base = base_loss();
    let loss = match obj.teacher {
        None => base.loss.shallow_clone(),
        Some((teacher, alpha)) => {
            let target = tch::no_grad(|| teacher.forward_t(x, false));
            let student = match &base.clean_logits {
                Some(z) => z.shallow_clone(),
                None => model.forward_t(x, true),
            };
            &base.loss + method::kl_div(&target, &student).mean(Kind::Float) * alpha
        }
    };
    let mut stein = None;
    let loss = match obj.regularizer {
        Regularizer::None => loss,
        Regularizer::L2 { lambda } => loss + l2_term(model, *lambda),
        Regularizer::Stein(p) => {
            let (term, stats) = p.term(model, x, y, batch.indices, batch.aug, step)?;
            stein = Some(stats);
            loss + term
        }
    };
    opt.zero_grad();
    loss.backward();
    opt.step(lr);
    if let Some(p) = perturbation {
        awp::restore(p);
    }
    let _guard = tch::no_grad_guard();
    Ok(StepOutput {
        task_loss: base.loss.detach().to_kind(Kind::Double),
        correct: classification.then(|| {
            base.logits_for_accuracy
                .argmax(-1, false)
                .eq_tensor(y)
                .sum(Kind::Int64)
        }),
        stein,
    })
}

/// The defaults a run actually used (ε, step, β…), for the sidecar.
fn resolved_settings(s: &MethodSettings) -> serde_json::Value {
    serde_json::json!({
        "method": s.method,
        "loss": s.divergence,
        "beta": s.beta,
        "clip": s.clip,
        "label_smoothing": s.label_smoothing,
        "attack": s.attack.map(|a| serde_json::json!({
            "norm": a.threat.norm,
            "eps": a.threat.eps,
            "steps": a.steps,
            "step_size": a.step_size,
            "start": format!("{:?}", a.start),
            "bn_train": a.bn_train,
        })),
        "awp_gamma": s.awp.map(|a| a.0),
        "awp_first_epoch": s.awp.map(|a| a.1),
        "ema_tau": s.ema_tau,
    })
}

/// One line of progress for batch logs.
fn epoch_line(row: &EpochMetrics, epochs: usize) -> String {
    let opt =
        |name: &str, v: Option<f64>| v.map(|v| format!("  {name} {v:.4}")).unwrap_or_default();
    format!(
        "epoch {:>3}/{epochs}  lr {:.4e}  train loss {:.4}{}  test loss {:.4}{}{}{}{}{}{}{}  {:.1}s",
        row.epoch,
        row.lr,
        row.train_loss,
        opt("acc", row.train_acc),
        row.test_loss,
        opt("acc", row.test_acc),
        opt("ood", row.ood_loss),
        opt("penalty", row.penalty),
        opt("residual", row.residual_mean),
        opt("R_standard", row.risk_standard),
        opt("R_madry", row.risk_madry),
        opt("R_score", row.risk_score),
        row.seconds
    )
}

/// Flags of `finetune` beyond those of `train`.
#[derive(Debug, Clone, clap::Args)]
pub struct FinetuneArgs {
    /// Checkpoint θ0 to start from; it also serves as the frozen teacher.
    #[arg(long)]
    pub from: PathBuf,
    /// Weight α of the teacher term α·KL(f_θ0(x) ‖ f_θ(x)) (TASER eq. 26).
    #[arg(long, default_value_t = 1.0)]
    pub alpha: f64,
    /// Ramp λ over the learning-rate warm-up (set when --lambda-warmup-steps
    /// is not given).
    #[arg(skip)]
    pub ramp_lambda_over_warmup: bool,
}

/// Runs a training job: validates everything, loads data, trains, writes
/// the outputs. Progress goes to a bar on a terminal and one line per epoch
/// on stdout.
pub fn train(cfg: &TrainConfig, run: &RunOptions) -> Result<TrainSummary> {
    run_training(cfg, run, None)
}

/// Fine-tunes the checkpoint `ft.from` (TASER §3.4, eq. 26): the student
/// starts at θ0, the frozen θ0 is the teacher of the α·KL term. The
/// checkpoint must be of `cfg`'s model and data set.
pub fn finetune(cfg: &TrainConfig, run: &RunOptions, ft: &FinetuneArgs) -> Result<TrainSummary> {
    if !(ft.alpha.is_finite() && ft.alpha >= 0.0) {
        return Err(Error::invalid("--alpha", ft.alpha, "must be ≥ 0"));
    }
    run_training(cfg, run, Some(ft))
}

fn load_teacher(
    ft: &FinetuneArgs,
    spec: &ModelSpec,
    data: &Dataset,
    device: tch::Device,
) -> Result<Model> {
    let meta = checkpoint::read_meta(&ft.from)?;
    let mismatch = |reason: String, fix: &str| Error::CheckpointMismatch {
        path: ft.from.clone(),
        reason,
        fix: fix.into(),
    };
    if meta.dataset != data.name.to_string() {
        return Err(mismatch(
            format!("it was trained on {}, not on {}", meta.dataset, data.name),
            "pass the --dataset it was trained on, or a checkpoint of this data set",
        ));
    }
    if meta.train_fingerprint != data.train.fingerprint() {
        return Err(mismatch(
            "its training split's fingerprint differs from this one's (other data files or split seed)".into(),
            "fine-tune with the data and --seed it was trained with",
        ));
    }
    if &meta.model != spec {
        return Err(mismatch(
            format!(
                "it holds model {} ({:?}, hidden {:?}), not {} ({:?}, hidden {:?})",
                meta.model.arch,
                meta.model.activation,
                meta.model.mlp_hidden,
                spec.arch,
                spec.activation,
                spec.mlp_hidden
            ),
            "leave --model/--activation/--mlp-hidden out (finetune takes them from the checkpoint) or match them",
        ));
    }
    Ok(checkpoint::load(&ft.from, device)?.0)
}

fn run_training(
    cfg: &TrainConfig,
    run: &RunOptions,
    finetune: Option<&FinetuneArgs>,
) -> Result<TrainSummary> {
    cfg.validate()?;
    if run.threads > 0 {
        tch::set_num_threads(run.threads);
    }
    let device = parse_device(&run.device)?;
    let data_dir = run.data_dir.clone().unwrap_or_else(data::default_data_dir);
    let data = cfg.load_data(&data_dir)?;
    let spec = cfg.model_spec(&data);
    spec.validate()?;
    let settings = cfg
        .robust
        .resolve(cfg.method, cfg.dataset, data.task, data.num_outputs)?;
    let posterior = cfg.posterior.resolve(cfg.dataset)?;
    let n = data.train.len() as usize;
    let per_epoch = n / cfg.batch_size + usize::from(n % cfg.batch_size >= 2);
    let total_steps = per_epoch * cfg.epochs;
    let mut cfg = cfg.clone();
    if finetune.is_some_and(|f| f.ramp_lambda_over_warmup) {
        cfg.reg.lambda_warmup_steps = (cfg.warmup_epochs * per_epoch as f64).round() as usize;
    }
    let cfg = &cfg;
    if cfg.uses_crop_flip() && data.input_shape.len() != 3 {
        return Err(Error::invalid(
            "--augment",
            "crop-flip",
            "needs image inputs",
        ));
    }

    let out = run.out.as_path();
    let final_path = out.join(FINAL_WEIGHTS);
    if !run.resume
        && (out.join(RESUME_CONFIG).exists() || checkpoint::sidecar_path(&final_path).exists())
    {
        return Err(Error::invalid(
            "--out",
            out.display(),
            "it already holds a training run; pass --resume to continue it, or choose another --out",
        ));
    }
    ensure_writable_dir(out)?;

    let teacher = finetune
        .map(|ft| load_teacher(ft, &spec, &data, device))
        .transpose()?;
    tch::manual_seed(cfg.seed as i64);
    let (mean, std) = data::channel_stats(&data.train.x);
    let mut model = Model::new(&spec, device, &mean, &std)?;
    if let Some(t) = &teacher {
        model.copy_from(t)?;
    }
    let mut opt = Optimizer::new(&cfg.optimizer_config(), model.named_trainable());
    let mut ema = settings
        .ema_tau
        .map(|tau| Ema::new(&model, tau))
        .transpose()?;

    let restored = if run.resume {
        restore(cfg, out, &mut model, &mut opt, ema.as_mut())?
    } else {
        None
    };
    let (start_epoch, mut rows, saved_center) = match restored {
        Some(r) => (r.epochs_done, r.rows, r.global_center),
        None => (0, Vec::new(), None),
    };
    let mut regularizer = Regularizer::new(&cfg.reg, &data, device)?;
    let global_center = match &mut regularizer {
        Regularizer::Stein(p) if p.center == Center::Global => Some(match saved_center {
            Some(c) => {
                p.global_center = c;
                c
            }
            None => p.calibrate(&model, &data, cfg.reg.calibration_size, cfg.seed)?,
        }),
        _ => None,
    };
    if start_epoch >= cfg.epochs {
        if let Ok(meta) = checkpoint::read_meta(&final_path) {
            return Ok(TrainSummary {
                checkpoint: final_path,
                metrics: meta.metrics,
                already_complete: true,
            });
        }
    }
    let resume_cfg = ResumeConfig {
        version: crate::VERSION.into(),
        config: cfg.clone(),
    };
    write_bytes_atomically(
        &out.join(RESUME_CONFIG),
        serde_json::to_string_pretty(&resume_cfg)
            .unwrap()
            .as_bytes(),
    )?;

    let schedule = cfg.schedule();
    let train_x = data.train.x.to_device(device);
    let train_y = data.train.y.to_device(device);
    // toy-score's risks are estimated on the test split after every epoch.
    let test_on_device = posterior
        .is_some()
        .then(|| (data.test.x.to_device(device), data.test.y.to_device(device)));
    let crop_flip = cfg.uses_crop_flip();
    let bar = progress::bar(total_steps as u64, "train");
    bar.set_position((start_epoch * per_epoch) as u64);
    let started = Instant::now();

    for epoch in start_epoch..cfg.epochs {
        let epoch_start = Instant::now();
        let seed = epoch_seed(cfg.seed, epoch);
        tch::manual_seed(seed as i64);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut order: Vec<i64> = (0..n as i64).collect();
        order.shuffle(&mut rng);
        let mut loss_sum = Tensor::zeros([], (Kind::Double, device));
        let mut correct = Tensor::zeros([], (Kind::Int64, device));
        let mut seen = 0usize;
        let stein_on = matches!(regularizer, Regularizer::Stein(_));
        let mut stein_sums = [0.0f64; 3].map(|_| Tensor::zeros([], (Kind::Double, device)));
        let mut batches = 0usize;
        let mut lr = schedule.lr_at(epoch * per_epoch, total_steps, per_epoch);
        for (b, idx) in order
            .chunks(cfg.batch_size)
            .filter(|c| c.len() >= 2)
            .enumerate()
        {
            let step = epoch * per_epoch + b;
            lr = schedule.lr_at(step, total_steps, per_epoch);
            let idx_t = Tensor::from_slice(idx).to_device(device);
            let y = train_y.index_select(0, &idx_t);
            let aug = crop_flip.then(|| CropFlip::draw(idx.len(), &mut rng));
            let x = match &aug {
                Some(a) => a.apply(&train_x.index_select(0, &idx_t)),
                None => train_x.index_select(0, &idx_t),
            };
            let objective = Objective {
                task: data.task,
                method: &settings,
                regularizer: &regularizer,
                awp_gamma: settings
                    .awp
                    .and_then(|(gamma, first_epoch)| (epoch >= first_epoch).then_some(gamma)),
                teacher: teacher.as_ref().zip(finetune).map(|(t, f)| (t, f.alpha)),
                posterior: posterior.as_ref(),
            };
            let batch = Batch {
                x: &x,
                y: &y,
                indices: idx,
                aug: aug.as_ref(),
            };
            let out = train_step(&model, &mut opt, &objective, &batch, step, lr)?;
            if let Some(ema) = ema.as_mut() {
                ema.update();
            }
            batches += 1;
            loss_sum += out.task_loss * idx.len() as f64;
            if let Some(c) = out.correct {
                correct += c;
            }
            if let Some(stats) = out.stein {
                stein_sums[0] += stats.penalty;
                stein_sums[1] += stats.residual_sum;
                stein_sums[2] += stats.residual_sq_sum;
            }
            seen += idx.len();
            bar.inc(1);
        }
        let eval_model = ema.as_ref().map_or(&model, |e| &e.model);
        let test = evaluate(eval_model, data.task, &data.test, run.eval_batch_size);
        let ood = data
            .ood
            .as_ref()
            .map(|o| evaluate(eval_model, data.task, o, run.eval_batch_size).loss);
        let risks = posterior
            .zip(test_on_device.as_ref())
            .map(|(p, (x, y))| p.risks(eval_model, x, y));
        let (penalty, residual_mean, residual_std) = if stein_on {
            let [p, r, r2] = stein_sums.each_ref().map(|t| t.double_value(&[]));
            let mean = r / seen as f64;
            (
                Some(p / batches as f64),
                Some(mean),
                Some((r2 / seen as f64 - mean * mean).max(0.0).sqrt()),
            )
        } else {
            (None, None, None)
        };
        let row = EpochMetrics {
            epoch: epoch + 1,
            lr,
            train_loss: loss_sum.double_value(&[]) / seen as f64,
            train_acc: (data.task == Task::Classification)
                .then(|| correct.int64_value(&[]) as f64 / seen as f64),
            test_loss: test.loss,
            test_acc: test.accuracy,
            ood_loss: ood,
            penalty,
            residual_mean,
            residual_std,
            risk_standard: risks.map(|r| r.standard),
            risk_madry: risks.map(|r| r.madry),
            risk_score: risks.map(|r| r.score),
            seconds: epoch_start.elapsed().as_secs_f64(),
        };
        if !row.train_loss.is_finite() || row.penalty.is_some_and(|p| !p.is_finite()) {
            // A run that never saved an epoch leaves nothing behind, so the
            // same --out can be reused with a lower --lr or --lambda.
            if !out.join(RESUME_WEIGHTS).exists() {
                let _ = std::fs::remove_file(out.join(RESUME_CONFIG));
            }
            return Err(Error::Diverged {
                epoch: row.epoch,
                detail: format!("train loss {}, penalty {:?}", row.train_loss, row.penalty),
            });
        }
        let last_epoch = row.epoch == cfg.epochs;
        if last_epoch || row.epoch.is_multiple_of(run.log_every.max(1)) {
            bar.suspend(|| println!("{}", epoch_line(&row, cfg.epochs)));
        }
        rows.retain(|r| r.epoch < row.epoch);
        rows.push(row);
        if last_epoch || (epoch + 1).is_multiple_of(run.checkpoint_every.max(1)) {
            write_metrics(&out.join(METRICS), &rows)?;
            save_resume_state(out, &model, &opt, ema.as_ref(), epoch + 1, global_center)?;
        }
    }
    bar.finish_and_clear();

    let last = rows.last().cloned().expect("at least one epoch");
    let mut metrics = BTreeMap::new();
    metrics.insert("test_loss".into(), last.test_loss);
    metrics.insert("train_loss".into(), last.train_loss);
    if let Some(a) = last.test_acc {
        metrics.insert("test_acc".into(), a);
    }
    if let Some(a) = last.train_acc {
        metrics.insert("train_acc".into(), a);
    }
    for (key, value) in [
        ("ood_loss", last.ood_loss),
        ("penalty", last.penalty),
        ("residual_mean", last.residual_mean),
        ("residual_std", last.residual_std),
        ("risk_standard", last.risk_standard),
        ("risk_madry", last.risk_madry),
        ("risk_score", last.risk_score),
        ("stein_global_center", global_center),
    ] {
        if let Some(v) = value {
            metrics.insert(key.into(), v);
        }
    }
    metrics.insert("train_seconds".into(), rows.iter().map(|r| r.seconds).sum());
    if start_epoch > 0 {
        metrics.insert("seconds_this_run".into(), started.elapsed().as_secs_f64());
    }
    let meta = CheckpointMeta {
        format: checkpoint::FORMAT.into(),
        version: crate::VERSION.into(),
        model: spec,
        dataset: data.name.to_string(),
        train_fingerprint: data.train.fingerprint(),
        seed: cfg.seed,
        epochs_completed: cfg.epochs,
        hyperparameters: serde_json::json!({
            "config": cfg,
            "device": device_name(device),
            "resolved": resolved_settings(&settings),
            "posterior": posterior,
            "finetuned_from": finetune.map(|f| f.from.display().to_string()),
            "teacher_alpha": finetune.map(|f| f.alpha),
            "weights": if ema.is_some() { "ema" } else { "last" },
        }),
        metrics: metrics.clone(),
    };
    checkpoint::save(
        ema.as_ref().map_or(&model, |e| &e.model),
        &final_path,
        &meta,
    )?;
    Ok(TrainSummary {
        checkpoint: final_path,
        metrics,
        already_complete: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::toy::toy_sin;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        cfg: TrainConfig,
    }

    fn config(args: &[&str]) -> TrainConfig {
        let mut full = vec!["train"];
        full.extend(args);
        Cli::try_parse_from(full).unwrap().cfg
    }

    /// One step of a fresh tanh mlp on toy data; returns the forward passes
    /// made and the parameters after the step.
    fn one_step(args: &[&str]) -> (usize, Vec<Tensor>) {
        let cfg = config(args);
        let data = toy_sin(0);
        tch::manual_seed(0);
        let model = Model::new(&cfg.model_spec(&data), tch::Device::Cpu, &[0.0], &[1.0]).unwrap();
        let mut opt = Optimizer::new(&cfg.optimizer_config(), model.named_trainable());
        let reg = Regularizer::new(&cfg.reg, &data, tch::Device::Cpu).unwrap();
        let idx: Vec<i64> = (0..32).collect();
        let t = Tensor::from_slice(&idx);
        let (x, y) = (
            data.train.x.index_select(0, &t),
            data.train.y.index_select(0, &t),
        );
        let before = model.forward_calls();
        let settings = cfg
            .robust
            .resolve(cfg.method, data.name, data.task, data.num_outputs)
            .unwrap();
        let objective = Objective {
            task: data.task,
            method: &settings,
            regularizer: &reg,
            awp_gamma: None,
            teacher: None,
            posterior: None,
        };
        let batch = Batch {
            x: &x,
            y: &y,
            indices: &idx,
            aug: None,
        };
        train_step(&model, &mut opt, &objective, &batch, 0, 0.01).unwrap();
        let params = model
            .named_trainable()
            .into_iter()
            .map(|(_, p)| p.detach().copy())
            .collect();
        (model.forward_calls() - before, params)
    }

    #[test]
    fn e_lambda_zero_adds_no_pass_and_changes_nothing() {
        let base = [
            "--dataset",
            "toy-sin",
            "--model",
            "mlp",
            "--activation",
            "tanh",
        ];
        let (calls_plain, p_plain) = one_step(&base);
        let mut zero = base.to_vec();
        zero.extend([
            "--lambda",
            "0",
            "--stein-order",
            "full",
            "--stein-laplacian",
            "exact",
        ]);
        let (calls_zero, p_zero) = one_step(&zero);
        assert_eq!(calls_plain, 1);
        assert_eq!(calls_zero, 1, "λ = 0 made extra forward passes");
        assert!(p_plain.iter().zip(&p_zero).all(|(a, b)| a.equal(b)));
        // With λ > 0 the penalty does cost passes and changes the step.
        let mut on = zero.clone();
        on[7] = "1";
        let (calls_on, p_on) = one_step(&on);
        assert!(calls_on > 1);
        assert!(p_plain.iter().zip(&p_on).any(|(a, b)| !a.equal(b)));
        let mut fd = on.clone();
        fd.extend(["--stein-mode", "fd"]);
        assert_eq!(
            one_step(&fd).0,
            2,
            "fd: one ordinary and one batched forward"
        );
    }

    #[test]
    fn negative_lambda_and_zero_probes_are_refused() {
        let err = config(&["--lambda=-1"]).validate().unwrap_err().to_string();
        assert!(err.contains("--lambda"), "{err}");
        let err = config(&["--lambda", "1", "--hutchinson-probes", "0"])
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("--hutchinson-probes"), "{err}");
    }
}
