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
    /// sample n is flipped-input pixel (i + dy, j + dx), zero outside. Two
    /// gathers on the zero-padded batch (rows, then columns, with the flip
    /// folded into the column indices), so the cost does not grow with
    /// per-sample calls; equal bit for bit to cropping sample by sample
    /// (tested).
    pub fn apply(&self, x: &Tensor) -> Tensor {
        let size = x.size();
        let (n, c, h, w) = (size[0], size[1], size[2], size[3]);
        let padded = x.constant_pad_nd([CROP_PAD, CROP_PAD, CROP_PAD, CROP_PAD]);
        let width = w + 2 * CROP_PAD;
        let mut rows = Vec::with_capacity((n * h) as usize);
        let mut cols = Vec::with_capacity((n * w) as usize);
        for k in 0..n as usize {
            rows.extend((0..h).map(|i| CROP_PAD + self.dy[k] + i));
            cols.extend((0..w).map(|j| {
                let col = CROP_PAD + self.dx[k] + j;
                if self.flip[k] {
                    width - 1 - col
                } else {
                    col
                }
            }));
        }
        let device = x.device();
        let rows = Tensor::from_slice(&rows)
            .to_device(device)
            .view([n, 1, h, 1])
            .expand([n, c, h, width], false);
        let cols = Tensor::from_slice(&cols)
            .to_device(device)
            .view([n, 1, 1, w])
            .expand([n, c, h, w], false);
        padded.gather(2, &rows, false).gather(3, &cols, false)
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

    /// The transform sample by sample, as `apply` computed it before the
    /// gathers: pad, flip, narrow.
    fn per_sample(t: &CropFlip, x: &Tensor) -> Tensor {
        let size = x.size();
        let (h, w) = (size[2], size[3]);
        let padded = x.constant_pad_nd([CROP_PAD, CROP_PAD, CROP_PAD, CROP_PAD]);
        let samples: Vec<Tensor> = (0..size[0] as usize)
            .map(|n| {
                let img = padded.get(n as i64);
                let img = if t.flip[n] { img.flip([2]) } else { img };
                img.narrow(1, CROP_PAD + t.dy[n], h)
                    .narrow(2, CROP_PAD + t.dx[n], w)
            })
            .collect();
        Tensor::stack(&samples, 0)
    }

    #[test]
    fn the_gathers_equal_the_per_sample_crops_bit_for_bit() {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        tch::manual_seed(7);
        for (n, c, h, w) in [(64, 3, 32, 32), (5, 1, 8, 8), (3, 2, 5, 9)] {
            let x = Tensor::rand([n, c, h, w], (Kind::Float, tch::Device::Cpu));
            let t = CropFlip::draw(n as usize, &mut rng);
            let (fast, slow) = (t.apply(&x), per_sample(&t, &x));
            assert_eq!(fast.size(), slow.size());
            assert!(fast.equal(&slow), "{n}×{c}×{h}×{w}");
        }
    }
}
