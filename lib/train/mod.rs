//! Training (`train`, `finetune`): flags → plan → model → epoch loop →
//! checkpoint.
//!
//! The rooms: [`config`] (the flags), [`plan`] (the flags resolved once
//! into a [`TrainPlan`] before anything runs), [`epochs`] (the loop),
//! [`session`] (what the loop carries between epochs), [`step`] (one
//! optimisation step and what it minimises), [`evaluate`]
//! (the measurements after each epoch), [`metrics`] (`metrics.csv`),
//! [`resume`] (the resume state) with [`inputs`] (fingerprints of what a
//! run reads), [`output`] (the final checkpoint), and the pieces of the
//! loss: [`method`], [`losses`] (SCORE's eight), [`posterior`] (SCORE's
//! toy), [`awp`], [`ema`], [`finetuning`]. The TASER penalty and its
//! controls live in [`crate::stein::penalty`].
//!
//! Reproducibility: the model is initialised after `tch::manual_seed(seed)`;
//! epoch e shuffles and augments with a generator seeded from (seed, e) and
//! reseeds libtorch from it too, so a run resumed after epoch e ends with the
//! same weights as an uninterrupted one (optimiser state is checkpointed).
//!
//! Outputs in `--out` (names in [`crate::layout`]): `model.safetensors` +
//! `model.json` (final), `metrics.csv` (one row per epoch), and the resume
//! state `resume.safetensors` (weights, optimiser state, epoch counter) with
//! `resume.json` (the configuration it belongs to).
pub mod awp;
pub mod config;
pub mod ema;
pub mod epochs;
pub mod evaluate;
pub mod finetuning;
pub mod inputs;
pub mod losses;
pub mod method;
pub mod metrics;
pub mod mixing;
pub mod output;
pub mod parallel;
pub mod plan;
pub mod posterior;
pub mod resume;
pub mod session;
pub mod split;
pub mod step;
pub mod timing;
pub mod validation;

pub use crate::data::Batch;
pub use config::{RunOptions, TrainConfig};
pub use epochs::epoch_seed;
pub use evaluate::{evaluate_split, SplitMetrics};
pub use finetuning::FinetuneArgs;
pub use method::Method;
pub use metrics::{read_metrics, EpochMetrics};
pub use plan::TrainPlan;
pub use step::{task_loss, train_step, StepLoss, StepOutput};

use crate::checkpoint;
use crate::collective::Group;
use crate::data;
use crate::error::Result;
use crate::fsutil::tracked_writes;
use crate::layout::TrainRun;
use crate::models::Model;
use crate::optim::Optimizer;
use crate::outdir;
use crate::stein::penalty::{strength, Regularizer};
use ema::Ema;
use session::Session;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub checkpoint: PathBuf,
    pub metrics: BTreeMap<String, f64>,
    pub already_complete: bool,
    /// (rank, ranks) of a data-parallel rank other than rank 0, which
    /// wrote nothing (its summary is one line).
    pub helper: Option<(usize, usize)>,
}

/// The lines `train` and `finetune` print at the end: `key = value` per
/// metric, then the checkpoint's path (easy to grep in batch logs).
impl std::fmt::Display for TrainSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some((rank, size)) = self.helper {
            let path = self.checkpoint.display();
            return write!(
                f,
                "data-parallel rank {rank} of {size} done; rank 0 writes {path}"
            );
        }
        if self.already_complete {
            writeln!(f, "already complete: {}", self.checkpoint.display())?;
        }
        for (k, v) in &self.metrics {
            writeln!(f, "{k} = {v:.6}")?;
        }
        write!(f, "checkpoint: {}", self.checkpoint.display())
    }
}

/// Runs a training job: resolves the flags into a plan, loads data, trains,
/// writes the outputs. Progress goes to a bar on a terminal and one line per
/// epoch on stdout.
///
/// Errors: [`crate::Error::InvalidArgument`] and the input errors of
/// [`plan::resolve`] before any work; [`crate::Error::OutputInUse`] when
/// another run writes `--out`; [`crate::Error::Diverged`] when the loss or
/// the penalty stops being finite; I/O and libtorch errors. A failure after
/// the first write keeps the finished files and names them
/// ([`crate::Error::AfterWrites`]).
pub fn train(cfg: &TrainConfig, run: &RunOptions) -> Result<TrainSummary> {
    let group = Rc::new(parallel::group(run)?);
    let done = in_out(run, group.is_root(), || {
        run_plan(plan::resolve(cfg, run, None, group.clone())?)
    });
    leave_on_error(&group, done)
}

/// A data-parallel rank that failed tells the others, which wait at their
/// next agreement ([`parallel::agree`]), so every rank stops with it.
fn leave_on_error(group: &Group, done: Result<TrainSummary>) -> Result<TrainSummary> {
    if let Err(e) = &done {
        group.leave_after_error(e.status().code());
    }
    done
}

/// Fine-tunes the checkpoint `ft.from` (TASER §3.4, eq. 26): the student
/// starts at θ0, the frozen θ0 is the teacher of the α·KL term. Flags that
/// `ft.given` leaves open are taken from θ0's sidecar (see
/// [`finetuning::fill_defaults`]); the checkpoint must be of the run's model
/// and data set. Errors as [`train`], plus
/// [`crate::Error::CheckpointMismatch`].
pub fn finetune(cfg: &TrainConfig, run: &RunOptions, ft: &FinetuneArgs) -> Result<TrainSummary> {
    let group = Rc::new(parallel::group(run)?);
    let done = in_out(run, group.is_root(), || {
        run_plan(plan::resolve(cfg, run, Some(ft), group.clone())?)
    });
    leave_on_error(&group, done)
}

/// Runs `work` holding `--out` ([`outdir::run_in`]: a second run on it is
/// refused; a failure keeps every finished file and says how to continue).
/// A failure before any epoch was saved also removes the `resume.json`
/// this run wrote, so that the same command can simply be run again. A
/// data-parallel rank other than rank 0 (`!writes`) neither holds nor
/// writes `--out`.
fn in_out(
    run: &RunOptions,
    writes: bool,
    work: impl FnOnce() -> Result<TrainSummary>,
) -> Result<TrainSummary> {
    if !writes {
        return work();
    }
    let out = TrainRun::at(&run.out);
    outdir::run_in(
        &run.out,
        || continue_hint(&out),
        || {
            work().inspect_err(|_| {
                if tracked_writes().finished.contains(&out.resume_state()) {
                    resume::discard_if_unsaved(&out);
                }
            })
        },
    )
}

/// How to continue a failed `train`/`finetune` in `out`: with `--resume`
/// from a saved epoch, else from the start.
fn continue_hint(out: &TrainRun) -> String {
    if out.resume_weights().exists() {
        "rerun the same command with --resume; it continues after the last saved epoch (the \
         resume state refuses changed flags: to train with other flags, choose another --out)"
            .into()
    } else if out.resume_state().exists() || out.sidecar().exists() {
        "rerun the same command with --resume (no epoch was saved, so it starts again)".into()
    } else {
        "rerun the same command (no epoch was saved, so it starts again)".into()
    }
}

/// Builds the model (θ0's weights when fine-tuning), optimiser and EMA of
/// `plan`, restores the resume state, trains the remaining epochs with the
/// plan's regulariser and writes the checkpoint.
pub fn run_plan(mut plan: TrainPlan) -> Result<TrainSummary> {
    let device = plan.runtime.device;
    let mut regularizer = std::mem::take(&mut plan.regularizer);
    let plan = &plan;
    // θ0 of a fine-tune was loaded by the plan, before this seed.
    tch::manual_seed(plan.seed as i64);
    let (mean, std) = data::channel_stats(&plan.data.train.x);
    let mut model = Model::new(&plan.spec, device, &mean, &std)?;
    if let Some(t) = &plan.teacher {
        model.copy_from(&t.model)?;
    }
    model.set_memory_format(plan.memory_format)?;
    // A control matched to TASER's strength gets its λ at θ0, before a
    // resumed run's weights replace them (so a resume matches to the same λ).
    let matched = strength::resolve(&mut regularizer, &model, &plan.data, plan.seed, device)?;
    let mut opt = Optimizer::new(&plan.optimizer, model.named_trainable());
    let auto_chunk = match &mut regularizer {
        Regularizer::Stein(p) => p.size_auto_chunk(&model, &plan.data, plan.batch_size, device)?,
        _ => None,
    };
    let group = &plan.group;
    if let (Some(a), true) = (&auto_chunk, group.is_root()) {
        println!("{a}");
    }
    let mut ema = plan
        .method
        .ema_tau
        .map(|tau| Ema::new(&model, tau))
        .transpose()?;
    let restored = if plan.resume {
        resume::restore(
            &plan.identity,
            &plan.inputs,
            &plan.out,
            &mut model,
            &mut opt,
            ema.as_mut(),
        )?
    } else {
        None
    };
    let (start_epoch, mut rows, saved_center) = match restored {
        Some(r) => (r.epochs_done, r.rows, r.global_center),
        None => (0, Vec::new(), None),
    };
    // `--center global` is re-estimated at the start of every epoch.
    let global_center = saved_center;
    if start_epoch >= plan.epochs {
        if let Ok(meta) = checkpoint::read_meta(&plan.out.weights()) {
            return Ok(TrainSummary {
                checkpoint: plan.out.weights(),
                metrics: meta.metrics,
                already_complete: true,
                helper: (!group.is_root()).then(|| (group.rank(), group.size())),
            });
        }
    }
    // The best validated epoch so far, from a resumed run's rows.
    let best = metrics::best_validated(&rows);
    // Every rank is set up (a rank that failed says so here).
    parallel::agree(group, "the start")?;
    group.connect(device, plan.collective)?;
    parallel::announce(group, plan.batch_size, device);
    if group.is_root() {
        resume::write_config(&plan.out, &plan.identity, &plan.inputs)?;
    }
    let started = Instant::now();
    let mut session = Session {
        plan,
        model,
        opt,
        ema,
        regularizer,
        global_center,
        best,
    };
    let timing = epochs::train_epochs(&mut session, start_epoch, &mut rows)?;
    if !group.is_root() {
        // Rank 0 measured and writes the checkpoint; this rank waits for it
        // (a failure there stops this rank too).
        parallel::agree(group, "the end")?;
        return Ok(TrainSummary {
            checkpoint: plan.out.weights(),
            metrics: BTreeMap::new(),
            already_complete: false,
            helper: Some((group.rank(), group.size())),
        });
    }
    let this_run = (start_epoch > 0).then(|| started.elapsed().as_secs_f64());
    let mut metrics = metrics::summary_metrics(&rows, session.global_center, this_run);
    let extra = RunFigures {
        matched: matched.map(|m| m.lambda),
        auto_chunk: auto_chunk.map(|a| a.samples),
        timing,
        wall: started.elapsed().as_secs_f64(),
    };
    extra.record(&session, &mut metrics);
    output::write_checkpoint(&session, &metrics)?;
    parallel::agree(group, "the end")?;
    Ok(TrainSummary {
        checkpoint: plan.out.weights(),
        metrics,
        already_complete: false,
        helper: None,
    })
}

/// What a run adds to model.json's metrics beyond the epochs' rows.
struct RunFigures {
    /// λ of a control matched to TASER's strength.
    matched: Option<f64>,
    /// The chunk `--penalty-chunk auto` chose (samples).
    auto_chunk: Option<usize>,
    /// The step timed after training.
    timing: Option<timing::StepTiming>,
    /// This run's wall time (seconds).
    wall: f64,
}

impl RunFigures {
    fn record(self, session: &Session, metrics: &mut BTreeMap<String, f64>) {
        let plan = session.plan;
        if let Some(lambda) = self.matched {
            metrics.insert("lambda_matched".into(), lambda);
        }
        if let Some(samples) = self.auto_chunk {
            metrics.insert("penalty_chunk".into(), samples as f64);
        }
        if matches!(session.regularizer, Regularizer::Stein(_)) {
            let probe_batch = plan
                .instrument_batch_size
                .min(plan.data.train.len() as usize);
            metrics.insert("instrument_batch_size".into(), probe_batch as f64);
        }
        if let Some(t) = self.timing {
            metrics.insert("step_seconds".into(), t.step_seconds);
            metrics.insert("penalty_step_overhead".into(), t.overhead());
        }
        let group = &plan.group;
        if group.is_parallel() {
            metrics.insert("data_parallel_ranks".into(), group.size() as f64);
            // Rank 0's time in sums (moving gradients, waiting for the
            // slowest rank) as a share of this run's wall time.
            metrics.insert(
                "data_parallel_sum_share".into(),
                group.seconds_in_sums() / self.wall,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::toy::toy_sin;
    use crate::models::Model;
    use crate::optim::Optimizer;
    use crate::stein::penalty::Regularizer;
    use clap::Parser;
    use step::BaseLoss;
    use tch::Tensor;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        cfg: TrainConfig,
    }

    /// `TrainConfig` of `train ARGS…` (also used by the other rooms' tests).
    pub(super) fn config(args: &[&str]) -> TrainConfig {
        let mut full = vec!["train"];
        full.extend(args);
        Cli::try_parse_from(full).unwrap().cfg
    }

    /// The step loss of `cfg`'s method on `task` with `reg`, without AWP
    /// or a teacher.
    fn objective<'a>(
        cfg: &TrainConfig,
        task: crate::data::Task,
        settings: &'a method::MethodSettings,
        reg: &'a Regularizer,
    ) -> StepLoss<'a> {
        StepLoss {
            base: BaseLoss::Method { task, settings },
            regularizer: reg,
            awp_gamma: None,
            teacher: None,
            precision: cfg.compute.step_precision(),
        }
    }

    /// One step of a fresh tanh mlp on toy data; returns the forward passes
    /// made and the parameters after the step.
    fn one_step(args: &[&str]) -> (usize, Vec<Tensor>) {
        let cfg = config(args);
        let data = toy_sin(0);
        tch::manual_seed(0);
        let model = Model::new(&cfg.model_spec(&data), tch::Device::Cpu, &[0.0], &[1.0]).unwrap();
        let mut opt = Optimizer::new(&cfg.optimizer_config(), model.named_trainable());
        let ramp = cfg.check().unwrap().ramp;
        let reg = cfg.reg.build(ramp, &data, tch::Device::Cpu, 0).unwrap();
        let idx: Vec<i64> = (0..32).collect();
        let t = Tensor::from_slice(&idx);
        let (x, y) = (
            data.train.x.index_select(0, &t),
            data.train.y.index_select(0, &t),
        );
        let before = model.forward_calls();
        let settings = cfg
            .robust
            .resolve(cfg.method, data.name, data.task, data.num_outputs, 1)
            .unwrap();
        let objective = objective(&cfg, data.task, &settings, &reg);
        let batch = Batch {
            x: &x,
            y: &y,
            indices: &t,
            aug: None,
            share: None,
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
        let err = config(&["--lambda=-1"]).check().unwrap_err().to_string();
        assert!(err.contains("--lambda"), "{err}");
        let err = config(&["--lambda", "1", "--hutchinson-probes", "0"])
            .check()
            .unwrap_err()
            .to_string();
        assert!(err.contains("--hutchinson-probes"), "{err}");
    }

    /// One step of a fresh `arch` on 16 random `shape` images (digits'
    /// name, so the method takes digits' ε) with `args`; returns the step's
    /// output and the parameters before and after it.
    fn image_step(
        arch: &str,
        shape: &[i64],
        args: &[&str],
    ) -> (StepOutput, (Vec<Tensor>, Vec<Tensor>)) {
        let mut full = vec!["--model", arch];
        full.extend(args);
        let cfg = config(&full);
        tch::manual_seed(5);
        let mut dims = vec![16];
        dims.extend(shape);
        let split = || crate::data::Split {
            x: Tensor::rand(dims.as_slice(), (tch::Kind::Float, tch::Device::Cpu)),
            y: Tensor::randint(10, [16], (tch::Kind::Int64, tch::Device::Cpu)),
        };
        let data = crate::data::Dataset {
            name: crate::data::DatasetName::Digits,
            task: crate::data::Task::Classification,
            input_shape: shape.to_vec(),
            num_outputs: 10,
            train: split(),
            test: split(),
            ood: None,
        };
        let c = shape[0] as usize;
        let mut model = Model::new(
            &cfg.model_spec(&data),
            tch::Device::Cpu,
            &vec![0.5; c],
            &vec![0.25; c],
        )
        .unwrap();
        model.set_memory_format(cfg.compute.memory_format).unwrap();
        let mut opt = Optimizer::new(&cfg.optimizer_config(), model.named_trainable());
        let ramp = cfg.check().unwrap().ramp;
        let reg = cfg.reg.build(ramp, &data, tch::Device::Cpu, 0).unwrap();
        let settings = cfg
            .robust
            .resolve(
                cfg.method,
                data.name,
                data.task,
                10,
                shape.iter().product::<i64>() as usize,
            )
            .unwrap();
        let objective = objective(&cfg, data.task, &settings, &reg);
        let idx = Tensor::arange(16, (tch::Kind::Int64, tch::Device::Cpu));
        let batch = Batch {
            x: &data.train.x,
            y: &data.train.y,
            indices: &idx,
            aug: None,
            share: None,
        };
        let params = || -> Vec<Tensor> {
            model
                .named_trainable()
                .into_iter()
                .map(|(_, p)| p.detach().contiguous().copy())
                .collect()
        };
        let before = params();
        let out = train_step(&model, &mut opt, &objective, &batch, 0, 0.01).unwrap();
        (out, (before, params()))
    }

    fn max_rel_diff(a: &Tensor, b: &Tensor) -> f64 {
        let scale = a.abs().max().double_value(&[]).max(1e-6);
        (a - b).abs().max().double_value(&[]) / scale
    }

    /// `--memory-format channels-last` trains the same step: the loss
    /// agrees with the contiguous step's to 1e-5 relative, the TASER
    /// penalty to 1e-3 relative (the fd quotient's 1/2h = 50 magnifies the
    /// kernels' rounding; measured 6e-5), and the two updates differ by
    /// less than `tol` of the largest update entry — cnn-small with
    /// first-order fd TASER (1e-3), resnet18 with autograd TASER (5e-2:
    /// train-mode BatchNorm's backward on a batch of 16 cancels heavily;
    /// measured 2.6e-2 here, and PyTorch's own channels-last resnet18
    /// gradient differs from its contiguous one by 0.9% of the largest
    /// entry, 5.5% within one tensor).
    #[test]
    fn channels_last_step_gives_the_contiguous_loss() {
        let taser = ["--lambda", "1", "--stein-order", "first-order"];
        for (arch, shape, mode, tol) in [
            ("cnn-small", vec![1, 8, 8], "fd", 1e-3),
            ("resnet18", vec![3, 32, 32], "autograd", 5e-2),
        ] {
            let mut args = taser.to_vec();
            args.extend(["--stein-mode", mode]);
            let (a, pa) = image_step(arch, &shape, &args);
            args.extend(["--memory-format", "channels-last"]);
            let (b, pb) = image_step(arch, &shape, &args);
            assert!(max_rel_diff(&a.task_loss, &b.task_loss) < 1e-5, "{arch}");
            let (sa, sb) = (a.stein.unwrap().penalty, b.stein.unwrap().penalty);
            // fd divides by 2h = 2e-2, which magnifies the kernels' rounding.
            assert!(max_rel_diff(&sa, &sb) < 1e-3, "{arch}: {sa} vs {sb}");
            // The two updates agree relative to the largest update entry.
            let max_of = |ts: Vec<Tensor>| {
                ts.iter()
                    .map(|t| t.abs().max().double_value(&[]))
                    .fold(0.0, f64::max)
            };
            let gap = max_of(pa.1.iter().zip(&pb.1).map(|(x, y)| x - y).collect());
            let update = max_of(pa.1.iter().zip(&pa.0).map(|(x, y)| x - y).collect());
            assert!(gap < tol * update, "{arch}: {gap} vs {update}");
        }
    }

    /// `--precision bf16` autocasts the base loss only: its loss moves by
    /// bf16 rounding (nonzero, < 2% relative) while the TASER penalty,
    /// computed in f32, is bit-identical to the f32 step's; with
    /// `--penalty-precision bf16` the penalty moves too.
    #[test]
    fn bf16_autocasts_the_base_loss_and_keeps_the_penalty_in_f32() {
        let args = [
            "--lambda",
            "1",
            "--stein-order",
            "first-order",
            "--stein-mode",
            "fd",
        ];
        let shape = [1, 8, 8];
        let (f32_out, _) = image_step("cnn-small", &shape, &args);
        let mut bf = args.to_vec();
        bf.extend(["--precision", "bf16"]);
        let (bf_out, bf_params) = image_step("cnn-small", &shape, &bf);
        let d = max_rel_diff(&f32_out.task_loss, &bf_out.task_loss);
        assert!(d > 0.0 && d < 2e-2, "base loss moved by {d}");
        let pen = |o: &StepOutput| o.stein.as_ref().unwrap().penalty.shallow_clone();
        assert!(
            pen(&f32_out).equal(&pen(&bf_out)),
            "the penalty must stay f32"
        );
        assert!(bf_params.1.iter().all(|p| p.kind() == tch::Kind::Float));
        bf.extend(["--penalty-precision", "bf16"]);
        let (both, _) = image_step("cnn-small", &shape, &bf);
        assert!(!pen(&f32_out).equal(&pen(&both)));
        assert!(both.task_loss.double_value(&[]).is_finite());
    }

    #[test]
    fn channels_last_is_refused_for_the_mlp() {
        let err = config(&["--model", "mlp", "--memory-format", "channels-last"])
            .check()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--memory-format") && err.contains("mlp"),
            "{err}"
        );
    }
}
