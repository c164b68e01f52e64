//! Classifiers and regressors (docs/METHOD.md, "Coordinates and data"): every model takes inputs in [0,1]
//! and normalises them inside (per-channel mean and std stored in the
//! checkpoint as the buffers `norm.mean` and `norm.std`).
//!
//! Architectures: `mlp`, `cnn-small`, `resnet18` (CIFAR stem: 3×3 conv,
//! stride 1, no max-pool), `preact-resnet18`, `wrn-D-K` (wide ResNet of
//! depth D and widening factor K, as in the TRADES reference code). Tensor
//! names follow the PyTorch reference implementations, so a checkpoint's
//! state dict reads naturally from Python.
mod convnets;
mod mlp;
mod resnet;

use crate::device::{to_memory_format, MemoryFormat};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use tch::{nn, Device, Kind, Tensor};

/// Non-linearity of a model. Smooth ones (`silu`, `tanh`, `softplus`) make
/// second derivatives informative for the Stein penalty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    Relu,
    Silu,
    Tanh,
    Softplus,
}

impl Activation {
    pub fn apply(self, x: &Tensor) -> Tensor {
        match self {
            Activation::Relu => x.relu(),
            Activation::Silu => x.silu(),
            Activation::Tanh => x.tanh(),
            Activation::Softplus => x.softplus(),
        }
    }
}

/// An architecture name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Arch {
    Mlp,
    CnnSmall,
    Resnet18,
    PreactResnet18,
    /// Wide ResNet of `depth` (6n + 4) and widening factor `width`.
    Wrn {
        depth: i64,
        width: i64,
    },
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arch::Mlp => f.write_str("mlp"),
            Arch::CnnSmall => f.write_str("cnn-small"),
            Arch::Resnet18 => f.write_str("resnet18"),
            Arch::PreactResnet18 => f.write_str("preact-resnet18"),
            Arch::Wrn { depth, width } => write!(f, "wrn-{depth}-{width}"),
        }
    }
}

impl FromStr for Arch {
    type Err = Error;
    fn from_str(s: &str) -> Result<Arch> {
        let unknown = || {
            Error::invalid(
                "--model",
                s,
                "unknown model; expected mlp, cnn-small, resnet18, preact-resnet18 or wrn-D-K \
                 (e.g. wrn-28-10, D = 6n + 4)",
            )
        };
        match s {
            "mlp" => Ok(Arch::Mlp),
            "cnn-small" => Ok(Arch::CnnSmall),
            "resnet18" => Ok(Arch::Resnet18),
            "preact-resnet18" => Ok(Arch::PreactResnet18),
            _ => {
                let rest = s.strip_prefix("wrn-").ok_or_else(unknown)?;
                let (d, k) = rest.split_once('-').ok_or_else(unknown)?;
                let depth: i64 = d.parse().map_err(|_| unknown())?;
                let width: i64 = k.parse().map_err(|_| unknown())?;
                if depth < 10 || (depth - 4) % 6 != 0 || width < 1 {
                    return Err(Error::invalid(
                        "--model",
                        s,
                        "wide ResNet depth must be 6n + 4 with n ≥ 1 and width ≥ 1",
                    ));
                }
                Ok(Arch::Wrn { depth, width })
            }
        }
    }
}

impl From<Arch> for String {
    fn from(a: Arch) -> String {
        a.to_string()
    }
}

impl TryFrom<String> for Arch {
    type Error = Error;
    fn try_from(s: String) -> Result<Arch> {
        s.parse()
    }
}

/// Everything needed to rebuild a model: written into every checkpoint's
/// JSON sidecar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    pub arch: Arch,
    pub activation: Activation,
    /// Hidden widths of `mlp` (ignored by the other architectures).
    pub mlp_hidden: Vec<i64>,
    /// Shape of one input, e.g. `[3, 32, 32]`.
    pub input_shape: Vec<i64>,
    /// Number of outputs (classes, or 1 for regression).
    pub num_outputs: i64,
}

impl ModelSpec {
    /// Checks that the architecture can take this input shape.
    pub fn check(&self) -> Result<()> {
        let image = self.input_shape.len() == 3;
        match self.arch {
            Arch::Mlp => {}
            Arch::CnnSmall if image && self.input_shape[1] >= 4 && self.input_shape[2] >= 4 => {}
            Arch::Resnet18 | Arch::PreactResnet18 | Arch::Wrn { .. } if image => {}
            arch => {
                return Err(Error::invalid(
                    "--model",
                    arch,
                    format!(
                        "needs image inputs [C, H, W] (H, W ≥ 4), but the data set's inputs have shape {:?}; \
                         use --model mlp",
                        self.input_shape
                    ),
                ))
            }
        }
        if self.num_outputs < 1 {
            return Err(Error::invalid(
                "num_outputs",
                self.num_outputs,
                "must be ≥ 1",
            ));
        }
        if self.arch == Arch::Mlp && self.mlp_hidden.iter().any(|&h| h < 1) {
            return Err(Error::invalid(
                "--mlp-hidden",
                format!("{:?}", self.mlp_hidden),
                "widths must be ≥ 1",
            ));
        }
        Ok(())
    }

    pub fn channels(&self) -> i64 {
        if self.input_shape.len() == 3 {
            self.input_shape[0]
        } else {
            1
        }
    }
}

/// A network body: maps normalised inputs to outputs.
trait Body: std::fmt::Debug + Send {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor;
}

/// A model with its variables: normalisation, then the architecture.
#[derive(Debug)]
pub struct Model {
    pub vs: nn::VarStore,
    pub spec: ModelSpec,
    mean: Tensor,
    std: Tensor,
    body: Box<dyn Body>,
    /// Layout of 4-D weights and of the inputs `forward_t` passes on.
    memory_format: MemoryFormat,
    /// Forward passes so far (tests check that λ = 0 adds none).
    forward_calls: std::sync::atomic::AtomicUsize,
}

impl Model {
    /// Builds a model with fresh weights (from libtorch's generator: call
    /// `tch::manual_seed` first for reproducible initialisation) and the
    /// normalisation constants `mean`, `std` (one per channel).
    pub fn new(spec: &ModelSpec, device: Device, mean: &[f32], std: &[f32]) -> Result<Model> {
        spec.check()?;
        let c = spec.channels() as usize;
        if mean.len() != c || std.len() != c {
            return Err(Error::invalid(
                "normalisation",
                format!("{} means, {} stds", mean.len(), std.len()),
                format!("expected {c} (one per input channel)"),
            ));
        }
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let norm = root.sub("norm");
        let mut mean_t = norm.zeros_no_train("mean", &[c as i64]);
        let mut std_t = norm.ones_no_train("std", &[c as i64]);
        tch::no_grad(|| {
            mean_t.copy_(&Tensor::from_slice(mean).to_device(device));
            std_t.copy_(&Tensor::from_slice(std).to_device(device));
        });
        let body: Box<dyn Body> = match spec.arch {
            Arch::Mlp => Box::new(mlp::Mlp::new(&root, spec)),
            Arch::CnnSmall => Box::new(convnets::CnnSmall::new(&root, spec)),
            Arch::Resnet18 => Box::new(resnet::ResNet18::new(&root, spec)),
            Arch::PreactResnet18 => Box::new(resnet::PreActResNet18::new(&root, spec)),
            Arch::Wrn { depth, width } => {
                Box::new(resnet::WideResNet::new(&root, spec, depth, width))
            }
        };
        Ok(Model {
            vs,
            spec: spec.clone(),
            mean: mean_t,
            std: std_t,
            body,
            memory_format: MemoryFormat::Contiguous,
            forward_calls: Default::default(),
        })
    }

    /// Outputs for inputs `x` in [0,1] (`[N, input_shape…]`). `train`
    /// selects BatchNorm's training mode.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.forward_calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (mean, std) = self.normalisation(x.dim());
        let z = to_memory_format(&((x - mean) / std), self.memory_format);
        self.body.forward_t(&z, train)
    }

    /// Puts every 4-D variable (convolution weights) in `format` in place
    /// (PyTorch's `model.to(memory_format=…)`); from then on `forward_t`
    /// passes 4-D inputs on in that layout too. Values are unchanged.
    ///
    /// Errors: [`Error::InvalidArgument`] naming `--memory-format` for
    /// channels-last on a model without convolutions (`mlp`).
    pub fn set_memory_format(&mut self, format: MemoryFormat) -> Result<()> {
        if format == MemoryFormat::ChannelsLast && self.spec.arch == Arch::Mlp {
            return Err(Error::invalid(
                "--memory-format",
                "channels-last",
                "applies to the convolutional models (cnn-small, resnet18, preact-resnet18, \
                 wrn-D-K), not mlp; use --memory-format contiguous",
            ));
        }
        tch::no_grad(|| {
            for (_, mut v) in self.vs.variables() {
                if v.dim() == 4 {
                    let laid_out = to_memory_format(&v, format);
                    v.set_data(&laid_out);
                }
            }
        });
        self.memory_format = format;
        Ok(())
    }

    /// The layout [`Self::set_memory_format`] chose.
    pub fn memory_format(&self) -> MemoryFormat {
        self.memory_format
    }

    /// Whether the model has BatchNorm layers: its train- and eval-mode
    /// forwards then differ (so a step's train-mode logits cannot stand for
    /// an eval-mode forward).
    pub fn has_batch_norm(&self) -> bool {
        self.vs
            .variables()
            .keys()
            .any(|k| k.ends_with("running_mean"))
    }

    /// The per-channel mean μ_c and std σ_c the model normalises its [0,1]
    /// inputs with (z = (x − μ)/σ), shaped to broadcast against a batch of
    /// `dim` dimensions (`[1, C, 1, 1]` for images, `[1, C]` otherwise).
    pub fn normalisation(&self, dim: usize) -> (Tensor, Tensor) {
        let shape: &[i64] = if dim == 4 { &[1, -1, 1, 1] } else { &[1, -1] };
        (self.mean.view(shape), self.std.view(shape))
    }

    /// Number of forward passes made so far.
    pub fn forward_calls(&self) -> usize {
        self.forward_calls
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Number of trainable parameters.
    pub fn num_parameters(&self) -> i64 {
        self.vs
            .trainable_variables()
            .iter()
            .map(|t| t.numel() as i64)
            .sum()
    }

    /// Trainable parameters in a fixed order (sorted by name), the order the
    /// optimiser state is stored in.
    pub fn named_trainable(&self) -> Vec<(String, Tensor)> {
        let mut vars: Vec<(String, Tensor)> = self
            .vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Copies every variable (and buffer) of `other` into this model.
    pub fn copy_from(&mut self, other: &Model) -> Result<()> {
        self.vs.copy(&other.vs)?;
        Ok(())
    }

    /// Sets every variable to `kind` precision (f32 by default).
    pub fn set_kind(&mut self, kind: Kind) {
        self.vs.set_kind(kind);
    }
}

/// 2-D convolution without bias, as the ResNet references use.
fn conv(p: nn::Path, c_in: i64, c_out: i64, k: i64, stride: i64, padding: i64) -> nn::Conv2D {
    let cfg = nn::ConvConfig {
        stride,
        padding,
        bias: false,
        ..Default::default()
    };
    nn::conv2d(p, c_in, c_out, k, cfg)
}

/// BatchNorm with PyTorch's defaults (momentum 0.1, eps 1e-5).
fn batch_norm(p: nn::Path, c: i64) -> nn::BatchNorm {
    nn::batch_norm2d(p, c, Default::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(arch: &str, input_shape: Vec<i64>, num_outputs: i64) -> ModelSpec {
        ModelSpec {
            arch: arch.parse().unwrap(),
            activation: Activation::Relu,
            mlp_hidden: vec![32, 16],
            input_shape,
            num_outputs,
        }
    }

    fn build(s: &ModelSpec) -> Model {
        let c = if s.input_shape.len() == 3 {
            s.input_shape[0] as usize
        } else {
            1
        };
        Model::new(s, Device::Cpu, &vec![0.5; c], &vec![0.25; c]).unwrap()
    }

    #[test]
    fn parameter_counts_match_the_references() {
        let cifar = vec![3, 32, 32];
        assert_eq!(
            build(&spec("resnet18", cifar.clone(), 10)).num_parameters(),
            11_173_962
        );
        assert_eq!(
            build(&spec("wrn-28-10", cifar.clone(), 10)).num_parameters(),
            36_479_194
        );
        // kuangliu's PreAct ResNet-18 has 11,171,146; the robust-overfitting
        // reference adds a final BatchNorm(512): + 2·512.
        assert_eq!(
            build(&spec("preact-resnet18", cifar, 10)).num_parameters(),
            11_171_146 + 1024
        );
        // mlp 64 → 32 → 16 → 10: (64·32 + 32) + (32·16 + 16) + (16·10 + 10).
        assert_eq!(
            build(&spec("mlp", vec![1, 8, 8], 10)).num_parameters(),
            2080 + 528 + 170
        );
    }

    #[test]
    fn every_architecture_gives_one_row_of_outputs_per_input() {
        let cases = [
            ("mlp", vec![1], 1),
            ("mlp", vec![1, 8, 8], 10),
            ("cnn-small", vec![1, 8, 8], 10),
            ("cnn-small", vec![3, 32, 32], 100),
            ("resnet18", vec![3, 32, 32], 10),
            ("preact-resnet18", vec![3, 32, 32], 10),
            ("wrn-16-2", vec![3, 32, 32], 10),
        ];
        for (arch, shape, outputs) in cases {
            let s = spec(arch, shape.clone(), outputs);
            let m = build(&s);
            let mut dims = vec![3];
            dims.extend(&shape);
            let x = Tensor::rand(dims.as_slice(), (Kind::Float, Device::Cpu));
            for train in [true, false] {
                assert_eq!(
                    m.forward_t(&x, train).size(),
                    vec![3, outputs],
                    "{arch} {shape:?}"
                );
            }
        }
    }

    #[test]
    fn normalisation_is_part_of_the_model() {
        let s = spec("mlp", vec![1, 8, 8], 10);
        let m = build(&s);
        let names: Vec<String> = m.vs.variables().into_keys().collect();
        assert!(
            names.contains(&"norm.mean".to_string()) && names.contains(&"norm.std".to_string())
        );
        assert_eq!(
            m.vs.trainable_variables().len(),
            6,
            "norm buffers must not be trainable"
        );
    }

    #[test]
    fn unknown_or_unfit_architectures_are_refused() {
        let err = "resnet99".parse::<Arch>().unwrap_err().to_string();
        assert!(
            err.contains("resnet99") && err.contains("cnn-small"),
            "{err}"
        );
        assert!("wrn-27-10"
            .parse::<Arch>()
            .unwrap_err()
            .to_string()
            .contains("6n + 4"));
        let err = spec("resnet18", vec![1], 1)
            .check()
            .unwrap_err()
            .to_string();
        assert!(err.contains("image inputs"), "{err}");
        assert_eq!(
            "wrn-28-10".parse::<Arch>().unwrap().to_string(),
            "wrn-28-10"
        );
    }

    /// Channels-last changes only the layout: the logits of cnn-small,
    /// resnet18, preact-resnet18 and a wide ResNet agree with the contiguous
    /// model's to 1e-5 relative (the kernels sum in another order), and
    /// every convolution weight gets NHWC strides; mlp refuses it.
    #[test]
    fn channels_last_gives_the_contiguous_logits() {
        for (arch, shape) in [
            ("cnn-small", vec![1, 8, 8]),
            ("resnet18", vec![3, 32, 32]),
            ("preact-resnet18", vec![3, 32, 32]),
            ("wrn-10-1", vec![3, 32, 32]),
        ] {
            let s = spec(arch, shape.clone(), 10);
            tch::manual_seed(3);
            let plain = build(&s);
            let mut cl = build(&s);
            cl.copy_from(&plain).unwrap();
            cl.set_memory_format(MemoryFormat::ChannelsLast).unwrap();
            let convs = cl.vs.variables().into_values().filter(|v| v.dim() == 4);
            assert!(convs
                .into_iter()
                .all(|v| crate::device::is_channels_last(&v)));
            let mut dims = vec![4];
            dims.extend(&shape);
            let x = Tensor::rand(dims.as_slice(), (Kind::Float, Device::Cpu));
            for train in [false, true] {
                let (a, b) = (plain.forward_t(&x, train), cl.forward_t(&x, train));
                let err = (&a - &b).abs().max().double_value(&[]);
                let scale = a.abs().max().double_value(&[]).max(1e-3);
                assert!(
                    err <= 1e-5 * scale,
                    "{arch} train={train}: {err} vs {scale}"
                );
            }
        }
        let mut mlp = build(&spec("mlp", vec![1, 8, 8], 10));
        let err = mlp
            .set_memory_format(MemoryFormat::ChannelsLast)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--memory-format"), "{err}");
    }
}
