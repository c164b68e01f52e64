//! How the penalty R = (1/B) Σᵢ (rᵢ − c)² is estimated from Hutchinson
//! residuals (`--stein-estimator`).
//!
//! With K Rademacher probes the full residual is r̂ᵢ = rᵢ + eᵢ, where rᵢ is
//! the exact Δm + s̃ᵀ∇m and eᵢ = (1/K) Σₖ (v_kᵀ∇²m v_k − Δm) is the probes'
//! noise: E[eᵢ] = 0, Var(eᵢ) = σᵢ²/K with σᵢ² = 2 Σ_{j≠l} (∇²m)_{jl}² for
//! one probe, independent across samples.
//!
//! - `plain` (TASER Algorithm 1, the default): R̂ = (1/B) Σᵢ (r̂ᵢ − ĉ)². It
//!   penalises the noise as if it were signal:
//!   E[R̂] = R + (1 − 1/B)·(1/B) Σᵢ σᵢ²/K with batch centring
//!   (ĉ = mean r̂; R + (1/B) Σᵢ σᵢ²/K with a constant centre).
//! - `unbiased`: two independent probe sets of K probes each give r̂⁽¹⁾ and
//!   r̂⁽²⁾ of the same rᵢ, and R̂ = (1/B) Σᵢ (r̂ᵢ⁽¹⁾ − ĉ⁽¹⁾)(r̂ᵢ⁽²⁾ − ĉ⁽²⁾),
//!   ĉ⁽ʲ⁾ the batch mean of r̂⁽ʲ⁾ (or the same constant for both). Writing
//!   r̂ᵢ⁽ʲ⁾ − ĉ⁽ʲ⁾ = (rᵢ − r̄) + (eᵢ⁽ʲ⁾ − ē⁽ʲ⁾), the product's expectation is
//!   (rᵢ − r̄)² plus cross terms that vanish: each noise has mean 0, and
//!   the two sets are independent, so E[(eᵢ⁽¹⁾ − ē⁽¹⁾)(eᵢ⁽²⁾ − ē⁽²⁾)] = 0.
//!   Hence E[R̂] = R exactly, and so is the expected parameter gradient.
//!   It costs 2K probes (two residual evaluations of K each), and R̂ may be
//!   negative on a batch whose signal is below its noise.
//!
//! Only the full residual with Hutchinson probes carries probe noise; the
//! first-order residual and the exact Laplacian have nothing to remove, so
//! `unbiased` is refused with them.
use crate::stein::Center;
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// The penalty's estimator from Hutchinson residuals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Estimator {
    /// (1/B) Σ (r̂ᵢ − ĉ)² with one probe set: TASER's Algorithm 1; biased
    /// upwards by the probes' variance.
    #[default]
    Plain,
    /// (1/B) Σ (r̂ᵢ⁽¹⁾ − ĉ⁽¹⁾)(r̂ᵢ⁽²⁾ − ĉ⁽²⁾) over two independent probe sets
    /// of K probes each: unbiased for R, twice the probes.
    Unbiased,
}

impl Estimator {
    /// The flag's spelling.
    pub fn name(self) -> &'static str {
        match self {
            Estimator::Plain => "plain",
            Estimator::Unbiased => "unbiased",
        }
    }
}

/// The centre ĉ of `r` `[B]` (the batch mean, detached if `detach_mean`;
/// the constant `global_center`; or none).
pub(super) fn centred(r: &Tensor, center: Center, detach_mean: bool, global_center: f64) -> Tensor {
    match center {
        Center::Batch => {
            let c = r.mean(r.kind());
            r - if detach_mean { c.detach() } else { c }
        }
        Center::Global => r - global_center,
        Center::None => r.shallow_clone(),
    }
}

/// The plain penalty R̂ = (1/B) Σᵢ (rᵢ − c)² (Algorithm 1, line 13) of the
/// residuals `r` `[B]`, c the batch mean (detached if `detach_mean`, line
/// 11), a global constant, or 0.
///
/// With the exact batch mean, detaching changes nothing in the gradient:
/// ∂R/∂c = −(2/B) Σᵢ (rᵢ − c) = 0 at c = mean(r), so the path through c
/// contributes nothing (a test checks it).
pub fn centred_penalty(
    r: &Tensor,
    center: Center,
    detach_mean: bool,
    global_center: f64,
) -> Tensor {
    centred(r, center, detach_mean, global_center)
        .square()
        .mean(r.kind())
}

/// The unbiased penalty (1/B) Σᵢ (r¹ᵢ − c¹)(r²ᵢ − c²) of two residual
/// estimates `r1`, `r2` `[B]` of the same batch from independent probe
/// sets, each centred as in [`centred_penalty`].
pub fn cross_penalty(
    r1: &Tensor,
    r2: &Tensor,
    center: Center,
    detach_mean: bool,
    global_center: f64,
) -> Tensor {
    let a = centred(r1, center, detach_mean, global_center);
    let b = centred(r2, center, detach_mean, global_center);
    (a * b).mean(r1.kind())
}
