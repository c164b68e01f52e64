//! The coordinates in which the penalty's derivatives are taken
//! (`--stein-coordinates`): pixels in [0,1], or the model's normalised
//! inputs z = (x − μ_c)/σ_c, and the affine map between them.
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// The coordinates in which ∇ₓ and Δ are taken (`--stein-coordinates`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Coordinates {
    /// Input pixels in [0,1] (the suite's default since its first release).
    #[default]
    Pixel,
    /// The model's normalised inputs z = (x − μ_c)/σ_c (per channel c).
    /// With x = μ + σz: ∇_z m = σ∇ₓm, ∂²m/∂z_i² = σ_c²∂²m/∂x_i² and the
    /// score transforms as s_z = σ s_x, so each pixel's terms of r are
    /// multiplied by σ_c²; on one channel r_z = σ²r_x and R_z = σ⁴R_x.
    Model,
}

/// The per-channel affine map between pixels x and the model's normalised
/// inputs z = (x − μ)/σ; `mean` and `std` broadcast against a batch.
#[derive(Debug)]
pub struct Rescale {
    pub mean: Tensor,
    pub std: Tensor,
}

impl Rescale {
    /// z = (x − μ)/σ.
    pub fn to_model(&self, x: &Tensor) -> Tensor {
        (x - &self.mean) / &self.std
    }

    /// x = μ + σz.
    pub fn to_pixel(&self, z: &Tensor) -> Tensor {
        z * &self.std + &self.mean
    }

    /// A score ∇ₓ log p in z coordinates: σ ⊙ s (the Jacobian of the affine
    /// map is constant, so log p_z = log p_x + const).
    pub fn score_to_model(&self, s: &Tensor) -> Tensor {
        s * &self.std
    }
}
