//! Device selection (`auto`, `cpu` or `cuda:N`), precision and memory
//! format; [`numerics`] holds libtorch's numerical mode (TF32,
//! determinism), [`machine`] what a device is (GPU name, driver, versions),
//! [`expected`] whether the job was given a GPU at all, [`transfers`] the
//! training loop's counted host↔device copies, [`memory`] free and peak
//! bytes.
pub mod expected;
pub mod machine;
pub mod memory;
pub mod numerics;
pub mod transfers;

use crate::error::{Error, Result};
use tch::{Device, Tensor};

/// Parses a `--device` value. `auto` takes `cuda:0` when libtorch sees a GPU
/// and the CPU otherwise — unless the job was given a GPU
/// ([`expected::gpu_expected`]): then a GPU libtorch cannot see is an
/// error, not a reason to compute on the CPU. `cuda:N` is checked against
/// the visible devices (multi-GPU nodes pick `cuda:<local rank>`
/// themselves, since `Device::cuda_if_available()` only ever gives `cuda:0`).
///
/// Errors: [`Error::GpuNotVisible`] for `auto` when a GPU was expected and
/// libtorch sees none; [`Error::InvalidArgument`] for another spelling or
/// an index libtorch does not see.
pub fn parse_device(spec: &str) -> Result<Device> {
    match spec {
        "auto" if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
        "auto" => match expected::gpu_expected() {
            Some(signal) => Err(gpu_not_visible(signal)),
            None => Ok(Device::Cpu),
        },
        "cpu" => Ok(Device::Cpu),
        s if s.starts_with("cuda") => {
            let index = match s.strip_prefix("cuda:") {
                Some(n) => n.parse::<usize>().map_err(|_| {
                    Error::invalid("--device", s, "expected cuda:N with N an integer")
                })?,
                None if s == "cuda" => 0,
                None => {
                    return Err(Error::invalid(
                        "--device",
                        s,
                        "expected auto, cpu or cuda:N",
                    ))
                }
            };
            let count = tch::Cuda::device_count() as usize;
            if index >= count {
                return Err(Error::invalid(
                    "--device",
                    s,
                    format!(
                        "libtorch sees {count} CUDA device(s); use --device cpu, or run on a GPU node \
                         with the CUDA build of torch"
                    ),
                ));
            }
            Ok(Device::Cuda(index))
        }
        s => Err(Error::invalid(
            "--device",
            s,
            "expected auto, cpu or cuda:N",
        )),
    }
}

/// The error of a GPU that `signal` says the job has but libtorch does not
/// see, with the driver the loaded torch build needs.
pub fn gpu_not_visible(signal: String) -> Error {
    let cuda = machine::cuda_runtime();
    let floor = cuda.as_deref().and_then(expected::driver_floor);
    let need = match (&cuda, floor) {
        (Some(c), Some(f)) => format!("this torch build (CUDA {c}) needs an NVIDIA driver ≥ {f}"),
        (Some(c), None) => format!("this torch build uses CUDA {c}"),
        (None, _) => "this libtorch is a CPU-only build (no CUDA runtime loaded)".into(),
    };
    let found = match machine::driver_version() {
        Some(d) => format!("the driver loaded here is {d}"),
        None => "no NVIDIA driver is loaded here (/proc/driver/nvidia/version is missing)".into(),
    };
    Error::GpuNotVisible {
        signal,
        detail: format!("{need}; {found}"),
    }
}

/// Human-readable name of a device for logs and metadata.
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Floating-point precision of a computation: `f32` throughout, or `bf16`
/// autocast (libtorch's automatic mixed precision with bfloat16 as the
/// lower precision: convolutions and matrix products run in bf16, the ops
/// autocast keeps in f32 — softmax, log-softmax, cross-entropy, norms —
/// stay in f32; weights and their gradients stay f32).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
}

/// Memory layout of 4-D image tensors (inputs, activations, convolution
/// weights): `contiguous` (NCHW, libtorch's default) or `channels-last`
/// (NHWC strides under the same NCHW shape, as PyTorch's
/// `memory_format=torch.channels_last`; faster convolutions on tensor-core
/// GPUs, the same numbers up to the kernels' rounding).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum MemoryFormat {
    #[default]
    Contiguous,
    ChannelsLast,
}

/// Whether a 4-D tensor `[N, C, H, W]` has channels-last strides.
pub fn is_channels_last(t: &Tensor) -> bool {
    t.dim() == 4 && t.permute([0, 2, 3, 1]).is_contiguous()
}

/// `t` in `format`: a 4-D tensor `[N, C, H, W]` is copied to channels-last
/// strides (NHWC in memory, same shape and values; what PyTorch's
/// `t.contiguous(memory_format=torch.channels_last)` gives) or back to
/// contiguous NCHW; a tensor already in `format`, or of another rank, is
/// returned as it is (a shallow clone). Differentiable.
pub fn to_memory_format(t: &Tensor, format: MemoryFormat) -> Tensor {
    match format {
        _ if t.dim() != 4 => t.shallow_clone(),
        MemoryFormat::ChannelsLast if !is_channels_last(t) => {
            t.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
        }
        MemoryFormat::Contiguous if !t.is_contiguous() => t.contiguous(),
        _ => t.shallow_clone(),
    }
}

/// libtorch's autocast state (ATen's `at::autocast`), which tch 0.24 wraps
/// only for CUDA and only with its default dtype (f16). These are the C++
/// functions of `ATen/autocast_mode.h` in `libtorch_cpu.so`, called through
/// their Itanium-ABI names: their arguments are `c10::DeviceType` and
/// `c10::ScalarType` (both `enum class : int8_t`) and `bool`.
mod autocast_ffi {
    extern "C" {
        #[link_name = "_ZN2at8autocast19is_autocast_enabledEN3c1010DeviceTypeE"]
        pub fn is_autocast_enabled(device_type: i8) -> bool;
        #[link_name = "_ZN2at8autocast20set_autocast_enabledEN3c1010DeviceTypeEb"]
        pub fn set_autocast_enabled(device_type: i8, enabled: bool);
        #[link_name = "_ZN2at8autocast18get_autocast_dtypeEN3c1010DeviceTypeE"]
        pub fn get_autocast_dtype(device_type: i8) -> i8;
        #[link_name = "_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE"]
        pub fn set_autocast_dtype(device_type: i8, dtype: i8);
        #[link_name = "_ZN2at8autocast17increment_nestingEv"]
        pub fn increment_nesting() -> i32;
        #[link_name = "_ZN2at8autocast17decrement_nestingEv"]
        pub fn decrement_nesting() -> i32;
        #[link_name = "_ZN2at8autocast11clear_cacheEv"]
        pub fn clear_cache();
    }
    /// `c10::DeviceType::CPU`, `c10::DeviceType::CUDA`.
    pub const CPU: i8 = 0;
    pub const CUDA: i8 = 1;
    /// `c10::ScalarType::BFloat16`.
    pub const BFLOAT16: i8 = 15;
}

/// Runs `f` with `precision` on `device`: for [`Precision::Bf16`], inside
/// libtorch's autocast for the device's type (CPU or CUDA) with bfloat16 as
/// its lower precision (PyTorch's `torch.autocast(device_type,
/// dtype=torch.bfloat16)`); for [`Precision::F32`], as it is. The previous
/// autocast state is restored afterwards, and the cast-weight cache is
/// cleared when the outermost region ends, so a region must not span a
/// weight update. Backward passes run outside the region, as in PyTorch.
pub fn with_precision<T>(precision: Precision, device: Device, f: impl FnOnce() -> T) -> T {
    use autocast_ffi as ffi;
    let kind = match (precision, device) {
        (Precision::F32, _) => return f(),
        (Precision::Bf16, Device::Cuda(_)) => ffi::CUDA,
        (Precision::Bf16, _) => ffi::CPU,
    };
    // SAFETY: plain calls into libtorch's thread-local autocast state with
    // valid enum values; none of them throws for CPU or CUDA.
    let (was_enabled, was_dtype) = unsafe {
        let state = (
            ffi::is_autocast_enabled(kind),
            ffi::get_autocast_dtype(kind),
        );
        ffi::set_autocast_dtype(kind, ffi::BFLOAT16);
        ffi::set_autocast_enabled(kind, true);
        ffi::increment_nesting();
        state
    };
    struct Restore(i8, bool, i8);
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: as above.
            unsafe {
                if ffi::decrement_nesting() == 0 {
                    ffi::clear_cache();
                }
                ffi::set_autocast_enabled(self.0, self.1);
                ffi::set_autocast_dtype(self.0, self.2);
            }
        }
    }
    let _restore = Restore(kind, was_enabled, was_dtype);
    f()
}

/// The device of node-local rank `local_rank` (a sweep rank's jobs, a
/// data-parallel `train` rank): with `auto`, the CUDA device of the
/// node-local rank (modulo the visible devices) when libtorch sees any,
/// otherwise the CPU — unless the job was given a GPU
/// ([`crate::device::expected::gpu_expected`]): then `auto` itself, so each
/// job's binary refuses the missing GPU by its own rule (exit 2).
pub fn rank_device(spec: &str, local_rank: usize) -> String {
    if spec != "auto" {
        return spec.to_string();
    }
    let n = tch::Cuda::device_count().max(0) as usize;
    if n == 0 && crate::device::expected::gpu_expected().is_some() {
        "auto".into()
    } else if n == 0 {
        "cpu".into()
    } else {
        format!("cuda:{}", local_rank % n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn bf16_autocast_runs_a_convolution_in_bf16_and_restores_the_state() {
        let x = Tensor::rand([2, 3, 8, 8], (Kind::Float, Device::Cpu));
        let w = Tensor::rand([4, 3, 3, 3], (Kind::Float, Device::Cpu));
        let conv = |x: &Tensor| x.conv2d(&w, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1);
        // SAFETY: reads of the autocast state only.
        let before = unsafe {
            (
                autocast_ffi::is_autocast_enabled(autocast_ffi::CPU),
                autocast_ffi::get_autocast_dtype(autocast_ffi::CPU),
                // libtorch's default for CUDA is f16 (c10::ScalarType::Half = 5):
                // reading it back checks the enum mapping.
                autocast_ffi::get_autocast_dtype(autocast_ffi::CUDA),
            )
        };
        assert_eq!(before.2, 5);
        let inside = with_precision(Precision::Bf16, Device::Cpu, || conv(&x));
        assert_eq!(inside.kind(), Kind::BFloat16);
        let after = unsafe {
            (
                autocast_ffi::is_autocast_enabled(autocast_ffi::CPU),
                autocast_ffi::get_autocast_dtype(autocast_ffi::CPU),
                autocast_ffi::get_autocast_dtype(autocast_ffi::CUDA),
            )
        };
        assert_eq!(after, before);
        assert_eq!(conv(&x).kind(), Kind::Float);
        let f32_inside = with_precision(Precision::F32, Device::Cpu, || conv(&x));
        assert_eq!(f32_inside.kind(), Kind::Float);
        // bf16 keeps ~3 significant digits: the outputs agree to that.
        let diff = (inside.to_kind(Kind::Float) - conv(&x))
            .abs()
            .max()
            .double_value(&[]);
        let scale = conv(&x).abs().max().double_value(&[]);
        assert!(diff > 0.0 && diff < 2e-2 * scale, "{diff} vs {scale}");
    }

    #[test]
    fn channels_last_keeps_shape_and_values_and_changes_the_strides() {
        let x = Tensor::rand([2, 3, 4, 5], (Kind::Float, Device::Cpu));
        let cl = to_memory_format(&x, MemoryFormat::ChannelsLast);
        assert_eq!(cl.size(), x.size());
        assert_eq!(cl.stride(), vec![60, 1, 15, 3]);
        assert!(is_channels_last(&cl) && !is_channels_last(&x));
        assert!(cl.equal(&x));
        let back = to_memory_format(&cl, MemoryFormat::Contiguous);
        assert!(back.is_contiguous() && back.equal(&x));
        let v = Tensor::rand([7], (Kind::Float, Device::Cpu));
        assert_eq!(
            to_memory_format(&v, MemoryFormat::ChannelsLast).stride(),
            vec![1]
        );
    }
}
