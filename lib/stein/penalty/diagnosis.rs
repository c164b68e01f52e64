//! The penalty's diagnosis of one model on one probe batch: what the TASER
//! penalty R is made of, how much of its one-probe estimate is Hutchinson
//! noise, and how large its controls are beside it (`report diagnose`).
//!
//! On a batch (xᵢ, yᵢ), i = 1…B, in pixel coordinates, with scores sᵢ, the
//! probe m (the smooth margin by default) and R(u) = (1/B) Σᵢ (uᵢ − c)²
//! (c the batch mean, or 0 with `Center::None`):
//!
//! ```text
//!   grad-norm penalty  G   = (1/B) Σᵢ ‖∇ₓm(xᵢ)‖²        (--reg grad-norm)
//!   first-order part   R_f = R(sᵀ∇ₓm)                    (--stein-order first-order; exact)
//!   Laplacian part     R_Δ = R(Δm)                       (the penalty with s ≡ 0, --zero-scores)
//!   penalty            R   = R(Δm + sᵀ∇ₓm)
//! ```
//!
//! R and R_Δ are estimated without bias from K one-probe residuals with
//! independent Rademacher probes ([`ProbeNoise`]): each probe's vᵀ∇²m v is
//! computed once and shared by every score. Beside R: the expectation of
//! Algorithm 1's one-probe R̂ (R + V) and the share V/(R + V) of it that is
//! probe noise; R with another sample's score (permuted) and with a second
//! score file (e.g. scores at noised inputs); mean cos(s, ∇ₓm); and the λ a
//! control needs to match TASER at λ₀ = 1, R / P_control (its
//! `--lambda-match` at the model's weights, with the unbiased R).
//!
//! R = R_f + R_Δ + 2·Cov(sᵀ∇ₓm, Δm): the parts do not add up to R unless
//! the first-order and Laplacian terms are uncorrelated.
use super::controls;
use super::instruments::ProbeNoise;
use crate::error::{Error, Result};
use crate::stein::{self, Center, Difference, Laplacian, Mode, Order, ResidualOptions};
use serde::Serialize;
use tch::{Kind, Tensor};

/// The scores a diagnosis compares, each shaped like the batch's inputs.
pub struct Scores<'a> {
    /// The run's scores s(xᵢ).
    pub real: &'a Tensor,
    /// Another sample's score for each sample (`--score-permute`).
    pub permuted: Option<&'a Tensor>,
    /// Scores from a second source (e.g. the score at noised inputs).
    pub noised: Option<&'a Tensor>,
}

/// The diagnosis of one batch (penalties before λ, in pixel units).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Diagnosis {
    /// G = mean ‖∇ₓm‖², the grad-norm control's penalty.
    pub grad_norm_penalty: f64,
    /// mean cos(s, ∇ₓm) with the real scores.
    pub score_grad_cosine: f64,
    /// R_f = R(sᵀ∇ₓm), the first-order part.
    pub penalty_first_order: f64,
    /// R_Δ = R(Δm), the Laplacian part: the penalty with zero scores (unbiased).
    pub penalty_zero_scores: f64,
    /// R with the real scores (unbiased).
    pub penalty: f64,
    /// E[R̂] of the plain one-probe estimator (Algorithm 1, K = 1): R + V.
    pub penalty_plain: f64,
    /// V/(R + V): the share of the one-probe R̂ that is probe noise.
    pub noise_share: f64,
    /// R with permuted scores (unbiased).
    pub penalty_permuted: Option<f64>,
    /// R with the second score source (unbiased).
    pub penalty_noised: Option<f64>,
}

impl Diagnosis {
    /// The λ of the grad-norm control that matches TASER at λ₀ = 1: R / G.
    pub fn match_grad_norm(&self) -> f64 {
        self.penalty / self.grad_norm_penalty
    }

    /// The λ of the permuted-score control that matches TASER at λ₀ = 1.
    pub fn match_permuted(&self) -> Option<f64> {
        self.penalty_permuted.map(|p| self.penalty / p)
    }

    /// The λ of the zero-score control that matches TASER at λ₀ = 1.
    pub fn match_zero_scores(&self) -> f64 {
        self.penalty / self.penalty_zero_scores
    }
}

/// Diagnoses the probe `m` (per-sample values `[B]` of inputs `[B, …]` and
/// labels `[B]`) on the batch `x`, `y` with the Rademacher `probes`
/// `[K, B, …]` (K ≥ 2), centred by `center` (`Batch` or `None`).
///
/// Errors: [`Error::InvalidArgument`] for fewer than 2 probes, a global
/// centre, or a score not shaped like `x`; the residual's (autograd).
pub fn diagnose<F>(
    m: F,
    x: &Tensor,
    y: &Tensor,
    scores: &Scores,
    probes: &Tensor,
    center: Center,
) -> Result<Diagnosis>
where
    F: Fn(&Tensor, &Tensor) -> Tensor,
{
    let k = probes.size()[0];
    if k < 2 {
        return Err(Error::invalid(
            "probes",
            k,
            "the diagnosis estimates the probe noise from ≥ 2 Hutchinson probes",
        ));
    }
    if center == Center::Global {
        return Err(Error::invalid(
            "--center",
            "global",
            "the diagnosis takes the batch centre or none",
        ));
    }
    let (_, grad) = controls::input_gradient(&m, x, y, false)?;
    let grad = grad.to_kind(Kind::Double);
    let one = ResidualOptions {
        order: Order::Full,
        mode: Mode::Autograd,
        laplacian: Laplacian::Hutchinson,
        probes: 1,
        fd_step: 0.0,
        difference: Difference::Central,
    };
    let zero = x.zeros_like();
    let mut laplacians = Vec::with_capacity(k as usize);
    for i in 0..k {
        let p = probes.narrow(0, i, 1);
        let r = stein::residual(&m, x, y, &zero, &one, Some(&p), false)?;
        laplacians.push(r.residual.to_kind(Kind::Double));
    }
    let first_order = |s: &Tensor| -> Result<Tensor> {
        if s.size() != x.size() {
            return Err(Error::invalid(
                "score",
                format!("{:?}", s.size()),
                format!("must have the shape of the inputs {:?}", x.size()),
            ));
        }
        let dot = s.to_kind(Kind::Double) * &grad;
        Ok(dot.flatten(1, -1).sum_dim_intlist(1, false, Kind::Double))
    };
    let noise = |f: &Tensor| {
        let singles: Vec<Tensor> = laplacians.iter().map(|l| l + f).collect();
        ProbeNoise::of_singles(&singles, center, 0.0)
    };
    let f = first_order(scores.real)?;
    let real = noise(&f);
    let other = |s: Option<&Tensor>| -> Result<Option<f64>> {
        Ok(match s {
            Some(s) => Some(noise(&first_order(s)?).unbiased),
            None => None,
        })
    };
    let penalty_of = |u: &Tensor| estimator_free_penalty(u, center);
    Ok(Diagnosis {
        grad_norm_penalty: controls::grad_norm_penalty(&grad).double_value(&[]),
        score_grad_cosine: controls::mean_cosine(scores.real, &grad),
        penalty_first_order: penalty_of(&f),
        penalty_zero_scores: noise(&f.zeros_like()).unbiased,
        penalty: real.unbiased,
        penalty_plain: real.one_probe,
        noise_share: real.share,
        penalty_permuted: other(scores.permuted)?,
        penalty_noised: other(scores.noised)?,
    })
}

/// R(u) of a residual part without probe noise.
fn estimator_free_penalty(u: &Tensor, center: Center) -> f64 {
    super::centred_penalty(u, center, false, 0.0).double_value(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// m(x) = ½ xᵀAx + aᵀx with A = diag(`d`) on a batch `[B, D]`.
    fn quadratic(d: &Tensor, a: &Tensor, x: &Tensor) -> Tensor {
        ((x * x * d).sum_dim_intlist(1, false, Kind::Double) * 0.5)
            + (x * a).sum_dim_intlist(1, false, Kind::Double)
    }

    fn batch() -> (Tensor, Tensor, Tensor, Tensor, Tensor) {
        tch::manual_seed(11);
        let opts = (Kind::Double, tch::Device::Cpu);
        let d = Tensor::from_slice(&[1.5, -0.5, 2.0, 0.25]).to_kind(Kind::Double);
        let a = Tensor::from_slice(&[0.3, -1.0, 0.0, 0.7]).to_kind(Kind::Double);
        let x = Tensor::randn([32, 4], opts);
        let s = Tensor::randn([32, 4], opts);
        let probes = stein::rademacher(8, &x);
        (d, a, x, s, probes)
    }

    /// With A diagonal every Rademacher probe gives vᵀAv = tr A exactly,
    /// so each part has its closed form: ∇m = Ax + a, Δm = tr A, no noise.
    #[test]
    fn a_quadratic_model_gives_its_closed_form_parts() {
        let (d, a, x, s, probes) = batch();
        let y = Tensor::zeros([32], (Kind::Int64, tch::Device::Cpu));
        let grad = &x * &d + &a;
        let f = (&s * &grad).sum_dim_intlist(1, false, Kind::Double);
        let tr = d.sum(Kind::Double).double_value(&[]);
        let mean = |t: Tensor| t.mean(Kind::Double).double_value(&[]);
        let g = mean(grad.square().sum_dim_intlist(1, false, Kind::Double));
        let scores = Scores {
            real: &s,
            permuted: Some(&s.flip([0])),
            noised: None,
        };
        let m = |xx: &Tensor, _: &Tensor| quadratic(&d, &a, xx);
        let none = diagnose(m, &x, &y, &scores, &probes, Center::None).unwrap();
        let close = |got: f64, want: f64| (got - want).abs() <= 1e-9 * want.abs().max(1.0);
        assert!(close(none.grad_norm_penalty, g), "{none:?} vs G = {g}");
        assert!(close(none.penalty_first_order, mean(f.square())));
        assert!(close(none.penalty_zero_scores, tr * tr));
        assert!(close(none.penalty, mean((&f + tr).square())));
        assert!(close(none.penalty_plain, none.penalty) && none.noise_share.abs() < 1e-12);
        let fp = (s.flip([0]) * &grad).sum_dim_intlist(1, false, Kind::Double);
        assert!(close(
            none.penalty_permuted.unwrap(),
            mean((fp + tr).square())
        ));
        assert!(close(none.match_grad_norm(), mean((&f + tr).square()) / g));
        // Batch centring removes the constant Laplacian: R = R_f = Var(sᵀ∇m).
        let m = |xx: &Tensor, _: &Tensor| quadratic(&d, &a, xx);
        let batch = diagnose(m, &x, &y, &scores, &probes, Center::Batch).unwrap();
        let var = mean((&f - f.mean(Kind::Double)).square());
        assert!(close(batch.penalty, var) && close(batch.penalty_first_order, var));
        assert!(batch.penalty_zero_scores.abs() < 1e-9, "{batch:?}");
    }

    #[test]
    fn one_probe_or_a_global_centre_is_refused() {
        let (d, a, x, s, probes) = batch();
        let y = Tensor::zeros([32], (Kind::Int64, tch::Device::Cpu));
        let scores = Scores {
            real: &s,
            permuted: None,
            noised: None,
        };
        let m = |xx: &Tensor, _: &Tensor| quadratic(&d, &a, xx);
        let one = probes.narrow(0, 0, 1);
        assert!(diagnose(m, &x, &y, &scores, &one, Center::Batch).is_err());
        assert!(diagnose(m, &x, &y, &scores, &probes, Center::Global).is_err());
    }
}
