//! A traced ε-prediction diffusion model (x_t, t) → ε as score source
//! (TASER C.4; docs/METHOD.md, "Score sources", source `torchscript`).
//!
//! s̃ = −ε_φ(x_t, t)/σ_t in the model's coordinates, σ_t of the linear-β
//! DDPM schedule ([`super::ddpm_sigma`]). Inputs in [0,1] are mapped to the
//! model's coordinates first (`minus-one-one`: u = 2x − 1; `unit`: u = x)
//! and the score is mapped back by the chain rule: for u = a·x + b,
//! s_[0,1](x) = a·s_u(u), so s_[0,1](x) = 2·s_[−1,1](2x − 1).
//! `clean` evaluates the model at u itself; `noised` at
//! u_t = √ᾱ_t·u + σ_t·ξ with ξ ~ N(0, I) from the seed.
use super::{ddpm_alpha_bar, ddpm_sigma, ScoreField, DDPM_STEPS};
use crate::data::augment::CropFlip;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{CModule, Device, IValue, Kind, Tensor};

/// The diffusion model's input coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum InputRange {
    /// u = 2x − 1 (DDPM's convention).
    MinusOneOne,
    /// u = x.
    Unit,
}

impl InputRange {
    /// (a, b) of u = a·x + b.
    pub fn affine(self) -> (f64, f64) {
        match self {
            InputRange::MinusOneOne => (2.0, -1.0),
            InputRange::Unit => (1.0, 0.0),
        }
    }
}

/// Where the model is evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ScoreInput {
    Clean,
    Noised,
}

/// A loaded TorchScript ε-model with its evaluation settings.
#[derive(Debug)]
pub struct TorchScriptEps {
    module: CModule,
    shape: Vec<i64>,
    pub t: i64,
    pub sigma_t: f64,
    range: InputRange,
    input: ScoreInput,
    device: Device,
}

impl TorchScriptEps {
    /// Loads `path` and checks its signature on a probe batch: it must map
    /// (x_t `[B, …shape]` f32, t `[B]` i64) to ε of the shape of x_t.
    pub fn load(
        path: &Path,
        shape: &[i64],
        t: i64,
        range: InputRange,
        input: ScoreInput,
        device: Device,
    ) -> Result<TorchScriptEps> {
        if !(0..DDPM_STEPS).contains(&t) {
            return Err(Error::invalid(
                "--t",
                t,
                format!("must be in 0..{DDPM_STEPS}"),
            ));
        }
        if !path.exists() {
            return Err(Error::MissingInput {
                path: path.to_path_buf(),
                reason: "no such file".into(),
                fix: "give a TorchScript file saved with torch.jit.save (a traced ε-model (x_t, t) → ε)".into(),
            });
        }
        let module = CModule::load_on_device(path, device).map_err(|e| Error::CorruptInput {
            path: path.to_path_buf(),
            reason: format!("not a loadable TorchScript module ({e})"),
            fix: "save the model with torch.jit.trace(...).save(path)".into(),
        })?;
        let model = TorchScriptEps {
            module,
            shape: shape.to_vec(),
            t,
            sigma_t: ddpm_sigma(t),
            range,
            input,
            device,
        };
        let mut probe_shape = vec![2];
        probe_shape.extend(shape);
        let probe = Tensor::zeros(probe_shape.as_slice(), (Kind::Float, device));
        match model.eps(&probe) {
            Ok(eps) if eps.size() == probe.size() => Ok(model),
            Ok(eps) => Err(Error::CorruptInput {
                path: path.to_path_buf(),
                reason: format!("it returned shape {:?} for inputs of shape {:?}", eps.size(), probe.size()),
                fix: "the model must map (x_t [B, C, H, W] float32, t [B] int64) to ε of the shape of x_t".into(),
            }),
            // Out of memory (or a missing deterministic kernel) is the
            // machine's failure, not the model file's: exit 1 with its hint.
            Err(e) if !crate::error::torch_hint(&e.to_string()).is_empty() => Err(Error::Torch(e)),
            Err(e) => Err(Error::CorruptInput {
                path: path.to_path_buf(),
                reason: format!("calling it as forward(x_t, t) failed: {e}"),
                fix: "the model must map (x_t [B, C, H, W] float32, t [B] int64) to ε of the shape of x_t".into(),
            }),
        }
    }

    fn eps(&self, u: &Tensor) -> std::result::Result<Tensor, tch::TchError> {
        let t = Tensor::full([u.size()[0]], self.t, (Kind::Int64, self.device));
        match self
            .module
            .forward_is(&[IValue::Tensor(u.shallow_clone()), IValue::Tensor(t)])?
        {
            IValue::Tensor(eps) => Ok(eps),
            other => Err(tch::TchError::Kind(format!(
                "returned {other:?}, not a tensor"
            ))),
        }
    }
}

impl ScoreField for TorchScriptEps {
    fn input_shape(&self) -> &[i64] {
        &self.shape
    }

    fn score(&self, x: &Tensor, _indices: &Tensor, _aug: Option<&CropFlip>) -> Tensor {
        let _guard = tch::no_grad_guard();
        let (a, b) = self.range.affine();
        let u = (x.to_kind(Kind::Float).to_device(self.device) * a) + b;
        let u = match self.input {
            ScoreInput::Clean => u,
            ScoreInput::Noised => {
                &u * ddpm_alpha_bar(self.t).sqrt() + u.randn_like() * self.sigma_t
            }
        };
        // The signature was checked on load; a failure here is a bug in the
        // model (e.g. batch-size dependent), reported as NaN scores, which
        // the writer refuses.
        let eps = self.eps(&u).unwrap_or_else(|_| u.full_like(f64::NAN));
        (eps * (-a / self.sigma_t)).to_kind(x.kind())
    }

    fn describe(&self) -> String {
        format!(
            "torchscript ε-model at t = {} (σ_t = {:.4}), {:?} input",
            self.t, self.sigma_t, self.input
        )
    }
}
