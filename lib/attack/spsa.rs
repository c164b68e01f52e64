//! SPSA (Uesato et al. 2018), a gradient-free attack (docs/METHOD.md, "Attacks and their budgets"): minimise the
//! margin z_y − max_{j≠y} z_j from a zero start with Adam (learning rate
//! 0.01) on the SPSA estimate of its gradient,
//! ĝ = (1/n) Σ_k (ℓ(x + δv_k) − ℓ(x − δv_k)) / (2δ) · v_k, with n = 128
//! Rademacher directions v_k and δ = 0.01, for 32 iterations; after each
//! step the perturbation is clamped to the ε-ball and x + δ to [0,1].
//! A point counts as fooled when some iterate is misclassified (that
//! iterate is returned); fooled points stop.
use super::{correct_margin, fooled_mask, mask_indices, select_rows, Threat};
use crate::models::Model;
use tch::{Kind, Tensor};

/// Settings of SPSA.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpsaConfig {
    pub threat: Threat,
    /// Finite-difference step δ.
    pub delta: f64,
    /// Adam learning rate.
    pub lr: f64,
    /// Directions per gradient estimate.
    pub nb_sample: usize,
    pub nb_iter: usize,
    /// Most model inputs per forward pass (memory bound; no effect on results).
    pub max_inputs_per_pass: usize,
}

/// Default of `attack --spsa-inputs-per-pass`.
pub const SPSA_INPUTS_PER_PASS: usize = 16384;

impl SpsaConfig {
    /// The settings of docs/METHOD.md, "Attacks and their budgets".
    pub fn standard(threat: Threat) -> SpsaConfig {
        SpsaConfig {
            threat,
            delta: 0.01,
            lr: 0.01,
            nb_sample: 128,
            nb_iter: 32,
            max_inputs_per_pass: SPSA_INPUTS_PER_PASS,
        }
    }
}

/// The SPSA estimate of ∇ₓ Σ loss at `x` with `nb_sample` Rademacher
/// directions (drawn from libtorch's generator) and step `delta`;
/// `loss` maps the logits of a batch of the same size as `x` to per-sample
/// values.
pub fn spsa_gradient(
    model: &Model,
    x: &Tensor,
    loss: &dyn Fn(&Tensor) -> Tensor,
    delta: f64,
    nb_sample: usize,
    max_inputs_per_pass: usize,
) -> Tensor {
    let _guard = tch::no_grad_guard();
    let shape = x.size();
    let b = shape[0];
    let chunk = (max_inputs_per_pass as i64 / (2 * b).max(1)).clamp(1, nb_sample as i64);
    let mut grad = x.zeros_like();
    let mut done = 0i64;
    while done < nb_sample as i64 {
        let m = chunk.min(nb_sample as i64 - done);
        let mut vshape = vec![m];
        vshape.extend(&shape);
        let v = Tensor::randint(2, vshape.as_slice(), (Kind::Float, x.device())) * 2.0 - 1.0;
        let probes = Tensor::cat(
            &[x.unsqueeze(0) + &v * delta, x.unsqueeze(0) - &v * delta],
            0,
        );
        let mut flat_shape = vec![2 * m * b];
        flat_shape.extend(&shape[1..]);
        let logits = model.forward_t(&probes.view(flat_shape.as_slice()), false);
        // The loss takes batches of size b: evaluate per probe set.
        let l = Tensor::stack(&logits.split(b, 0).iter().map(loss).collect::<Vec<_>>(), 0); // [2m, b]
        let diff = (l.narrow(0, 0, m) - l.narrow(0, m, m)) / (2.0 * delta); // [m, b]
        let mut dshape = vec![m, b];
        dshape.extend(std::iter::repeat_n(1, shape.len() - 1));
        grad += (&v * diff.view(dshape.as_slice())).sum_dim_intlist([0i64].as_slice(), false, None);
        done += m;
    }
    grad / nb_sample as f64
}

/// Runs SPSA on the batch; returns the adversarial batch (inside the threat
/// set) and the mask of points misclassified at some iterate.
pub fn spsa(model: &Model, x: &Tensor, y: &Tensor, cfg: &SpsaConfig) -> (Tensor, Tensor) {
    let _guard = tch::no_grad_guard();
    let x = x.detach();
    let (beta1, beta2, adam_eps) = (0.9, 0.999, 1e-8);
    let mut adv = x.copy();
    let mut fooled = fooled_mask(&model.forward_t(&x, false), y);
    // State of the active (not yet fooled) points.
    let mut active = mask_indices(&fooled.logical_not());
    let mut pert = x.index_select(0, &active).zeros_like();
    let mut m1 = pert.zeros_like();
    let mut m2 = pert.zeros_like();
    for t in 1..=cfg.nb_iter {
        if active.numel() == 0 {
            break;
        }
        let xa = x.index_select(0, &active);
        let ya = y.index_select(0, &active);
        let g = spsa_gradient(
            model,
            &(&xa + &pert),
            &|z: &Tensor| correct_margin(z, &ya),
            cfg.delta,
            cfg.nb_sample,
            cfg.max_inputs_per_pass,
        );
        m1 = &m1 * beta1 + &g * (1.0 - beta1);
        m2 = &m2 * beta2 + g.square() * (1.0 - beta2);
        let mhat = &m1 / (1.0 - beta1.powi(t as i32));
        let vhat = &m2 / (1.0 - beta2.powi(t as i32));
        let stepped = &pert - mhat / (vhat.sqrt() + adam_eps) * cfg.lr;
        let x_new = cfg.threat.project(&(&xa + stepped), &xa);
        pert = &x_new - &xa;
        let wrong = fooled_mask(&model.forward_t(&x_new, false), &ya);
        if wrong.any().int64_value(&[]) != 0 {
            adv = adv.index_copy(0, &active, &select_rows(&wrong, &x_new, &xa));
            fooled = fooled.index_copy(0, &active, &wrong);
            let keep = mask_indices(&wrong.logical_not());
            active = active.index_select(0, &keep);
            pert = pert.index_select(0, &keep);
            m1 = m1.index_select(0, &keep);
            m2 = m2.index_select(0, &keep);
        }
    }
    (adv, fooled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attack::{loss_and_grad, Norm};
    use crate::models::{Activation, Arch, ModelSpec};
    use tch::Device;

    #[test]
    fn spsa_gradient_points_along_the_true_gradient_on_a_smooth_model() {
        tch::manual_seed(2);
        let spec = ModelSpec {
            arch: Arch::Mlp,
            activation: Activation::Tanh,
            mlp_hidden: vec![32],
            input_shape: vec![1, 8, 8],
            num_outputs: 10,
        };
        let model = Model::new(&spec, Device::Cpu, &[0.5], &[0.3]).unwrap();
        let x = Tensor::rand([16, 1, 8, 8], (Kind::Float, Device::Cpu));
        let y = Tensor::randint(10, [16], (Kind::Int64, Device::Cpu));
        let loss = |z: &Tensor| correct_margin(z, &y);
        let (_, _, g) = loss_and_grad(&model, &x, &loss);
        let est = spsa_gradient(&model, &x, &loss, 0.01, 128, 16384);
        let (g, est) = (g.view([16, -1]), est.view([16, -1]));
        let cos = (&g * &est).sum_dim_intlist([1i64].as_slice(), false, None)
            / (g.norm_scalaropt_dim(2, [1i64].as_slice(), false)
                * est.norm_scalaropt_dim(2, [1i64].as_slice(), false));
        let min_cos = cos.min().double_value(&[]);
        assert!(min_cos >= 0.5, "cosine {cos}");
        // Chunking the directions changes nothing but memory use.
        tch::manual_seed(9);
        let a = spsa_gradient(&model, &x, &loss, 0.01, 128, 16 * 2 * 128);
        tch::manual_seed(9);
        let b = spsa_gradient(&model, &x, &loss, 0.01, 128, 16 * 2 * 128);
        assert!(a.allclose(&b, 1e-6, 1e-6, false));
    }

    #[test]
    fn spsa_stays_in_the_threat_set() {
        tch::manual_seed(4);
        let spec = ModelSpec {
            arch: Arch::Mlp,
            activation: Activation::Relu,
            mlp_hidden: vec![16],
            input_shape: vec![12],
            num_outputs: 3,
        };
        let model = Model::new(&spec, Device::Cpu, &[0.5], &[0.3]).unwrap();
        let x = Tensor::rand([20, 12], (Kind::Float, Device::Cpu));
        let y = model.forward_t(&x, false).argmax(-1, false);
        for (norm, eps) in [(Norm::Linf, 0.1), (Norm::L2, 0.5)] {
            let mut cfg = SpsaConfig::standard(Threat { norm, eps });
            cfg.nb_iter = 8;
            let (adv, fooled) = spsa(&model, &x, &y, &cfg);
            assert!(cfg.threat.contains(&adv, &x));
            let wrong = fooled_mask(&model.forward_t(&adv, false), &y);
            assert!(wrong.equal(&fooled));
        }
    }
}
