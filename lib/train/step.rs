//! One optimisation step (TASER eq. 25/26): what it minimises
//! ([`BaseLoss`], then the teacher and regulariser terms of [`StepLoss`])
//! and the step itself ([`train_step`]).
use super::awp;
use super::method::{self, MethodLoss, MethodSettings};
use super::posterior::PosteriorSettings;
use crate::data::Batch;
use crate::data::Task;
use crate::device::{with_precision, Precision};
use crate::error::Result;
use crate::models::Model;
use crate::optim::Optimizer;
use crate::stein::penalty::{l2_term, Regularizer, SteinStats};
use tch::{Kind, Tensor};

/// The task loss: mean cross-entropy (classification), mean squared error
/// of the single output (regression) or the posterior gap
/// mean |sigmoid(z) − p_d(y=1|x)| (toy-score, SCORE's self-consistency).
/// `output` is `[N, K]` (or `[N, 1]`), `y` `[N]`.
pub fn task_loss(task: Task, output: &Tensor, y: &Tensor) -> Tensor {
    match task {
        Task::Classification => output.cross_entropy_for_logits(y),
        Task::Regression => output.view([-1]).mse_loss(y, tch::Reduction::Mean),
        Task::Posterior => (output.view([-1]).sigmoid() - y).abs().mean(Kind::Float),
    }
}

/// What one step minimises before the teacher and regulariser terms.
#[derive(Clone, Copy)]
pub enum BaseLoss<'a> {
    /// A training method on labels (docs/METHOD.md, "Training methods and SCORE's losses"): its loss on its adversarial
    /// batch for classification, the mean squared error for regression.
    Method {
        task: Task,
        settings: &'a MethodSettings,
    },
    /// toy-score: one of SCORE's risks against the known posterior
    /// p_d(y=1|x) (the batch's targets), at the inner maximiser.
    Posterior(&'a PosteriorSettings),
}

impl BaseLoss<'_> {
    /// Whether the step counts correct predictions (classification).
    pub fn classifies(&self) -> bool {
        matches!(
            self,
            BaseLoss::Method {
                task: Task::Classification,
                ..
            }
        )
    }

    /// The training attack's adversarial batch (classification methods
    /// that attack; `None` otherwise).
    fn adversarial_batch(&self, model: &Model, x: &Tensor, y: &Tensor) -> Option<Tensor> {
        match self {
            BaseLoss::Method { settings, .. } if self.classifies() => {
                settings.adversarial_batch(model, x, y)
            }
            _ => None,
        }
    }

    /// The loss on the batch (model in train mode), given the adversarial
    /// batch from [`Self::adversarial_batch`].
    fn loss(&self, model: &Model, x: &Tensor, x_adv: Option<&Tensor>, y: &Tensor) -> MethodLoss {
        match *self {
            BaseLoss::Posterior(objective) => {
                let (loss, logits_at_worst_case) = objective.loss(model, x, y);
                MethodLoss {
                    loss,
                    clean_logits: None,
                    logits_for_accuracy: logits_at_worst_case,
                }
            }
            BaseLoss::Method { task, settings } => {
                if task == Task::Classification {
                    return settings.loss(model, x, x_adv, y);
                }
                let z = model.forward_t(x, true);
                MethodLoss {
                    loss: task_loss(task, &z, y),
                    clean_logits: Some(z.shallow_clone()),
                    logits_for_accuracy: z,
                }
            }
        }
    }
}

/// Everything one step minimises: L = L_base + α·KL(f_θ0(x) ‖ f_θ(x)) +
/// λ(t)·R(x) (TASER eq. 26; the KL term only when fine-tuning).
pub struct StepLoss<'a> {
    pub base: BaseLoss<'a>,
    pub regularizer: &'a Regularizer,
    /// AWP's γ when weight perturbation is on for this step.
    pub awp_gamma: Option<f64>,
    /// Fine-tuning's frozen teacher f_θ0 and its weight α (TASER eq. 26).
    pub teacher: Option<(&'a Model, f64)>,
    /// Precision of the base loss and of the penalty (`--precision`,
    /// `--penalty-precision`).
    pub precision: StepPrecision,
}

/// Precision of a step's two parts on the model's device (see
/// [`crate::device::with_precision`]): `base` for the training attack, the
/// method's loss and the teacher's KL term; `penalty` for the regulariser.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StepPrecision {
    pub base: Precision,
    pub penalty: Precision,
}

/// What one optimisation step reports (detached tensors, left on the
/// device so that the loop does not synchronise every step).
#[derive(Debug)]
pub struct StepOutput {
    /// The base loss (without the teacher and regulariser terms), Double.
    pub task_loss: Tensor,
    /// Correct predictions in the batch (classification), Int64.
    pub correct: Option<Tensor>,
    /// The Stein residual's statistics (TASER penalty only).
    pub stein: Option<SteinStats>,
}

/// One optimisation step (TASER eq. 25/26): the base loss (on its
/// adversarial batch), plus α·KL(f_θ0(x) ‖ f_θ(x)) when fine-tuning, plus
/// λ(t)·R on the clean batch; with AWP the gradient is taken at the
/// perturbed weights and the perturbation removed after the update. `step`
/// (0-based) drives the λ ramp; `lr` is this step's learning rate. A batch
/// with a share (data-parallel) sums the ranks' gradients before the
/// update ([`crate::collective`]); AWP's ascent direction and the training
/// attack then act on the rank's own share.
///
/// Errors: the regulariser's (a score field that cannot serve the batch).
pub fn train_step(
    model: &Model,
    opt: &mut Optimizer,
    obj: &StepLoss,
    batch: &Batch,
    step: usize,
    lr: f64,
) -> Result<StepOutput> {
    let (x, y) = (batch.x, batch.y);
    let (device, precision) = (model.device(), obj.precision);
    let in_base = |f: &dyn Fn() -> Tensor| with_precision(precision.base, device, f);
    let x_adv = with_precision(precision.base, device, || {
        obj.base.adversarial_batch(model, x, y)
    });
    let base_loss = || {
        with_precision(precision.base, device, || {
            obj.base.loss(model, x, x_adv.as_ref(), y)
        })
    };
    let perturbation = obj
        .awp_gamma
        .map(|gamma| awp::perturb(model, gamma, &|| base_loss().loss));
    let base = base_loss();
    let loss = match obj.teacher {
        None => base.loss.shallow_clone(),
        Some((teacher, alpha)) => in_base(&|| {
            let target = tch::no_grad(|| teacher.forward_t(x, false));
            let student = match &base.clean_logits {
                Some(z) => z.shallow_clone(),
                None => model.forward_t(x, true),
            };
            &base.loss + method::kl_div(&target, &student).mean(Kind::Float) * alpha
        }),
    };
    let mut stein = None;
    // A data-parallel share back-propagates its part bᵣ/B of the batch
    // mean; its penalty goes through the chunked path (global weights).
    let chunk = |p: &crate::stein::penalty::SteinPenalty| {
        p.chunk
            .or_else(|| batch.share.map(|_| x.size()[0] as usize))
    };
    let loss = match obj.regularizer {
        Regularizer::None => loss,
        Regularizer::L2 { lambda } => loss + l2_term(model, *lambda),
        // Watched (λ = 0): measured by the instruments, not trained on;
        // chunked: back-propagated after the loss, below.
        Regularizer::Stein(p) if !p.ramp.active() || chunk(p).is_some() => loss,
        Regularizer::Stein(p) => {
            // fd reuses the clean forward for m(x) only when it was made
            // in the penalty's precision.
            let clean = base
                .clean_logits
                .as_ref()
                .filter(|_| precision.base == precision.penalty);
            let (term, stats) = with_precision(precision.penalty, device, || {
                p.term(model, batch, clean, step)
            })?;
            stein = Some(stats);
            loss + term
        }
    };
    let loss = match batch.share {
        Some(s) => loss * (x.size()[0] as f64 / s.global_len as f64),
        None => loss,
    };
    opt.zero_grad();
    loss.backward();
    if let Regularizer::Stein(p) = obj.regularizer {
        if let (Some(chunk), true) = (chunk(p), p.ramp.active()) {
            let stats = with_precision(precision.penalty, device, || {
                p.backward_chunked(model, batch, step, chunk)
            })?;
            stein = Some(stats);
        }
    }
    if let Some(s) = batch.share {
        opt.for_each_gradient(&mut |g| s.group.sum_(g))?;
    }
    opt.step(lr);
    if let Some(p) = perturbation {
        awp::restore(p);
    }
    let _guard = tch::no_grad_guard();
    Ok(StepOutput {
        task_loss: base.loss.detach().to_kind(Kind::Double),
        correct: obj.base.classifies().then(|| {
            base.logits_for_accuracy
                .argmax(-1, false)
                .eq_tensor(y)
                .sum(Kind::Int64)
        }),
        stein,
    })
}
