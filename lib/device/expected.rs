//! Whether this process was meant to have a GPU: the signals a job's
//! environment gives (Slurm's GPU allocation, `CUDA_VISIBLE_DEVICES`, a GPU
//! that `nvidia-smi` lists), and the driver a torch build needs. `--device
//! auto` uses them to refuse the CPU when a GPU was expected but libtorch
//! sees none (an old driver, a job submitted without `--gpus`): such a run
//! would otherwise train on the CPU without a word.
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The Slurm variables that list allocated GPUs by index (any non-empty
/// value is an allocation, `0` included).
const SLURM_GPU_LISTS: [&str; 2] = ["SLURM_JOB_GPUS", "SLURM_STEP_GPUS"];
/// The prefix of Slurm's GPU-count variables (`SLURM_GPUS`,
/// `SLURM_GPUS_ON_NODE`, `SLURM_GPUS_PER_NODE`, `SLURM_GPUS_PER_TASK`, …):
/// a count other than 0, optionally typed (`a100:2`), is an allocation.
const SLURM_GPU_COUNTS: &str = "SLURM_GPUS";

/// Whether a Slurm GPU count (`2`, `a100:2`, `gpu:a100:1,gpu:v100:0`)
/// allocates at least one GPU.
fn count_allocates(value: &str) -> bool {
    value.split(',').any(|part| {
        part.rsplit(':')
            .next()
            .and_then(|n| n.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0)
    })
}

/// Whether `CUDA_VISIBLE_DEVICES` names a device (`-1`, `NoDevFiles` and
/// the empty string hide every device).
fn visible_devices_name_one(value: &str) -> bool {
    let v = value.trim();
    !v.is_empty() && v != "-1" && !v.eq_ignore_ascii_case("NoDevFiles")
}

/// The first environment signal that this process was given a GPU, as
/// `NAME=value`, from `vars` (the process's environment).
pub fn env_signal(vars: &[(String, String)]) -> Option<String> {
    let found = |ok: &dyn Fn(&str, &str) -> bool| {
        vars.iter()
            .find(|(k, v)| ok(k, v))
            .map(|(k, v)| format!("{k}={v}"))
    };
    found(&|k, v| SLURM_GPU_LISTS.contains(&k) && !v.trim().is_empty())
        .or_else(|| found(&|k, v| k.starts_with(SLURM_GPU_COUNTS) && count_allocates(v)))
        .or_else(|| found(&|k, v| k == "CUDA_VISIBLE_DEVICES" && visible_devices_name_one(v)))
}

/// The first GPU that `nvidia-smi -L` (the program named `program`, found
/// on PATH) lists, e.g. `GPU 0: NVIDIA H100 (UUID: …)`; None when it is
/// absent, fails, lists none or takes longer than 10 s.
pub fn smi_lists_gpu(program: &str) -> Option<String> {
    let mut child = Command::new(program)
        .arg("-L")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if start.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let out = child.wait_with_output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("GPU "))
        .map(|l| format!("nvidia-smi lists {}", l.trim()))
}

/// Why this process was expected to have a GPU: an environment signal
/// ([`env_signal`]) or a GPU `nvidia-smi` lists; None when nothing says so.
pub fn gpu_expected() -> Option<String> {
    let vars: Vec<(String, String)> = std::env::vars().collect();
    env_signal(&vars).or_else(|| smi_lists_gpu("nvidia-smi"))
}

/// The oldest Linux NVIDIA driver a CUDA runtime `major.minor` runs on
/// (NVIDIA's CUDA release notes: 13.x needs ≥ 580.65.06; 12.x ≥ 525.60.13
/// and 11.x ≥ 450.80.02 under minor-version compatibility).
pub fn driver_floor(cuda: &str) -> Option<&'static str> {
    match cuda.split('.').next()? {
        "13" => Some("580.65.06"),
        "12" => Some("525.60.13"),
        "11" => Some("450.80.02"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn each_environment_signal_is_seen_and_empty_or_zero_ones_are_not() {
        for (k, v) in [
            ("SLURM_JOB_GPUS", "0"),
            ("SLURM_STEP_GPUS", "2,3"),
            ("SLURM_GPUS", "4"),
            ("SLURM_GPUS_ON_NODE", "1"),
            ("SLURM_GPUS_PER_NODE", "a100:2"),
            ("SLURM_GPUS_PER_TASK", "1"),
            ("CUDA_VISIBLE_DEVICES", "0"),
            ("CUDA_VISIBLE_DEVICES", "GPU-5f2c"),
        ] {
            let vars = env(&[("HOME", "/root"), (k, v)]);
            assert_eq!(env_signal(&vars), Some(format!("{k}={v}")), "{k}={v}");
        }
        for (k, v) in [
            ("SLURM_JOB_GPUS", ""),
            ("SLURM_GPUS", "0"),
            ("SLURM_GPUS_PER_NODE", "a100:0"),
            ("CUDA_VISIBLE_DEVICES", ""),
            ("CUDA_VISIBLE_DEVICES", "-1"),
            ("CUDA_VISIBLE_DEVICES", "NoDevFiles"),
            ("SLURM_CPUS_ON_NODE", "8"),
        ] {
            assert_eq!(env_signal(&env(&[(k, v)])), None, "{k}={v}");
        }
    }

    #[test]
    fn nvidia_smi_counts_only_when_it_lists_a_gpu() {
        let dir = tempfile::tempdir().unwrap();
        let fake = |name: &str, body: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::process::Command::new("chmod")
                .arg("+x")
                .arg(&p)
                .status()
                .unwrap();
            p.display().to_string()
        };
        let lists = fake("lists", "echo 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1)'");
        assert_eq!(
            smi_lists_gpu(&lists).as_deref(),
            Some("nvidia-smi lists GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1)")
        );
        let fails = fake("fails", "echo 'NVIDIA-SMI has failed'; exit 9");
        assert_eq!(smi_lists_gpu(&fails), None);
        let none = fake("none", "echo 'No devices were found'");
        assert_eq!(smi_lists_gpu(&none), None);
        assert_eq!(smi_lists_gpu("/nonexistent/nvidia-smi"), None);
    }

    #[test]
    fn driver_floors_follow_the_cuda_major() {
        assert_eq!(driver_floor("13.0"), Some("580.65.06"));
        assert_eq!(driver_floor("12.8"), Some("525.60.13"));
        assert_eq!(driver_floor("10.2"), None);
    }
}
