//! Validation and best-checkpoint selection (`--val-size`, `--select`) on
//! digits: model-best is the best epoch's weights, bit for bit, its sidecar
//! names the epoch, `--resume` keeps the best so far, and `attack` reads it.
mod common;
use common::*;
use std::path::Path;
use std::process::Command;
use taser::checkpoint;
use tch::Device;

/// A run whose validation PGD-10 accuracy (ε = 0.1) peaks at epoch 9 of 12:
/// standard training with a constant learning rate (so that a run of
/// fewer epochs follows the same path).
fn args(out: &Path, epochs: usize, extra: &[&str]) -> Vec<String> {
    let epochs = epochs.to_string();
    flags_with_out(
        &[
            "--dataset",
            "digits",
            "--model",
            "mlp",
            "--mlp-hidden",
            "64",
            "--epochs",
            &epochs,
            "--seed",
            "7",
            "--device",
            "cpu",
            "--schedule",
            "constant",
            "--eps",
            "0.1",
            "--val-size",
            "300",
        ],
        out,
        extra,
    )
}

fn train_ok(args: &[String]) {
    let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let o = run("train", &refs);
    assert!(o.status.success(), "train failed: {}", stderr(&o));
}

fn same_weights(a: &Path, b: &Path) -> bool {
    let (ma, _) = checkpoint::load(a, Device::Cpu).unwrap();
    let (mb, _) = checkpoint::load(b, Device::Cpu).unwrap();
    checkpoint::model_tensors(&ma)
        .iter()
        .zip(checkpoint::model_tensors(&mb).iter())
        .all(|((_, ta), (_, tb))| ta.equal(tb))
}

fn best_epoch(weights: &Path) -> u64 {
    let meta = checkpoint::read_meta(weights).unwrap();
    meta.hyperparameters["validation"]["best_epoch"]
        .as_u64()
        .unwrap()
}

#[test]
fn model_best_is_the_peak_epochs_weights_and_resume_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full");
    train_ok(&args(&full, 12, &["--select", "best"]));
    let robust = column(&full, "val_robust_acc");
    assert_eq!(robust.len(), 12);
    // The premise: the peak (earliest on ties) is before the last epoch.
    let peak = (0..12).fold(0, |b, e| if robust[e] > robust[b] { e } else { b }) + 1;
    assert!(
        peak < 12,
        "validation robustness peaks at the last epoch: {robust:?}"
    );
    let best = full.join("model-best.safetensors");
    assert_eq!(best_epoch(&best), peak as u64);
    assert_eq!(checkpoint::read_meta(&best).unwrap().epochs_completed, peak);
    // --select best: model.safetensors is the best epoch's, the last one
    // is kept beside it, and they differ.
    assert!(same_weights(&best, &full.join("model.safetensors")));
    assert!(!same_weights(&best, &full.join("model-last.safetensors")));
    // Bit-identical to a run stopped at the peak.
    let stopped = dir.path().join("stopped");
    train_ok(&args(&stopped, peak, &[]));
    assert!(same_weights(&best, &stopped.join("model.safetensors")));

    // Kill a second run after the peak, resume it: the best so far stays.
    let cut = dir.path().join("cut");
    kill_train_when(&args(&cut, 12, &["--select", "best"]), &cut, |o| {
        metrics_rows(o) >= peak
    });
    let mut resumed = args(&cut, 12, &["--select", "best"]);
    resumed.push("--resume".into());
    train_ok(&resumed);
    let cut_best = cut.join("model-best.safetensors");
    assert_eq!(best_epoch(&cut_best), peak as u64);
    assert!(same_weights(&best, &cut_best));

    // attack reads model-best (its sidecar model-best.json).
    let eval = dir.path().join("eval");
    let (b, e) = (best.display().to_string(), eval.display().to_string());
    let o = run(
        "attack",
        &[
            "--checkpoint",
            &b,
            "--eps",
            "0.1",
            "--attacks",
            "pgd5",
            "--n-eval",
            "50",
            "--device",
            "cpu",
            "--out",
            &e,
        ],
    );
    assert!(o.status.success(), "attack on model-best: {}", stderr(&o));
}

#[test]
fn bad_validation_flags_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    for (extra, flag) in [
        (vec!["--val-attack", "fgsm"], "--val-attack"),
        (vec!["--val-size", "5000"], "--val-size"),
        (vec!["--val-every", "0"], "--val-every"),
        (
            vec!["--lambda", "1", "--scores", "/nonexistent/scores.h5"],
            "--val-size",
        ),
    ] {
        let a = args(&dir.path().join(flag), 1, &extra);
        let refs: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
        let o = run("train", &refs);
        assert!(
            !o.status.success() && stderr(&o).contains(flag),
            "{extra:?}: {}",
            stderr(&o)
        );
    }
    let mut a = args(&dir.path().join("sel"), 1, &["--select", "best"]);
    let k = a.iter().position(|s| s == "--val-size").unwrap();
    a[k + 1] = "0".into();
    let refs: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
    assert!(stderr(&run("train", &refs)).contains("--select"));
}

/// A validation split is refused only with a score file (indexed by the
/// whole training split): ℓ2, the gradient-norm control and the TASER
/// penalty on an analytic score train with one, and record the penalty.
#[test]
fn penalties_without_a_score_file_train_with_a_validation_split() {
    let dir = tempfile::tempdir().unwrap();
    for reg in [
        ["--reg", "l2", "--lambda", "0.1"],
        ["--reg", "grad-norm", "--lambda", "0.1"],
        ["--score-source", "gaussian-std", "--lambda", "0.01"],
    ] {
        let out = dir.path().join(reg[1]);
        train_ok(&args(&out, 1, &reg));
        let meta = checkpoint::read_meta(&out.join("model.safetensors")).unwrap();
        let config = meta.hyperparameters["config"].to_string();
        let lambda = format!("\"lambda\":{}", reg[3]);
        assert!(config.contains(&lambda), "{reg:?}: {config}");
        assert!(
            out.join("model-best.safetensors").exists(),
            "{reg:?}: no model-best"
        );
    }
}

/// Writes an extra set with h5py: `n` images, pixels `scale`·U[0,1).
fn write_extra(path: &Path, layout: &str, scale: f64) {
    let script = format!(
        "import h5py, numpy as np\n\
         r = np.random.default_rng(0)\n\
         with h5py.File('{}', 'w') as f:\n\
         \x20   if '{layout}' == 'uint8': f['images'] = r.integers(0, 256, (300, 8, 8, 1)).astype('uint8')\n\
         \x20   else: f['images'] = ({scale} * r.random((300, 1, 8, 8))).astype('float32')\n\
         \x20   f['labels'] = r.integers(0, 10, 300).astype('int64')\n",
        path.display()
    );
    let o = Command::new(python())
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn extra_data_written_by_h5py_is_mixed_in_and_bad_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for layout in ["float32", "uint8"] {
        let file = dir.path().join(format!("{layout}.h5"));
        write_extra(&file, layout, 1.0);
        let out = dir.path().join(layout);
        let f = file.display().to_string();
        train_ok(&args(
            &out,
            1,
            &[
                "--method",
                "trades",
                "--loss",
                "se",
                "--extra-data",
                &f,
                "--batch-size",
                "20",
            ],
        ));
        let meta = checkpoint::read_meta(&out.join("model.safetensors")).unwrap();
        let extra = &meta.hyperparameters["extra_data"];
        assert_eq!(extra["size"], 300);
        assert_eq!(extra["original_per_batch"], 6, "round(0.3·20)");
    }
    let bad = dir.path().join("bright.h5");
    write_extra(&bad, "float32", 255.0);
    let b = bad.display().to_string();
    for (extra, needle) in [
        (vec!["--extra-data", b.as_str()], "[0, 1]"),
        (vec!["--extra-data", "/nonexistent.h5"], "h5py"),
    ] {
        let a = args(&dir.path().join("bad"), 1, &extra);
        let refs: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
        let o = run("train", &refs);
        assert!(
            !o.status.success() && stderr(&o).contains(needle),
            "{}",
            stderr(&o)
        );
    }
}
