//! The root attributes of a score file ([`super::file`]), each read with the
//! type the writer gives it and checked for its range before anything uses
//! the file:
//!
//! | attribute | type | valid |
//! |---|---|---|
//! | `format` | text | `taser-scores/1` |
//! | `dataset` | text | a data set name (`digits`, `mnist`, …) |
//! | `split` | text | `train` or `test` |
//! | `input_shape` | int64 array | one to three sizes, each ≥ 1 |
//! | `source` | text | a `score-precompute --source` name |
//! | `source_config` | text | a JSON object (the writer's flags) |
//! | `fingerprint` | text | 16 lowercase hex digits |
//! | `version` | text | not empty |
//! | `t` | int64 | −1 (no timestep), or 0 ≤ t < 1000 for `torchscript` only |
//! | `sigma_t` | float64 | NaN when t = −1, else σ_t = √(1 − ᾱ_t) of t's DDPM schedule |
//! | `score_std` | float64 | finite, ≥ 0 (checked against the scores by the reader) |
//! | `c_t` | float64 | finite, > 0; exactly 1 when t = −1 or t = 50 |
//! | `libtorch_threads` | int64 | ≥ 1 (absent in files written before it was recorded) |
//!
//! A bad attribute is refused as [`Error::CorruptInput`] naming the file,
//! the attribute and its value: a `c_t` of 0 would multiply every score by
//! 0 under `--score-normalise`, a NaN one would make training "diverge".
use super::file::{lock_error, ScoreFileMeta, FORMAT};
use super::precompute::Source;
use super::{ddpm_sigma, DDPM_STEPS};
use crate::data::DatasetName;
use crate::error::{Error, Result};
use hdf5::types::{FloatSize, IntSize, TypeDescriptor, VarLenUnicode};
use std::fmt::Display;
use std::path::Path;

/// What the checked attributes say.
#[derive(Debug, Clone, PartialEq)]
pub struct Attributes {
    pub meta: ScoreFileMeta,
    /// σ̂, the standard deviation of every score entry.
    pub score_std: f64,
    /// The normalisation constant c_t = σ̂_t/σ̂_50.
    pub c_t: f64,
}

const RECOMPUTE: &str = "recompute it with score-precompute (or restore the file it wrote)";

/// The error for attribute `name` holding `value` that breaks `rule`.
pub fn bad_attribute(path: &Path, name: &str, value: impl Display, rule: &str) -> Error {
    Error::CorruptInput {
        path: path.to_path_buf(),
        reason: format!("attribute `{name}` = {value} is invalid: {rule}"),
        fix: RECOMPUTE.into(),
    }
}

/// Opens attribute `name` and checks that it is a scalar (`shape` empty)
/// or a 1-D array (`shape` `[n]`) of type `want`.
fn typed(
    file: &hdf5::File,
    path: &Path,
    name: &str,
    want: &TypeDescriptor,
    array: bool,
) -> Result<hdf5::Attribute> {
    let read_err = |e: hdf5::Error| {
        lock_error(path, &e).unwrap_or_else(|| Error::CorruptInput {
            path: path.to_path_buf(),
            reason: format!("attribute `{name}` cannot be read: {e}"),
            fix: RECOMPUTE.into(),
        })
    };
    let attr = file.attr(name).map_err(read_err)?;
    let found = attr
        .dtype()
        .and_then(|t| t.to_descriptor())
        .map_err(read_err)?;
    let shape = attr.shape();
    let shape_ok = if array {
        shape.len() == 1
    } else {
        shape.is_empty()
    };
    if &found != want || !shape_ok {
        let kind = if array { "a 1-D array" } else { "a scalar" };
        return Err(Error::CorruptInput {
            path: path.to_path_buf(),
            reason: format!(
                "attribute `{name}` has type {found} and shape {shape:?}; it must be {kind} of type {want}"
            ),
            fix: RECOMPUTE.into(),
        });
    }
    Ok(attr)
}

fn text(file: &hdf5::File, path: &Path, name: &str) -> Result<String> {
    let attr = typed(file, path, name, &TypeDescriptor::VarLenUnicode, false)?;
    attr.read_scalar::<VarLenUnicode>()
        .map(|v| v.as_str().to_string())
        .map_err(|e| bad_attribute(path, name, "(unreadable text)", &e.to_string()))
}

fn int(file: &hdf5::File, path: &Path, name: &str) -> Result<i64> {
    let attr = typed(
        file,
        path,
        name,
        &TypeDescriptor::Integer(IntSize::U8),
        false,
    )?;
    attr.read_scalar::<i64>()
        .map_err(|e| bad_attribute(path, name, "(unreadable)", &e.to_string()))
}

fn float(file: &hdf5::File, path: &Path, name: &str) -> Result<f64> {
    let attr = typed(
        file,
        path,
        name,
        &TypeDescriptor::Float(FloatSize::U8),
        false,
    )?;
    attr.read_scalar::<f64>()
        .map_err(|e| bad_attribute(path, name, "(unreadable)", &e.to_string()))
}

/// Reads every root attribute of an open score file and checks each one's
/// type and range (the table above), and the agreement of `source`, `t`,
/// `sigma_t` and `c_t`.
///
/// Errors: [`Error::CorruptInput`] naming `path`, the attribute and its
/// value; [`Error::FileLocked`] when HDF5 cannot lock the file.
pub fn read(file: &hdf5::File, path: &Path) -> Result<Attributes> {
    let bad = |name: &str, value: &dyn Display, rule: &str| bad_attribute(path, name, value, rule);
    let format = text(file, path, "format")?;
    if format != FORMAT {
        return Err(bad(
            "format",
            &format,
            &format!("this suite reads `{FORMAT}`"),
        ));
    }
    let dataset = text(file, path, "dataset")?;
    if dataset.parse::<DatasetName>().is_err() {
        return Err(bad("dataset", &dataset, "not a data set of this suite"));
    }
    let split = text(file, path, "split")?;
    if split != "train" && split != "test" {
        return Err(bad("split", &split, "must be `train` or `test`"));
    }
    let shape_attr = typed(
        file,
        path,
        "input_shape",
        &TypeDescriptor::Integer(IntSize::U8),
        true,
    )?;
    let input_shape: Vec<i64> = shape_attr
        .read_raw()
        .map_err(|e| bad("input_shape", &"(unreadable)", &e.to_string()))?;
    if input_shape.is_empty() || input_shape.len() > 3 || input_shape.iter().any(|&d| d < 1) {
        return Err(bad(
            "input_shape",
            &format!("{input_shape:?}"),
            "must hold one to three sizes, each ≥ 1",
        ));
    }
    let source = text(file, path, "source")?;
    let kind: Source = serde_json::from_value(serde_json::Value::String(source.clone()))
        .map_err(|_| bad("source", &source, "not a score-precompute --source"))?;
    let source_config = text(file, path, "source_config")?;
    if !serde_json::from_str::<serde_json::Value>(&source_config).is_ok_and(|v| v.is_object()) {
        return Err(bad(
            "source_config",
            &source_config,
            "must be a JSON object (the writer's flags)",
        ));
    }
    let fingerprint = text(file, path, "fingerprint")?;
    if fingerprint.len() != 16
        || !fingerprint
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return Err(bad(
            "fingerprint",
            &fingerprint,
            "must be 16 lowercase hex digits",
        ));
    }
    let version = text(file, path, "version")?;
    if version.trim().is_empty() {
        return Err(bad("version", &"\"\"", "must name the writer's version"));
    }
    if file.attr("libtorch_threads").is_ok() {
        let threads = int(file, path, "libtorch_threads")?;
        if threads < 1 {
            return Err(bad("libtorch_threads", &threads, "must be ≥ 1"));
        }
    }
    let (t, sigma_t, c_t) = timestep(file, path, kind)?;
    let score_std = float(file, path, "score_std")?;
    if !score_std.is_finite() || score_std < 0.0 {
        return Err(bad("score_std", &score_std, "must be a finite number ≥ 0"));
    }
    Ok(Attributes {
        meta: ScoreFileMeta {
            dataset,
            split,
            input_shape,
            source,
            source_config,
            t,
            sigma_t,
            fingerprint,
        },
        score_std,
        c_t,
    })
}

/// `t`, `sigma_t` and `c_t`, checked against each other and the source:
/// only `torchscript` has a timestep; σ_t is the schedule's at t; c_t is a
/// positive finite ratio, 1 without a timestep and at t = 50.
fn timestep(
    file: &hdf5::File,
    path: &Path,
    source: Source,
) -> Result<(Option<i64>, Option<f64>, f64)> {
    let bad = |name: &str, value: &dyn Display, rule: &str| bad_attribute(path, name, value, rule);
    let t = int(file, path, "t")?;
    let has_timestep = source == Source::Torchscript;
    if has_timestep && !(0..DDPM_STEPS).contains(&t) {
        return Err(bad(
            "t",
            &t,
            &format!("the torchscript source's timestep must be in 0..{DDPM_STEPS}"),
        ));
    }
    if !has_timestep && t != -1 {
        return Err(bad("t", &t, "must be −1 (no timestep) for this source"));
    }
    let sigma_t = float(file, path, "sigma_t")?;
    let sigma = if has_timestep {
        let want = ddpm_sigma(t);
        if sigma_t.is_nan() || (sigma_t - want).abs() > 1e-9 * want {
            return Err(bad(
                "sigma_t",
                &sigma_t,
                &format!("σ_t of timestep t = {t} is {want}"),
            ));
        }
        Some(sigma_t)
    } else {
        if !sigma_t.is_nan() {
            return Err(bad("sigma_t", &sigma_t, "must be NaN (none) when t = −1"));
        }
        None
    };
    let c_t = float(file, path, "c_t")?;
    if !c_t.is_finite() || c_t <= 0.0 {
        return Err(bad("c_t", &c_t, "must be a finite number > 0 (σ̂_t/σ̂_50)"));
    }
    if (!has_timestep || t == 50) && c_t != 1.0 {
        return Err(bad(
            "c_t",
            &c_t,
            "must be 1 for a source without a timestep and at t = 50 (c_t = σ̂_t/σ̂_50)",
        ));
    }
    Ok((has_timestep.then_some(t), sigma, c_t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::file::Compression;
    use crate::score::writer::ScoreWriter;
    use tch::{Device, Kind, Tensor};

    /// A valid gaussian-std score file of 4 digits-shaped samples.
    fn valid(path: &Path) {
        let meta = ScoreFileMeta {
            dataset: "digits".into(),
            split: "train".into(),
            input_shape: vec![1, 8, 8],
            source: "gaussian-std".into(),
            source_config: "{}".into(),
            t: None,
            sigma_t: None,
            fingerprint: "0123456789abcdef".into(),
        };
        let mut w = ScoreWriter::create(path, &meta, 4, Compression::None).unwrap();
        w.write_batch(&Tensor::ones([4, 1, 8, 8], (Kind::Float, Device::Cpu)))
            .unwrap();
        w.finish(1.0).unwrap();
    }

    /// Replaces attribute `name` of the file at `path` by `value`.
    fn set<T: hdf5::H5Type>(path: &Path, name: &str, value: T) {
        let f = hdf5::File::open_rw(path).unwrap();
        f.delete_attr(name).unwrap();
        f.new_attr::<T>()
            .create(name)
            .unwrap()
            .write_scalar(&value)
            .unwrap();
    }

    fn text_value(s: &str) -> VarLenUnicode {
        s.parse().unwrap()
    }

    fn error_of(path: &Path) -> String {
        let f = hdf5::File::open(path).unwrap();
        read(&f, path).unwrap_err().to_string()
    }

    #[test]
    fn every_attribute_out_of_its_range_is_refused_naming_it_and_its_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.h5");
        valid(&path);
        let f = hdf5::File::open(&path).unwrap();
        let attrs = read(&f, &path).unwrap();
        assert_eq!(
            (attrs.c_t, attrs.meta.t, attrs.meta.sigma_t),
            (1.0, None, None)
        );
        drop(f);
        type Edit = Box<dyn Fn(&Path)>;
        let cases: Vec<(Edit, &str)> = vec![
            (Box::new(|p| set(p, "c_t", 0.0f64)), "`c_t` = 0"),
            (Box::new(|p| set(p, "c_t", f64::NAN)), "`c_t` = NaN"),
            (Box::new(|p| set(p, "c_t", f64::INFINITY)), "`c_t` = inf"),
            (Box::new(|p| set(p, "c_t", 2.0f64)), "`c_t` = 2"),
            (Box::new(|p| set(p, "c_t", 1i64)), "`c_t` has type int64"),
            (
                Box::new(|p| set(p, "score_std", -1.0f64)),
                "`score_std` = -1",
            ),
            (Box::new(|p| set(p, "t", 50i64)), "`t` = 50"),
            (Box::new(|p| set(p, "sigma_t", 0.5f64)), "`sigma_t` = 0.5"),
            (
                Box::new(|p| set(p, "libtorch_threads", 0i64)),
                "`libtorch_threads` = 0",
            ),
            (
                Box::new(|p| set(p, "split", text_value("val"))),
                "`split` = val",
            ),
            (
                Box::new(|p| set(p, "dataset", text_value("imagenet"))),
                "`dataset` = imagenet",
            ),
            (
                Box::new(|p| set(p, "source", text_value("magic"))),
                "`source` = magic",
            ),
            (
                Box::new(|p| set(p, "source_config", text_value("[1]"))),
                "`source_config` = [1]",
            ),
            (
                Box::new(|p| set(p, "fingerprint", text_value("xyz"))),
                "`fingerprint` = xyz",
            ),
            (Box::new(|p| set(p, "version", text_value(""))), "`version`"),
        ];
        for (i, (edit, want)) in cases.iter().enumerate() {
            let p = dir.path().join(format!("e{i}.h5"));
            std::fs::copy(&path, &p).unwrap();
            edit(&p);
            let err = error_of(&p);
            assert!(
                err.contains(want) && err.contains(&format!("e{i}.h5")),
                "{want}: {err}"
            );
        }
        // A torchscript file at t = 10 with its schedule's σ_t and a ratio c_t.
        let p = dir.path().join("ts.h5");
        std::fs::copy(&path, &p).unwrap();
        set(&p, "source", text_value("torchscript"));
        set(&p, "t", 10i64);
        set(&p, "sigma_t", ddpm_sigma(10));
        set(&p, "c_t", 0.4f64);
        let f = hdf5::File::open(&p).unwrap();
        let attrs = read(&f, &p).unwrap();
        assert_eq!((attrs.meta.t, attrs.c_t), (Some(10), 0.4));
        drop(f);
        set(&p, "t", -1i64);
        assert!(error_of(&p).contains("`t` = -1"), "{}", error_of(&p));
    }
}
