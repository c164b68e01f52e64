//! The penalty's instruments, measured after every epoch when
//! the TASER penalty or its gradient-norm control is on (λ > 0), or the
//! TASER penalty is watched (λ = 0 with `--scores`), on a
//! fixed probe batch: `--instrument-batch-size` training inputs
//! ([`INSTRUMENT_BATCH`] by default; no
//! augmentation) drawn once, with [`NOISE_SHARE_PROBES`] Rademacher probes,
//! from ChaCha8 / libtorch seeded with `--seed ^ INSTRUMENT_STREAM`, so
//! every epoch and every run with one seed measures the same points. The
//! live model (not the EMA) is measured, BatchNorm in eval mode, in the
//! penalty's coordinates (`--stein-coordinates`) and after its controls.
use super::controls;
use super::{centred_penalty, Estimator, ScoreControl, SteinPenalty};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::models::Model;
use crate::stein::{self, residual, Center, Laplacian, Order, ResidualOptions};
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

/// Size of the probe batch (or the training split, if smaller).
pub const INSTRUMENT_BATCH: usize = 256;

/// Offset mixed into `--seed` for the probe batch and its probes.
pub const INSTRUMENT_STREAM: u64 = 0xD1A6_0057;

/// The fixed probe batch and its Hutchinson probes.
pub struct Instruments {
    x: Tensor,
    y: Tensor,
    /// Rows of the training split (int64 `[B]` on the device).
    indices: Tensor,
    /// `[NOISE_SHARE_PROBES, B, …]` of ±1.
    probes: Tensor,
}

/// One epoch's measurements (the diagnostic columns of `metrics.csv`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Readings {
    /// mean_i ‖∇ₓm(x_i)‖.
    pub grad_norm_mean: f64,
    /// mean_i m(x_i) (the smooth margin by default: > 0 misclassified).
    pub probe_mean: f64,
    /// mean_i cos(s̃(x_i), ∇ₓm(x_i)); `None` without a score (grad-norm,
    /// `--zero-scores`).
    pub score_grad_cosine: Option<f64>,
    /// [`ProbeNoise::share`] of the full Hutchinson residual
    /// (`None` for the first-order residual, the exact Laplacian and grad-norm:
    /// they carry no probe noise, and neither do the two below).
    pub hutchinson_noise_share: Option<f64>,
    /// The plain estimator's expected R̂ at the run's K on the probe batch,
    /// R_unbiased + V/K ([`ProbeNoise::plain`]).
    pub penalty_plain: Option<f64>,
    /// The unbiased estimate of R on the probe batch ([`ProbeNoise`]).
    pub penalty_unbiased: Option<f64>,
}

impl Instruments {
    /// Draws the probe batch of `size` inputs (`--instrument-batch-size`,
    /// at most the split) of `data`'s training split with `seed`
    /// (`--seed`); reseeds libtorch's generator (the epochs reseed it).
    pub fn new(data: &Dataset, seed: u64, size: usize, device: Device) -> Instruments {
        let stream = seed ^ INSTRUMENT_STREAM;
        let n = data.train.len() as usize;
        let mut indices: Vec<i64> =
            sample(&mut ChaCha8Rng::seed_from_u64(stream), n, size.clamp(1, n))
                .into_iter()
                .map(|i| i as i64)
                .collect();
        indices.sort_unstable();
        let t = Tensor::from_slice(&indices);
        let x = data.train.x.index_select(0, &t).to_device(device);
        let y = data.train.y.index_select(0, &t).to_device(device);
        tch::manual_seed(stream as i64);
        let probes = stein::rademacher(NOISE_SHARE_PROBES, &x);
        Instruments {
            x,
            y,
            indices: t.to_device(device),
            probes,
        }
    }

    /// Measures `model` under the penalty `p`.
    ///
    /// Errors: the residual's (autograd).
    pub fn measure(&self, p: &SteinPenalty, model: &Model) -> Result<Readings> {
        let c = p.coordinated(model, &self.x, &self.indices, None);
        let m = p.probe_fn(model, c.rescale.as_ref(), false);
        let (values, grad) = controls::input_gradient(&m, &c.x, &self.y, false)?;
        let norms = controls::squared_norms(&grad).sqrt();
        let score = c.score.as_ref();
        let cosine = score
            .filter(|_| !matches!(p.control, ScoreControl::Zero))
            .map(|s| controls::mean_cosine(s, &grad));
        let hutchinson =
            p.options.order == Order::Full && p.options.laplacian == Laplacian::Hutchinson;
        let noise = match score.filter(|_| hutchinson && !p.grad_norm) {
            Some(s) => Some(probe_noise(
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
        Ok(Readings {
            grad_norm_mean: norms.mean(Kind::Double).double_value(&[]),
            probe_mean: values.mean(Kind::Double).double_value(&[]),
            score_grad_cosine: cosine,
            hutchinson_noise_share: noise.map(|n| n.share),
            penalty_plain: noise.map(|n| n.plain(p.options.probes)),
            penalty_unbiased: noise.map(|n| n.unbiased),
        })
    }

    /// Probe batches of [`INSTRUMENT_BATCH`] (the last one smaller) that
    /// together hold `samples` training inputs (or the whole training
    /// split, if smaller), drawn without replacement with ChaCha8 seeded
    /// with `seed ^ stream`, each batch with its [`NOISE_SHARE_PROBES`]
    /// probes from libtorch's generator seeded with the same; reseeds it.
    pub fn covering(
        data: &Dataset,
        seed: u64,
        stream: u64,
        samples: usize,
        device: Device,
    ) -> Vec<Instruments> {
        let stream = seed ^ stream;
        let n = data.train.len() as usize;
        let drawn = sample(
            &mut ChaCha8Rng::seed_from_u64(stream),
            n,
            samples.clamp(1, n),
        );
        let drawn: Vec<i64> = drawn.into_iter().map(|i| i as i64).collect();
        tch::manual_seed(stream as i64);
        drawn
            .chunks(INSTRUMENT_BATCH)
            .map(|chunk| {
                let mut indices = chunk.to_vec();
                indices.sort_unstable();
                let t = Tensor::from_slice(&indices);
                let x = data.train.x.index_select(0, &t).to_device(device);
                let y = data.train.y.index_select(0, &t).to_device(device);
                let probes = stein::rademacher(NOISE_SHARE_PROBES, &x);
                Instruments {
                    x,
                    y,
                    indices: t.to_device(device),
                    probes,
                }
            })
            .collect()
    }

    /// The probe batch: inputs `[B, …]` in pixels, labels `[B]`, their
    /// indices in the training split, and the Rademacher probes
    /// `[NOISE_SHARE_PROBES, B, …]`.
    pub fn batch(&self) -> (&Tensor, &Tensor, &Tensor, &Tensor) {
        (&self.x, &self.y, &self.indices, &self.probes)
    }

    /// Samples in the probe batch.
    pub fn len(&self) -> usize {
        self.x.size()[0] as usize
    }

    /// Whether the probe batch is empty (never, for a loaded data set).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The penalty `p` trains on (before λ), in expectation over the
    /// Hutchinson probes, on the probe batch at `model`'s weights:
    /// mean‖∇ₓm‖² for the gradient penalty; for the full Hutchinson
    /// residual the plain estimator's R + V/K at the run's K, or R with
    /// `--stein-estimator unbiased` ([`probe_noise`] of the batch's fixed
    /// one-probe residuals); otherwise R of the noise-free residual.
    ///
    /// Errors: the residual's.
    pub fn expected_penalty(&self, p: &SteinPenalty, model: &Model) -> Result<f64> {
        let c = p.coordinated(model, &self.x, &self.indices, None);
        let m = p.probe_fn(model, c.rescale.as_ref(), false);
        let score = match (&c.score, p.grad_norm) {
            (Some(s), false) => s,
            _ => {
                let (_, grad) = controls::input_gradient(&m, &c.x, &self.y, false)?;
                let pen = controls::grad_norm_penalty(&grad.to_kind(Kind::Double));
                return Ok(pen.double_value(&[]));
            }
        };
        let opts = &p.options;
        if opts.order == Order::Full && opts.laplacian == Laplacian::Hutchinson {
            let (center, d) = (p.center, p.global_center);
            let noise = probe_noise(&m, &c.x, &self.y, score, opts, &self.probes, center, d)?;
            return Ok(match p.estimator {
                Estimator::Plain => noise.plain(opts.probes),
                Estimator::Unbiased => noise.unbiased,
            });
        }
        let r = residual(&m, &c.x, &self.y, score, opts, None, false)?.residual;
        let pen = centred_penalty(&r.to_kind(Kind::Double), p.center, false, p.global_center);
        Ok(pen.double_value(&[]))
    }
}

/// Number of one-probe residuals the noise share compares.
pub const NOISE_SHARE_PROBES: i64 = 8;

/// The penalty's Hutchinson noise on a batch, from K one-probe residuals.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeNoise {
    /// R₁ = (1/K)Σₖ R(r⁽ᵏ⁾): the plain one-probe R̂, averaged over K draws.
    pub one_probe: f64,
    /// R₁ − V = (K·R_K − R₁)/(K − 1): unbiased for the exact R (it may be
    /// negative when the noise dominates).
    pub unbiased: f64,
    /// V/R₁ (0 when R₁ = 0): the share of the one-probe R̂ that is noise.
    pub share: f64,
}

impl ProbeNoise {
    /// The plain estimator's expectation with `k` probes: R + V/k,
    /// estimated as `unbiased` + (R₁ − `unbiased`)/k.
    pub fn plain(&self, k: i64) -> f64 {
        self.unbiased + (self.one_probe - self.unbiased) / k as f64
    }
}

/// The plain, unbiased and noise readings of the penalty on a batch.
///
/// From K = `probes.size()[0]` (≥ 2) single-probe residuals r⁽ᵏ⁾ on the
/// batch: R₁ = (1/K)Σₖ R(r⁽ᵏ⁾) (the K = 1 penalty, averaged over draws),
/// R_K = R((1/K)Σₖ r⁽ᵏ⁾) (the K-probe penalty) and the unbiased noise
/// estimate V = K/(K−1)·(R₁ − R_K), the mean over samples of the variance
/// of one probe's centred residual (E[R₁] = R + V, E[R_K] = R + V/K). The
/// share is V/R₁ and R₁ − V is unbiased for R. For m = ½xᵀAx the noise of
/// vᵀAv is Σ_{i≠j}A_ij v_i v_j with variance 2Σ_{i≠j}A_ij², so with batch
/// centring the share tends to V'/(R_exact + V'), V' = 2Σ_{i≠j}A_ij²·(1 − 1/B).
///
/// Errors: `opts` not of a full Hutchinson residual; fewer than 2 probes.
#[allow(clippy::too_many_arguments)]
pub fn probe_noise<F>(
    m: F,
    x: &Tensor,
    y: &Tensor,
    score: &Tensor,
    opts: &ResidualOptions,
    probes: &Tensor,
    center: Center,
    global_center: f64,
) -> Result<ProbeNoise>
where
    F: Fn(&Tensor, &Tensor) -> Tensor,
{
    let k = probes.size()[0];
    if opts.order != Order::Full || opts.laplacian != Laplacian::Hutchinson || k < 2 {
        return Err(Error::invalid(
            "--stein-laplacian",
            format!("{:?}", opts.laplacian).to_lowercase(),
            "the noise share needs the full residual with hutchinson and ≥ 2 probes",
        ));
    }
    let one = ResidualOptions {
        probes: 1,
        ..opts.clone()
    };
    let mut singles = Vec::with_capacity(k as usize);
    for i in 0..k {
        let p = probes.narrow(0, i, 1);
        singles.push(residual(&m, x, y, score, &one, Some(&p), false)?.residual);
    }
    Ok(ProbeNoise::of_singles(&singles, center, global_center))
}

impl ProbeNoise {
    /// The readings of K ≥ 2 one-probe residuals `singles` (each `[B]`) of
    /// one batch with independent probes, centred as `center` (see
    /// [`probe_noise`] for the estimators).
    pub fn of_singles(singles: &[Tensor], center: Center, global_center: f64) -> ProbeNoise {
        let k = singles.len();
        assert!(
            k >= 2,
            "the noise estimate needs two or more one-probe residuals"
        );
        let pen = |r: &Tensor| {
            centred_penalty(&r.to_kind(Kind::Double), center, false, global_center)
                .double_value(&[])
        };
        let r1 = singles.iter().map(pen).sum::<f64>() / k as f64;
        let rk = pen(&Tensor::stack(singles, 0).mean_dim(0, false, Kind::Double));
        let noise = k as f64 / (k - 1) as f64 * (r1 - rk);
        ProbeNoise {
            one_probe: r1,
            unbiased: r1 - noise,
            share: if r1 > 0.0 { noise / r1 } else { 0.0 },
        }
    }
}
