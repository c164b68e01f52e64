//! The penalty's controls and their shared pieces: the input gradient ∇ₓm
//! of the probe, the isotropic gradient penalty mean‖∇ₓm‖² (`--reg
//! grad-norm`), the cosine between score and gradient, and the
//! derangement that hands each sample another sample's score
//! (`--score-permute`). The zero-score control needs no code of its own
//! (s̃ ≡ 0, see [`super::ScoreControl`]).
use crate::device::transfers;
use crate::error::Result;
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

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
    transfers::read_f64(&cos.mean(Kind::Double))
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

#[cfg(test)]
mod tests;
