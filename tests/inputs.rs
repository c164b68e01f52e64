//! What the binaries read is what they say they read:
//!
//! - a training run resumed on other data (another `--data-dir` with the
//!   same counts) or with another score file at the same path is refused,
//!   naming each changed fingerprint (saved → now) and the fix;
//! - a checkpoint whose sidecar does not describe its tensors (model.json's
//!   activation edited, weights replaced under an unchanged sidecar) is
//!   refused by `attack` and `finetune`, naming both values, and a resumed
//!   evaluation is refused when the checkpoint's architecture changed;
//! - every attribute of an input file is checked at load: a score file's
//!   `c_t` of 0 or NaN (set with h5py) is refused by `train --scores
//!   --score-normalise`, naming the file, the attribute and the value.
mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Output;
use taser::data::cifar::{write_synthetic, Variant};

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn run_owned(bin: &str, args: &[String]) -> Output {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    run(bin, &refs)
}

fn ok(bin: &str, args: &[String]) -> Output {
    let o = run_owned(bin, args);
    assert!(o.status.success(), "{bin} failed: {}", stderr(&o));
    o
}

/// Runs `bin` and asserts exit code 2 and that stderr holds every `want`.
fn refused(bin: &str, args: &[String], want: &[&str]) -> String {
    let o = run_owned(bin, args);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{bin}: {e}");
    for w in want {
        assert!(e.contains(w), "{bin}: `{w}` missing from: {e}");
    }
    e
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// `train` flags of a 1-epoch mlp on the synthetic CIFAR-10 in `data`.
fn cifar_train(data: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut v = strings(&[
        "--dataset",
        "cifar10",
        "--model",
        "mlp",
        "--mlp-hidden",
        "16",
        "--epochs",
        "1",
        "--augment",
        "none",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--data-dir",
        &path(data),
        "--out",
        &path(out),
    ]);
    v.extend(strings(extra));
    v
}

/// Removes a finished run's final checkpoint, as if it had been killed
/// after saving its last epoch: `--resume` then finishes it from the
/// resume state.
fn as_if_killed(out: &Path) {
    for f in ["model.safetensors", "model.json"] {
        std::fs::remove_file(out.join(f)).unwrap();
    }
}

#[test]
fn a_resume_on_other_data_or_another_score_file_is_refused_naming_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    // Same counts, other images and labels.
    write_synthetic(&a, Variant::Cifar10, 60, 20, 0).unwrap();
    write_synthetic(&b, Variant::Cifar10, 60, 20, 1).unwrap();
    let fingerprint = |d: &Path| {
        taser::data::load(taser::data::DatasetName::Cifar10, d, 0)
            .unwrap()
            .train
            .fingerprint()
    };
    let run_dir = dir.path().join("run");
    ok("train", &cifar_train(&a, &run_dir, &[]));
    as_if_killed(&run_dir);
    let e = refused(
        "train",
        &cifar_train(&b, &run_dir, &["--resume"]),
        &["train.inputs", "other inputs", "--data-dir"],
    );
    let change = format!("\"{}\" → \"{}\"", fingerprint(&a), fingerprint(&b));
    assert!(e.contains(&change), "{change} missing from: {e}");
    assert!(
        !run_dir.join("model.json").exists(),
        "a refused resume wrote a checkpoint"
    );
    // The same data resumes.
    ok("train", &cifar_train(&a, &run_dir, &["--resume"]));

    // A score file recomputed at the same path (another source, valid for
    // the same data) is another input.
    let h5 = |name: &str| dir.path().join(name);
    for (source, file) in [("gaussian-std", "std.h5"), ("gaussian-fit", "fit.h5")] {
        ok(
            "score-precompute",
            &strings(&[
                "--dataset",
                "cifar10",
                "--data-dir",
                &path(&a),
                "--source",
                source,
                "--device",
                "cpu",
                "--out",
                &path(&h5(file)),
            ]),
        );
    }
    std::fs::copy(h5("std.h5"), h5("scores.h5")).unwrap();
    let scored = dir.path().join("scored");
    let flags = ["--lambda", "0.01", "--scores", &path(&h5("scores.h5"))];
    ok("train", &cifar_train(&a, &scored, &flags));
    as_if_killed(&scored);
    std::fs::copy(h5("fit.h5"), h5("scores.h5")).unwrap();
    let mut resume = flags.to_vec();
    resume.push("--resume");
    let e = refused(
        "train",
        &cifar_train(&a, &scored, &resume),
        &["score_file", "--scores"],
    );
    let sha = |f: &str| taser::checkpoint::file_sha256(&h5(f)).unwrap();
    let change = format!("\"{}\" → \"{}\"", sha("std.h5"), sha("fit.h5"));
    assert!(e.contains(&change), "{change} missing from: {e}");
}

/// Sets root attribute `name` of the HDF5 file `h5` to the Python
/// expression `value` with h5py.
fn set_attribute(h5: &Path, name: &str, value: &str) {
    let script = format!(
        "import sys, h5py\nwith h5py.File(sys.argv[1], 'a') as f:\n    f.attrs['{name}'] = {value}\n"
    );
    let o = std::process::Command::new(python())
        .args(["-c", &script])
        .arg(h5)
        .output()
        .unwrap();
    assert!(o.status.success(), "python: {}", stderr(&o));
}

#[test]
fn a_score_file_whose_c_t_is_zero_or_nan_is_refused_naming_file_attribute_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let intact = dir.path().join("intact.h5");
    ok(
        "score-precompute",
        &strings(&[
            "--source",
            "gaussian-std",
            "--device",
            "cpu",
            "--out",
            &path(&intact),
        ]),
    );
    let train = |h5: &Path, out: &str| {
        strings(&[
            "--model",
            "mlp",
            "--epochs",
            "1",
            "--lambda",
            "0.01",
            "--optimizer",
            "adam",
            "--lr",
            "1e-3",
            "--score-normalise",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--scores",
            &path(h5),
            "--out",
            &path(&dir.path().join(out)),
        ])
    };
    for (i, (value, shown)) in [("0.0", "`c_t` = 0 "), ("float('nan')", "`c_t` = NaN ")]
        .into_iter()
        .enumerate()
    {
        let h5: PathBuf = dir.path().join(format!("edited{i}.h5"));
        std::fs::copy(&intact, &h5).unwrap();
        set_attribute(&h5, "c_t", value);
        let e = refused(
            "train",
            &train(&h5, &format!("run{i}")),
            &[&format!("edited{i}.h5"), shown, "score-precompute"],
        );
        assert!(!e.contains("--lr"), "blames the learning rate: {e}");
        assert!(!dir.path().join(format!("run{i}")).exists());
    }
    ok("train", &train(&intact, "intact"));
}

/// `train` flags of a digits mlp (relu) trained `epochs` epochs with `seed`.
fn digits_mlp(out: &Path, seed: &str, epochs: &str) -> Vec<String> {
    strings(&[
        "--dataset",
        "digits",
        "--model",
        "mlp",
        "--mlp-hidden",
        "32",
        "--epochs",
        epochs,
        "--seed",
        seed,
        "--device",
        "cpu",
        "--threads",
        "1",
        "--out",
        &path(out),
    ])
}

/// `attack` flags: `attacks` at L∞ ε = 0.2 on `n_eval` points.
fn attack_args(ckpt: &Path, out: &Path, attacks: &str, n_eval: &str) -> Vec<String> {
    strings(&[
        "--checkpoint",
        &path(ckpt),
        "--attacks",
        attacks,
        "--eps",
        "0.2",
        "--n-eval",
        n_eval,
        "--device",
        "cpu",
        "--threads",
        "1",
        "--out",
        &path(out),
    ])
}

/// Rewrites the activation of the sidecar of `ckpt` (everywhere it is
/// recorded) to `to`.
fn edit_activation(ckpt: &Path, to: &str) {
    let side = taser::checkpoint::sidecar_path(ckpt);
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&side).unwrap()).unwrap();
    v["model"]["activation"] = to.into();
    v["hyperparameters"]["config"]["activation"] = to.into();
    std::fs::write(&side, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

#[test]
fn a_sidecar_that_does_not_describe_its_tensors_is_refused_naming_both_values() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    ok("train", &digits_mlp(&a, "7", "1"));
    ok("train", &digits_mlp(&b, "8", "1"));
    let ckpt = a.join("model.safetensors");
    let intact = std::fs::read(taser::checkpoint::sidecar_path(&ckpt)).unwrap();

    // relu → silu in model.json: the tensors still fit.
    edit_activation(&ckpt, "silu");
    let want = ["model.json", "model.activation: \"relu\" → \"silu\""];
    refused(
        "attack",
        &attack_args(&ckpt, &dir.path().join("e1"), "pgd5", "30"),
        &want,
    );
    let ft = strings(&[
        "--from",
        &path(&ckpt),
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--out",
        &path(&dir.path().join("ft")),
    ]);
    refused("finetune", &ft, &want);
    std::fs::write(taser::checkpoint::sidecar_path(&ckpt), &intact).unwrap();
    ok(
        "attack",
        &attack_args(&ckpt, &dir.path().join("e2"), "pgd5", "30"),
    );

    // Other weights (same architecture) under the unchanged sidecar.
    std::fs::copy(b.join("model.safetensors"), &ckpt).unwrap();
    let now = taser::checkpoint::file_sha256(&ckpt).unwrap();
    let e = refused(
        "attack",
        &attack_args(&ckpt, &dir.path().join("e3"), "pgd5", "30"),
        &["weights_sha256", &now],
    );
    let written: serde_json::Value = serde_json::from_slice(&intact).unwrap();
    let was = written["weights_sha256"].as_str().unwrap();
    assert!(e.contains(was) && was != now, "{e}");
}

#[test]
fn a_resumed_evaluation_of_a_checkpoint_read_as_another_architecture_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("a");
    // Trained well enough that relu and silu agree on the 10 points'
    // clean predictions: the old check of clean predictions does not notice.
    ok("train", &digits_mlp(&run_dir, "7", "5"));
    // A checkpoint as written before the binding: weights without header
    // metadata, a sidecar without `weights_sha256`. It still loads (with a
    // warning), and its sidecar could be edited between two runs.
    let ckpt = run_dir.join("model.safetensors");
    let script = "import sys\nfrom safetensors.torch import load_file, save_file\n\
                  save_file(load_file(sys.argv[1]), sys.argv[1])\n";
    let o = std::process::Command::new(python())
        .args(["-c", script])
        .arg(&ckpt)
        .output()
        .unwrap();
    assert!(o.status.success(), "python: {}", stderr(&o));
    let side = taser::checkpoint::sidecar_path(&ckpt);
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&side).unwrap()).unwrap();
    v.as_object_mut().unwrap().remove("weights_sha256");
    std::fs::write(&side, v.to_string()).unwrap();

    let eval = dir.path().join("eval");
    let mut first = attack_args(&ckpt, &eval, "pgd1,pgd2", "10");
    first.extend(strings(&["--stop-after", "1"]));
    let o = ok("attack", &first);
    edit_activation(&ckpt, "silu");
    refused(
        "attack",
        &attack_args(&ckpt, &eval, "pgd1,pgd2", "10"),
        &["--out", "model.activation: \"relu\" → \"silu\""],
    );
    assert!(
        !eval.join("per_sample.csv").exists(),
        "the evaluation mixed two models"
    );
    assert!(stderr(&o).contains("no binding"), "{}", stderr(&o));
}

#[test]
fn a_grid_with_a_nan_or_infinite_number_is_refused_naming_key_line_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let grid = dir.path().join("g.toml");
    let head = "name = \"g\"\nsteps = [\"train\"]\n[train]\nepochs = 1\n";
    for (tail, want) in [
        (
            "lr = nan\n",
            "line 5, key `train.lr`: NaN is not a finite number",
        ),
        (
            "[axes]\nlambda = [0.1, inf]\n",
            "line 6, key `axes.lambda`: inf",
        ),
        (
            "[axes]\ntaser = [{ lambda = -inf }]\n",
            "key `axes.taser.lambda`: -inf",
        ),
    ] {
        std::fs::write(&grid, format!("{head}{tail}")).unwrap();
        refused(
            "sweep",
            &strings(&["plan", &path(&grid)]),
            &["g.toml", want],
        );
    }
    std::fs::write(&grid, format!("{head}lr = 0.5\n")).unwrap();
    ok("sweep", &strings(&["plan", &path(&grid)]));
}
