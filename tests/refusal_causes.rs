//! Refusals that name the real cause and only flags the user gave:
//!
//! - `finetune --from` a checkpoint whose model differs from the run's in a
//!   property no flag sets (here: 100 outputs on 10-class digits) names that
//!   property with both values and the data-set fix, and suggests dropping
//!   only the model flags actually given;
//! - `train`/`finetune` with a robust method (pgd-at, trades, mart, with or
//!   without AWP) and `--attack-steps 0` is refused (exit 2) instead of
//!   being recorded as robust training on clean inputs.
mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

const CPU: [&str; 4] = ["--device", "cpu", "--threads", "1"];

fn run_args(bin: &str, args: &[&str], out: &Path) -> Output {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(CPU);
    let all = flags_with_out(&all, out, &[]);
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    run(bin, &refs)
}

/// A 1-epoch digits cnn-small written by `train` (once per test binary).
fn trained() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = tempfile::tempdir().unwrap().keep().join("cnn");
        let args = [
            "--dataset",
            "digits",
            "--model",
            "cnn-small",
            "--epochs",
            "1",
            "--seed",
            "7",
        ];
        let o = run_args("train", &args, &out);
        assert!(o.status.success(), "train failed: {}", stderr(&o));
        out
    })
}

/// A copy of the trained checkpoint in `dir` whose sidecar and last layer
/// say 100 outputs. Returns its weights' path.
fn hundred_outputs(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let src = trained().join(taser::layout::MODEL_WEIGHTS);
    let dst = dir.join(taser::layout::MODEL_WEIGHTS);
    let script = "import sys, json, torch\n\
        from safetensors.torch import load_file, save_file\n\
        src, dst, ssrc, sdst = sys.argv[1:5]\n\
        meta = json.load(open(ssrc))\n\
        assert meta['model']['num_outputs'] == 10\n\
        meta['model']['num_outputs'] = 100\n\
        json.dump(meta, open(sdst, 'w'))\n\
        t = load_file(src)\n\
        w = sorted(k for k in t if k.endswith('weight') and t[k].dim() == 2)[-1]\n\
        b = w[:-len('weight')] + 'bias'\n\
        t[w] = torch.zeros(100, t[w].shape[1])\n\
        t[b] = torch.zeros(100)\n\
        save_file(t, dst)\n";
    let o = std::process::Command::new(python())
        .args(["-c", script])
        .arg(&src)
        .arg(&dst)
        .arg(taser::checkpoint::sidecar_path(&src))
        .arg(taser::checkpoint::sidecar_path(&dst))
        .output()
        .unwrap();
    assert!(o.status.success(), "python: {}", stderr(&o));
    dst
}

/// Runs `bin` with `args`, expects exit 2, every text of `expect` and none
/// of `absent` on stderr, and no `--out` left behind. Returns stderr.
fn refused(bin: &str, args: &[&str], out: &Path, expect: &[&str], absent: &[&str]) -> String {
    let o = run_args(bin, args, out);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{bin} {args:?}: {err}");
    for e in expect {
        assert!(err.contains(e), "{bin} {args:?}: `{e}` not in: {err}");
    }
    for a in absent {
        assert!(!err.contains(a), "{bin} {args:?}: `{a}` in: {err}");
    }
    assert!(!out.exists(), "{bin} {args:?} left {}", out.display());
    err
}

#[test]
fn a_checkpoint_with_another_class_count_is_refused_naming_the_count_not_unused_flags() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = hundred_outputs(&dir.path().join("c100"));
    let ckpt = ckpt.to_str().unwrap();
    let base = ["--from", ckpt, "--epochs", "1"];
    // No model flag given: the message names the outputs, 100 → 10, and
    // the data-set fix, and suggests no flag the user did not pass.
    refused(
        "finetune",
        &base,
        &dir.path().join("ft0"),
        &[
            "outputs (classes) 100 → 10",
            "use a checkpoint trained on digits",
        ],
        &["--model", "--activation", "--mlp-hidden", "not cnn-small"],
    );
    // A given --activation that differs too: both named, only that flag
    // suggested.
    let mut args = base.to_vec();
    args.extend(["--activation", "tanh"]);
    refused(
        "finetune",
        &args,
        &dir.path().join("ft1"),
        &[
            "activation relu → tanh",
            "outputs (classes) 100 → 10",
            "leave --activation out",
        ],
        &["--model", "--mlp-hidden"],
    );
}

#[test]
fn a_robust_method_with_zero_attack_steps_is_refused_by_train_and_finetune() {
    let dir = tempfile::tempdir().unwrap();
    let methods = [
        ("pgd-at", false),
        ("trades", false),
        ("mart", false),
        ("pgd-at", true),
    ];
    for (i, (method, awp)) in methods.into_iter().enumerate() {
        let mut args = vec!["--dataset", "digits", "--model", "mlp", "--epochs", "1"];
        args.extend(["--method", method, "--attack-steps", "0"]);
        if awp {
            args.push("--awp");
        }
        let named = format!("--method {method}");
        let expect = ["--attack-steps", named.as_str(), "--method standard"];
        refused(
            "train",
            &args,
            &dir.path().join(format!("t{i}")),
            &expect,
            &[],
        );
    }
    let ckpt = trained().join(taser::layout::MODEL_WEIGHTS);
    let args = [
        "--from",
        ckpt.to_str().unwrap(),
        "--epochs",
        "1",
        "--method",
        "trades",
        "--attack-steps",
        "0",
    ];
    let expect = ["--attack-steps", "--method trades", "--method standard"];
    refused("finetune", &args, &dir.path().join("ft"), &expect, &[]);
    // Without a training attack the step count is unused: accepted.
    let args = [
        "--dataset",
        "digits",
        "--model",
        "mlp",
        "--epochs",
        "1",
        "--attack-steps",
        "0",
    ];
    let o = run_args("train", &args, &dir.path().join("std"));
    assert!(
        o.status.success(),
        "train --method standard: {}",
        stderr(&o)
    );
}
