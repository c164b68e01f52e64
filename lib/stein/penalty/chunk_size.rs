//! `--penalty-chunk N|auto`: how many samples the chunked penalty
//! ([`super::chunked`]) back-propagates at a time.
//!
//! `auto` is sized once, before the first epoch, on the run's device: one
//! chunk of k = min(B, [`AUTO_TRIAL`]) training inputs is back-propagated
//! (λ = 1) while its peak memory P_k is measured
//! ([`crate::device::memory::peak_of`]), and the chunk is the largest whose
//! graph, at P_k/k per sample (which counts the trial's fixed costs
//! against the samples, so errs small), fits in half the free memory F:
//! chunk = clamp(⌊F / 2 / (P_k/k)⌋, 1, B). The result is recorded in
//! model.json (`penalty_chunk`); it changes the gradient only by rounding
//! (the chunked gradient equals the whole batch's to ~1e-6 relative).
use super::SteinPenalty;
use crate::data::{Batch, Dataset};
use crate::device::memory;
use crate::error::{Error, Result};
use crate::models::Model;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;
use tch::{Device, Kind, Tensor};

/// Inputs in `auto`'s trial chunk (fewer when the batch is smaller).
pub const AUTO_TRIAL: usize = 8;

/// `--penalty-chunk`: a number of samples, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PenaltyChunk {
    Samples(usize),
    Auto,
}

impl FromStr for PenaltyChunk {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(PenaltyChunk::Auto),
            _ => s
                .parse()
                .map(PenaltyChunk::Samples)
                .map_err(|_| format!("expected a number of samples or auto, got `{s}`")),
        }
    }
}

impl fmt::Display for PenaltyChunk {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            PenaltyChunk::Samples(n) => write!(f, "{n}"),
            PenaltyChunk::Auto => f.write_str("auto"),
        }
    }
}

/// A number in run.json (as before `auto` existed), or the string "auto".
impl Serialize for PenaltyChunk {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            PenaltyChunk::Samples(n) => s.serialize_u64(*n as u64),
            PenaltyChunk::Auto => s.serialize_str("auto"),
        }
    }
}

impl<'de> Deserialize<'de> for PenaltyChunk {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Samples(usize),
            Word(String),
        }
        match Raw::deserialize(d)? {
            Raw::Samples(n) => Ok(PenaltyChunk::Samples(n)),
            Raw::Word(w) => w.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// What `auto` measured and chose.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AutoChunk {
    /// The chosen chunk, in samples.
    pub samples: usize,
    /// Inputs in the trial chunk.
    pub trial: usize,
    /// The trial's peak bytes.
    pub trial_peak: u64,
    /// Free bytes on the device before the trial.
    pub available: u64,
}

impl fmt::Display for AutoChunk {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        write!(
            f,
            "--penalty-chunk auto: {} samples (a trial chunk of {} peaked at {:.2} GiB; {:.1} GiB free)",
            self.samples,
            self.trial,
            gib(self.trial_peak),
            gib(self.available)
        )
    }
}

/// The chunk whose graph at `trial_peak / trial` bytes per sample fits in
/// half of `available`, between 1 and `batch`.
pub fn chunk_for(available: u64, trial_peak: u64, trial: usize, batch: usize) -> usize {
    let per_sample = (trial_peak as f64 / trial.max(1) as f64).max(1.0);
    let fits = (available as f64 / 2.0 / per_sample).floor();
    (fits.min(batch as f64) as usize).clamp(1, batch.max(1))
}

impl SteinPenalty {
    /// Sizes `--penalty-chunk auto` (module doc) on the first training
    /// inputs of `data`, for batches of `batch_size`, and sets
    /// [`SteinPenalty::chunk`]; None when the run did not ask for `auto`.
    /// Leaves the parameters' gradients at zero.
    ///
    /// Errors: [`Error::InvalidArgument`] naming --penalty-chunk when the
    /// device reports no free memory or peak; the residual's.
    pub fn size_auto_chunk(
        &mut self,
        model: &Model,
        data: &Dataset,
        batch_size: usize,
        device: Device,
    ) -> Result<Option<AutoChunk>> {
        if !self.auto_chunk {
            return Ok(None);
        }
        let k = AUTO_TRIAL
            .min(batch_size)
            .min(data.train.len() as usize)
            .max(1);
        let x = data.train.x.narrow(0, 0, k as i64).to_device(device);
        let y = data.train.y.narrow(0, 0, k as i64).to_device(device);
        let indices = Tensor::arange(k as i64, (Kind::Int64, device));
        let batch = Batch {
            x: &x,
            y: &y,
            indices: &indices,
            aug: None,
            share: None,
        };
        let available = memory::available_bytes(device);
        let (trial, peak) =
            memory::peak_of(device, || self.backward_chunks(model, &batch, 0, k, 1.0));
        trial?;
        for (_, mut p) in model.named_trainable() {
            p.zero_grad();
        }
        let (Some(available), Some(trial_peak)) = (available, peak) else {
            return Err(Error::invalid(
                "--penalty-chunk",
                "auto",
                "this device reports no free memory or peak to size the chunk from; give a number of samples",
            ));
        };
        let samples = chunk_for(available, trial_peak, k, batch_size);
        self.chunk = Some(samples);
        Ok(Some(AutoChunk {
            samples,
            trial: k,
            trial_peak,
            available,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chunk_fits_half_the_free_memory_between_one_and_the_batch() {
        // 8 samples peaked at 800 MB: 100 MB each; 10 GB free → 50.
        assert_eq!(chunk_for(10_000_000_000, 800_000_000, 8, 128), 50);
        assert_eq!(chunk_for(10_000_000_000, 800_000_000, 8, 32), 32);
        assert_eq!(chunk_for(50_000_000, 800_000_000, 8, 128), 1);
        assert_eq!(chunk_for(10_000, 0, 8, 128), 128);
    }

    #[test]
    fn the_flag_reads_numbers_and_auto_and_round_trips_through_json() {
        assert_eq!("auto".parse(), Ok(PenaltyChunk::Auto));
        assert_eq!("16".parse(), Ok(PenaltyChunk::Samples(16)));
        assert!("some".parse::<PenaltyChunk>().unwrap_err().contains("auto"));
        for c in [PenaltyChunk::Auto, PenaltyChunk::Samples(16)] {
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(serde_json::from_str::<PenaltyChunk>(&json).unwrap(), c);
        }
        assert_eq!(
            serde_json::to_string(&PenaltyChunk::Samples(16)).unwrap(),
            "16"
        );
    }
}
