//! Adversarial attacks: the threat model (an Lp ball intersected with the
//! [0,1] box), the losses attacks maximise, and PGD, which serves both the
//! robust training methods (docs/METHOD.md, "Training methods and SCORE's losses") and evaluation (docs/METHOD.md, "Attacks and their budgets").
//!
//! Evaluation attacks (docs/METHOD.md, "Attacks and their budgets"): [`apgd`] (APGD-CE, APGD-T), [`fab`]
//! (FAB-T), [`square`] (Square Attack), [`spsa`], and [`autoattack`], which
//! chains the first four as AutoAttack `standard` does. [`eval`] runs a list
//! of attacks on an evaluation subset with per-sample results and resume;
//! its rooms are [`grammar`] (the attack names), [`inputs`] (checkpoint,
//! data, subset), [`checks`] (the clean pass and AutoAttack-style sanity
//! warnings), [`finite`] (NaN/Inf logits and gradients stop an attack), [`run`] (one attack over the points), [`state`] (the resume
//! state and the evaluation's identity) and [`results`] (per_sample.csv and
//! summary.csv: their writer and their one reader).
//! Every attack returns adversarial inputs inside the threat set and a mask
//! of the points it fooled; random choices come from libtorch's generator,
//! which the caller seeds.
pub mod apgd;
pub mod autoattack;
pub mod checks;
pub mod eval;
pub mod fab;
pub mod finite;
pub mod grammar;
pub mod inputs;
pub mod pgd;
pub mod results;
pub mod run;
pub mod spsa;
pub mod square;
pub mod state;

pub use pgd::{pgd, pgd_in, PgdConfig, Start};

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// The norm of the threat model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Norm {
    /// ‖δ‖∞ ≤ ε (sign-gradient steps).
    Linf,
    /// ‖δ‖₂ ≤ ε per sample (normalised-gradient steps).
    L2,
}

/// The perturbation set {x' : ‖x' − x‖ ≤ ε, x' ∈ [0,1]^d}.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threat {
    pub norm: Norm,
    pub eps: f64,
}

/// Parses a number or a fraction such as `8/255`.
pub fn parse_fraction(text: &str) -> std::result::Result<f64, String> {
    let value = match text.split_once('/') {
        Some((a, b)) => {
            let (a, b): (f64, f64) = (
                a.trim()
                    .parse()
                    .map_err(|_| format!("bad numerator in {text:?}"))?,
                b.trim()
                    .parse()
                    .map_err(|_| format!("bad denominator in {text:?}"))?,
            );
            if b == 0.0 {
                return Err(format!("zero denominator in {text:?}"));
            }
            a / b
        }
        None => text
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not a number or a fraction like 8/255"))?,
    };
    if value.is_finite() {
        Ok(value)
    } else {
        Err(format!("{text:?} is not finite"))
    }
}

/// Per-sample Lp norm of a batch, flattened over all but the first axis.
pub fn per_sample_norm(t: &Tensor, norm: Norm) -> Tensor {
    let flat = t.flatten(1, -1);
    match norm {
        Norm::Linf => flat.abs().amax([1i64].as_slice(), false),
        Norm::L2 => flat
            .square()
            .sum_dim_intlist([1i64].as_slice(), false, None)
            .sqrt(),
    }
}

/// Reshapes a per-sample vector `[B]` to broadcast against `like` `[B, …]`.
pub fn per_sample(v: &Tensor, like: &Tensor) -> Tensor {
    let mut shape = vec![-1i64];
    shape.extend(std::iter::repeat_n(1, like.dim() - 1));
    v.view(shape.as_slice())
}

/// L∞ radii above this are warned about: they are larger than half the
/// [0,1] input range.
pub const LINF_EPS_WARN: f64 = 0.5;

impl Threat {
    /// Checks that ε is a positive finite number.
    ///
    /// Errors: [`Error::InvalidArgument`] naming `flag`.
    pub fn check(&self, flag: &str) -> Result<()> {
        if self.eps.is_finite() && self.eps > 0.0 {
            Ok(())
        } else {
            Err(Error::invalid(
                flag,
                self.eps,
                "the attack radius ε must be > 0 (fractions like 8/255 are accepted)",
            ))
        }
    }

    /// The one rule of ε's scale, for every attack of the suite (evaluation
    /// and training) on inputs in [0,1]^d, `input_dim` = d: [`Threat::check`],
    /// then an ε that covers the whole input box is refused — L∞ ε ≥ 1, or
    /// L2 ε ≥ √d (the box's diagonal) — as it was surely typed on the 0–255
    /// pixel scale; the error suggests ε/255. Returns a warning text when L∞
    /// ε > [`LINF_EPS_WARN`] (half the input range); the caller prints it.
    ///
    /// Errors: [`Error::InvalidArgument`] naming `flag`.
    pub fn check_scale(&self, flag: &str, input_dim: usize) -> Result<Option<String>> {
        self.check(flag)?;
        let (limit, what) = match self.norm {
            Norm::Linf => (1.0, "1 (L∞)".to_string()),
            Norm::L2 => {
                let d = input_dim.max(1) as f64;
                (
                    d.sqrt(),
                    format!("√d = {:.4} (L2, d = {input_dim})", d.sqrt()),
                )
            }
        };
        if self.eps >= limit {
            return Err(Error::invalid(
                flag,
                self.eps,
                format!(
                    "inputs are in [0,1], and an ε ≥ {what} covers the whole input box, so every point \
                     could be moved anywhere; did you mean {}/255?",
                    self.eps
                ),
            ));
        }
        Ok(
            (self.norm == Norm::Linf && self.eps > LINF_EPS_WARN).then(|| {
                format!(
                    "{flag} {} is more than half the [0,1] input range (L∞); radii of robustness \
                 papers are 8/255 ≈ 0.031 (CIFAR) to 0.3 (MNIST) — is it on the right scale?",
                    self.eps
                )
            }),
        )
    }

    /// Projects `x_adv` onto the ball around `x` and then onto [0,1].
    /// For L∞ the result lies in both sets exactly (the intersection of two
    /// boxes); for L2 clipping to [0,1] can only shrink ‖δ‖₂, so it stays
    /// in the ball too.
    pub fn project(&self, x_adv: &Tensor, x: &Tensor) -> Tensor {
        self.project_in(x_adv, x, Domain::UnitBox)
    }

    /// [`Threat::project`] onto the ball intersected with `domain`.
    pub fn project_in(&self, x_adv: &Tensor, x: &Tensor, domain: Domain) -> Tensor {
        let delta = x_adv - x;
        let delta = match self.norm {
            Norm::Linf => delta.clamp(-self.eps, self.eps),
            Norm::L2 => {
                let n = per_sample_norm(&delta, Norm::L2);
                let factor = (n.clamp_min(1e-12).reciprocal() * self.eps).clamp_max(1.0);
                &delta * per_sample(&factor, &delta)
            }
        };
        domain.clip(&(x + delta))
    }

    /// The steepest-ascent direction of a gradient for this norm with unit
    /// step: sign(g) for L∞, g/‖g‖₂ per sample for L2.
    pub fn ascent_direction(&self, grad: &Tensor) -> Tensor {
        match self.norm {
            Norm::Linf => grad.sign(),
            Norm::L2 => {
                let n = per_sample_norm(grad, Norm::L2).clamp_min(1e-12);
                grad / per_sample(&n, grad)
            }
        }
    }

    /// A uniformly random point of the ball around `x` (L∞: each coordinate
    /// uniform in [−ε, ε]; L2: a uniform direction with radius ε·u^{1/d}),
    /// clipped to [0,1]. Uses libtorch's seeded generator.
    pub fn random_start(&self, x: &Tensor) -> Tensor {
        self.random_start_in(x, Domain::UnitBox)
    }

    /// [`Threat::random_start`] clipped to `domain` instead of [0,1].
    pub fn random_start_in(&self, x: &Tensor, domain: Domain) -> Tensor {
        let delta = match self.norm {
            Norm::Linf => x.rand_like() * (2.0 * self.eps) - self.eps,
            Norm::L2 => {
                let dir = x.randn_like();
                let dir =
                    &dir / per_sample(&per_sample_norm(&dir, Norm::L2).clamp_min(1e-12), &dir);
                let d = (dir.numel() / dir.size()[0].max(1) as usize) as f64;
                let radius = Tensor::rand([x.size()[0]], (Kind::Float, x.device()))
                    .pow_tensor_scalar(1.0 / d)
                    * self.eps;
                dir * per_sample(&radius.to_kind(x.kind()), x)
            }
        };
        domain.clip(&(x + delta))
    }
}

/// Where inputs live besides the threat ball.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    /// Images: every coordinate in [0,1] (docs/METHOD.md, "Coordinates and data").
    UnitBox,
    /// No constraint (the 1-D toys, whose inputs are real numbers).
    Unbounded,
}

impl Domain {
    fn clip(self, x: &Tensor) -> Tensor {
        match self {
            Domain::UnitBox => x.clamp(0.0, 1.0),
            Domain::Unbounded => x.shallow_clone(),
        }
    }
}

/// Per-sample correct-class margin z_y − max_{j≠y} z_j (> 0 iff correctly
/// classified; the opposite sign of the Stein probe's smooth margin):
/// the Carlini–Wagner loss with κ = ∞ up to sign.
pub fn correct_margin(logits: &Tensor, y: &Tensor) -> Tensor {
    let y1 = y.unsqueeze(1);
    let true_logit = logits.gather(1, &y1, false).squeeze_dim(1);
    let others = logits.scatter_value(1, &y1, f64::NEG_INFINITY);
    true_logit - others.amax([1i64].as_slice(), false)
}

/// Number of correctly classified samples of a batch, as a bool mask.
pub fn correct_mask(logits: &Tensor, y: &Tensor) -> Tensor {
    logits.argmax(-1, false).eq_tensor(y)
}

/// Per-sample cross-entropy −log softmax(z)_y.
pub fn cross_entropy(logits: &Tensor, y: &Tensor) -> Tensor {
    -logits
        .log_softmax(1, Kind::Float)
        .gather(1, &y.unsqueeze(1), false)
        .squeeze_dim(1)
}

/// Mask of the points whose prediction is not `y` (fooled), from logits.
pub fn fooled_mask(logits: &Tensor, y: &Tensor) -> Tensor {
    logits.argmax(-1, false).ne_tensor(y)
}

/// Logits of a batch without building a graph.
pub fn logits_no_grad(model: &crate::models::Model, x: &Tensor) -> Tensor {
    let _guard = tch::no_grad_guard();
    model.forward_t(x, false)
}

/// Per-sample loss, logits and gradient of the summed loss at `x` (eval
/// mode). The returned tensors are detached.
pub fn loss_and_grad(
    model: &crate::models::Model,
    x: &Tensor,
    loss: &dyn Fn(&Tensor) -> Tensor,
) -> (Tensor, Tensor, Tensor) {
    loss_and_grad_bn(model, x, false, loss)
}

/// [`loss_and_grad`] with BatchNorm in training mode when `bn_train` (the
/// PGD-AT reference attacks that way).
pub fn loss_and_grad_bn(
    model: &crate::models::Model,
    x: &Tensor,
    bn_train: bool,
    loss: &dyn Fn(&Tensor) -> Tensor,
) -> (Tensor, Tensor, Tensor) {
    loss_and_grad_at(model, x, bn_train, &|_, logits| loss(logits))
}

/// [`loss_and_grad_bn`] for a loss of the input and its logits (SCORE's
/// toy compares with the known posterior at the input itself).
pub fn loss_and_grad_at(
    model: &crate::models::Model,
    x: &Tensor,
    bn_train: bool,
    loss: &dyn Fn(&Tensor, &Tensor) -> Tensor,
) -> (Tensor, Tensor, Tensor) {
    let xa = x.detach().set_requires_grad(true);
    let logits = model.forward_t(&xa, bn_train);
    let l = loss(&xa, &logits);
    let grad = Tensor::run_backward(&[l.sum(None)], &[&xa], false, false)
        .pop()
        .expect("one gradient");
    finite::note_gradient(&grad);
    (logits.detach(), l.detach(), grad)
}

/// `a` where the per-sample mask `cond` `[B]` holds, `b` elsewhere.
pub fn select_rows(cond: &Tensor, a: &Tensor, b: &Tensor) -> Tensor {
    a.where_self(&per_sample(cond, a), b)
}

impl Threat {
    /// Whether every row of `x_adv` lies in the threat set around `x` (up to
    /// float rounding): ‖x_adv − x‖ ≤ ε and 0 ≤ x_adv ≤ 1.
    pub fn contains(&self, x_adv: &Tensor, x: &Tensor) -> bool {
        if x_adv.numel() == 0 {
            return true;
        }
        let dist = per_sample_norm(&(x_adv - x), self.norm)
            .max()
            .double_value(&[]);
        dist <= self.eps * (1.0 + 1e-5) + 1e-6
            && x_adv.min().double_value(&[]) >= 0.0
            && x_adv.max().double_value(&[]) <= 1.0
    }
}

/// Indices (int64 `[K]`) where the bool mask `[B]` holds.
pub fn mask_indices(mask: &Tensor) -> Tensor {
    mask.nonzero().view([-1])
}
