//! The penalty's instruments (issue 15), measured after every epoch when
//! the TASER penalty or its gradient-norm control is on (λ > 0), on a
//! fixed probe batch: [`DIAGNOSTIC_BATCH`] training inputs (no
//! augmentation) drawn once, with [`NOISE_SHARE_PROBES`] Rademacher probes,
//! from ChaCha8 / libtorch seeded with `--seed ^ DIAGNOSTIC_STREAM`, so
//! every epoch and every run with one seed measures the same points. The
//! live model (not the EMA) is measured, BatchNorm in eval mode, in the
//! penalty's coordinates (`--stein-coordinates`) and after its controls.
use super::regularizer::{ScoreControl, SteinPenalty};
use crate::data::Dataset;
use crate::error::Result;
use crate::models::Model;
use crate::stein::controls::{self, NOISE_SHARE_PROBES};
use crate::stein::{self, Laplacian, Order};
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

/// Size of the probe batch (or the training split, if smaller).
pub const DIAGNOSTIC_BATCH: usize = 256;

/// Offset mixed into `--seed` for the probe batch and its probes.
pub const DIAGNOSTIC_STREAM: u64 = 0xD1A6_0057;

/// The fixed probe batch and its Hutchinson probes.
pub struct Diagnostics {
    x: Tensor,
    y: Tensor,
    indices: Vec<i64>,
    /// `[NOISE_SHARE_PROBES, B, …]` of ±1.
    probes: Tensor,
}

/// One epoch's measurements (the diagnostic columns of `metrics.csv`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Diagnosis {
    /// mean_i ‖∇ₓm(x_i)‖.
    pub grad_norm_mean: f64,
    /// mean_i m(x_i) (the smooth margin by default: > 0 misclassified).
    pub probe_mean: f64,
    /// mean_i cos(s̃(x_i), ∇ₓm(x_i)); `None` without a score (grad-norm,
    /// `--zero-scores`).
    pub score_grad_cosine: Option<f64>,
    /// [`controls::hutchinson_noise_share`] of the full Hutchinson residual
    /// (`None` for the first-order residual, the exact Laplacian and grad-norm).
    pub hutchinson_noise_share: Option<f64>,
}

impl Diagnostics {
    /// Draws the probe batch of `data`'s training split with `seed`
    /// (`--seed`); reseeds libtorch's generator (the epochs reseed it).
    pub fn new(data: &Dataset, seed: u64, device: Device) -> Diagnostics {
        let stream = seed ^ DIAGNOSTIC_STREAM;
        let n = data.train.len() as usize;
        let mut indices: Vec<i64> = sample(
            &mut ChaCha8Rng::seed_from_u64(stream),
            n,
            DIAGNOSTIC_BATCH.min(n),
        )
        .into_iter()
        .map(|i| i as i64)
        .collect();
        indices.sort_unstable();
        let t = Tensor::from_slice(&indices);
        let x = data.train.x.index_select(0, &t).to_device(device);
        let y = data.train.y.index_select(0, &t).to_device(device);
        tch::manual_seed(stream as i64);
        let probes = stein::rademacher(NOISE_SHARE_PROBES, &x);
        Diagnostics {
            x,
            y,
            indices,
            probes,
        }
    }

    /// Measures `model` under the penalty `p`.
    ///
    /// Errors: the residual's (autograd).
    pub fn measure(&self, p: &SteinPenalty, model: &Model) -> Result<Diagnosis> {
        let c = p.coordinated(model, &self.x, &self.indices, None);
        let m = p.probe_fn(model, c.rescale.as_ref(), false);
        let (values, grad) = controls::input_gradient(&m, &c.x, &self.y, false)?;
        let norms = controls::squared_norms(&grad).sqrt();
        let score = c.score.as_ref();
        let cosine = score
            .filter(|_| p.control != ScoreControl::Zero)
            .map(|s| controls::mean_cosine(s, &grad));
        let hutchinson =
            p.options.order == Order::Full && p.options.laplacian == Laplacian::Hutchinson;
        let share = match score.filter(|_| hutchinson && !p.grad_norm) {
            Some(s) => Some(controls::hutchinson_noise_share(
                &m,
                &c.x,
                &self.y,
                s,
                &p.options,
                &self.probes,
                p.center,
                p.global_center,
            )?),
            None => None,
        };
        Ok(Diagnosis {
            grad_norm_mean: norms.mean(Kind::Double).double_value(&[]),
            probe_mean: values.mean(Kind::Double).double_value(&[]),
            score_grad_cosine: cosine,
            hutchinson_noise_share: share,
        })
    }
}
