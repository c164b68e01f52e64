//! Robust methods end to end on digits (tiny runs): every method × λ ∈ {0, 1}
//! × loss ∈ {kl, se}, AWP, EMA, `finetune`, and the refusals of bad flags.
mod common;
use common::*;
use std::path::Path;
use taser::checkpoint;
use taser::data::{self, DatasetName};
use taser::train::method::kl_div;
use tch::{Device, Kind};

fn args(out: &Path, extra: &[&str]) -> Vec<String> {
    flags_with_out(
        &[
            "--dataset",
            "digits",
            "--model",
            "mlp",
            "--mlp-hidden",
            "64",
            "--epochs",
            "1",
            "--seed",
            "3",
            "--device",
            "cpu",
            "--optimizer",
            "adam",
            "--lr",
            "1e-3",
            "--attack-steps",
            "3",
        ],
        out,
        extra,
    )
}

fn ok(bin: &str, args: &[String]) -> String {
    let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let o = run(bin, &refs);
    assert!(o.status.success(), "{bin} {args:?} failed: {}", stderr(&o));
    stdout(&o)
}

fn fails(bin: &str, args: &[String]) -> String {
    let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let o = run(bin, &refs);
    assert!(!o.status.success(), "{bin} {args:?} should have failed");
    stderr(&o)
}

fn metric(stdout: &str, key: &str) -> f64 {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in {stdout}"))
        .parse()
        .unwrap()
}

#[test]
fn every_method_with_and_without_the_penalty_and_both_losses_runs() {
    let dir = tempfile::tempdir().unwrap();
    for method in ["standard", "pgd-at", "trades", "mart"] {
        for lambda in ["0", "1"] {
            for loss in ["kl", "se"] {
                let out = dir.path().join(format!("{method}-{lambda}-{loss}"));
                let text = ok(
                    "train",
                    &args(
                        &out,
                        &["--method", method, "--lambda", lambda, "--loss", loss],
                    ),
                );
                let loss_value = metric(&text, "train_loss");
                assert!(loss_value.is_finite() && loss_value > 0.0, "{text}");
                if lambda == "1" {
                    assert!(metric(&text, "penalty").is_finite(), "{text}");
                }
                let meta = checkpoint::read_meta(&out.join("model.safetensors")).unwrap();
                let resolved = &meta.hyperparameters["resolved"];
                assert_eq!(resolved["loss"], loss);
                if method != "standard" {
                    assert_eq!(resolved["attack"]["eps"], 0.2, "digits default ε");
                    assert_eq!(resolved["attack"]["steps"], 3);
                }
            }
        }
    }
}

#[test]
fn every_score_loss_trains_pgd_at_and_trades_and_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    for loss in ["l1", "l2", "linf", "js", "js-dist", "l1-sq"] {
        for method in ["pgd-at", "trades"] {
            let out = dir.path().join(format!("{method}-{loss}"));
            let text = ok(
                "train",
                &args(
                    &out,
                    &["--method", method, "--loss", loss, "--clip", "0.01"],
                ),
            );
            let loss_value = metric(&text, "train_loss");
            assert!(loss_value.is_finite() && loss_value > 0.0, "{text}");
            let meta = checkpoint::read_meta(&out.join("model.safetensors")).unwrap();
            assert_eq!(meta.hyperparameters["resolved"]["loss"], loss);
        }
    }
}

#[test]
fn awp_and_ema_run_and_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    for method in ["pgd-at", "trades", "mart"] {
        let out = dir.path().join(method);
        ok(
            "train",
            &args(&out, &["--method", method, "--awp", "--awp-warmup", "0"]),
        );
        let meta = checkpoint::read_meta(&out.join("model.safetensors")).unwrap();
        assert_eq!(meta.hyperparameters["resolved"]["awp_gamma"], 0.005);
    }
    let out = dir.path().join("ema");
    let text = ok("train", &args(&out, &["--ema-tau", "0.9", "--epochs", "2"]));
    assert!(metric(&text, "test_acc") > 0.5, "{text}");
    let meta = checkpoint::read_meta(&out.join("model.safetensors")).unwrap();
    assert_eq!(meta.hyperparameters["weights"], "ema");
    // Resume restores the average too: a resumed 2-epoch run ends with the
    // same averaged weights as the uninterrupted one.
    let cut = dir.path().join("ema-cut");
    ok(
        "train",
        &args(
            &cut,
            &[
                "--ema-tau",
                "0.9",
                "--epochs",
                "2",
                "--checkpoint-every",
                "1",
            ],
        ),
    );
    // Without the final checkpoint, --resume rebuilds it from the resume
    // state alone: it must hold the average, not the raw weights.
    std::fs::remove_file(cut.join("model.safetensors")).unwrap();
    std::fs::remove_file(cut.join("model.json")).unwrap();
    ok(
        "train",
        &args(&cut, &["--ema-tau", "0.9", "--epochs", "2", "--resume"]),
    );
    let (a, _) = checkpoint::load(&out.join("model.safetensors"), Device::Cpu).unwrap();
    let (b, _) = checkpoint::load(&cut.join("model.safetensors"), Device::Cpu).unwrap();
    for ((na, ta), (_, tb)) in checkpoint::model_tensors(&a)
        .iter()
        .zip(checkpoint::model_tensors(&b).iter())
    {
        assert!(ta.equal(tb), "{na} differs after resume");
    }
}

/// Mean KL(f_teacher ‖ f_student) on the digits test split.
fn mean_kl(teacher: &Path, student: &Path) -> f64 {
    let (t, meta) = checkpoint::load(teacher, Device::Cpu).unwrap();
    let (s, _) = checkpoint::load(student, Device::Cpu).unwrap();
    let data = data::load(DatasetName::Digits, &data::default_data_dir(), meta.seed).unwrap();
    tch::no_grad(|| {
        kl_div(
            &t.forward_t(&data.test.x, false),
            &s.forward_t(&data.test.x, false),
        )
        .mean(Kind::Double)
        .double_value(&[])
    })
}

#[test]
fn finetune_with_a_large_alpha_stays_near_its_teacher_and_refuses_other_models() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = dir.path().join("teacher");
    ok("train", &args(&teacher, &["--epochs", "5"]));
    let from = teacher.join("model.safetensors");
    let from_s = from.display().to_string();
    let ft = |name: &str, extra: &[&str]| {
        let out = dir.path().join(name);
        let mut a: Vec<String> = [
            "--from", &from_s, "--epochs", "3", "--device", "cpu", "--seed", "3", "--out",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.push(out.display().to_string());
        a.extend(extra.iter().map(|s| s.to_string()));
        (out, a)
    };
    // λ = 0, α = 100: the teacher term dominates.
    let (anchored, a) = ft("anchored", &["--alpha", "100", "--lambda", "0"]);
    ok("finetune", &a);
    // Control: no anchor and a label-smoothed loss with a large step size
    // pull the student away, so the test can tell the two apart.
    let (free, a) = ft(
        "free",
        &["--alpha", "0", "--lr", "1e-2", "--label-smoothing", "0.5"],
    );
    ok("finetune", &a);
    let kl_anchored = mean_kl(&from, &anchored.join("model.safetensors"));
    let kl_free = mean_kl(&from, &free.join("model.safetensors"));
    println!("KL(teacher ‖ student): α = 100: {kl_anchored:.2e}; α = 0: {kl_free:.2e}");
    assert!(
        kl_anchored < 0.01,
        "anchored student drifted: {kl_anchored}"
    );
    assert!(
        kl_free > 10.0 * kl_anchored,
        "control did not drift: {kl_free}"
    );
    let meta = checkpoint::read_meta(&anchored.join("model.safetensors")).unwrap();
    assert_eq!(meta.hyperparameters["teacher_alpha"], 100.0);
    let config = &meta.hyperparameters["config"];
    assert_eq!(config["model"], "mlp", "model taken from the checkpoint");
    assert_eq!(config["optimizer"], "adam");
    assert_eq!(config["schedule"], "warmup-cosine");
    // λ ramps over the 10% warm-up: 0.3 epochs of 45 steps → 13.5 → 14.
    assert_eq!(config["lambda_warmup_steps"], 14);

    let (_, a) = ft("other-model", &["--model", "cnn-small"]);
    let e = fails("finetune", &a);
    assert!(
        e.contains("holds model mlp") && e.contains("--model"),
        "{e}"
    );
    let (_, a) = ft("other-data", &["--dataset", "toy-sin"]);
    let e = fails("finetune", &a);
    assert!(
        e.contains("trained on digits") && e.contains("--dataset"),
        "{e}"
    );
    let (_, a) = ft("neg-alpha", &["--alpha=-1"]);
    assert!(fails("finetune", &a).contains("--alpha"));
}

#[test]
fn bad_method_flags_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x");
    for (flags, needle) in [
        (vec!["--method", "trades", "--beta=-1"], "--beta"),
        (vec!["--method", "pgd-at", "--eps", "0"], "--eps"),
        (vec!["--method", "pgd-at", "--eps=-8/255"], "--eps"),
        (vec!["--method", "pgd-at", "--eps", "8/0"], "--eps"),
        (vec!["--awp"], "--awp"),
        (vec!["--method", "mart", "--clip=-1"], "--clip"),
        (vec!["--label-smoothing", "1"], "--label-smoothing"),
        (vec!["--method", "fgsm"], "--method"),
    ] {
        let e = fails("train", &args(&out, &flags));
        assert!(e.contains(needle), "{flags:?}: {e}");
    }
    assert!(!out.exists() || files_in(&out).is_empty());
    let e = fails(
        "train",
        &args(&out, &["--dataset", "toy-sin", "--method", "pgd-at"]),
    );
    assert!(e.contains("classification"), "{e}");
}
