//! Controls and instruments of the TASER penalty (issue 15): the isotropic
//! gradient penalty, the coordinates derivatives are taken in, the
//! permutation that hands each sample another sample's score, and the
//! share of a one-probe Hutchinson penalty that is estimator noise.
use super::{penalty, residual, Center, Laplacian, Order, ResidualOptions};
use crate::error::{Error, Result};
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// The coordinates in which ∇ₓ and Δ are taken (`--stein-coordinates`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Coordinates {
    /// Input pixels in [0,1] (the suite's default since its first release).
    #[default]
    Pixel,
    /// The model's normalised inputs z = (x − μ_c)/σ_c (per channel c).
    /// With x = μ + σz: ∇_z m = σ∇ₓm, ∂²m/∂z_i² = σ_c²∂²m/∂x_i² and the
    /// score transforms as s_z = σ s_x, so each pixel's terms of r are
    /// multiplied by σ_c²; on one channel r_z = σ²r_x and R_z = σ⁴R_x.
    Model,
}

/// The per-channel affine map between pixels x and the model's normalised
/// inputs z = (x − μ)/σ; `mean` and `std` broadcast against a batch.
#[derive(Debug)]
pub struct Rescale {
    pub mean: Tensor,
    pub std: Tensor,
}

impl Rescale {
    /// z = (x − μ)/σ.
    pub fn to_model(&self, x: &Tensor) -> Tensor {
        (x - &self.mean) / &self.std
    }

    /// x = μ + σz.
    pub fn to_pixel(&self, z: &Tensor) -> Tensor {
        z * &self.std + &self.mean
    }

    /// A score ∇ₓ log p in z coordinates: σ ⊙ s (the Jacobian of the affine
    /// map is constant, so log p_z = log p_x + const).
    pub fn score_to_model(&self, s: &Tensor) -> Tensor {
        s * &self.std
    }
}

/// The probe values m(x) (`[B]`) and their input gradient ∇ₓm (shaped like
/// `x`), per sample (the batch's samples must not interact: BatchNorm in
/// eval mode). `create_graph` keeps the graph for a parameter gradient.
pub fn input_gradient<F>(
    m: F,
    x: &Tensor,
    y: &Tensor,
    create_graph: bool,
) -> Result<(Tensor, Tensor)>
where
    F: Fn(&Tensor, &Tensor) -> Tensor,
{
    let xg = x.detach().set_requires_grad(true);
    let values = m(&xg, y);
    let grad = Tensor::f_run_backward(&[values.sum(values.kind())], &[&xg], true, create_graph)?
        .pop()
        .expect("one gradient");
    Ok((values, grad))
}

/// ‖g_i‖² per sample of a batch of gradients `[B, …]` → `[B]`.
pub fn squared_norms(g: &Tensor) -> Tensor {
    g.flatten(1, -1)
        .square()
        .sum_dim_intlist(1, false, g.kind())
}

/// The matched isotropic gradient penalty mean_i ‖∇ₓm(x_i)‖² (`--reg
/// grad-norm`), before λ.
pub fn grad_norm_penalty(grad: &Tensor) -> Tensor {
    squared_norms(grad).mean(grad.kind())
}

/// Mean over samples of cos(s_i, g_i) = s_iᵀg_i / (‖s_i‖‖g_i‖), a sample
/// where either vector vanishes counting as 0. `score` and `grad` `[B, …]`.
pub fn mean_cosine(score: &Tensor, grad: &Tensor) -> f64 {
    let (s, g) = (score.flatten(1, -1), grad.flatten(1, -1));
    let dot = (&s * &g).sum_dim_intlist(1, false, s.kind());
    let norms = squared_norms(&s).sqrt() * squared_norms(&g).sqrt();
    let cos = (dot / &norms).where_self(&norms.gt(0.0), &norms.zeros_like());
    cos.mean(Kind::Double).double_value(&[])
}

/// A uniformly random cyclic permutation of 0..n (Sattolo's algorithm)
/// drawn from `seed`: for n ≥ 2 no index maps to itself (a derangement),
/// so sample i receives the score of sample `perm[i] ≠ i` and the multiset
/// of scores is unchanged. n = 1 gives [0].
pub fn derangement(n: usize, seed: u64) -> Vec<i64> {
    let mut perm: Vec<i64> = (0..n as i64).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for i in (1..n).rev() {
        let j = rng.gen_range(0..i);
        perm.swap(i, j);
    }
    perm
}

/// Number of one-probe residuals the noise share compares.
pub const NOISE_SHARE_PROBES: i64 = 8;

/// The share of the one-probe Hutchinson penalty that is estimator noise.
///
/// From K = `probes.size()[0]` (≥ 2) single-probe residuals r⁽ᵏ⁾ on the
/// batch: R₁ = (1/K)Σₖ R(r⁽ᵏ⁾) (the K = 1 penalty, averaged over draws),
/// R_K = R((1/K)Σₖ r⁽ᵏ⁾) (the K-probe penalty) and the unbiased noise
/// estimate V = K/(K−1)·(R₁ − R_K), the mean over samples of the variance
/// of one probe's centred residual. The share is V/R₁ (0 when R₁ = 0). For
/// m = ½xᵀAx the noise of vᵀAv is Σ_{i≠j}A_ij v_i v_j with variance
/// 2Σ_{i≠j}A_ij², so with batch centring the share tends to
/// V'/(R_exact + V'), V' = 2Σ_{i≠j}A_ij²·(1 − 1/B).
///
/// Errors: `opts` not of a full Hutchinson residual; fewer than 2 probes.
#[allow(clippy::too_many_arguments)]
pub fn hutchinson_noise_share<F>(
    m: F,
    x: &Tensor,
    y: &Tensor,
    score: &Tensor,
    opts: &ResidualOptions,
    probes: &Tensor,
    center: Center,
    global_center: f64,
) -> Result<f64>
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
    let pen = |r: &Tensor| {
        penalty(&r.to_kind(Kind::Double), center, false, global_center).double_value(&[])
    };
    let r1 = singles.iter().map(pen).sum::<f64>() / k as f64;
    let rk = pen(&Tensor::stack(&singles, 0).mean_dim(0, false, Kind::Double));
    let noise = k as f64 / (k - 1) as f64 * (r1 - rk);
    Ok(if r1 > 0.0 { noise / r1 } else { 0.0 })
}

#[cfg(test)]
mod tests;
