//! scripts/gpu-check.sh  on this CPU machine: its
//! `--device cpu --quick` path end to end against the release binaries
//! (and the train_step bench binary that `make test` builds first), and a
//! missing CUDA device refused with a clear message. Every test here is
//! named `gpu_check_…`, so a quick loop can leave them out (`make
//! test-fast` skips them).
mod common;

use common::{bin, python, stderr, stdout};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs gpu-check.sh with TASER_PYTHON set, or (`newcomer`) without it, so
/// the script must find the project's .venv itself.
fn gpu_check_as(args: &[&str], out: &Path, newcomer: bool) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/gpu-check.sh");
    let bin_dir: PathBuf = bin("train").parent().unwrap().to_path_buf();
    let mut c = Command::new("bash");
    c.arg(script)
        .args(args)
        .arg("--bin")
        .arg(&bin_dir)
        .arg("--out")
        .arg(out)
        .env("TASER_PYTHON", python())
        .env_remove("TASER_DATA_DIR");
    if newcomer {
        c.env_remove("TASER_PYTHON");
    }
    c.output().expect("bash runs gpu-check.sh")
}

fn gpu_check(args: &[&str], out: &Path) -> Output {
    gpu_check_as(args, out, false)
}

/// The table's cells of the row whose first cell starts with `step`.
fn row<'a>(table: &'a str, step: &str) -> Vec<&'a str> {
    let line = table
        .lines()
        .find(|l| l.starts_with(&format!("| {step}")))
        .unwrap_or_else(|| panic!("no row `{step}` in:\n{table}"));
    line.trim_matches('|').split('|').map(str::trim).collect()
}

#[test]
fn gpu_check_quick_cpu_path_prints_one_table_of_passed_steps_and_bench_rows() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("check");
    let o = gpu_check(&["--device", "cpu", "--quick"], &out);
    let table = stdout(&o);
    assert!(o.status.success(), "{table}\n{}", stderr(&o));
    assert_eq!(
        table.matches("| step | seconds | status |").count(),
        1,
        "one table: {table}"
    );
    for step in [
        "binaries see cpu",
        "MPI ranks → node-local device (2 rank(s))",
        "CIFAR-shaped data",
        "train resnet18 1 epoch, standard",
        "train resnet18 1 epoch, + TASER first-order",
        "train resnet18 1 epoch, --tf32",
        "train --deterministic, run 1",
        "train --deterministic, run 2",
        "train resnet18 1 epoch, --precision bf16",
        "train resnet18 1 epoch, --memory-format channels-last",
        "train resnet18 1 epoch, bf16 + channels-last",
        "AutoAttack (aa, L∞ 8/255) on 4 points",
        "bench side by side, f32",
        "bench side by side, resnet18, bf16 + channels-last",
        "bench cnn-small, PGD-AT ± TASER",
        "total",
    ] {
        let cells = row(&table, step);
        assert_eq!(cells[2], "ok", "{step}: {cells:?}");
        let secs: f64 = cells[1]
            .parse()
            .unwrap_or_else(|_| panic!("{step}: {cells:?}"));
        assert!(secs > 0.0, "{step}: {cells:?}");
    }
    assert_eq!(
        row(
            &table,
            "… two --deterministic runs: checkpoints byte-identical"
        )[2],
        "ok"
    );
    let versions = row(&table, "versions: ").join(" ");
    assert!(
        versions.contains("torch 2.") && versions.contains("threads"),
        "{versions}"
    );
    let numerics = row(&table, "numerics: ").join(" ");
    assert!(
        numerics.contains("tf32 False (conv ieee, matmul ieee)"),
        "{numerics}"
    );
    let losses = row(&table, "… train_loss, one seed").join(" ");
    assert!(
        losses.contains("tf32 ") && losses.contains("rel. gap"),
        "{losses}"
    );
    assert!(row(&table, "… ranks' devices")
        .join(" ")
        .contains("rank 1 → cpu"));
    // Side-by-side rows: every variant of cnn-small standard and PGD-AT and
    // of resnet18 standard in f32 (resnet18 PGD-AT only on CUDA), of
    // resnet18 in bf16 + channels-last, each with both timings and their
    // ratio.
    let bench_rows = |tag: &str| {
        table
            .lines()
            .filter(|l| l.starts_with(&format!("| bench {tag}: ")))
            .map(|l| {
                l.trim_matches('|')
                    .split('|')
                    .map(str::trim)
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    let (f32_rows, bf16_rows) = (bench_rows("f32"), bench_rows("bf16-cl"));
    assert_eq!(f32_rows.len(), 18, "{table}");
    assert_eq!(bf16_rows.len(), 6, "{table}");
    for cells in f32_rows.iter().chain(&bf16_rows) {
        let (suite, torch, ratio): (f64, f64, f64) = (
            cells[3].parse().unwrap(),
            cells[4].parse().unwrap(),
            cells[5].parse().unwrap(),
        );
        assert!(suite > 0.0 && torch > 0.0, "{cells:?}");
        // The cells are rounded: suite and PyTorch to 0.1 ms.
        assert!(
            (ratio - suite / torch).abs() < 0.01 + 0.05 * ratio,
            "{cells:?}"
        );
    }
    assert_eq!(
        table
            .lines()
            .filter(|l| l.starts_with("| bench: cnn-small / digits b=32 PgdAt"))
            .count(),
        8,
        "alone, five whole-batch penalty variants and two --stein-fraction rows: {table}"
    );
    // The paper's overheads beside ours (a measured ×ratio, not a dash).
    for (step, paper) in [
        (
            "overhead: TASER first-order / standard, resnet18 epoch",
            "×2.45",
        ),
        ("overhead: + first-order autograd / alone", "×2.45"),
        ("overhead: PGD-AT + first-order fd / PGD-AT", "×1.17–1.27"),
    ] {
        let cells = row(&table, step);
        assert_eq!(cells[7], paper, "{cells:?}");
        assert!(
            cells[6].starts_with('×') && cells[6][2..].parse::<f64>().is_ok(),
            "{cells:?}"
        );
    }
    // The sidecars record how each run computed.
    let meta = |run: &str| std::fs::read_to_string(out.join(run).join("model.json")).unwrap();
    let both = meta("bf16-cl");
    assert!(both.contains("\"precision\": \"bf16\""), "{both}");
    assert!(
        both.contains("\"memory_format\": \"channels-last\""),
        "{both}"
    );
    assert!(both.contains("\"penalty_precision\": \"f32\""), "{both}");
    assert!(meta("std").contains("\"precision\": \"f32\""));
}

#[test]
fn gpu_check_a_missing_cuda_device_stops_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    // No TASER_PYTHON: the script finds the project's .venv (else it would
    // stop at "cannot import torch" with exit 2).
    let o = gpu_check_as(
        &["--device", "cuda:0", "--quick"],
        &dir.path().join("check"),
        true,
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("see no cuda:0"), "{err}");
    assert!(
        err.contains("CUDA build of torch") && err.contains("--device cpu"),
        "{err}"
    );
    assert!(
        !stdout(&o).contains("| step |"),
        "no table after a missing device"
    );
    let bad = gpu_check(&["--device", "tpu"], &dir.path().join("bad"));
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("--device"));
}
