//! The in-memory reader of an extra set: the whole set as f32 tensors, for
//! small sets and as the reference that streamed batches
//! ([`super::ExtraSource`]) are tested against.
use super::{
    check_label_count, check_label_span, check_pixels, check_shape, corrupt, is_h5, missing,
};
use crate::data::cifar::{read_bin, Variant, IMAGE_BYTES};
use crate::data::Split;
use crate::error::Result;
use std::path::Path;
use tch::{Kind, Tensor};

/// Reads the whole extra set at `path` into memory for inputs of
/// `input_shape` (`[C, H, W]`) and `num_classes` classes: images
/// `[N, C, H, W]` f32 in [0, 1] (4 bytes a pixel: 12 GB for 1M CIFAR
/// images; training streams instead, [`super::ExtraSource`]), labels `[N]`
/// int64.
///
/// Errors: [`crate::Error::MissingInput`] when the file cannot be read;
/// [`crate::Error::CorruptInput`] for a wrong layout, shape, pixel range or
/// label.
pub fn read_extra(path: &Path, input_shape: &[i64], num_classes: i64) -> Result<Split> {
    if !path.is_file() {
        return Err(missing(path));
    }
    let split = if is_h5(path) {
        read_h5(path)?
    } else {
        read_cifar(
            path,
            super::cifar_rows::variant(path, input_shape, num_classes)?,
        )?
    };
    let shape = split.x.size();
    check_shape(path, &shape, input_shape)?;
    check_label_count(path, split.y.numel() as i64, &shape)?;
    check_pixels(
        path,
        split.x.min().double_value(&[]),
        split.x.max().double_value(&[]),
    )?;
    check_label_span(
        path,
        split.y.min().int64_value(&[]),
        split.y.max().int64_value(&[]),
        num_classes,
    )?;
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

fn read_cifar(path: &Path, variant: Variant) -> Result<Split> {
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
