//! The exact chunked penalty (`--penalty-chunk N`): the parameter gradient
//! of λ·R without holding the whole batch's double-backward graph.
//!
//! R couples the samples only through its centre, so its gradient is a
//! weighted sum of per-sample residual gradients. With the batch mean
//! r̄ (or a constant c), Σᵢ (rᵢ − r̄) = 0 removes the centre's derivative:
//!
//! ```text
//!   plain      R = (1/n) Σᵢ (rᵢ − c)²              ∇θR = Σᵢ wᵢ ∇θrᵢ,  wᵢ = (2/n)(rᵢ − c)
//!   unbiased   R = (1/n) Σᵢ (r¹ᵢ − c¹)(r²ᵢ − c²)   ∇θR = Σᵢ w¹ᵢ ∇θr¹ᵢ + w²ᵢ ∇θr²ᵢ,
//!                                                  w¹ᵢ = (1/n)(r²ᵢ − c²), w²ᵢ = (1/n)(r¹ᵢ − c¹)
//!   grad-norm  G = (1/n) Σᵢ ‖∇ₓmᵢ‖²               (no centre: each chunk's own sum)
//! ```
//!
//! (the same with c = 0 for `--center none` and c = D for `--center
//! global`; `--detach-mean` changes nothing). So a step first takes every
//! residual without a graph, chunk by chunk, on Hutchinson probes drawn
//! once for the whole batch (the same draws, in the same order, as the
//! whole-batch penalty), forms R and the weights (detached), then for
//! each chunk recomputes its residuals with the graph and back-propagates
//! λ·(fraction correction)·Σ wᵢrᵢ, freeing the chunk's graph before the
//! next. The accumulated parameter gradient is that of the whole-batch λ·R
//! (tested to 1e-5 relative for every centring and estimator and several
//! chunk sizes). It costs one more residual evaluation without a graph;
//! peak memory is one chunk's graph instead of the batch's. Samples must
//! not interact in the penalty's forward, so `--stein-bn train` is refused.
//!
//! A data-parallel step (a [`Batch`] with a share) is this computation
//! spread over the ranks: n and the batch means r̄ are summed over them
//! first, each rank back-propagates its own samples' Σ wᵢrᵢ with the global
//! weights, and the ranks' gradients add up to the whole batch's.
use super::{subsample, SteinPenalty, SteinStats};
use crate::data::Batch;
use crate::error::Result;
use crate::models::Model;
use crate::stein::{self, Laplacian, Order, ResidualInputs};
use tch::{Kind, Tensor};

impl SteinPenalty {
    /// Accumulates ∇θ of λ(t)·R (or λ(t)·mean‖∇ₓm‖²) on `batch` into the
    /// parameters' gradients, `chunk` samples at a time (module doc), and
    /// returns the penalty's statistics as [`SteinPenalty::term`] does.
    /// `--stein-fraction` takes its samples first, as in `term`.
    ///
    /// Errors: the residual's.
    pub fn backward_chunked(
        &self,
        model: &Model,
        batch: &Batch,
        step: usize,
        chunk: usize,
    ) -> Result<SteinStats> {
        self.backward_chunks(model, batch, step, chunk, self.ramp.at(step))
    }

    /// [`SteinPenalty::backward_chunked`] with the weight `lambda` (λ(t),
    /// or 1 for `--penalty-chunk auto`'s trial).
    pub(super) fn backward_chunks(
        &self,
        model: &Model,
        batch: &Batch,
        step: usize,
        chunk: usize,
        lambda: f64,
    ) -> Result<SteinStats> {
        let (x, y) = (batch.x, batch.y);
        let c = self.coordinated(model, x, batch.indices, batch.aug);
        let m = self.probe_fn(model, c.rescale.as_ref(), self.bn_train);
        let b = x.size()[0];
        if self.grad_norm {
            // As in `term`: the whole batch, no --stein-fraction.
            let n = global_count(b, batch)?;
            return self.grad_norm_chunked(&m, &c.x, y, &spans(b, chunk as i64), lambda, n);
        }
        let keep = subsample::fraction_sample(self.fraction, self.seed, b, step, x.device());
        let sub = |t: &Tensor| match &keep {
            Some(k) => t.index_select(0, k),
            None => t.shallow_clone(),
        };
        let (xs, ys) = (sub(&c.x), sub(y));
        let n = xs.size()[0];
        let spans = spans(n, chunk as i64);
        let ss = sub(c.score.as_ref().ok_or_else(super::no_residual)?);
        let draws = match self.estimator {
            super::Estimator::Plain => 1,
            super::Estimator::Unbiased => 2,
        };
        let probes: Vec<Option<Tensor>> = (0..draws)
            .map(|_| {
                (self.options.order == Order::Full
                    && self.options.laplacian == Laplacian::Hutchinson)
                    .then(|| stein::rademacher(self.options.probes, &xs))
            })
            .collect();
        let residuals = |p: &Option<Tensor>, (start, len): (i64, i64), graph: bool| {
            let probes = p.as_ref().map(|p| p.narrow(1, start, len));
            let inputs = ResidualInputs {
                x: &xs.narrow(0, start, len),
                y: &ys.narrow(0, start, len),
                score: &ss.narrow(0, start, len),
                probes: probes.as_ref(),
                clean: None,
            };
            stein::residual_of(&m, &inputs, &self.options, graph).map(|r| r.residual)
        };
        // Every residual, detached, chunk by chunk.
        let mut values = Vec::with_capacity(draws);
        for p in &probes {
            let parts: Result<Vec<Tensor>> = spans
                .iter()
                .map(|&s| residuals(p, s, false).map(|r| r.detach()))
                .collect();
            values.push(Tensor::cat(&parts?, 0));
        }
        let (d, center) = (self.global_center, self.center);
        // A data-parallel share: the global count and batch means.
        let global = match batch.share {
            Some(_) => Some(global_means(&values, batch)?),
            None => None,
        };
        let total = global.as_ref().map_or(n as f64, |(count, _)| *count);
        // The values are detached: the centre's derivative is not wanted.
        let centred = |k: usize, r: &Tensor| match (&global, center) {
            (Some((_, means)), stein::Center::Batch) => r - &means[k],
            _ => super::estimator::centred(r, center, false, d),
        };
        // This rank's part of the mean over the global batch.
        let mean = |t: Tensor| match global {
            Some(_) => t.sum(t.kind()) / total,
            None => t.mean(t.kind()),
        };
        let correction = subsample::fraction_correction(n, b, center);
        let scale = lambda * correction / total;
        let (raw, weights, r) = match values.as_slice() {
            [r] => {
                let u = centred(0, r);
                (mean(u.square()), vec![u * (2.0 * scale)], r.shallow_clone())
            }
            [r1, r2] => {
                let (u1, u2) = (centred(0, r1), centred(1, r2));
                let raw = mean(&u1 * &u2);
                (raw, vec![u2 * scale, u1 * scale], (r1 + r2) / 2.0)
            }
            _ => unreachable!("one or two probe draws"),
        };
        // Each chunk's weighted residuals, back-propagated and freed.
        if lambda != 0.0 {
            for (p, w) in probes.iter().zip(&weights) {
                for &(start, len) in &spans {
                    let r = residuals(p, (start, len), true)?;
                    let weighted = r * w.narrow(0, start, len);
                    weighted.sum(weighted.kind()).backward();
                }
            }
        }
        let rd = r.to_kind(Kind::Double);
        let ratio = b as f64 / n as f64;
        Ok(SteinStats {
            penalty: (raw * correction).to_kind(Kind::Double),
            residual_sums: Some([
                rd.sum(Kind::Double) * ratio,
                rd.square().sum(Kind::Double) * ratio,
            ]),
        })
    }

    /// The grad-norm control in chunks: each chunk back-propagates its
    /// part λ·(1/n)·Σ ‖∇ₓmᵢ‖² of λ·G (n: the global batch's count).
    fn grad_norm_chunked<F>(
        &self,
        m: &F,
        x: &Tensor,
        y: &Tensor,
        spans: &[(i64, i64)],
        lambda: f64,
        n: f64,
    ) -> Result<SteinStats>
    where
        F: Fn(&Tensor, &Tensor) -> Tensor,
    {
        let mut total = Tensor::zeros([], (Kind::Double, x.device()));
        for &(start, len) in spans {
            let (xc, yc) = (x.narrow(0, start, len), y.narrow(0, start, len));
            let (_, grad) = super::controls::input_gradient(m, &xc, &yc, true)?;
            let part = super::controls::squared_norms(&grad).sum(grad.kind()) / n;
            total += part.detach().to_kind(Kind::Double);
            if lambda != 0.0 {
                (part * lambda).backward();
            }
        }
        Ok(SteinStats {
            penalty: total,
            residual_sums: None,
        })
    }
}

/// The number of samples in `b`'s global batch: `b` alone, the sum over
/// the ranks in a data-parallel step.
fn global_count(b: i64, batch: &Batch) -> Result<f64> {
    let mut n = [b as f64];
    if let Some(s) = batch.share {
        s.group.sum_f64(&mut n)?;
    }
    Ok(n[0])
}

/// A data-parallel step's global count n and batch means r̄ of each probe
/// draw's residuals `values` (this rank's `[b]` each): Σ over the ranks of
/// b and of Σᵢ rᵢ, the means as 0-dim tensors on the residuals' device.
fn global_means(values: &[Tensor], batch: &Batch) -> Result<(f64, Vec<Tensor>)> {
    let n = global_count(values[0].size()[0], batch)?;
    let sums = Tensor::stack(
        &values
            .iter()
            .map(|r| r.sum(Kind::Double))
            .collect::<Vec<_>>(),
        0,
    );
    if let Some(s) = batch.share {
        s.group.sum_(&sums)?;
    }
    let means = (sums / n).to_kind(values[0].kind());
    Ok((n, (0..values.len() as i64).map(|k| means.get(k)).collect()))
}

/// (start, length) of consecutive chunks of at most `chunk` (≥ 1) of `n` samples.
fn spans(n: i64, chunk: i64) -> Vec<(i64, i64)> {
    let chunk = chunk.max(1);
    (0..n)
        .step_by(chunk as usize)
        .map(|s| (s, chunk.min(n - s)))
        .collect()
}
