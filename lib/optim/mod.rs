//! SGD (momentum, Nesterov) and Adam with L2 weight decay, following
//! PyTorch's `torch.optim.SGD` and `torch.optim.Adam` update rules exactly.
//! Implemented here rather than through libtorch's C++ optimisers so that
//! their state (momentum buffers, moments, step count) can be saved and
//! restored: a resumed run then ends bit-identical to an uninterrupted one.
pub mod flat;
pub mod schedule;

use flat::FlatGroup;

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Which optimiser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    Sgd,
    Adam,
}

/// Hyperparameters of the optimiser.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizerConfig {
    pub kind: OptimizerKind,
    pub momentum: f64,
    pub nesterov: bool,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl OptimizerConfig {
    pub fn check(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(Error::invalid(
                "--momentum",
                self.momentum,
                "must be in [0, 1)",
            ));
        }
        if self.nesterov && self.momentum == 0.0 {
            return Err(Error::invalid(
                "--nesterov",
                true,
                "Nesterov needs --momentum > 0",
            ));
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            return Err(Error::invalid(
                "--adam-betas",
                format!("{},{}", self.beta1, self.beta2),
                "each must be in [0, 1)",
            ));
        }
        if self.weight_decay < 0.0 || !self.weight_decay.is_finite() {
            return Err(Error::invalid(
                "--weight-decay",
                self.weight_decay,
                "must be ≥ 0",
            ));
        }
        Ok(())
    }
}

/// Optimiser over a fixed list of named parameters, held as views of flat
/// buffers ([`flat`]): a step is a few whole-buffer ops.
#[derive(Debug)]
pub struct Optimizer {
    cfg: OptimizerConfig,
    names: Vec<String>,
    params: Vec<Tensor>,
    groups: Vec<FlatGroup>,
    /// SGD momentum buffer, or Adam's first moment (flat, one per group).
    first: Vec<Tensor>,
    /// Adam's second moment (unused by SGD; flat, one per group).
    second: Vec<Tensor>,
    steps: i64,
}

/// One update of `p` from gradient `grad` with the state `first`/`second`
/// (tensors of one shape: a flat group or one parameter's views).
fn update(
    c: &OptimizerConfig,
    p: &mut Tensor,
    grad: &Tensor,
    state: [&mut Tensor; 2],
    lr: f64,
    t: i32,
) {
    let [first, second] = state;
    let g = if c.weight_decay > 0.0 {
        grad + &*p * c.weight_decay
    } else {
        grad.shallow_clone()
    };
    match c.kind {
        OptimizerKind::Sgd => {
            let d = if c.momentum > 0.0 {
                let _ = first.g_mul_scalar_(c.momentum).g_add_(&g);
                if c.nesterov {
                    &g + &*first * c.momentum
                } else {
                    first.shallow_clone()
                }
            } else {
                g
            };
            let _ = p.g_sub_(&(d * lr));
        }
        OptimizerKind::Adam => {
            let _ = first.g_mul_scalar_(c.beta1).g_add_(&(&g * (1.0 - c.beta1)));
            let _ = second
                .g_mul_scalar_(c.beta2)
                .g_add_(&(&g * &g * (1.0 - c.beta2)));
            let bc1 = 1.0 - c.beta1.powi(t);
            let bc2 = 1.0 - c.beta2.powi(t);
            let denom = (second.sqrt() / bc2.sqrt()) + c.eps;
            let _ = p.g_sub_(&(&*first / denom * (lr / bc1)));
        }
    }
}

impl Optimizer {
    /// Takes over `params`: each becomes a view of its group's flat buffer
    /// (same value, same strides).
    pub fn new(cfg: &OptimizerConfig, params: Vec<(String, Tensor)>) -> Optimizer {
        let (names, params): (Vec<String>, Vec<Tensor>) = params.into_iter().unzip();
        let groups = FlatGroup::attach_all(&params);
        let zeros = |g: &FlatGroup| g.values.zeros_like();
        Optimizer {
            cfg: cfg.clone(),
            first: groups.iter().map(zeros).collect(),
            second: groups.iter().map(zeros).collect(),
            groups,
            names,
            params,
            steps: 0,
        }
    }

    /// Clears the gradients of every parameter (one op per group when all
    /// are attached).
    pub fn zero_grad(&mut self) {
        for g in &self.groups {
            if g.attach(&self.params) {
                let _ = g.grads.shallow_clone().zero_();
            } else {
                for &i in &g.members {
                    self.params[i].zero_grad();
                }
            }
        }
    }

    /// Applies `f` to every gradient in place: each group's flat gradient
    /// buffer when all its members have one, else each member's gradient
    /// (in the optimiser's fixed order, so every data-parallel rank makes
    /// the same calls). Stops at `f`'s first error.
    pub fn for_each_gradient(&mut self, f: &mut dyn FnMut(&Tensor) -> Result<()>) -> Result<()> {
        for g in &self.groups {
            if g.attach(&self.params) {
                f(&g.grads)?;
                continue;
            }
            for &i in &g.members {
                let grad = self.params[i].grad();
                if grad.defined() {
                    f(&grad)?;
                }
            }
        }
        Ok(())
    }

    /// One update with learning rate `lr` from the current gradients.
    /// Parameters without a gradient are left as they are (as PyTorch
    /// does); when every parameter of a group has one, the group's update
    /// is one pass over its flat buffers.
    ///
    /// SGD: g ← ∇ + wd·θ; b ← μ·b + g; d = g + μ·b (Nesterov) or b; θ ← θ − η·d.
    /// Adam: g ← ∇ + wd·θ; m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²;
    /// θ ← θ − η·(m/(1−β₁ᵗ)) / (√(v/(1−β₂ᵗ)) + ε).
    pub fn step(&mut self, lr: f64) {
        self.steps += 1;
        let t = self.steps as i32;
        let _guard = tch::no_grad_guard();
        for (n, g) in self.groups.iter().enumerate() {
            let (first, second) = (&mut self.first[n], &mut self.second[n]);
            if g.attach(&self.params) {
                let mut values = g.values.shallow_clone();
                update(&self.cfg, &mut values, &g.grads, [first, second], lr, t);
                continue;
            }
            for (k, &i) in g.members.iter().enumerate() {
                let grad = self.params[i].grad();
                if grad.defined() {
                    let mut p = g.view(&g.values, k);
                    let state = [&mut g.view(first, k), &mut g.view(second, k)];
                    update(&self.cfg, &mut p, &grad, state, lr, t);
                }
            }
        }
    }

    /// Each parameter's (name, group, member) in order.
    fn slots(&self) -> impl Iterator<Item = (&str, usize, usize)> + '_ {
        self.groups.iter().enumerate().flat_map(move |(n, g)| {
            g.members
                .iter()
                .enumerate()
                .map(move |(k, &i)| (self.names[i].as_str(), n, k))
        })
    }

    /// The optimiser state as named tensors (for a resume checkpoint).
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("optim.steps".to_string(), Tensor::from_slice(&[self.steps]))];
        for (name, n, k) in self.slots() {
            let g = &self.groups[n];
            out.push((
                format!("optim.first.{name}"),
                g.view(&self.first[n], k).copy(),
            ));
            out.push((
                format!("optim.second.{name}"),
                g.view(&self.second[n], k).copy(),
            ));
        }
        out
    }

    /// Restores the state written by [`Optimizer::state_tensors`].
    pub fn load_state(&mut self, tensors: &[(String, Tensor)]) -> std::result::Result<(), String> {
        let find = |key: &str| -> std::result::Result<&Tensor, String> {
            tensors
                .iter()
                .find(|(n, _)| n == key)
                .map(|(_, t)| t)
                .ok_or_else(|| format!("optimiser state lacks `{key}`"))
        };
        let steps = find("optim.steps")?.to_kind(Kind::Int64).int64_value(&[0]);
        let _guard = tch::no_grad_guard();
        for (name, n, k) in self.slots() {
            let g = &self.groups[n];
            for (slot, buf) in [("first", &self.first[n]), ("second", &self.second[n])] {
                let t = find(&format!("optim.{slot}.{name}"))?;
                let mut view = g.view(buf, k);
                if t.size() != view.size() {
                    return Err(format!(
                        "optimiser state `{slot}.{name}` has the wrong shape"
                    ));
                }
                view.copy_(t);
            }
        }
        self.steps = steps;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn cfg(kind: OptimizerKind, nesterov: bool) -> OptimizerConfig {
        OptimizerConfig {
            kind,
            momentum: 0.9,
            nesterov,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.1,
        }
    }

    /// Runs two steps on f(θ) = ½θ² (gradient θ) from θ = 1 and returns θ.
    fn two_steps(c: &OptimizerConfig) -> f64 {
        let p = Tensor::from_slice(&[1.0f64])
            .to_device(Device::Cpu)
            .set_requires_grad(true);
        let mut opt = Optimizer::new(c, vec![("p".into(), p.shallow_clone())]);
        for _ in 0..2 {
            opt.zero_grad();
            (&p * &p * 0.5).sum(Kind::Double).backward();
            opt.step(0.1);
        }
        p.double_value(&[0])
    }

    #[test]
    fn sgd_momentum_and_nesterov_match_pytorch_rules() {
        // g = θ + 0.1θ = 1.1θ. Step 1: b = 1.1, θ = 1 − 0.11 = 0.89.
        // Step 2: g = 0.979, b = 0.99 + 0.979 = 1.969, θ = 0.89 − 0.1969.
        assert!((two_steps(&cfg(OptimizerKind::Sgd, false)) - (0.89 - 0.1969)).abs() < 1e-12);
        // Nesterov: d1 = 1.1 + 0.9·1.1 = 2.09, θ = 0.791; g = 0.8701,
        // b = 0.99 + 0.8701 = 1.8601, d2 = 0.8701 + 1.67409 = 2.54419.
        assert!((two_steps(&cfg(OptimizerKind::Sgd, true)) - (0.791 - 0.254419)).abs() < 1e-12);
    }

    #[test]
    fn adam_matches_pytorch_rule() {
        // Step 1 of Adam moves by lr·sign(g) (up to ε); step 2 by lr·m̂/√v̂.
        let theta1: f64 = 1.0 - 0.1 * 1.1 / (1.1 + 1e-8);
        let g2 = 1.1 * theta1;
        let m = 0.9 * 0.1 * 1.1 + 0.1 * g2;
        let v = 0.999 * 0.001 * 1.21 + 0.001 * g2 * g2;
        let expect =
            theta1 - 0.1 * (m / (1.0 - 0.81)) / ((v / (1.0 - 0.999f64.powi(2))).sqrt() + 1e-8);
        assert!((two_steps(&cfg(OptimizerKind::Adam, false)) - expect).abs() < 1e-12);
    }

    #[test]
    fn state_round_trips() {
        let c = cfg(OptimizerKind::Adam, false);
        let p = Tensor::from_slice(&[1.0f64, 2.0]).set_requires_grad(true);
        let mut opt = Optimizer::new(&c, vec![("w".into(), p.shallow_clone())]);
        (&p * &p).sum(Kind::Double).backward();
        opt.step(0.1);
        let saved = opt.state_tensors();
        let mut fresh = Optimizer::new(&c, vec![("w".into(), p.shallow_clone())]);
        fresh.load_state(&saved).unwrap();
        assert_eq!(fresh.steps, 1);
        assert!(fresh.first[0].equal(&opt.first[0]) && fresh.second[0].equal(&opt.second[0]));
        let first = saved.iter().find(|(n, _)| n == "optim.first.w").unwrap();
        assert_eq!(
            first.1.size(),
            [2],
            "saved per parameter, not as the flat buffer"
        );
        assert!(fresh
            .load_state(&saved[..1])
            .unwrap_err()
            .contains("first.w"));
    }
}
