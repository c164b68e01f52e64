//! `report diagnose`: the TASER penalty of trained checkpoints taken apart
//! ([`crate::stein::penalty::diagnosis`]), one CSV row per checkpoint, with
//! the class separation r of its data set and ε/r of its default threat
//! models ([`crate::data::separation`]).
//!
//! The probe batches are those of the training instruments' kind: `samples`
//! training inputs (no augmentation) drawn with `seed`, in batches of 256,
//! each with its 8 Rademacher probes; every figure is the sample-weighted
//! mean over the batches (the match ratios are ratios of those means), so
//! one seed measures every checkpoint on the same inputs and probes. The
//! permuted scores are those `--score-permute` gives at the same seed.
use crate::checkpoint;
use crate::csvio;
use crate::data::{self, separation, Dataset, Split};
use crate::error::{Error, Result};
use crate::models::Model;
use crate::runtime::Runtime;
use crate::score::{file::ScoreFile, ScoreField};
use crate::stein::penalty::controls::derangement;
use crate::stein::penalty::diagnosis::{self, Diagnosis, Scores};
use crate::stein::penalty::instruments::Instruments;
use crate::stein::penalty::PERMUTE_STREAM;
use crate::stein::{self, Center, Probe};
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// Offset mixed into `--seed` for the diagnosis' probe batches.
pub const DIAGNOSIS_STREAM: u64 = 0xD1A6_A05E;

/// What to diagnose, resolved from `report diagnose`'s flags.
#[derive(Debug, Clone)]
pub struct DiagnoseOptions {
    /// `model.safetensors` files (their sidecars beside them), one row each.
    pub checkpoints: Vec<PathBuf>,
    /// The run's score file (scores of the training split).
    pub scores: PathBuf,
    /// A second score file of the same split (e.g. scores at noised inputs).
    pub noised_scores: Option<PathBuf>,
    /// Training inputs the figures average over (in batches of 256).
    pub samples: usize,
    pub seed: u64,
    /// `Batch` (Algorithm 1) or `None`.
    pub center: Center,
    pub probe: Probe,
    /// Points (train and test splits together) the separation is measured
    /// on; 0: all of them.
    pub separation_points: usize,
}

/// One row of the diagnosis CSV.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiagnosisRow {
    pub checkpoint: String,
    pub dataset: String,
    pub samples: usize,
    pub grad_norm_penalty: f64,
    pub score_grad_cosine: f64,
    pub penalty_first_order: f64,
    pub penalty_zero_scores: f64,
    pub penalty: f64,
    pub penalty_plain: f64,
    pub noise_share: f64,
    pub penalty_permuted: f64,
    pub penalty_noised: Option<f64>,
    pub match_grad_norm: f64,
    pub match_permuted: f64,
    pub match_zero_scores: f64,
    pub eps_linf: f64,
    pub separation_linf: f64,
    pub eps_over_r_linf: f64,
    pub eps_l2: f64,
    pub separation_l2: f64,
    pub eps_over_r_l2: f64,
    pub separation_points: i64,
}

/// Diagnoses every checkpoint of `opts` on `runtime`'s device and writes
/// the rows to `out` (CSV, atomically).
///
/// Errors: those of loading a checkpoint, its data set or a score file
/// ([`Error::MissingInput`], [`Error::CorruptInput`],
/// [`Error::CheckpointMismatch`]); [`Error::InvalidArgument`] for
/// checkpoints of different data sets, a regression model, or no samples;
/// the residual's.
pub fn diagnose(
    opts: &DiagnoseOptions,
    runtime: &Runtime,
    out: &Path,
) -> Result<Vec<DiagnosisRow>> {
    if opts.samples == 0 {
        return Err(Error::invalid(
            "--samples",
            0,
            "diagnose at least one input",
        ));
    }
    let mut loaded = Vec::new();
    for path in &opts.checkpoints {
        let (model, meta) = checkpoint::load(path, runtime.device)?;
        loaded.push((path, model, meta.dataset_name(path)?, meta.seed));
    }
    let name = loaded[0].2;
    if let Some((p, _, other, _)) = loaded.iter().find(|c| c.2 != name) {
        return Err(Error::invalid(
            "--checkpoint",
            p.display(),
            format!("is a {other} model; diagnose checkpoints of one data set ({name}) at a time"),
        ));
    }
    let data = data::load(name, &runtime.data_dir, loaded[0].3)?;
    if data.task != data::Task::Classification {
        return Err(Error::invalid(
            "--checkpoint",
            name,
            "the margin probe needs a classifier",
        ));
    }
    let open = |p: &Path| ScoreFile::open(p, &data, "train", false, runtime.device);
    let real = open(&opts.scores)?;
    let noised = opts.noised_scores.as_deref().map(open).transpose()?;
    let threat = Threat::of(&data, opts)?;
    let batches = Instruments::covering(
        &data,
        opts.seed,
        DIAGNOSIS_STREAM,
        opts.samples,
        runtime.device,
    );
    let partner = derangement(data.train.len() as usize, opts.seed ^ PERMUTE_STREAM);
    let partner = Tensor::from_slice(&partner).to_device(runtime.device);
    let mut rows = Vec::new();
    for (path, model, _, _) in &loaded {
        let mut parts = Vec::with_capacity(batches.len());
        for b in &batches {
            let fields = Fields {
                real: &real,
                noised: noised.as_ref(),
                partner: &partner,
            };
            parts.push((diagnose_batch(model, b, &fields, opts)?, b.len()));
        }
        rows.push(row(
            path,
            &data,
            &mean_of(&parts),
            &threat,
            opts.samples.min(data.train.len() as usize),
        ));
    }
    csvio::write_records(out, &rows)?;
    Ok(rows)
}

/// The score sources of one diagnosis.
struct Fields<'a> {
    real: &'a ScoreFile,
    noised: Option<&'a ScoreFile>,
    /// `--score-permute`'s partner of every training sample (int64 `[N]`
    /// on the device).
    partner: &'a Tensor,
}

/// The diagnosis of `model` on one probe batch.
fn diagnose_batch(
    model: &Model,
    b: &Instruments,
    f: &Fields,
    opts: &DiagnoseOptions,
) -> Result<Diagnosis> {
    let (x, y, indices, probes) = b.batch();
    let others = f.partner.index_select(0, indices);
    let real = f.real.score(x, indices, None);
    let permuted = f.real.score(x, &others, None);
    let noised = f.noised.map(|n| n.score(x, indices, None));
    let scores = Scores {
        real: &real,
        permuted: Some(&permuted),
        noised: noised.as_ref(),
    };
    let probe = opts.probe;
    let m = |xx: &Tensor, yy: &Tensor| stein::probe_values(&model.forward_t(xx, false), yy, probe);
    diagnosis::diagnose(m, x, y, &scores, probes, opts.center)
}

/// The sample-weighted mean of batch diagnoses.
fn mean_of(parts: &[(Diagnosis, usize)]) -> Diagnosis {
    let n: f64 = parts.iter().map(|p| p.1 as f64).sum();
    let avg = |get: &dyn Fn(&Diagnosis) -> f64| {
        parts.iter().map(|(d, w)| get(d) * *w as f64).sum::<f64>() / n
    };
    let avg_opt = |get: &dyn Fn(&Diagnosis) -> Option<f64>| {
        get(&parts[0].0).map(|_| avg(&|d| get(d).unwrap_or(f64::NAN)))
    };
    Diagnosis {
        grad_norm_penalty: avg(&|d| d.grad_norm_penalty),
        score_grad_cosine: avg(&|d| d.score_grad_cosine),
        penalty_first_order: avg(&|d| d.penalty_first_order),
        penalty_zero_scores: avg(&|d| d.penalty_zero_scores),
        penalty: avg(&|d| d.penalty),
        penalty_plain: avg(&|d| d.penalty_plain),
        noise_share: avg(&|d| d.noise_share * d.penalty_plain) / avg(&|d| d.penalty_plain),
        penalty_permuted: avg_opt(&|d| d.penalty_permuted),
        penalty_noised: avg_opt(&|d| d.penalty_noised),
    }
}

/// The data set's default threat models and its class separation.
struct Threat {
    eps_linf: f64,
    eps_l2: f64,
    linf: f64,
    l2: f64,
    points: i64,
}

impl Threat {
    /// r in L∞ and L2 on the train and test points (or a seeded subset of
    /// `separation_points` of them).
    fn of(data: &Dataset, opts: &DiagnoseOptions) -> Result<Threat> {
        let all = Split {
            x: Tensor::cat(&[&data.train.x, &data.test.x], 0),
            y: Tensor::cat(&[&data.train.y, &data.test.y], 0),
        };
        let n = all.len() as usize;
        let (x, y) = if opts.separation_points == 0 || opts.separation_points >= n {
            (all.x, all.y)
        } else {
            let rng = &mut ChaCha8Rng::seed_from_u64(opts.seed ^ DIAGNOSIS_STREAM);
            let idx: Vec<i64> = sample(rng, n, opts.separation_points)
                .into_iter()
                .map(|i| i as i64)
                .collect();
            let t = Tensor::from_slice(&idx);
            (all.x.index_select(0, &t), all.y.index_select(0, &t))
        };
        let y = y.to_kind(Kind::Int64);
        let t = data.name.threat();
        Ok(Threat {
            eps_linf: t.linf,
            eps_l2: t.l2,
            linf: separation::separation(&x, &y, f64::INFINITY)?.radius,
            l2: separation::separation(&x, &y, 2.0)?.radius,
            points: x.size()[0],
        })
    }
}

fn row(path: &Path, data: &Dataset, d: &Diagnosis, t: &Threat, samples: usize) -> DiagnosisRow {
    DiagnosisRow {
        checkpoint: path.display().to_string(),
        dataset: data.name.to_string(),
        samples,
        grad_norm_penalty: d.grad_norm_penalty,
        score_grad_cosine: d.score_grad_cosine,
        penalty_first_order: d.penalty_first_order,
        penalty_zero_scores: d.penalty_zero_scores,
        penalty: d.penalty,
        penalty_plain: d.penalty_plain,
        noise_share: d.noise_share,
        penalty_permuted: d.penalty_permuted.unwrap_or(f64::NAN),
        penalty_noised: d.penalty_noised,
        match_grad_norm: d.match_grad_norm(),
        match_permuted: d.match_permuted().unwrap_or(f64::NAN),
        match_zero_scores: d.match_zero_scores(),
        eps_linf: t.eps_linf,
        separation_linf: t.linf,
        eps_over_r_linf: t.eps_linf / t.linf,
        eps_l2: t.eps_l2,
        separation_l2: t.l2,
        eps_over_r_l2: t.eps_l2 / t.l2,
        separation_points: t.points,
    }
}

/// The row as lines for a terminal.
pub fn summary(r: &DiagnosisRow) -> String {
    let noised = r.penalty_noised.map_or("-".into(), |p| format!("{p:.4e}"));
    format!(
        "{} ({}, {} inputs)\n\
         \x20 R = {:.4e} (one-probe R̂ {:.4e}, {:.1}% probe noise); first-order part {:.4e}, \
         Laplacian part (zero scores) {:.4e}\n\
         \x20 R with permuted scores {:.4e}, with --noised-scores {}; cos(s, ∇m) {:.3}\n\
         \x20 grad-norm penalty {:.4e}; λ matching TASER at λ₀ = 1: grad-norm {:.3}, permuted {:.3}, \
         zero scores {:.3}\n\
         \x20 separation r: L∞ {:.4} (ε/r {:.2}), L2 {:.4} (ε/r {:.2}) on {} points\n",
        r.checkpoint, r.dataset, r.samples, r.penalty, r.penalty_plain, 100.0 * r.noise_share,
        r.penalty_first_order, r.penalty_zero_scores, r.penalty_permuted, noised,
        r.score_grad_cosine, r.grad_norm_penalty, r.match_grad_norm, r.match_permuted,
        r.match_zero_scores, r.separation_linf, r.eps_over_r_linf, r.separation_l2,
        r.eps_over_r_l2, r.separation_points
    )
}
