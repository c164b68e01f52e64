//! `score-precompute`: computes a score field for every input of a split
//! and writes the HDF5 file of [`super::file`].
use super::dsm::{DsmConfig, DsmNet};
use super::file::{Compression, ScoreFileMeta, ScoreWriter};
use super::gmm::Gmm;
use super::torchscript::{InputRange, ScoreInput, TorchScriptEps};
use super::{check_shape, Gaussian, ScoreField};
use crate::data::{self, Dataset, DatasetName, Split};
use crate::error::{Error, Result};
use crate::fsutil::write_atomically;
use crate::progress;
use crate::runtime::{Runtime, RuntimeArgs};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Score sources (docs/METHOD.md, "Score sources").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// N(0, I): s(x) = −x.
    GaussianStd,
    /// N(μ, Σ) fitted on the training split with shrinkage: s = −Σ⁻¹(x − μ)
    /// (`train --score-source gaussian-fit` without a file; old spelling
    /// `gaussian` accepted).
    #[value(alias = "gaussian")]
    #[serde(alias = "gaussian")]
    GaussianFit,
    /// Class-conditional Gaussians; the marginal mixture's score.
    Gmm,
    /// A network trained here by denoising score matching at --dsm-sigma.
    Dsm,
    /// A traced ε-prediction diffusion model (--model): s = −ε/σ_t.
    Torchscript,
}

/// Which split to compute scores for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SplitName {
    Train,
    Test,
}

/// Every flag of `score-precompute` (recorded in the file's `source_config`).
#[derive(Debug, Clone, Serialize, Deserialize, clap::Args)]
pub struct PrecomputeArgs {
    /// Data set: digits, mnist, mnist-5k, cifar10, cifar100, toy-sin.
    #[arg(long, default_value = "digits")]
    pub dataset: DatasetName,
    /// Split whose inputs get scores (training uses train).
    #[arg(long, value_enum, default_value = "train")]
    pub split: SplitName,
    /// Score source.
    #[arg(long, value_enum)]
    pub source: Source,
    /// Output HDF5 file (written under a temporary name, renamed when complete).
    #[arg(long)]
    pub out: PathBuf,
    /// Replace --out if it exists (refused without it, so a model's record
    /// of its score file stays true). Not recorded in `source_config`.
    #[arg(long)]
    #[serde(skip)]
    pub overwrite: bool,
    /// Samples per batch (memory is bounded by one batch).
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// Where to run (`--device`, `--data-dir`, `--threads`).
    #[command(flatten)]
    #[serde(flatten)]
    pub runtime: RuntimeArgs,
    /// Seed (DSM training, noised inputs, toy data).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Covariance shrinkage α of gaussian and gmm: (1 − α)Σ + α·(tr Σ/d)·I.
    #[arg(long, default_value_t = 0.1)]
    pub shrinkage: f64,
    /// DSM noise level σ ([0,1] pixel units).
    #[arg(long, default_value_t = 0.1)]
    pub dsm_sigma: f64,
    /// DSM training steps.
    #[arg(long, default_value_t = 2000)]
    pub dsm_steps: usize,
    /// DSM batch size.
    #[arg(long, default_value_t = 128)]
    pub dsm_batch_size: usize,
    /// DSM learning rate (Adam, cosine decay to 10%).
    #[arg(long, default_value_t = 1e-3)]
    pub dsm_lr: f64,
    /// Reuse a DSM network saved earlier instead of training one.
    #[arg(long)]
    pub dsm_model: Option<PathBuf>,
    /// Where to save the trained DSM network (default: beside --out, `.dsm.safetensors`).
    #[arg(long)]
    pub dsm_save: Option<PathBuf>,
    /// TorchScript ε-model file (source torchscript).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Diffusion timestep t (linear-β DDPM schedule, 0-based; σ_50 ≈ 0.1733).
    #[arg(long, default_value_t = 50)]
    pub t: i64,
    /// Where the score is evaluated (dsm and torchscript): at the clean
    /// input, or at a noised one drawn from --seed (dsm: x + σξ with the
    /// network's σ; torchscript: u_t = √ᾱ_t·u + σ_t·ξ). The file records it
    /// in its source_config.
    #[arg(long, value_enum, default_value = "clean")]
    pub score_input: ScoreInput,
    /// The ε-model's input coordinates (minus-one-one: u = 2x − 1).
    #[arg(long, value_enum, default_value = "minus-one-one")]
    pub input_range: InputRange,
    /// Inputs used to estimate c_t = σ̂_t/σ̂_50 (torchscript).
    #[arg(long, default_value_t = 512)]
    pub calibration_size: usize,
    /// Filter of the file's /score dataset: none (default; about the speed of a plain
    /// write), gzip1 or gzip4 (shuffle + deflate: random-like scores shrink ~14% and
    /// wrote ×24–×34 slower). h5py reads all three without plugins.
    #[arg(long, value_enum, default_value = "none")]
    #[serde(default)]
    pub compression: Compression,
}

/// What a finished precompute reports.
#[derive(Debug, Clone)]
pub struct PrecomputeSummary {
    pub path: PathBuf,
    pub samples: usize,
    pub score_std: f64,
    pub c_t: f64,
    /// Seconds spent computing and writing scores (after fitting/training).
    pub seconds: f64,
    /// Seconds spent fitting or training the source.
    pub setup_seconds: f64,
}

fn std_of(t: &Tensor) -> f64 {
    t.to_kind(Kind::Double).std(false).double_value(&[])
}

/// A score field built from its source, with the diffusion timestep t and
/// σ_t when the source has one.
struct BuiltField {
    field: Box<dyn ScoreField>,
    t: Option<i64>,
    sigma_t: Option<f64>,
}

/// Fits, trains or loads the score field `args.source` names (a trained
/// DSM network is saved to `--dsm-save`, default beside `--out`).
fn build_field(args: &PrecomputeArgs, data: &Dataset, device: Device) -> Result<BuiltField> {
    let plain = |field: Box<dyn ScoreField>| BuiltField {
        field,
        t: None,
        sigma_t: None,
    };
    Ok(match args.source {
        Source::GaussianStd => plain(Box::new(Gaussian::standard(&data.input_shape))),
        Source::GaussianFit => plain(Box::new(
            Gaussian::fit(&data.train.x, args.shrinkage)?.to_device(device),
        )),
        Source::Gmm => plain(Box::new(
            Gmm::fit(
                &data.train.x,
                &data.train.y,
                data.num_outputs,
                args.shrinkage,
            )?
            .to_device(device),
        )),
        Source::Dsm => plain(Box::new(dsm_net(args, data, device)?)),
        Source::Torchscript => {
            tch::manual_seed(args.seed as i64);
            let m = load_eps_model(args, data, args.t, device)?;
            BuiltField {
                t: Some(m.t),
                sigma_t: Some(m.sigma_t),
                field: Box::new(m),
            }
        }
    })
}

/// The DSM network of `--dsm-model`, or one trained here (saved to
/// `--dsm-save`, default beside `--out`), evaluated where `--score-input`
/// says; libtorch's generator is seeded with `--seed` for its noised inputs.
fn dsm_net(args: &PrecomputeArgs, data: &Dataset, device: Device) -> Result<DsmNet> {
    let net = match &args.dsm_model {
        Some(path) => DsmNet::load(path, device)?,
        None => {
            let cfg = DsmConfig {
                sigma: args.dsm_sigma,
                steps: args.dsm_steps,
                batch_size: args.dsm_batch_size,
                lr: args.dsm_lr,
                seed: args.seed,
            };
            let net = DsmNet::train(&data.train.x, &cfg, device)?;
            let save = args
                .dsm_save
                .clone()
                .unwrap_or_else(|| args.out.with_extension("dsm.safetensors"));
            net.save(&save)?;
            net
        }
    };
    tch::manual_seed(args.seed as i64);
    Ok(net.evaluated_at(args.score_input))
}

/// The `--model` ε-network at timestep `t`.
fn load_eps_model(
    args: &PrecomputeArgs,
    data: &Dataset,
    t: i64,
    device: Device,
) -> Result<TorchScriptEps> {
    let path = args.model.as_ref().ok_or_else(|| {
        Error::invalid(
            "--model",
            "(missing)",
            "the torchscript source needs --model FILE",
        )
    })?;
    TorchScriptEps::load(
        path,
        &data.input_shape,
        t,
        args.input_range,
        args.score_input,
        device,
    )
}

/// c_t = σ̂_t/σ̂_50 on the first `--calibration-size` inputs of the split
/// (TASER C.4); 1 without a timestep or at t = 50.
fn calibration(
    args: &PrecomputeArgs,
    field: &dyn ScoreField,
    data: &Dataset,
    split: &Split,
    device: Device,
) -> Result<f64> {
    if args.source != Source::Torchscript || args.t == 50 {
        return Ok(1.0);
    }
    let k = args.calibration_size.clamp(1, split.len() as usize) as i64;
    let x = split.x.narrow(0, 0, k).to_device(device);
    let idx = Tensor::arange(k, (tch::Kind::Int64, device));
    let at_50 = load_eps_model(args, data, 50, device)?;
    Ok(std_of(&field.score(&x, &idx, None)) / std_of(&at_50.score(&x, &idx, None)))
}

/// Scores every input of `split` in batches of `--batch-size` into the
/// HDF5 file at `--out` (atomically); returns the scores' std.
fn write_scores(
    args: &PrecomputeArgs,
    field: &dyn ScoreField,
    meta: &ScoreFileMeta,
    split: &Split,
    c_t: f64,
    device: Device,
) -> Result<f64> {
    let n = split.len() as usize;
    let bar = progress::bar(n as u64, "scores");
    let mut score_std = 0.0;
    write_atomically(&args.out, |tmp| {
        let mut writer = ScoreWriter::create(tmp, meta, n, args.compression)?;
        let mut start = 0;
        while start < n {
            let len = args.batch_size.min(n - start);
            let idx = Tensor::arange_start(
                start as i64,
                (start + len) as i64,
                (tch::Kind::Int64, device),
            );
            let x = split
                .x
                .narrow(0, start as i64, len as i64)
                .to_device(device);
            writer.write_batch(&field.score(&x, &idx, None))?;
            start += len;
            bar.inc(len as u64);
        }
        score_std = writer.finish(c_t)?;
        Ok(())
    })?;
    bar.finish_and_clear();
    Ok(score_std)
}

/// Refuses an existing `--out` file unless `--overwrite` is given, and with
/// it one that another process holds open for writing. (A directory there
/// is left to the final rename, which fails: [`Error::OutputFailed`].)
///
/// Errors: [`Error::InvalidArgument`] (the file exists, no `--overwrite`),
/// [`Error::FileLocked`].
fn check_out(args: &PrecomputeArgs) -> Result<()> {
    if !args.out.exists() || args.out.is_dir() {
        return Ok(());
    }
    if !args.overwrite {
        return Err(Error::invalid(
            "--out",
            args.out.display(),
            "the file exists; models trained with it record its checksum, so it is not replaced \
             silently. Fix: pass --overwrite to replace it, or choose another --out",
        ));
    }
    super::file::check_not_held(&args.out)
}

/// Runs `score-precompute`: checks the flags, builds the score field, then
/// writes the HDF5 file of [`super::file`] (docs/METHOD.md, "Score sources").
///
/// Errors: [`Error::InvalidArgument`] for a flag out of its domain or an
/// existing `--out` without `--overwrite`, [`Error::FileLocked`] for an
/// `--out` another process holds open, [`Error::OutputInUse`] for one
/// another `score-precompute` is writing,
/// missing or corrupt data and models as their readers report them,
/// [`Error::OutputFailed`]/[`Error::Io`] when the file cannot be put in place.
pub fn precompute(args: &PrecomputeArgs) -> Result<PrecomputeSummary> {
    // One run per --out file: another is refused naming it; a failure
    // leaves no partial file and no folder this run created empty.
    crate::outdir::run_for_file(
        &args.out,
        || "rerun the same command (it computes the file again)".into(),
        || precompute_in(args),
    )
}

fn precompute_in(args: &PrecomputeArgs) -> Result<PrecomputeSummary> {
    if args.batch_size == 0 {
        return Err(Error::invalid("--batch-size", 0, "must be ≥ 1"));
    }
    if args.score_input == ScoreInput::Noised
        && !matches!(args.source, Source::Dsm | Source::Torchscript)
    {
        return Err(Error::invalid(
            "--score-input",
            "noised",
            "applies to the dsm and torchscript sources, which have a noise level: \
             drop --score-input, or use --source dsm",
        ));
    }
    check_out(args)?;
    let Runtime {
        device, data_dir, ..
    } = args.runtime.resolve()?;
    let data = data::load(args.dataset, &data_dir, args.seed)?;
    let split = match args.split {
        SplitName::Train => &data.train,
        SplitName::Test => &data.test,
    };
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::fsutil::ensure_writable_dir(dir)?;
    }
    let setup = Instant::now();
    let built = build_field(args, &data, device)?;
    check_shape(built.field.as_ref(), &data.input_shape)?;
    let c_t = calibration(args, built.field.as_ref(), &data, split, device)?;
    let setup_seconds = setup.elapsed().as_secs_f64();

    let meta = ScoreFileMeta {
        dataset: data.name.to_string(),
        split: match args.split {
            SplitName::Train => "train".into(),
            SplitName::Test => "test".into(),
        },
        input_shape: data.input_shape.clone(),
        source: serde_json::to_value(args.source)
            .unwrap()
            .as_str()
            .unwrap_or_default()
            .to_string(),
        source_config: serde_json::to_string(args).unwrap(),
        t: built.t,
        sigma_t: built.sigma_t,
        fingerprint: split.fingerprint(),
    };
    let started = Instant::now();
    let score_std = write_scores(args, built.field.as_ref(), &meta, split, c_t, device)?;
    Ok(PrecomputeSummary {
        path: args.out.clone(),
        samples: split.len() as usize,
        score_std,
        c_t,
        seconds: started.elapsed().as_secs_f64(),
        setup_seconds,
    })
}
