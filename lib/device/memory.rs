//! Memory a device has free, and the peak a piece of work takes on it
//! (`--penalty-chunk auto` sizes its chunk from the two).
//!
//! - CPU: free is `MemAvailable` of /proc/meminfo, lowered to what the
//!   cgroup (v2 `memory.max` − `memory.current`, a Slurm job's limit) still
//!   allows; the peak is the growth of the process's resident high-water
//!   mark (`VmHWM`, reset through /proc/self/clear_refs) over the work.
//! - CUDA: free is `cudaMemGetInfo`'s free bytes on the device; the peak is
//!   how much that drops over the work (libtorch's caching allocator keeps
//!   what it reserved, so the drop is the work's peak reservation).
//!
//! Both are what the operating system or driver reports, not an exact
//! count of tensors: callers keep a safety margin.
use super::machine::{cudart, symbol};
use std::ffi::c_int;
use tch::Device;

/// Bytes the device can still allocate; None where it cannot be read.
pub fn available_bytes(device: Device) -> Option<u64> {
    match device {
        Device::Cuda(i) => cuda_free(i).map(|(free, _)| free),
        _ => {
            let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
            let available = kib_field(&meminfo, "MemAvailable:")? * 1024;
            Some(match cgroup_headroom() {
                Some(h) => available.min(h),
                None => available,
            })
        }
    }
}

/// Runs `work` and returns its result with the peak bytes it took on
/// `device` beyond what was in use before (None where it cannot be read).
pub fn peak_of<T>(device: Device, work: impl FnOnce() -> T) -> (T, Option<u64>) {
    match device {
        Device::Cuda(i) => {
            let before = cuda_free(i).map(|(f, _)| f);
            let out = work();
            tch::Cuda::synchronize(i as i64);
            let after = cuda_free(i).map(|(f, _)| f);
            (out, before.zip(after).map(|(b, a)| b.saturating_sub(a)))
        }
        _ => {
            let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
            let before = status_kib("VmRSS:");
            let out = work();
            let peak = status_kib("VmHWM:");
            let grown = before
                .zip(peak)
                .filter(|_| reset)
                .map(|(b, p)| p.saturating_sub(b) * 1024);
            (out, grown)
        }
    }
}

/// A `kB` field of a /proc file (`MemAvailable:`, `VmHWM:`).
fn kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

fn status_kib(name: &str) -> Option<u64> {
    kib_field(&std::fs::read_to_string("/proc/self/status").ok()?, name)
}

/// What the process's cgroup (v2) still lets it allocate; None without a
/// limit.
fn cgroup_headroom() -> Option<u64> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    let dir = std::path::Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
    let max: u64 = read("memory.max")?.trim().parse().ok()?;
    let current: u64 = read("memory.current")?.trim().parse().ok()?;
    Some(max.saturating_sub(current))
}

/// (free, total) bytes of CUDA device `index` from the runtime libtorch
/// loaded; None without one.
fn cuda_free(index: usize) -> Option<(u64, u64)> {
    type SetDevice = unsafe extern "C" fn(c_int) -> c_int;
    type MemGetInfo = unsafe extern "C" fn(*mut usize, *mut usize) -> c_int;
    let lib = cudart()?;
    let (mut free, mut total) = (0usize, 0usize);
    // SAFETY: cudaSetDevice(int) and cudaMemGetInfo(size_t*, size_t*) of
    // the CUDA runtime API, with valid pointers.
    unsafe {
        let set: SetDevice = symbol(lib, "cudaSetDevice")?;
        let info: MemGetInfo = symbol(lib, "cudaMemGetInfo")?;
        if set(index as c_int) != 0 || info(&mut free, &mut total) != 0 {
            return None;
        }
    }
    Some((free as u64, total as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    #[test]
    fn the_cpu_reports_free_memory_and_the_peak_of_an_allocation() {
        let free = available_bytes(Device::Cpu).expect("/proc/meminfo");
        assert!(free > 64 << 20, "{free}");
        // 64 MiB written (so resident), then freed: the peak sees them.
        let (_, peak) = peak_of(Device::Cpu, || {
            let t = Tensor::ones([16 << 20], (Kind::Float, Device::Cpu));
            t.sum(Kind::Float).double_value(&[])
        });
        let peak = peak.expect("VmHWM");
        assert!((60 << 20..200 << 20).contains(&peak), "{peak}");
    }
}
