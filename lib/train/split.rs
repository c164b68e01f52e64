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
    /// Rows `idx` (int64 `[n]` on the device) of the training split
    /// followed by rows `extra_idx` of the extra set.
    pub fn batch(&self, idx: &Tensor, extra_idx: &[i64], device: Device) -> (Tensor, Tensor) {
        let (x, y) = (self.x.index_select(0, idx), self.y.index_select(0, idx));
        match &self.extra {
            Some((ex, ey)) if !extra_idx.is_empty() => {
                let t = Tensor::from_slice(extra_idx).to_device(device);
                let (x2, y2) = (ex.index_select(0, &t), ey.index_select(0, &t));
                (Tensor::cat(&[x, x2], 0), Tensor::cat(&[y, y2], 0))
            }
            _ => (x, y),
        }
    }
}
