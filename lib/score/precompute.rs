//! `score-precompute`: computes a score field for every input of a split
//! and writes the HDF5 file of [`super::file`].
use super::dsm::{DsmConfig, DsmNet};
use super::file::{ScoreFileMeta, ScoreWriter};
use super::gmm::Gmm;
use super::torchscript::{InputRange, ScoreInput, TorchScriptEps};
use super::{check_shape, Gaussian, ScoreField};
use crate::data::{self, DatasetName};
use crate::error::{Error, Result};
use crate::fsutil::write_atomically;
use crate::progress;
use crate::runtime::{Runtime, RuntimeArgs};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Instant;
use tch::{Kind, Tensor};

/// Score sources (SPEC §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// N(0, I): s(x) = −x.
    GaussianStd,
    /// N(μ, Σ) fitted on the training split with shrinkage: s = −Σ⁻¹(x − μ).
    Gaussian,
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
    /// Data set: digits, cifar10, cifar100, toy-sin.
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
    /// Evaluate the ε-model on the clean input or on a noised one.
    #[arg(long, value_enum, default_value = "clean")]
    pub score_input: ScoreInput,
    /// The ε-model's input coordinates (minus-one-one: u = 2x − 1).
    #[arg(long, value_enum, default_value = "minus-one-one")]
    pub input_range: InputRange,
    /// Inputs used to estimate c_t = σ̂_t/σ̂_50 (torchscript).
    #[arg(long, default_value_t = 512)]
    pub calibration_size: usize,
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

/// Runs `score-precompute`.
pub fn precompute(args: &PrecomputeArgs) -> Result<PrecomputeSummary> {
    if args.batch_size == 0 {
        return Err(Error::invalid("--batch-size", 0, "must be ≥ 1"));
    }
    let Runtime { device, data_dir } = args.runtime.resolve()?;
    let data = data::load(args.dataset, &data_dir, args.seed)?;
    let split = match args.split {
        SplitName::Train => &data.train,
        SplitName::Test => &data.test,
    };
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::fsutil::ensure_writable_dir(dir)?;
    }
    let setup = Instant::now();
    let mut t_info = (None, None);
    let field: Box<dyn ScoreField> = match args.source {
        Source::GaussianStd => Box::new(Gaussian::standard(&data.input_shape)),
        Source::Gaussian => {
            Box::new(Gaussian::fit(&data.train.x, args.shrinkage)?.to_device(device))
        }
        Source::Gmm => Box::new(
            Gmm::fit(
                &data.train.x,
                &data.train.y,
                data.num_outputs,
                args.shrinkage,
            )?
            .to_device(device),
        ),
        Source::Dsm => Box::new(match &args.dsm_model {
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
        }),
        Source::Torchscript => {
            let path = args.model.as_ref().ok_or_else(|| {
                Error::invalid(
                    "--model",
                    "(missing)",
                    "the torchscript source needs --model FILE",
                )
            })?;
            tch::manual_seed(args.seed as i64);
            let m = TorchScriptEps::load(
                path,
                &data.input_shape,
                args.t,
                args.input_range,
                args.score_input,
                device,
            )?;
            t_info = (Some(m.t), Some(m.sigma_t));
            Box::new(m)
        }
    };
    check_shape(field.as_ref(), &data.input_shape)?;
    // c_t = σ̂_t/σ̂_50 on a calibration batch (TASER C.4); 1 without a timestep.
    let c_t = match (args.source, &args.model) {
        (Source::Torchscript, Some(path)) if args.t != 50 => {
            let k = args.calibration_size.clamp(1, split.len() as usize) as i64;
            let x = split.x.narrow(0, 0, k).to_device(device);
            let idx: Vec<i64> = (0..k).collect();
            let at_50 = TorchScriptEps::load(
                path,
                &data.input_shape,
                50,
                args.input_range,
                args.score_input,
                device,
            )?;
            std_of(&field.score(&x, &idx, None)) / std_of(&at_50.score(&x, &idx, None))
        }
        _ => 1.0,
    };
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
        t: t_info.0,
        sigma_t: t_info.1,
        fingerprint: split.fingerprint(),
    };
    let n = split.len() as usize;
    let started = Instant::now();
    let bar = progress::bar(n as u64, "scores");
    let mut score_std = 0.0;
    write_atomically(&args.out, |tmp| {
        let mut writer = ScoreWriter::create(tmp, &meta, n)?;
        let mut start = 0;
        while start < n {
            let len = args.batch_size.min(n - start);
            let idx: Vec<i64> = (start as i64..(start + len) as i64).collect();
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
    Ok(PrecomputeSummary {
        path: args.out.clone(),
        samples: n,
        score_std,
        c_t,
        seconds: started.elapsed().as_secs_f64(),
        setup_seconds,
    })
}
