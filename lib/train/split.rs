//! The training split on the training device (and `--extra-data`'s set,
//! read from the host), and the batches the epoch loop and the step timing
//! take from them.
use crate::data::extra::ExtraSource;
use crate::error::Result;
use tch::{Device, Tensor};

/// The training split on the device, and the extra set (streamed from the
/// host by [`ExtraSource::batch`]).
pub struct TrainSplit<'a> {
    pub x: Tensor,
    pub y: Tensor,
    pub extra: Option<&'a ExtraSource>,
}

impl TrainSplit<'_> {
    /// Rows `idx` (int64 `[n]` on the device) of the training split
    /// followed by rows `extra_idx` of the extra set, on `device`.
    ///
    /// Errors: [`ExtraSource::batch`]'s (the extra set's file can no longer
    /// be read).
    pub fn batch(
        &self,
        idx: &Tensor,
        extra_idx: &[i64],
        device: Device,
    ) -> Result<(Tensor, Tensor)> {
        let (x, y) = (self.x.index_select(0, idx), self.y.index_select(0, idx));
        match self.extra {
            Some(extra) if !extra_idx.is_empty() => {
                let (x2, y2) = extra.batch(extra_idx, device)?;
                Ok((Tensor::cat(&[x, x2], 0), Tensor::cat(&[y, y2], 0)))
            }
            _ => Ok((x, y)),
        }
    }
}
