//! scripts/gpu-check.sh (a wrapper that finds a python, then
//! scripts/gpu_check.py) on this CPU machine: its `--device cpu --quick`
//! path end to end against the release binaries (and the train_step bench
//! binary that `make test` builds first), run as a newcomer would (no
//! TASER_PYTHON, and no python with torch on PATH: the project's .venv must
//! be found); a missing CUDA device refused with a clear message; bad usage
//! (an unknown device, `--record` on the CPU) refused with exit 2. Every
//! test here is named `gpu_check_…`, so `make test-fast` can skip them.
mod common;

use common::{bin, python, stderr, stdout};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs gpu-check.sh with TASER_PYTHON set, or (`newcomer`) without it and
/// with a PATH whose python3 lacks torch, so the wrapper must find the
/// project's .venv itself.
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
        c.env_remove("TASER_PYTHON").env("PATH", "/usr/bin:/bin");
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

/// The number in a cell, or a panic naming the row.
fn number(cells: &[&str], i: usize) -> f64 {
    cells[i]
        .parse()
        .unwrap_or_else(|_| panic!("cell {i} of {cells:?}"))
}

/// The number after `key ` in `text` (e.g. `fd 6.1e-2 (…)`).
fn after(text: &str, key: &str) -> f64 {
    let rest = &text[text
        .find(key)
        .unwrap_or_else(|| panic!("no `{key}` in {text}"))
        + key.len()..];
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn gpu_check_quick_cpu_path_prints_one_table_of_passed_steps_and_bench_rows() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("check");
    let o = gpu_check_as(&["--device", "cpu", "--quick"], &out, true);
    let table = stdout(&o);
    assert!(o.status.success(), "{table}\n{}", stderr(&o));
    assert_eq!(
        table.matches("| step | seconds | status |").count(),
        1,
        "one table: {table}"
    );
    assert!(table.contains("peak MiB: the process's peak resident set (RSS)"));
    // Every step ran, passed, took time and has its process's peak RSS.
    for step in [
        "binaries see cpu",
        "MPI ranks → node-local device (2 rank(s))",
        "CIFAR-shaped data (8 / 8",
        "train resnet18 1 epoch, standard",
        "train resnet18 1 epoch, + TASER first-order",
        "train resnet18 1 epoch, --tf32",
        "train --deterministic, run 1",
        "train --deterministic, run 2",
        "train resnet18 1 epoch, --precision bf16",
        "train resnet18 1 epoch, --memory-format channels-last",
        "train resnet18 1 epoch, bf16 + channels-last",
        "fd vs autograd first-order residual (resnet18 silu, one batch of 8)",
        "CIFAR-shaped data for the memory rows (2 / 2)",
        "peak memory: wrn-34-10 b=2 (--quick: small batch), one step, standard",
        "peak memory: wrn-34-10 b=2 (--quick: small batch), one step, + first-order penalty",
        "AutoAttack (aa, L∞ 8/255) on 4 points",
        "bench side by side, f32",
        "bench side by side, resnet18, bf16 + channels-last",
        "bench cnn-small, PGD-AT ± TASER",
    ] {
        let cells = row(&table, step);
        assert_eq!(cells[2], "ok", "{step}: {cells:?}");
        assert!(number(&cells, 1) > 0.0, "{step}: {cells:?}");
        assert!(number(&cells, 8) > 1.0, "{step}: peak MiB {cells:?}");
    }
    let total = row(&table, "total");
    assert_eq!(total[2], "ok", "{total:?}");
    assert!(number(&total, 1) > 0.0);
    // fd vs autograd on one batch, TF32 off: float32 autograd within 1e-3 of
    // float64 (the script's own check), fd farther (its rounding over the
    // step) but a residual, not noise; TF32 on is n/a on the CPU.
    let off = row(&table, "… TF32 off, vs f64 autograd");
    assert_eq!(off[2], "ok", "{off:?}");
    let (fd, autograd) = (after(off[0], ": fd "), after(off[0], ", autograd "));
    assert!(autograd < 1e-3 && fd > autograd && fd < 0.5, "{off:?}");
    assert!(row(&table, "… TF32 on: n/a").join(" ").contains("CUDA"));
    // Peak memory per step: the penalty's double backward costs memory, and
    // wrn-34-10 (46M parameters) more than resnet18 (11M).
    let peak = |model: &str, variant: &str| {
        let b = if model == "resnet18" { 8 } else { 2 };
        let cells = row(
            &table,
            &format!("peak memory: {model} b={b} (--quick: small batch), one step, {variant}"),
        );
        assert_eq!(cells[2], "ok", "{cells:?}");
        number(&cells, 8)
    };
    for model in ["resnet18", "wrn-34-10"] {
        assert!(
            peak(model, "+ first-order penalty") > peak(model, "standard"),
            "{model}: {table}"
        );
    }
    assert!(peak("wrn-34-10", "standard") > peak("resnet18", "standard"));
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
    assert!(stderr(&bad).contains("--device 'tpu'"), "{}", stderr(&bad));
    // --record keeps GPU results only.
    let cpu = gpu_check(&["--device", "cpu", "--record"], &dir.path().join("rec"));
    assert_eq!(cpu.status.code(), Some(2));
    assert!(stderr(&cpu).contains("--record"), "{}", stderr(&cpu));
    assert!(!dir.path().join("rec").exists(), "nothing ran");
}
