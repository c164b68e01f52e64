//! Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial
//! robustness with an ensemble of diverse parameter-free attacks"), as in
//! AutoAttack `standard` (docs/METHOD.md, "Attacks and their budgets"): 100 iterations, initial step 2ε,
//! momentum 0.75, checkpoints p₀ = 0, p₁ = 0.22,
//! p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06), at which the step of a
//! point is halved and its iterate restarted from its best point when
//!
//! 1. the loss rose in at most a fraction ρ = 0.75 of the steps since the
//!    previous checkpoint (the reference code's test is `≤`, the paper's
//!    `<`; we follow the code, whose numbers the paper reports), or
//! 2. the step was not halved at the previous checkpoint and the best loss
//!    has not improved since.
//!
//! APGD-CE maximises the cross-entropy; APGD-T maximises the targeted DLR
//! loss −(z_y − z_t)/(z_π1 − (z_π3 + z_π4)/2) for each of the
//! min(9, classes − 1) most likely other classes t (one restart each, only
//! on points not yet fooled). L∞ and L2; the projection and the steepest
//! ascent directions are [`Threat::project`] and
//! [`Threat::ascent_direction`].
use super::{
    cross_entropy, fooled_mask, logits_no_grad, loss_and_grad, mask_indices, per_sample,
    select_rows, Threat,
};
use crate::models::Model;
use tch::{Kind, Tensor};

/// Settings of an APGD run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ApgdConfig {
    pub threat: Threat,
    /// Iterations N_iter (100).
    pub n_iter: usize,
    /// Threshold ρ of condition 1 (0.75).
    pub rho: f64,
    /// Momentum α (0.75; the first step uses none).
    pub momentum: f64,
}

impl ApgdConfig {
    /// AutoAttack `standard`'s settings.
    pub fn standard(threat: Threat) -> ApgdConfig {
        ApgdConfig {
            threat,
            n_iter: 100,
            rho: 0.75,
            momentum: 0.75,
        }
    }
}

/// Lengths of the checkpoint intervals in iterations: the first is
/// ⌊0.22·N⌋, each next one 3% of N shorter, never below 6% of N (each at
/// least 1), as in the reference code.
pub fn interval_lengths(n_iter: usize) -> (usize, usize, usize) {
    let first = ((0.22 * n_iter as f64) as usize).max(1);
    let decrease = ((0.03 * n_iter as f64) as usize).max(1);
    let min = ((0.06 * n_iter as f64) as usize).max(1);
    (first, decrease, min)
}

/// The iterations (1-based counts) after which a checkpoint test is made.
pub fn checkpoints(n_iter: usize) -> Vec<usize> {
    let (mut k, decrease, min) = interval_lengths(n_iter);
    let mut at = Vec::new();
    let mut i = k;
    while i <= n_iter {
        at.push(i);
        k = k.saturating_sub(decrease).max(min);
        i += k;
    }
    at
}

/// One APGD run from a random start in the ball, maximising `loss`
/// (per-sample, of the logits). Returns the last misclassified iterate of
/// each point (its start where it never was) and the mask of points
/// misclassified at some iterate.
pub fn apgd_run(
    model: &Model,
    x: &Tensor,
    y: &Tensor,
    cfg: &ApgdConfig,
    loss: &dyn Fn(&Tensor) -> Tensor,
) -> (Tensor, Tensor) {
    let x = x.detach();
    let n = x.size()[0];
    let threat = cfg.threat;
    let mut x_adv = threat.random_start(&x);
    let (logits, loss_now, mut grad) = loss_and_grad(model, &x_adv, loss);
    let mut fooled = fooled_mask(&logits, y);
    let mut x_best_adv = x_adv.copy();
    let mut x_best = x_adv.copy();
    let mut grad_best = grad.copy();
    let mut loss_best = loss_now.copy();
    let mut step = Tensor::full([n], 2.0 * threat.eps, (Kind::Float, x.device()));
    let mut x_prev = x_adv.copy();
    let (mut k, decrease, k_min) = interval_lengths(cfg.n_iter);
    let mut since_check = 0usize;
    let mut history: Vec<Tensor> = vec![loss_now];
    let mut loss_best_last_check = loss_best.copy();
    let mut reduced_last_check = Tensor::ones([n], (Kind::Bool, x.device()));
    for i in 0..cfg.n_iter {
        let a = if i > 0 { cfg.momentum } else { 1.0 };
        let z = {
            let _g = tch::no_grad_guard();
            let velocity = &x_adv - &x_prev;
            x_prev = x_adv.shallow_clone();
            let z = threat.project(
                &(&x_adv + threat.ascent_direction(&grad) * per_sample(&step, &x)),
                &x,
            );
            threat.project(&(&x_adv + (&z - &x_adv) * a + velocity * (1.0 - a)), &x)
        };
        x_adv = z;
        let (logits, loss_now, g) = loss_and_grad(model, &x_adv, loss);
        grad = g;
        let _g = tch::no_grad_guard();
        let wrong = fooled_mask(&logits, y);
        fooled = fooled.logical_or(&wrong);
        x_best_adv = select_rows(&wrong, &x_adv, &x_best_adv);
        let improved = loss_now.gt_tensor(&loss_best);
        x_best = select_rows(&improved, &x_adv, &x_best);
        grad_best = select_rows(&improved, &grad, &grad_best);
        loss_best = loss_now.where_self(&improved, &loss_best);
        history.push(loss_now);
        since_check += 1;
        if since_check == k {
            // Condition 1: share of the last k steps that raised the loss.
            let len = history.len();
            let mut increases = Tensor::zeros([n], (Kind::Float, x.device()));
            for c in 0..k {
                increases += history[len - 1 - c]
                    .gt_tensor(&history[len - 2 - c])
                    .to_kind(Kind::Float);
            }
            let cond1 = increases.le(k as f64 * cfg.rho);
            // Condition 2: step unchanged and best loss unchanged.
            let cond2 = reduced_last_check
                .logical_not()
                .logical_and(&loss_best_last_check.ge_tensor(&loss_best));
            let reduce = cond1.logical_or(&cond2);
            reduced_last_check = reduce.copy();
            loss_best_last_check = loss_best.copy();
            step = (&step / 2.0).where_self(&reduce, &step);
            x_adv = select_rows(&reduce, &x_best, &x_adv);
            grad = select_rows(&reduce, &grad_best, &grad);
            k = k.saturating_sub(decrease).max(k_min);
            since_check = 0;
        }
    }
    (x_best_adv, fooled)
}

/// Targeted DLR loss −(z_y − z_t)/(z_π1 − (z_π3 + z_π4)/2 + 10⁻¹²), z_π the
/// sorted logits. With fewer than 4 classes the denominator falls back to
/// the spread z_π1 − z_πC.
pub fn dlr_targeted(logits: &Tensor, y: &Tensor, target: &Tensor) -> Tensor {
    let classes = logits.size()[1];
    let (sorted, _) = logits.sort(1, true);
    let zy = logits.gather(1, &y.unsqueeze(1), false).squeeze_dim(1);
    let zt = logits.gather(1, &target.unsqueeze(1), false).squeeze_dim(1);
    let denom = if classes >= 4 {
        sorted.select(1, 0) - (sorted.select(1, 2) + sorted.select(1, 3)) * 0.5
    } else {
        sorted.select(1, 0) - sorted.select(1, classes - 1)
    };
    -(zy - zt) / (denom + 1e-12)
}

/// APGD-CE on the points of `x` that are classified correctly. Returns the
/// adversarial batch (x where nothing was found) and the fooled mask
/// (clean-misclassified points count as fooled).
pub fn apgd_ce(model: &Model, x: &Tensor, y: &Tensor, cfg: &ApgdConfig) -> (Tensor, Tensor) {
    let mut adv = x.detach().copy();
    let mut fooled = fooled_mask(&logits_no_grad(model, x), y);
    let idx = mask_indices(&fooled.logical_not());
    if idx.numel() > 0 {
        let (xs, ys) = (x.index_select(0, &idx), y.index_select(0, &idx));
        let (a, f) = apgd_run(model, &xs, &ys, cfg, &|z: &Tensor| cross_entropy(z, &ys));
        adv = adv.index_copy(0, &idx, &select_rows(&f, &a, &xs));
        fooled = fooled.index_copy(0, &idx, &f);
    }
    (adv, fooled)
}

/// Number of target classes of the targeted attacks: min(9, classes − 1).
pub fn n_targets(classes: i64) -> i64 {
    9.min(classes - 1).max(0)
}

/// APGD-T: for each of the n_targets(C) most likely other classes at the
/// clean point (in decreasing order), one APGD run on the targeted DLR loss
/// over the points not fooled yet.
pub fn apgd_t(model: &Model, x: &Tensor, y: &Tensor, cfg: &ApgdConfig) -> (Tensor, Tensor) {
    let logits = logits_no_grad(model, x);
    let order = logits.argsort(1, true);
    let mut adv = x.detach().copy();
    let mut fooled = fooled_mask(&logits, y);
    for rank in 1..=n_targets(logits.size()[1]) {
        let idx = mask_indices(&fooled.logical_not());
        if idx.numel() == 0 {
            break;
        }
        let (xs, ys) = (x.index_select(0, &idx), y.index_select(0, &idx));
        let target = order.select(1, rank).index_select(0, &idx);
        let (a, f) = apgd_run(model, &xs, &ys, cfg, &|z: &Tensor| {
            dlr_targeted(z, &ys, &target)
        });
        adv = adv.index_copy(0, &idx, &select_rows(&f, &a, &xs));
        fooled = fooled.index_copy(0, &idx, &f);
    }
    (adv, fooled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attack::Norm;
    use crate::models::{Activation, Arch, ModelSpec};
    use tch::Device;

    #[test]
    fn checkpoints_follow_the_papers_schedule() {
        // p = 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99.
        assert_eq!(checkpoints(100), vec![22, 41, 57, 70, 80, 87, 93, 99]);
        assert_eq!(interval_lengths(100), (22, 3, 6));
        assert_eq!(interval_lengths(10), (2, 1, 1));
    }

    #[test]
    fn apgd_stays_in_the_threat_set_and_beats_the_clean_point() {
        tch::manual_seed(5);
        let spec = ModelSpec {
            arch: Arch::Mlp,
            activation: Activation::Tanh,
            mlp_hidden: vec![32],
            input_shape: vec![1, 6, 6],
            num_outputs: 5,
        };
        let model = Model::new(&spec, Device::Cpu, &[0.5], &[0.25]).unwrap();
        let x = Tensor::rand([40, 1, 6, 6], (Kind::Float, Device::Cpu));
        let y = logits_no_grad(&model, &x).argmax(-1, false);
        for (norm, eps) in [(Norm::Linf, 0.05), (Norm::L2, 0.3)] {
            let cfg = ApgdConfig::standard(Threat { norm, eps });
            for (adv, fooled) in [apgd_ce(&model, &x, &y, &cfg), apgd_t(&model, &x, &y, &cfg)] {
                assert!(cfg.threat.contains(&adv, &x), "{norm:?}");
                // Flags agree with the returned points.
                let wrong = fooled_mask(&logits_no_grad(&model, &adv), &y);
                assert!(wrong.equal(&fooled), "{norm:?}");
                assert!(fooled.sum(Kind::Int64).int64_value(&[]) > 0, "{norm:?}");
            }
        }
    }
}
