//! The flags of the regulariser (`--lambda`, `--reg`, the residual's and the
//! controls' options), shared by `train` and `finetune`, and their
//! resolution into a ready [`Regularizer`]: λ's ramp, the rules between the
//! flags, the score field opened and checked against the data.
use super::chunk_size::PenaltyChunk;
use super::controls::derangement;
use super::coordinates::Coordinates;
use super::estimator::Estimator;
use super::ramp::LambdaRamp;
use super::strength::Strength;
use super::{Regularizer, ScoreControl, SteinPenalty, PERMUTE_STREAM};
use crate::data::{Dataset, Task};
use crate::error::{Error, Result};
use crate::score::file::ScoreFile;
use crate::score::{self, AnalyticSource, Gaussian, ScoreField};
use crate::stein::{self, Center, Difference, Laplacian, Mode, Order, Probe, ResidualOptions};
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// Which regulariser `--lambda` weighs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Reg {
    /// The TASER Stein-residual penalty.
    Stein,
    /// λ·‖θ‖² over every trainable parameter (the toy's baseline).
    L2,
    /// λ·mean‖∇ₓm‖²: the isotropic gradient penalty matched to the TASER
    /// one (same probe m, coordinates and batch; no score).
    GradNorm,
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
    /// Regularisation strength λ_max (0: no penalty; with --scores the
    /// penalty is still measured after every epoch, metrics.csv's
    /// instrument columns, at the cost of the instruments alone).
    #[arg(long, default_value_t = 0.0)]
    pub lambda: f64,
    /// A control (--reg grad-norm, --score-permute or --zero-scores) trains with the λ that
    /// matches TASER at this λ₀: λ = λ₀·R_TASER/P_control, both penalties taken at the run's
    /// starting weights on the instruments' fixed probe batch (256 training inputs from --seed),
    /// R_TASER with the run's residual flags and real scores (--scores, or --score-source).
    /// Replaces --lambda; the sidecar records λ₀, λ and both penalties (strength_match).
    #[arg(long, value_name = "LAMBDA0")]
    #[serde(default)]
    pub lambda_match: Option<f64>,
    /// Regulariser weighed by --lambda: stein (TASER), l2 (λ‖θ‖²) or
    /// grad-norm (λ·mean‖∇ₓm‖² of the probe m, the matched control; no score).
    #[arg(long, value_enum, default_value = "stein")]
    pub reg: Reg,
    /// Control: hand sample i the precomputed score of sample π(i) ≠ i, π a
    /// random cyclic permutation (a derangement) of the training split drawn
    /// from --seed; the scores' multiset is unchanged. Needs --scores.
    #[arg(long)]
    #[serde(default)]
    pub score_permute: bool,
    /// Control: s̃ ≡ 0, so the residual is the Laplacian term alone (r = Δm).
    /// Takes no --scores; needs --stein-order full.
    #[arg(long)]
    #[serde(default)]
    pub zero_scores: bool,
    /// Coordinates of ∇ₓ and Δ: pixel ([0,1] inputs; the default, as before
    /// this flag) or model (the normalised z = (x − μ_c)/σ_c: each pixel's
    /// terms of r scaled by σ_c², so R by σ⁴ on one channel).
    #[arg(long, value_enum, default_value = "pixel")]
    #[serde(default)]
    pub stein_coordinates: Coordinates,
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
    /// Estimator of the penalty from Hutchinson residuals: plain ((1/B)Σ(r̂ᵢ − ĉ)², TASER's
    /// Algorithm 1; biased upwards by the probes' variance) or unbiased (the product of two
    /// residuals from independent sets of K probes each: twice the probes, E = the exact R).
    /// unbiased needs --reg stein, --stein-order full and --stein-laplacian hutchinson; with
    /// --reg grad-norm --lambda-match it names the estimator of the TASER penalty matched.
    #[arg(long, value_enum, default_value = "plain")]
    #[serde(default)]
    pub stein_estimator: Estimator,
    /// Probe m: margin (default for classifiers), logit, log-prob, prob; output for regression.
    #[arg(long, value_enum)]
    pub probe: Option<Probe>,
    /// Centre of the residuals: batch mean, global constant (re-estimated on
    /// --calibration-size training inputs at the start of every epoch), none.
    #[arg(long, value_enum, default_value = "batch")]
    pub center: Center,
    /// Stop the gradient through the batch mean (changes nothing with the exact mean).
    #[arg(long)]
    pub detach_mean: bool,
    /// Finite-difference step h (Euclidean length of each displacement, in [0,1] pixel units, or
    /// in normalised units with --stein-coordinates model).
    #[arg(long, default_value_t = 1e-2)]
    pub fd_step: f64,
    /// fd first-order term: central ‖s̃‖·[m(x+hŝ) − m(x−hŝ)]/2h (O(h²)) or forward
    /// ‖s̃‖·[m(x+hŝ) − m(x)]/h (O(h)); forward reuses the step's clean forward for m(x)
    /// when the model has no BatchNorm (pixel coordinates), so the penalty costs one
    /// extra forward+backward of the batch. The full residual's m(x) is reused likewise.
    #[arg(long, value_enum, default_value = "central")]
    #[serde(default)]
    pub fd_difference: Difference,
    /// Penalty on a fraction f ∈ (0, 1] of each batch: ⌈f·B⌉ samples drawn without
    /// replacement from --seed and the step, R rescaled to an unbiased estimate of the
    /// whole batch's R (variance ≈ (1 − f)/(f·B)·Var((rᵢ − c)²); docs/SPEED.md).
    #[arg(long, default_value_t = 1.0)]
    #[serde(default = "full_fraction")]
    pub stein_fraction: f64,
    /// Steps of the linear λ ramp λ(t) = λ_max·min(1, t/T).
    #[arg(long, default_value_t = 0)]
    pub lambda_warmup_steps: usize,
    /// BatchNorm mode in the penalty's forward (eval: per-sample derivatives; train couples samples).
    #[arg(long, value_enum, default_value = "eval")]
    pub stein_bn: BnMode,
    /// Back-propagate the penalty N samples at a time: the exact parameter gradient of the whole
    /// batch's λ·R (batch mean and weights taken first, without a graph) with one chunk's
    /// double-backward graph in memory instead of the batch's, for one more residual evaluation
    /// (docs/METHOD.md, "Chunked penalty"). `auto`: the largest chunk whose graph fits in half
    /// the device's free memory, measured on an 8-sample trial chunk before the first epoch
    /// (recorded as penalty_chunk in model.json). Unset: the whole batch at once. Not with
    /// --stein-bn train (its samples interact) or --reg l2.
    #[arg(long, value_name = "N|auto")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub penalty_chunk: Option<PenaltyChunk>,
    /// Precomputed scores (HDF5 from score-precompute for this data set's training split);
    /// with --lambda 0 they feed the instruments only (the λ = 0 control of a study).
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

fn full_fraction() -> f64 {
    1.0
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
        if let Some(l0) = self.lambda_match {
            self.check_match(l0)?;
        }
        self.residual_options().check(1)?;
        if !(self.stein_fraction > 0.0 && self.stein_fraction <= 1.0) {
            return Err(Error::invalid(
                "--stein-fraction",
                self.stein_fraction,
                "must be in (0, 1]",
            ));
        }
        self.check_controls()?;
        Ok(LambdaRamp {
            max: self.lambda_match.unwrap_or(self.lambda),
            warmup_steps: self.lambda_warmup_steps,
        })
    }

    /// The rules of `--lambda-match λ₀`: a number > 0, instead of
    /// `--lambda`, on a control of the residual penalty with a centre known
    /// before training.
    ///
    /// Errors: [`Error::InvalidArgument`] naming the flag to change.
    fn check_match(&self, lambda0: f64) -> Result<()> {
        let refuse = |reason: &str| {
            Err(Error::invalid(
                "--lambda-match",
                lambda0,
                reason.to_string(),
            ))
        };
        if !(lambda0 > 0.0 && lambda0.is_finite()) {
            return refuse("must be a number > 0");
        }
        if self.lambda != 0.0 {
            return refuse("replaces --lambda with the matched λ; drop --lambda");
        }
        if !(self.reg == Reg::GradNorm || self.score_permute || self.zero_scores) {
            return refuse("matches a control to TASER; add --reg grad-norm, --score-permute or --zero-scores (TASER itself takes --lambda)");
        }
        if self.center == Center::Global {
            return refuse(
                "needs a centre known at the starting weights; use --center batch or none",
            );
        }
        Ok(())
    }

    /// The rules between the control flags and the regulariser's others.
    ///
    /// Errors: [`Error::InvalidArgument`] naming the flag to drop or add.
    fn check_controls(&self) -> Result<()> {
        let refuse = |flag: &str, value: &str, reason: &str| {
            Err(Error::invalid(flag, value, reason.to_string()))
        };
        let controls = self.score_permute || self.zero_scores;
        if self.reg == Reg::L2 && (controls || self.stein_coordinates == Coordinates::Model) {
            return refuse(
                "--reg",
                "l2",
                "takes no input derivatives; drop --score-permute, --zero-scores and --stein-coordinates",
            );
        }
        let reference_scores = self.scores.is_some() && self.lambda_match.is_none();
        if self.reg == Reg::GradNorm && (controls || reference_scores) {
            return refuse(
                "--reg",
                "grad-norm",
                "uses no score (--scores only names TASER's with --lambda-match); drop --scores, --score-permute and --zero-scores",
            );
        }
        if self.score_permute && self.zero_scores {
            return refuse("--score-permute", "set", "permuting zero scores changes nothing; choose one of --score-permute and --zero-scores");
        }
        if self.score_permute && self.scores.is_none() {
            return refuse(
                "--score-permute",
                "set",
                "permutes precomputed scores by sample; pass --scores FILE",
            );
        }
        if self.zero_scores && reference_scores {
            return refuse(
                "--zero-scores",
                "set",
                "replaces every score by 0 (--scores only names TASER's with --lambda-match); drop --scores",
            );
        }
        // A matched grad-norm control takes TASER's estimator for its
        // reference penalty R_TASER (strength.rs); its own has no probes.
        let estimated_reg =
            self.reg == Reg::Stein || (self.reg == Reg::GradNorm && self.lambda_match.is_some());
        if self.stein_estimator == Estimator::Unbiased
            && (!estimated_reg
                || self.stein_order != Order::Full
                || self.stein_laplacian != Laplacian::Hutchinson)
        {
            return refuse(
                "--stein-estimator",
                "unbiased",
                "removes the Hutchinson probes' noise, which only the full residual with probes has; use --reg stein (or --reg grad-norm with --lambda-match) --stein-order full --stein-laplacian hutchinson, or --stein-estimator plain",
            );
        }
        if let Some(n) = self.penalty_chunk {
            if n == PenaltyChunk::Samples(0) {
                return refuse("--penalty-chunk", "0", "must be at least 1 sample, or auto");
            }
            if self.stein_bn == BnMode::Train {
                return refuse(
                    "--penalty-chunk",
                    &n.to_string(),
                    "splits the penalty by samples, which --stein-bn train couples through the batch statistics; leave out --penalty-chunk, or use --stein-bn eval",
                );
            }
            if self.reg == Reg::L2 {
                return refuse(
                    "--penalty-chunk",
                    &n.to_string(),
                    "splits the Stein or grad-norm penalty by samples; --reg l2 has no per-sample penalty to split: leave out --penalty-chunk",
                );
            }
        }
        if self.zero_scores && self.stein_order == Order::FirstOrder {
            return refuse(
                "--zero-scores",
                "set",
                "makes the first-order residual identically 0; use --stein-order full",
            );
        }
        Ok(())
    }

    pub fn residual_options(&self) -> ResidualOptions {
        ResidualOptions {
            order: self.stein_order,
            mode: self.stein_mode,
            laplacian: self.stein_laplacian,
            probes: self.hutchinson_probes,
            fd_step: self.fd_step,
            difference: self.fd_difference,
        }
    }

    /// Whether the run's penalty takes finite differences: the TASER
    /// penalty is on (λ > 0, `--reg stein`) with `--stein-mode fd`.
    pub fn uses_fd(&self) -> bool {
        self.weighs() && self.reg == Reg::Stein && self.stein_mode == Mode::Fd
    }

    /// Whether the regulariser is on: λ > 0 or `--lambda-match`.
    pub fn weighs(&self) -> bool {
        self.lambda > 0.0 || self.lambda_match.is_some()
    }

    /// Whether the penalty is measured but not trained on: λ = 0 with
    /// `--reg stein` and `--scores` (the λ = 0 control of a study), so the
    /// instruments record what the penalty would be.
    pub fn watches(&self) -> bool {
        !self.weighs() && self.reg == Reg::Stein && self.scores.is_some()
    }

    /// Whether the run reads a precomputed score file: the TASER penalty is
    /// on (λ > 0, `--reg stein`) or watched (λ = 0) with `--scores`, or a
    /// control matches TASER's strength with `--scores`. Such a file holds
    /// one score per sample of the whole training split, by index.
    pub fn reads_score_file(&self) -> bool {
        self.scores.is_some()
            && (self.reg == Reg::Stein || self.lambda_match.is_some())
            && (self.weighs() || self.watches())
    }
}

impl RegArgs {
    /// Builds the regulariser of these flags for `data`, weighed by `ramp`
    /// (from [`RegArgs::ramp`]; the ℓ2 term uses λ_max throughout); `seed`
    /// (`--seed`) draws the permutation of `--score-permute`. A watched
    /// penalty ([`RegArgs::watches`]) is a TASER penalty whose ramp is 0:
    /// the step leaves it out, the instruments measure it.
    ///
    /// Errors: a probe that does not fit the task, residual options that do
    /// not fit the input size, or a score file that cannot be used.
    pub fn build(
        &self,
        ramp: LambdaRamp,
        data: &Dataset,
        device: tch::Device,
        seed: u64,
    ) -> Result<Regularizer> {
        if !ramp.active() && !self.watches() {
            return Ok(Regularizer::None);
        }
        if self.reg == Reg::L2 {
            return Ok(Regularizer::L2 { lambda: ramp.max });
        }
        let probe = self.probe.unwrap_or(match data.task {
            Task::Classification => Probe::Margin,
            Task::Regression | Task::Posterior => Probe::Output,
        });
        stein::check_probe(probe, data.task)?;
        let options = self.residual_options();
        options.check(data.input_shape.iter().product())?;
        let grad_norm = self.reg == Reg::GradNorm;
        let own_field = !(grad_norm || self.zero_scores);
        let field = if own_field {
            Some(score_field(self, data, device)?)
        } else {
            None
        };
        let strength = match self.lambda_match {
            None => Strength::Given,
            Some(lambda0) => Strength::Match {
                lambda0,
                field: if own_field {
                    None
                } else {
                    Some(score_field(self, data, device)?)
                },
            },
        };
        let control = if self.zero_scores {
            ScoreControl::Zero
        } else if self.score_permute {
            let n = data.train.len() as usize;
            let partner = derangement(n, seed ^ PERMUTE_STREAM);
            ScoreControl::Permute(Tensor::from_slice(&partner).to_device(device))
        } else {
            ScoreControl::None
        };
        Ok(Regularizer::Stein(SteinPenalty {
            ramp,
            options,
            estimator: self.stein_estimator,
            probe,
            center: self.center,
            detach_mean: self.detach_mean,
            bn_train: self.stein_bn == BnMode::Train,
            global_center: 0.0,
            field,
            control,
            grad_norm,
            coordinates: self.stein_coordinates,
            fraction: self.stein_fraction,
            seed,
            strength,
            chunk: match self.penalty_chunk {
                Some(PenaltyChunk::Samples(n)) => Some(n),
                _ => None,
            },
            auto_chunk: self.penalty_chunk == Some(PenaltyChunk::Auto),
        }))
    }
}

/// The score field of `args` (file or analytic), checked against the data.
fn score_field(args: &RegArgs, data: &Dataset, device: tch::Device) -> Result<Box<dyn ScoreField>> {
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
        (None, AnalyticSource::GaussianFit) => {
            Box::new(Gaussian::fit(&data.train.x, args.score_shrinkage)?.to_device(device))
        }
    };
    score::check_shape(field.as_ref(), &data.input_shape)?;
    Ok(field)
}
