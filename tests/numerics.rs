//! The numerical mode and the device a run records, and the refusal of a
//! GPU that was expected but is not visible:
//! - `--tf32` / `--deterministic` are set through libtorch's own context
//!   and read back from it (in this process, then by the binaries into
//!   model.json, summary.csv and a sweep's results.csv);
//! - each environment signal of an allocated GPU makes `--device auto`
//!   refuse (exit 2, naming the driver floor and `--device cpu`) where
//!   libtorch sees none, and `--device cpu` still runs.
mod common;

use common::{bin, run_line, stderr};
use std::path::Path;
use std::process::{Command, Output};
use taser::device::numerics::{apply, read_back, NumericMode, CUBLAS_WORKSPACE_ENV};

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The one data row of a CSV file, column → value.
fn csv_rows(path: &Path) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut r = csv::Reader::from_path(path).unwrap();
    let header = r.headers().unwrap().clone();
    r.records()
        .map(|row| {
            header
                .iter()
                .map(String::from)
                .zip(row.unwrap().iter().map(String::from))
                .collect()
        })
        .collect()
}

#[test]
fn the_mode_set_through_libtorch_is_what_libtorch_reads_back() {
    // One test, so no other test of this process sees the mode change.
    std::env::remove_var(CUBLAS_WORKSPACE_ENV);
    let before = read_back();
    assert_eq!(before.cuda_conv_fp32, "tf32", "libtorch's own default");
    apply(NumericMode::default()).unwrap();
    let off = read_back();
    assert!(!off.tf32 && !off.deterministic, "{off:?}");
    assert_eq!(
        (off.cuda_conv_fp32.as_str(), off.cuda_matmul_fp32.as_str()),
        ("ieee", "ieee")
    );
    assert!(!off.deterministic_algorithms && !off.cudnn_deterministic);
    assert_eq!(off.cublas_workspace_config, "");

    apply(NumericMode {
        tf32: true,
        deterministic: true,
    })
    .unwrap();
    let on = read_back();
    assert!(on.tf32 && on.deterministic, "{on:?}");
    assert_eq!(on.cuda_conv_fp32, "tf32");
    assert!(on.cudnn_deterministic && !on.cudnn_benchmark && on.deterministic_algorithms);
    assert_eq!(on.cublas_workspace_config, ":4096:8");

    apply(NumericMode::default()).unwrap();
    assert!(!read_back().deterministic_algorithms);
    std::env::set_var(CUBLAS_WORKSPACE_ENV, ":0:0");
    let err = apply(NumericMode {
        tf32: false,
        deterministic: true,
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("CUBLAS_WORKSPACE_CONFIG=:0:0") && err.contains(":4096:8"),
        "{err}"
    );
    std::env::remove_var(CUBLAS_WORKSPACE_ENV);
}

#[test]
fn model_json_summary_csv_and_results_csv_record_the_mode_and_the_device() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let base = "--dataset digits --model mlp --mlp-hidden 16 --epochs 1 --device cpu";
    for (name, flags) in [("plain", ""), ("both", "--tf32 --deterministic")] {
        let o = run_line("train", &format!("{base} {flags} --out {d}/{name}"));
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let plain = json(&dir.path().join("plain/model.json"))["runtime"].clone();
    let both = json(&dir.path().join("both/model.json"))["runtime"].clone();
    assert_eq!(plain["numerics"]["tf32"], false);
    assert_eq!(plain["numerics"]["deterministic"], false);
    assert_eq!(plain["numerics"]["cuda_conv_fp32"], "ieee");
    assert_eq!(both["numerics"]["tf32"], true);
    assert_eq!(both["numerics"]["deterministic"], true);
    assert_eq!(both["numerics"]["cuda_conv_fp32"], "tf32");
    assert_eq!(both["numerics"]["cublas_workspace_config"], ":4096:8");
    for r in [&plain, &both] {
        assert_eq!(r["device"]["device"], "cpu");
        assert!(!r["device"]["name"].as_str().unwrap().is_empty(), "{r}");
        assert!(
            r["device"]["torch"].as_str().unwrap().starts_with("2."),
            "{r}"
        );
        assert!(r["device"]["threads"].as_i64().unwrap() >= 1, "{r}");
    }

    let attack = format!(
        "--checkpoint {d}/both/model.safetensors --attacks pgd1 --eps 0.1 --n-eval 20 --device cpu"
    );
    for (name, flags) in [("eval-plain", ""), ("eval-both", "--tf32 --deterministic")] {
        let o = run_line("attack", &format!("{attack} {flags} --out {d}/{name}"));
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let plain = &csv_rows(&dir.path().join("eval-plain/summary.csv"))[0];
    let both = &csv_rows(&dir.path().join("eval-both/summary.csv"))[0];
    assert_eq!(
        (plain["tf32"].as_str(), plain["deterministic"].as_str()),
        ("0", "0")
    );
    assert_eq!(
        (both["tf32"].as_str(), both["deterministic"].as_str()),
        ("1", "1")
    );
    assert!(
        !both["device_name"].is_empty() && both["torch"].starts_with("2."),
        "{both:?}"
    );

    let grid = dir.path().join("grid.toml");
    let text = "steps = [\"train\", \"attack\"]\n[axes]\nseed = [1]\n\
        [train]\ndataset = \"digits\"\nmodel = \"mlp\"\nmlp-hidden = \"16\"\nepochs = 1\ntf32 = true\n\
        [attack]\nattacks = \"pgd1\"\neps = \"0.1\"\nn-eval = 20\ndeterministic = true\n";
    std::fs::write(&grid, text).unwrap();
    let o = Command::new(bin("sweep"))
        .args([
            "run",
            &grid.display().to_string(),
            "--out",
            &format!("{d}/w"),
            "--device",
            "cpu",
        ])
        .env("TASER_BIN_DIR", bin("sweep").parent().unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let row = &csv_rows(&dir.path().join("w/results.csv"))[0];
    assert_eq!(
        (
            row["train_tf32"].as_str(),
            row["train_deterministic"].as_str()
        ),
        ("1", "0")
    );
    assert_eq!(
        (
            row["attack_tf32"].as_str(),
            row["attack_deterministic"].as_str()
        ),
        ("0", "1")
    );
    assert!(!row["train_device_name"].is_empty(), "{row:?}");
}

/// Environment variables a case sets.
type Env<'a> = &'a [(&'a str, &'a str)];

/// `train --device DEVICE` on digits with `env` set, every GPU signal of
/// this machine's own environment removed and PATH = `path`.
fn train_with(dir: &Path, device: &str, env: &[(&str, &str)], path: &str) -> Output {
    let mut c = Command::new(bin("train"));
    c.args(["--dataset", "digits", "--model", "mlp", "--mlp-hidden", "8"])
        .args(["--epochs", "1", "--device", device, "--out"])
        .arg(dir.join(format!("run-{}", env.first().map_or("none", |e| e.0))))
        .env_remove("TASER_DATA_DIR")
        .env("PATH", path);
    for (k, _) in std::env::vars().filter(|(k, _)| {
        k.starts_with("SLURM_GPUS")
            || k == "SLURM_JOB_GPUS"
            || k == "SLURM_STEP_GPUS"
            || k == "CUDA_VISIBLE_DEVICES"
    }) {
        c.env_remove(k);
    }
    c.envs(env.iter().copied()).output().unwrap()
}

#[test]
fn an_expected_gpu_libtorch_cannot_see_is_refused_and_cpu_stays_explicit() {
    if tch::Cuda::is_available() {
        eprintln!("skipped: libtorch sees a GPU here, so --device auto takes it");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A PATH without nvidia-smi, and one whose nvidia-smi lists a GPU.
    let bare = dir.path().join("bare");
    let smi = dir.path().join("smi");
    for p in [&bare, &smi] {
        std::fs::create_dir_all(p).unwrap();
    }
    let fake = smi.join("nvidia-smi");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1)'\n",
    )
    .unwrap();
    Command::new("chmod").arg("+x").arg(&fake).status().unwrap();
    let bare_path = format!("{}:/usr/bin:/bin", bare.display());
    let smi_path = format!("{}:/usr/bin:/bin", smi.display());
    let cases: [(Env, &str, &str); 5] = [
        (
            &[("CUDA_VISIBLE_DEVICES", "0")],
            &bare_path,
            "CUDA_VISIBLE_DEVICES=0",
        ),
        (&[("SLURM_JOB_GPUS", "0")], &bare_path, "SLURM_JOB_GPUS=0"),
        (
            &[("SLURM_GPUS_ON_NODE", "1")],
            &bare_path,
            "SLURM_GPUS_ON_NODE=1",
        ),
        (
            &[("SLURM_GPUS_PER_NODE", "a100:2")],
            &bare_path,
            "SLURM_GPUS_PER_NODE=a100:2",
        ),
        (&[], &smi_path, "nvidia-smi lists GPU 0: NVIDIA H100"),
    ];
    for (env, path, signal) in cases {
        let o = train_with(dir.path(), "auto", env, path);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{signal}: {err}");
        assert!(err.contains(signal), "{signal}: {err}");
        assert!(
            err.contains("580.65.06") && err.contains("--device cpu"),
            "{err}"
        );
        let cpu = train_with(dir.path(), "cpu", env, path);
        assert!(
            cpu.status.success(),
            "{signal} with --device cpu: {}",
            stderr(&cpu)
        );
        std::fs::remove_dir_all(
            dir.path()
                .join(format!("run-{}", env.first().map_or("none", |e| e.0))),
        )
        .unwrap();
    }
    // Nothing says a GPU was given: auto computes on the CPU, as before.
    let o = train_with(
        dir.path(),
        "auto",
        &[("CUDA_VISIBLE_DEVICES", "")],
        &bare_path,
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

/// The fd penalty with TF32 allowed is refused before any work (exit 2,
/// naming --tf32 and both fixes); without --tf32, or with autograd, the
/// plan accepts it.
#[test]
fn the_fd_penalty_is_refused_with_tf32_on() {
    let dir = tempfile::tempdir().unwrap();
    let base = "--dataset digits --model mlp --mlp-hidden 8 --epochs 1 --device cpu \
                --lambda 0.01 --score-source gaussian-std";
    let refused = run_line(
        "train",
        &format!(
            "{base} --stein-mode fd --tf32 --out {}",
            dir.path().join("a").display()
        ),
    );
    let e = stderr(&refused);
    assert_eq!(refused.status.code(), Some(2), "{e}");
    assert!(
        e.contains("--tf32") && e.contains("--stein-mode autograd"),
        "{e}"
    );
    assert!(
        !dir.path().join("a").exists(),
        "a refused run left its --out"
    );
    for extra in ["--stein-mode fd", "--stein-mode autograd --tf32"] {
        let out = dir.path().join(extra.replace(' ', "_"));
        let o = run_line("train", &format!("{base} {extra} --out {}", out.display()));
        assert!(o.status.success(), "{extra}: {}", stderr(&o));
    }
}
