//! The flags of `train` (and those `finetune` shares): [`TrainConfig`], the
//! run's identity, and [`RunOptions`], where and how it runs. They are
//! resolved into a [`super::plan::TrainPlan`] before anything runs.
use super::method::{Method, MethodArgs};
use super::mixing::ExtraArgs;
use super::posterior::{self, PosteriorArgs, PosteriorSettings};
use super::step::StepPrecision;
use super::validation::ValArgs;
use crate::data::augment::Augment;
use crate::data::{self, Dataset, DatasetName};
use crate::device::{MemoryFormat, Precision};
use crate::error::{Error, Result};
use crate::models::{Activation, Arch, ModelSpec};
use crate::optim::schedule::{Schedule, ScheduleKind};
use crate::optim::{OptimizerConfig, OptimizerKind};
use crate::runtime::RuntimeArgs;
use crate::stein::penalty::instruments::INSTRUMENT_BATCH;
use crate::stein::penalty::{LambdaRamp, RegArgs};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Every hyperparameter of a training run: what the sidecar records and
/// what must match for `--resume`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct TrainConfig {
    /// Data set: digits (8×8, 10 classes; embedded default), mnist-5k (5000
    /// MNIST images, 28×28, fetched by `make setup`; fixed 4000/1000 split),
    /// mnist (the official IDX files in --data-dir), cifar10, cifar100
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
    /// Flags of the robust methods (attack and its ε warm-up, divergence,
    /// β, AWP, EMA).
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
    /// Validation and best-checkpoint selection (--val-size…).
    #[command(flatten)]
    #[serde(flatten)]
    pub val: ValArgs,
    /// Extra data mixed into every batch (--extra-data, --extra-ratio).
    #[command(flatten)]
    #[serde(flatten)]
    pub extra: ExtraArgs,
    /// Precision and memory layout (--precision, --penalty-precision,
    /// --memory-format).
    #[command(flatten)]
    #[serde(flatten)]
    pub compute: ComputeArgs,
}

/// How the step computes: precision of the base loss and of the penalty,
/// and the layout of image tensors. Recorded in the sidecar (`config`) and
/// part of the run's identity (`--resume` refuses another choice), since
/// bf16 changes the numbers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(default)]
pub struct ComputeArgs {
    /// Precision of the base loss: f32, or bf16 = autocast with bfloat16
    /// for the base loss's forward (the training attack's forward/backward
    /// passes, the method's loss, the fine-tune teacher's KL term) and so
    /// for its backward; weights, gradients, the optimiser and the
    /// per-epoch evaluation stay f32. On CUDA (Ampere or newer) this is
    /// the fast path; on a CPU bf16 runs too (libtorch's CPU autocast),
    /// usually slower than f32.
    #[arg(long, value_enum, default_value = "f32")]
    pub precision: Precision,
    /// Precision of the TASER penalty's forward and derivatives (f32 by
    /// default even under --precision bf16: finite differences with step
    /// 1e-2 and second derivatives need f32); bf16 autocasts them too.
    /// Under different precisions fd does not reuse the base loss's
    /// clean forward for m(x).
    #[arg(long, value_enum, default_value = "f32")]
    pub penalty_precision: Precision,
    /// Layout of images, activations and convolution weights:
    /// contiguous (NCHW) or channels-last (NHWC strides, PyTorch's
    /// torch.channels_last; faster convolutions on tensor-core GPUs,
    /// especially with bf16). Convolutional models only (cnn-small,
    /// resnet18, preact-resnet18, wrn-D-K); checkpoints are written
    /// contiguous either way.
    #[arg(long, value_enum, default_value = "contiguous")]
    pub memory_format: MemoryFormat,
}

/// Where and how to run, not part of the result's identity.
#[derive(Debug, Clone, clap::Args)]
pub struct RunOptions {
    /// Output directory (created; must be writable).
    #[arg(long)]
    pub out: PathBuf,
    /// `--device`, `--data-dir` and `--threads`.
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Continue from the resume state in --out (start fresh if there is none).
    #[arg(long)]
    pub resume: bool,
    /// Batch size of evaluation passes.
    #[arg(long, default_value_t = 512)]
    pub eval_batch_size: usize,
    /// Write metrics.csv and the resume state every N epochs (and at the end).
    #[arg(long, default_value_t = 1)]
    pub checkpoint_every: usize,
    /// Print an epoch line every N epochs (and at the end).
    #[arg(long, default_value_t = 1)]
    pub log_every: usize,
    /// Training inputs in the penalty's per-epoch instruments (the
    /// diagnostic columns of metrics.csv): a fixed probe batch drawn from
    /// --seed, measured at once. Fewer are cheaper in memory (the full
    /// residual's graph grows with it) and noisier; training is the same.
    #[arg(
        long,
        default_value_t = INSTRUMENT_BATCH,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
    )]
    pub instrument_batch_size: usize,
    /// Do not time the step after the last epoch (model.json then has no
    /// step_seconds or penalty_step_overhead, and bootstrap's Overhead
    /// falls back to the wall-time ratio, marked "(wall)"); saves 12 steps.
    #[arg(long)]
    pub no_step_timing: bool,
    /// Train as one rank of a data-parallel group: start G processes with
    /// `mpirun -np G` or `srun -n G` (each takes the CUDA device of its
    /// node-local rank under --device auto, else the CPU). Every global
    /// batch of --batch-size is split over the ranks, their gradients are
    /// summed (NCCL or MPI: --collective) before each update, so the run computes what one
    /// process computes at that batch (to float rounding). By design as in
    /// PyTorch DDP: the training attack, AWP and BatchNorm act on each
    /// rank's share, random starts and probes come from each rank's own
    /// stream, BatchNorm's running statistics are averaged at each epoch's
    /// end. Rank 0 alone writes --out. SIGTERM/SIGINT to any rank stops
    /// all of them at the next step (exit 3; --resume continues from the
    /// last saved epoch). No step timing. Refused with --stein-fraction < 1
    /// and with --stein-bn train. Docs: docs/GUIDE.md, "Data-parallel
    /// training".
    #[arg(long)]
    pub data_parallel: bool,
    /// Seconds a data-parallel rank waits in one sum for the others (a
    /// rank died or hangs) before it stops every rank (exit 1). Rank 0's
    /// epoch-end evaluation and validation run while the others wait.
    #[arg(long, default_value_t = 1800.0)]
    pub collective_timeout: f64,
    /// What sums a data-parallel run's gradients: auto = NCCL on the
    /// devices when every rank computes on a CUDA device and NCCL loads
    /// (libnccl.so.2, which PyTorch's CUDA wheels ship), else MPI through
    /// host copies; nccl = NCCL or an error; mpi = MPI. Rank 0's first line
    /// and the checkpoint sidecar say which ran, and why not NCCL.
    #[arg(long, value_enum, default_value_t = crate::collective::Transport::Auto)]
    pub collective: crate::collective::Transport,
}

impl ComputeArgs {
    /// The precisions of a step's base loss and penalty.
    pub fn step_precision(&self) -> StepPrecision {
        StepPrecision {
            base: self.precision,
            penalty: self.penalty_precision,
        }
    }
}

/// What [`TrainConfig::check`] resolved while checking the flags.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CheckedFlags {
    /// λ and its ramp as the flags give them (`--lambda`,
    /// `--lambda-warmup-steps`); the one check of `--lambda`.
    pub ramp: LambdaRamp,
    /// The SCORE toy's settings (toy-score only).
    pub posterior: Option<PosteriorSettings>,
}

impl TrainConfig {
    /// Checks every value's domain before any work is done, and returns
    /// what the checks resolved (λ's ramp, the toy's settings).
    ///
    /// Errors: [`Error::InvalidArgument`] naming the first flag out of its
    /// domain.
    pub fn check(&self) -> Result<CheckedFlags> {
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
        self.optimizer_config().check()?;
        let ramp = self.reg.ramp()?;
        let posterior = self.posterior.resolve(self.dataset)?;
        if posterior.is_some() {
            posterior::refuse_method_flags(self.method, &self.robust)?;
        }
        self.schedule().check(self.epochs)?;
        self.robust.check_eps_warmup(self.method, self.epochs)?;
        if self.compute.memory_format == MemoryFormat::ChannelsLast && self.model == Arch::Mlp {
            return Err(Error::invalid(
                "--memory-format",
                "channels-last",
                "applies to the convolutional models (cnn-small, resnet18, preact-resnet18, \
                 wrn-D-K), not mlp; use --memory-format contiguous",
            ));
        }
        Ok(CheckedFlags { ramp, posterior })
    }

    /// Loads the data set of this run (toy-score with its --train-size).
    pub fn load_data(&self, data_dir: &Path) -> Result<Dataset> {
        data::load_sized(self.dataset, data_dir, self.seed, self.posterior.train_size)
    }

    /// The optimiser of `--optimizer` with its flags.
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

    /// The learning-rate schedule of `--schedule` with its flags.
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

    /// Whether batches get random crop (pad 4) + flip.
    pub fn uses_crop_flip(&self) -> bool {
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
