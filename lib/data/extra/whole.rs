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
use super::cifar::{read_bin, Variant, IMAGE_BYTES};
use super::Split;
use crate::error::{Error, Result};
use std::path::Path;
use tch::{Kind, Tensor};

const FIX: &str = "write images ([N,C,H,W] float32 in [0,1] or [N,H,W,C] uint8) and labels ([N] int64) with h5py, or pass a CIFAR binary file (see train --help, --extra-data)";

fn corrupt(path: &Path, reason: impl Into<String>) -> Error {
    Error::CorruptInput {
        path: path.to_path_buf(),
        reason: reason.into(),
        fix: FIX.into(),
    }
}

/// Reads the extra set at `path` for inputs of `input_shape` (`[C, H, W]`)
/// and `num_classes` classes: images `[N, C, H, W]` in [0, 1], labels
/// `[N]` int64.
///
/// Errors: [`Error::MissingInput`] when the file cannot be read;
/// [`Error::CorruptInput`] for a wrong layout, shape, pixel range or label.
pub fn read_extra(path: &Path, input_shape: &[i64], num_classes: i64) -> Result<Split> {
    if !path.is_file() {
        return Err(Error::MissingInput {
            path: path.to_path_buf(),
            reason: "no such file".into(),
            fix: FIX.into(),
        });
    }
    let h5 = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("h5" | "hdf5")
    );
    let split = if h5 {
        read_h5(path)?
    } else {
        read_cifar(path, input_shape, num_classes)?
    };
    let shape = split.x.size();
    if shape.len() != input_shape.len() + 1 || shape[1..] != *input_shape || shape[0] == 0 {
        return Err(corrupt(
            path,
            format!(
                "images have shape {shape:?}; the data set needs [N, {input_shape:?}] with N ≥ 1"
            ),
        ));
    }
    if split.y.size() != [shape[0]] {
        return Err(corrupt(
            path,
            format!("labels have shape {:?}, images {shape:?}", split.y.size()),
        ));
    }
    let (lo, hi) = (
        split.x.min().double_value(&[]),
        split.x.max().double_value(&[]),
    );
    if !(lo >= 0.0 && hi <= 1.0) {
        return Err(corrupt(
            path,
            format!("pixels span [{lo}, {hi}], not [0, 1]"),
        ));
    }
    let (ymin, ymax) = (
        split.y.min().int64_value(&[]),
        split.y.max().int64_value(&[]),
    );
    if ymin < 0 || ymax >= num_classes {
        return Err(corrupt(
            path,
            format!("labels span {ymin}..={ymax}; the data set has {num_classes} classes"),
        ));
    }
    Ok(split)
}

fn read_h5(path: &Path) -> Result<Split> {
    let err = |what: &str| {
        let what = what.to_string();
        move |e: hdf5::Error| corrupt(path, format!("{what}: {e}"))
    };
    let file = hdf5::File::open(path).map_err(err("not a readable HDF5 file"))?;
    let images = file.dataset("images").map_err(err("dataset `images`"))?;
    let labels = file.dataset("labels").map_err(err("dataset `labels`"))?;
    let dims: Vec<i64> = images.shape().iter().map(|&d| d as i64).collect();
    let size = images.dtype().map_err(err("dataset `images`"))?.size();
    let x = if size == 1 {
        let raw: Vec<u8> = images.read_raw().map_err(err("dataset `images`"))?;
        if dims.len() != 4 {
            return Err(corrupt(
                path,
                format!("uint8 images have shape {dims:?}, not [N, H, W, C]"),
            ));
        }
        Tensor::from_slice(&raw)
            .view(dims.as_slice())
            .permute([0, 3, 1, 2])
            .to_kind(Kind::Float)
            / 255.0
    } else {
        let raw: Vec<f32> = images.read_raw().map_err(err("dataset `images`"))?;
        Tensor::from_slice(&raw).view(dims.as_slice())
    };
    let y: Vec<i64> = labels.read_raw().map_err(err("dataset `labels`"))?;
    Ok(Split {
        x: x.contiguous(),
        y: Tensor::from_slice(&y),
    })
}

fn read_cifar(path: &Path, input_shape: &[i64], num_classes: i64) -> Result<Split> {
    let variant = match (input_shape, num_classes) {
        ([3, 32, 32], 10) => Variant::Cifar10,
        ([3, 32, 32], 100) => Variant::Cifar100,
        _ => {
            return Err(corrupt(
                path,
                "the CIFAR binary format holds 32×32×3 images of CIFAR-10/100; use the HDF5 layout (.h5)",
            ))
        }
    };
    let raw = read_bin(path, variant)?;
    let n = raw.labels.len() as i64;
    debug_assert_eq!(raw.pixels.len(), n as usize * IMAGE_BYTES);
    Ok(Split {
        x: Tensor::from_slice(&raw.pixels)
            .view([n, 3, 32, 32])
            .to_kind(Kind::Float)
            / 255.0,
        y: Tensor::from_slice(&raw.labels),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::cifar::{random_images, write_bin};

    #[test]
    fn a_cifar_binary_file_reads_as_images_in_the_unit_box() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("extra.bin");
        let raw = random_images(5, 10, 1);
        write_bin(&path, Variant::Cifar10, &raw).unwrap();
        let split = read_extra(&path, &[3, 32, 32], 10).unwrap();
        assert_eq!(split.x.size(), [5, 3, 32, 32]);
        assert_eq!(Vec::<i64>::try_from(&split.y).unwrap(), raw.labels);
        let first = split.x.get(0).get(0).get(0).get(1).double_value(&[]);
        assert!((first - raw.pixels[1] as f64 / 255.0).abs() < 1e-6);
        // Digits-shaped inputs cannot come in the CIFAR format.
        let err = read_extra(&path, &[1, 8, 8], 10).unwrap_err().to_string();
        assert!(err.contains("HDF5"), "{err}");
    }
}
