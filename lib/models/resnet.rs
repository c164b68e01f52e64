//! ResNet-18 and PreAct ResNet-18 with the CIFAR stem (as in the
//! `kuangliu/pytorch-cifar` and robust-overfitting references), and the wide
//! ResNet of the TRADES reference code. Global average pooling replaces the
//! fixed 4×4/8×8 pooling, which is the same on 32×32 inputs.
use super::{batch_norm, conv, Activation, Body, ModelSpec};
use tch::{nn, nn::Module, nn::ModuleT, Tensor};

fn pool_flatten(x: &Tensor) -> Tensor {
    x.adaptive_avg_pool2d([1, 1]).flatten(1, -1)
}

#[derive(Debug)]
struct BasicBlock {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    conv2: nn::Conv2D,
    bn2: nn::BatchNorm,
    shortcut: Option<(nn::Conv2D, nn::BatchNorm)>,
    activation: Activation,
}

impl BasicBlock {
    fn new(p: nn::Path, c_in: i64, c_out: i64, stride: i64, activation: Activation) -> BasicBlock {
        let shortcut = (stride != 1 || c_in != c_out).then(|| {
            (
                conv(&p / "shortcut" / 0, c_in, c_out, 1, stride, 0),
                batch_norm(&p / "shortcut" / 1, c_out),
            )
        });
        BasicBlock {
            conv1: conv(&p / "conv1", c_in, c_out, 3, stride, 1),
            bn1: batch_norm(&p / "bn1", c_out),
            conv2: conv(&p / "conv2", c_out, c_out, 3, 1, 1),
            bn2: batch_norm(&p / "bn2", c_out),
            shortcut,
            activation,
        }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let out = self
            .activation
            .apply(&self.bn1.forward_t(&self.conv1.forward(x), train));
        let out = self.bn2.forward_t(&self.conv2.forward(&out), train);
        let short = match &self.shortcut {
            Some((c, bn)) => bn.forward_t(&c.forward(x), train),
            None => x.shallow_clone(),
        };
        self.activation.apply(&(out + short))
    }
}

/// ResNet-18 for 32×32 inputs: 3×3 stem conv with stride 1 and no max-pool,
/// four stages of two basic blocks (64, 128, 256, 512 channels), global
/// average pooling and a linear layer. 11,173,962 parameters for 10 classes.
#[derive(Debug)]
pub struct ResNet18 {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    blocks: Vec<BasicBlock>,
    linear: nn::Linear,
    activation: Activation,
}

const STAGES: [(i64, i64); 4] = [(64, 1), (128, 2), (256, 2), (512, 2)];

impl ResNet18 {
    pub fn new(root: &nn::Path, spec: &ModelSpec) -> ResNet18 {
        let mut blocks = Vec::new();
        let mut c_in = 64;
        for (stage, (c_out, stride)) in STAGES.into_iter().enumerate() {
            for i in 0..2 {
                let p = root / format!("layer{}", stage + 1) / i;
                blocks.push(BasicBlock::new(
                    p,
                    c_in,
                    c_out,
                    if i == 0 { stride } else { 1 },
                    spec.activation,
                ));
                c_in = c_out;
            }
        }
        ResNet18 {
            conv1: conv(root / "conv1", spec.input_shape[0], 64, 3, 1, 1),
            bn1: batch_norm(root / "bn1", 64),
            blocks,
            linear: nn::linear(root / "linear", 512, spec.num_outputs, Default::default()),
            activation: spec.activation,
        }
    }
}

impl Body for ResNet18 {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut h = self
            .activation
            .apply(&self.bn1.forward_t(&self.conv1.forward(x), train));
        for b in &self.blocks {
            h = b.forward_t(&h, train);
        }
        self.linear.forward(&pool_flatten(&h))
    }
}

#[derive(Debug)]
struct PreActBlock {
    bn1: nn::BatchNorm,
    conv1: nn::Conv2D,
    bn2: nn::BatchNorm,
    conv2: nn::Conv2D,
    shortcut: Option<nn::Conv2D>,
    activation: Activation,
}

impl PreActBlock {
    fn new(p: nn::Path, c_in: i64, c_out: i64, stride: i64, activation: Activation) -> PreActBlock {
        PreActBlock {
            bn1: batch_norm(&p / "bn1", c_in),
            conv1: conv(&p / "conv1", c_in, c_out, 3, stride, 1),
            bn2: batch_norm(&p / "bn2", c_out),
            conv2: conv(&p / "conv2", c_out, c_out, 3, 1, 1),
            shortcut: (stride != 1 || c_in != c_out)
                .then(|| conv(&p / "shortcut" / 0, c_in, c_out, 1, stride, 0)),
            activation,
        }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let out = self.activation.apply(&self.bn1.forward_t(x, train));
        let short = match &self.shortcut {
            Some(c) => c.forward(&out),
            None => x.shallow_clone(),
        };
        let out = self.conv1.forward(&out);
        let out = self
            .conv2
            .forward(&self.activation.apply(&self.bn2.forward_t(&out, train)));
        out + short
    }
}

/// PreAct ResNet-18 (He et al. 2016, identity mappings) with the CIFAR stem
/// and a final BatchNorm + activation before pooling, as in the
/// robust-overfitting reference.
#[derive(Debug)]
pub struct PreActResNet18 {
    conv1: nn::Conv2D,
    blocks: Vec<PreActBlock>,
    bn: nn::BatchNorm,
    linear: nn::Linear,
    activation: Activation,
}

impl PreActResNet18 {
    pub fn new(root: &nn::Path, spec: &ModelSpec) -> PreActResNet18 {
        let mut blocks = Vec::new();
        let mut c_in = 64;
        for (stage, (c_out, stride)) in STAGES.into_iter().enumerate() {
            for i in 0..2 {
                let p = root / format!("layer{}", stage + 1) / i;
                blocks.push(PreActBlock::new(
                    p,
                    c_in,
                    c_out,
                    if i == 0 { stride } else { 1 },
                    spec.activation,
                ));
                c_in = c_out;
            }
        }
        PreActResNet18 {
            conv1: conv(root / "conv1", spec.input_shape[0], 64, 3, 1, 1),
            blocks,
            bn: batch_norm(root / "bn", 512),
            linear: nn::linear(root / "linear", 512, spec.num_outputs, Default::default()),
            activation: spec.activation,
        }
    }
}

impl Body for PreActResNet18 {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut h = self.conv1.forward(x);
        for b in &self.blocks {
            h = b.forward_t(&h, train);
        }
        let h = self.activation.apply(&self.bn.forward_t(&h, train));
        self.linear.forward(&pool_flatten(&h))
    }
}

#[derive(Debug)]
struct WideBlock {
    bn1: nn::BatchNorm,
    conv1: nn::Conv2D,
    bn2: nn::BatchNorm,
    conv2: nn::Conv2D,
    /// 1×1 projection when the block changes width (`convShortcut`).
    conv_shortcut: Option<nn::Conv2D>,
    activation: Activation,
}

impl WideBlock {
    fn new(p: nn::Path, c_in: i64, c_out: i64, stride: i64, activation: Activation) -> WideBlock {
        WideBlock {
            bn1: batch_norm(&p / "bn1", c_in),
            conv1: conv(&p / "conv1", c_in, c_out, 3, stride, 1),
            bn2: batch_norm(&p / "bn2", c_out),
            conv2: conv(&p / "conv2", c_out, c_out, 3, 1, 1),
            conv_shortcut: (c_in != c_out)
                .then(|| conv(&p / "convShortcut", c_in, c_out, 1, stride, 0)),
            activation,
        }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let pre = self.activation.apply(&self.bn1.forward_t(x, train));
        let out = self.conv1.forward(&pre);
        let out = self
            .conv2
            .forward(&self.activation.apply(&self.bn2.forward_t(&out, train)));
        match &self.conv_shortcut {
            // The reference pre-activates x before the projection when the
            // width changes, and adds x itself otherwise.
            Some(c) => c.forward(&pre) + out,
            None => x + out,
        }
    }
}

/// Wide ResNet WRN-D-K (Zagoruyko & Komodakis), TRADES reference layout:
/// 3×3 stem to 16 channels, three groups of n = (D−4)/6 pre-activation
/// blocks of widths 16K, 32K, 64K (strides 1, 2, 2), final BatchNorm +
/// activation, global average pooling and a linear layer with bias.
/// WRN-28-10 has 36,479,194 parameters for 10 classes.
#[derive(Debug)]
pub struct WideResNet {
    conv1: nn::Conv2D,
    blocks: Vec<WideBlock>,
    bn1: nn::BatchNorm,
    fc: nn::Linear,
    activation: Activation,
}

impl WideResNet {
    pub fn new(root: &nn::Path, spec: &ModelSpec, depth: i64, width: i64) -> WideResNet {
        let n = (depth - 4) / 6;
        let widths = [16, 16 * width, 32 * width, 64 * width];
        let mut blocks = Vec::new();
        for g in 0..3 {
            for i in 0..n {
                let c_in = if i == 0 { widths[g] } else { widths[g + 1] };
                let stride = if i == 0 && g > 0 { 2 } else { 1 };
                let p = root / format!("block{}", g + 1) / "layer" / i;
                blocks.push(WideBlock::new(
                    p,
                    c_in,
                    widths[g + 1],
                    stride,
                    spec.activation,
                ));
            }
        }
        WideResNet {
            conv1: conv(root / "conv1", spec.input_shape[0], 16, 3, 1, 1),
            blocks,
            bn1: batch_norm(root / "bn1", widths[3]),
            fc: nn::linear(root / "fc", widths[3], spec.num_outputs, Default::default()),
            activation: spec.activation,
        }
    }
}

impl Body for WideResNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut h = self.conv1.forward(x);
        for b in &self.blocks {
            h = b.forward_t(&h, train);
        }
        let h = self.activation.apply(&self.bn1.forward_t(&h, train));
        self.fc.forward(&pool_flatten(&h))
    }
}
