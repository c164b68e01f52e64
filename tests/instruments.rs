//! The TASER penalty's instruments and controls  through the
//! `train` binary on digits: the diagnostic columns of metrics.csv, the
//! gradient-norm control, the per-epoch global centre, the sidecar's record
//! of the control flags and the rules between them.
mod common;
use common::*;
use std::collections::HashMap;
use std::path::Path;

/// `train` on digits (mlp, silu, Adam) for `epochs` with λ = 0.01 and `extra`.
fn train_args(out: &Path, epochs: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--dataset",
        "digits",
        "--model",
        "mlp",
        "--activation",
        "silu",
        "--epochs",
        epochs,
        "--seed",
        "3",
        "--device",
        "cpu",
        "--optimizer",
        "adam",
        "--lr",
        "1e-3",
        "--lambda",
        "0.01",
        "--out",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(out.display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// metrics.csv's rows as column name → cell (empty cells as "").
fn metrics(out: &Path) -> Vec<HashMap<String, String>> {
    csv_rows(&out.join("metrics.csv"))
}

fn train_ok(out: &Path, epochs: &str, extra: &[&str]) -> Vec<HashMap<String, String>> {
    let args = train_args(out, epochs, extra);
    let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let o = run("train", &refs);
    assert!(o.status.success(), "train {extra:?} failed: {}", stderr(&o));
    metrics(out)
}

fn value(row: &HashMap<String, String>, col: &str) -> f64 {
    let cell = row.get(col).unwrap_or_else(|| panic!("no column {col}"));
    cell.parse()
        .unwrap_or_else(|_| panic!("{col}: {cell:?} is not a number"))
}

const DIAGNOSTICS: [&str; 7] = [
    "grad_norm_mean",
    "probe_mean",
    "penalty_ratio",
    "score_grad_cosine",
    "hutchinson_noise_share",
    "penalty_plain",
    "penalty_unbiased",
];

#[test]
fn the_diagnostic_columns_are_finite_after_one_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("taser");
    let rows = train_ok(&out, "1", &[]);
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    for col in DIAGNOSTICS {
        let v = value(row, col);
        println!("{col} = {v}");
        assert!(v.is_finite(), "{col} = {v}");
    }
    assert!(value(row, "grad_norm_mean") > 0.0);
    assert!(value(row, "penalty_ratio") > 0.0);
    let cos = value(row, "score_grad_cosine");
    assert!((-1.0..=1.0).contains(&cos), "cosine {cos}");
    let share = value(row, "hutchinson_noise_share");
    assert!(share > 0.0 && share < 1.5, "noise share {share}");
    // R₁ ≥ R_K (the centred mean square is convex), so the noise estimate
    // V ≥ 0 and the plain reading never falls below the unbiased one; at
    // K = 1 the plain reading is R₁, and V = share·R₁.
    let (plain, unbiased) = (value(row, "penalty_plain"), value(row, "penalty_unbiased"));
    assert!(plain >= unbiased, "plain {plain} < unbiased {unbiased}");
    assert!((plain - unbiased - share * plain).abs() < 1e-9 * plain.abs().max(1.0));
    // λR / (train_loss + λR), the penalty's share of the total loss, from
    // the row's own columns.
    let weighted = 0.01 * value(row, "penalty");
    let ratio = weighted / (value(row, "train_loss") + weighted);
    assert!(ratio < 1.0);
    assert!((value(row, "penalty_ratio") - ratio).abs() < 1e-9 * ratio);
    assert_eq!(
        row["global_center"], "",
        "no global centre with --center batch"
    );
    let meta = std::fs::read_to_string(out.join("model.json")).unwrap();
    for key in [
        "\"score_permute\": false",
        "\"zero_scores\": false",
        "\"stein_coordinates\": \"pixel\"",
    ] {
        assert!(meta.contains(key), "model.json lacks {key}");
    }
    assert!(meta.contains("\"hutchinson_noise_share\""));

    // λ = 0: the columns stay empty.
    let plain = dir.path().join("plain");
    let rows = train_ok(&plain, "1", &["--lambda", "0"]);
    for col in DIAGNOSTICS {
        assert_eq!(rows[0][col], "", "{col} at λ = 0");
    }
}

#[test]
fn the_controls_train_and_log_what_they_measure() {
    let dir = tempfile::tempdir().unwrap();
    // The gradient penalty: no residual, no score, no noise share.
    let rows = train_ok(&dir.path().join("gn"), "1", &["--reg", "grad-norm"]);
    let row = &rows[0];
    assert!(value(row, "penalty") > 0.0 && value(row, "grad_norm_mean") > 0.0);
    for col in [
        "residual_mean",
        "residual_std",
        "score_grad_cosine",
        "hutchinson_noise_share",
    ] {
        assert_eq!(row[col], "", "grad-norm: {col}");
    }
    // The penalty of grad-norm is mean‖∇m‖² ≥ (mean‖∇m‖)² on other batches:
    // both measure the same gradient, so they are of one order.
    let g = value(row, "grad_norm_mean");
    assert!(value(row, "penalty") > 0.01 * g * g);

    // Zero scores: the Laplacian alone; its noise share is measured, the
    // cosine is not.
    let rows = train_ok(&dir.path().join("zero"), "1", &["--zero-scores"]);
    assert!(value(&rows[0], "hutchinson_noise_share").is_finite());
    assert_eq!(rows[0]["score_grad_cosine"], "");
    let meta = std::fs::read_to_string(dir.path().join("zero/model.json")).unwrap();
    assert!(meta.contains("\"zero_scores\": true"));

    // The unbiased estimator trains and is recorded.
    let rows = train_ok(
        &dir.path().join("unbiased"),
        "1",
        &["--stein-estimator", "unbiased"],
    );
    assert!(value(&rows[0], "penalty").is_finite());
    let meta = std::fs::read_to_string(dir.path().join("unbiased/model.json")).unwrap();
    assert!(meta.contains("\"stein_estimator\": \"unbiased\""));

    // Model coordinates train and are recorded.
    let rows = train_ok(
        &dir.path().join("model"),
        "1",
        &["--stein-coordinates", "model"],
    );
    assert!(value(&rows[0], "penalty").is_finite());
    let meta = std::fs::read_to_string(dir.path().join("model/model.json")).unwrap();
    assert!(meta.contains("\"stein_coordinates\": \"model\""));

    // --center global: a centre per epoch, re-estimated as the model trains.
    let rows = train_ok(&dir.path().join("global"), "2", &["--center", "global"]);
    let (d1, d2) = (
        value(&rows[0], "global_center"),
        value(&rows[1], "global_center"),
    );
    println!("global centre: epoch 1 {d1}, epoch 2 {d2}");
    assert!(d1.is_finite() && d2.is_finite() && d1 != d2);
    let meta = std::fs::read_to_string(dir.path().join("global/model.json")).unwrap();
    assert!(meta.contains("stein_global_center"));
}

#[test]
fn contradictory_control_flags_are_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    for (extra, names) in [
        (vec!["--score-permute"], "--scores"),
        (vec!["--zero-scores", "--reg", "l2"], "--zero-scores"),
        (
            vec!["--zero-scores", "--stein-order", "first-order"],
            "--stein-order",
        ),
        (
            vec!["--reg", "grad-norm", "--score-permute"],
            "--score-permute",
        ),
        (vec!["--zero-scores", "--score-permute"], "--zero-scores"),
        (
            vec![
                "--stein-estimator",
                "unbiased",
                "--stein-order",
                "first-order",
            ],
            "--stein-estimator",
        ),
        (
            vec!["--stein-estimator", "unbiased", "--reg", "grad-norm"],
            "--stein-estimator",
        ),
        (vec!["--zero-scores", "--scores", "x.h5"], "--scores"),
    ] {
        let out = dir.path().join("refused");
        let args = train_args(&out, "1", &extra);
        let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let o = run("train", &refs);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(names), "{extra:?}: {}", stderr(&o));
        assert!(!out.join("model.json").exists() && !out.join("metrics.csv").exists());
    }
}

#[test]
fn a_control_matched_to_tasers_strength_records_the_lambda_it_used() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("matched");
    // train_args sets --lambda 0.01; --lambda-match replaces it.
    let mut args = train_args(&out, "1", &["--reg", "grad-norm", "--lambda-match", "0.01"]);
    let at = args.iter().position(|a| a == "--lambda").unwrap();
    args.drain(at..at + 2);
    let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let o = run("train", &refs);
    assert!(o.status.success(), "{}", stderr(&o));
    let printed = String::from_utf8_lossy(&o.stdout).to_string();
    let line = printed
        .lines()
        .find(|l| l.starts_with("lambda_matched"))
        .unwrap_or_else(|| panic!("no lambda_matched in {printed}"));
    let lambda: f64 = line.split('=').nth(1).unwrap().trim().parse().unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("model.json")).unwrap()).unwrap();
    let m = &meta["hyperparameters"]["strength_match"];
    println!("strength_match {m}");
    assert_eq!(m["lambda0"], 0.01);
    // train prints six significant digits.
    assert!((m["lambda"].as_f64().unwrap() - lambda).abs() < 1e-5 * lambda);
    let lambda = m["lambda"].as_f64().unwrap();
    let (r, p) = (
        m["reference_penalty"].as_f64().unwrap(),
        m["control_penalty"].as_f64().unwrap(),
    );
    assert!((lambda * p - 0.01 * r).abs() < 1e-9 * (0.01 * r));
    assert!(
        lambda > 0.01,
        "grad-norm's penalty is the smaller: λ {lambda}"
    );
    assert_eq!(m["samples"], 1438, "the whole digits training split");
    // The first epoch trained at the matched λ: penalty_ratio = λR / (train_loss + λR).
    let row = &metrics(&out)[0];
    let weighted = lambda * value(row, "penalty");
    let ratio = weighted / (value(row, "train_loss") + weighted);
    assert!((value(row, "penalty_ratio") - ratio).abs() < 1e-9 * ratio);

    // Refusals, before any work.
    for (extra, why) in [
        (vec!["--lambda-match", "0.01"], "add --reg grad-norm"),
        (
            vec![
                "--lambda-match",
                "0.01",
                "--lambda",
                "0.02",
                "--reg",
                "grad-norm",
            ],
            "drop --lambda",
        ),
        (
            vec![
                "--lambda-match",
                "0.01",
                "--zero-scores",
                "--center",
                "global",
            ],
            "--center batch",
        ),
        (vec!["--lambda-match", "0", "--zero-scores"], "> 0"),
    ] {
        let out = dir.path().join("refused");
        let mut args = train_args(&out, "1", &extra);
        let at = args.iter().position(|a| a == "--lambda").unwrap();
        args.drain(at..at + 2);
        let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let o = run("train", &refs);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(why), "{extra:?}: {}", stderr(&o));
        assert!(!out.join("model.json").exists());
    }
}

/// The CSV `path` as rows of column name → cell (empty cells as "").
fn csv_rows(path: &Path) -> Vec<HashMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    lines
        .map(|l| {
            header
                .iter()
                .cloned()
                .zip(l.split(',').map(String::from))
                .collect()
        })
        .collect()
}

#[test]
fn diagnose_takes_a_checkpoint_apart_and_agrees_with_the_strength_match() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    train_ok(&base, "2", &[]);
    let ckpt = base.join("model.safetensors");
    let scores = dir.path().join("gaussian.h5");
    let o = run_line(
        "score-precompute",
        &format!(
            "--dataset digits --source gaussian --device cpu --out {}",
            scores.display()
        ),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let csv = dir.path().join("diagnosis.csv");
    let o = run_line(
        "report",
        &format!(
            "diagnose --checkpoint {} --scores {} --seed 3 --device cpu --out {}",
            ckpt.display(),
            scores.display(),
            csv.display()
        ),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    println!("{}", stdout(&o));
    let rows = csv_rows(&csv);
    assert_eq!(rows.len(), 1);
    let d = &rows[0];
    assert_eq!(d["samples"], "1438", "the whole digits training split");
    // Digits' pixels are multiples of 1/16: the closest pair of different
    // classes is 7/16 apart in L∞, so r = 7/32 and ε/r = 0.2·32/7.
    assert_eq!(value(d, "separation_linf"), 7.0 / 32.0);
    assert!((value(d, "eps_over_r_linf") - 0.2 * 32.0 / 7.0).abs() < 1e-12);
    let (r, plain, share) = (
        value(d, "penalty"),
        value(d, "penalty_plain"),
        value(d, "noise_share"),
    );
    assert!(r > 0.0 && plain > r && share > 0.0 && share < 1.0, "{d:?}");
    assert!((share - (plain - r) / plain).abs() < 1e-9, "{d:?}");
    let g = value(d, "grad_norm_penalty");
    assert!((value(d, "match_grad_norm") - r / g).abs() < 1e-9 * r / g);
    assert!(value(d, "penalty_permuted") > 0.0 && d["penalty_noised"].is_empty());

    // finetune's --lambda-match at the same weights (other probe batches of
    // the same split) matches the plain one-probe penalty: λ ≈ R₁/G.
    let ft = dir.path().join("matched");
    let o = run_line(
        "finetune",
        &format!(
            "--from {} --reg grad-norm --lambda-match 1 --scores {} --epochs 1 --seed 3 \
             --device cpu --out {}",
            ckpt.display(),
            scores.display(),
            ft.display()
        ),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ft.join("model.json")).unwrap()).unwrap();
    let lambda = meta["hyperparameters"]["strength_match"]["lambda"]
        .as_f64()
        .unwrap();
    println!("finetune λ {lambda}, diagnose R₁/G {}", plain / g);
    assert!(
        (lambda / (plain / g) - 1.0).abs() < 0.05,
        "λ {lambda} vs {}",
        plain / g
    );

    // A missing checkpoint: exit 2 naming it, no CSV.
    let missing = dir.path().join("none.safetensors");
    let csv2 = dir.path().join("refused.csv");
    let o = run_line(
        "report",
        &format!(
            "diagnose --checkpoint {} --scores {} --device cpu --out {}",
            missing.display(),
            scores.display(),
            csv2.display()
        ),
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("none.safetensors") && !csv2.exists());
}

#[test]
fn a_lambda_zero_run_with_scores_records_the_instruments_and_trains_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let scores = dir.path().join("gaussian.h5");
    let o = run_line(
        "score-precompute",
        &format!(
            "--dataset digits --source gaussian --device cpu --out {}",
            scores.display()
        ),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let train_at_zero = |name: &str, extra: &[&str]| {
        let out = dir.path().join(name);
        let mut args = train_args(&out, "2", extra);
        let at = args.iter().position(|a| a == "--lambda").unwrap();
        args[at + 1] = "0".into();
        let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let o = run("train", &refs);
        assert!(o.status.success(), "{extra:?}: {}", stderr(&o));
        out
    };
    let plain = train_at_zero("plain", &[]);
    let s = scores.display().to_string();
    let watched = train_at_zero("watched", &["--scores", &s]);
    // The watched penalty never enters the loss: the same weights, bit for bit.
    let weights = |out: &Path| std::fs::read(out.join("model.safetensors")).unwrap();
    assert!(
        weights(&plain) == weights(&watched),
        "the watched run trained other weights"
    );
    let rows = metrics(&watched);
    for row in &rows {
        for col in [
            "grad_norm_mean",
            "score_grad_cosine",
            "penalty_plain",
            "penalty_unbiased",
        ] {
            assert!(value(row, col).is_finite(), "{col} in {row:?}");
        }
        assert!(value(row, "penalty_plain") > value(row, "penalty_unbiased"));
        for col in ["penalty", "penalty_ratio"] {
            assert_eq!(row[col], "", "{col}: no penalty in the loss");
        }
    }
    assert!(metrics(&plain)
        .iter()
        .all(|r| r["penalty_plain"].is_empty()));
    // The sidecar records the score file it read.
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(watched.join("model.json")).unwrap())
            .unwrap();
    assert!(!meta["score_file"].is_null(), "{}", meta["score_file"]);
}

/// The step timed after training (lib/train/timing.rs): the sidecar
/// records `step_seconds` and `penalty_step_overhead` (> 1 with TASER,
/// exactly 1 for a run whose step has no penalty), and the timing leaves
/// the weights and the BatchNorm buffers the run ended with: the
/// checkpoint equals the model of the resume state saved after the last
/// epoch, before the timing (resnet18 has BatchNorm; its run is λ = 0,
/// whose timed step still updates the running statistics).
#[test]
fn the_timed_step_is_recorded_and_leaves_the_final_weights_alone() {
    let dir = tempfile::tempdir().unwrap();
    for (name, model, lambda) in [("taser", "mlp", "0.01"), ("plain", "resnet18", "0")] {
        let out = dir.path().join(name);
        let mut args = train_args(&out, "1", &[]);
        let at = args.iter().position(|a| a == "--lambda").unwrap();
        args[at + 1] = lambda.into();
        let at = args.iter().position(|a| a == "--model").unwrap();
        args[at + 1] = model.into();
        let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let o = run("train", &refs);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("model.json")).unwrap())
                .unwrap();
        let metric = |k: &str| meta["metrics"][k].as_f64().unwrap();
        let (seconds, overhead) = (metric("step_seconds"), metric("penalty_step_overhead"));
        println!("{name}: step {seconds:.4} s, overhead ×{overhead:.3}");
        assert!(seconds > 0.0 && seconds.is_finite());
        if lambda == "0" {
            assert_eq!(overhead, 1.0);
        } else {
            assert!(overhead > 1.0 && overhead.is_finite(), "{overhead}");
        }
        let weights = taser::checkpoint::read_tensors(&out.join("model.safetensors")).unwrap();
        let state: HashMap<String, tch::Tensor> =
            taser::checkpoint::read_tensors(&out.join(taser::layout::RESUME_WEIGHTS))
                .unwrap()
                .into_iter()
                .collect();
        if model == "resnet18" {
            assert!(weights.iter().any(|(k, _)| k.contains("running_mean")));
        }
        for (k, t) in &weights {
            let saved = &state[&format!("model.{k}")];
            assert!(t.equal(saved), "{name}: {k} changed after the last epoch");
        }
    }
}

#[test]
fn penalty_chunk_auto_records_the_chunk_it_chose_and_no_step_timing_skips_the_timing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("auto");
    let args = train_args(
        &out,
        "1",
        &[
            "--penalty-chunk",
            "auto",
            "--no-step-timing",
            "--instrument-batch-size",
            "32",
            "--batch-size",
            "64",
        ],
    );
    let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let o = run("train", &refs);
    assert!(o.status.success(), "{}", stderr(&o));
    let line = stdout(&o)
        .lines()
        .find(|l| l.starts_with("--penalty-chunk auto: "))
        .unwrap_or_else(|| panic!("no auto line in {}", stdout(&o)))
        .to_string();
    println!("{line}");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("model.json")).unwrap()).unwrap();
    let chunk = meta["metrics"]["penalty_chunk"].as_f64().unwrap();
    assert!((1.0..=64.0).contains(&chunk), "{chunk}");
    assert!(line.contains(&format!("auto: {chunk} samples")), "{line}");
    assert!(meta["metrics"].get("step_seconds").is_none());
    assert_eq!(
        meta["metrics"]["instrument_batch_size"].as_f64(),
        Some(32.0)
    );
    let rows = metrics(&out);
    assert!(value(&rows[0], "grad_norm_mean").is_finite());
}
