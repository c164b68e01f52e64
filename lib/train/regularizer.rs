//! The regulariser added to a method's loss: the TASER penalty λ(t)·R
//! (TASER eq. 25; SPEC §2) or, for comparison, ℓ2 on the parameters
//! λ·‖θ‖² (TASER Table 1) and the matched isotropic gradient penalty
//! λ·mean‖∇ₓm‖²; with the score controls `--score-permute` and
//! `--zero-scores` and the coordinates of `--stein-coordinates`.
use super::step::Batch;
use crate::data::augment::CropFlip;
use crate::data::{Dataset, Task};
use crate::error::{Error, Result};
use crate::models::Model;
use crate::score::file::ScoreFile;
use crate::score::{self, AnalyticSource, Gaussian, ScoreField};
use crate::stein::controls::{self, Coordinates, Rescale};
use crate::stein::floor::{self, has_batch_norm};
use crate::stein::{
    self, Center, Difference, Inputs, Laplacian, Mode, Order, Probe, ResidualOptions,
};
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
    /// Regularisation strength λ_max (0: no penalty and no extra cost).
    #[arg(long, default_value_t = 0.0)]
    pub lambda: f64,
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
    /// whole batch's R (variance ≈ (1 − f)/(f·B)·Var((rᵢ − c)²); README, "Speed").
    #[arg(long, default_value_t = 1.0)]
    #[serde(default = "full_fraction")]
    pub stein_fraction: f64,
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

fn full_fraction() -> f64 {
    1.0
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
        if !(self.stein_fraction > 0.0 && self.stein_fraction <= 1.0) {
            return Err(Error::invalid(
                "--stein-fraction",
                self.stein_fraction,
                "must be in (0, 1]",
            ));
        }
        self.check_controls()?;
        Ok(LambdaRamp {
            max: self.lambda,
            warmup_steps: self.lambda_warmup_steps,
        })
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
        if self.reg == Reg::GradNorm && (controls || self.scores.is_some()) {
            return refuse(
                "--reg",
                "grad-norm",
                "uses no score; drop --scores, --score-permute and --zero-scores",
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
        if self.zero_scores && self.scores.is_some() {
            return refuse(
                "--zero-scores",
                "set",
                "replaces every score by 0; drop --scores",
            );
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
}

/// Per-batch statistics of the penalty (detached).
#[derive(Debug)]
pub struct SteinStats {
    /// R (or mean‖∇ₓm‖² for `--reg grad-norm`), before λ.
    pub penalty: Tensor,
    /// Σ r and Σ r² over the batch; `None` for the gradient penalty.
    pub residual_sums: Option<[Tensor; 2]>,
}

/// The regulariser of a run, ready to use.
#[derive(Debug)]
pub enum Regularizer {
    None,
    L2 {
        lambda: f64,
    },
    /// The TASER penalty or, with `grad_norm`, its matched gradient penalty.
    Stein(SteinPenalty),
}

/// What replaces the score field's own scores (the controls).
#[derive(Debug, Clone, PartialEq)]
pub enum ScoreControl {
    /// The field's scores as they are.
    None,
    /// Sample i gets the stored score of sample `partner[i]` ≠ i
    /// (`--score-permute`; indices into the training split).
    Permute(Vec<i64>),
    /// s̃ ≡ 0 (`--zero-scores`).
    Zero,
}

/// Offset mixed into `--seed` for the permutation of `--score-permute`
/// (its own stream: ChaCha8 seeded with `seed ^ PERMUTE_STREAM`).
pub const PERMUTE_STREAM: u64 = 0x5C04_E59E;

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
    /// The score field (`None` with `--zero-scores` and `--reg grad-norm`).
    pub field: Option<Box<dyn ScoreField>>,
    pub control: ScoreControl,
    /// `--reg grad-norm`: λ·mean‖∇ₓm‖² instead of λ·R.
    pub grad_norm: bool,
    pub coordinates: Coordinates,
    /// `--stein-fraction` f: the penalty on ⌈f·B⌉ samples of each batch.
    pub fraction: f64,
    /// `--seed`, for the samples of `--stein-fraction`.
    pub seed: u64,
}

impl Regularizer {
    /// Builds the regulariser of `args` for `data`, weighed by `lambda`
    /// (from [`RegArgs::ramp`]; the ℓ2 term uses λ_max throughout); `seed`
    /// (`--seed`) draws the permutation of `--score-permute`.
    ///
    /// Errors: a probe that does not fit the task, residual options that do
    /// not fit the input size, or a score file that cannot be used.
    pub fn new(
        args: &RegArgs,
        lambda: LambdaRamp,
        data: &Dataset,
        device: tch::Device,
        seed: u64,
    ) -> Result<Regularizer> {
        if !lambda.active() {
            return Ok(Regularizer::None);
        }
        if args.reg == Reg::L2 {
            return Ok(Regularizer::L2 { lambda: lambda.max });
        }
        let probe = args.probe.unwrap_or(match data.task {
            Task::Classification => Probe::Margin,
            Task::Regression | Task::Posterior => Probe::Output,
        });
        stein::check_probe(probe, data.task)?;
        let options = args.residual_options();
        options.validate(data.input_shape.iter().product())?;
        let grad_norm = args.reg == Reg::GradNorm;
        let field = if grad_norm || args.zero_scores {
            None
        } else {
            Some(score_field(args, data, device)?)
        };
        let control = if args.zero_scores {
            ScoreControl::Zero
        } else if args.score_permute {
            let n = data.train.len() as usize;
            ScoreControl::Permute(controls::derangement(n, seed ^ PERMUTE_STREAM))
        } else {
            ScoreControl::None
        };
        Ok(Regularizer::Stein(SteinPenalty {
            lambda,
            options,
            probe,
            center: args.center,
            detach_mean: args.detach_mean,
            bn_train: args.stein_bn == BnMode::Train,
            global_center: 0.0,
            field,
            control,
            grad_norm,
            coordinates: args.stein_coordinates,
            fraction: args.stein_fraction,
            seed,
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

/// A batch in the coordinates of the penalty's derivatives.
pub struct Coordinated {
    /// The inputs (pixels, or z = (x − μ)/σ).
    pub x: Tensor,
    /// The scores in the same coordinates (`None` without a score).
    pub score: Option<Tensor>,
    /// The map back to pixels (`None` in pixel coordinates).
    pub rescale: Option<Rescale>,
}

impl SteinPenalty {
    /// s̃ for the batch in pixel coordinates after the controls (`None`
    /// for the gradient penalty).
    pub fn score(&self, x: &Tensor, indices: &[i64], aug: Option<&CropFlip>) -> Option<Tensor> {
        match (&self.control, &self.field) {
            (ScoreControl::Zero, _) => Some(x.zeros_like()),
            (_, None) => None,
            (ScoreControl::None, Some(f)) => Some(f.score(x, indices, aug)),
            (ScoreControl::Permute(partner), Some(f)) => {
                let other: Vec<i64> = indices.iter().map(|&i| partner[i as usize]).collect();
                Some(f.score(x, &other, aug))
            }
        }
    }

    /// The batch (`x` in pixels) in the penalty's coordinates, with its scores.
    pub fn coordinated(
        &self,
        model: &Model,
        x: &Tensor,
        indices: &[i64],
        aug: Option<&CropFlip>,
    ) -> Coordinated {
        let score = self.score(x, indices, aug);
        match self.coordinates {
            Coordinates::Pixel => Coordinated {
                x: x.shallow_clone(),
                score,
                rescale: None,
            },
            Coordinates::Model => {
                let (mean, std) = model.normalisation(x.dim());
                let r = Rescale { mean, std };
                Coordinated {
                    x: r.to_model(x),
                    score: score.map(|s| r.score_to_model(&s)),
                    rescale: Some(r),
                }
            }
        }
    }

    /// The probe m as a function of inputs in the penalty's coordinates
    /// (BatchNorm in train mode when `bn_train`).
    pub fn probe_fn<'a>(
        &self,
        model: &'a Model,
        rescale: Option<&'a Rescale>,
        bn_train: bool,
    ) -> impl Fn(&Tensor, &Tensor) -> Tensor + 'a {
        let probe = self.probe;
        move |xx: &Tensor, yy: &Tensor| {
            let out = match rescale {
                Some(r) => model.forward_t(&r.to_pixel(xx), bn_train),
                None => model.forward_t(xx, bn_train),
            };
            stein::probe_values(&out, yy, probe)
        }
    }

    /// Residuals r(x) of `model` on the batch (`x`, `y`); `indices` locate
    /// the samples in the training split (for precomputed scores).
    ///
    /// Errors: [`Error::InvalidArgument`] for the gradient penalty (no
    /// residual); the residual's.
    pub fn residual(
        &self,
        model: &Model,
        x: &Tensor,
        y: &Tensor,
        indices: &[i64],
        aug: Option<&CropFlip>,
        create_graph: bool,
    ) -> Result<stein::Residual> {
        let c = self.coordinated(model, x, indices, aug);
        let score = c.score.as_ref().ok_or_else(no_residual)?;
        let m = self.probe_fn(model, c.rescale.as_ref(), self.bn_train);
        stein::residual(m, &c.x, y, score, &self.options, None, create_graph)
    }

    /// λ(t)·R (or λ(t)·mean‖∇ₓm‖² for `--reg grad-norm`) on the batch
    /// (augmented by `batch.aug`, if any), and its statistics. `clean_logits`:
    /// the step's train-mode outputs on `batch.x`, if it made them; fd reuses
    /// them for m(x) when the model has no BatchNorm (its train and eval
    /// forwards agree) and the derivatives are in pixel coordinates.
    /// With `--stein-fraction` f < 1, R is taken on ⌈f·B⌉ samples drawn from
    /// the seed and `step` (see [`SteinPenalty::fraction_sample`]).
    pub fn term(
        &self,
        model: &Model,
        batch: &Batch,
        clean_logits: Option<&Tensor>,
        step: usize,
    ) -> Result<(Tensor, SteinStats)> {
        let lambda = self.lambda.at(step);
        let (x, y) = (batch.x, batch.y);
        let c = self.coordinated(model, x, batch.indices, batch.aug);
        let m = self.probe_fn(model, c.rescale.as_ref(), self.bn_train);
        if self.grad_norm {
            let (_, grad) = controls::input_gradient(m, &c.x, y, true)?;
            let pen = controls::grad_norm_penalty(&grad);
            let stats = SteinStats {
                penalty: pen.detach().to_kind(Kind::Double),
                residual_sums: None,
            };
            return Ok((pen * lambda, stats));
        }
        let score = c.score.as_ref().ok_or_else(no_residual)?;
        let reuse = self.options.mode == Mode::Fd
            && c.rescale.is_none()
            && !self.bn_train
            && !has_batch_norm(model);
        let clean = clean_logits
            .filter(|_| reuse)
            .map(|z| stein::probe_values(z, y, self.probe));
        let b = x.size()[0];
        let keep = floor::fraction_sample(self.fraction, self.seed, b, step, x.device());
        let sub = |t: &Tensor| match &keep {
            Some(k) => t.index_select(0, k),
            None => t.shallow_clone(),
        };
        let (xs, ys, ss, cs) = (sub(&c.x), sub(y), sub(score), clean.as_ref().map(sub));
        let inputs = Inputs {
            x: &xs,
            y: &ys,
            score: &ss,
            probes: None,
            clean: cs.as_ref(),
        };
        let r = stein::residual_of(m, &inputs, &self.options, true)?.residual;
        let n = xs.size()[0];
        let correction = floor::fraction_correction(n, b, self.center);
        let pen =
            stein::penalty(&r, self.center, self.detach_mean, self.global_center) * correction;
        let rd = r.detach().to_kind(Kind::Double);
        let scale = b as f64 / n as f64;
        let stats = SteinStats {
            penalty: pen.detach().to_kind(Kind::Double),
            residual_sums: Some([
                rd.sum(Kind::Double) * scale,
                rd.square().sum(Kind::Double) * scale,
            ]),
        };
        Ok((pen * lambda, stats))
    }

    /// Whether the run needs the global centre (`--center global` on a
    /// residual penalty).
    pub fn needs_calibration(&self) -> bool {
        self.center == Center::Global && !self.grad_norm
    }

    /// Estimates the global centre D ≈ E[r(X)] of the current `model` on
    /// `size` training inputs drawn with `seed` (TASER §3, "approximate
    /// scores and centering"); the trainer calls it at the start of every
    /// epoch, so D follows the model.
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

/// The error of asking the gradient penalty for a residual.
fn no_residual() -> Error {
    Error::invalid("--reg", "grad-norm", "has no Stein residual")
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{Activation, Arch, ModelSpec};
    use tch::Device;

    /// Scores that name their sample: s̃ of sample i is i + 1 everywhere.
    #[derive(Debug)]
    struct IndexField(Vec<i64>);

    impl ScoreField for IndexField {
        fn input_shape(&self) -> &[i64] {
            &self.0
        }
        fn score(&self, x: &Tensor, indices: &[i64], _: Option<&CropFlip>) -> Tensor {
            let v: Vec<f64> = indices.iter().map(|&i| (i + 1) as f64).collect();
            let mut shape = vec![indices.len() as i64];
            shape.extend(std::iter::repeat_n(1, x.dim() - 1));
            Tensor::from_slice(&v)
                .view(shape.as_slice())
                .expand_as(x)
                .to_kind(x.kind())
        }
        fn describe(&self) -> String {
            "index".into()
        }
    }

    /// A one-channel smooth classifier on 2×2 inputs normalised by (μ, σ).
    fn model(mean: f32, std: f32) -> Model {
        tch::manual_seed(5);
        let spec = ModelSpec {
            arch: Arch::Mlp,
            activation: Activation::Tanh,
            mlp_hidden: vec![8],
            input_shape: vec![1, 2, 2],
            num_outputs: 3,
        };
        let mut m = Model::new(&spec, Device::Cpu, &[mean], &[std]).unwrap();
        m.set_kind(Kind::Double);
        m
    }

    fn penalty(
        field: Option<Box<dyn ScoreField>>,
        control: ScoreControl,
        laplacian: Laplacian,
    ) -> SteinPenalty {
        SteinPenalty {
            lambda: LambdaRamp {
                max: 1.0,
                warmup_steps: 0,
            },
            options: ResidualOptions {
                order: Order::Full,
                mode: Mode::Autograd,
                laplacian,
                probes: 1,
                fd_step: 1e-3,
                difference: Difference::Central,
            },
            probe: Probe::Margin,
            center: Center::Batch,
            detach_mean: false,
            bn_train: false,
            global_center: 0.0,
            field,
            control,
            grad_norm: false,
            coordinates: Coordinates::Pixel,
            fraction: 1.0,
            seed: 0,
        }
    }

    /// A batch of every sample of `x` (indices 0..B), without augmentation.
    fn whole_batch<'a>(x: &'a Tensor, y: &'a Tensor, idx: &'a [i64]) -> Batch<'a> {
        Batch {
            x,
            y,
            indices: idx,
            aug: None,
        }
    }

    /// A score field whose score of sample i is i + 1 on a 1×2×2 input.
    fn index_field() -> Option<Box<dyn ScoreField>> {
        Some(Box::new(IndexField(vec![1, 2, 2])))
    }

    #[test]
    fn permuted_scores_keep_their_multiset_and_come_from_another_sample() {
        let n = 300;
        let partner = controls::derangement(n, 9 ^ PERMUTE_STREAM);
        let field = Box::new(IndexField(vec![1, 2, 2]));
        let p = penalty(
            Some(field),
            ScoreControl::Permute(partner.clone()),
            Laplacian::Exact,
        );
        let all: Vec<i64> = (0..n as i64).collect();
        let x = Tensor::zeros([n as i64, 1, 2, 2], (Kind::Double, Device::Cpu));
        let s = p.score(&x, &all, None).unwrap();
        let got: Vec<i64> = Vec::<f64>::try_from(s.select(1, 0).select(1, 0).select(1, 0))
            .unwrap()
            .into_iter()
            .map(|v| v as i64 - 1)
            .collect();
        assert_eq!(got, partner);
        let mut sorted = got.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, all, "the multiset of scores is unchanged");
        assert!(
            got.iter().zip(&all).all(|(a, b)| a != b),
            "every sample gets another's score"
        );
        // A batch in any order gets its samples' partners.
        let batch = [17i64, 3, 250];
        let sb = p.score(&x.narrow(0, 0, 3), &batch, None).unwrap();
        assert_eq!(
            Vec::<f64>::try_from(sb.flatten(1, -1).select(1, 0)).unwrap(),
            batch
                .iter()
                .map(|&i| (partner[i as usize] + 1) as f64)
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn zero_scores_give_the_laplacian_alone() {
        let m = model(0.4, 0.3);
        let x = Tensor::rand([6, 1, 2, 2], (Kind::Double, Device::Cpu));
        let y = Tensor::from_slice(&[0i64, 1, 2, 0, 1, 2]);
        let p = penalty(None, ScoreControl::Zero, Laplacian::Exact);
        let r = p
            .residual(&m, &x, &y, &[0, 1, 2, 3, 4, 5], None, false)
            .unwrap();
        assert_eq!(r.first_order.abs().max().double_value(&[]), 0.0);
        assert!(r.residual.equal(r.laplacian.as_ref().unwrap()));
        assert!(r.residual.abs().max().double_value(&[]) > 0.0);
    }

    #[test]
    fn model_coordinates_scale_a_one_channel_residual_by_std_squared() {
        let sigma = 0.3f64;
        let m = model(0.4, sigma as f32);
        let x = Tensor::rand([8, 1, 2, 2], (Kind::Double, Device::Cpu));
        let y = Tensor::from_slice(&[0i64, 1, 2, 0, 1, 2, 0, 1]);
        let idx: Vec<i64> = (0..8).collect();
        let pixel = penalty(index_field(), ScoreControl::None, Laplacian::Exact);
        let mut model_c = penalty(index_field(), ScoreControl::None, Laplacian::Exact);
        model_c.coordinates = Coordinates::Model;
        let rp = pixel
            .residual(&m, &x, &y, &idx, None, false)
            .unwrap()
            .residual;
        let rm = model_c
            .residual(&m, &x, &y, &idx, None, false)
            .unwrap()
            .residual;
        let s2 = (sigma as f32 as f64).powi(2);
        let err = (&rm - &rp * s2).abs().max().double_value(&[]);
        assert!(
            err < 1e-9 * rp.abs().max().double_value(&[]),
            "r_model − σ²r_pixel: {err}"
        );
        let (pp, pm) = (
            stein::penalty(&rp, Center::Batch, false, 0.0).double_value(&[]),
            stein::penalty(&rm, Center::Batch, false, 0.0).double_value(&[]),
        );
        println!(
            "R_pixel {pp:.6e}, R_model {pm:.6e}, σ⁴ R_pixel {:.6e}",
            s2 * s2 * pp
        );
        assert!((pm - s2 * s2 * pp).abs() < 1e-9 * pm);
    }

    #[test]
    fn a_fraction_of_the_batch_estimates_the_whole_batch_penalty_without_bias() {
        let m = model(0.4, 0.3);
        tch::manual_seed(2);
        let b = 40i64;
        let x = Tensor::rand([b, 1, 2, 2], (Kind::Double, Device::Cpu));
        let y = Tensor::arange(b, (Kind::Int64, Device::Cpu)).remainder(3);
        let idx: Vec<i64> = (0..b).collect();
        let batch = whole_batch(&x, &y, &idx);
        for center in [Center::Batch, Center::None] {
            let mut p = penalty(index_field(), ScoreControl::None, Laplacian::Exact);
            p.options.order = Order::FirstOrder;
            p.center = center;
            let pen = |p: &SteinPenalty, step| {
                p.term(&m, &batch, None, step)
                    .unwrap()
                    .1
                    .penalty
                    .double_value(&[])
            };
            let whole = pen(&p, 0);
            p.fraction = 0.25;
            p.seed = 7;
            let draws: Vec<f64> = (0..600).map(|t| pen(&p, t)).collect();
            let n = draws.len() as f64;
            let mean = draws.iter().sum::<f64>() / n;
            let sd = (draws.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
            let se = sd / n.sqrt();
            println!(
                "{center:?}: R {whole:.6e}, fraction mean {mean:.6e} ± {se:.2e} (sd {sd:.2e})"
            );
            assert!(se > 0.0, "subsets should differ between steps");
            // Unbiased: the mean of 600 draws within 4 standard errors of R.
            assert!(
                (mean - whole).abs() < 4.0 * se,
                "{center:?}: {mean} vs {whole}"
            );
            // Same seed and step → same subset and value.
            assert_eq!(pen(&p, 3), draws[3]);
        }
    }

    #[test]
    fn one_sided_fd_reusing_the_clean_logits_agrees_with_central_fd() {
        let m = model(0.4, 0.3);
        assert!(!has_batch_norm(&m));
        let x = Tensor::rand([8, 1, 2, 2], (Kind::Double, Device::Cpu));
        let y = Tensor::from_slice(&[0i64, 1, 2, 0, 1, 2, 0, 1]);
        let idx: Vec<i64> = (0..8).collect();
        let batch = whole_batch(&x, &y, &idx);
        let mut p = penalty(index_field(), ScoreControl::None, Laplacian::Exact);
        p.options.order = Order::FirstOrder;
        p.options.mode = Mode::Fd;
        p.options.fd_step = 1e-5;
        let central = p.term(&m, &batch, None, 0).unwrap().0;
        p.options.difference = Difference::Forward;
        let before = m.forward_calls();
        let clean = m.forward_t(&x, true);
        let one_sided = p.term(&m, &batch, Some(&clean), 0).unwrap().0;
        assert_eq!(
            m.forward_calls() - before,
            2,
            "one forward for the step, one for x + hŝ"
        );
        let (c, o) = (central.double_value(&[]), one_sided.double_value(&[]));
        // O(h) truncation at h = 1e-5: 1e-3 relative.
        assert!((c - o).abs() < 1e-3 * c.abs(), "{o} vs {c}");
    }
}
