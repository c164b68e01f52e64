use super::{Activation, Body, ModelSpec};
use tch::{nn, nn::Module, Tensor};

/// Fully connected network: flatten, then `Linear → activation` per hidden
/// width, then a linear output layer. Layers are named `layers.0`, `layers.1`…
#[derive(Debug)]
pub struct Mlp {
    layers: Vec<nn::Linear>,
    activation: Activation,
}

impl Mlp {
    pub fn new(root: &nn::Path, spec: &ModelSpec) -> Mlp {
        let mut d_in: i64 = spec.input_shape.iter().product();
        let mut layers = Vec::new();
        let widths = spec.mlp_hidden.iter().copied().chain([spec.num_outputs]);
        for (i, d_out) in widths.enumerate() {
            layers.push(nn::linear(
                root / "layers" / i,
                d_in,
                d_out,
                Default::default(),
            ));
            d_in = d_out;
        }
        Mlp {
            layers,
            activation: spec.activation,
        }
    }
}

impl Body for Mlp {
    fn forward_t(&self, x: &Tensor, _train: bool) -> Tensor {
        let mut h = x.flatten(1, -1);
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(&h);
            if i < last {
                h = self.activation.apply(&h);
            }
        }
        h
    }
}
