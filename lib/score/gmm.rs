//! Class-conditional Gaussian mixture (docs/METHOD.md, "Score sources", source `gmm`):
//! p(x) = Σ_c π_c N(x; μ_c, Σ_c), with π_c the class frequencies and μ_c,
//! Σ_c fitted per class with shrinkage. The score of the marginal mixture is
//! ∇ log p(x) = Σ_c w_c(x)·(−Σ_c⁻¹(x − μ_c)), w_c(x) the posterior
//! responsibilities softmax_c(log π_c + log N(x; μ_c, Σ_c)).
use super::gaussian::shrunk_moments;
use super::ScoreField;
use crate::data::augment::CropFlip;
use crate::error::{Error, Result};
use std::f64::consts::PI;
use tch::{Kind, Tensor};

/// A Gaussian mixture in double precision.
#[derive(Debug)]
pub struct Gmm {
    shape: Vec<i64>,
    /// log π_c, `[C]`.
    log_weights: Tensor,
    /// μ_c, `[C, d]`.
    means: Tensor,
    /// Σ_c⁻¹, `[C, d, d]`.
    precisions: Tensor,
    /// log det Σ_c, `[C]`.
    log_dets: Tensor,
}

impl Gmm {
    /// A mixture from its parameters: weights `[C]` (summing to 1), means
    /// `[C, d]`, covariances `[C, d, d]`.
    pub fn from_parameters(
        shape: &[i64],
        weights: &Tensor,
        means: &Tensor,
        covariances: &Tensor,
    ) -> Result<Gmm> {
        let cov = covariances.to_kind(Kind::Double);
        let chol = Tensor::f_linalg_cholesky(&cov, false).map_err(|e| {
            Error::invalid(
                "covariance",
                "(matrix)",
                format!("not positive definite: {e}"),
            )
        })?;
        let log_dets = chol
            .diagonal(0, -2, -1)
            .log()
            .sum_dim_intlist(-1, false, Kind::Double)
            * 2.0;
        Ok(Gmm {
            shape: shape.to_vec(),
            log_weights: weights.to_kind(Kind::Double).log(),
            means: means.to_kind(Kind::Double),
            precisions: Tensor::f_linalg_inv(&cov)?,
            log_dets,
        })
    }

    /// Fits one shrunk Gaussian per class of `y` on inputs `x`.
    pub fn fit(x: &Tensor, y: &Tensor, num_classes: i64, shrinkage: f64) -> Result<Gmm> {
        let _guard = tch::no_grad_guard();
        let n = x.size()[0];
        let labels: Vec<i64> = Vec::try_from(y.to_device(tch::Device::Cpu))
            .map_err(|e: tch::TchError| Error::invalid("labels", "(tensor)", e.to_string()))?;
        let (mut weights, mut means, mut covs) = (Vec::new(), Vec::new(), Vec::new());
        for c in 0..num_classes {
            let idx: Vec<i64> = (0..n).filter(|&i| labels[i as usize] == c).collect();
            if idx.len() < 2 {
                continue;
            }
            let xc = x.index_select(0, &Tensor::from_slice(&idx).to_device(x.device()));
            let (mu, cov) = shrunk_moments(&xc, shrinkage)?;
            weights.push(idx.len() as f64 / n as f64);
            means.push(mu);
            covs.push(cov);
        }
        if weights.is_empty() {
            return Err(Error::invalid(
                "gmm",
                "(data)",
                "no class has two or more samples",
            ));
        }
        let total: f64 = weights.iter().sum();
        let w = Tensor::from_slice(&weights.iter().map(|v| v / total).collect::<Vec<_>>());
        Gmm::from_parameters(
            &x.size()[1..],
            &w,
            &Tensor::stack(&means, 0),
            &Tensor::stack(&covs, 0),
        )
    }

    /// Per-component log π_c + log N(x; μ_c, Σ_c) `[B, C]` and the
    /// per-component scores −Σ_c⁻¹(x − μ_c) `[B, C, d]`.
    fn components(&self, x: &Tensor) -> (Tensor, Tensor) {
        let flat = x
            .flatten(1, -1)
            .to_kind(Kind::Double)
            .to_device(self.means.device());
        let d = flat.size()[1] as f64;
        let dev = flat.unsqueeze(1) - self.means.unsqueeze(0); // [B, C, d]
        let pdev = dev
            .unsqueeze(2)
            .matmul(&self.precisions.unsqueeze(0))
            .squeeze_dim(2); // [B, C, d]
        let quad = (&pdev * &dev).sum_dim_intlist(-1, false, Kind::Double);
        let log_joint =
            &self.log_weights - quad * 0.5 - &self.log_dets * 0.5 - 0.5 * d * (2.0 * PI).ln();
        (log_joint, -pdev)
    }

    /// log p(x) per sample (double precision).
    pub fn log_density(&self, x: &Tensor) -> Tensor {
        self.components(x).0.logsumexp([1], false)
    }

    pub fn to_device(self, device: tch::Device) -> Gmm {
        Gmm {
            log_weights: self.log_weights.to_device(device),
            means: self.means.to_device(device),
            precisions: self.precisions.to_device(device),
            log_dets: self.log_dets.to_device(device),
            ..self
        }
    }
}

impl ScoreField for Gmm {
    fn input_shape(&self) -> &[i64] {
        &self.shape
    }

    fn score(&self, x: &Tensor, _indices: &Tensor, _aug: Option<&CropFlip>) -> Tensor {
        let (log_joint, scores) = self.components(x);
        let w = log_joint.softmax(1, Kind::Double).unsqueeze(-1);
        (w * scores)
            .sum_dim_intlist(1, false, Kind::Double)
            .view(x.size().as_slice())
            .to_kind(x.kind())
    }

    fn describe(&self) -> String {
        format!(
            "class-conditional gaussian mixture of {} components",
            self.log_weights.size()[0]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gmm_score_is_the_gradient_of_its_log_density() {
        tch::manual_seed(4);
        let opts = (Kind::Double, tch::Device::Cpu);
        let x = Tensor::randn([300, 3], opts);
        let y = Tensor::randint(3, [300], (Kind::Int64, tch::Device::Cpu));
        let x = &x + y.to_kind(Kind::Double).unsqueeze(1) * 0.8;
        let gmm = Gmm::fit(&x, &y, 3, 0.1).unwrap();
        let probe = Tensor::randn([5, 3], opts) + 0.8;
        let s = gmm.score(&probe, &Tensor::new(), None);
        let h = 1e-5;
        for j in 0..3 {
            let e = Tensor::zeros([1, 3], opts).index_fill(1, &Tensor::from_slice(&[j]), h);
            let fd =
                (gmm.log_density(&(&probe + &e)) - gmm.log_density(&(&probe - &e))) / (2.0 * h);
            let err = (s.select(1, j) - fd).abs().max().double_value(&[]);
            assert!(err < 1e-6, "coordinate {j}: {err}");
        }
    }
}
