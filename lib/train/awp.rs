//! Adversarial weight perturbation (Wu et al. 2020, docs/METHOD.md, "Training methods and SCORE's losses"): before the
//! step, each weight tensor w of dim > 1 moves to w + γ·‖w‖/‖Δ‖·Δ, Δ the
//! ascent direction of the method's loss (the reference takes one SGD
//! ascent step of a proxy copy; normalising makes its step size irrelevant);
//! the gradient step is taken there and the perturbation is then removed.
use crate::models::Model;
use tch::{Kind, Tensor};

/// Guards against ‖Δ‖ = 0, as the reference's EPS does.
const NORM_FLOOR: f64 = 1e-20;

/// A perturbation in place: what `restore` needs to take it back out.
pub struct WeightPerturbation {
    weights: Vec<Tensor>,
    originals: Vec<Tensor>,
    perturbed: Vec<Tensor>,
}

/// The tensors AWP perturbs: weights (not biases or BatchNorm scales) of
/// dimension > 1, i.e. convolution and linear kernels.
pub fn perturbable(model: &Model) -> Vec<(String, Tensor)> {
    model
        .named_trainable()
        .into_iter()
        .filter(|(name, t)| name.ends_with("weight") && t.dim() > 1)
        .collect()
}

/// Perturbs `model`'s weights by γ along the normalised gradient of
/// `loss()`. BatchNorm running statistics touched by the extra forward are
/// put back, as the reference computes it on a proxy copy.
pub fn perturb(model: &Model, gamma: f64, loss: &dyn Fn() -> Tensor) -> WeightPerturbation {
    let weights: Vec<Tensor> = perturbable(model).into_iter().map(|(_, t)| t).collect();
    let buffers: Vec<(Tensor, Tensor)> = model
        .vs
        .variables()
        .into_values()
        .filter(|t| !t.requires_grad())
        .map(|t| {
            let saved = t.detach().copy();
            (t, saved)
        })
        .collect();
    let refs: Vec<&Tensor> = weights.iter().collect();
    let grads = Tensor::run_backward(&[loss()], &refs, false, false);
    let _guard = tch::no_grad_guard();
    for (mut live, saved) in buffers {
        live.copy_(&saved);
    }
    let mut originals = Vec::with_capacity(weights.len());
    let mut perturbed = Vec::with_capacity(weights.len());
    for (w, g) in weights.iter().zip(&grads) {
        originals.push(w.detach().copy());
        // γ·‖w‖/(‖g‖ + floor) as a 0-dim f64 tensor on the device (no host
        // read); the same f64 arithmetic on the f32 norms as a host scalar.
        let norm = |t: &Tensor| t.norm().to_kind(Kind::Double);
        let scale = norm(w) / (norm(g) + NORM_FLOOR) * gamma;
        let mut live = w.shallow_clone();
        let _ = live.g_add_(&(g * scale));
        perturbed.push(w.detach().copy());
    }
    WeightPerturbation {
        weights,
        originals,
        perturbed,
    }
}

/// Removes the perturbation, keeping whatever the optimiser did since:
/// w ← w_orig + (w − w_perturbed). Without a step in between this gives
/// back w_orig bit for bit (unlike subtracting γv again).
pub fn restore(p: WeightPerturbation) {
    let _guard = tch::no_grad_guard();
    for ((w, orig), pert) in p.weights.iter().zip(&p.originals).zip(&p.perturbed) {
        let update = w.detach() - pert;
        let mut live = w.shallow_clone();
        live.copy_(&(orig + update));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{Activation, Arch, ModelSpec};
    use tch::{Device, Kind};

    #[test]
    fn only_weight_tensors_of_dim_above_one_move_and_restore_is_exact() {
        tch::manual_seed(0);
        let spec = ModelSpec {
            arch: Arch::CnnSmall,
            activation: Activation::Relu,
            mlp_hidden: vec![],
            input_shape: vec![1, 8, 8],
            num_outputs: 10,
        };
        let model = Model::new(&spec, Device::Cpu, &[0.5], &[0.25]).unwrap();
        let x = Tensor::rand([16, 1, 8, 8], (Kind::Float, Device::Cpu));
        let y = Tensor::randint(10, [16], (Kind::Int64, Device::Cpu));
        let snapshot = |m: &Model| -> Vec<(String, Tensor)> {
            let mut v: Vec<(String, Tensor)> =
                m.vs.variables()
                    .into_iter()
                    .map(|(n, t)| (n, t.detach().copy()))
                    .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        let before = snapshot(&model);
        let loss = || model.forward_t(&x, true).cross_entropy_for_logits(&y);
        let gamma = 0.005;
        let p = perturb(&model, gamma, &loss);
        let during = snapshot(&model);
        let mut moved = 0;
        for ((name, a), (_, b)) in before.iter().zip(&during) {
            let is_weight = name.ends_with("weight") && a.dim() > 1;
            if is_weight {
                // ‖v‖ = γ‖w‖ exactly by construction.
                let ratio = (b - a).norm().double_value(&[]) / a.norm().double_value(&[]);
                assert!((ratio - gamma).abs() < 1e-4 * gamma, "{name}: {ratio}");
                moved += 1;
            } else {
                assert!(a.equal(b), "{name} moved (bias, BatchNorm or buffer)");
            }
        }
        assert!(moved >= 3, "no conv/linear weights found");
        restore(p);
        for ((name, a), (_, b)) in before.iter().zip(&snapshot(&model)) {
            assert!(a.equal(b), "{name} not restored exactly");
        }
    }
}
