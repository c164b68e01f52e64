//! Projected gradient ascent (Madry et al. 2018): x_{k+1} = Π(x_k + α·dir(∇ℓ)),
//! Π the projection onto the ε-ball around x and [0,1], dir = sign (L∞) or
//! the normalised gradient (L2). One implementation for training attacks
//! (PGD-AT, TRADES, MART, AWP; docs/METHOD.md, "Training methods and SCORE's losses") and evaluation (PGD-k with CE or CW
//! loss; docs/METHOD.md, "Attacks and their budgets").
use super::{loss_and_grad_at, Domain, Threat};
use crate::models::Model;
use tch::Tensor;

/// Where the iteration starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Start {
    /// At x itself.
    Clean,
    /// Uniformly in the ball (PGD-AT, Madry et al.).
    Uniform,
    /// At x + σ·N(0, I) (TRADES and MART use σ = 0.001).
    Gaussian(f64),
}

/// Settings of one PGD run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PgdConfig {
    pub threat: Threat,
    pub steps: usize,
    /// Step size α (in input units, e.g. 2/255).
    pub step_size: f64,
    pub start: Start,
    /// Run the model's BatchNorm in training mode during the attack (the
    /// PGD-AT reference does; TRADES, MART and evaluation use eval mode).
    pub bn_train: bool,
}

/// Maximises `objective` (per-sample losses `[B]` of the logits) over the
/// threat set by `cfg.steps` steps of PGD and returns the detached
/// adversarial batch. Every iterate lies in the ε-ball and in [0,1].
/// Random starts draw from libtorch's generator (seeded by the caller).
pub fn pgd(
    model: &Model,
    x: &Tensor,
    cfg: &PgdConfig,
    objective: &dyn Fn(&Tensor) -> Tensor,
) -> Tensor {
    pgd_in(model, x, cfg, Domain::UnitBox, &|_, logits| {
        objective(logits)
    })
}

/// [`pgd`] over the ball intersected with `domain`, for an objective of the
/// iterate x′ and its logits (per-sample `[B]`): SCORE's toy maximises
/// D(p_d(·|x′) ‖ p_θ(·|x′)) over |x′ − x| ≤ 1 on the real line.
pub fn pgd_in(
    model: &Model,
    x: &Tensor,
    cfg: &PgdConfig,
    domain: Domain,
    objective: &dyn Fn(&Tensor, &Tensor) -> Tensor,
) -> Tensor {
    let x = x.detach();
    let threat = cfg.threat;
    let mut x_adv = match cfg.start {
        Start::Clean => x.shallow_clone(),
        Start::Uniform => threat.random_start_in(&x, domain),
        Start::Gaussian(sigma) => threat.project_in(&(&x + x.randn_like() * sigma), &x, domain),
    };
    for _ in 0..cfg.steps {
        let (_, _, grad) = loss_and_grad_at(model, &x_adv, cfg.bn_train, objective);
        let _guard = tch::no_grad_guard();
        let step = threat.ascent_direction(&grad) * cfg.step_size;
        x_adv = threat.project_in(&(&x_adv + step), &x, domain);
    }
    x_adv.detach()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attack::{correct_margin, per_sample_norm, Norm};
    use crate::models::{Activation, Arch, ModelSpec};
    use tch::{Device, Kind};

    fn tiny_model() -> Model {
        tch::manual_seed(3);
        let spec = ModelSpec {
            arch: Arch::Mlp,
            activation: Activation::Relu,
            mlp_hidden: vec![16],
            input_shape: vec![1, 4, 4],
            num_outputs: 3,
        };
        Model::new(&spec, Device::Cpu, &[0.5], &[0.25]).unwrap()
    }

    #[test]
    fn every_iterate_stays_in_the_ball_and_the_box_and_the_loss_rises() {
        let model = tiny_model();
        let x = Tensor::rand([64, 1, 4, 4], (Kind::Float, Device::Cpu));
        let y = Tensor::randint(3, [64], (Kind::Int64, Device::Cpu));
        for (norm, eps, alpha) in [(Norm::Linf, 0.1, 0.025), (Norm::L2, 0.5, 0.125)] {
            for start in [Start::Clean, Start::Uniform, Start::Gaussian(0.001)] {
                let threat = Threat { norm, eps };
                let objective = |logits: &Tensor| -correct_margin(logits, &y);
                for steps in [0usize, 1, 5, 20] {
                    let cfg = PgdConfig {
                        threat,
                        steps,
                        step_size: alpha,
                        start,
                        bn_train: false,
                    };
                    let xa = pgd(&model, &x, &cfg, &objective);
                    let dist = per_sample_norm(&(&xa - &x), norm).max().double_value(&[]);
                    assert!(dist <= eps + 1e-6, "{norm:?} {start:?}: ‖δ‖ = {dist} > ε");
                    assert!(xa.min().double_value(&[]) >= 0.0);
                    assert!(xa.max().double_value(&[]) <= 1.0);
                }
                let clean_loss = objective(&model.forward_t(&x, false)).mean(Kind::Float);
                let cfg = PgdConfig {
                    threat,
                    steps: 20,
                    step_size: alpha,
                    start,
                    bn_train: false,
                };
                let adv_loss =
                    objective(&model.forward_t(&pgd(&model, &x, &cfg, &objective), false))
                        .mean(Kind::Float);
                assert!(
                    adv_loss.double_value(&[]) > clean_loss.double_value(&[]) + 0.05,
                    "{norm:?} {start:?}: PGD did not raise the loss"
                );
            }
        }
    }

    #[test]
    fn linf_pgd_reaches_the_closed_form_optimum_of_a_linear_loss() {
        // For ℓ(x) = wᵀx and x in the middle of the box, the L∞ maximiser is
        // x + ε·sign(w): PGD with α ≥ ε gets there in one step.
        let spec = ModelSpec {
            arch: Arch::Mlp,
            activation: Activation::Relu,
            mlp_hidden: vec![],
            input_shape: vec![6],
            num_outputs: 2,
        };
        let model = Model::new(&spec, Device::Cpu, &[0.0], &[1.0]).unwrap();
        let x = Tensor::full([5, 6], 0.5, (Kind::Float, Device::Cpu));
        let objective = |logits: &Tensor| logits.select(1, 0) - logits.select(1, 1);
        let cfg = PgdConfig {
            threat: Threat {
                norm: Norm::Linf,
                eps: 0.1,
            },
            steps: 3,
            step_size: 0.1,
            start: Start::Clean,
            bn_train: false,
        };
        let xa = pgd(&model, &x, &cfg, &objective);
        let g = {
            let xg = x.detach().set_requires_grad(true);
            objective(&model.forward_t(&xg, false)).sum(None).backward();
            xg.grad()
        };
        let expected = &x + g.sign() * 0.1;
        assert!(xa.allclose(&expected, 1e-6, 1e-6, false));
    }
}
