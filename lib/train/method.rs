//! Base training methods (docs/METHOD.md, "Training methods and SCORE's losses"): standard, PGD-AT (Madry et al. 2018, as
//! in Rice et al. 2020), TRADES (Zhang et al. 2019), MART (Wang et al. 2020),
//! with the SCORE substitutions (Pang et al. 2022): another distance between
//! probability vectors instead of KL/CE (`--loss`, the eight of SCORE's
//! Table 1 in [`super::losses`]), loss clipping relu(ℓ − c) and label
//! smoothing.
use super::losses::label_distance;
pub use super::losses::{divergence, Divergence};
use crate::attack::{parse_fraction, pgd, Norm, PgdConfig, Start, Threat};
use crate::data::{DatasetName, Task};
use crate::error::{Error, Result};
use crate::models::Model;
use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Training method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Loss on clean inputs: CE (or D(onehot, softmax) with another
    /// --loss); MSE for regression.
    Standard,
    /// Loss on PGD examples (uniform start, BatchNorm in train mode, as in
    /// Rice et al.'s reference); the attack maximises the same loss.
    PgdAt,
    /// CE(z, y) + β·D(p ‖ p_adv); the attack maximises D from x + 0.001·N(0,1)
    /// with the model in eval mode; β = 6 by default.
    Trades,
    /// BCE(z_adv, y) + β·D(p ‖ p_adv)·(1 − p_y); attack: CE from
    /// x + 0.001·N(0,1), eval mode; β = 5 by default.
    Mart,
}

/// Flags of the robust methods (part of the run's identity).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct MethodArgs {
    /// BinaryDivergence D(P, Q) between whole class-probability vectors (not the
    /// toy's class-1 convention) in the loss and the training attack, as
    /// in SCORE's Table 1: in the label term D(target, softmax(z)) (kl: the
    /// cross-entropy), in TRADES/MART's robust term D(softmax(z),
    /// softmax(z_adv)), and PGD-AT's loss and attack D(onehot(y),
    /// softmax(z_adv)). Kinks: l2 and js-dist use the safe root
    /// √(x + ε²) − ε (ε = 2⁻²⁰; 0 with gradient 0 at P = Q); l1 and linf
    /// take |·|'s subgradient 0 at 0, linf's max passes its gradient to one
    /// arg-max class; kl and js skip classes with p = 0 (0·log 0 = 0).
    #[arg(long = "loss", value_enum, default_value = "kl")]
    pub divergence: Divergence,
    /// Loss clipping relu(ℓ − c) per sample (SCORE: 0.4 for PGD-AT, 0.3 for
    /// TRADES); applied to the whole loss of standard and pgd-at and to the
    /// robust term of trades and mart.
    #[arg(long)]
    pub clip: Option<f64>,
    /// Label smoothing ε_ls: targets (1 − ε_ls)·onehot + ε_ls/K in the
    /// label terms (not in the attacks).
    #[arg(long, default_value_t = 0.0)]
    pub label_smoothing: f64,
    /// Weight β of the robust term (default 6 for trades, 5 for mart).
    #[arg(long)]
    pub beta: Option<f64>,
    /// Attack radius ε of the training attacks; fractions accepted. Default:
    /// the data set's threat model: 8/255 (L∞) or 0.5 (L2) on CIFAR, 0.2
    /// (L∞) or 1.0 (L2) on digits, 0.3 (L∞) or 2.0 (L2) on mnist and mnist-5k.
    #[arg(long, value_parser = parse_fraction)]
    pub eps: Option<f64>,
    /// PGD steps of the training attacks (a few give an adversarial-lite
    /// base loss for finetune); ≥ 1 with pgd-at, trades and mart.
    #[arg(long, default_value_t = 10)]
    pub attack_steps: usize,
    /// PGD step size; fractions accepted (default ε/4, i.e. 2/255 at 8/255).
    #[arg(long, value_parser = parse_fraction)]
    pub attack_step_size: Option<f64>,
    /// Start the training attack at x itself instead of the method's
    /// random start (uniform in the ε-ball for pgd-at, x + 0.001·N(0, I)
    /// for trades and mart): the attack is then deterministic (e.g. to
    /// compare a --data-parallel run with the single process). The
    /// validation attack keeps its random start.
    #[arg(long)]
    #[serde(default)]
    pub attack_clean_start: bool,
    /// Warm-up of the training attack's radius over the first E epochs
    /// (pgd-at, trades, mart, with or without AWP): at optimiser step s
    /// (0-based, counted across epochs; S steps per epoch) the attack uses
    /// ε_s = ε·min(1, (s+1)/(E·S)) and its step size scales by the same
    /// factor (step size/ε stays as configured); metrics.csv's train_eps shows ε_s
    /// at each epoch's last step. The validation attack keeps the full ε.
    /// 0 = no warm-up. Refused with --method standard and when E > --epochs.
    #[arg(long, default_value_t = 0)]
    #[serde(default)]
    pub eps_warmup_epochs: usize,
    /// Norm of the training threat model.
    #[arg(long, value_enum, default_value = "linf")]
    pub norm: Norm,
    /// Adversarial weight perturbation (Wu et al. 2020) on top of pgd-at,
    /// trades or mart: one ascent direction of the method's loss per step,
    /// scaled per weight tensor (dim > 1) to γ·‖w‖; perturb → step → restore.
    #[arg(long)]
    pub awp: bool,
    /// AWP's γ.
    #[arg(long, default_value_t = 0.005)]
    pub awp_gamma: f64,
    /// First epoch (0-based count of finished epochs) with AWP on.
    #[arg(long, default_value_t = 10)]
    pub awp_warmup: usize,
    /// Exponential moving average of the weights, w̄ ← τ·w̄ + (1 − τ)·w per
    /// step (e.g. 0.999); evaluation and the final checkpoint use w̄.
    #[arg(long)]
    pub ema_tau: Option<f64>,
}

/// Resolved settings of a method for one data set.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodSettings {
    pub method: Method,
    pub divergence: Divergence,
    pub clip: Option<f64>,
    pub label_smoothing: f64,
    pub beta: f64,
    /// The training attack (adversarial methods only).
    pub attack: Option<PgdConfig>,
    pub num_classes: i64,
    /// AWP's γ and first epoch, when on.
    pub awp: Option<(f64, usize)>,
    pub ema_tau: Option<f64>,
}

/// The linear warm-up of the training attack's radius
/// (`--eps-warmup-epochs E`), resolved in the plan over the run's S steps
/// per epoch: at optimiser step s (0-based, counted across epochs, so a
/// resumed run continues the schedule) the attack's ε and step size are
/// multiplied by [`EpsWarmup::factor`] = min(1, (s + 1)/(E·S)), i.e.
/// ε_s = ε·min(1, (s + 1)/(E·S)). The first step attacks at ε/(E·S), step
/// E·S − 1 (the last of epoch E) and every later one at the full ε.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EpsWarmup {
    /// Length E·S of the ramp in steps; 0: no warm-up (factor 1 at every
    /// step, the attack exactly as configured).
    pub steps: usize,
}

impl EpsWarmup {
    /// The ramp over `epochs` epochs (E) of `steps_per_epoch` steps (S).
    pub fn new(epochs: usize, steps_per_epoch: usize) -> EpsWarmup {
        EpsWarmup {
            steps: epochs * steps_per_epoch,
        }
    }

    /// min(1, (s + 1)/(E·S)) at 0-based step `step`; 1 without a ramp.
    pub fn factor(&self, step: usize) -> f64 {
        if self.steps == 0 {
            return 1.0;
        }
        ((step + 1) as f64 / self.steps as f64).min(1.0)
    }
}

impl MethodArgs {
    /// Checks `--eps-warmup-epochs` against the method and `--epochs`: a
    /// warm-up needs a training attack (not `standard`) and must end within
    /// the run (E ≤ `epochs`).
    ///
    /// Errors: [`Error::InvalidArgument`] naming `--eps-warmup-epochs`.
    pub fn check_eps_warmup(&self, method: Method, epochs: usize) -> Result<()> {
        let e = self.eps_warmup_epochs;
        if e > 0 && method == Method::Standard {
            return Err(Error::invalid(
                "--eps-warmup-epochs",
                e,
                "ramps the radius of the training attack, and --method standard has none: \
                 use it with --method pgd-at, trades or mart, or leave it at 0",
            ));
        }
        if e > epochs {
            return Err(Error::invalid(
                "--eps-warmup-epochs",
                e,
                format!(
                    "must be ≤ --epochs ({epochs}), or the attack never reaches its ε: \
                     lower --eps-warmup-epochs or raise --epochs"
                ),
            ));
        }
        Ok(())
    }

    /// Checks the flags and fills in the per-method and per-data-set
    /// defaults; `input_dim` is the number of input entries d (for the
    /// training attack's ε scale check, [`Threat::check_scale`], whose
    /// warning is printed on stderr).
    pub fn resolve(
        &self,
        method: Method,
        dataset: DatasetName,
        task: Task,
        num_classes: i64,
        input_dim: usize,
    ) -> Result<MethodSettings> {
        if let Some(beta) = self.beta {
            if !(beta.is_finite() && beta >= 0.0) {
                return Err(Error::invalid("--beta", beta, "must be ≥ 0"));
            }
        }
        if let Some(c) = self.clip {
            if !(c.is_finite() && c >= 0.0) {
                return Err(Error::invalid("--clip", c, "must be ≥ 0"));
            }
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(Error::invalid(
                "--label-smoothing",
                self.label_smoothing,
                "must be in [0, 1)",
            ));
        }
        if let Some(t) = self.ema_tau {
            if !(0.0..1.0).contains(&t) {
                return Err(Error::invalid(
                    "--ema-tau",
                    t,
                    "must be in [0, 1) (e.g. 0.999)",
                ));
            }
        }
        if !(self.awp_gamma.is_finite() && self.awp_gamma >= 0.0) {
            return Err(Error::invalid("--awp-gamma", self.awp_gamma, "must be ≥ 0"));
        }
        let adversarial = method != Method::Standard;
        if self.awp && !adversarial {
            return Err(Error::invalid(
                "--awp",
                "with --method standard",
                "AWP perturbs weights against an adversarial loss: use it with pgd-at, trades or mart",
            ));
        }
        if adversarial && self.attack_steps == 0 {
            let name = method
                .to_possible_value()
                .map_or_else(String::new, |v| v.get_name().to_string());
            return Err(Error::invalid(
                "--attack-steps",
                format!("0 with --method {name}"),
                format!(
                    "{name} trains on attacked inputs and 0 steps attack nothing: \
                     use --attack-steps ≥ 1, or --method standard to train without an attack"
                ),
            ));
        }
        if task != Task::Classification
            && (adversarial || self.divergence != Divergence::Kl || self.label_smoothing > 0.0)
        {
            return Err(Error::invalid(
                "--method/--loss/--label-smoothing",
                dataset,
                "robust methods, --loss other than kl and label smoothing need a classification data set",
            ));
        }
        let attack = adversarial
            .then(|| self.training_attack(method, dataset, input_dim))
            .transpose()?;
        let beta = self.beta.unwrap_or(match method {
            Method::Trades => 6.0,
            Method::Mart => 5.0,
            _ => 0.0,
        });
        Ok(MethodSettings {
            method,
            divergence: self.divergence,
            clip: self.clip,
            label_smoothing: self.label_smoothing,
            beta,
            attack,
            num_classes,
            awp: self.awp.then_some((self.awp_gamma, self.awp_warmup)),
            ema_tau: self.ema_tau,
        })
    }
}

impl MethodArgs {
    /// The training attack of an adversarial `method` on `dataset`: ε by
    /// default from the data set's threat model, step ε/4, uniform start
    /// and BatchNorm in train mode for pgd-at (Rice et al.), a 0.001·N(0,1)
    /// start in eval mode for trades and mart.
    pub(super) fn training_attack(
        &self,
        method: Method,
        dataset: DatasetName,
        input_dim: usize,
    ) -> Result<PgdConfig> {
        let eps = self.eps.unwrap_or(match self.norm {
            Norm::Linf => dataset.threat().linf,
            Norm::L2 => dataset.threat().l2,
        });
        let threat = Threat {
            norm: self.norm,
            eps,
        };
        if let Some(warning) = threat.check_scale("--eps", input_dim)? {
            eprintln!("warning: {warning}");
        }
        let step_size = self.attack_step_size.unwrap_or(eps / 4.0);
        if !(step_size.is_finite() && step_size > 0.0) {
            return Err(Error::invalid(
                "--attack-step-size",
                step_size,
                "must be > 0",
            ));
        }
        let (start, bn_train) = match method {
            _ if self.attack_clean_start => (Start::Clean, method == Method::PgdAt),
            Method::PgdAt => (Start::Uniform, true),
            _ => (Start::Gaussian(0.001), false),
        };
        Ok(PgdConfig {
            threat,
            steps: self.attack_steps,
            step_size,
            start,
            bn_train,
        })
    }
}

/// Smoothed one-hot targets (1 − ε)·onehot(y) + ε/K.
pub fn smoothed_targets(y: &Tensor, num_classes: i64, smoothing: f64) -> Tensor {
    y.onehot(num_classes).to_kind(Kind::Float) * (1.0 - smoothing) + smoothing / num_classes as f64
}

/// Per-sample cross-entropy −Σ_k t_k log softmax(z)_k against targets t.
pub fn cross_entropy_to(logits: &Tensor, targets: &Tensor) -> Tensor {
    -(targets * logits.log_softmax(-1, Kind::Float)).sum_dim_intlist([1i64].as_slice(), false, None)
}

/// Per-sample KL(softmax(z_p) ‖ softmax(z_q)) = Σ p (log p − log q), as
/// PyTorch's `KLDivLoss(log_softmax(z_q), softmax(z_p))` summed per row.
pub fn kl_div(logits_p: &Tensor, logits_q: &Tensor) -> Tensor {
    divergence(Divergence::Kl, logits_p, logits_q)
}

/// relu(ℓ − c) per sample when clipping is on.
fn clipped(loss: Tensor, clip: Option<f64>) -> Tensor {
    match clip {
        Some(c) => (loss - c).relu(),
        None => loss,
    }
}

/// The losses of one step of a method, before the regulariser.
#[derive(Debug)]
pub struct MethodLoss {
    /// Scalar loss to minimise.
    pub loss: Tensor,
    /// Logits of the clean batch when the method computed them (train mode).
    pub clean_logits: Option<Tensor>,
    /// Logits the training accuracy is counted on (clean, or adversarial
    /// for pgd-at).
    pub logits_for_accuracy: Tensor,
}

impl MethodSettings {
    /// These settings with the training attack's ε and step size
    /// multiplied by `factor` (the [`EpsWarmup`] ramp; the ratio of step
    /// size to ε stays as configured). Unchanged without an attack.
    pub fn with_attack_scaled(&self, factor: f64) -> MethodSettings {
        let mut s = self.clone();
        if let Some(a) = s.attack.as_mut() {
            a.threat.eps *= factor;
            a.step_size *= factor;
        }
        s
    }

    /// The training attack's ε, 0 without an attack (standard training,
    /// regression).
    pub fn attack_eps(&self) -> f64 {
        self.attack.as_ref().map_or(0.0, |a| a.threat.eps)
    }

    /// Label-side term: CE (kl) or D(t, softmax(z)) against (smoothed)
    /// targets t, per sample.
    fn label_loss(&self, logits: &Tensor, y: &Tensor) -> Tensor {
        let t = smoothed_targets(y, self.num_classes, self.label_smoothing);
        label_distance(self.divergence, logits, &t)
    }

    /// The training attack's adversarial batch (None for standard).
    /// TRADES's attack maximises D(p(x) ‖ p(x')) with p(x) from an eval-mode
    /// forward; PGD-AT's maximises its own loss against hard labels; MART's
    /// maximises CE.
    pub fn adversarial_batch(&self, model: &Model, x: &Tensor, y: &Tensor) -> Option<Tensor> {
        let cfg = self.attack.as_ref()?;
        let hard = smoothed_targets(y, self.num_classes, 0.0);
        Some(match self.method {
            Method::Standard => unreachable!("no attack for standard training"),
            Method::PgdAt => {
                let d = self.divergence;
                pgd(model, x, cfg, &|z: &Tensor| label_distance(d, z, &hard))
            }
            Method::Trades => {
                let clean = tch::no_grad(|| model.forward_t(x, false));
                let d = self.divergence;
                pgd(model, x, cfg, &|z: &Tensor| divergence(d, &clean, z))
            }
            Method::Mart => pgd(model, x, cfg, &|z: &Tensor| cross_entropy_to(z, &hard)),
        })
    }

    /// The method's loss on a batch (model in train mode), given its
    /// adversarial batch. Classification only; regression uses MSE.
    pub fn loss(
        &self,
        model: &Model,
        x: &Tensor,
        x_adv: Option<&Tensor>,
        y: &Tensor,
    ) -> MethodLoss {
        let adv = || x_adv.expect("adversarial methods need x_adv");
        match self.method {
            Method::Standard => {
                let z = model.forward_t(x, true);
                let loss = clipped(self.label_loss(&z, y), self.clip).mean(Kind::Float);
                MethodLoss {
                    loss,
                    clean_logits: Some(z.shallow_clone()),
                    logits_for_accuracy: z,
                }
            }
            Method::PgdAt => {
                let z_adv = model.forward_t(adv(), true);
                let loss = clipped(self.label_loss(&z_adv, y), self.clip).mean(Kind::Float);
                MethodLoss {
                    loss,
                    clean_logits: None,
                    logits_for_accuracy: z_adv,
                }
            }
            Method::Trades => {
                let z = model.forward_t(x, true);
                let z_adv = model.forward_t(adv(), true);
                let natural = self.label_loss(&z, y).mean(Kind::Float);
                let robust =
                    clipped(divergence(self.divergence, &z, &z_adv), self.clip).mean(Kind::Float);
                MethodLoss {
                    loss: natural + robust * self.beta,
                    clean_logits: Some(z.shallow_clone()),
                    logits_for_accuracy: z,
                }
            }
            Method::Mart => {
                let z = model.forward_t(x, true);
                let z_adv = model.forward_t(adv(), true);
                let p_adv = z_adv.softmax(-1, Kind::Float);
                // The most likely wrong class under attack (MART's reference:
                // the top class, or the second if the top one is y).
                let top2 = p_adv.topk(2, -1, true, true).1;
                let (first, second) = (top2.select(1, 0), top2.select(1, 1));
                let wrong = second.where_self(&first.eq_tensor(y), &first);
                let boost = -(p_adv.neg() + 1.0001 + 1e-12)
                    .log()
                    .gather(1, &wrong.unsqueeze(1), false)
                    .squeeze_dim(1);
                let bce = (self.label_loss(&z_adv, y) + boost).mean(Kind::Float);
                let p_true = z
                    .softmax(-1, Kind::Float)
                    .gather(1, &y.unsqueeze(1), false)
                    .squeeze_dim(1);
                let weighted = clipped(divergence(self.divergence, &z, &z_adv), self.clip)
                    * (p_true.neg() + 1.0000001);
                MethodLoss {
                    loss: bce + weighted.mean(Kind::Float) * self.beta,
                    clean_logits: Some(z.shallow_clone()),
                    logits_for_accuracy: z,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{Activation, Arch, ModelSpec};
    use tch::Device;

    /// A linear 2-input, 3-class model with fixed weights, so that every
    /// logit can be computed by hand.
    fn linear_model() -> Model {
        let spec = ModelSpec {
            arch: Arch::Mlp,
            activation: Activation::Relu,
            mlp_hidden: vec![],
            input_shape: vec![2],
            num_outputs: 3,
        };
        let model = Model::new(&spec, Device::Cpu, &[0.0], &[1.0]).unwrap();
        tch::no_grad(|| {
            for (name, mut t) in model.named_trainable() {
                if name.ends_with("weight") {
                    t.copy_(&Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0, -1.0, -1.0]).view([3, 2]));
                } else {
                    t.copy_(&Tensor::from_slice(&[0.0f32, 0.5, 0.0]));
                }
            }
        });
        model
    }

    fn settings(method: Method, d: Divergence, extra: &[&str]) -> MethodSettings {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            m: MethodArgs,
        }
        let mut args = vec!["x"];
        args.extend(extra);
        let mut m = Cli::try_parse_from(args).unwrap().m;
        m.divergence = d;
        m.resolve(method, DatasetName::Digits, Task::Classification, 3, 2)
            .unwrap()
    }

    fn softmax(z: [f64; 3]) -> [f64; 3] {
        let m = z.iter().cloned().fold(f64::MIN, f64::max);
        let e = z.map(|v| (v - m).exp());
        let s: f64 = e.iter().sum();
        e.map(|v| v / s)
    }

    fn logits(x: [f64; 2]) -> [f64; 3] {
        [x[0], x[1] + 0.5, -x[0] - x[1]]
    }

    const X: [[f64; 2]; 2] = [[0.2, 0.7], [0.9, 0.1]];
    const XA: [[f64; 2]; 2] = [[0.3, 0.6], [0.8, 0.3]];
    const Y: [i64; 2] = [1, 0];

    fn tensors() -> (Tensor, Tensor, Tensor) {
        let f = |a: [[f64; 2]; 2]| {
            Tensor::from_slice(&a.concat().iter().map(|&v| v as f32).collect::<Vec<_>>())
                .view([2, 2])
        };
        (f(X), f(XA), Tensor::from_slice(&Y))
    }

    fn kl(p: [f64; 3], q: [f64; 3]) -> f64 {
        (0..3).map(|k| p[k] * (p[k] / q[k]).ln()).sum()
    }

    fn se(p: [f64; 3], q: [f64; 3]) -> f64 {
        (0..3).map(|k| (p[k] - q[k]).powi(2)).sum()
    }

    fn target(y: i64, ls: f64) -> [f64; 3] {
        let mut t = [ls / 3.0; 3];
        t[y as usize] += 1.0 - ls;
        t
    }

    fn ce(t: [f64; 3], q: [f64; 3]) -> f64 {
        -(0..3).map(|k| t[k] * q[k].ln()).sum::<f64>()
    }

    fn loss_of(s: &MethodSettings) -> f64 {
        let model = linear_model();
        let (x, xa, y) = tensors();
        s.loss(&model, &x, Some(&xa), &y).loss.double_value(&[])
    }

    fn close(a: f64, b: f64) {
        assert!(
            (a - b).abs() < 1e-5 * (1.0 + b.abs()),
            "{a} vs hand-computed {b}"
        );
    }

    #[test]
    fn trades_loss_with_kl_and_se_equals_the_hand_computed_value() {
        for (d, beta) in [(Divergence::Kl, 6.0), (Divergence::Se, 2.0)] {
            let s = settings(Method::Trades, d, &["--beta", &beta.to_string()]);
            let mut total = 0.0;
            for i in 0..2 {
                let (p, q) = (softmax(logits(X[i])), softmax(logits(XA[i])));
                let (robust, natural) = if d == Divergence::Kl {
                    (kl(p, q), ce(target(Y[i], 0.0), p))
                } else {
                    (se(p, q), se(target(Y[i], 0.0), p))
                };
                total += natural + beta * robust;
            }
            close(loss_of(&s), total / 2.0);
        }
    }

    #[test]
    fn mart_weights_the_divergence_by_one_minus_the_true_probability() {
        let s = settings(Method::Mart, Divergence::Kl, &[]);
        let mut total = 0.0;
        for i in 0..2 {
            let (p, q) = (softmax(logits(X[i])), softmax(logits(XA[i])));
            let y = Y[i] as usize;
            let mut order = [0usize, 1, 2];
            order.sort_by(|&a, &b| q[b].partial_cmp(&q[a]).unwrap());
            let wrong = if order[0] == y { order[1] } else { order[0] };
            let bce = ce(target(Y[i], 0.0), q) - (1.0001 - q[wrong] + 1e-12).ln();
            total += bce + 5.0 * kl(p, q) * (1.0000001 - p[y]);
        }
        close(loss_of(&s), total / 2.0);
    }

    #[test]
    fn clipping_and_label_smoothing_follow_their_formulas() {
        // PGD-AT with SE, label smoothing 0.1 and clipping at c.
        for clip in [0.0, 0.3, 10.0] {
            let s = settings(
                Method::PgdAt,
                Divergence::Se,
                &["--label-smoothing", "0.1", "--clip", &clip.to_string()],
            );
            let expected: f64 = (0..2)
                .map(|i| (se(target(Y[i], 0.1), softmax(logits(XA[i]))) - clip).max(0.0))
                .sum::<f64>()
                / 2.0;
            close(loss_of(&s), expected);
        }
        let s = settings(
            Method::Standard,
            Divergence::Kl,
            &["--label-smoothing", "0.2"],
        );
        let expected = (0..2)
            .map(|i| ce(target(Y[i], 0.2), softmax(logits(X[i]))))
            .sum::<f64>()
            / 2.0;
        close(loss_of(&s), expected);
    }

    #[test]
    fn the_training_attack_increases_each_loss() {
        let model = linear_model();
        let (x, _, y) = tensors();
        let hard = smoothed_targets(&y, 3, 0.0);
        for d in Divergence::ALL {
            tch::manual_seed(5);
            // PGD-AT: D(onehot(y), softmax(z)) at x' against x.
            let s = settings(Method::PgdAt, d, &["--eps", "0.3"]);
            let x_adv = s.adversarial_batch(&model, &x, &y).unwrap();
            let at =
                |x: &Tensor| label_distance(d, &model.forward_t(x, false), &hard).sum(Kind::Double);
            let (clean, adv) = (at(&x).double_value(&[]), at(&x_adv).double_value(&[]));
            assert!(adv > clean + 1e-3, "pgd-at {d:?}: {clean} → {adv}");
            // TRADES: D(p(x), p(x')) from 0 at x' = x.
            let s = settings(Method::Trades, d, &["--eps", "0.3"]);
            let x_adv = s.adversarial_batch(&model, &x, &y).unwrap();
            let z = model.forward_t(&x, false);
            let robust = divergence(d, &z, &model.forward_t(&x_adv, false));
            let min = robust.min().double_value(&[]);
            assert!(min > 1e-4, "trades {d:?}: D(p, p_adv) = {robust}");
        }
    }

    #[test]
    fn bad_method_flags_are_refused_by_name() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            m: MethodArgs,
        }
        let resolve = |args: &[&str], method| {
            let mut full = vec!["x"];
            full.extend(args);
            Cli::try_parse_from(full)
                .unwrap()
                .m
                .resolve(method, DatasetName::Digits, Task::Classification, 10, 64)
                .unwrap_err()
                .to_string()
        };
        assert!(resolve(&["--beta=-1"], Method::Trades).contains("--beta"));
        assert!(resolve(&["--eps", "0"], Method::PgdAt).contains("--eps"));
        assert!(resolve(&["--eps=-8/255"], Method::PgdAt).contains("--eps"));
        // ε on the 0–255 scale covers the whole [0,1] box: refused with a hint.
        let err = resolve(&["--eps", "8"], Method::PgdAt);
        assert!(err.contains("--eps") && err.contains("8/255"), "{err}");
        let err = resolve(&["--norm", "l2", "--eps", "8"], Method::Trades);
        assert!(err.contains("√d") && err.contains("8/255"), "{err}");
        assert!(resolve(&["--awp"], Method::Standard).contains("--awp"));
        assert!(resolve(&["--ema-tau", "1.5"], Method::Standard).contains("--ema-tau"));
        let flag_name = |m: Method| m.to_possible_value().unwrap().get_name().to_string();
        // A robust method with no attack step would be recorded as robust
        // training while it trains on clean inputs: refused, naming the fix.
        for method in [Method::PgdAt, Method::Trades, Method::Mart] {
            for extra in [&[][..], &["--awp"][..]] {
                let mut args = vec!["--attack-steps", "0"];
                args.extend(extra);
                let err = resolve(&args, method);
                assert!(
                    err.contains("--attack-steps")
                        && err.contains(&format!("--method {}", flag_name(method)))
                        && err.contains("--method standard"),
                    "{err}"
                );
            }
        }
        // Without a training attack the step count is unused: accepted.
        let standard = Cli::try_parse_from(["x", "--attack-steps", "0"])
            .unwrap()
            .m
            .resolve(
                Method::Standard,
                DatasetName::Digits,
                Task::Classification,
                10,
                64,
            );
        assert!(standard.unwrap().attack.is_none());
    }

    /// ε_s = ε·min(1, (s+1)/(E·S)) at 0-based step s, step size alike.
    #[test]
    fn the_eps_warm_up_is_linear_in_the_global_step_and_ends_at_epoch_e() {
        // E = 2 epochs of S = 45 steps: a ramp of 90 steps.
        let w = EpsWarmup::new(2, 45);
        assert_eq!(w.steps, 90);
        for s in [0usize, 1, 44, 45, 88, 89, 90, 1000] {
            let expected = ((s + 1) as f64 / 90.0).min(1.0);
            assert_eq!(w.factor(s), expected, "step {s}");
        }
        assert_eq!(w.factor(0), 1.0 / 90.0);
        assert_eq!(w.factor(44), 0.5, "the last step of epoch 1 is halfway");
        assert_eq!(w.factor(89), 1.0, "the last step of epoch E reaches ε");
        assert!((0..200).all(|s| w.factor(s) <= w.factor(s + 1)));
        // No warm-up: factor exactly 1 from the first step.
        let off = EpsWarmup::new(0, 45);
        assert!((0..100).all(|s| off.factor(s) == 1.0));
        assert_eq!(EpsWarmup::default(), off);

        let s = settings(Method::PgdAt, Divergence::Kl, &["--eps", "0.2"]);
        let full = s.attack.unwrap();
        let half = s.with_attack_scaled(w.factor(44));
        let a = half.attack.unwrap();
        assert_eq!(a.threat.eps, 0.1);
        assert_eq!(a.step_size, full.step_size * 0.5);
        assert_eq!(a.step_size / a.threat.eps, full.step_size / full.threat.eps);
        assert_eq!(
            (a.steps, a.start, a.bn_train),
            (full.steps, full.start, full.bn_train)
        );
        assert_eq!(half.attack_eps(), 0.1);
        assert_eq!(s.with_attack_scaled(1.0), s);
        let standard = settings(Method::Standard, Divergence::Kl, &[]);
        assert_eq!(standard.attack_eps(), 0.0);
        assert_eq!(standard.with_attack_scaled(0.5), standard);
    }

    #[test]
    fn an_eps_warm_up_without_an_attack_or_longer_than_the_run_is_refused() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            m: MethodArgs,
        }
        let check = |e: &str, method, epochs| {
            Cli::try_parse_from(["x", "--eps-warmup-epochs", e])
                .unwrap()
                .m
                .check_eps_warmup(method, epochs)
        };
        let err = check("1", Method::Standard, 5).unwrap_err().to_string();
        assert!(
            err.contains("--eps-warmup-epochs") && err.contains("standard"),
            "{err}"
        );
        let err = check("3", Method::Trades, 2).unwrap_err().to_string();
        assert!(
            err.contains("--eps-warmup-epochs") && err.contains("--epochs (2)"),
            "{err}"
        );
        assert!(check("0", Method::Standard, 1).is_ok());
        assert!(check("2", Method::Mart, 2).is_ok());
    }
}
