use super::{Activation, Body, ModelSpec};
use tch::{nn, nn::Module, Tensor};

/// A small VGG-like network for digits and quick CIFAR runs:
/// conv32 → conv64 → max-pool → conv128 → max-pool → fc256 → fc(out),
/// 3×3 convolutions with padding 1 and bias, no BatchNorm.
#[derive(Debug)]
pub struct CnnSmall {
    conv1: nn::Conv2D,
    conv2: nn::Conv2D,
    conv3: nn::Conv2D,
    fc1: nn::Linear,
    fc2: nn::Linear,
    activation: Activation,
}

impl CnnSmall {
    pub fn new(root: &nn::Path, spec: &ModelSpec) -> CnnSmall {
        let c = spec.input_shape[0];
        let (h, w) = (spec.input_shape[1], spec.input_shape[2]);
        let cfg = nn::ConvConfig {
            padding: 1,
            ..Default::default()
        };
        let flat = 128 * (h / 4) * (w / 4);
        CnnSmall {
            conv1: nn::conv2d(root / "conv1", c, 32, 3, cfg),
            conv2: nn::conv2d(root / "conv2", 32, 64, 3, cfg),
            conv3: nn::conv2d(root / "conv3", 64, 128, 3, cfg),
            fc1: nn::linear(root / "fc1", flat, 256, Default::default()),
            fc2: nn::linear(root / "fc2", 256, spec.num_outputs, Default::default()),
            activation: spec.activation,
        }
    }
}

impl Body for CnnSmall {
    fn forward_t(&self, x: &Tensor, _train: bool) -> Tensor {
        let act = |t: Tensor| self.activation.apply(&t);
        let h = act(self.conv1.forward(x));
        let h = act(self.conv2.forward(&h)).max_pool2d_default(2);
        let h = act(self.conv3.forward(&h)).max_pool2d_default(2);
        let h = act(self.fc1.forward(&h.flatten(1, -1)));
        self.fc2.forward(&h)
    }
}
