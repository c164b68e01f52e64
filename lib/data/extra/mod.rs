//! Extra training data mixed into every batch (`train --extra-data FILE`),
//! e.g. SCORE's 1M DDPM-generated CIFAR images (Pang et al. 2022, §4.2,
//! after Gowal et al. 2021 and Rebuffi et al. 2021).
//!
//! Two formats:
//! - HDF5 (`.h5`/`.hdf5`): dataset `images`, either float32 `[N, C, H, W]`
//!   with pixels in [0, 1] or uint8 `[N, H, W, C]` (0–255, divided by 255),
//!   and dataset `labels`, int64 `[N]` in 0..K. With h5py:
//!   `f = h5py.File("extra.h5", "w"); f["images"] = x.astype("uint8");
//!   f["labels"] = y.astype("int64")`.
//! - otherwise the CIFAR binary format of the run's data set (1 label byte,
//!   or coarse + fine for CIFAR-100, then 3072 pixel bytes per record;
//!   32×32×3 inputs only).
//!
//! Training streams the set from the host ([`ExtraSource`]): opening it
//! checks the whole file chunk by chunk and keeps only the labels (8 bytes
//! a sample); each batch reads its rows from the file as stored (uint8, or
//! float32), copies them to the device in one transfer and converts them
//! there. Host memory stays that of one batch whatever the file's size.
//! [`read_extra`] reads a whole (small) set into memory, the reference the
//! streamed batches are tested against.
mod cifar_rows;
mod h5_rows;
mod source;
#[cfg(test)]
mod tests;
mod whole;

pub use source::ExtraSource;
pub use whole::read_extra;

use crate::error::{Error, Result};
use std::path::Path;

const FIX: &str = "write images ([N,C,H,W] float32 in [0,1] or [N,H,W,C] uint8) and labels ([N] int64) with h5py, or pass a CIFAR binary file (see train --help, --extra-data)";

/// Bytes read at a time while a file is checked on opening (a few records
/// in unit tests, so that their small files span several chunks).
const SCAN_BYTES: usize = if cfg!(test) { 3 * 3073 + 7 } else { 16 << 20 };

/// What opening a file found: its rows, their labels (`[N]`, in 0..K) and
/// the fingerprint of its images as f32 `[N, C, H, W]` in [0, 1]
/// ([`crate::data::fingerprint`]: the value of [`read_extra`]'s images).
struct Scanned<R> {
    rows: R,
    labels: Vec<i64>,
    inputs_print: String,
}

impl<R> Scanned<R> {
    fn map_rows<S>(self, f: impl FnOnce(R) -> S) -> Scanned<S> {
        Scanned {
            rows: f(self.rows),
            labels: self.labels,
            inputs_print: self.inputs_print,
        }
    }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> Error {
    Error::CorruptInput {
        path: path.to_path_buf(),
        reason: reason.into(),
        fix: FIX.into(),
    }
}

/// The error of a row read failing while the run trains.
fn unreadable_now(path: &Path, reason: String) -> Error {
    Error::MissingInput {
        path: path.to_path_buf(),
        reason,
        fix: "leave the --extra-data file in place and unchanged while the run trains".into(),
    }
}

fn missing(path: &Path) -> Error {
    Error::MissingInput {
        path: path.to_path_buf(),
        reason: "no such file".into(),
        fix: FIX.into(),
    }
}

/// Whether `path` is read as HDF5 (by its extension).
fn is_h5(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("h5" | "hdf5")
    )
}

/// The value of pixel byte `b` in [0, 1]: `b as f32 / 255`, bit for bit
/// what libtorch's CPU division of the byte (as f32) by 255 gives (IEEE
/// division is correctly rounded). Batches map their bytes through this
/// table on the device rather than dividing there: CUDA divides by a
/// scalar as a multiplication by its reciprocal, 1 ulp off for about half
/// the bytes.
fn byte_values() -> [f32; 256] {
    std::array::from_fn(|b| b as f32 / 255.0)
}

/// Checks the images' shape `shape` (`[N, C, H, W]` as the model sees them)
/// against the data set's `input_shape`.
fn check_shape(path: &Path, shape: &[i64], input_shape: &[i64]) -> Result<()> {
    if shape.len() != input_shape.len() + 1 || shape[1..] != *input_shape || shape[0] == 0 {
        return Err(corrupt(
            path,
            format!(
                "images have shape {shape:?}; the data set needs [N, {input_shape:?}] with N ≥ 1"
            ),
        ));
    }
    Ok(())
}

/// Checks that there are as many labels (`labels`) as images (`shape`).
fn check_label_count(path: &Path, labels: i64, shape: &[i64]) -> Result<()> {
    if labels != shape[0] {
        return Err(corrupt(
            path,
            format!("labels have shape {:?}, images {shape:?}", [labels]),
        ));
    }
    Ok(())
}

/// Checks the pixels' span [`lo`, `hi`] (NaN when any pixel is NaN).
fn check_pixels(path: &Path, lo: f64, hi: f64) -> Result<()> {
    if !(lo >= 0.0 && hi <= 1.0) {
        return Err(corrupt(
            path,
            format!("pixels span [{lo}, {hi}], not [0, 1]"),
        ));
    }
    Ok(())
}

/// Checks the labels' span `ymin..=ymax` against `num_classes`.
fn check_label_span(path: &Path, ymin: i64, ymax: i64, num_classes: i64) -> Result<()> {
    if ymin < 0 || ymax >= num_classes {
        return Err(corrupt(
            path,
            format!("labels span {ymin}..={ymax}; the data set has {num_classes} classes"),
        ));
    }
    Ok(())
}
