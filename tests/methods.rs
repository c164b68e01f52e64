//! Robust methods end to end on digits (tiny runs): every method × λ ∈ {0, 1}
//! × loss ∈ {kl, se}, AWP, EMA, the ε warm-up (and its resume mid-ramp),
//! `finetune`, and the refusals of bad flags.
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
        e.contains("model mlp → cnn-small") && e.contains("--model"),
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

/// metrics.csv's column `name`, one value per epoch.
/// metrics.csv without its `seconds` column (the only one that may differ
/// between two runs of one seed).
fn metrics_without_seconds(out: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    let k = header.iter().position(|h| *h == "seconds").unwrap();
    text.lines()
        .map(|l| {
            l.split(',')
                .enumerate()
                .filter(|(i, _)| *i != k)
                .map(|(_, c)| c.to_string())
                .collect()
        })
        .collect()
}

#[test]
fn eps_warmup_without_an_attack_or_longer_than_the_run_exits_2_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x");
    for (flags, needle) in [
        (vec!["--eps-warmup-epochs", "1"], "--method standard"),
        (
            vec!["--method", "pgd-at", "--eps-warmup-epochs", "2"],
            "--epochs (1)",
        ),
    ] {
        let a = args(&out, &flags);
        let refs: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
        let o = run("train", &refs);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{flags:?}: {e}");
        assert!(
            e.contains("--eps-warmup-epochs") && e.contains(needle),
            "{flags:?}: {e}"
        );
    }
    assert!(!out.exists() || files_in(&out).is_empty());
}

/// 2 epochs of 45 steps with E = 2: the first epoch's last step attacks at
/// ε·45/90 = ε/2, the second's at ε; without the flag every epoch's
/// train_eps is ε, standard training's 0; `finetune` shares the flag and
/// its refusals.
#[test]
fn eps_warmup_ramps_train_eps_to_eps_at_epoch_e_and_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let ramp = dir.path().join("ramp");
    let pgd = ["--method", "pgd-at", "--epochs", "2"];
    let mut flags = pgd.to_vec();
    flags.extend(["--eps-warmup-epochs", "2"]);
    ok("train", &args(&ramp, &flags));
    let eps = column(&ramp, "train_eps");
    println!("train_eps with E = 2: {eps:?}");
    assert_eq!(eps, vec![0.1, 0.2], "digits ε 0.2, halfway after epoch 1");
    let meta = checkpoint::read_meta(&ramp.join("model.safetensors")).unwrap();
    let h = &meta.hyperparameters;
    assert_eq!(h["config"]["eps_warmup_epochs"], 2);
    assert_eq!(h["resolved"]["eps_warmup_steps"], 90);
    assert_eq!(h["resolved"]["attack"]["eps"], 0.2, "the configured ε");
    let resume_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ramp.join("resume.json")).unwrap()).unwrap();
    assert_eq!(resume_json["config"]["eps_warmup_epochs"], 2);

    let flat = dir.path().join("flat");
    ok("train", &args(&flat, &pgd));
    assert_eq!(column(&flat, "train_eps"), vec![0.2, 0.2]);
    let meta = checkpoint::read_meta(&flat.join("model.safetensors")).unwrap();
    assert_eq!(meta.hyperparameters["config"]["eps_warmup_epochs"], 0);
    assert_eq!(meta.hyperparameters["resolved"]["eps_warmup_steps"], 0);
    assert!(
        std::fs::read(ramp.join("model.safetensors")).unwrap()
            != std::fs::read(flat.join("model.safetensors")).unwrap(),
        "the warm-up changed nothing"
    );
    let standard = dir.path().join("standard");
    ok("train", &args(&standard, &[]));
    assert_eq!(column(&standard, "train_eps"), vec![0.0]);

    let from = ramp.join("model.safetensors").display().to_string();
    for (flags, needle) in [
        (vec!["--eps-warmup-epochs", "1"], "--method standard"),
        (
            vec!["--method", "trades", "--eps-warmup-epochs", "3"],
            "--epochs (2)",
        ),
    ] {
        let out = dir.path().join("ft").display().to_string();
        let mut a = vec![
            "--from", &from, "--epochs", "2", "--device", "cpu", "--out", &out,
        ];
        a.extend(flags.iter());
        let o = run("finetune", &a);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{flags:?}: {e}");
        assert!(
            e.contains("--eps-warmup-epochs") && e.contains(needle),
            "{flags:?}: {e}"
        );
    }
}

/// A run killed while the ε warm-up ramps and resumed ends with the
/// uninterrupted run's model.safetensors (byte for byte) and metrics.csv
/// (every column but seconds); resuming with another E is refused.
#[test]
fn a_run_resumed_mid_ramp_ends_byte_identical_to_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let flags = [
        "--method",
        "pgd-at",
        "--epochs",
        "8",
        "--eps-warmup-epochs",
        "7",
    ];
    let full = dir.path().join("full");
    ok("train", &args(&full, &flags));

    // Kill -9 a second run as soon as it has saved its first resume state.
    let cut = dir.path().join("cut");
    kill_train_when(&args(&cut, &flags), &cut, |o| {
        o.join("resume.safetensors").exists()
    });
    let state = checkpoint::read_tensors(&cut.join("resume.safetensors")).unwrap();
    let done = state
        .iter()
        .find(|(n, _)| n == "epochs_completed")
        .map(|(_, t)| t.int64_value(&[0]))
        .unwrap();
    println!("killed after {done} epochs (ramp: 7)");
    assert!((1..7).contains(&done), "not mid-ramp: {done} epochs saved");

    // Another warm-up is another run: refused by name.
    let mut other = args(&cut, &flags);
    other.extend(["--eps-warmup-epochs".into(), "6".into(), "--resume".into()]);
    let refs: Vec<&str> = other.iter().map(|s| s.as_str()).collect();
    let o = run("train", &refs);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("eps_warmup_epochs"), "{}", stderr(&o));

    let mut resumed = args(&cut, &flags);
    resumed.push("--resume".into());
    ok("train", &resumed);
    let a = std::fs::read(full.join("model.safetensors")).unwrap();
    let b = std::fs::read(cut.join("model.safetensors")).unwrap();
    assert!(a == b, "resumed run differs from the uninterrupted one");
    assert_eq!(
        metrics_without_seconds(&full),
        metrics_without_seconds(&cut)
    );
    let eps = column(&cut, "train_eps");
    assert!(
        eps[..6].iter().all(|&e| e < 0.2) && eps[6..] == [0.2, 0.2],
        "{eps:?}"
    );
}
