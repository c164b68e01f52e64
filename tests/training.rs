//! End-to-end training tests on digits: determinism, resume after a kill,
//! and PyTorch loading the checkpoint.
mod common;
use common::*;
use std::path::Path;
use std::process::Command;
use taser::checkpoint;
use tch::{Device, Tensor};

fn train_args<'a>(model: &'a str, epochs: &'a str, out: &'a Path) -> Vec<String> {
    [
        "--dataset",
        "digits",
        "--model",
        model,
        "--epochs",
        epochs,
        "--seed",
        "7",
        "--device",
        "cpu",
        "--out",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([out.display().to_string()])
    .collect()
}

fn train_ok(args: &[String]) {
    let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let o = run("train", &refs);
    assert!(o.status.success(), "train failed: {}", stderr(&o));
}

#[test]
fn two_cpu_runs_with_one_seed_give_bit_identical_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    for model in ["mlp", "cnn-small"] {
        let (a, b) = (
            dir.path().join(format!("{model}-a")),
            dir.path().join(format!("{model}-b")),
        );
        train_ok(&train_args(model, "2", &a));
        train_ok(&train_args(model, "2", &b));
        let wa = std::fs::read(a.join("model.safetensors")).unwrap();
        let wb = std::fs::read(b.join("model.safetensors")).unwrap();
        assert!(wa.len() > 1000);
        assert!(
            wa == wb,
            "{model}: checkpoints differ between two runs of one seed"
        );
        // A different seed must give different weights (the check can fail).
        let c = dir.path().join(format!("{model}-c"));
        let mut args = train_args(model, "2", &c);
        args[7] = "8".into();
        train_ok(&args);
        assert!(std::fs::read(c.join("model.safetensors")).unwrap() != wa);
    }
}

#[test]
fn resume_after_a_kill_ends_with_the_uninterrupted_weights() {
    let dir = tempfile::tempdir().unwrap();
    let epochs = "12";
    let full = dir.path().join("full");
    train_ok(&train_args("cnn-small", epochs, &full));

    // Kill -9 the second run as soon as it has finished two epochs.
    let cut = dir.path().join("cut");
    kill_train_when(&train_args("cnn-small", epochs, &cut), &cut, |o| {
        metrics_rows(o) >= 2
    });
    let done = metrics_rows(&cut);
    assert!(done < 12, "killed after {done} epochs");

    let mut args = train_args("cnn-small", epochs, &cut);
    args.push("--resume".into());
    train_ok(&args);
    let a = std::fs::read(full.join("model.safetensors")).unwrap();
    let b = std::fs::read(cut.join("model.safetensors")).unwrap();
    assert!(a == b, "resumed run differs from the uninterrupted one");
    let rows = std::fs::read_to_string(cut.join("metrics.csv")).unwrap();
    let epochs_logged: Vec<&str> = rows
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(
        epochs_logged,
        (1..=12).map(|e| e.to_string()).collect::<Vec<_>>()
    );

    // Resuming a finished run does nothing and says so.
    let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let o = run("train", &refs);
    assert!(o.status.success() && stdout(&o).contains("already complete"));
}

#[test]
fn checkpoint_loads_in_pytorch_with_the_same_logits() {
    let dir = tempfile::tempdir().unwrap();
    for (model, extra) in [
        ("mlp", vec!["--activation", "silu", "--mlp-hidden", "32,16"]),
        ("cnn-small", vec![]),
    ] {
        let out = dir.path().join(model);
        let mut args = train_args(model, "1", &out);
        args.extend(extra.iter().map(|s| s.to_string()));
        train_ok(&args);
        let ckpt = out.join("model.safetensors");
        let (m, meta) = checkpoint::load(&ckpt, Device::Cpu).unwrap();
        assert_eq!(meta.dataset, "digits");
        tch::manual_seed(3);
        let inputs = Tensor::rand([64, 1, 8, 8], (tch::Kind::Float, Device::Cpu));
        let logits = tch::no_grad(|| m.forward_t(&inputs, false));
        let io = dir.path().join(format!("{model}-io.safetensors"));
        checkpoint::write_tensors(&io, &[("inputs".into(), inputs), ("logits".into(), logits)])
            .unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/check_checkpoint.py");
        let o = Command::new(python())
            .arg(script)
            .arg(&ckpt)
            .arg(&io)
            .arg("1e-5")
            .output()
            .unwrap();
        println!("{}", stdout(&o));
        assert!(
            o.status.success(),
            "PyTorch disagrees: {}{}",
            stdout(&o),
            stderr(&o)
        );
    }
}

#[test]
fn every_penalty_variant_trains_and_logs_its_residuals() {
    let dir = tempfile::tempdir().unwrap();
    for (k, flags) in [
        vec!["--stein-order", "first-order", "--stein-mode", "autograd"],
        vec!["--stein-order", "first-order", "--stein-mode", "fd"],
        vec![
            "--stein-order",
            "full",
            "--stein-mode",
            "autograd",
            "--hutchinson-probes",
            "2",
        ],
        vec![
            "--stein-order",
            "full",
            "--stein-mode",
            "fd",
            "--center",
            "global",
        ],
        vec![
            "--stein-order",
            "full",
            "--stein-mode",
            "autograd",
            "--detach-mean",
            "--lambda-warmup-steps",
            "20",
        ],
    ]
    .into_iter()
    .enumerate()
    {
        let out = dir.path().join(format!("v{k}"));
        let mut args = train_args("mlp", "2", &out);
        args.extend(
            // The fitted-Gaussian score on digits is large (near-constant
            // border pixels have tiny variance), so the initial penalty is
            // ~100-300: λ = 0.01 with Adam keeps it comparable to the CE.
            [
                "--activation",
                "silu",
                "--lambda",
                "0.01",
                "--optimizer",
                "adam",
                "--lr",
                "1e-3",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        args.extend(flags.iter().map(|s| s.to_string()));
        train_ok(&args);
        let text = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
        let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
        let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
        let rows: Vec<Vec<f64>> = text
            .lines()
            .skip(1)
            .map(|line| {
                ["penalty", "residual_std", "test_acc"]
                    .iter()
                    .map(|name| line.split(',').nth(col(name)).unwrap().parse().unwrap())
                    .collect()
            })
            .collect();
        assert_eq!(rows.len(), 2, "{flags:?}: one metrics row per epoch");
        for row in &rows {
            let (penalty, std) = (row[0], row[1]);
            assert!(
                penalty.is_finite() && penalty > 0.0,
                "{flags:?}: penalty {penalty}"
            );
            assert!(
                std.is_finite() && std > 0.0,
                "{flags:?}: residual std {std}"
            );
        }
        // Training minimises the penalty: epoch 2's mean is below epoch 1's.
        assert!(
            rows[1][0] < rows[0][0],
            "{flags:?}: penalty did not fall: {} -> {}",
            rows[0][0],
            rows[1][0]
        );
        assert!(rows[1][2] > 0.5, "{flags:?}: test accuracy {}", rows[1][2]);
        let meta = std::fs::read_to_string(out.join("model.json")).unwrap();
        assert!(meta.contains("\"stein_order\"") && meta.contains("\"residual_std\""));
        if flags.contains(&"global") {
            assert!(meta.contains("stein_global_center"));
        }
    }
}

#[test]
fn divergence_stops_training_with_a_clear_error_and_no_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut args = train_args("mlp", "3", &out);
    args.extend(
        ["--lr", "1e6", "--optimizer", "sgd"]
            .iter()
            .map(|s| s.to_string()),
    );
    let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let o = run("train", &refs);
    assert_eq!(
        o.status.code(),
        Some(1),
        "a run with lr 1e6 did not diverge"
    );
    let e = stderr(&o);
    assert!(
        e.contains("diverged in epoch 1") && e.contains("--lr"),
        "{e}"
    );
    assert!(!out.join("model.json").exists() && !out.join("resume.safetensors").exists());
    // Nothing was saved, so the same --out accepts a corrected run.
    let mut fixed = train_args("mlp", "1", &out);
    fixed.extend(["--lr", "0.02"].iter().map(|s| s.to_string()));
    train_ok(&fixed);
    assert!(out.join("model.json").exists());
}

#[test]
fn exit_codes_are_two_for_bad_usage_and_input_and_one_for_a_failed_run() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = dir.path().join("teacher");
    train_ok(&train_args("mlp", "1", &teacher));
    let from = teacher.join("model.safetensors").display().to_string();
    let out = |name: &str| dir.path().join(name).display().to_string();
    let code = |bin: &str, args: &[&str]| run(bin, args).status.code();
    // Bad usage: a flag clap does not know.
    assert_eq!(code("train", &["--no-such-flag"]), Some(2));
    assert_eq!(code("finetune", &["--no-such-flag"]), Some(2));
    // Bad input: a value out of its domain, a checkpoint that is not there.
    let o1 = out("bad-epochs");
    assert_eq!(code("train", &["--epochs", "0", "--out", &o1]), Some(2));
    let o2 = out("no-teacher");
    let missing = dir.path().join("none.safetensors").display().to_string();
    assert_eq!(
        code("finetune", &["--from", &missing, "--out", &o2]),
        Some(2)
    );
    // A failed run: fine-tuning diverges.
    let o3 = out("diverged");
    let args = [
        "--from",
        &from,
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--optimizer",
        "sgd",
        "--lr",
        "1e6",
        "--schedule",
        "constant",
        "--out",
        &o3,
    ];
    let o = run("finetune", &args);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("diverged"), "{}", stderr(&o));
}
