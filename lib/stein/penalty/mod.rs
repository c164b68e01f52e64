//! The TASER penalty and its controls, ready to use in a training step.
//!
//! The regulariser added to a method's loss is one of
//! - the TASER penalty λ(t)·R, R = (1/B) Σᵢ (rᵢ − c)² over the Stein
//!   residuals rᵢ of the batch ([`crate::stein`]; TASER eq. 25 and
//!   Algorithm 1), centred on the batch mean, a global constant or 0;
//! - its matched isotropic control λ(t)·mean‖∇ₓm‖² (`--reg grad-norm`:
//!   same probe m, coordinates and batch, no score);
//! - ℓ2 on the parameters λ·‖θ‖² (the toy's baseline, TASER Table 1);
//!
//! with the score controls `--score-permute` (another sample's score) and
//! `--zero-scores` (s̃ ≡ 0), in pixel or model coordinates.
//!
//! The rooms: [`flags`] (the flags and their resolution into a
//! [`Regularizer`]), [`ramp`] (λ(t)), [`controls`] (gradient penalty,
//! derangement), [`coordinates`], [`subsample`] (`--stein-fraction`),
//! [`estimator`] (`--stein-estimator`: plain or unbiased R̂),
//! [`chunked`] (`--penalty-chunk`: the exact gradient a chunk at a time),
//! [`strength`] (`--lambda-match`: a control's λ matched to TASER's strength),
//! [`instruments`] (the per-epoch measurements and the Hutchinson noise
//! share), [`diagnosis`] (one model's penalty taken apart, `report
//! diagnose`). docs/METHOD.md states the penalty and its estimators.
pub mod chunk_size;
pub mod chunked;
pub mod controls;
pub mod coordinates;
pub mod diagnosis;
pub mod estimator;
pub mod flags;
pub mod instruments;
pub mod ramp;
pub mod strength;
pub mod subsample;

pub use coordinates::{Coordinates, Rescale};
pub use estimator::{centred_penalty, cross_penalty, Estimator};
pub use flags::{BnMode, Reg, RegArgs};
pub use ramp::LambdaRamp;
pub use strength::{MatchedStrength, Strength};

use crate::data::augment::CropFlip;
use crate::data::{Batch, Dataset};
use crate::device::transfers;
use crate::error::{Error, Result};
use crate::models::Model;
use crate::score::ScoreField;
use crate::stein::{self, Center, Mode, Probe, ResidualInputs, ResidualOptions};
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

/// Per-batch statistics of the penalty (detached).
#[derive(Debug)]
pub struct SteinStats {
    /// R (or mean‖∇ₓm‖² for `--reg grad-norm`), before λ.
    pub penalty: Tensor,
    /// Σ r and Σ r² over the batch; `None` for the gradient penalty.
    pub residual_sums: Option<[Tensor; 2]>,
}

/// The regulariser of a run, ready to use.
#[derive(Debug, Default)]
pub enum Regularizer {
    /// No regulariser (λ = 0).
    #[default]
    None,
    L2 {
        lambda: f64,
    },
    /// The TASER penalty or, with `grad_norm`, its matched gradient penalty.
    Stein(SteinPenalty),
}

/// What replaces the score field's own scores (the controls).
#[derive(Debug)]
pub enum ScoreControl {
    /// The field's scores as they are.
    None,
    /// Sample i gets the stored score of sample `partner[i]` ≠ i
    /// (`--score-permute`; int64 indices into the training split, `[N]` on
    /// the training device).
    Permute(Tensor),
    /// s̃ ≡ 0 (`--zero-scores`).
    Zero,
}

impl Clone for ScoreControl {
    fn clone(&self) -> Self {
        match self {
            ScoreControl::None => ScoreControl::None,
            ScoreControl::Permute(p) => ScoreControl::Permute(p.shallow_clone()),
            ScoreControl::Zero => ScoreControl::Zero,
        }
    }
}

/// Offset mixed into `--seed` for the permutation of `--score-permute`
/// (its own stream: ChaCha8 seeded with `seed ^ PERMUTE_STREAM`).
pub const PERMUTE_STREAM: u64 = 0x5C04_E59E;

/// The TASER penalty with its score field and options.
#[derive(Debug)]
pub struct SteinPenalty {
    /// λ(t), the weight of R at each step.
    pub ramp: LambdaRamp,
    pub options: ResidualOptions,
    /// Plain or unbiased R̂ ([`estimator`]).
    pub estimator: Estimator,
    pub probe: Probe,
    pub center: Center,
    pub detach_mean: bool,
    pub bn_train: bool,
    /// The constant D of `--center global` (set by [`SteinPenalty::calibrate`]).
    pub global_center: f64,
    /// The score field (`None` with `--zero-scores` and `--reg grad-norm`).
    pub field: Option<Box<dyn ScoreField>>,
    pub control: ScoreControl,
    /// `--reg grad-norm`: λ·mean‖∇ₓm‖² instead of λ·R.
    pub grad_norm: bool,
    pub coordinates: Coordinates,
    /// `--stein-fraction` f: the penalty on ⌈f·B⌉ samples of each batch.
    pub fraction: f64,
    /// `--seed`, for the samples of `--stein-fraction`.
    pub seed: u64,
    /// λ as given, or matched to TASER's strength ([`strength`]).
    pub strength: Strength,
    /// `--penalty-chunk`: back-propagate the penalty this many samples at
    /// a time ([`chunked`]); `None`: the whole batch in the step's loss.
    pub chunk: Option<usize>,
    /// `--penalty-chunk auto`: [`SteinPenalty::size_auto_chunk`] sets
    /// `chunk` before the first epoch.
    pub auto_chunk: bool,
}

/// A batch in the coordinates of the penalty's derivatives.
pub struct Coordinated {
    /// The inputs (pixels, or z = (x − μ)/σ).
    pub x: Tensor,
    /// The scores in the same coordinates (`None` without a score).
    pub score: Option<Tensor>,
    /// The map back to pixels (`None` in pixel coordinates).
    pub rescale: Option<Rescale>,
}

impl SteinPenalty {
    /// s̃ for the batch in pixel coordinates after the controls (`None`
    /// for the gradient penalty).
    /// `indices`: the batch's rows of the training split (int64 `[B]` on
    /// the device).
    pub fn score(&self, x: &Tensor, indices: &Tensor, aug: Option<&CropFlip>) -> Option<Tensor> {
        match (&self.control, &self.field) {
            (ScoreControl::Zero, _) => Some(x.zeros_like()),
            (_, None) => None,
            (ScoreControl::None, Some(f)) => Some(f.score(x, indices, aug)),
            (ScoreControl::Permute(partner), Some(f)) => {
                let other = partner.index_select(0, &indices.to_device(partner.device()));
                Some(f.score(x, &other, aug))
            }
        }
    }

    /// The batch (`x` in pixels) in the penalty's coordinates, with its scores.
    pub fn coordinated(
        &self,
        model: &Model,
        x: &Tensor,
        indices: &Tensor,
        aug: Option<&CropFlip>,
    ) -> Coordinated {
        let score = self.score(x, indices, aug);
        match self.coordinates {
            Coordinates::Pixel => Coordinated {
                x: x.shallow_clone(),
                score,
                rescale: None,
            },
            Coordinates::Model => {
                let (mean, std) = model.normalisation(x.dim());
                let r = Rescale { mean, std };
                Coordinated {
                    x: r.to_model(x),
                    score: score.map(|s| r.score_to_model(&s)),
                    rescale: Some(r),
                }
            }
        }
    }

    /// The probe m as a function of inputs in the penalty's coordinates
    /// (BatchNorm in train mode when `bn_train`).
    pub fn probe_fn<'a>(
        &self,
        model: &'a Model,
        rescale: Option<&'a Rescale>,
        bn_train: bool,
    ) -> impl Fn(&Tensor, &Tensor) -> Tensor + 'a {
        let probe = self.probe;
        move |xx: &Tensor, yy: &Tensor| {
            let out = match rescale {
                Some(r) => model.forward_t(&r.to_pixel(xx), bn_train),
                None => model.forward_t(xx, bn_train),
            };
            stein::probe_values(&out, yy, probe)
        }
    }

    /// Residuals r(x) of `model` on the batch (`x`, `y`); `indices` locate
    /// the samples in the training split (for precomputed scores).
    ///
    /// Errors: [`Error::InvalidArgument`] for the gradient penalty (no
    /// residual); the residual's.
    pub fn residual(
        &self,
        model: &Model,
        x: &Tensor,
        y: &Tensor,
        indices: &Tensor,
        aug: Option<&CropFlip>,
        create_graph: bool,
    ) -> Result<stein::Residual> {
        let c = self.coordinated(model, x, indices, aug);
        let score = c.score.as_ref().ok_or_else(no_residual)?;
        let m = self.probe_fn(model, c.rescale.as_ref(), self.bn_train);
        stein::residual(m, &c.x, y, score, &self.options, None, create_graph)
    }

    /// λ(t)·R (or λ(t)·mean‖∇ₓm‖² for `--reg grad-norm`) on the batch
    /// (augmented by `batch.aug`, if any), and its statistics. `clean_logits`:
    /// the step's train-mode outputs on `batch.x`, if it made them; fd reuses
    /// them for m(x) when the model has no BatchNorm (its train and eval
    /// forwards agree) and the derivatives are in pixel coordinates.
    /// With `--stein-fraction` f < 1, R is taken on ⌈f·B⌉ samples drawn from
    /// the seed and `step` (see [`SteinPenalty::fraction_sample`]).
    pub fn term(
        &self,
        model: &Model,
        batch: &Batch,
        clean_logits: Option<&Tensor>,
        step: usize,
    ) -> Result<(Tensor, SteinStats)> {
        let lambda = self.ramp.at(step);
        let (x, y) = (batch.x, batch.y);
        let c = self.coordinated(model, x, batch.indices, batch.aug);
        let m = self.probe_fn(model, c.rescale.as_ref(), self.bn_train);
        if self.grad_norm {
            let (_, grad) = controls::input_gradient(m, &c.x, y, true)?;
            let pen = controls::grad_norm_penalty(&grad);
            let stats = SteinStats {
                penalty: pen.detach().to_kind(Kind::Double),
                residual_sums: None,
            };
            return Ok((pen * lambda, stats));
        }
        let score = c.score.as_ref().ok_or_else(no_residual)?;
        let reuse = self.options.mode == Mode::Fd
            && c.rescale.is_none()
            && !self.bn_train
            && !model.has_batch_norm();
        let clean = clean_logits
            .filter(|_| reuse)
            .map(|z| stein::probe_values(z, y, self.probe));
        let b = x.size()[0];
        let keep = subsample::fraction_sample(self.fraction, self.seed, b, step, x.device());
        let sub = |t: &Tensor| match &keep {
            Some(k) => t.index_select(0, k),
            None => t.shallow_clone(),
        };
        let (xs, ys, ss, cs) = (sub(&c.x), sub(y), sub(score), clean.as_ref().map(sub));
        let inputs = ResidualInputs {
            x: &xs,
            y: &ys,
            score: &ss,
            probes: None,
            clean: cs.as_ref(),
        };
        let (r, raw) = self.estimate(&m, &inputs)?;
        let n = xs.size()[0];
        let correction = subsample::fraction_correction(n, b, self.center);
        let pen = raw * correction;
        let rd = r.detach().to_kind(Kind::Double);
        let scale = b as f64 / n as f64;
        let stats = SteinStats {
            penalty: pen.detach().to_kind(Kind::Double),
            residual_sums: Some([
                rd.sum(Kind::Double) * scale,
                rd.square().sum(Kind::Double) * scale,
            ]),
        };
        Ok((pen * lambda, stats))
    }

    /// The batch's residuals `[B]` and its R̂ before the `--stein-fraction`
    /// correction: one residual and the plain R̂, or (`unbiased`) two
    /// residuals from independent probe sets, their cross-product R̂ and
    /// their mean as the residual (the plain 2K-probe one).
    fn estimate<F>(&self, m: &F, inputs: &ResidualInputs) -> Result<(Tensor, Tensor)>
    where
        F: Fn(&Tensor, &Tensor) -> Tensor,
    {
        let (center, detach, d) = (self.center, self.detach_mean, self.global_center);
        let r = stein::residual_of(m, inputs, &self.options, true)?.residual;
        Ok(match self.estimator {
            Estimator::Plain => {
                let pen = centred_penalty(&r, center, detach, d);
                (r, pen)
            }
            Estimator::Unbiased => {
                let r2 = stein::residual_of(m, inputs, &self.options, true)?.residual;
                let pen = cross_penalty(&r, &r2, center, detach, d);
                ((r + r2) / 2.0, pen)
            }
        })
    }

    /// Whether the run needs the global centre (`--center global` on a
    /// residual penalty).
    pub fn needs_calibration(&self) -> bool {
        self.center == Center::Global && !self.grad_norm
    }

    /// Estimates the global centre D ≈ E[r(X)] of the current `model` on
    /// `size` training inputs drawn with `seed` (TASER §3, "approximate
    /// scores and centering"); the trainer calls it at the start of every
    /// epoch, so D follows the model.
    pub fn calibrate(
        &mut self,
        model: &Model,
        data: &Dataset,
        size: usize,
        seed: u64,
    ) -> Result<f64> {
        let n = data.train.len() as usize;
        let k = size.clamp(1, n);
        let mut idx: Vec<i64> = sample(&mut ChaCha8Rng::seed_from_u64(seed), n, k)
            .into_iter()
            .map(|i| i as i64)
            .collect();
        idx.sort_unstable();
        let mut total = 0.0;
        for chunk in idx.chunks(256) {
            let t = transfers::upload(chunk, Device::Cpu);
            let x = data.train.x.index_select(0, &t).to_device(model.device());
            let y = data.train.y.index_select(0, &t).to_device(model.device());
            let r = self
                .residual(model, &x, &y, &t.to_device(model.device()), None, false)?
                .residual;
            total += transfers::read_f64(&r.sum(Kind::Double));
        }
        self.global_center = total / k as f64;
        Ok(self.global_center)
    }
}

/// The error of asking the gradient penalty for a residual.
fn no_residual() -> Error {
    Error::invalid("--reg", "grad-norm", "has no Stein residual")
}

/// λ·‖θ‖² over the trainable parameters.
pub fn l2_term(model: &Model, lambda: f64) -> Tensor {
    let params = model.vs.trainable_variables();
    let total = params
        .iter()
        .map(|p| p.square().sum(Kind::Float))
        .reduce(|a, b| a + b)
        .unwrap_or_else(|| Tensor::zeros([], (Kind::Float, model.device())));
    total * lambda
}

#[cfg(test)]
mod tests;
