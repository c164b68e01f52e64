//! The plan of a training run: `train`'s and `finetune`'s flags resolved
//! once, before anything runs, into everything the run needs (every
//! default applied, the fine-tune defaults read from θ0's sidecar, λ checked
//! and its ramp built, the data, validation split and extra data loaded,
//! the regulariser built with its score file opened and checked, the
//! output folder checked), all before a model is built. After [`resolve`]
//! no code reads a flag: the flag struct stays in the plan only as the
//! run's recorded identity ([`TrainPlan::identity`]).
use super::config::{RunOptions, TrainConfig};
use super::finetuning::{self, FinetuneArgs};
use super::inputs::RunInputs;
use super::method::{EpsWarmup, MethodSettings};
use super::mixing::ExtraPlan;
use super::parallel;
use super::posterior::PosteriorSettings;
use super::step::{BaseLoss, StepLoss, StepPrecision};
use super::validation::ValPlan;
use crate::checkpoint;
use crate::collective::Group;
use crate::data::Dataset;
use crate::device::MemoryFormat;
use crate::error::{Error, Result};
use crate::fsutil::ensure_writable_dir;
use crate::layout::TrainRun;
use crate::models::Model;
use crate::models::ModelSpec;
use crate::optim::schedule::Schedule;
use crate::optim::OptimizerConfig;
use crate::runtime::{check_fd_precision, Runtime};
use crate::stein::penalty::Regularizer;
use std::path::PathBuf;
use std::rc::Rc;

/// Optimiser steps of a run: one per mini-batch (a final batch of one
/// sample is dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepCounts {
    pub per_epoch: usize,
    pub total: usize,
}

impl StepCounts {
    /// The counts for `n` training samples in batches of `batch_size` over
    /// `epochs` epochs.
    pub fn new(n: usize, batch_size: usize, epochs: usize) -> StepCounts {
        let per_epoch = n / batch_size + usize::from(n % batch_size >= 2);
        StepCounts {
            per_epoch,
            total: per_epoch * epochs,
        }
    }
}

/// The frozen teacher of a fine-tune.
#[derive(Debug)]
pub struct TeacherPlan {
    /// θ0's weights (checked against the run's model and data).
    pub from: PathBuf,
    /// f_θ0, loaded on the run's device in its memory format.
    pub model: Model,
    /// Weight α ≥ 0 of α·KL(f_θ0(x) ‖ f_θ(x)) (TASER eq. 26).
    pub alpha: f64,
}

/// Everything a training run needs, resolved from its flags.
#[derive(Debug)]
pub struct TrainPlan {
    /// The run's identity: its flags with every default filled in
    /// (fine-tune defaults, λ's ramp length), as the sidecar and the resume
    /// state record them. Recorded, never read to decide anything.
    pub identity: TrainConfig,
    /// `--seed`: model initialisation, shuffling, augmentation, probes.
    pub seed: u64,
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: OptimizerConfig,
    pub schedule: Schedule,
    /// Precision of the base loss and of the penalty.
    pub precision: StepPrecision,
    pub memory_format: MemoryFormat,
    /// The regulariser, built (score field opened and checked).
    pub regularizer: Regularizer,
    /// Training inputs that estimate the centre of `--center global`.
    pub calibration_size: usize,
    pub runtime: Runtime,
    /// The ranks of a data-parallel run (`--data-parallel`), else a group
    /// of one (shared with the caller, which tells the other ranks when
    /// this one fails).
    pub group: Rc<Group>,
    pub out: TrainRun,
    /// Continue from the resume state in `out` if there is one.
    pub resume: bool,
    /// What carries a data-parallel run's sums (`--collective`).
    pub collective: crate::collective::Transport,
    pub eval_batch_size: usize,
    /// Write metrics and the resume state every this many epochs (≥ 1).
    pub checkpoint_every: usize,
    /// Print an epoch line every this many epochs (≥ 1).
    pub log_every: usize,
    /// Inputs in the instruments' probe batch (`--instrument-batch-size`, ≥ 1).
    pub instrument_batch_size: usize,
    /// Time the step after the last epoch (not `--no-step-timing`).
    pub step_timing: bool,
    pub data: Dataset,
    pub spec: ModelSpec,
    /// The method's resolved settings (attack, β, AWP, EMA…).
    pub method: MethodSettings,
    /// The training attack's ε warm-up over the run's steps
    /// (`--eps-warmup-epochs`; off at 0).
    pub eps_warmup: EpsWarmup,
    /// toy-score: the SCORE objective that replaces the method's loss.
    pub posterior: Option<PosteriorSettings>,
    pub steps: StepCounts,
    /// Random crop (pad 4) + flip on every batch.
    pub crop_flip: bool,
    /// Fine-tuning's teacher.
    pub teacher: Option<TeacherPlan>,
    /// The validation split carved out of the training split, its attack
    /// and the selection (`--val-size` > 0).
    pub validation: Option<ValPlan>,
    /// The extra data mixed into every batch (`--extra-data`).
    pub extra: Option<ExtraPlan>,
    /// Fingerprints of what the run reads (data, validation split, extra
    /// data, score file, base), recorded in and checked against the resume
    /// state.
    pub inputs: RunInputs,
}

impl TrainPlan {
    /// What one step minimises before the teacher and regulariser terms.
    pub fn base_loss(&self) -> BaseLoss<'_> {
        self.base_loss_with(&self.method)
    }

    /// [`Self::base_loss`] with `settings` in place of the plan's method
    /// (the method of a step of the ε warm-up, [`Self::method_at`]).
    pub fn base_loss_with<'a>(&'a self, settings: &'a MethodSettings) -> BaseLoss<'a> {
        match &self.posterior {
            Some(p) => BaseLoss::Posterior(p),
            None => BaseLoss::Method {
                task: self.data.task,
                settings,
            },
        }
    }

    /// What a step of 0-based `epoch` minimises with `method` (the plan's,
    /// or the ε warm-up's, [`Self::method_at`]) and `regularizer`: AWP from
    /// its first epoch, the fine-tune's teacher, the plan's precision.
    pub fn step_loss<'a>(
        &'a self,
        regularizer: &'a Regularizer,
        method: &'a MethodSettings,
        epoch: usize,
    ) -> StepLoss<'a> {
        StepLoss {
            base: self.base_loss_with(method),
            regularizer,
            awp_gamma: self
                .method
                .awp
                .and_then(|(gamma, first_epoch)| (epoch >= first_epoch).then_some(gamma)),
            teacher: self.teacher.as_ref().map(|t| (&t.model, t.alpha)),
            precision: self.precision,
        }
    }

    /// The method at 0-based optimiser step `step` while the ε warm-up
    /// ramps: the training attack's ε and step size scaled by
    /// [`EpsWarmup::factor`]. `None` when the step attacks at the full ε
    /// (after the ramp, without one, or without an attack): the plan's
    /// `method` applies unchanged.
    pub fn method_at(&self, step: usize) -> Option<MethodSettings> {
        let factor = self.eps_warmup.factor(step);
        (factor < 1.0 && self.method.attack.is_some())
            .then(|| self.method.with_attack_scaled(factor))
    }
}

/// Resolves the flags of `train` (`finetune: None`) or `finetune` into a
/// plan: fills the fine-tune defaults from θ0's sidecar, checks every flag,
/// resolves `--device/--data-dir/--threads`, loads the data, resolves the
/// model, the method, the training attack's ε warm-up (over the run's steps
/// per epoch), λ's ramp (over the learning-rate warm-up for a fine-tune
/// without `--lambda-warmup-steps`) and the regulariser (its score file
/// opened and checked against the data), and checks `--out`: it must be
/// writable and hold no run unless `resume` continues it (rank 0 of a
/// data-parallel `group` alone: the others never write it).
///
/// Errors: [`Error::InvalidArgument`] for a flag out of its domain or an
/// `--out` that holds a run; data-loading errors; [`Error::Unwritable`];
/// [`Error::CheckpointMismatch`] when θ0 does not fit.
pub fn resolve(
    cfg: &TrainConfig,
    run: &RunOptions,
    finetune: Option<&FinetuneArgs>,
    group: Rc<Group>,
) -> Result<TrainPlan> {
    let mut config = cfg.clone();
    let teacher_meta = finetune
        .map(|ft| finetuning::fill_defaults(&mut config, ft))
        .transpose()?;
    let checked = config.check()?;
    let mut ramp = checked.ramp;
    check_fd_precision(run.runtime.tf32, config.reg.uses_fd())?;
    parallel::check(&config, &group)?;
    let runtime = parallel::rank_runtime(&run.runtime, &group).resolve()?;
    let mut data = config.load_data(&runtime.data_dir)?;
    let reads_scores = config.reg.reads_score_file();
    let validation = config
        .val
        .resolve(&mut data, &config.robust, config.seed, reads_scores)?;
    let spec = config.model_spec(&data);
    spec.check()?;
    let method = config.robust.resolve(
        config.method,
        config.dataset,
        data.task,
        data.num_outputs,
        data.input_shape.iter().product::<i64>() as usize,
    )?;
    let extra = config
        .extra
        .resolve(&data, config.batch_size, reads_scores)?;
    let mut steps = StepCounts::new(data.train.len() as usize, config.batch_size, config.epochs);
    if let Some(e) = &extra {
        steps.per_epoch = e.batches_per_epoch(data.train.len() as usize);
        steps.total = steps.per_epoch * config.epochs;
    }
    if finetune.is_some_and(|ft| !ft.given.lambda_warmup_steps) {
        ramp.warmup_steps = finetuning::warmup_steps(&config, steps.per_epoch);
        config.reg.lambda_warmup_steps = ramp.warmup_steps;
    }
    let eps_warmup = EpsWarmup::new(config.robust.eps_warmup_epochs, steps.per_epoch);
    let crop_flip = config.uses_crop_flip();
    if crop_flip && data.input_shape.len() != 3 {
        return Err(Error::invalid(
            "--augment",
            "crop-flip",
            "needs image inputs",
        ));
    }
    let regularizer = config.reg.build(ramp, &data, runtime.device, config.seed)?;
    let out = TrainRun::at(&run.out);
    // Rank 0 alone writes --out (the others would see its files).
    if group.is_root() {
        check_out(&out, run.resume)?;
    }
    let teacher = match (&teacher_meta, finetune) {
        (Some(meta), Some(ft)) => {
            finetuning::check_teacher(meta, ft, &spec, &data)?;
            Some(load_teacher(ft, &runtime, config.compute.memory_format)?)
        }
        _ => None,
    };
    let inputs = RunInputs::of(
        &data,
        validation.as_ref(),
        extra.as_ref(),
        &regularizer,
        finetune.map(|ft| ft.from.as_path()),
    )?;
    let step_timing = !run.no_step_timing && !group.is_parallel();
    Ok(TrainPlan {
        seed: config.seed,
        epochs: config.epochs,
        batch_size: config.batch_size,
        optimizer: config.optimizer_config(),
        schedule: config.schedule(),
        precision: config.compute.step_precision(),
        memory_format: config.compute.memory_format,
        regularizer,
        calibration_size: config.reg.calibration_size,
        runtime,
        group,
        out,
        resume: run.resume,
        collective: run.collective,
        eval_batch_size: run.eval_batch_size,
        checkpoint_every: run.checkpoint_every.max(1),
        log_every: run.log_every.max(1),
        instrument_batch_size: run.instrument_batch_size,
        step_timing,
        data,
        spec,
        method,
        eps_warmup,
        posterior: checked.posterior,
        steps,
        crop_flip,
        teacher,
        validation,
        extra,
        inputs,
        identity: config,
    })
}

/// Loads θ0 of a fine-tune on the run's device. Loading draws from
/// libtorch's generator (the model is built, then its weights replaced), so
/// it happens here, before the run sets its seed.
fn load_teacher(ft: &FinetuneArgs, runtime: &Runtime, format: MemoryFormat) -> Result<TeacherPlan> {
    let (mut model, _) = checkpoint::load(&ft.from, runtime.device)?;
    model.set_memory_format(format)?;
    Ok(TeacherPlan {
        from: ft.from.clone(),
        model,
        alpha: ft.alpha,
    })
}

/// Refuses an `--out` that already holds a run unless `resume`, then
/// creates it and checks that it is writable.
fn check_out(out: &TrainRun, resume: bool) -> Result<()> {
    if !resume && (out.resume_state().exists() || out.sidecar().exists()) {
        return Err(Error::invalid(
            "--out",
            out.dir().display(),
            "it already holds a training run; pass --resume to continue it, or choose another --out",
        ));
    }
    ensure_writable_dir(out.dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_final_batch_of_one_sample_is_dropped_and_one_of_two_is_kept() {
        assert_eq!(
            StepCounts::new(65, 32, 3),
            StepCounts {
                per_epoch: 2,
                total: 6
            }
        );
        assert_eq!(StepCounts::new(66, 32, 1).per_epoch, 3);
        assert_eq!(StepCounts::new(64, 32, 1).per_epoch, 2);
    }
}
