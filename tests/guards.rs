//! Issue 14, cases 2–4: what `attack`, `train` and `finetune` refuse, with
//! which exit code and message, and that a refused or failed run leaves no
//! `--out` behind (or leaves an existing one unchanged).
//!
//! - case 2: a checkpoint with a NaN or +Inf weight is refused at load,
//!   naming the tensor (`attack --checkpoint`, `finetune --from`);
//! - case 3: an ε that covers the whole [0,1] input box (L∞ ε ≥ 1, L2 ε ≥
//!   √d) is refused with "did you mean ε/255?" (`attack`, `train`); L∞
//!   ε > 0.5 is warned about;
//! - case 4: subset files are validated in full (empty, duplicate,
//!   non-integer, unknown field) before `--out` is created, and a diverged
//!   fresh run removes the `--out` it created.
mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

/// A 1-epoch digits MLP written by `train` (once per test binary).
fn trained() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let out = dir.join("std");
        let o = run_args(
            "train",
            &[
                "--dataset",
                "digits",
                "--model",
                "mlp",
                "--epochs",
                "1",
                "--seed",
                "7",
                "--device",
                "cpu",
                "--threads",
                "1",
            ],
            &out,
        );
        assert!(o.status.success(), "train failed: {}", stderr(&o));
        out
    })
}

fn weights(run: &Path) -> PathBuf {
    run.join(taser::layout::MODEL_WEIGHTS)
}

fn run_args(bin: &str, args: &[&str], out: &Path) -> Output {
    let all = flags_with_out(args, out, &[]);
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    run(bin, &refs)
}

/// A copy of the trained checkpoint (weights and sidecar) in `dir` whose
/// last layer's weight `w` is edited by the Python statement `edit`, via the
/// venv's safetensors.torch, kept bound to its sidecar as `train` writes
/// it (the header's metadata carried over, the sidecar's `weights_sha256`
/// updated), as weights that became non-finite in training would be.
/// Returns (weights, tensor name).
fn poisoned(dir: &Path, edit: &str) -> (PathBuf, String) {
    std::fs::create_dir_all(dir).unwrap();
    let src = weights(trained());
    let dst = dir.join(taser::layout::MODEL_WEIGHTS);
    let script = format!(
        "import sys, json, hashlib\nfrom safetensors import safe_open\n\
         from safetensors.torch import load_file, save_file\n\
         t = load_file(sys.argv[1])\n\
         meta = safe_open(sys.argv[1], 'pt').metadata()\n\
         name = sorted(k for k in t if k.endswith('weight') and t[k].dim() == 2)[-1]\n\
         w = t[name]\n{edit}\nsave_file(t, sys.argv[2], metadata=meta)\n\
         side = json.load(open(sys.argv[3]))\n\
         side['weights_sha256'] = hashlib.sha256(open(sys.argv[2], 'rb').read()).hexdigest()\n\
         json.dump(side, open(sys.argv[4], 'w'))\nprint(name)\n"
    );
    let o = std::process::Command::new(python())
        .args(["-c", &script])
        .arg(&src)
        .arg(&dst)
        .arg(taser::checkpoint::sidecar_path(&src))
        .arg(taser::checkpoint::sidecar_path(&dst))
        .output()
        .unwrap();
    assert!(o.status.success(), "python: {}", stderr(&o));
    (dst, stdout(&o).trim().to_string())
}

fn attack_flags<'a>(ckpt: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "--checkpoint",
        ckpt,
        "--device",
        "cpu",
        "--threads",
        "1",
        "--n-eval",
        "40",
    ];
    v.extend(extra);
    v
}

/// Runs `bin` with `args` and `--out` = `out` (absent before), expects exit
/// `code` and every text of `expect` on stderr, and that `out` is absent.
fn refused(bin: &str, args: &[&str], out: &Path, code: i32, expect: &[&str]) {
    assert!(!out.exists());
    let o = run_args(bin, args, out);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(code), "{bin} {args:?}: {err}");
    for e in expect {
        assert!(err.contains(e), "{bin} {args:?}: `{e}` not in: {err}");
    }
    assert!(!out.exists(), "{bin} {args:?} left {}", out.display());
}

#[test]
fn non_finite_weights_are_refused_naming_the_tensor_by_attack_and_finetune() {
    let dir = tempfile::tempdir().unwrap();
    for (i, value) in ["nan", "inf"].iter().enumerate() {
        let edit = format!("w[0, 0] = float('{value}')");
        let (ckpt, name) = poisoned(&dir.path().join(format!("bad{i}")), &edit);
        let ckpt = ckpt.display().to_string();
        let expect = [name.as_str(), "non-finite", "model.safetensors"];
        let out = dir.path().join(format!("eval{i}"));
        let args = attack_flags(&ckpt, &["--attacks", "pgd1", "--eps", "0.2"]);
        refused("attack", &args, &out, 2, &expect);
        let out = dir.path().join(format!("ft{i}"));
        let args = [
            "--from",
            &ckpt,
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--threads",
            "1",
        ];
        refused("finetune", &args, &out, 2, &expect);
    }
    // Finite weights whose logits overflow to ±Inf: the attack stops (exit
    // 1) instead of calling class-0 points robust; of its --out only the
    // subset it drew, a finished file, stays, named in the message.
    let (ckpt, _) = poisoned(&dir.path().join("huge"), "w[0, :] = 3e38");
    let ckpt = ckpt.display().to_string();
    let args = attack_flags(&ckpt, &["--attacks", "pgd1", "--eps", "0.2"]);
    let out = dir.path().join("huge-eval");
    let o = run_args("attack", &args, &out);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    for e in ["logits", "not finite", "--lr", "Kept in", "subset.json"] {
        assert!(err.contains(e), "`{e}` not in: {err}");
    }
    assert_eq!(files_in(&out), ["subset.json"]);
}

#[test]
fn eps_on_the_pixel_scale_is_refused_with_a_hint_and_a_large_one_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = weights(trained()).display().to_string();
    let out = |n: &str| dir.path().join(n);
    let a = attack_flags(&ckpt, &["--attacks", "pgd1", "--eps", "8"]);
    refused("attack", &a, &out("a1"), 2, &["--eps", "8/255"]);
    let a = attack_flags(&ckpt, &["--attacks", "pgd1", "--eps", "1"]);
    refused("attack", &a, &out("a2"), 2, &["--eps", "1/255"]);
    // L2 on digits: d = 64, so ε ≥ √64 = 8 covers the box; 7.9 does not.
    let a = attack_flags(&ckpt, &["--attacks", "pgd1", "--norm", "l2", "--eps", "8"]);
    refused("attack", &a, &out("a3"), 2, &["--eps", "√d", "8/255"]);
    let a = attack_flags(&ckpt, &["--attacks", "pgd1", "--eps", "0.6"]);
    let o = run_args("attack", &a, &out("a4"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("warning: --eps 0.6"), "{}", stderr(&o));
    let train = |method: &'static str, eps: &'static str| {
        vec![
            "--dataset",
            "digits",
            "--model",
            "mlp",
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--method",
            method,
            "--eps",
            eps,
        ]
    };
    for method in ["pgd-at", "trades", "mart"] {
        refused(
            "train",
            &train(method, "8"),
            &out(method),
            2,
            &["--eps", "8/255"],
        );
    }
}

#[test]
fn bad_subset_files_and_diverged_runs_leave_no_out_and_an_existing_out_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = weights(trained()).display().to_string();
    // A valid subset to edit: the one `attack` draws.
    let good = dir.path().join("good");
    let a = attack_flags(&ckpt, &["--attacks", "pgd1", "--eps", "0.1"]);
    assert!(run_args("attack", &a, &good).status.success());
    let text = std::fs::read_to_string(good.join(taser::layout::SUBSET)).unwrap();
    let subset: serde_json::Value = serde_json::from_str(&text).unwrap();
    let edited = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut s = subset.clone();
        edit(&mut s);
        s
    };
    let first = subset["indices"][0].clone();
    let cases = [
        (edited(&|s| s["indices"] = serde_json::json!([])), "empty"),
        (
            edited(&|s| {
                s["indices"]
                    .as_array_mut()
                    .unwrap()
                    .insert(0, first.clone())
            }),
            "twice",
        ),
        (
            edited(&|s| s["indices"][0] = serde_json::json!(1.5)),
            "indices",
        ),
        (
            edited(&|s| s["indices"][0] = serde_json::json!(-1)),
            "indices",
        ),
        (
            edited(&|s| s["indices"].as_array_mut().unwrap().push(100000.into())),
            "out of range",
        ),
        (edited(&|s| s["extra"] = serde_json::json!(1)), "extra"),
        (
            edited(&|s| s["split"] = serde_json::json!("train")),
            "split",
        ),
    ];
    for (i, (content, expect)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("subset{i}.json"));
        std::fs::write(&path, content.to_string()).unwrap();
        let p = path.display().to_string();
        let a = attack_flags(
            &ckpt,
            &["--attacks", "pgd1", "--eps", "0.1", "--subset", &p],
        );
        refused(
            "attack",
            &a,
            &dir.path().join(format!("s{i}")),
            2,
            &[expect, "subset"],
        );
        // An --out that exists is left as it was.
        let before = files_in(&good);
        let o = run_args("attack", &a, &good);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert_eq!(files_in(&good), before);
    }
    // Training that diverges on a fresh --out (nested: both folders new).
    let diverge = [
        "--dataset",
        "digits",
        "--model",
        "mlp",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--optimizer",
        "sgd",
        "--lr",
        "1e12",
        "--schedule",
        "constant",
    ];
    refused(
        "train",
        &diverge,
        &dir.path().join("new/run"),
        1,
        &["diverged"],
    );
    assert!(!dir.path().join("new").exists());
    let mut ft = vec!["--from", &ckpt];
    ft.extend(&diverge[4..]);
    refused("finetune", &ft, &dir.path().join("ft"), 1, &["diverged"]);
}

#[test]
fn a_score_file_holding_nan_or_inf_is_refused_by_train_with_no_out_left() {
    let dir = tempfile::tempdir().unwrap();
    let h5 = dir.path().join("scores.h5");
    let h5s = h5.display().to_string();
    let o = run(
        "score-precompute",
        &["--source", "gaussian-std", "--out", &h5s, "--device", "cpu"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    for (i, value) in ["nan", "inf"].iter().enumerate() {
        let script = format!(
            "import sys, h5py\nwith h5py.File(sys.argv[1], 'a') as f:\n    f['score'][3, 0, 0, 0] = float('{value}')\n"
        );
        let o = std::process::Command::new(python())
            .args(["-c", &script, &h5s])
            .output()
            .unwrap();
        assert!(o.status.success(), "python: {}", stderr(&o));
        let args = [
            "--dataset",
            "digits",
            "--model",
            "mlp",
            "--lambda",
            "1",
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--scores",
            &h5s,
        ];
        refused(
            "train",
            &args,
            &dir.path().join(format!("run{i}")),
            2,
            &["scores.h5", "NaN or Inf"],
        );
    }
}
