//! CIFAR-10 and CIFAR-100 in their binary formats.
//!
//! CIFAR-10: records of 1 label byte + 3072 pixel bytes (R, G, B planes of
//! 32×32), files `data_batch_{1..5}.bin` and `test_batch.bin`. CIFAR-100:
//! records of 1 coarse-label byte + 1 fine-label byte + 3072 pixel bytes,
//! files `train.bin` and `test.bin`; the fine label is the class. The
//! folders the official archives unpack to (`cifar-10-batches-bin`,
//! `cifar-100-binary`) are looked into as well.
use super::{Dataset, DatasetName, Split, Task};
use crate::error::{Error, Result};
use crate::fsutil::write_bytes_atomically;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// Pixel bytes per image (3 × 32 × 32).
pub const IMAGE_BYTES: usize = 3 * 32 * 32;

/// Which binary format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Cifar10,
    Cifar100,
}

impl Variant {
    /// Label bytes before each image.
    pub fn label_bytes(self) -> usize {
        match self {
            Variant::Cifar10 => 1,
            Variant::Cifar100 => 2,
        }
    }

    pub fn num_classes(self) -> usize {
        match self {
            Variant::Cifar10 => 10,
            Variant::Cifar100 => 100,
        }
    }

    pub fn record_bytes(self) -> usize {
        self.label_bytes() + IMAGE_BYTES
    }

    fn train_files(self) -> Vec<&'static str> {
        match self {
            Variant::Cifar10 => vec![
                "data_batch_1.bin",
                "data_batch_2.bin",
                "data_batch_3.bin",
                "data_batch_4.bin",
                "data_batch_5.bin",
            ],
            Variant::Cifar100 => vec!["train.bin"],
        }
    }

    fn test_file(self) -> &'static str {
        match self {
            Variant::Cifar10 => "test_batch.bin",
            Variant::Cifar100 => "test.bin",
        }
    }

    fn archive_folder(self) -> &'static str {
        match self {
            Variant::Cifar10 => "cifar-10-batches-bin",
            Variant::Cifar100 => "cifar-100-binary",
        }
    }
}

/// Images (`N × 3072` bytes, planar RGB) and class labels of one binary file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawImages {
    pub pixels: Vec<u8>,
    pub labels: Vec<i64>,
}

fn fix_for(variant: Variant) -> String {
    format!(
        "place the {} binary files ({} and {}) in --data-dir or its `{}` subfolder",
        match variant {
            Variant::Cifar10 => "CIFAR-10",
            Variant::Cifar100 => "CIFAR-100",
        },
        variant.train_files().join(", "),
        variant.test_file(),
        variant.archive_folder()
    )
}

/// Reads one binary file, checking its size and labels.
pub fn read_bin(path: &Path, variant: Variant) -> Result<RawImages> {
    let bytes = std::fs::read(path).map_err(|e| unreadable(path, variant, e))?;
    let n = record_count(path, variant, bytes.len() as u64)?;
    let mut pixels = Vec::with_capacity(n * IMAGE_BYTES);
    let mut labels = Vec::with_capacity(n);
    for (i, rec) in bytes.chunks_exact(variant.record_bytes()).enumerate() {
        labels.push(record_label(path, variant, i, rec)?);
        pixels.extend_from_slice(&rec[variant.label_bytes()..]);
    }
    Ok(RawImages { pixels, labels })
}

/// [`Error::MissingInput`] for a binary file that cannot be read.
pub fn unreadable(path: &Path, variant: Variant, e: std::io::Error) -> Error {
    Error::MissingInput {
        path: path.to_path_buf(),
        reason: e.to_string(),
        fix: fix_for(variant),
    }
}

/// Records in a binary file of `len` bytes.
///
/// Errors: [`Error::CorruptInput`] when `len` is 0 or not a whole number
/// of records.
pub fn record_count(path: &Path, variant: Variant, len: u64) -> Result<usize> {
    let record = variant.record_bytes() as u64;
    if len == 0 || !len.is_multiple_of(record) {
        return Err(Error::CorruptInput {
            path: path.to_path_buf(),
            reason: format!(
                "{len} bytes is not a whole number of {record}-byte records (truncated or wrong format)"
            ),
            fix: fix_for(variant),
        });
    }
    Ok((len / record) as usize)
}

/// The class of record `i` (its bytes `rec`, label bytes first).
///
/// Errors: [`Error::CorruptInput`] for a label outside the variant's classes.
pub fn record_label(path: &Path, variant: Variant, i: usize, rec: &[u8]) -> Result<i64> {
    let label = rec[variant.label_bytes() - 1] as usize;
    if label >= variant.num_classes() {
        return Err(Error::CorruptInput {
            path: path.to_path_buf(),
            reason: format!(
                "record {i} has label {label}, but there are {} classes",
                variant.num_classes()
            ),
            fix: fix_for(variant),
        });
    }
    Ok(label as i64)
}

/// Writes images and labels in the binary format of `variant` (atomically).
/// For CIFAR-100 the coarse label is written as `label / 5`. Used to make
/// synthetic data sets for tests and benchmarks.
pub fn write_bin(path: &Path, variant: Variant, images: &RawImages) -> Result<()> {
    let n = images.labels.len();
    if images.pixels.len() != n * IMAGE_BYTES {
        return Err(Error::invalid(
            "images",
            images.pixels.len(),
            format!("expected {n} × {IMAGE_BYTES} pixel bytes"),
        ));
    }
    let mut out = Vec::with_capacity(n * variant.record_bytes());
    for (i, &label) in images.labels.iter().enumerate() {
        if label < 0 || label as usize >= variant.num_classes() {
            return Err(Error::invalid(
                "label",
                label,
                "outside the variant's classes",
            ));
        }
        if variant == Variant::Cifar100 {
            out.push((label / 5) as u8);
        }
        out.push(label as u8);
        out.extend_from_slice(&images.pixels[i * IMAGE_BYTES..(i + 1) * IMAGE_BYTES]);
    }
    write_bytes_atomically(path, &out)
}

/// Random images (uniform bytes) and labels from a seeded generator, for
/// synthetic CIFAR-format data.
pub fn random_images(n: usize, num_classes: usize, seed: u64) -> RawImages {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut pixels = vec![0u8; n * IMAGE_BYTES];
    rng.fill(pixels.as_mut_slice());
    let labels = (0..n)
        .map(|_| rng.gen_range(0..num_classes as i64))
        .collect();
    RawImages { pixels, labels }
}

/// Writes a complete synthetic data set of `variant` into `dir`
/// (`n_train` images spread over the training files, `n_test` test images).
pub fn write_synthetic(
    dir: &Path,
    variant: Variant,
    n_train: usize,
    n_test: usize,
    seed: u64,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let files = variant.train_files();
    let per_file = n_train.div_ceil(files.len());
    let mut written = 0;
    for (k, name) in files.iter().enumerate() {
        let n = per_file.min(n_train - written);
        write_bin(
            &dir.join(name),
            variant,
            &random_images(n.max(1), variant.num_classes(), seed + k as u64),
        )?;
        written += n;
    }
    write_bin(
        &dir.join(variant.test_file()),
        variant,
        &random_images(n_test, variant.num_classes(), seed + 1000),
    )
}

fn resolve_dir(data_dir: &Path, variant: Variant) -> PathBuf {
    let nested = data_dir.join(variant.archive_folder());
    if !data_dir.join(variant.test_file()).exists() && nested.join(variant.test_file()).exists() {
        nested
    } else {
        data_dir.to_path_buf()
    }
}

fn to_split(raw: RawImages) -> Split {
    let n = raw.labels.len() as i64;
    let x = Tensor::from_slice(&raw.pixels)
        .view([n, 3, 32, 32])
        .to_kind(Kind::Float)
        / 255.0;
    Split {
        x,
        y: Tensor::from_slice(&raw.labels),
    }
}

/// Loads the training and test files of `variant` from `data_dir`.
pub fn load(data_dir: &Path, variant: Variant) -> Result<Dataset> {
    let dir = resolve_dir(data_dir, variant);
    let mut train = RawImages {
        pixels: Vec::new(),
        labels: Vec::new(),
    };
    for name in variant.train_files() {
        let part = read_bin(&dir.join(name), variant)?;
        train.pixels.extend_from_slice(&part.pixels);
        train.labels.extend_from_slice(&part.labels);
    }
    let test = read_bin(&dir.join(variant.test_file()), variant)?;
    Ok(Dataset {
        name: match variant {
            Variant::Cifar10 => DatasetName::Cifar10,
            Variant::Cifar100 => DatasetName::Cifar100,
        },
        task: Task::Classification,
        input_shape: vec![3, 32, 32],
        num_outputs: variant.num_classes() as i64,
        train: to_split(train),
        test: to_split(test),
        ood: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_returns_exactly_the_written_bytes_and_labels() {
        let dir = tempfile::tempdir().unwrap();
        for variant in [Variant::Cifar10, Variant::Cifar100] {
            let images = random_images(37, variant.num_classes(), 5);
            let path = dir.path().join("batch.bin");
            write_bin(&path, variant, &images).unwrap();
            assert_eq!(
                std::fs::metadata(&path).unwrap().len() as usize,
                37 * variant.record_bytes()
            );
            let back = read_bin(&path, variant).unwrap();
            assert_eq!(back, images, "{variant:?}");
        }
    }

    #[test]
    fn cifar100_writes_coarse_then_fine_label() {
        let dir = tempfile::tempdir().unwrap();
        let images = RawImages {
            pixels: vec![7u8; IMAGE_BYTES],
            labels: vec![93],
        };
        let path = dir.path().join("one.bin");
        write_bin(&path, Variant::Cifar100, &images).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..3], &[93 / 5, 93, 7]);
    }

    #[test]
    fn loaded_tensors_hold_the_pixels_scaled_to_unit_interval() {
        let dir = tempfile::tempdir().unwrap();
        write_synthetic(dir.path(), Variant::Cifar10, 20, 6, 1).unwrap();
        let data = load(dir.path(), Variant::Cifar10).unwrap();
        assert_eq!(data.train.x.size(), vec![20, 3, 32, 32]);
        assert_eq!(data.test.x.size(), vec![6, 3, 32, 32]);
        let raw = read_bin(&dir.path().join("test_batch.bin"), Variant::Cifar10).unwrap();
        let first: Vec<f32> = Vec::try_from(data.test.x.get(0).flatten(0, -1)).unwrap();
        let expect: Vec<f32> = raw.pixels[..IMAGE_BYTES]
            .iter()
            .map(|&b| b as f32 / 255.0)
            .collect();
        assert_eq!(first, expect);
        let labels: Vec<i64> = Vec::try_from(&data.test.y).unwrap();
        assert_eq!(labels, raw.labels);
    }

    #[test]
    fn truncated_file_and_bad_label_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.bin");
        std::fs::write(&path, vec![0u8; Variant::Cifar10.record_bytes() + 5]).unwrap();
        let err = read_bin(&path, Variant::Cifar10).unwrap_err().to_string();
        assert!(
            err.contains("not a whole number") && err.contains("t.bin"),
            "{err}"
        );
        let mut rec = vec![0u8; Variant::Cifar10.record_bytes()];
        rec[0] = 10;
        std::fs::write(&path, rec).unwrap();
        let err = read_bin(&path, Variant::Cifar10).unwrap_err().to_string();
        assert!(err.contains("label 10"), "{err}");
        let err = load(&dir.path().join("nowhere"), Variant::Cifar10)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("data_batch_1.bin") && err.contains("Fix"),
            "{err}"
        );
    }
}
