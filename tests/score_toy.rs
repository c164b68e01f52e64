//! SCORE's 1-D toy end to end: `train --dataset toy-score` with each
//! objective, the self-consistency of R_SCORE against R_Madry, the report,
//! and the refusals of flags that do not fit.
mod common;
use common::*;
use std::path::Path;
use taser::checkpoint;
use taser::train::posterior::{data_constant, BinaryDivergence};

fn args(out: &Path, extra: &[&str]) -> Vec<String> {
    flags_with_out(
        &[
            "--dataset",
            "toy-score",
            "--model",
            "mlp",
            "--mlp-hidden",
            "32,32",
            "--activation",
            "tanh",
            "--optimizer",
            "adam",
            "--lr",
            "1e-2",
            "--weight-decay",
            "0",
            "--schedule",
            "constant",
            "--batch-size",
            "60000",
            "--device",
            "cpu",
            "--log-every",
            "1000",
        ],
        out,
        extra,
    )
}

fn train(out: &Path, extra: &[&str]) -> std::collections::BTreeMap<String, f64> {
    let a = args(out, extra);
    let refs: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
    let o = run("train", &refs);
    assert!(o.status.success(), "train {extra:?} failed: {}", stderr(&o));
    checkpoint::read_meta(&out.join("model.safetensors"))
        .unwrap()
        .metrics
}

#[test]
fn score_is_self_consistent_where_madry_is_not_and_the_report_says_so() {
    // SCORE Figure 1 with 60 000 draws and KL, shortened to 150 steps.
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let common = ["--distance", "kl", "--epochs", "150", "--seed", "0"];
    let mut flags = common.to_vec();
    flags.extend(["--objective", "score"]);
    let score = train(&runs.join("score"), &flags);
    let mut flags = common.to_vec();
    flags.extend(["--objective", "madry"]);
    let madry = train(&runs.join("madry"), &flags);
    let (gs, gm) = (score["test_loss"], madry["test_loss"]);
    eprintln!("posterior gap: SCORE {gs:.5}, Madry {gm:.5}");
    assert!(gs < 0.02, "SCORE's mean |p_θ − p_d| is {gs}");
    assert!(gm >= 3.0 * gs, "Madry's gap {gm} is not 3× SCORE's {gs}");
    // Theorem 1's lower bound is tight at p_θ = p_d: R_Madry → C^KL.
    let c_kl = data_constant(BinaryDivergence::Kl, 1.0);
    assert!(
        (score["risk_madry"] - c_kl).abs() < 0.005,
        "SCORE model: R_Madry {} vs C^KL {c_kl}",
        score["risk_madry"]
    );
    // Madry's own risk is lower than the posterior's (it over-smooths).
    assert!(madry["risk_madry"] < c_kl - 0.005);

    let out = dir.path().join("report");
    let o = run(
        "report",
        &[
            "score-toy",
            "--runs",
            runs.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "report failed: {}", stderr(&o));
    assert!(stdout(&o).contains("holds"), "{}", stdout(&o));
    for f in [
        "constants.csv",
        "runs.csv",
        "curves.csv",
        "figure1.svg",
        "figure1.png",
        "summary.md",
    ] {
        assert!(out.join(f).exists(), "{f} missing: {:?}", files_in(&out));
    }
    let rows = std::fs::read_to_string(out.join("runs.csv")).unwrap();
    assert_eq!(rows.lines().count(), 3, "{rows}");
    let curves = std::fs::read_to_string(out.join("curves.csv")).unwrap();
    assert_eq!(curves.lines().count(), 1 + 2 * 601);
}

#[test]
fn pgd_inner_maximum_and_small_training_sets_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pgd");
    let m = train(
        &out,
        &[
            "--objective",
            "score",
            "--distance",
            "se",
            "--inner-max",
            "pgd",
            "--inner-steps",
            "5",
            "--train-size",
            "6",
            "--epochs",
            "20",
        ],
    );
    assert!(m["risk_score"].is_finite() && m["test_loss"].is_finite());
    let meta = checkpoint::read_meta(&out.join("model.safetensors")).unwrap();
    let p = &meta.hyperparameters["posterior"];
    assert_eq!(p["inner_max"], "pgd");
    assert_eq!(p["distance"], "se");
    let rows = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert_eq!(rows.lines().count(), 21, "one row per step");
    assert!(rows.lines().next().unwrap().contains("risk_score"));
}

#[test]
fn flags_that_do_not_fit_toy_score_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x");
    for (flags, needle) in [
        (vec!["--method", "pgd-at"], "--method"),
        (vec!["--lambda", "1"], "--lambda"),
        (vec!["--clip", "0.3"], "--clip"),
        (vec!["--radius", "0"], "--radius"),
        (vec!["--grid-points", "2"], "--grid-points"),
        (vec!["--train-size", "1"], "--train-size"),
        (vec!["--distance", "tv"], "--distance"),
        (vec!["--objective", "trades"], "--objective"),
    ] {
        let a = args(&out, &flags);
        let refs: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
        let o = run("train", &refs);
        assert!(!o.status.success(), "{flags:?} was accepted");
        assert!(stderr(&o).contains(needle), "{flags:?}: {}", stderr(&o));
    }
    // The objectives need the known posterior: refused elsewhere.
    let o = run(
        "train",
        &[
            "--dataset",
            "digits",
            "--objective",
            "score",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("toy-score"), "{}", stderr(&o));
    assert!(files_in(&out).is_empty(), "{:?}", files_in(&out));
    let o = run(
        "report",
        &[
            "score-toy",
            "--runs",
            dir.path().join("none").to_str().unwrap(),
        ],
    );
    assert!(!o.status.success() && stderr(&o).contains("make score-toy"));
}
