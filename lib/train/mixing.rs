//! Batches that mix the original training set with an extra one
//! (`--extra-data`, `--extra-ratio r`; SCORE §4.2's "original-to-generated
//! ratio", 0.3 on CIFAR-10): every batch of B holds round(r·B) original
//! samples and B − round(r·B) extra ones. An epoch is one pass over the
//! original set (its samples in a seeded shuffle, ⌈N/round(r·B)⌉ batches);
//! the extra samples come from a seeded shuffle of the extra set, reshuffled
//! whenever it runs out. Augmentation applies to both. The extra set is
//! streamed from the host in its stored form, one batch's rows at a time
//! ([`ExtraSource`]), so its size is bounded by the disk, not by memory.
use crate::data::{extra::ExtraSource, Dataset};
use crate::error::{Error, Result};
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Flags of the extra data (part of the run's identity).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(default)]
pub struct ExtraArgs {
    /// Extra training data mixed into every batch: an HDF5 file (.h5/.hdf5)
    /// with datasets `images` (float32 [N,C,H,W] in [0,1], or uint8
    /// [N,H,W,C] 0–255) and `labels` (int64 [N]), or a file in the CIFAR
    /// binary format of --dataset. Checked whole on start (in chunks), then
    /// streamed from the host: each batch reads its rows as stored (uint8
    /// stays uint8) and copies them to the device, so the file may be far
    /// larger than memory (1M CIFAR images: 3 GB). Not with a --scores file
    /// (it covers the original training split only).
    #[arg(long)]
    pub extra_data: Option<PathBuf>,
    /// Share r of each batch drawn from the original training set (the
    /// rest from --extra-data), in (0, 1); an epoch is one pass over the
    /// original set.
    #[arg(long, default_value_t = 0.3)]
    pub extra_ratio: f64,
}

impl Default for ExtraArgs {
    fn default() -> Self {
        ExtraArgs {
            extra_data: None,
            extra_ratio: 0.3,
        }
    }
}

/// The resolved mix of a run.
#[derive(Debug)]
pub struct ExtraPlan {
    /// The extra set (M samples), read from the host batch by batch.
    pub source: ExtraSource,
    /// Original samples per batch, round(r·B) in 1..B.
    pub original_per_batch: usize,
    /// The batch size B.
    pub batch_size: usize,
}

impl ExtraArgs {
    /// Opens and checks `--extra-data` for `data` (None without it).
    ///
    /// Errors: [`Error::InvalidArgument`] naming --extra-ratio (outside
    /// (0, 1) or leaving no original or extra sample in a batch of
    /// `batch_size`) or --extra-data (with a score file: `reads_scores`);
    /// [`ExtraSource::open`]'s.
    pub fn resolve(
        &self,
        data: &Dataset,
        batch_size: usize,
        reads_scores: bool,
    ) -> Result<Option<ExtraPlan>> {
        let Some(path) = &self.extra_data else {
            return Ok(None);
        };
        let r = self.extra_ratio;
        let original = (r * batch_size as f64).round() as usize;
        if !(r > 0.0 && r < 1.0) || original == 0 || original >= batch_size {
            return Err(Error::invalid(
                "--extra-ratio",
                r,
                format!("must be in (0, 1) with round(r·B) in 1..{batch_size} (B = --batch-size)"),
            ));
        }
        if reads_scores {
            return Err(Error::invalid(
                "--extra-data",
                path.display(),
                "the TASER penalty needs a score for every sample and the --scores file covers the original training split only: \
                 train with --lambda 0, or with --score-source instead of --scores",
            ));
        }
        Ok(Some(ExtraPlan {
            source: ExtraSource::open(path, &data.input_shape, data.num_outputs)?,
            original_per_batch: original,
            batch_size,
        }))
    }
}

impl ExtraPlan {
    /// Batches per epoch for `n` original samples.
    pub fn batches_per_epoch(&self, n: usize) -> usize {
        n.div_ceil(self.original_per_batch)
    }

    /// One epoch's batches: (original indices, extra indices) pairs, the
    /// originals in the order `order` (already shuffled), the extras from
    /// seeded shuffles of 0..M drawn from `rng`.
    pub fn batches(&self, order: &[i64], rng: &mut impl Rng) -> Vec<(Vec<i64>, Vec<i64>)> {
        let m = self.source.len();
        let per_extra = self.batch_size - self.original_per_batch;
        let mut pool: Vec<i64> = Vec::new();
        order
            .chunks(self.original_per_batch)
            .map(|orig| {
                let extra = (0..per_extra)
                    .map(|_| {
                        if pool.is_empty() {
                            pool = (0..m).collect();
                            pool.shuffle(rng);
                        }
                        pool.pop().expect("a refilled pool")
                    })
                    .collect();
                (orig.to_vec(), extra)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::cifar::{random_images, write_bin, Variant};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// An extra set of 50 samples (a CIFAR binary file in `dir`), and
    /// round(0.3·23) = 7 original samples per batch of 23.
    fn plan(dir: &std::path::Path) -> ExtraPlan {
        let path = dir.join("extra.bin");
        write_bin(&path, Variant::Cifar10, &random_images(50, 10, 3)).unwrap();
        ExtraPlan {
            source: ExtraSource::open(&path, &[3, 32, 32], 10).unwrap(),
            original_per_batch: (0.3f64 * 23.0).round() as usize,
            batch_size: 23,
        }
    }

    #[test]
    fn each_batch_holds_r_b_originals_and_the_epoch_follows_the_original_set() {
        let dir = tempfile::tempdir().unwrap();
        let p = plan(dir.path());
        let n = 200usize;
        let draw = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut order: Vec<i64> = (0..n as i64).collect();
            order.shuffle(&mut rng);
            p.batches(&order, &mut rng)
        };
        let batches = draw(1);
        assert_eq!(batches.len(), p.batches_per_epoch(n));
        assert_eq!(batches.len(), 200usize.div_ceil(7));
        let mut seen = vec![0; n];
        for (i, (orig, extra)) in batches.iter().enumerate() {
            let b = (orig.len() + extra.len()) as f64;
            let last = i + 1 == batches.len();
            assert!(
                last || (orig.len() as f64 - 0.3 * b).abs() <= 1.0,
                "batch {i}: {} originals of {b}",
                orig.len()
            );
            assert_eq!(extra.len(), 23 - 7);
            assert!(extra.iter().all(|&e| (0..p.source.len()).contains(&e)));
            orig.iter().for_each(|&o| seen[o as usize] += 1);
        }
        assert!(seen.iter().all(|&c| c == 1), "each original once per epoch");
        // The extras cycle through the whole extra set before repeating.
        let firsts: std::collections::BTreeSet<i64> =
            batches.iter().flat_map(|b| b.1.clone()).take(50).collect();
        assert_eq!(firsts.len(), 50);
        assert_eq!(draw(1), batches, "same seed, same draw");
        assert_ne!(draw(2), batches, "another seed, another draw");
    }
}
