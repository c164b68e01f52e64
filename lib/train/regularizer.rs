//! The regulariser added to a method's loss: the TASER penalty λ(t)·R
//! (TASER eq. 25; SPEC §2) or, for comparison, ℓ2 on the parameters
//! λ·‖θ‖² (TASER Table 1).
use crate::data::augment::CropFlip;
use crate::data::{Dataset, Task};
use crate::error::{Error, Result};
use crate::models::Model;
use crate::score::file::ScoreFile;
use crate::score::{self, AnalyticSource, Gaussian, ScoreField};
use crate::stein::{self, Center, Laplacian, Mode, Order, Probe, ResidualOptions};
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Which regulariser `--lambda` weighs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Reg {
    /// The TASER Stein-residual penalty.
    Stein,
    /// λ·‖θ‖² over every trainable parameter (the toy's baseline).
    L2,
}

/// BatchNorm mode of the penalty's forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum BnMode {
    Eval,
    Train,
}

/// Flags of the regulariser (shared by `train` and `finetune`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct RegArgs {
    /// Regularisation strength λ_max (0: no penalty and no extra cost).
    #[arg(long, default_value_t = 0.0)]
    pub lambda: f64,
    /// Regulariser weighed by --lambda: stein (TASER) or l2 (λ‖θ‖²).
    #[arg(long, value_enum, default_value = "stein")]
    pub reg: Reg,
    /// Stein residual: full (Δm + s̃ᵀ∇m) or first-order (s̃ᵀ∇m).
    #[arg(long, value_enum, default_value = "full")]
    pub stein_order: Order,
    /// Derivatives by autograd (double backward) or fd (finite differences).
    #[arg(long, value_enum, default_value = "autograd")]
    pub stein_mode: Mode,
    /// Laplacian by Hutchinson probes or exactly (d ≤ 1024).
    #[arg(long, value_enum, default_value = "hutchinson")]
    pub stein_laplacian: Laplacian,
    /// Hutchinson probes K.
    #[arg(long, default_value_t = 1)]
    pub hutchinson_probes: i64,
    /// Probe m: margin (default for classifiers), logit, log-prob, prob; output for regression.
    #[arg(long, value_enum)]
    pub probe: Option<Probe>,
    /// Centre of the residuals: batch mean, global constant (calibration set), none.
    #[arg(long, value_enum, default_value = "batch")]
    pub center: Center,
    /// Stop the gradient through the batch mean (changes nothing with the exact mean).
    #[arg(long)]
    pub detach_mean: bool,
    /// Finite-difference step h (Euclidean length of each displacement, [0,1] pixel units).
    #[arg(long, default_value_t = 1e-2)]
    pub fd_step: f64,
    /// Steps of the linear λ ramp λ(t) = λ_max·min(1, t/T).
    #[arg(long, default_value_t = 0)]
    pub lambda_warmup_steps: usize,
    /// BatchNorm mode in the penalty's forward (eval: per-sample derivatives; train couples samples).
    #[arg(long, value_enum, default_value = "eval")]
    pub stein_bn: BnMode,
    /// Precomputed scores (HDF5 from score-precompute for this data set's training split).
    #[arg(long)]
    pub scores: Option<std::path::PathBuf>,
    /// Multiply the file's scores by its c_t = σ̂_t/σ̂_50 (TASER C.4).
    #[arg(long)]
    pub score_normalise: bool,
    /// Analytic score source when no --scores file is given: gaussian-fit (μ, Σ fitted) or gaussian-std (N(0, I)).
    #[arg(long, value_enum, default_value = "gaussian-fit")]
    pub score_source: AnalyticSource,
    /// Shrinkage α of the fitted covariance towards (tr Σ/d)·I.
    #[arg(long, default_value_t = 0.1)]
    pub score_shrinkage: f64,
    /// Training inputs used to estimate the global centre (--center global).
    #[arg(long, default_value_t = 512)]
    pub calibration_size: usize,
}

/// The regulariser's weight over training (SPEC §2):
/// λ(t) = λ_max·min(1, t/T_warm) at optimiser step t (0-based), λ_max
/// throughout when T_warm = 0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LambdaRamp {
    /// λ_max (`--lambda`), ≥ 0; 0 turns the regulariser off.
    pub max: f64,
    /// T_warm in optimiser steps (`--lambda-warmup-steps`, or the
    /// learning-rate warm-up's length when `finetune` ramps over it).
    pub warmup_steps: usize,
}

impl LambdaRamp {
    /// λ(t) at optimiser step `step`.
    pub fn at(&self, step: usize) -> f64 {
        stein::lambda_at(self.max, step, self.warmup_steps)
    }

    /// Whether any regulariser is active (λ_max > 0).
    pub fn active(&self) -> bool {
        self.max > 0.0
    }
}

impl RegArgs {
    /// Checks `--lambda` (the one place it is checked) and the residual's
    /// flags, and returns λ's ramp as the flags give it.
    ///
    /// Errors: [`Error::InvalidArgument`] for a λ that is negative or not a
    /// number, or a residual option out of its domain.
    pub fn ramp(&self) -> Result<LambdaRamp> {
        if !(self.lambda >= 0.0 && self.lambda.is_finite()) {
            return Err(Error::invalid(
                "--lambda",
                self.lambda,
                "must be a number ≥ 0",
            ));
        }
        self.residual_options().validate(1)?;
        Ok(LambdaRamp {
            max: self.lambda,
            warmup_steps: self.lambda_warmup_steps,
        })
    }

    pub fn residual_options(&self) -> ResidualOptions {
        ResidualOptions {
            order: self.stein_order,
            mode: self.stein_mode,
            laplacian: self.stein_laplacian,
            probes: self.hutchinson_probes,
            fd_step: self.fd_step,
        }
    }
}

/// Per-batch statistics of the Stein residual (detached).
#[derive(Debug)]
pub struct SteinStats {
    pub penalty: Tensor,
    pub residual_sum: Tensor,
    pub residual_sq_sum: Tensor,
}

/// The regulariser of a run, ready to use.
#[derive(Debug)]
pub enum Regularizer {
    None,
    L2 { lambda: f64 },
    Stein(SteinPenalty),
}

/// The TASER penalty with its score field and options.
#[derive(Debug)]
pub struct SteinPenalty {
    /// λ(t), the weight of R at each step.
    pub lambda: LambdaRamp,
    pub options: ResidualOptions,
    pub probe: Probe,
    pub center: Center,
    pub detach_mean: bool,
    pub bn_train: bool,
    /// The constant D of `--center global` (set by [`SteinPenalty::calibrate`]).
    pub global_center: f64,
    pub field: Box<dyn ScoreField>,
}

impl Regularizer {
    /// Builds the regulariser of `args` for `data`, weighed by `lambda`
    /// (from [`RegArgs::ramp`]; the ℓ2 term uses λ_max throughout).
    ///
    /// Errors: a probe that does not fit the task, residual options that do
    /// not fit the input size, or a score file that cannot be used.
    pub fn new(
        args: &RegArgs,
        lambda: LambdaRamp,
        data: &Dataset,
        device: tch::Device,
    ) -> Result<Regularizer> {
        if !lambda.active() {
            return Ok(Regularizer::None);
        }
        match args.reg {
            Reg::L2 => Ok(Regularizer::L2 { lambda: lambda.max }),
            Reg::Stein => {
                let probe = args.probe.unwrap_or(match data.task {
                    Task::Classification => Probe::Margin,
                    Task::Regression | Task::Posterior => Probe::Output,
                });
                stein::check_probe(probe, data.task)?;
                let options = args.residual_options();
                options.validate(data.input_shape.iter().product())?;
                let field: Box<dyn ScoreField> = match (&args.scores, args.score_source) {
                    (Some(path), _) => Box::new(ScoreFile::open(
                        path,
                        data,
                        "train",
                        args.score_normalise,
                        device,
                    )?),
                    (None, AnalyticSource::GaussianStd) => {
                        Box::new(Gaussian::standard(&data.input_shape).to_device(device))
                    }
                    (None, AnalyticSource::GaussianFit) => Box::new(
                        Gaussian::fit(&data.train.x, args.score_shrinkage)?.to_device(device),
                    ),
                };
                score::check_shape(field.as_ref(), &data.input_shape)?;
                Ok(Regularizer::Stein(SteinPenalty {
                    lambda,
                    options,
                    probe,
                    center: args.center,
                    detach_mean: args.detach_mean,
                    bn_train: args.stein_bn == BnMode::Train,
                    global_center: 0.0,
                    field,
                }))
            }
        }
    }
}

impl SteinPenalty {
    /// Residuals r(x) of `model` on the batch (`x`, `y`); `indices` locate
    /// the samples in the training split (for precomputed scores).
    pub fn residual(
        &self,
        model: &Model,
        x: &Tensor,
        y: &Tensor,
        indices: &[i64],
        aug: Option<&CropFlip>,
        create_graph: bool,
    ) -> Result<stein::Residual> {
        let score = self.field.score(x, indices, aug);
        let probe = self.probe;
        let bn_train = self.bn_train;
        stein::residual(
            |xx: &Tensor, yy: &Tensor| {
                stein::probe_values(&model.forward_t(xx, bn_train), yy, probe)
            },
            x,
            y,
            &score,
            &self.options,
            None,
            create_graph,
        )
    }

    /// λ(t)·R on the batch (augmented by `aug`, if any), and its statistics.
    pub fn term(
        &self,
        model: &Model,
        x: &Tensor,
        y: &Tensor,
        indices: &[i64],
        aug: Option<&CropFlip>,
        step: usize,
    ) -> Result<(Tensor, SteinStats)> {
        let r = self.residual(model, x, y, indices, aug, true)?.residual;
        let pen = stein::penalty(&r, self.center, self.detach_mean, self.global_center);
        let lambda = self.lambda.at(step);
        let rd = r.detach().to_kind(Kind::Double);
        let stats = SteinStats {
            penalty: pen.detach().to_kind(Kind::Double),
            residual_sum: rd.sum(Kind::Double),
            residual_sq_sum: rd.square().sum(Kind::Double),
        };
        Ok((pen * lambda, stats))
    }

    /// Estimates the global centre D ≈ E[r(X)] on `size` training inputs
    /// drawn with `seed` (TASER §3, "approximate scores and centering").
    pub fn calibrate(
        &mut self,
        model: &Model,
        data: &Dataset,
        size: usize,
        seed: u64,
    ) -> Result<f64> {
        let n = data.train.len() as usize;
        let k = size.clamp(1, n);
        let mut idx: Vec<i64> = sample(&mut ChaCha8Rng::seed_from_u64(seed), n, k)
            .into_iter()
            .map(|i| i as i64)
            .collect();
        idx.sort_unstable();
        let mut total = 0.0;
        for chunk in idx.chunks(256) {
            let t = Tensor::from_slice(chunk);
            let x = data.train.x.index_select(0, &t).to_device(model.device());
            let y = data.train.y.index_select(0, &t).to_device(model.device());
            let r = self.residual(model, &x, &y, chunk, None, false)?.residual;
            total += r.sum(Kind::Double).double_value(&[]);
        }
        self.global_center = total / k as f64;
        Ok(self.global_center)
    }
}

/// λ·‖θ‖² over the trainable parameters.
pub fn l2_term(model: &Model, lambda: f64) -> Tensor {
    let params = model.vs.trainable_variables();
    let total = params
        .iter()
        .map(|p| p.square().sum(Kind::Float))
        .reduce(|a, b| a + b)
        .unwrap_or_else(|| Tensor::zeros([], (Kind::Float, model.device())));
    total * lambda
}
