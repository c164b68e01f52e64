//! The penalty on a seeded fraction of the batch (`--stein-fraction`): which
//! samples, and the factor that keeps the estimate unbiased.
//!
//! Variance of the fraction estimate. With n = ⌈f·B⌉ of the batch's B
//! samples drawn without replacement and wᵢ = (rᵢ − c)²:
//! - centre none/global: R̂ = (1/n)Σ_S wᵢ, unbiased for R = (1/B)Σ wᵢ, with
//!   Var(R̂) = (1 − n/B)·S²_w/n, S²_w the batch's sample variance of wᵢ;
//! - batch centre: R̂ = (B−1)/B · s²_S (s²_S the subset's sample variance of
//!   r, divisor n − 1), unbiased because s²_S is unbiased for the batch's
//!   S²_r; to leading order Var(R̂) ≈ (1 − f)/(f·B)·(μ₄ − σ⁴), μ₄ the
//!   fourth central moment of r and σ² its variance.
//!
//! The penalty's forward and backward run on n samples, so its cost falls
//! to ≈ f of the full-batch cost.
use crate::device::transfers;
use crate::stein::Center;
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::Tensor;

/// Offset mixed into `--seed` for the samples of `--stein-fraction`.
pub const FRACTION_STREAM: u64 = 0xF4AC_7109;

/// The samples of a batch of `b` the penalty is taken on at optimiser step
/// `step`: `None` for the whole batch (`fraction` ≥ 1), else ⌈f·b⌉ distinct
/// indices (sorted, on `device`) drawn uniformly without replacement by
/// ChaCha8 seeded with `seed ^ FRACTION_STREAM` and the step.
pub fn fraction_sample(
    fraction: f64,
    seed: u64,
    b: i64,
    step: usize,
    device: tch::Device,
) -> Option<Tensor> {
    if fraction >= 1.0 {
        return None;
    }
    let n = ((fraction * b as f64).ceil() as i64).clamp(1, b);
    let stream =
        (seed ^ FRACTION_STREAM).wrapping_add((step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut idx: Vec<i64> = sample(
        &mut ChaCha8Rng::seed_from_u64(stream),
        b as usize,
        n as usize,
    )
    .into_iter()
    .map(|i| i as i64)
    .collect();
    idx.sort_unstable();
    Some(transfers::upload(&idx, device))
}

/// The factor that makes the penalty of `n` of a batch's `b` samples
/// unbiased for the whole batch's: n/(n−1)·(B−1)/B with the batch centre
/// (the subset's (1/n)Σ(rᵢ − r̄_S)² is biased low), 1 otherwise (and for
/// n < 2 or the whole batch).
pub fn fraction_correction(n: i64, b: i64, center: Center) -> f64 {
    if n < b && n > 1 && center == Center::Batch {
        (n as f64 / (n - 1) as f64) * ((b - 1) as f64 / b as f64)
    } else {
        1.0
    }
}
