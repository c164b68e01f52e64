//! FAB-T, the targeted Fast Adaptive Boundary attack (Croce & Hein 2020,
//! "Minimally distorted adversarial examples with a fast adaptive boundary
//! attack"), with AutoAttack `standard`'s settings: 100 iterations,
//! α_max = 0.1, η = 1.05, β = 0.9, one restart (no random start), targets
//! the min(9, C − 1) most likely other classes at the clean point.
//!
//! Each iteration linearises the difference of logits z_t − z_y at the
//! current iterate, projects both the iterate and the clean point onto that
//! hyperplane intersected with the [0,1] box (minimal Lp step,
//! [`project_hyperplane_box`]), moves to a convex combination of the two
//! (weight α = ‖d₁‖/(‖d₁‖ + ‖d₂‖) ≤ α_max on the clean point's projection,
//! both overshot by η) and, once misclassified, records the point if it is
//! the closest so far and steps back towards the clean point by β.
use super::{
    fooled_mask, logits_no_grad, mask_indices, per_sample_norm, select_rows, Norm, Threat,
};
use crate::models::Model;
use tch::{Kind, Tensor};

/// Settings of FAB.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FabConfig {
    pub norm: Norm,
    pub n_iter: usize,
    pub alpha_max: f64,
    pub eta: f64,
    pub beta: f64,
}

impl FabConfig {
    /// AutoAttack's settings.
    pub fn standard(norm: Norm) -> FabConfig {
        FabConfig {
            norm,
            n_iter: 100,
            alpha_max: 0.1,
            eta: 1.05,
            beta: 0.9,
        }
    }
}

/// Minimal-norm steps d (rows of `[N, D]`) with wᵀ(t + d) = b and
/// 0 ≤ t + d ≤ 1, for the L∞ or L2 norm. Where the box makes the hyperplane
/// unreachable, d moves every coordinate as far as the box allows in the
/// direction that changes wᵀz towards b.
///
/// Both norms reduce to one water-filling problem: moving coordinate i by
/// its share of a level λ gains s_i·min(λ, β_i) in wᵀz, with (L∞) β_i the
/// room the box leaves in the helpful direction and s_i = |w_i|, or (L2)
/// β_i = room_i/|w_i| and s_i = w_i². The smallest λ whose total gain is
/// the required |b − wᵀt| is found by sorting the β_i.
pub fn project_hyperplane_box(t: &Tensor, w: &Tensor, b: &Tensor, norm: Norm) -> Tensor {
    let kind = t.kind();
    let t = t.to_kind(Kind::Double);
    let w = w.to_kind(Kind::Double);
    let b = b.to_kind(Kind::Double);
    let d = t.size()[1];
    let r = &b - (&w * &t).sum_dim_intlist([1i64].as_slice(), false, None);
    let wp = &w * r.sign().unsqueeze(1);
    let need = r.abs().unsqueeze(1);
    let room = (-&t + 1.0)
        .where_self(&wp.gt(0.0), &t.where_self(&wp.lt(0.0), &t.zeros_like()))
        .clamp_min(0.0);
    let aw = wp.abs();
    let (breaks, slope) = match norm {
        Norm::Linf => (room.shallow_clone(), aw.shallow_clone()),
        Norm::L2 => {
            let nz = aw.gt(1e-12);
            let big = aw.full_like(1e30);
            (
                (&room / aw.clamp_min(1e-12)).where_self(&nz, &big),
                aw.square().where_self(&nz, &aw.zeros_like()),
            )
        }
    };
    let (sorted, order) = breaks.sort(1, false);
    let s = slope.gather(1, &order, false);
    let saturated = &s * &sorted;
    let below = saturated.cumsum(1, Kind::Double);
    let s_cum = s.cumsum(1, Kind::Double);
    let s_tail = s_cum.select(1, d - 1).unsqueeze(1) - &s_cum;
    let gain_at_break = &below + &sorted * &s_tail;
    let first =
        gain_at_break
            .lt_tensor(&need)
            .sum_dim_intlist([1i64].as_slice(), true, Kind::Int64);
    let feasible = first.lt(d);
    let k = first.clamp_max(d - 1);
    let before = (&below - &saturated).gather(1, &k, false);
    let tail = (&s_tail + &s).gather(1, &k, false);
    let level = ((&need - before) / tail.clamp_min(1e-300))
        .clamp_min(0.0)
        .where_self(&feasible, &need.full_like(1e300));
    let magnitude = match norm {
        Norm::Linf => level.minimum(&room),
        Norm::L2 => (&level * &aw).minimum(&room),
    };
    (magnitude * wp.sign()).to_kind(kind)
}

fn flat_norm(t: &Tensor, norm: Norm) -> Tensor {
    per_sample_norm(t, norm)
}

/// One targeted FAB run towards class `target` (per sample). Returns the
/// closest misclassified point found for each sample (the clean point where
/// none) and its distance ‖x_adv − x‖ (+∞ where none).
pub fn fab_targeted_run(
    model: &Model,
    x: &Tensor,
    y: &Tensor,
    target: &Tensor,
    cfg: &FabConfig,
) -> (Tensor, Tensor) {
    let x = x.detach();
    let shape = x.size();
    let n = shape[0];
    let x0 = x.view([n, -1]);
    let mut x1 = x0.copy();
    let mut best = x0.copy();
    let mut res = Tensor::full([n], f64::INFINITY, (Kind::Float, x.device()));
    for _ in 0..cfg.n_iter {
        let xa = x1.view(shape.as_slice()).detach().set_requires_grad(true);
        let logits = model.forward_t(&xa, false);
        let zy = logits.gather(1, &y.unsqueeze(1), false).squeeze_dim(1);
        let zt = logits.gather(1, &target.unsqueeze(1), false).squeeze_dim(1);
        let df = zt - zy;
        let dg = Tensor::run_backward(&[df.sum(None)], &[&xa], false, false)
            .pop()
            .expect("one gradient")
            .view([n, -1]);
        let _g = tch::no_grad_guard();
        let df = df.detach();
        let b = -&df + (&dg * &x1).sum_dim_intlist([1i64].as_slice(), false, None);
        let d3 = project_hyperplane_box(
            &Tensor::cat(&[&x1, &x0], 0),
            &Tensor::cat(&[&dg, &dg], 0),
            &Tensor::cat(&[&b, &b], 0),
            cfg.norm,
        );
        let d1 = d3.narrow(0, 0, n);
        let d2 = d3.narrow(0, n, n);
        let a0 = flat_norm(&d3, cfg.norm).clamp_min(1e-8);
        let a1 = a0.narrow(0, 0, n);
        let a2 = a0.narrow(0, n, n);
        let alpha = (&a1 / (&a1 + &a2)).clamp(0.0, cfg.alpha_max).unsqueeze(1);
        x1 = ((&x1 + &d1 * cfg.eta) * (-&alpha + 1.0) + (&x0 + &d2 * cfg.eta) * &alpha)
            .clamp(0.0, 1.0);
        let is_adv = fooled_mask(&model.forward_t(&x1.view(shape.as_slice()), false), y);
        let dist = flat_norm(&(&x1 - &x0), cfg.norm);
        let better = is_adv.logical_and(&dist.lt_tensor(&res));
        best = select_rows(&better, &x1, &best);
        res = dist.where_self(&better, &res);
        x1 = select_rows(&is_adv, &(&x0 + (&x1 - &x0) * cfg.beta), &x1);
    }
    (best.view(shape.as_slice()), res)
}

/// FAB-T as AutoAttack runs it: for each target (most likely other classes
/// first) one run on the points not yet fooled; a point counts as fooled
/// when a misclassified point within ε was found. The returned batch is
/// inside the threat set (the clean point where nothing was found).
pub fn fab_t(model: &Model, x: &Tensor, y: &Tensor, threat: &Threat) -> (Tensor, Tensor) {
    let cfg = FabConfig::standard(threat.norm);
    let logits = logits_no_grad(model, x);
    let order = logits.argsort(1, true);
    let mut adv = x.detach().copy();
    let mut fooled = fooled_mask(&logits, y);
    for rank in 1..=super::apgd::n_targets(logits.size()[1]) {
        let idx = mask_indices(&fooled.logical_not());
        if idx.numel() == 0 {
            break;
        }
        let (xs, ys) = (x.index_select(0, &idx), y.index_select(0, &idx));
        let target = order.select(1, rank).index_select(0, &idx);
        let (a, dist) = fab_targeted_run(model, &xs, &ys, &target, &cfg);
        // Within ε up to float rounding; projecting removes the rounding.
        let ok = dist.le(threat.eps * (1.0 + 1e-6));
        let a = threat.project(&a, &xs);
        let ok = ok.logical_and(&fooled_mask(&logits_no_grad(model, &a), &ys));
        adv = adv.index_copy(0, &idx, &select_rows(&ok, &a, &xs));
        fooled = fooled.index_copy(0, &idx, &ok);
    }
    (adv, fooled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn brute_check(norm: Norm) {
        tch::manual_seed(11);
        let n = 64;
        let dim = 20;
        let t = Tensor::rand([n, dim], (Kind::Double, Device::Cpu)) * 0.6 + 0.2;
        let w = Tensor::randn([n, dim], (Kind::Double, Device::Cpu));
        let b = (&w * &t).sum_dim_intlist([1i64].as_slice(), false, None)
            + Tensor::randn([n], (Kind::Double, Device::Cpu)) * 0.5;
        let d = project_hyperplane_box(&t, &w, &b, norm);
        let z = &t + &d;
        // On the hyperplane (where reachable) and in the box.
        let lhs = (&w * &z).sum_dim_intlist([1i64].as_slice(), false, None);
        let err = (&lhs - &b).abs().max().double_value(&[]);
        assert!(err < 1e-9, "{norm:?}: off the hyperplane by {err}");
        assert!(z.min().double_value(&[]) >= -1e-12 && z.max().double_value(&[]) <= 1.0 + 1e-12);
        // Minimal: no random feasible point is closer.
        let norms = per_sample_norm(&d, norm);
        for _ in 0..200 {
            let dir = Tensor::randn([n, dim], (Kind::Double, Device::Cpu)) * 0.05;
            // Move along the hyperplane: remove the w component.
            let proj = (&dir * &w).sum_dim_intlist([1i64].as_slice(), true, None)
                / w.square().sum_dim_intlist([1i64].as_slice(), true, None);
            let other = &z + &dir - &w * proj;
            let inside = other.ge(0.0).logical_and(&other.le(1.0)).all_dim(1, false);
            let closer = per_sample_norm(&(&other - &t), norm).lt_tensor(&(&norms - 1e-9));
            assert_eq!(
                closer
                    .logical_and(&inside)
                    .sum(Kind::Int64)
                    .int64_value(&[]),
                0,
                "{norm:?}: a feasible point is closer"
            );
        }
    }

    #[test]
    fn hyperplane_projection_is_feasible_and_minimal() {
        brute_check(Norm::Linf);
        brute_check(Norm::L2);
    }

    #[test]
    fn box_binding_projection_matches_closed_form() {
        // w = (1, 1), t = (0.9, 0.1), target wᵀz = 1.5: L∞ needs +0.25 on
        // both, but the first can move only 0.1, so λ = 0.4 on the second.
        let t = Tensor::from_slice(&[0.9f64, 0.1]).view([1, 2]);
        let w = Tensor::from_slice(&[1.0f64, 1.0]).view([1, 2]);
        let b = Tensor::from_slice(&[1.5f64]);
        let d = project_hyperplane_box(&t, &w, &b, Norm::Linf);
        let expected = Tensor::from_slice(&[0.1f64, 0.4]).view([1, 2]);
        assert!(d.allclose(&expected, 1e-12, 1e-12, false), "{d}");
        let d = project_hyperplane_box(&t, &w, &b, Norm::L2);
        assert!(d.allclose(&expected, 1e-12, 1e-12, false), "{d}");
    }
}
