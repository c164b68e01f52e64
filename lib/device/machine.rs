//! The machine a run computes on, as recorded in its outputs, and the rule
//! that a GPU the job was given must not be silently replaced by the CPU.
//!
//! GPU facts come from the CUDA driver API (`libcuda.so.1`: name, compute
//! capability, memory, driver's CUDA version) and from the kernel module
//! (`/proc/driver/nvidia/version`: the driver's version); the CUDA runtime
//! and cuDNN versions from the libraries libtorch loaded (`cudaRuntimeGetVersion`,
//! `cudnnGetVersion`); the torch version from the `version.py` (pip) or
//! `build-version` (libtorch archive) beside the loaded `libtorch_cpu.so`.
//! Every library is looked up with `dlopen`, so a CPU-only machine or a
//! CPU-only libtorch just leaves those fields empty.
use serde::{Deserialize, Serialize};
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use tch::Device;

/// What a run computed on. Empty strings: not known on this machine (e.g.
/// no driver, or a CPU-only libtorch).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeviceInfo {
    /// `cpu` or `cuda:N`, as the run used it.
    pub device: String,
    /// The GPU's name (e.g. `NVIDIA H100 80GB HBM3`), or the CPU's model.
    pub name: String,
    /// GPU compute capability `major.minor` (empty on the CPU).
    pub compute_capability: String,
    /// GPU memory in MiB (0 on the CPU).
    pub memory_mib: u64,
    /// NVIDIA driver version (e.g. `580.65.06`), else the highest CUDA
    /// version the driver supports (e.g. `cuda 13.0`).
    pub driver: String,
    /// CUDA runtime version libtorch was built with and loaded (e.g. `13.0`).
    pub cuda: String,
    /// cuDNN version libtorch loaded (e.g. `9.19.0`).
    pub cudnn: String,
    /// torch version of the loaded libtorch (e.g. `2.11.0+cu130`).
    pub torch: String,
    /// libtorch's CPU thread count.
    pub threads: i64,
}

/// Opens an already loaded (`only_loaded`) or loadable shared library.
pub(super) fn open(name: &str, only_loaded: bool) -> Option<*mut c_void> {
    let c = CString::new(name).ok()?;
    let flags = libc::RTLD_NOW | if only_loaded { libc::RTLD_NOLOAD } else { 0 };
    // SAFETY: dlopen with a valid C string; the handle is never closed, so
    // symbols taken from it stay valid.
    let h = unsafe { libc::dlopen(c.as_ptr(), flags) };
    (!h.is_null()).then_some(h)
}

/// The address of `symbol` in `lib`, as a function pointer of type `F`.
///
/// # Safety
/// `F` must be the symbol's true C signature.
pub(super) unsafe fn symbol<F: Copy>(lib: *mut c_void, symbol: &str) -> Option<F> {
    let c = CString::new(symbol).ok()?;
    let p = libc::dlsym(lib, c.as_ptr());
    (!p.is_null()).then(|| std::mem::transmute_copy(&p))
}

/// `major.minor` of a CUDA version number `1000·major + 10·minor`.
fn cuda_version(v: c_int) -> String {
    format!("{}.{}", v / 1000, (v % 1000) / 10)
}

/// The CUDA runtime libtorch loaded; None without one.
pub(super) fn cudart() -> Option<*mut c_void> {
    ["libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0"]
        .iter()
        .find_map(|n| open(n, true))
}

/// The CUDA runtime version libtorch loaded (e.g. `13.0`); None without one.
pub fn cuda_runtime() -> Option<String> {
    type GetVersion = unsafe extern "C" fn(*mut c_int) -> c_int;
    let lib = cudart()?;
    let mut v = 0;
    // SAFETY: cudaRuntimeGetVersion(int*) of the CUDA runtime API.
    let rc = unsafe { symbol::<GetVersion>(lib, "cudaRuntimeGetVersion")?(&mut v) };
    (rc == 0 && v > 0).then(|| cuda_version(v))
}

/// The cuDNN version libtorch loaded (e.g. `9.19.0`); None without one.
fn cudnn() -> Option<String> {
    type GetVersion = unsafe extern "C" fn() -> usize;
    let lib = ["libcudnn.so.9", "libcudnn.so.8"]
        .iter()
        .find_map(|n| open(n, true))?;
    // SAFETY: size_t cudnnGetVersion(void) of the cuDNN API.
    let v = unsafe { symbol::<GetVersion>(lib, "cudnnGetVersion")?() };
    // cuDNN ≥ 9: major·10000 + minor·100 + patch; cuDNN 8: major·1000 + minor·100 + patch.
    let (major, rest) = if v >= 90000 {
        (v / 10000, v % 10000)
    } else {
        (v / 1000, v % 1000)
    };
    Some(format!("{major}.{}.{}", rest / 100, rest % 100))
}

/// The folder holding the loaded `libtorch_cpu.so`.
fn torch_lib_dir() -> Option<PathBuf> {
    extern "C" {
        #[link_name = "_ZN2at13globalContextEv"]
        fn global_context() -> *mut c_void;
    }
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr on the address of a function of libtorch_cpu.so.
    let found = unsafe { libc::dladdr(global_context as *const c_void, &mut info) };
    if found == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dladdr gives a NUL-terminated path that lives as long as the library.
    let path = unsafe { CStr::from_ptr(info.dli_fname) };
    Some(Path::new(path.to_str().ok()?).parent()?.to_path_buf())
}

/// The torch version of the loaded libtorch, from the files beside it
/// (pip: `torch/version.py`; the libtorch archive: `build-version`).
pub fn torch_version() -> Option<String> {
    let root = torch_lib_dir()?.parent()?.to_path_buf();
    if let Ok(text) = std::fs::read_to_string(root.join("version.py")) {
        let line = text.lines().find(|l| l.starts_with("__version__"))?;
        return Some(line.split(['\'', '"']).nth(1)?.to_string());
    }
    let text = std::fs::read_to_string(root.join("build-version")).ok()?;
    Some(text.trim().to_string())
}

/// The CPU's model name (Linux's /proc/cpuinfo), else the architecture.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// The NVIDIA driver's version from its kernel module, if loaded.
pub fn driver_version() -> Option<String> {
    let text = std::fs::read_to_string("/proc/driver/nvidia/version").ok()?;
    let line = text.lines().find(|l| l.starts_with("NVRM version"))?;
    line.split_whitespace()
        .find(|w| w.split('.').count() >= 2 && w.split('.').all(|p| p.parse::<u32>().is_ok()))
        .map(str::to_string)
}

/// Name, `major.minor` compute capability, MiB and the driver's CUDA
/// version of CUDA device `ordinal` (as libtorch numbers it), from the
/// driver API.
fn gpu_facts(ordinal: i32) -> Option<(String, String, u64, String)> {
    type Init = unsafe extern "C" fn(u32) -> c_int;
    type Get = unsafe extern "C" fn(*mut c_int, c_int) -> c_int;
    type Name = unsafe extern "C" fn(*mut c_char, c_int, c_int) -> c_int;
    type Attr = unsafe extern "C" fn(*mut c_int, c_int, c_int) -> c_int;
    type Mem = unsafe extern "C" fn(*mut usize, c_int) -> c_int;
    type Driver = unsafe extern "C" fn(*mut c_int) -> c_int;
    let lib = open("libcuda.so.1", false)?;
    // SAFETY: the CUDA driver API's C signatures (cuda.h); CUdevice is int;
    // attributes 75/76 are CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR/MINOR.
    unsafe {
        if symbol::<Init>(lib, "cuInit")?(0) != 0 {
            return None;
        }
        let mut dev = 0;
        if symbol::<Get>(lib, "cuDeviceGet")?(&mut dev, ordinal) != 0 {
            return None;
        }
        let mut buf = [0 as c_char; 256];
        symbol::<Name>(lib, "cuDeviceGetName")?(buf.as_mut_ptr(), 256, dev);
        let name = CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned();
        let attr = symbol::<Attr>(lib, "cuDeviceGetAttribute")?;
        let (mut major, mut minor) = (0, 0);
        attr(&mut major, 75, dev);
        attr(&mut minor, 76, dev);
        let mut bytes = 0usize;
        symbol::<Mem>(lib, "cuDeviceTotalMem_v2")?(&mut bytes, dev);
        let mut driver = 0;
        symbol::<Driver>(lib, "cuDriverGetVersion")?(&mut driver);
        Some((
            name,
            format!("{major}.{minor}"),
            (bytes / (1 << 20)) as u64,
            cuda_version(driver),
        ))
    }
}

/// What `device` is on this machine (see [`DeviceInfo`]).
pub fn describe(device: Device) -> DeviceInfo {
    let mut info = DeviceInfo {
        device: super::device_name(device),
        name: cpu_model(),
        cuda: cuda_runtime().unwrap_or_default(),
        cudnn: cudnn().unwrap_or_default(),
        torch: torch_version().unwrap_or_default(),
        threads: tch::get_num_threads() as i64,
        ..DeviceInfo::default()
    };
    if let Device::Cuda(i) = device {
        if let Some((name, cc, mib, driver_cuda)) = gpu_facts(i as i32) {
            info.name = name;
            info.compute_capability = cc;
            info.memory_mib = mib;
            info.driver = driver_version().unwrap_or(format!("cuda {driver_cuda}"));
        }
    }
    info
}
