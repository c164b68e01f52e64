//! A score network trained here by denoising score matching at one noise
//! level σ (Vincent 2011; docs/METHOD.md, "Score sources", source `dsm`).
//!
//! Loss: E_{x, ε}‖σ·s_θ(x + σε) + ε‖² (the DSM objective with target
//! −ε/σ, weighted by σ²), whose minimiser is the score of the σ-smoothed
//! density p_σ = p ∗ N(0, σ²I). Vectors get an MLP (d → 256 → 256 → d,
//! SiLU); images a small U-Net-style conv net (two scales, one skip).
//! The network is saved as safetensors with a JSON sidecar and can be
//! reused (`--dsm-model`). It scores the clean input x, or (`--score-input
//! noised`) a noised x + σξ, ξ ~ N(0, I) from libtorch's generator: the
//! point where it was trained to be accurate (TASER App. C.4 reads either).
use super::torchscript::ScoreInput;
use super::ScoreField;
use crate::data::augment::CropFlip;
use crate::error::{Error, Result};
use crate::fsutil::{read_versioned_json, write_json_atomically, JsonFixes};
use crate::optim::{Optimizer, OptimizerConfig, OptimizerKind};
use crate::progress;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{nn, nn::Module, Device, Kind, Tensor};

/// Training settings of the DSM network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DsmConfig {
    pub sigma: f64,
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub seed: u64,
}

/// The sidecar of a saved DSM network.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DsmMeta {
    format: String,
    input_shape: Vec<i64>,
    config: DsmConfig,
    final_loss: f64,
}

const FORMAT: &str = "taser-dsm-score-net/1";

// One instance per network: boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Body {
    Mlp(Vec<nn::Linear>),
    Conv {
        e1: nn::Conv2D,
        e2: nn::Conv2D,
        mid: nn::Conv2D,
        up: nn::ConvTranspose2D,
        out: nn::Conv2D,
    },
}

/// A DSM score network s_θ: inputs in [0,1] coordinates → scores.
#[derive(Debug)]
pub struct DsmNet {
    vs: nn::VarStore,
    body: Body,
    shape: Vec<i64>,
    pub config: DsmConfig,
    pub final_loss: f64,
    /// Where [`ScoreField::score`] evaluates the network.
    input: ScoreInput,
}

impl DsmNet {
    /// The network evaluated at the clean input (the default) or at a
    /// noised one, x + σξ with the network's σ (`--score-input`).
    pub fn evaluated_at(mut self, input: ScoreInput) -> DsmNet {
        self.input = input;
        self
    }

    fn build(shape: &[i64], config: &DsmConfig, device: Device) -> Result<DsmNet> {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let body = if shape.len() == 3 && shape[1] % 2 == 0 && shape[2] % 2 == 0 {
            let c = shape[0];
            let pad = nn::ConvConfig {
                padding: 1,
                ..Default::default()
            };
            let down = nn::ConvConfig {
                padding: 1,
                stride: 2,
                ..Default::default()
            };
            let up = nn::ConvTransposeConfig {
                padding: 1,
                stride: 2,
                ..Default::default()
            };
            Body::Conv {
                e1: nn::conv2d(&root / "e1", c, 32, 3, pad),
                e2: nn::conv2d(&root / "e2", 32, 64, 3, down),
                mid: nn::conv2d(&root / "mid", 64, 64, 3, pad),
                up: nn::conv_transpose2d(&root / "up", 64, 32, 4, up),
                out: nn::conv2d(&root / "out", 64, c, 3, pad),
            }
        } else if shape.len() == 3 {
            return Err(Error::invalid(
                "dsm",
                format!("{shape:?}"),
                "image height and width must be even",
            ));
        } else {
            let d: i64 = shape.iter().product();
            let widths = [d, 256, 256, d];
            Body::Mlp(
                widths
                    .windows(2)
                    .enumerate()
                    .map(|(i, w)| nn::linear(&root / "layers" / i, w[0], w[1], Default::default()))
                    .collect(),
            )
        };
        Ok(DsmNet {
            vs,
            body,
            shape: shape.to_vec(),
            config: config.clone(),
            final_loss: f64::NAN,
            input: ScoreInput::Clean,
        })
    }

    /// s_θ(x).
    pub fn forward(&self, x: &Tensor) -> Tensor {
        match &self.body {
            Body::Mlp(layers) => {
                let mut h = x.flatten(1, -1);
                for (i, l) in layers.iter().enumerate() {
                    h = l.forward(&h);
                    if i + 1 < layers.len() {
                        h = h.silu();
                    }
                }
                h.view(x.size().as_slice())
            }
            Body::Conv {
                e1,
                e2,
                mid,
                up,
                out,
            } => {
                let h1 = e1.forward(x).silu();
                let h2 = e2.forward(&h1).silu();
                let m = mid.forward(&h2).silu();
                let u = up.forward(&m).silu();
                out.forward(&Tensor::cat(&[u, h1], 1))
            }
        }
    }

    /// Trains a network on `x` (`[N, …]`) by DSM at noise `config.sigma`.
    pub fn train(x: &Tensor, config: &DsmConfig, device: Device) -> Result<DsmNet> {
        if config.sigma.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
            || config.steps == 0
            || config.batch_size == 0
            || config.lr.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
        {
            return Err(Error::invalid(
                "dsm settings",
                format!(
                    "σ {} steps {} batch {} lr {}",
                    config.sigma, config.steps, config.batch_size, config.lr
                ),
                "σ, steps, batch size and learning rate must be positive",
            ));
        }
        tch::manual_seed(config.seed as i64);
        let mut net = DsmNet::build(&x.size()[1..], config, device)?;
        let params: Vec<(String, Tensor)> = {
            let mut v: Vec<_> = net.vs.variables().into_iter().collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        let mut opt = Optimizer::new(
            &OptimizerConfig {
                kind: OptimizerKind::Adam,
                momentum: 0.0,
                nesterov: false,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.0,
            },
            params,
        );
        let n = x.size()[0] as usize;
        let data = x.to_device(device);
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let mut order: Vec<i64> = Vec::new();
        let bar = progress::bar(config.steps as u64, "dsm");
        let mut recent = Vec::new();
        for step in 0..config.steps {
            if order.len() < config.batch_size {
                let mut fresh: Vec<i64> = (0..n as i64).collect();
                fresh.shuffle(&mut rng);
                order.extend(fresh);
            }
            let idx: Vec<i64> = order.drain(..config.batch_size.min(order.len())).collect();
            let xb = data.index_select(0, &Tensor::from_slice(&idx).to_device(device));
            let eps = xb.randn_like();
            let pred = net.forward(&(&xb + &eps * config.sigma));
            let loss = (pred * config.sigma + &eps).square().mean(Kind::Float);
            opt.zero_grad();
            loss.backward();
            // Cosine decay to 10% keeps the last steps from jittering.
            let lr = config.lr
                * (0.55 + 0.45 * (std::f64::consts::PI * step as f64 / config.steps as f64).cos());
            opt.step(lr);
            if step + 100 >= config.steps {
                recent.push(loss.double_value(&[]));
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        net.final_loss = recent.iter().sum::<f64>() / recent.len().max(1) as f64;
        Ok(net)
    }

    /// Saves the weights (`path`, safetensors) and the sidecar (`.json`).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut vars: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        crate::checkpoint::write_tensors(path, &vars)?;
        let meta = DsmMeta {
            format: FORMAT.into(),
            input_shape: self.shape.clone(),
            config: self.config.clone(),
            final_loss: self.final_loss,
        };
        write_json_atomically(&path.with_extension("json"), &meta)
    }

    /// Loads a network saved by [`DsmNet::save`].
    pub fn load(path: &Path, device: Device) -> Result<DsmNet> {
        let meta: DsmMeta = read_versioned_json(
            &path.with_extension("json"),
            FORMAT,
            JsonFixes {
                missing:
                    "give a DSM network saved by score-precompute (its .json sidecar beside it)",
                corrupt: "retrain the DSM network, or give one saved by score-precompute",
            },
        )?;
        let mut net = DsmNet::build(&meta.input_shape, &meta.config, device)?;
        let tensors = crate::checkpoint::read_tensors(path)?;
        let vars = net.vs.variables();
        if tensors.len() != vars.len() {
            return Err(Error::CheckpointMismatch {
                path: path.to_path_buf(),
                reason: format!("{} tensors, the network has {}", tensors.len(), vars.len()),
                fix: "retrain the DSM network".into(),
            });
        }
        tch::no_grad(|| -> Result<()> {
            for (name, t) in &tensors {
                let mut v = vars
                    .get(name)
                    .ok_or_else(|| Error::CheckpointMismatch {
                        path: path.to_path_buf(),
                        reason: format!("unknown tensor `{name}`"),
                        fix: "retrain the DSM network".into(),
                    })?
                    .shallow_clone();
                v.f_copy_(t)?;
            }
            Ok(())
        })?;
        net.final_loss = meta.final_loss;
        Ok(net)
    }
}

impl ScoreField for DsmNet {
    fn input_shape(&self) -> &[i64] {
        &self.shape
    }

    fn score(&self, x: &Tensor, _indices: &Tensor, _aug: Option<&CropFlip>) -> Tensor {
        let _guard = tch::no_grad_guard();
        let u = x.to_kind(Kind::Float);
        let u = match self.input {
            ScoreInput::Clean => u,
            ScoreInput::Noised => &u + u.randn_like() * self.config.sigma,
        };
        self.forward(&u).to_kind(x.kind())
    }

    fn describe(&self) -> String {
        format!(
            "DSM score network at σ = {}, {:?} input",
            self.config.sigma, self.input
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::gmm::Gmm;

    #[test]
    fn dsm_learns_the_smoothed_score_of_a_two_dimensional_mixture() {
        let opts = (Kind::Double, Device::Cpu);
        let sigma = 0.3;
        let weights = Tensor::from_slice(&[0.4, 0.6]);
        let means = Tensor::from_slice(&[-1.0, 0.0, 1.0, 0.5]).view([2, 2]);
        let var = 0.2f64 * 0.2;
        let cov = Tensor::eye(2, opts).unsqueeze(0).repeat([2, 1, 1]) * var;
        // Samples of the mixture.
        tch::manual_seed(0);
        let n = 4000;
        let comp = Tensor::rand([n], opts).ge(0.4).to_kind(Kind::Int64);
        let x = (means.index_select(0, &comp) + Tensor::randn([n, 2], opts) * var.sqrt())
            .to_kind(Kind::Float);
        let net = DsmNet::train(
            &x,
            &DsmConfig {
                sigma,
                steps: 3000,
                batch_size: 256,
                lr: 2e-3,
                seed: 1,
            },
            Device::Cpu,
        )
        .unwrap();
        // The true score of p_σ: the same mixture with covariance (var + σ²)I.
        let smoothed = Gmm::from_parameters(
            &[2],
            &weights,
            &means,
            &(cov + Tensor::eye(2, opts) * (sigma * sigma)),
        )
        .unwrap();
        let held_out = (means
            .index_select(0, &Tensor::rand([500], opts).ge(0.4).to_kind(Kind::Int64))
            + Tensor::randn([500, 2], opts) * (var + sigma * sigma).sqrt())
        .to_kind(Kind::Float);
        let truth = smoothed.score(&held_out, &Tensor::new(), None);
        let est = net.score(&held_out, &Tensor::new(), None);
        let cos = (&truth * &est).sum_dim_intlist(1, false, Kind::Float)
            / (truth.norm_scalaropt_dim(2, [1], false) * est.norm_scalaropt_dim(2, [1], false));
        let mean_cos = cos.mean(Kind::Float).double_value(&[]);
        println!("mean cosine similarity {mean_cos:.4}");
        assert!(mean_cos >= 0.9, "mean cosine {mean_cos}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dsm.safetensors");
        net.save(&path).unwrap();
        let back = DsmNet::load(&path, Device::Cpu).unwrap();
        assert!(back.score(&held_out, &Tensor::new(), None).equal(&est));
    }
}
