//! The evaluation subset (docs/METHOD.md, "Coordinates and data"): N_eval = 1000 test indices (all of them
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

/// The subset file's content. Reading refuses unknown fields, and
/// [`EvalSubset::check_against`] the rest of what makes a subset invalid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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

    /// Reads a subset file: JSON with exactly the fields of [`EvalSubset`]
    /// (indices non-negative integers). Check it with
    /// [`EvalSubset::check_against`] before use.
    ///
    /// Errors: [`Error::MissingInput`] when unreadable,
    /// [`Error::CorruptInput`] naming the JSON problem.
    pub fn load(path: &Path) -> Result<EvalSubset> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::MissingInput {
            path: path.to_path_buf(),
            reason: e.to_string(),
            fix: "give the subset file written for this data set (see --help)".into(),
        })?;
        serde_json::from_str(&text).map_err(|e| Error::CorruptInput {
            path: path.to_path_buf(),
            reason: format!(
                "not a subset file ({e}); it holds exactly the fields dataset, split, seed, \
                 test_fingerprint and indices (a non-empty, sorted list of distinct test-split \
                 indices, integers ≥ 0)"
            ),
            fix: "use a subset.json written by `attack`, or omit --subset to draw one with \
                  --n-eval and --seed"
                .into(),
        })
    }

    /// Checks the whole subset against `data` before anything uses it: it
    /// refers to `data`'s test split (data set, split `test`, fingerprint),
    /// and its indices are non-empty, in range, unique and sorted.
    ///
    /// Errors: [`Error::CorruptInput`] naming `path` and the first problem.
    pub fn check_against(&self, data: &Dataset, path: &Path) -> Result<()> {
        let mismatch = |reason: String| Error::CorruptInput {
            path: path.to_path_buf(),
            reason,
            fix: "use a subset.json written by `attack` for this data set, or omit --subset to \
                  draw one with --n-eval and --seed"
                .into(),
        };
        if self.indices.is_empty() {
            return Err(mismatch("its `indices` list is empty".into()));
        }
        if self.split != "test" {
            return Err(mismatch(format!(
                "its split is `{}`; evaluation subsets index the test split (`test`)",
                self.split
            )));
        }
        if let Some(w) = self.indices.windows(2).find(|w| w[0] >= w[1]) {
            return Err(mismatch(if w[0] == w[1] {
                format!("index {} is listed twice", w[0])
            } else {
                format!("indices are not sorted ({} before {})", w[0], w[1])
            }));
        }
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
        let refused = |edit: &dyn Fn(&mut EvalSubset), text: &str| {
            let mut bad = a.clone();
            edit(&mut bad);
            let err = bad.check_against(&data, &path).unwrap_err().to_string();
            assert!(err.contains(text) && err.contains("subset.json"), "{err}");
        };
        refused(&|s| s.indices.clear(), "empty");
        refused(&|s| s.indices.insert(1, s.indices[0]), "listed twice");
        refused(&|s| s.indices.swap(0, 1), "not sorted");
        refused(&|s| s.split = "train".into(), "split");
        for (text, err) in [
            (
                r#"{"dataset":"toy-sin","split":"test","seed":0,"test_fingerprint":"x","indices":[1.5]}"#,
                "indices",
            ),
            (
                r#"{"dataset":"toy-sin","split":"test","seed":0,"test_fingerprint":"x","indices":[-1]}"#,
                "indices",
            ),
            (
                r#"{"dataset":"toy-sin","split":"test","seed":0,"test_fingerprint":"x","indices":[1],"extra":2}"#,
                "extra",
            ),
            (
                r#"{"dataset":"toy-sin","split":"test","seed":0,"indices":[1]}"#,
                "test_fingerprint",
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = EvalSubset::load(&path).unwrap_err().to_string();
            assert!(e.contains(err) || e.contains("invalid"), "{e}");
        }
        let other = toy_sin(1);
        assert!(a
            .check_against(&other, &path)
            .unwrap_err()
            .to_string()
            .contains("fingerprint"));
    }
}
