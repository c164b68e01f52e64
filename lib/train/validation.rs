//! Validation during training and best-checkpoint selection (`--val-size`,
//! `--val-every`, `--val-attack`, `--val-objective`, `--select`), as Rice et
//! al. (2020) against robust overfitting and SCORE's Table 2 ("the
//! checkpoint with the highest PGD-10 (SE) accuracy on a separate
//! validation set").
use super::losses::{label_distance, Divergence};
use super::method::{smoothed_targets, Method, MethodArgs};
use crate::attack::{pgd, PgdConfig};
use crate::data::{validation::carve, Dataset, Split, Task};
use crate::error::{Error, Result};
use crate::models::Model;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// The attack's objective on the validation split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ValObjective {
    /// The training loss's own D(onehot(y), softmax(z)) (--loss; kl: CE):
    /// SCORE's PGD-10 (SE) for se.
    Loss,
    /// Cross-entropy, whatever --loss is.
    Ce,
}

/// Which weights `model.safetensors` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Select {
    /// The last epoch's (model-best.safetensors holds the best epoch's).
    Last,
    /// The best validation epoch's (model-last.safetensors holds the last).
    Best,
}

/// Flags of validation (part of the run's identity).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(default)]
pub struct ValArgs {
    /// Rows carved out of the training split for validation (0: none): a
    /// seeded draw (--seed), recorded in the sidecar (train_fingerprint
    /// covers the remaining training rows; validation.fingerprint the
    /// carved ones). Not with a --scores file (it indexes the whole
    /// training split).
    #[arg(long, default_value_t = 0)]
    pub val_size: usize,
    /// Validate every N epochs (and after the last); writes val_acc and
    /// val_robust_acc into metrics.csv.
    #[arg(long, default_value_t = 1)]
    pub val_every: usize,
    /// Attack of the validation: pgdK (K PGD steps at the training
    /// attack's ε and step size, the data set's default threat model for
    /// --method standard; uniform start, eval mode) or none (select on
    /// clean accuracy).
    #[arg(long, default_value = "pgd10")]
    pub val_attack: String,
    /// Objective the validation PGD maximises.
    #[arg(long, value_enum, default_value = "loss")]
    pub val_objective: ValObjective,
    /// Which weights model.safetensors holds: last, or best (highest
    /// val_robust_acc, or val_acc under --val-attack none; the earliest
    /// epoch on ties). model-best.safetensors (+ model-best.json) is
    /// written whenever --val-size > 0; under best the last weights stay
    /// in model-last.safetensors (+ model-last.json).
    #[arg(long, value_enum, default_value = "last")]
    pub select: Select,
}

impl Default for ValArgs {
    fn default() -> Self {
        ValArgs {
            val_size: 0,
            val_every: 1,
            val_attack: "pgd10".into(),
            val_objective: ValObjective::Loss,
            select: Select::Last,
        }
    }
}

/// Resolved validation of a run.
#[derive(Debug)]
pub struct ValPlan {
    pub split: Split,
    pub every: usize,
    /// The validation PGD (None: clean accuracy only).
    pub attack: Option<PgdConfig>,
    /// The per-sample objective's distance (kl: cross-entropy).
    pub objective: Divergence,
    pub select: Select,
    pub num_classes: i64,
}

impl ValArgs {
    /// Carves the validation split out of `data.train` and resolves the
    /// attack; None when `--val-size` is 0.
    ///
    /// Errors: [`Error::InvalidArgument`] naming --val-size (too large, not
    /// a classification set, with a score file: `reads_scores`), --val-every (0),
    /// --val-attack (not pgdK/none) or --select best without --val-size.
    pub fn resolve(
        &self,
        data: &mut Dataset,
        robust: &MethodArgs,
        seed: u64,
        reads_scores: bool,
    ) -> Result<Option<ValPlan>> {
        if self.val_size == 0 {
            return match self.select {
                Select::Best => Err(Error::invalid(
                    "--select",
                    "best",
                    "needs a validation split: pass --val-size N",
                )),
                Select::Last => Ok(None),
            };
        }
        if data.task != Task::Classification {
            return Err(Error::invalid(
                "--val-size",
                self.val_size,
                "needs a classification data set",
            ));
        }
        if reads_scores {
            return Err(Error::invalid(
                "--val-size",
                self.val_size,
                "cannot be combined with a --scores file, which indexes the whole training split: \
                 drop --val-size, or train the TASER penalty with --score-source instead of --scores",
            ));
        }
        if self.val_every == 0 {
            return Err(Error::invalid("--val-every", 0, "must be ≥ 1"));
        }
        let steps = match self.val_attack.as_str() {
            "none" => None,
            a => Some(
                a.strip_prefix("pgd")
                    .and_then(|k| k.parse::<usize>().ok())
                    .filter(|&k| k > 0)
                    .ok_or_else(|| {
                        Error::invalid(
                            "--val-attack",
                            a,
                            "must be pgdK (K ≥ 1, e.g. pgd10) or none",
                        )
                    })?,
            ),
        };
        let input_dim = data.input_shape.iter().product::<i64>() as usize;
        let attack = steps
            .map(|k| {
                robust
                    .training_attack(Method::PgdAt, data.name, input_dim)
                    .map(|cfg| PgdConfig {
                        steps: k,
                        bn_train: false,
                        ..cfg
                    })
            })
            .transpose()?;
        let (rest, split) = carve(&data.train, self.val_size, seed)?;
        data.train = rest;
        Ok(Some(ValPlan {
            split,
            every: self.val_every.max(1),
            attack,
            objective: match self.val_objective {
                ValObjective::Loss => robust.divergence,
                ValObjective::Ce => Divergence::Kl,
            },
            select: self.select,
            num_classes: data.num_outputs,
        }))
    }
}

/// Clean and robust accuracy on the validation split.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ValMetrics {
    pub acc: f64,
    pub robust_acc: Option<f64>,
}

impl ValMetrics {
    /// What selection maximises: the robust accuracy, else the clean one.
    pub fn criterion(&self) -> f64 {
        self.robust_acc.unwrap_or(self.acc)
    }
}

/// Offset mixed into an epoch's seed for the validation attack's starts.
pub const VALIDATION_ATTACK_STREAM: u64 = 0x7A11_A77C;

impl ValPlan {
    /// Whether 1-based `epoch` of `epochs` is validated.
    pub fn due(&self, epoch: usize, epochs: usize) -> bool {
        epoch == epochs || epoch.is_multiple_of(self.every)
    }

    /// Measures `model` (eval mode) in batches of `batch_size`; the PGD's
    /// random starts come from libtorch's generator seeded with `seed`.
    pub fn measure(&self, model: &Model, batch_size: usize, seed: u64) -> ValMetrics {
        tch::manual_seed((seed ^ VALIDATION_ATTACK_STREAM) as i64);
        let (n, device) = (self.split.len(), model.device());
        let correct = |x: &Tensor, y: &Tensor| {
            tch::no_grad(|| {
                model
                    .forward_t(x, false)
                    .argmax(-1, false)
                    .eq_tensor(y)
                    .sum(Kind::Int64)
                    .int64_value(&[])
            })
        };
        let (mut clean, mut robust) = (0i64, 0i64);
        let mut start = 0;
        while start < n {
            let len = (batch_size as i64).min(n - start);
            let x = self.split.x.narrow(0, start, len).to_device(device);
            let y = self.split.y.narrow(0, start, len).to_device(device);
            clean += correct(&x, &y);
            if let Some(cfg) = &self.attack {
                let hard = smoothed_targets(&y, self.num_classes, 0.0);
                let d = self.objective;
                let x_adv = pgd(model, &x, cfg, &|z: &Tensor| label_distance(d, z, &hard));
                robust += correct(&x_adv, &y);
            }
            start += len;
        }
        let frac = |c: i64| c as f64 / n.max(1) as f64;
        ValMetrics {
            acc: frac(clean),
            robust_acc: self.attack.is_some().then(|| frac(robust)),
        }
    }
}
