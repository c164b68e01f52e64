//! CIFAR augmentation (docs/METHOD.md, "Coordinates and data"): random crop with 4 pixels of zero padding
//! and a horizontal flip with probability ½. The drawn parameters are
//! returned so that a precomputed score field can receive the very same
//! transform as its image.
use rand::Rng;
use tch::Tensor;

/// Padding of the random crop.
pub const CROP_PAD: i64 = 4;

/// Which augmentation a run uses.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Augment {
    /// `crop-flip` for CIFAR, none for the rest.
    Auto,
    None,
    CropFlip,
}

/// Per-sample transform: flip first, then shift by (dy, dx) ∈ [−4, 4]².
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CropFlip {
    pub flip: Vec<bool>,
    pub dy: Vec<i64>,
    pub dx: Vec<i64>,
}

impl CropFlip {
    /// Draws the parameters of `n` samples.
    pub fn draw<R: Rng>(n: usize, rng: &mut R) -> CropFlip {
        let mut flip = Vec::with_capacity(n);
        let mut dy = Vec::with_capacity(n);
        let mut dx = Vec::with_capacity(n);
        for _ in 0..n {
            flip.push(rng.gen_bool(0.5));
            dy.push(rng.gen_range(-CROP_PAD..=CROP_PAD));
            dx.push(rng.gen_range(-CROP_PAD..=CROP_PAD));
        }
        CropFlip { flip, dy, dx }
    }

    /// Applies the transform to `x` `[N, C, H, W]`: output pixel (i, j) of
    /// sample n is flipped-input pixel (i + dy, j + dx), zero outside.
    pub fn apply(&self, x: &Tensor) -> Tensor {
        let size = x.size();
        let (h, w) = (size[2], size[3]);
        let padded = x.constant_pad_nd([CROP_PAD, CROP_PAD, CROP_PAD, CROP_PAD]);
        let samples: Vec<Tensor> = (0..size[0] as usize)
            .map(|n| {
                let img = padded.get(n as i64);
                let img = if self.flip[n] { img.flip([2]) } else { img };
                img.narrow(1, CROP_PAD + self.dy[n], h)
                    .narrow(2, CROP_PAD + self.dx[n], w)
            })
            .collect();
        Tensor::stack(&samples, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn shift_and_flip_move_pixels_as_documented() {
        let x =
            Tensor::arange(2 * 3 * 5 * 6, (Kind::Float, tch::Device::Cpu)).view([2, 3, 5, 6]) + 1.0;
        let t = CropFlip {
            flip: vec![false, true],
            dy: vec![1, 0],
            dx: vec![-2, 0],
        };
        let y = t.apply(&x);
        assert_eq!(y.size(), x.size());
        // Sample 0: out(i, j) = in(i + 1, j − 2), zero where that leaves the image.
        let v = |t: &Tensor, n: i64, c: i64, i: i64, j: i64| t.double_value(&[n, c, i, j]);
        assert_eq!(v(&y, 0, 1, 2, 3), v(&x, 0, 1, 3, 1));
        assert_eq!(v(&y, 0, 1, 2, 1), 0.0);
        assert_eq!(v(&y, 0, 1, 4, 3), 0.0);
        // Sample 1: a pure horizontal flip.
        assert!(y.get(1).equal(&x.get(1).flip([2])));
    }
}
