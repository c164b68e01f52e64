//! Score fields s̃(x) ≈ ∇ₓ log p(x) in [0,1] pixel coordinates (docs/METHOD.md, "Score sources").
//!
//! Training asks a [`ScoreField`] for the scores of a batch. Analytic
//! fields ([`gaussian`], [`gmm`]) compute them from the (augmented) inputs;
//! [`file::ScoreFile`] reads what `score-precompute` wrote ([`precompute`])
//! by sample index and applies the batch's augmentation. Sources:
//! [`gaussian`], [`gmm`] (class-conditional Gaussians), [`dsm`] (a network
//! trained by denoising score matching), [`torchscript`] (a traced
//! ε-prediction diffusion model).
pub mod attributes;
pub mod dsm;
pub mod file;
pub mod gaussian;
pub mod gmm;
pub mod precompute;
pub mod torchscript;
pub mod writer;

pub use gaussian::{AnalyticSource, Gaussian};

use crate::data::augment::CropFlip;
use crate::error::{Error, Result};
use tch::Tensor;

/// A score field over inputs of a fixed shape.
pub trait ScoreField: std::fmt::Debug {
    /// Shape of one input (and one score).
    fn input_shape(&self) -> &[i64];
    /// s̃(x) for the batch `x` (already augmented with `aug`, if any);
    /// `indices` are the samples' positions in the split. Fields computed
    /// from x ignore `aug`; precomputed ones apply it to their stored
    /// scores (flip → flip, crop → the same shift, zero in the padding).
    fn score(&self, x: &Tensor, indices: &Tensor, aug: Option<&CropFlip>) -> Tensor;
    /// One line for logs and metadata.
    fn describe(&self) -> String;
    /// The file the scores were read from, for a model's sidecar; `None`
    /// for fields computed from the inputs.
    fn provenance(&self) -> Option<file::ScoreProvenance> {
        None
    }
}

/// Checks that a score field fits the data's inputs.
pub fn check_shape(field: &dyn ScoreField, input_shape: &[i64]) -> Result<()> {
    if field.input_shape() != input_shape {
        return Err(Error::invalid(
            "score",
            format!("shape {:?} ({})", field.input_shape(), field.describe()),
            format!("the data's inputs have shape {input_shape:?}; use scores computed for this data set"),
        ));
    }
    Ok(())
}

/// The linear-β DDPM schedule (β from 1e-4 to 0.02 over 1000 steps):
/// σ_t = √(1 − ᾱ_t), ᾱ_t = Π_{s≤t}(1 − β_s), t counted from 0 as in the
/// DDPM code (σ_50 ≈ 0.1733).
pub fn ddpm_sigma(t: i64) -> f64 {
    ddpm_alpha_bar(t).mul_add(-1.0, 1.0).sqrt()
}

/// ᾱ_t of the linear-β DDPM schedule (see [`ddpm_sigma`]).
pub fn ddpm_alpha_bar(t: i64) -> f64 {
    (0..=t)
        .map(|s| 1.0 - (1e-4 + (0.02 - 1e-4) * s as f64 / 999.0))
        .product()
}

/// Number of DDPM timesteps of the schedule.
pub const DDPM_STEPS: i64 = 1000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddpm_sigma_50_matches_the_spec() {
        assert!((ddpm_sigma(50) - 0.173345).abs() < 1e-6);
        assert!(ddpm_sigma(0) > 0.0 && ddpm_sigma(999) < 1.0 && ddpm_sigma(999) > 0.99);
    }
}
