//! The HDF5 score file (docs/METHOD.md, "Score sources"), readable with h5py:
//!
//! ```text
//! /score   float32 [N, …input shape]  chunked by blocks of samples; filter by --compression
//!          (none by default; gzip1 / gzip4: shuffle + deflate, which h5py reads without plugins)
//! /index   uint64  [N]                sample ids (positions in the split)
//! attributes of the root group:
//!   format "taser-scores/1", dataset, split, input_shape (int64 array),
//!   source, source_config (JSON of every flag), t (int64, −1 if none),
//!   sigma_t (float64, NaN if none), score_std (σ̂ over all entries),
//!   c_t (normalisation constant, 1 unless the source has a timestep),
//!   fingerprint (of the split's inputs), version, libtorch_threads (the
//!   CPU threads libtorch computed them with)
//! ```
//!
//! Written in batches (memory bounded by one batch and one chunk; [`ScoreWriter`]) under a temporary name
//! and renamed when complete; a batch with NaN or Inf aborts the write.
//! Opening checks every attribute's type and range
//! ([`super::attributes`]), `/index` (0..N−1), every score's finiteness and
//! `score_std` against the scores.
use super::attributes;
pub use super::writer::ScoreWriter;
use super::ScoreField;
use crate::data::augment::CropFlip;
use crate::data::Dataset;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

/// Format tag of the file.
pub const FORMAT: &str = "taser-scores/1";
/// Samples per chunk.
pub const CHUNK_SAMPLES: usize = 256;

/// The filter of the `/score` dataset (`--compression`). Default `none`:
/// scores are dense floats that deflate shrinks little (50 000 random
/// CIFAR-shaped scores: none writes at about a plain write's speed, gzip 1
/// and gzip 4 + shuffle ×24–×34 slower for ~14% smaller files; README,
/// "Speed"); every choice is read by h5py as is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    /// Chunked, no filter.
    #[default]
    None,
    /// Shuffle + deflate level 1.
    Gzip1,
    /// Shuffle + deflate level 4 (the suite's first filter, still read).
    Gzip4,
}

/// What a score file says about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreFileMeta {
    pub dataset: String,
    pub split: String,
    pub input_shape: Vec<i64>,
    pub source: String,
    pub source_config: String,
    pub t: Option<i64>,
    pub sigma_t: Option<f64>,
    pub fingerprint: String,
}

/// The [`Error::FileLocked`] of an HDF5 error that is a failed file lock
/// (`unable to lock [the] file`: errno 11 when another process holds the file,
/// ENOSYS/ENOLCK on a file system without locks), else `None`.
pub fn lock_error(path: &Path, e: &hdf5::Error) -> Option<Error> {
    let text = e.to_string();
    text.contains("unable to lock").then(|| Error::FileLocked {
        path: path.to_path_buf(),
        detail: format!("HDF5 could not lock it ({text})"),
    })
}

/// Maps an HDF5 read error to [`Error::FileLocked`] or, for any other
/// failure, [`Error::CorruptInput`] saying what could not be read.
fn h5err<'a>(path: &'a Path, what: &str) -> impl Fn(hdf5::Error) -> Error + 'a {
    let what = what.to_string();
    move |e| {
        lock_error(path, &e).unwrap_or_else(|| Error::CorruptInput {
            path: path.to_path_buf(),
            reason: format!("{what}: {e}"),
            fix: "recompute it with score-precompute".into(),
        })
    }
}

/// Refuses to replace `path` while another process holds it open for
/// writing: opens it for reading (HDF5 takes a shared lock, which fails
/// against a writer's) and closes it. A file that is not HDF5 at all is
/// not in anyone's hands and may be replaced.
///
/// Errors: [`Error::FileLocked`].
pub fn check_not_held(path: &Path) -> Result<()> {
    match hdf5::File::open(path) {
        Err(e) => lock_error(path, &e).map_or(Ok(()), Err),
        Ok(_) => Ok(()),
    }
}

/// Where a run's scores came from, as its `model.json` records them
/// (`score_file`): the file's path as given, the SHA-256 of its bytes when
/// it was opened (compare with `sha256sum FILE`), and its root attributes
/// (`t` and `sigma_t` are null where the file holds −1 and NaN).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreProvenance {
    pub path: PathBuf,
    pub sha256: String,
    pub fingerprint: String,
    pub source: String,
    pub source_config: String,
    pub t: Option<i64>,
    pub sigma_t: Option<f64>,
    pub score_std: f64,
    pub c_t: f64,
    pub dataset: String,
    pub split: String,
}

/// SHA-256 (hex) of a file's bytes, read in one streaming pass (about a
/// second per 500 MB).
fn sha256_of(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| Error::io(path, e))?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// A score file loaded for training: all scores in memory (on `device`),
/// looked up by sample index.
#[derive(Debug)]
pub struct ScoreFile {
    pub meta: ScoreFileMeta,
    pub score_std: f64,
    pub c_t: f64,
    scores: Tensor,
    /// Multiply by c_t when read (`--score-normalise`).
    normalise: bool,
    path: PathBuf,
    /// SHA-256 of the file's bytes (see [`ScoreProvenance`]).
    sha256: String,
}

/// The error for a score file made for other data: (what, file's value,
/// data's value) → [`Error::CheckpointMismatch`] naming the fix.
fn mismatch_for<'a>(
    path: &'a Path,
    data: &'a Dataset,
    split: &'a str,
) -> impl Fn(&str, String, String) -> Error + 'a {
    move |what, file_value, data_value| {
        Error::CheckpointMismatch {
        path: path.to_path_buf(),
        reason: format!("its {what} is {file_value}, the data's is {data_value}"),
        fix: format!(
            "compute scores for this data: score-precompute --dataset {} --split {split} --out <file.h5>",
            data.name
        ),
    }
    }
}

/// Data set, split and input shape of the file must be the data's.
fn check_meta(
    meta: &ScoreFileMeta,
    data: &Dataset,
    split: &str,
    mismatch: &impl Fn(&str, String, String) -> Error,
) -> Result<()> {
    if meta.dataset != data.name.to_string() {
        return Err(mismatch(
            "data set",
            meta.dataset.clone(),
            data.name.to_string(),
        ));
    }
    if meta.split != split {
        return Err(mismatch("split", meta.split.clone(), split.to_string()));
    }
    if meta.input_shape != data.input_shape {
        return Err(mismatch(
            "input shape",
            format!("{:?}", meta.input_shape),
            format!("{:?}", data.input_shape),
        ));
    }
    Ok(())
}

/// The `/index` dataset must be the sample ids 0..N−1 (uint64), the
/// positions in the split that training looks scores up by.
fn check_index(file: &hdf5::File, path: &Path, n: usize) -> Result<()> {
    let ds = file
        .dataset("index")
        .map_err(h5err(path, "dataset `index`"))?;
    let index: Vec<u64> = ds
        .read_raw()
        .map_err(h5err(path, "dataset `index` (truncated?)"))?;
    let bad = index
        .iter()
        .enumerate()
        .find(|&(i, &v)| v != i as u64)
        .map(|(i, &v)| format!("index[{i}] = {v}, not {i}"));
    let problem = if index.len() != n {
        Some(format!("it holds {} ids for {n} scores", index.len()))
    } else {
        bad
    };
    match problem {
        None => Ok(()),
        Some(p) => Err(Error::CorruptInput {
            path: path.to_path_buf(),
            reason: format!("dataset `index` must list the sample ids 0..{n} in order: {p}"),
            fix: "recompute it with score-precompute".into(),
        }),
    }
}

/// Every score must be finite, and attribute `score_std` the standard
/// deviation σ̂ of the scores (variances agreeing within 1e-4 of the mean
/// square, far above the writer's rounding).
fn check_values(values: &[f32], score_std: f64, path: &Path) -> Result<()> {
    let (mut sum, mut sum_sq) = (0.0f64, 0.0f64);
    for &v in values {
        sum += f64::from(v);
        sum_sq += f64::from(v) * f64::from(v);
    }
    if !sum_sq.is_finite() {
        return Err(Error::CorruptInput {
            path: path.to_path_buf(),
            reason: "it holds NaN or Inf scores".into(),
            fix: "recompute it with score-precompute".into(),
        });
    }
    let count = values.len().max(1) as f64;
    let (mean, mean_sq) = (sum / count, sum_sq / count);
    let variance = (mean_sq - mean * mean).max(0.0);
    if (score_std * score_std - variance).abs() > 1e-4 * mean_sq + f64::MIN_POSITIVE {
        return Err(attributes::bad_attribute(
            path,
            "score_std",
            score_std,
            &format!("the scores' standard deviation is {}", variance.sqrt()),
        ));
    }
    Ok(())
}

impl ScoreFile {
    /// Opens `path`, checks every attribute's type and range
    /// ([`attributes::read`]), `/index` and the scores (finite, σ̂ =
    /// `score_std`), and checks it against `data`'s `split` ("train" or
    /// "test"): data set, split, shape, sample count and fingerprint must
    /// all match.
    ///
    /// Errors: [`Error::MissingInput`] (no file), [`Error::FileLocked`]
    /// (another process holds it for writing, or the file system has no
    /// locks), [`Error::CorruptInput`] (unreadable, wrong format, an
    /// attribute of the wrong type or out of range, naming it and its
    /// value, NaN/Inf scores), [`Error::CheckpointMismatch`] (made for
    /// other data).
    pub fn open(
        path: &Path,
        data: &Dataset,
        split: &str,
        normalise: bool,
        device: Device,
    ) -> Result<ScoreFile> {
        if !path.exists() {
            return Err(Error::MissingInput {
                path: path.to_path_buf(),
                reason: "no such file".into(),
                fix: "compute it first: score-precompute --dataset <name> --out <file.h5>".into(),
            });
        }
        let file = hdf5::File::open(path).map_err(h5err(
            path,
            "not a readable HDF5 file (truncated or not HDF5)",
        ))?;
        let attrs = attributes::read(&file, path)?;
        let meta = attrs.meta;
        let mismatch = mismatch_for(path, data, split);
        check_meta(&meta, data, split, &mismatch)?;
        let target = if split == "train" {
            &data.train
        } else {
            &data.test
        };
        let ds = file
            .dataset("score")
            .map_err(h5err(path, "dataset `score`"))?;
        let shape = ds.shape();
        let n = target.len() as usize;
        if shape.first() != Some(&n)
            || shape[1..].iter().map(|&d| d as i64).collect::<Vec<_>>() != data.input_shape
        {
            return Err(mismatch(
                "score array shape",
                format!("{shape:?}"),
                format!("[{n}, {:?}]", data.input_shape),
            ));
        }
        let fingerprint = target.fingerprint();
        if meta.fingerprint != fingerprint {
            return Err(mismatch(
                "input fingerprint",
                meta.fingerprint.clone(),
                fingerprint,
            ));
        }
        let values: Vec<f32> = ds
            .read_raw()
            .map_err(h5err(path, "dataset `score` (truncated?)"))?;
        check_index(&file, path, n)?;
        check_values(&values, attrs.score_std, path)?;
        let mut dims = vec![n as i64];
        dims.extend(&data.input_shape);
        let scores = Tensor::from_slice(&values).view(dims.as_slice());
        Ok(ScoreFile {
            score_std: attrs.score_std,
            c_t: attrs.c_t,
            meta,
            scores: scores.to_device(device),
            normalise,
            path: path.to_path_buf(),
            sha256: sha256_of(path)?,
        })
    }

    /// All scores `[N, …]`.
    pub fn all(&self) -> &Tensor {
        &self.scores
    }

    /// The file's path, checksum and attributes, for a model's sidecar.
    pub fn provenance(&self) -> ScoreProvenance {
        let m = &self.meta;
        ScoreProvenance {
            path: self.path.clone(),
            sha256: self.sha256.clone(),
            fingerprint: m.fingerprint.clone(),
            source: m.source.clone(),
            source_config: m.source_config.clone(),
            t: m.t,
            sigma_t: m.sigma_t,
            score_std: self.score_std,
            c_t: self.c_t,
            dataset: m.dataset.clone(),
            split: m.split.clone(),
        }
    }
}

impl ScoreField for ScoreFile {
    fn input_shape(&self) -> &[i64] {
        &self.meta.input_shape
    }

    fn score(&self, x: &Tensor, indices: &Tensor, aug: Option<&CropFlip>) -> Tensor {
        let mut s = self
            .scores
            .index_select(0, &indices.to_device(self.scores.device()));
        if let Some(a) = aug {
            s = a.apply(&s);
        }
        if self.normalise {
            s *= self.c_t;
        }
        s.to_kind(x.kind())
    }

    fn describe(&self) -> String {
        format!("scores from {} ({})", self.path.display(), self.meta.source)
    }

    fn provenance(&self) -> Option<ScoreProvenance> {
        Some(ScoreFile::provenance(self))
    }
}
