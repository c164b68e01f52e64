//! Gaussian score fields: N(0, I), or N(μ, Σ) fitted with shrinkage
//! (docs/METHOD.md, "Score sources", source `gaussian`).
use super::ScoreField;
use crate::data::augment::CropFlip;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Mean and covariance of `x` (`[N, …]`, flattened, double precision),
/// the covariance shrunk towards the scaled identity:
/// Σ_α = (1 − α)Σ + α·(tr Σ/d)·I, so that pixels of zero variance (digits'
/// borders) still give an invertible matrix.
pub fn shrunk_moments(x: &Tensor, shrinkage: f64) -> Result<(Tensor, Tensor)> {
    if !(0.0..=1.0).contains(&shrinkage) || (shrinkage == 0.0 && x.size()[0] < 2) {
        return Err(Error::invalid(
            "--score-shrinkage",
            shrinkage,
            "must be in (0, 1]",
        ));
    }
    let flat = x
        .flatten(1, -1)
        .to_kind(Kind::Double)
        .to_device(tch::Device::Cpu);
    let (n, d) = (flat.size()[0], flat.size()[1]);
    let mean = flat.mean_dim(0, false, Kind::Double);
    let centred = &flat - &mean;
    let cov = centred.transpose(0, 1).matmul(&centred) / (n - 1).max(1) as f64;
    let avg_var = cov.trace().double_value(&[]) / d as f64;
    let eye = Tensor::eye(d, (Kind::Double, tch::Device::Cpu));
    Ok((
        mean,
        cov * (1.0 - shrinkage) + eye * (shrinkage * avg_var.max(1e-12)),
    ))
}

/// Which analytic score source (`--score-source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum AnalyticSource {
    /// N(0, I): s(x) = −x (exact for the toy's p = N(0, 1)).
    GaussianStd,
    /// N(μ, Σ) fitted on the training split with shrinkage:
    /// s(x) = −Σ_α⁻¹(x − μ).
    GaussianFit,
}

/// A Gaussian score field s(x) = −P(x − μ), P the precision matrix.
#[derive(Debug)]
pub struct Gaussian {
    shape: Vec<i64>,
    mean: Tensor,
    /// `None` means the identity.
    precision: Option<Tensor>,
    description: String,
}

impl Gaussian {
    /// N(0, I) over inputs of `shape`.
    pub fn standard(shape: &[i64]) -> Gaussian {
        let d: i64 = shape.iter().product();
        Gaussian {
            shape: shape.to_vec(),
            mean: Tensor::zeros([d], (Kind::Float, tch::Device::Cpu)),
            precision: None,
            description: "gaussian N(0, I)".into(),
        }
    }

    /// N(μ, Σ_α) with the moments of `x` (`[N, …]`) from [`shrunk_moments`];
    /// the precision Σ_α⁻¹ is computed in double precision.
    ///
    /// Errors: [`Error::InvalidArgument`] for a shrinkage outside (0, 1].
    pub fn fit(x: &Tensor, shrinkage: f64) -> Result<Gaussian> {
        let _guard = tch::no_grad_guard();
        let shape = x.size()[1..].to_vec();
        let n = x.size()[0];
        let (mean, shrunk) = shrunk_moments(x, shrinkage)?;
        let precision = Tensor::f_linalg_inv(&shrunk)?;
        Ok(Gaussian {
            shape,
            mean: mean.to_kind(Kind::Float),
            precision: Some(precision.to_kind(Kind::Float)),
            description: format!("gaussian fitted on {n} training inputs, shrinkage {shrinkage}"),
        })
    }

    /// Moves the field's tensors to `device`.
    pub fn to_device(self, device: tch::Device) -> Gaussian {
        Gaussian {
            mean: self.mean.to_device(device),
            precision: self.precision.map(|p| p.to_device(device)),
            ..self
        }
    }
}

impl ScoreField for Gaussian {
    fn input_shape(&self) -> &[i64] {
        &self.shape
    }

    /// s(x) = −P(x − μ).
    fn score(&self, x: &Tensor, _indices: &Tensor, _aug: Option<&CropFlip>) -> Tensor {
        let flat = x.flatten(1, -1) - self.mean.to_kind(x.kind());
        let s = match &self.precision {
            Some(p) => -flat.matmul(&p.to_kind(x.kind())),
            None => -flat,
        };
        s.view(x.size().as_slice())
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::check_shape;

    #[test]
    fn fitted_gaussian_score_is_minus_precision_times_deviation() {
        tch::manual_seed(2);
        let x = Tensor::randn([500, 3], (Kind::Float, tch::Device::Cpu)) * 0.3 + 0.5;
        let g = Gaussian::fit(&x, 0.2).unwrap();
        let xd = x.to_kind(Kind::Double);
        let mu = xd.mean_dim(0, false, Kind::Double);
        let c = &xd - &mu;
        let cov = c.transpose(0, 1).matmul(&c) / 499.0;
        let shrunk = &cov * 0.8
            + Tensor::eye(3, (Kind::Double, tch::Device::Cpu))
                * (0.2 * cov.trace().double_value(&[]) / 3.0);
        let probe = Tensor::rand([7, 3], (Kind::Double, tch::Device::Cpu));
        let expect = -(&probe - &mu).matmul(&shrunk.inverse());
        let got = g
            .score(&probe.to_kind(Kind::Float), &Tensor::new(), None)
            .to_kind(Kind::Double);
        assert!((got - expect).abs().max().double_value(&[]) < 1e-4);
        let std = Gaussian::standard(&[3]);
        assert!(std.score(&probe, &Tensor::new(), None).equal(&(-&probe)));
    }

    #[test]
    fn a_field_of_another_shape_is_refused() {
        let g = Gaussian::standard(&[1, 8, 8]);
        let err = check_shape(&g, &[3, 32, 32]).unwrap_err().to_string();
        assert!(
            err.contains("[1, 8, 8]") && err.contains("[3, 32, 32]"),
            "{err}"
        );
        assert!(check_shape(&g, &[1, 8, 8]).is_ok());
    }
}
