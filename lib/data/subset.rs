//! The evaluation subset (SPEC §1): N_eval = 1000 test indices (all of them
//! if the test split is smaller), drawn once from a seed and written to a
//! JSON file, so every run of a sweep is evaluated on the same points and
//! comparisons can be paired.
use super::Dataset;
use crate::error::{Error, Result};
use crate::fsutil::write_bytes_atomically;
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Default subset size of the TASER paper's evaluations.
pub const DEFAULT_SIZE: usize = 1000;

/// The subset file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvalSubset {
    pub dataset: String,
    pub split: String,
    pub seed: u64,
    /// Fingerprint of the whole test split the indices refer to.
    pub test_fingerprint: String,
    /// Sorted test-split indices.
    pub indices: Vec<usize>,
}

impl EvalSubset {
    /// Draws `min(size, |test|)` distinct indices from `seed`, sorted.
    pub fn draw(data: &Dataset, size: usize, seed: u64) -> EvalSubset {
        let n = data.test.len() as usize;
        let k = size.min(n);
        let mut indices = if k == n {
            (0..n).collect()
        } else {
            sample(&mut ChaCha8Rng::seed_from_u64(seed), n, k).into_vec()
        };
        indices.sort_unstable();
        EvalSubset {
            dataset: data.name.to_string(),
            split: "test".into(),
            seed,
            test_fingerprint: data.test.fingerprint(),
            indices,
        }
    }

    /// Writes the subset as JSON (atomically).
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("subset serialises");
        write_bytes_atomically(path, text.as_bytes())
    }

    /// Reads a subset file.
    pub fn load(path: &Path) -> Result<EvalSubset> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::MissingInput {
            path: path.to_path_buf(),
            reason: e.to_string(),
            fix: "give the subset file written for this data set (see --help)".into(),
        })?;
        serde_json::from_str(&text).map_err(|e| Error::CorruptInput {
            path: path.to_path_buf(),
            reason: e.to_string(),
            fix: "rewrite the subset file".into(),
        })
    }

    /// Checks that the subset refers to `data`'s test split and its indices
    /// are in range.
    pub fn check_against(&self, data: &Dataset, path: &Path) -> Result<()> {
        let mismatch = |reason: String| Error::CorruptInput {
            path: path.to_path_buf(),
            reason,
            fix: "draw a subset for this data set".into(),
        };
        if self.dataset != data.name.to_string() {
            return Err(mismatch(format!(
                "it is for data set {}, not {}",
                self.dataset, data.name
            )));
        }
        if self.test_fingerprint != data.test.fingerprint() {
            return Err(mismatch(format!(
                "test-split fingerprint {} differs from the data's {}",
                self.test_fingerprint,
                data.test.fingerprint()
            )));
        }
        let n = data.test.len() as usize;
        if let Some(bad) = self.indices.iter().find(|&&i| i >= n) {
            return Err(mismatch(format!(
                "index {bad} is out of range (test split has {n} points)"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::toy::toy_sin;

    #[test]
    fn subset_is_seeded_sorted_distinct_and_checked() {
        let data = toy_sin(0);
        let a = EvalSubset::draw(&data, 100, 9);
        assert_eq!(a, EvalSubset::draw(&data, 100, 9));
        assert_ne!(a.indices, EvalSubset::draw(&data, 100, 10).indices);
        assert_eq!(a.indices.len(), 100);
        assert!(a.indices.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(EvalSubset::draw(&data, 5000, 9).indices.len(), 1000);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("subset.json");
        a.save(&path).unwrap();
        let back = EvalSubset::load(&path).unwrap();
        assert_eq!(back, a);
        back.check_against(&data, &path).unwrap();
        let mut bad = a.clone();
        bad.indices.push(1000);
        assert!(bad
            .check_against(&data, &path)
            .unwrap_err()
            .to_string()
            .contains("out of range"));
        let other = toy_sin(1);
        assert!(a
            .check_against(&other, &path)
            .unwrap_err()
            .to_string()
            .contains("fingerprint"));
    }
}
