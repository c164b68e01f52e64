//! Where and how a binary computes: the runtime flags every compute binary
//! shares (`--device`, `--data-dir`, `--threads`, `--tf32`,
//! `--deterministic`), declared once and flattened into each binary's
//! arguments, and resolved once into a [`Runtime`], which also records what
//! the run computed on ([`RuntimeRecord`]: the device as it is, libtorch's
//! numerical mode as read back) for its outputs.
//!
//! These flags choose the machine and its rounding, never the experiment:
//! they are not part of a run's identity (resume and fingerprints ignore
//! them), and the same seed gives the same numbers on CPU whatever
//! `--threads`, `--tf32` or `--deterministic` say (TF32 and cuDNN exist only
//! on CUDA).
use crate::device::machine::{describe, DeviceInfo};
use crate::device::numerics::{self, NumericMode, NumericState};
use crate::device::parse_device;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use tch::Device;

pub use crate::device::numerics::check_fd_precision;

/// Where data sets are read from unless `--data-dir` (or `TASER_DATA_DIR`)
/// says otherwise: the git-ignored cache that `make setup` fills.
pub fn default_data_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data/cache"))
}

/// The runtime flags, as clap parses them.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RuntimeArgs {
    /// auto, cpu or cuda:N (auto: cuda:0 when libtorch sees a GPU, else the CPU).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Folder with the data files (default: the repository's data/cache).
    #[arg(long, env = "TASER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// libtorch CPU threads (0: libtorch's default).
    #[arg(long, default_value_t = 0)]
    pub threads: i32,
    /// Allow TF32 (10-bit mantissa) for float32 convolutions and matrix
    /// products on CUDA: faster on Ampere and later, ≈ 5e-4 relative
    /// rounding. Off by default; refused with --stein-mode fd.
    #[arg(long)]
    pub tf32: bool,
    /// Deterministic GPU computation: cuDNN deterministic with its
    /// benchmark off, libtorch's deterministic algorithms (an op without
    /// one fails), CUBLAS_WORKSPACE_CONFIG=:4096:8. Two runs of one seed on
    /// one GPU model then give identical weights.
    #[arg(long)]
    pub deterministic: bool,
}

impl Default for RuntimeArgs {
    fn default() -> Self {
        RuntimeArgs {
            device: "auto".into(),
            data_dir: None,
            threads: 0,
            tf32: false,
            deterministic: false,
        }
    }
}

/// What a run computed on, for its outputs (model.json's `runtime`,
/// summary.csv's and results.csv's columns): the device and libtorch's
/// numerical mode as read back after start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RuntimeRecord {
    pub device: DeviceInfo,
    pub numerics: Option<NumericState>,
}

impl RuntimeRecord {
    /// The record's flat columns for CSV files, in this order: `tf32`,
    /// `deterministic` (`1`/`0`), `device_name`, `compute_capability`,
    /// `driver`, `cuda`, `cudnn`, `torch`.
    pub fn columns(&self) -> Vec<(&'static str, String)> {
        let flag = |f: fn(&NumericState) -> bool| {
            self.numerics
                .as_ref()
                .map_or(String::new(), |n| if f(n) { "1" } else { "0" }.into())
        };
        let d = &self.device;
        vec![
            ("tf32", flag(|n| n.tf32)),
            ("deterministic", flag(|n| n.deterministic)),
            ("device_name", d.name.clone()),
            ("compute_capability", d.compute_capability.clone()),
            ("driver", d.driver.clone()),
            ("cuda", d.cuda.clone()),
            ("cudnn", d.cudnn.clone()),
            ("torch", d.torch.clone()),
        ]
    }
}

/// The runtime flags resolved: a checked device, a data folder, and the
/// record of both.
#[derive(Debug, Clone, PartialEq)]
pub struct Runtime {
    /// The device every tensor of the run lives on.
    pub device: Device,
    /// Folder the data sets are read from.
    pub data_dir: PathBuf,
    /// What the run computes on, read back after the flags were applied.
    pub record: RuntimeRecord,
}

impl RuntimeArgs {
    /// Checks the flags, applies `--threads`, `--tf32` and `--deterministic`
    /// to libtorch (process-wide, before any CUDA work) and reads the result
    /// back into the record.
    ///
    /// Errors: [`Error::InvalidArgument`] for a negative `--threads`, a
    /// `--device` libtorch cannot see, or `--deterministic` against a
    /// conflicting `CUBLAS_WORKSPACE_CONFIG`; [`Error::GpuNotVisible`] for
    /// `--device auto` when the job was given a GPU libtorch cannot see.
    pub fn resolve(&self) -> Result<Runtime> {
        if self.threads < 0 {
            return Err(Error::invalid(
                "--threads",
                self.threads,
                "must be ≥ 0 (0: libtorch's default)",
            ));
        }
        if self.threads > 0 {
            tch::set_num_threads(self.threads);
        }
        retain_freed_memory();
        numerics::apply(NumericMode {
            tf32: self.tf32,
            deterministic: self.deterministic,
        })?;
        let device = parse_device(&self.device)?;
        Ok(Runtime {
            device,
            data_dir: self.data_dir.clone().unwrap_or_else(default_data_dir),
            record: RuntimeRecord {
                device: describe(device),
                numerics: Some(numerics::read_back()),
            },
        })
    }
}

/// Largest block glibc's malloc serves from its heap instead of a fresh
/// `mmap` (its ceiling for `M_MMAP_THRESHOLD` on 64-bit).
const HEAP_BLOCK_MAX: i32 = 32 << 20;
/// Free memory at the heap's top that glibc keeps instead of returning it
/// (its largest value, 2 GiB).
const KEEP_FREE_TOP: i32 = i32::MAX;

/// Makes glibc's malloc keep the CPU memory libtorch frees for the next
/// step instead of returning it to the OS: blocks up to 32 MiB come from
/// the heap (`M_MMAP_THRESHOLD`) and up to 2 GiB of its free top stay
/// (`M_TRIM_THRESHOLD`). With glibc's defaults a step's activations were
/// mapped afresh every step: resnet18 at batch 32 with the first-order
/// autograd TASER penalty took 92 000 page faults per step (PyTorch's
/// script 15 000) and 6.1 s; with these settings ~0 and 5.1 s
/// (docs/SPEED.md). The process's peak memory is unchanged; the process
/// stays at its peak. Once per process; a
/// user's own `MALLOC_TRIM_THRESHOLD_`, `MALLOC_MMAP_THRESHOLD_` or
/// `GLIBC_TUNABLES` wins (nothing is set then). Returns whether it set
/// both.
pub fn retain_freed_memory() -> bool {
    static SET: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SET.get_or_init(|| {
        let user = [
            "MALLOC_TRIM_THRESHOLD_",
            "MALLOC_MMAP_THRESHOLD_",
            "GLIBC_TUNABLES",
        ]
        .iter()
        .any(|v| std::env::var_os(v).is_some());
        // SAFETY: mallopt only changes the allocator's thresholds; it is
        // called once, before the run allocates its tensors.
        !user
            && unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, HEAP_BLOCK_MAX) == 1
                    && libc::mallopt(libc::M_TRIM_THRESHOLD, KEEP_FREE_TOP) == 1
            }
    })
}

/// A seed of stream `k` mixed from `seed`: the SplitMix64 finaliser of
/// seed ⊕ k·φ (φ = 0x9E37…, the golden-ratio increment), so nearby seeds
/// and streams give unrelated values (epochs' and ranks' streams).
pub fn mix_seed(seed: u64, k: u64) -> u64 {
    let mut z = seed ^ k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_threads_and_unknown_devices_are_refused_naming_the_flag() {
        let bad = RuntimeArgs {
            threads: -1,
            ..RuntimeArgs::default()
        };
        assert!(bad.resolve().unwrap_err().to_string().contains("--threads"));
        let bad = RuntimeArgs {
            device: "tpu".into(),
            ..RuntimeArgs::default()
        };
        assert!(bad.resolve().unwrap_err().to_string().contains("--device"));
    }

    #[test]
    fn cpu_resolves_to_the_cpu_and_the_default_data_folder() {
        let rt = RuntimeArgs {
            device: "cpu".into(),
            ..RuntimeArgs::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(rt.device, Device::Cpu);
        assert_eq!(rt.data_dir, default_data_dir());
    }
}
