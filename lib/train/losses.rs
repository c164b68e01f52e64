//! The loss family of SCORE's Table 1 (Pang et al. 2022, §3 and Table 1):
//! distances and divergences D(P, Q) between two probability vectors over
//! the K classes, per sample.
//!
//! Convention: P and Q are whole class vectors (rows of a `[B, K]` batch),
//! never the toy's class-1 probability. In the label term P is the (smoothed)
//! one-hot target and Q = softmax(z); in the robust term of TRADES/MART
//! P = softmax(z_clean) and Q = softmax(z_adv); PGD-AT's loss and its
//! training attack use D(onehot(y), softmax(z)).
//!
//! Numerical care (each choice is part of the formula the tests check):
//! - `kl` and `js` sum p·(log p − log m) over the classes with p > 0 only
//!   (0·log 0 = 0), logs of max(p, [`TINY`]) (KL of logits: `log_softmax`),
//!   so a one-hot P and a softmax that underflows to 0 give finite values
//!   and gradients.
//! - `l2` and `js-dist` are square roots with a kink at P = Q, where the
//!   gradient of √ is infinite: they use the smooth safe root
//!   √(max(x, 0) + ε²) − ε with ε = 2⁻²⁰ ≈ 9.5e-7, which is exactly 0 at
//!   x = 0, differs from √x by at most ε, and has gradient 0 at P = Q.
//! - `l1` and `linf` take |·|, whose subgradient at 0 is 0 (libtorch's
//!   sign); `linf`'s max passes its gradient to one arg-max class (the
//!   first on ties), the subgradient of max.
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// The distance or divergence D(P, Q) of the loss (SCORE's Table 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Divergence {
    /// KL(P ‖ Q) = Σ_k p_k log(p_k/q_k); against labels this is the
    /// cross-entropy (CE = KL + H(target)), as the references use.
    Kl,
    /// Squared error ‖P − Q‖₂² = Σ_k (p_k − q_k)² (SCORE's SE).
    Se,
    /// ℓ1 distance ‖P − Q‖₁ = Σ_k |p_k − q_k|.
    L1,
    /// ℓ2 distance ‖P − Q‖₂ (safe root √(x + ε²) − ε, ε = 2⁻²⁰).
    L2,
    /// ℓ∞ distance max_k |p_k − q_k| (gradient to one arg-max class).
    Linf,
    /// Jensen–Shannon divergence ½KL(P ‖ M) + ½KL(Q ‖ M), M = (P + Q)/2,
    /// in nats.
    Js,
    /// Jensen–Shannon distance √JS (safe root √(x + ε²) − ε, ε = 2⁻²⁰).
    JsDist,
    /// Squared ℓ1 distance ‖P − Q‖₁².
    L1Sq,
}

impl Divergence {
    /// All eight, in the order of the flag's help.
    pub const ALL: [Divergence; 8] = [
        Divergence::Kl,
        Divergence::Se,
        Divergence::L1,
        Divergence::L2,
        Divergence::Linf,
        Divergence::Js,
        Divergence::JsDist,
        Divergence::L1Sq,
    ];
}

/// ε of the safe square root √(max(x, 0) + ε²) − ε (2⁻²⁰: ε² = 2⁻⁴⁰ is
/// exact in f32, so the root is exactly 0 at x = 0).
pub const SAFE_SQRT_EPS: f64 = 1.0 / 1048576.0;

/// A batch of probability vectors `[B, K]` with their logs (log of
/// max(p, [`TINY`]) where a probability underflows to 0; those classes
/// drop out of every sum).
pub struct Probs {
    pub p: Tensor,
    pub log_p: Tensor,
}

/// The floor under probabilities before a log (f32's least normal number):
/// its gradient there is 0, so 0·log 0 terms give no NaN.
pub const TINY: f64 = 1.1754944e-38;

impl Probs {
    /// softmax(z) of logits `[B, K]`, its log from `log_softmax`.
    pub fn from_logits(z: &Tensor) -> Probs {
        let log_p = z.log_softmax(-1, Kind::Float);
        Probs {
            p: log_p.exp(),
            log_p,
        }
    }

    /// Given probability vectors `[B, K]` (e.g. smoothed one-hot targets).
    pub fn from_probs(p: &Tensor) -> Probs {
        Probs {
            p: p.shallow_clone(),
            log_p: p.clamp_min(TINY).log(),
        }
    }
}

/// √(max(x, 0) + ε²) − ε, ε = [`SAFE_SQRT_EPS`]: 0 at 0 with gradient
/// 1/(2ε) there (times the inner gradient, 0 at P = Q).
fn safe_sqrt(x: &Tensor) -> Tensor {
    (x.clamp_min(0.0) + SAFE_SQRT_EPS * SAFE_SQRT_EPS).sqrt() - SAFE_SQRT_EPS
}

fn row_sum(t: &Tensor) -> Tensor {
    t.sum_dim_intlist([1i64].as_slice(), false, None)
}

/// Σ_k p_k (log p_k − log r_k) over the classes with p_k > 0.
fn kl_terms(p: &Tensor, log_p: &Tensor, log_r: &Tensor) -> Tensor {
    let diff = (log_p - log_r).where_self(&p.gt(0.0), &p.zeros_like());
    row_sum(&(p * diff))
}

/// Per-sample D(P, Q) `[B]` of probability vectors `[B, K]` (formulas on
/// [`Divergence`]; numerical conventions in the module docs).
pub fn distance(d: Divergence, p: &Probs, q: &Probs) -> Tensor {
    let diff = || &p.p - &q.p;
    match d {
        Divergence::Kl => kl_terms(&p.p, &p.log_p, &q.log_p),
        Divergence::Se => row_sum(&diff().square()),
        Divergence::L1 => row_sum(&diff().abs()),
        Divergence::L2 => safe_sqrt(&row_sum(&diff().square())),
        Divergence::Linf => diff().abs().max_dim(1, false).0,
        Divergence::Js => js(&p.p, &q.p),
        Divergence::JsDist => safe_sqrt(&js(&p.p, &q.p)),
        Divergence::L1Sq => row_sum(&diff().abs()).square(),
    }
}

/// ½KL(P ‖ M) + ½KL(Q ‖ M), M = (P + Q)/2, all logs of the probabilities
/// themselves (so M = P bit for bit when P = Q and JS is exactly 0).
fn js(p: &Tensor, q: &Tensor) -> Tensor {
    let log = |t: &Tensor| t.clamp_min(TINY).log();
    let log_m = log(&((p + q) * 0.5));
    (kl_terms(p, &log(p), &log_m) + kl_terms(q, &log(q), &log_m)) * 0.5
}

/// Per-sample D(P, softmax(z_q)) `[B]` for P = softmax(z_p), both logits
/// `[B, K]` (the robust term of TRADES and MART).
pub fn divergence(d: Divergence, logits_p: &Tensor, logits_q: &Tensor) -> Tensor {
    distance(
        d,
        &Probs::from_logits(logits_p),
        &Probs::from_logits(logits_q),
    )
}

/// Per-sample label loss `[B]` of logits `[B, K]` against target
/// probability vectors `[B, K]`: the cross-entropy −Σ t log softmax(z) for
/// `kl` (the references' CE), D(t, softmax(z)) otherwise.
pub fn label_distance(d: Divergence, logits: &Tensor, targets: &Tensor) -> Tensor {
    match d {
        Divergence::Kl => -row_sum(&(targets * logits.log_softmax(-1, Kind::Float))),
        _ => distance(d, &Probs::from_probs(targets), &Probs::from_logits(logits)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: [f64; 3] = [0.7, 0.2, 0.1];
    const Q: [f64; 3] = [0.3, 0.3, 0.4];
    const ONE_HOT: [f64; 3] = [0.0, 1.0, 0.0];

    fn row(v: [f64; 3]) -> Tensor {
        Tensor::from_slice(&v.map(|x| x as f32)).view([1, 3])
    }

    fn kl(p: [f64; 3], q: [f64; 3]) -> f64 {
        (0..3)
            .filter(|&k| p[k] > 0.0)
            .map(|k| p[k] * (p[k] / q[k]).ln())
            .sum()
    }

    /// The formulas written out by hand in f64.
    fn by_hand(d: Divergence, p: [f64; 3], q: [f64; 3]) -> f64 {
        let diffs: Vec<f64> = (0..3).map(|k| (p[k] - q[k]).abs()).collect();
        let l1: f64 = diffs.iter().sum();
        let se: f64 = diffs.iter().map(|x| x * x).sum();
        let m = [0, 1, 2].map(|k| (p[k] + q[k]) / 2.0);
        let js = 0.5 * kl(p, m) + 0.5 * kl(q, m);
        match d {
            Divergence::Kl => kl(p, q),
            Divergence::Se => se,
            Divergence::L1 => l1,
            Divergence::L2 => se.sqrt(),
            Divergence::Linf => diffs.iter().cloned().fold(0.0, f64::max),
            Divergence::Js => js,
            Divergence::JsDist => js.sqrt(),
            Divergence::L1Sq => l1 * l1,
        }
    }

    fn value(d: Divergence, p: [f64; 3], q: [f64; 3]) -> f64 {
        distance(d, &Probs::from_probs(&row(p)), &Probs::from_probs(&row(q))).double_value(&[0])
    }

    #[test]
    fn each_loss_equals_its_hand_computed_value_and_is_zero_at_p_equal_q() {
        for d in Divergence::ALL {
            for (p, q) in [(P, Q), (Q, P), (ONE_HOT, Q), (P, ONE_HOT)] {
                if d == Divergence::Kl && q == ONE_HOT {
                    continue; // KL(P ‖ one-hot) is infinite.
                }
                let (got, want) = (value(d, p, q), by_hand(d, p, q));
                // The safe root is within ε of the true root.
                let tol = 1e-5 + 2.0 * SAFE_SQRT_EPS;
                assert!(
                    (got - want).abs() < tol,
                    "{d:?}({p:?}, {q:?}) = {got}, by hand {want}"
                );
            }
            for p in [P, Q, ONE_HOT] {
                assert_eq!(value(d, p, p), 0.0, "{d:?} at P = Q = {p:?}");
            }
        }
        // One worked value: SE and ℓ∞ of P, Q are 0.16+0.01+0.09 and 0.4.
        assert!((value(Divergence::Se, P, Q) - 0.26).abs() < 1e-6);
        assert!((value(Divergence::Linf, P, Q) - 0.4).abs() < 1e-6);
    }

    /// ∂ mean D(P, softmax(z)) / ∂z at z = log Q: finite, and 0 at P = Q.
    fn gradient(d: Divergence, p: [f64; 3], q: [f64; 3], target: bool) -> Vec<f64> {
        let z = row(q).log().set_requires_grad(true);
        let loss = if target {
            label_distance(d, &z, &row(p))
        } else {
            divergence(d, &row(p).log(), &z)
        };
        loss.sum(Kind::Float).backward();
        Vec::<f64>::try_from(z.grad().to_kind(Kind::Double).view([-1])).unwrap()
    }

    #[test]
    fn each_loss_has_a_finite_gradient_at_p_equal_q_and_at_a_one_hot_p() {
        let near_one_hot = [1e-30, 1.0 - 2e-30, 1e-30];
        for d in Divergence::ALL {
            let at_equal = gradient(d, Q, Q, false);
            assert!(
                at_equal.iter().all(|g| g.is_finite() && g.abs() < 1e-5),
                "{d:?} gradient at P = Q: {at_equal:?}"
            );
            for g in [
                gradient(d, ONE_HOT, Q, true),
                gradient(d, ONE_HOT, near_one_hot, true),
                gradient(d, P, near_one_hot, true),
            ] {
                assert!(g.iter().all(|v| v.is_finite()), "{d:?}: {g:?}");
            }
            // Away from P = Q every loss pulls Q towards the one-hot P.
            let g = gradient(d, ONE_HOT, Q, true);
            assert!(g[1] < 0.0, "{d:?} does not raise the true logit: {g:?}");
        }
    }

    #[test]
    fn the_flag_names_are_the_papers_eight() {
        use clap::ValueEnum;
        let names: Vec<String> = Divergence::ALL
            .iter()
            .map(|d| d.to_possible_value().unwrap().get_name().to_string())
            .collect();
        assert_eq!(
            names,
            ["kl", "se", "l1", "l2", "linf", "js", "js-dist", "l1-sq"]
        );
        for (d, name) in Divergence::ALL.iter().zip(&names) {
            assert_eq!(serde_json::to_value(d).unwrap(), name.as_str());
        }
    }
}
