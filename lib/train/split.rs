//! The training split (and `--extra-data`'s set) on the training device,
//! and the batches the epoch loop and the step timing take from it.
use tch::{Device, Tensor};

/// The training split (and the extra set) on the device.
pub struct TrainSplit {
    pub x: Tensor,
    pub y: Tensor,
    pub extra: Option<(Tensor, Tensor)>,
}

impl TrainSplit {
    /// Rows `idx` of the training split followed by rows `extra_idx` of
    /// the extra set.
    pub fn batch(&self, idx: &[i64], extra_idx: &[i64], device: Device) -> (Tensor, Tensor) {
        let pick = |x: &Tensor, y: &Tensor, i: &[i64]| {
            let t = Tensor::from_slice(i).to_device(device);
            (x.index_select(0, &t), y.index_select(0, &t))
        };
        let (x, y) = pick(&self.x, &self.y, idx);
        match &self.extra {
            Some((ex, ey)) if !extra_idx.is_empty() => {
                let (x2, y2) = pick(ex, ey, extra_idx);
                (Tensor::cat(&[x, x2], 0), Tensor::cat(&[y, y2], 0))
            }
            _ => (x, y),
        }
    }
}
