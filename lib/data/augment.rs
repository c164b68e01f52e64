//! CIFAR augmentation (docs/METHOD.md, "Coordinates and data"): random crop with 4 pixels of zero padding
//! and a horizontal flip with probability ½. The drawn parameters are
//! returned so that a precomputed score field can receive the very same
//! transform as its image.
use crate::device::transfers;
use rand::Rng;
use tch::{Device, Kind, Tensor};

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
/// The parameters live on the training device (`[N]` each), so applying
/// them costs no host↔device copy: an epoch draws all its samples' at once
/// ([`CropFlip::draw`], one upload) and each batch takes its slice
/// ([`CropFlip::narrow`]).
#[derive(Debug)]
pub struct CropFlip {
    /// 1 to flip, 0 not (int64 `[N]`).
    pub flip: Tensor,
    /// Vertical shift in pixels (int64 `[N]`).
    pub dy: Tensor,
    /// Horizontal shift in pixels (int64 `[N]`).
    pub dx: Tensor,
}

impl CropFlip {
    /// Draws the parameters of `n` samples (per sample: flip with
    /// probability ½, then dy, then dx uniform in [−4, 4]) and puts them on
    /// `device` in one counted upload.
    pub fn draw<R: Rng>(n: usize, rng: &mut R, device: Device) -> CropFlip {
        let mut table = vec![0i64; 3 * n];
        for k in 0..n {
            table[k] = rng.gen_bool(0.5) as i64;
            table[n + k] = rng.gen_range(-CROP_PAD..=CROP_PAD);
            table[2 * n + k] = rng.gen_range(-CROP_PAD..=CROP_PAD);
        }
        let t = transfers::upload(&table, device).view([3, n as i64]);
        CropFlip {
            flip: t.get(0),
            dy: t.get(1),
            dx: t.get(2),
        }
    }

    /// Samples `start..start + len` of the draw (views, no copy).
    pub fn narrow(&self, start: i64, len: i64) -> CropFlip {
        CropFlip {
            flip: self.flip.narrow(0, start, len),
            dy: self.dy.narrow(0, start, len),
            dx: self.dx.narrow(0, start, len),
        }
    }

    /// Applies the transform to `x` `[N, C, H, W]`: output pixel (i, j) of
    /// sample n is flipped-input pixel (i + dy, j + dx), zero outside. Two
    /// gathers on the zero-padded batch (rows, then columns, with the flip
    /// folded into the column indices), their indices computed on the
    /// device; equal bit for bit to cropping sample by sample (tested).
    pub fn apply(&self, x: &Tensor) -> Tensor {
        let size = x.size();
        let (n, c, h, w) = (size[0], size[1], size[2], size[3]);
        let device = x.device();
        let padded = x.constant_pad_nd([CROP_PAD, CROP_PAD, CROP_PAD, CROP_PAD]);
        let width = w + 2 * CROP_PAD;
        let on = |t: &Tensor| t.to_device(device).view([n, 1]);
        let rows = on(&self.dy) + CROP_PAD + Tensor::arange(h, (Kind::Int64, device)).view([1, h]);
        let cols = on(&self.dx) + CROP_PAD + Tensor::arange(w, (Kind::Int64, device)).view([1, w]);
        let flip = on(&self.flip).to_kind(Kind::Bool);
        let cols = (cols.neg() + (width - 1)).where_self(&flip, &cols);
        let rows = rows.view([n, 1, h, 1]).expand([n, c, h, width], false);
        let cols = cols.view([n, 1, 1, w]).expand([n, c, h, w], false);
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
            flip: Tensor::from_slice(&[0i64, 1]),
            dy: Tensor::from_slice(&[1i64, 0]),
            dx: Tensor::from_slice(&[-2i64, 0]),
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
        let host = |v: &Tensor| Vec::<i64>::try_from(v).unwrap();
        let (flip, dy, dx) = (host(&t.flip), host(&t.dy), host(&t.dx));
        let samples: Vec<Tensor> = (0..size[0] as usize)
            .map(|n| {
                let img = padded.get(n as i64);
                let img = if flip[n] == 1 { img.flip([2]) } else { img };
                img.narrow(1, CROP_PAD + dy[n], h)
                    .narrow(2, CROP_PAD + dx[n], w)
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
            // Drawn for the epoch, applied to a batch's slice of it.
            let t = CropFlip::draw(n as usize + 7, &mut rng, tch::Device::Cpu).narrow(5, n);
            let (fast, slow) = (t.apply(&x), per_sample(&t, &x));
            assert_eq!(fast.size(), slow.size());
            assert!(fast.equal(&slow), "{n}×{c}×{h}×{w}");
        }
    }
}
