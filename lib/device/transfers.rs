//! Host↔device traffic of the training loop, counted.
//!
//! A copy from pageable host memory to a GPU, and every read of a device
//! value on the host (`item()`, `double_value`), waits for the GPU's queue
//! to drain: one per training step keeps the GPU idle between steps. The
//! epoch loop therefore uploads what it needs once per epoch (the shuffled
//! order, the crop-and-flip draws) and reads its sums once at the epoch's
//! end, and the step itself (every method, the penalty, the optimiser, AWP)
//! touches only device tensors. The loop goes through [`upload`] and
//! [`read_f64`], which count; a test trains epochs of different lengths and
//! asserts the count does not grow with the number of steps
//! (tests/host_transfers.rs), and tests/house.rs keeps raw uploads and
//! reads out of the step's files.
//!
//! Two per-step copies remain, both host→device and neither a read:
//! `--extra-data` streams each batch's extra images from the host (one
//! copy, from pinned memory and non-blocking on a GPU;
//! lib/data/extra/source.rs), and `--stein-fraction` uploads the step's
//! subset, drawn on the host from its own seeded stream
//! (lib/stein/penalty/subsample.rs; counted, and the test that shows the
//! counter sees a per-step upload).
use std::sync::atomic::{AtomicU64, Ordering};
use tch::{Device, Kind, Tensor};

static UPLOADS: AtomicU64 = AtomicU64::new(0);
static READS: AtomicU64 = AtomicU64::new(0);

/// Host→device copies and device→host reads made through this module since
/// the process started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfers {
    pub uploads: u64,
    pub reads: u64,
}

/// The counts so far (process-wide; tests that compare them run alone in
/// their own binary).
pub fn counted() -> Transfers {
    Transfers {
        uploads: UPLOADS.load(Ordering::Relaxed),
        reads: READS.load(Ordering::Relaxed),
    }
}

/// `values` as an int64 tensor `[len]` on `device`: one copy, counted.
pub fn upload(values: &[i64], device: Device) -> Tensor {
    UPLOADS.fetch_add(1, Ordering::Relaxed);
    Tensor::from_slice(values).to_device(device)
}

/// The value of a one-element tensor on the host (waits for the device),
/// counted.
pub fn read_f64(t: &Tensor) -> f64 {
    READS.fetch_add(1, Ordering::Relaxed);
    t.to_kind(Kind::Double).double_value(&[])
}
