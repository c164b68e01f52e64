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
