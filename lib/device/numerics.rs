//! The process's numerical mode: whether float32 convolutions and matrix
//! products on CUDA may run in TF32, and whether libtorch must pick
//! deterministic algorithms. Both are libtorch's own process-wide settings
//! (ATen's `at::Context`, what PyTorch's `torch.backends.cudnn.conv.fp32_precision`,
//! `torch.backends.cuda.matmul.fp32_precision`, `torch.backends.cudnn.deterministic`,
//! `torch.backends.cudnn.benchmark` and `torch.use_deterministic_algorithms`
//! set): [`apply`] sets them once at start-up and [`read_back`] reads them
//! back through the same functions, so what a run records is what libtorch
//! holds, not what was asked.
//!
//! TF32 keeps 10 mantissa bits (relative rounding ≈ 2⁻¹¹ ≈ 4.9e-4 per operand
//! instead of float32's 2⁻²⁴): harmless for training losses, fatal for
//! finite differences, whose step h = 1e-2 divides that rounding by h
//! (first order) or h² (second order). libtorch's own default lets cuDNN
//! convolutions use TF32 on Ampere and later; this suite's default is off.
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// The cuBLAS workspace setting that makes cuBLAS deterministic (NVIDIA's
/// documented value; PyTorch asks for it under deterministic algorithms).
pub const CUBLAS_WORKSPACE: &str = ":4096:8";
/// The environment variable cuBLAS reads it from when its first handle is made.
pub const CUBLAS_WORKSPACE_ENV: &str = "CUBLAS_WORKSPACE_CONFIG";

/// `at::Context`'s setters and getters (`ATen/Context.h`, in
/// `libtorch_cpu.so`), called through their Itanium-ABI names: a member
/// function takes the object as its first argument; `Float32Backend`,
/// `Float32Op` and `Float32Precision` are `enum class` of `int`.
mod ffi {
    use std::ffi::c_void;
    extern "C" {
        #[link_name = "_ZN2at13globalContextEv"]
        pub fn global_context() -> *mut c_void;
        #[link_name = "_ZN2at7Context19setFloat32PrecisionENS_14Float32BackendENS_9Float32OpENS_16Float32PrecisionE"]
        pub fn set_float32_precision(ctx: *mut c_void, backend: i32, op: i32, precision: i32);
        #[link_name = "_ZNK2at7Context16float32PrecisionENS_14Float32BackendENS_9Float32OpE"]
        pub fn float32_precision(ctx: *const c_void, backend: i32, op: i32) -> i32;
        #[link_name = "_ZN2at7Context21setDeterministicCuDNNEb"]
        pub fn set_deterministic_cudnn(ctx: *mut c_void, on: bool);
        #[link_name = "_ZNK2at7Context18deterministicCuDNNEv"]
        pub fn deterministic_cudnn(ctx: *const c_void) -> bool;
        #[link_name = "_ZN2at7Context17setBenchmarkCuDNNEb"]
        pub fn set_benchmark_cudnn(ctx: *mut c_void, on: bool);
        #[link_name = "_ZNK2at7Context14benchmarkCuDNNEv"]
        pub fn benchmark_cudnn(ctx: *const c_void) -> bool;
        #[link_name = "_ZN2at7Context26setDeterministicAlgorithmsEbb"]
        pub fn set_deterministic_algorithms(ctx: *mut c_void, on: bool, warn_only: bool);
        #[link_name = "_ZNK2at7Context23deterministicAlgorithmsEv"]
        pub fn deterministic_algorithms(ctx: *const c_void) -> bool;
    }
    /// `at::Float32Backend::CUDA`.
    pub const CUDA: i32 = 1;
    /// `at::Float32Op::{CONV, RNN, MATMUL}`.
    pub const CONV: i32 = 1;
    pub const RNN: i32 = 2;
    pub const MATMUL: i32 = 3;
    /// `at::Float32Precision::{NONE, IEEE, TF32, BF16}`.
    pub const PRECISIONS: [&str; 4] = ["none", "ieee", "tf32", "bf16"];
    pub const IEEE: i32 = 1;
    pub const TF32: i32 = 2;
}

/// The CUDA float32 operations whose precision the mode sets.
const CUDA_OPS: [i32; 3] = [ffi::CONV, ffi::RNN, ffi::MATMUL];

/// The numerical mode asked for by `--tf32` and `--deterministic`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NumericMode {
    /// Allow TF32 for float32 convolutions, RNNs and matrix products on CUDA.
    pub tf32: bool,
    /// cuDNN deterministic, cuDNN benchmark off, deterministic algorithms
    /// (an op without a deterministic implementation fails instead of
    /// running), and cuBLAS's deterministic workspace.
    pub deterministic: bool,
}

/// The numerical state libtorch holds, read back from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumericState {
    /// True when every CUDA float32 op (conv, rnn, matmul) may use TF32.
    pub tf32: bool,
    /// True when cuDNN is deterministic, its benchmark off, deterministic
    /// algorithms on and cuBLAS's workspace is [`CUBLAS_WORKSPACE`].
    pub deterministic: bool,
    /// Precision of float32 cuDNN convolutions: `ieee` or `tf32`
    /// (`none`: libtorch's inherited default).
    pub cuda_conv_fp32: String,
    /// Precision of float32 CUDA matrix products.
    pub cuda_matmul_fp32: String,
    /// `at::Context::deterministicCuDNN()`.
    pub cudnn_deterministic: bool,
    /// `at::Context::benchmarkCuDNN()`.
    pub cudnn_benchmark: bool,
    /// `at::Context::deterministicAlgorithms()`.
    pub deterministic_algorithms: bool,
    /// The process's `CUBLAS_WORKSPACE_CONFIG` (empty when unset).
    pub cublas_workspace_config: String,
}

fn context() -> *mut std::ffi::c_void {
    // SAFETY: returns libtorch's process-wide context, created on first use.
    unsafe { ffi::global_context() }
}

fn precision_name(code: i32) -> String {
    ffi::PRECISIONS
        .get(code as usize)
        .map_or_else(|| format!("unknown({code})"), |s| s.to_string())
}

/// Sets libtorch's numerical mode for the whole process. Call it before any
/// CUDA work (cuBLAS reads its workspace setting when its first handle is
/// made); the binaries call it once, from `RuntimeArgs::resolve`.
///
/// Errors: [`Error::InvalidArgument`] on `--deterministic` when
/// `CUBLAS_WORKSPACE_CONFIG` is already set to another value than
/// [`CUBLAS_WORKSPACE`] or `:16:8` (cuBLAS would not be deterministic).
pub fn apply(mode: NumericMode) -> Result<()> {
    if mode.deterministic {
        match std::env::var(CUBLAS_WORKSPACE_ENV) {
            Ok(v) if v == CUBLAS_WORKSPACE || v == ":16:8" => {}
            Ok(v) => {
                return Err(Error::invalid(
                    "--deterministic",
                    "on",
                    format!(
                    "{CUBLAS_WORKSPACE_ENV}={v} makes cuBLAS non-deterministic; unset it or set \
                         it to {CUBLAS_WORKSPACE} (or :16:8)"
                ),
                ))
            }
            Err(_) => std::env::set_var(CUBLAS_WORKSPACE_ENV, CUBLAS_WORKSPACE),
        }
    }
    let ctx = context();
    let precision = if mode.tf32 { ffi::TF32 } else { ffi::IEEE };
    // SAFETY: setters of libtorch's context with valid enum values; none
    // throws for the CUDA backend and these ops.
    unsafe {
        for op in CUDA_OPS {
            ffi::set_float32_precision(ctx, ffi::CUDA, op, precision);
        }
        ffi::set_deterministic_cudnn(ctx, mode.deterministic);
        if mode.deterministic {
            ffi::set_benchmark_cudnn(ctx, false);
        }
        ffi::set_deterministic_algorithms(ctx, mode.deterministic, false);
    }
    Ok(())
}

/// Reads libtorch's numerical state back.
pub fn read_back() -> NumericState {
    let ctx = context();
    // SAFETY: const getters of libtorch's context with valid enum values.
    let (ops, cudnn_deterministic, cudnn_benchmark, algorithms) = unsafe {
        (
            CUDA_OPS.map(|op| ffi::float32_precision(ctx, ffi::CUDA, op)),
            ffi::deterministic_cudnn(ctx),
            ffi::benchmark_cudnn(ctx),
            ffi::deterministic_algorithms(ctx),
        )
    };
    let workspace = std::env::var(CUBLAS_WORKSPACE_ENV).unwrap_or_default();
    let deterministic_workspace = workspace == CUBLAS_WORKSPACE || workspace == ":16:8";
    NumericState {
        tf32: ops.iter().all(|&p| p == ffi::TF32),
        deterministic: cudnn_deterministic
            && !cudnn_benchmark
            && algorithms
            && deterministic_workspace,
        cuda_conv_fp32: precision_name(ops[0]),
        cuda_matmul_fp32: precision_name(ops[2]),
        cudnn_deterministic,
        cudnn_benchmark,
        deterministic_algorithms: algorithms,
        cublas_workspace_config: workspace,
    }
}

/// Refuses the finite-difference Stein estimator (`--stein-mode fd`) while
/// TF32 is allowed: TF32's rounding (≈ 4.9e-4 relative) divided by the
/// step h turns the fd residual into noise (on a CNN at h = 1e-2 its median
/// relative error rises from ≈ 6.5e-4 to ≈ 0.1).
///
/// Errors: [`Error::InvalidArgument`] naming `--tf32` when `tf32` and `fd`.
pub fn check_fd_precision(tf32: bool, fd: bool) -> Result<()> {
    if tf32 && fd {
        return Err(Error::invalid(
            "--tf32",
            "on",
            "--stein-mode fd divides rounding errors by its step, and TF32's (≈ 5e-4 relative) make \
             its residual noise; drop --tf32, or use --stein-mode autograd",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_is_refused_only_with_tf32_naming_both_fixes() {
        assert!(check_fd_precision(false, true).is_ok());
        assert!(check_fd_precision(true, false).is_ok());
        assert!(check_fd_precision(false, false).is_ok());
        let msg = check_fd_precision(true, true).unwrap_err().to_string();
        assert!(
            msg.contains("--tf32") && msg.contains("--stein-mode autograd"),
            "{msg}"
        );
    }

    #[test]
    fn precision_codes_map_to_libtorch_names() {
        assert_eq!(precision_name(ffi::IEEE), "ieee");
        assert_eq!(precision_name(ffi::TF32), "tf32");
        assert_eq!(precision_name(9), "unknown(9)");
    }
}
