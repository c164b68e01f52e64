//! Training against a known posterior: the objectives of SCORE §2–3
//! (Pang et al. 2022, eqs. 2–5 and Theorem 1) on `toy-score`.
//!
//! With p = p_d(y=1|·) the data's posterior and q = p_θ(y=1|·) =
//! sigmoid(f_θ(·)) the model's, and B(x) = {x′ : |x′ − x| ≤ r} (r = 1):
//!
//! - R_Standard^D = E_{p_d(x)} D(p_d(·|x) ‖ p_θ(·|x));
//! - R_Madry^D    = E_{p_d(x)} max_{x′∈B(x)} D(p_d(·|x) ‖ p_θ(·|x′));
//! - R_SCORE^D    = E_{p_d(x)} max_{x′∈B(x)} D(p_d(·|x′) ‖ p_θ(·|x′));
//! - C^D          = E_{p_d(x)} max_{x′∈B(x)} D(p_d(·|x) ‖ p_d(·|x′)),
//!   the θ-free constant of Theorem 1: |R_Madry − C| ≤ R_SCORE ≤ R_Madry + C.
//!
//! R_SCORE needs p_d(y|x′) at the perturbed point, so it exists only where
//! the posterior is known in closed form (toy-score).
//!
//! Distances in the binary case use the class-1 convention of the paper's
//! figures (its C^ℓ2 ≈ 0.12): ℓ1 = ℓ2 = |p − q|, SE = (p − q)²; on the
//! two-vectors (p, 1 − p) and (q, 1 − q) ℓ1 is 2|p − q|, ℓ2 is √2·|p − q| and
//! SE is 2(p − q)², the same objectives up to a constant factor. KL is the
//! divergence of the two Bernoulli distributions.
//!
//! The inner maximum is found either on a dense grid over B(x) (exact up to
//! the grid spacing in 1-D) or by PGD (the attack module's, on the real
//! line). The gradient is taken at the maximiser (Danskin's theorem).
mod ball;

use super::method::{Method, MethodArgs};
use crate::data::toy::{score_density, score_log_odds, SCORE_POSTERIOR_PEAK};
use crate::data::DatasetName;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// Which risk a toy-score run minimises (SCORE eqs. 2, 3, 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Objective {
    /// R_Standard: D(p_d(·|x) ‖ p_θ(·|x)).
    Standard,
    /// R_Madry: max over B(x) of D(p_d(·|x) ‖ p_θ(·|x′)).
    Madry,
    /// R_SCORE: max over B(x) of D(p_d(·|x′) ‖ p_θ(·|x′)).
    Score,
}

/// The divergence D between two binary posteriors (class-1 convention): the
/// two-class case of the methods' [`crate::train::losses::Divergence`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum BinaryDivergence {
    /// KL(Bernoulli(p) ‖ Bernoulli(q)).
    Kl,
    /// |p − q| (the two-vector ℓ1 is twice this).
    L1,
    /// |p − q| (the two-vector ℓ2 is √2 times this).
    L2,
    /// (p − q)² (the two-vector squared error is twice this).
    Se,
}

impl BinaryDivergence {
    pub const ALL: [BinaryDivergence; 4] = [
        BinaryDivergence::Kl,
        BinaryDivergence::L1,
        BinaryDivergence::L2,
        BinaryDivergence::Se,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BinaryDivergence::Kl => "kl",
            BinaryDivergence::L1 => "l1",
            BinaryDivergence::L2 => "l2",
            BinaryDivergence::Se => "se",
        }
    }

    /// The factor that turns the class-1 value into the two-vector one
    /// (1 for KL, which has no convention).
    pub fn two_vector_factor(self) -> f64 {
        match self {
            BinaryDivergence::Kl => 1.0,
            BinaryDivergence::L1 | BinaryDivergence::Se => 2.0,
            BinaryDivergence::L2 => std::f64::consts::SQRT_2,
        }
    }
}

/// How the inner maximum over B(x) is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum InnerMax {
    /// A dense grid over B(x) plus its two end points.
    Grid,
    /// PGD (sign steps, uniform start) inside B(x).
    Pgd,
}

/// Elementwise D(Bernoulli(p) ‖ Bernoulli(q)) with q = sigmoid(`logit_q`)
/// (the logit keeps KL finite where q rounds to 0 or 1).
pub fn distance(d: BinaryDivergence, p: &Tensor, logit_q: &Tensor) -> Tensor {
    let q = logit_q.sigmoid();
    match d {
        BinaryDivergence::Kl => {
            let plogp = |t: &Tensor| t * t.clamp_min(1e-30).log();
            let one_minus_p = p.ones_like() - p;
            plogp(p) + plogp(&one_minus_p)
                - p * logit_q.log_sigmoid()
                - one_minus_p * (-logit_q).log_sigmoid()
        }
        BinaryDivergence::L1 | BinaryDivergence::L2 => (p - q).abs(),
        BinaryDivergence::Se => (p - q).square(),
    }
}

/// Flags of toy-score runs (SCORE §2–3); refused on other data sets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(default)]
pub struct PosteriorArgs {
    /// toy-score only: the risk to minimise, standard (R_Standard), madry
    /// (R_Madry) or score (R_SCORE). R_SCORE compares with the posterior at
    /// the perturbed point, p_d(y|x′), so it exists only for data with a
    /// known posterior (toy-score). Default standard.
    #[arg(long, value_enum)]
    pub objective: Option<Objective>,
    /// toy-score only: the distance D in the objective: kl, l1, l2 or se,
    /// on the class-1 probability (l1 = l2 = |p − q|, se = (p − q)²; the
    /// two-vector values are 2×, √2× and 2× these). Default kl.
    #[arg(long, value_enum)]
    pub distance: Option<BinaryDivergence>,
    /// toy-score only: how the inner maximum over B(x) is found: grid (a
    /// dense grid plus the end points; default) or pgd.
    #[arg(long, value_enum)]
    pub inner_max: Option<InnerMax>,
    /// toy-score only: grid points across one ball B(x) (default 201,
    /// spacing 0.01 at r = 1). Risks logged per epoch always use the grid.
    #[arg(long)]
    pub grid_points: Option<usize>,
    /// toy-score only: PGD steps of --inner-max pgd (default 10; step size
    /// 2.5·r/steps, uniform start).
    #[arg(long)]
    pub inner_steps: Option<usize>,
    /// toy-score only: radius r of B(x) = {x′ : |x′ − x| ≤ r} (default 1).
    #[arg(long)]
    pub radius: Option<f64>,
    /// toy-score only: number of training draws from p_d(x) (default 60000,
    /// SCORE Figure 1; Figure 2 uses 6). The test split is 60000 fresh draws.
    #[arg(long)]
    pub train_size: Option<usize>,
}

/// Resolved settings of a toy-score run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PosteriorSettings {
    pub objective: Objective,
    pub distance: BinaryDivergence,
    pub inner_max: InnerMax,
    pub grid_points: usize,
    pub inner_steps: usize,
    pub radius: f64,
}

impl PosteriorArgs {
    fn any_set(&self) -> Option<&'static str> {
        [
            (self.objective.is_some(), "--objective"),
            (self.distance.is_some(), "--distance"),
            (self.inner_max.is_some(), "--inner-max"),
            (self.grid_points.is_some(), "--grid-points"),
            (self.inner_steps.is_some(), "--inner-steps"),
            (self.radius.is_some(), "--radius"),
            (self.train_size.is_some(), "--train-size"),
        ]
        .into_iter()
        .find_map(|(set, flag)| set.then_some(flag))
    }

    /// Checks the flags against the data set and fills in the defaults;
    /// `None` for data sets without a known posterior.
    pub fn resolve(&self, dataset: DatasetName) -> Result<Option<PosteriorSettings>> {
        if dataset != DatasetName::ToyScore {
            return match self.any_set() {
                Some(flag) => Err(Error::invalid(
                    flag,
                    "given",
                    format!(
                        "only --dataset toy-score takes it (its objectives need the known posterior p_d(y|x)); {dataset} does not"
                    ),
                )),
                None => Ok(None),
            };
        }
        let s = PosteriorSettings {
            objective: self.objective.unwrap_or(Objective::Standard),
            distance: self.distance.unwrap_or(BinaryDivergence::Kl),
            inner_max: self.inner_max.unwrap_or(InnerMax::Grid),
            grid_points: self.grid_points.unwrap_or(201),
            inner_steps: self.inner_steps.unwrap_or(10),
            radius: self.radius.unwrap_or(1.0),
        };
        if s.grid_points < 3 {
            return Err(Error::invalid(
                "--grid-points",
                s.grid_points,
                "must be ≥ 3",
            ));
        }
        if s.inner_steps == 0 {
            return Err(Error::invalid("--inner-steps", 0, "must be ≥ 1"));
        }
        if !(s.radius.is_finite() && s.radius > 0.0) {
            return Err(Error::invalid("--radius", s.radius, "must be > 0"));
        }
        if self.train_size.is_some_and(|n| n < 2) {
            return Err(Error::invalid(
                "--train-size",
                self.train_size.unwrap_or(0),
                "must be ≥ 2",
            ));
        }
        Ok(Some(s))
    }
}

/// Estimates of the three risks (and the posterior gap) on one sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Risks {
    pub standard: f64,
    pub madry: f64,
    pub score: f64,
    /// mean |p_θ(y=1|x) − p_d(y=1|x)| (the self-consistency gap).
    pub gap: f64,
}

/// Refuses the flags of a training method on toy-score, which trains one of
/// SCORE's objectives instead (`--objective`, `--distance`).
///
/// Errors: [`Error::InvalidArgument`] for `--method` other than standard,
/// `--clip` or `--label-smoothing` > 0.
pub fn refuse_method_flags(method: Method, robust: &MethodArgs) -> Result<()> {
    let refuse = |flag: &str, value: &dyn std::fmt::Display| {
        Err(Error::invalid(
            flag,
            value,
            "toy-score trains one of SCORE's objectives: choose it with --objective (standard, madry, score) and --distance; --method, --clip, --label-smoothing and the TASER penalty do not apply",
        ))
    };
    if method != Method::Standard {
        return refuse("--method", &format!("{method:?}").to_lowercase());
    }
    if let Some(c) = robust.clip {
        return refuse("--clip", &c);
    }
    if robust.label_smoothing > 0.0 {
        return refuse("--label-smoothing", &robust.label_smoothing);
    }
    Ok(())
}

/// The constant C^D = E_{p_d(x)}[max_{x′∈B(x)} D(p_d(·|x) ‖ p_d(·|x′))] of
/// SCORE Theorem 1 for toy-score, by quadrature (trapezoid rule, spacing
/// 10⁻³ on [−30, 30], where p_d(x) has all but 10⁻²⁰ of its mass). The
/// inner maximum is exact: p_d(y=1|·) rises to one peak at 5/3 and falls,
/// so over [x − r, x + r] it is extreme at an end point or at the peak, and
/// D(p ‖ ·) is largest at an extreme (it grows away from p on both sides).
pub fn data_constant(d: BinaryDivergence, radius: f64) -> f64 {
    let opts = (Kind::Double, Device::Cpu);
    let n = 60_001;
    let x = Tensor::linspace(-30.0, 30.0, n, opts);
    let step = 60.0 / (n - 1) as f64;
    let p = score_log_odds(&x).sigmoid();
    let peak = Tensor::full([n], SCORE_POSTERIOR_PEAK, opts);
    let peak_in_ball = (&x - SCORE_POSTERIOR_PEAK).abs().le(radius);
    let candidates = [&x - radius, &x + radius, peak.where_self(&peak_in_ball, &x)];
    let worst = candidates
        .iter()
        .map(|c| distance(d, &p, &score_log_odds(c)))
        .reduce(|a, b| a.maximum(&b))
        .expect("three candidates");
    let integrand = score_density(&x) * worst;
    let ends = integrand.get(0).double_value(&[]) + integrand.get(n - 1).double_value(&[]);
    (integrand.sum(Kind::Double).double_value(&[]) - 0.5 * ends) * step
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_l2_matches_the_papers_value_in_the_class_1_convention() {
        let c = data_constant(BinaryDivergence::L2, 1.0);
        assert!((c - 0.122).abs() <= 0.002, "C^l2 = {c}");
        // ℓ1 and ℓ2 coincide in the class-1 convention; SE is smaller than
        // ℓ2 (squares of numbers below 1); KL ≥ 2·ℓ1² (Pinsker, pointwise).
        assert_eq!(data_constant(BinaryDivergence::L1, 1.0), c);
        let se = data_constant(BinaryDivergence::Se, 1.0);
        assert!(se < c && se > 0.0);
        assert!(data_constant(BinaryDivergence::Kl, 1.0) >= 2.0 * se);
        // A larger ball can only raise the constant.
        assert!(data_constant(BinaryDivergence::L2, 2.0) > c);
    }

    #[test]
    fn c_with_exact_candidates_equals_a_brute_force_grid_over_the_ball() {
        // Brute force on a coarser x grid: 2001 points across every ball.
        let opts = (Kind::Double, Device::Cpu);
        let x = Tensor::linspace(-12.0, 12.0, 2401, opts);
        let offsets = Tensor::linspace(-1.0, 1.0, 2001, opts);
        let xp = x.view([-1, 1]) + offsets.view([1, -1]);
        let p = score_log_odds(&x).sigmoid().view([-1, 1]);
        for d in BinaryDivergence::ALL {
            let brute =
                distance(d, &p.expand_as(&xp), &score_log_odds(&xp)).amax([1i64].as_slice(), false);
            let w = score_density(&x);
            let brute_c = (&w * brute).sum(Kind::Double).double_value(&[]) * 0.01;
            let exact = data_constant(d, 1.0);
            assert!(
                (brute_c - exact).abs() < 2e-4 * exact.max(1.0),
                "{d:?}: brute force {brute_c} vs exact candidates {exact}"
            );
        }
    }

    #[test]
    fn distances_vanish_at_equality_and_grow_away_from_it() {
        let p = Tensor::from_slice(&[0.3f64; 5]);
        let q = Tensor::from_slice(&[0.05f64, 0.2, 0.3, 0.5, 0.9]);
        let logit = (&q / (q.ones_like() - &q)).log();
        for d in BinaryDivergence::ALL {
            let v: Vec<f64> = Vec::try_from(distance(d, &p, &logit)).unwrap();
            assert!(v[2].abs() < 1e-12, "{d:?} at q = p: {}", v[2]);
            assert!(
                v[0] > v[1] && v[1] > v[2] && v[3] > v[2] && v[4] > v[3],
                "{d:?}: {v:?}"
            );
        }
        // KL by hand at p = 0.3, q = 0.9.
        let kl: Vec<f64> = Vec::try_from(distance(BinaryDivergence::Kl, &p, &logit)).unwrap();
        let want = 0.3 * (0.3f64 / 0.9).ln() + 0.7 * (0.7f64 / 0.1).ln();
        assert!((kl[4] - want).abs() < 1e-12);
    }

    #[test]
    fn flags_are_refused_off_toy_score_and_checked_on_it() {
        let mut a = PosteriorArgs::default();
        assert_eq!(a.resolve(DatasetName::Digits).unwrap(), None);
        a.objective = Some(Objective::Score);
        let err = a.resolve(DatasetName::Digits).unwrap_err().to_string();
        assert!(
            err.contains("--objective") && err.contains("toy-score"),
            "{err}"
        );
        let s = a.resolve(DatasetName::ToyScore).unwrap().unwrap();
        assert_eq!(
            (s.distance, s.grid_points, s.radius),
            (BinaryDivergence::Kl, 201, 1.0)
        );
        a.radius = Some(0.0);
        assert!(a
            .resolve(DatasetName::ToyScore)
            .unwrap_err()
            .to_string()
            .contains("--radius"));
    }
}
