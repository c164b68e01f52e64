//! The 8×8 handwritten digits (1797 samples, 10 classes) from
//! `sklearn/datasets/data/digits.csv.gz`, which `make setup` extracts from the
//! scikit-learn wheel into the data cache with its checksum verified.
use super::pixel_csv::{self, CsvFormat};
use super::{Dataset, DatasetName, Split, Task};
use crate::error::Result;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use tch::Tensor;

/// File name inside the data directory.
pub const FILE_NAME: &str = "digits.csv.gz";
/// Number of samples in the file.
pub const NUM_SAMPLES: usize = 1797;
/// Seed of the fixed 80/20 train/test split (docs/METHOD.md, "Coordinates and data"). Changing it changes
/// every digits result; it is part of the data set's definition.
pub const SPLIT_SEED: u64 = 20_240_917;
/// Size of the test split: 20% of 1797, rounded.
pub const NUM_TEST: usize = 359;

/// The file's format: 64 pixel values 0..16 then the label per row.
pub const FORMAT: CsvFormat = CsvFormat {
    pixels: 64,
    max_value: 16.0,
    num_classes: 10,
    num_samples: NUM_SAMPLES,
    fix: "run `make setup` (it fetches the scikit-learn wheel and extracts digits.csv.gz), \
          or pass --data-dir pointing at a folder holding digits.csv.gz",
};

/// Parses the CSV (64 pixel values 0..16 then the label per row) into pixels
/// scaled to [0,1] and labels (see [`pixel_csv::parse`]).
pub fn parse(text: &str, path: &Path) -> Result<(Vec<f32>, Vec<i64>)> {
    pixel_csv::parse(text, path, &FORMAT)
}

/// Loads digits from `data_dir/digits.csv.gz` and applies the fixed split.
pub fn load(data_dir: &Path) -> Result<Dataset> {
    let path = data_dir.join(FILE_NAME);
    let text = pixel_csv::read_gz_text(&path, &FORMAT)?;
    let (pixels, labels) = parse(&text, &path)?;
    let x = Tensor::from_slice(&pixels).view([NUM_SAMPLES as i64, 1, 8, 8]);
    let y = Tensor::from_slice(&labels);
    let mut order: Vec<i64> = (0..NUM_SAMPLES as i64).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(SPLIT_SEED));
    let (test_idx, train_idx) = order.split_at(NUM_TEST);
    let all = Split { x, y };
    Ok(Dataset {
        name: DatasetName::Digits,
        task: Task::Classification,
        input_shape: vec![1, 8, 8],
        num_outputs: 10,
        train: all.select(&Tensor::from_slice(train_idx)),
        test: all.select(&Tensor::from_slice(test_idx)),
        ood: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rejects_short_rows_and_bad_labels() {
        let p = Path::new("digits.csv.gz");
        let short = "1,2,3\n";
        assert!(parse(short, p)
            .unwrap_err()
            .to_string()
            .contains("expected 65"));
        let row = |label: &str| format!("{}{label}\n", "0,".repeat(64));
        assert!(parse(&row("12"), p)
            .unwrap_err()
            .to_string()
            .contains("label 12"));
        // Non-finite pixels are refused, naming the file.
        for bad in ["nan", "inf", "-inf"] {
            let text = format!("{bad},{}3\n", "0,".repeat(63));
            let err = parse(&text, p).unwrap_err().to_string();
            assert!(
                err.contains("digits.csv.gz") && err.contains("pixel"),
                "{err}"
            );
        }
        // One valid row is still not the whole data set.
        assert!(parse(&row("3"), p)
            .unwrap_err()
            .to_string()
            .contains("1797"));
    }

    #[test]
    fn split_is_fixed_and_disjoint_when_data_is_present() {
        let dir = crate::data::default_data_dir();
        if !dir.join(FILE_NAME).exists() {
            panic!("digits data missing in {}: run `make setup`", dir.display());
        }
        let a = load(&dir).unwrap();
        let b = load(&dir).unwrap();
        assert_eq!(a.train.len(), (NUM_SAMPLES - NUM_TEST) as i64);
        assert_eq!(a.test.len(), NUM_TEST as i64);
        assert_eq!(a.test.fingerprint(), b.test.fingerprint());
        let max = a.train.x.max().double_value(&[]);
        let min = a.train.x.min().double_value(&[]);
        assert!(min >= 0.0 && max <= 1.0 && max > 0.99);
    }
}
