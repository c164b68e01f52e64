//! Integration tests of the `report` kinds that read a sweep's `--out`
//! folder: `score-table1`, `digits-methods` and `train-logs`. Each writes a
//! tiny grid of the same shape as the shipped one (sweeps/…, on digits with
//! a 16-unit mlp, 1–2 epochs, one thread), runs it with `sweep run` as one
//! process (no mpirun), then the report on its output, and checks the
//! tables against the sweep's own results.csv and run folders.
mod common;

use common::{bin, run, stderr, stdout};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Writes `text` as `<dir>/<name>.toml` and runs it with `sweep run` (one
/// process, CPU) into `<dir>/<name>`; returns that output folder.
fn run_grid(dir: &Path, name: &str, text: &str) -> PathBuf {
    let grid = dir.join(format!("{name}.toml"));
    fs::write(&grid, text).unwrap();
    let out = dir.join(name);
    // TASER_DATA_DIR passes through (the jobs read digits from it or from
    // the repository's data/cache); the jobs' binaries sit beside `sweep`.
    let o = Command::new(bin("sweep"))
        .args(["run", s(&grid), "--out", s(&out), "--device", "cpu"])
        .env("TASER_BIN_DIR", bin("sweep").parent().unwrap())
        .output()
        .expect("the sweep binary runs");
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    out
}

/// A CSV as its header and rows of column → value.
fn read_table(path: &Path) -> (Vec<String>, Vec<BTreeMap<String, String>>) {
    let mut r = csv::Reader::from_path(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    let rows = r
        .records()
        .map(|row| {
            let row = row.unwrap();
            header
                .iter()
                .cloned()
                .zip(row.iter().map(String::from))
                .collect()
        })
        .collect();
    (header, rows)
}

/// The rows of results.csv, each asserted finished.
fn finished(out: &Path, points: usize) -> Vec<BTreeMap<String, String>> {
    let (_, rows) = read_table(&out.join("results.csv"));
    assert_eq!(rows.len(), points, "{rows:?}");
    for r in &rows {
        assert_eq!(r["status"], "ok", "{r:?}");
    }
    rows
}

/// `report <args>`, asserted successful; returns its stdout.
fn report(args: &[&str]) -> String {
    let o = run("report", args);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    stdout(&o)
}

/// A number of a table cell, asserted in `lo..=hi`.
fn number_in(v: &str, lo: f64, hi: f64, what: &str) -> f64 {
    let x: f64 = v
        .parse()
        .unwrap_or_else(|_| panic!("{what} = {v:?} is no number"));
    assert!((lo..=hi).contains(&x), "{what} = {x} outside [{lo}, {hi}]");
    x
}

/// The body rows of a Markdown table (after the header and its rule), split
/// into trimmed cells.
fn markdown_rows(md: &str) -> Vec<Vec<String>> {
    md.lines()
        .filter(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

const SCORE_TABLE1_GRID: &str = r#"name = "score-table1-tiny"
steps = ["train", "attack"]
checkpoints = ["best", "last"]

[axes]
lr = [0.02, 0.002]
loss = ["l2", "kl"]

[train]
dataset = "digits"
model = "mlp"
mlp-hidden = "16"
method = "pgd-at"
epochs = 2
seed = 0
threads = 1
val-size = 50
val-attack = "pgd5"
val-objective = "loss"
log-every = 100

[attack]
eps = 0.2
attacks = "pgd20,aa"
n-eval = 20
seed = 0
threads = 1
"#;

#[test]
fn score_table1_has_one_row_per_point_with_both_checkpoints_accuracies() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = run_grid(tmp.path(), "score-table1-tiny", SCORE_TABLE1_GRID);
    let points = finished(&runs, 4);
    let out = tmp.path().join("table");
    let printed = report(&["score-table1", "--runs", s(&runs), "--out", s(&out)]);

    let (header, rows) = read_table(&out.join("table.csv"));
    assert_eq!(
        header,
        [
            "loss",
            "lr",
            "best_epoch",
            "best_clean",
            "best_pgd20",
            "best_aa",
            "last_clean",
            "last_pgd20",
            "last_aa"
        ]
    );
    // By loss, then lr, each in grid order.
    let keys: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r["loss"].as_str(), r["lr"].as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            ("l2", "0.02"),
            ("l2", "0.002"),
            ("kl", "0.02"),
            ("kl", "0.002")
        ]
    );
    for r in &rows {
        number_in(&r["best_epoch"], 1.0, 2.0, "best_epoch");
        let point = points
            .iter()
            .find(|p| p["loss"] == r["loss"] && p["lr"] == r["lr"])
            .expect("a results.csv row per table row");
        for c in ["best", "last"] {
            for (col, metric) in [
                ("clean", "clean_acc"),
                ("pgd20", "acc_pgd20"),
                ("aa", "acc_aa"),
            ] {
                let pct = number_in(&r[&format!("{c}_{col}")], 0.0, 100.0, col);
                let frac: f64 = point[&format!("attack_{c}_{metric}")].parse().unwrap();
                assert!(
                    (pct - 100.0 * frac).abs() <= 0.05 + 1e-9,
                    "{r:?} vs {point:?}"
                );
            }
            // Robust accuracy never exceeds clean accuracy.
            let clean: f64 = r[&format!("{c}_clean")].parse().unwrap();
            let aa: f64 = r[&format!("{c}_aa")].parse().unwrap();
            assert!(aa <= clean, "{r:?}");
        }
    }

    let md = fs::read_to_string(out.join("table.md")).unwrap();
    assert_eq!(printed.lines().next(), md.lines().next(), "{printed}");
    let md_rows = markdown_rows(&md);
    assert_eq!(md_rows.len(), rows.len(), "{md}");
    for (m, r) in md_rows.iter().zip(&rows) {
        let csv_cells: Vec<&String> = header.iter().map(|h| &r[h]).collect();
        assert_eq!(m.iter().collect::<Vec<_>>(), csv_cells, "{md}");
    }
}

/// sweeps/digits-methods.toml in small: three methods (one with AWP)
/// without and with TASER (DSM scores), each evaluated with PGD-20 and
/// AutoAttack, and standard and PGD-AT without TASER once more with SPSA.
const DIGITS_METHODS_GRID: &str = r#"name = "digits-methods-tiny"
steps = ["train", "attack"]

[scores.dsm]
dataset = "digits"
source = "dsm"
dsm-steps = 20
seed = 0

[axes]
method = [
  { method = "standard" },
  { method = "pgd-at" },
  { method = "mart", awp = true, awp-warmup = 0 },
]
taser = [{ lambda = 0 }, { lambda = 0.1, lambda-warmup-steps = 10, scores = "@dsm" }]
attack.attacks = ["pgd20,aa", "pgd20,aa,spsa"]

[train]
dataset = "digits"
model = "mlp"
mlp-hidden = "16"
optimizer = "adam"
lr = 1e-2
epochs = 3
seed = 0
threads = 1
log-every = 10

[attack]
norm = "linf"
eps = 0.2
n-eval = 20
seed = 0
threads = 1

[[exclude]]
attack.attacks = "pgd20,aa,spsa"
lambda = 0.1

[[exclude]]
attack.attacks = "pgd20,aa,spsa"
method = "mart"
"#;

/// A table.csv row's (method, taser, evaluated with SPSA).
fn methods_key(r: &BTreeMap<String, String>) -> (String, String, bool) {
    (
        r["method"].clone(),
        r["taser"].clone(),
        !r["spsa"].is_empty(),
    )
}

/// The same key of a results.csv row.
fn point_key(p: &BTreeMap<String, String>) -> (String, String, bool) {
    let awp = if p["awp"] == "true" { "-awp" } else { "" };
    let taser = p["lambda"].parse::<f64>().unwrap() > 0.0;
    (
        format!("{}{awp}", p["method"]),
        if taser { "yes" } else { "no" }.into(),
        p["attack.attacks"].contains("spsa"),
    )
}

/// Checks table.csv and table.md of `report digits-methods` against the
/// sweep's results.csv rows `points`; returns table.csv's rows.
fn check_methods_table(
    out: &Path,
    points: &[BTreeMap<String, String>],
    printed: &str,
) -> Vec<BTreeMap<String, String>> {
    let (header, rows) = read_table(&out.join("table.csv"));
    let columns = ["clean", "pgd20", "aa", "spsa", "worst_case"];
    let seconds = ["train_seconds", "seconds_aa", "seconds_spsa"];
    let want: Vec<&str> = ["method", "taser"]
        .iter()
        .chain(&columns)
        .chain(&seconds)
        .copied()
        .collect();
    assert_eq!(header, want);
    let mut keys: Vec<_> = rows.iter().map(methods_key).collect();
    let mut want: Vec<_> = points.iter().map(point_key).collect();
    keys.sort();
    want.sort();
    assert_eq!(keys, want, "one row per grid point");
    for r in &rows {
        let point = points
            .iter()
            .find(|p| point_key(p) == methods_key(r))
            .unwrap();
        let acc = |c: &str| number_in(&r[c], 0.0, 1.0, &format!("{r:?} {c}"));
        let worst = acc("worst_case");
        for c in ["clean", "pgd20", "aa"] {
            assert!(worst <= acc(c), "{r:?}");
        }
        number_in(&r["train_seconds"], 0.0, 600.0, "train_seconds");
        number_in(&r["seconds_aa"], 0.0, 600.0, "seconds_aa");
        if methods_key(r).2 {
            assert!(worst <= acc("spsa"), "{r:?}");
            number_in(&r["seconds_spsa"], 0.0, 600.0, "seconds_spsa");
        } else {
            assert_eq!(r["seconds_spsa"], "", "{r:?}");
        }
        // Each value as the sweep recorded it.
        for (col, metric) in [
            ("clean", "attack_clean_acc"),
            ("aa", "attack_acc_aa"),
            ("spsa", "attack_acc_spsa"),
            ("train_seconds", "train_train_seconds"),
        ] {
            assert_eq!(
                &r[col],
                point.get(metric).unwrap_or(&String::new()),
                "{col}: {r:?}"
            );
        }
    }
    let md = fs::read_to_string(out.join("table.md")).unwrap();
    assert!(printed.contains(md.trim_end()), "{printed}");
    let md_rows = markdown_rows(&md);
    assert_eq!(md_rows.len(), rows.len(), "{md}");
    for (m, r) in md_rows.iter().zip(&rows) {
        assert_eq!((&m[0], &m[1]), (&r["method"], &r["taser"]), "{md}");
        for (k, c) in columns.iter().enumerate() {
            let cell = match r[*c].parse::<f64>() {
                Ok(x) => format!("{:.1}%", 100.0 * x),
                Err(_) => "—".into(),
            };
            assert_eq!(m[2 + k], cell, "{c}: {md}");
        }
    }
    rows
}

#[test]
fn digits_methods_tables_every_point_and_bootstraps_each_taser_gain() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = run_grid(tmp.path(), "digits-methods-tiny", DIGITS_METHODS_GRID);
    let points = finished(&runs, 8);
    let out = tmp.path().join("table");
    let printed = report(&["digits-methods", "--runs", s(&runs), "--out", s(&out)]);
    let rows = check_methods_table(&out, &points, &printed);
    // The SPSA points train their model once more (one thread, seed 0): the
    // same model, so the same accuracies as their twins; and standard
    // training learns (digits has 10 classes).
    for m in ["standard", "pgd-at"] {
        let twins: Vec<&BTreeMap<String, String>> = rows
            .iter()
            .filter(|r| r["method"] == m && r["taser"] == "no")
            .collect();
        assert_eq!(twins.len(), 2, "{rows:?}");
        for c in ["clean", "pgd20", "aa"] {
            assert_eq!(twins[0][c], twins[1][c], "{m} {c}: {rows:?}");
        }
    }
    let standard_clean = rows
        .iter()
        .find(|r| r["method"] == "standard" && r["taser"] == "no")
        .unwrap();
    number_in(
        &standard_clean["clean"],
        0.5,
        1.0,
        "standard clean accuracy",
    );

    // The paired bootstrap: one row per method (its TASER run against its
    // run without, both evaluated with PGD-20 and AutoAttack on the same
    // 20 points; the SPSA points stay out), then their average.
    let boot = out.join("bootstrap");
    for f in ["comparisons.csv", "table2.md", "table3.md"] {
        assert!(boot.join(f).is_file(), "{f} missing in bootstrap/");
    }
    let (header, comps) = read_table(&boot.join("comparisons.csv"));
    assert!(!header.iter().any(|h| h.starts_with("spsa_")), "{header:?}");
    let pairs: Vec<&BTreeMap<String, String>> =
        comps.iter().filter(|c| c["kind"] == "pair").collect();
    let labels: Vec<&str> = pairs.iter().map(|c| c["row"].as_str()).collect();
    assert_eq!(labels, ["standard", "pgd-at", "mart-awp"], "{comps:?}");
    assert_eq!(comps.iter().filter(|c| c["kind"] == "average").count(), 1);
    let clean_of = |m: &str, taser: &str| -> f64 {
        let key = (m.to_string(), taser.to_string(), false);
        let r = rows.iter().find(|r| methods_key(r) == key).unwrap();
        r["clean"].parse().unwrap()
    };
    for c in pairs {
        assert_eq!(c["points"], "20", "{c:?}");
        let m = c["row"].as_str();
        let base: f64 = c["clean_baseline"].parse().unwrap();
        let treat: f64 = c["clean_treatment"].parse().unwrap();
        let delta: f64 = c["clean_delta"].parse().unwrap();
        assert!((base - clean_of(m, "no")).abs() < 1e-9, "{c:?}");
        assert!((treat - clean_of(m, "yes")).abs() < 1e-9, "{c:?}");
        assert!((delta - (treat - base)).abs() < 1e-9, "{c:?}");
        let lo: f64 = c["clean_lower"].parse().unwrap();
        let hi: f64 = c["clean_upper"].parse().unwrap();
        assert!(lo <= delta && delta <= hi, "{c:?}");
    }
    let table2 = fs::read_to_string(boot.join("table2.md")).unwrap();
    assert!(printed.contains(table2.trim_end()), "{printed}");

    // Without standard's PGD-20 + AutoAttack point (only its SPSA one is
    // finished), its TASER run has no partner measured alike: refused,
    // naming that point, before any bootstrap.
    let standard = points
        .iter()
        .find(|p| point_key(p) == ("standard".into(), "no".into(), false))
        .unwrap();
    fs::remove_file(Path::new(&standard["dir"]).join("done")).unwrap();
    let taser = points
        .iter()
        .find(|p| point_key(p) == ("standard".into(), "yes".into(), false))
        .unwrap();
    let out = tmp.path().join("refused");
    let o = run(
        "report",
        &["digits-methods", "--runs", s(&runs), "--out", s(&out)],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&taser["dir"]) && err.contains("same attacks"),
        "{err}"
    );
    assert!(
        common::files_in(&out).is_empty(),
        "{:?}",
        common::files_in(&out)
    );
}

/// sweeps/mnist-5k-baselines.toml in small (on digits): standard and
/// PGD-AT with its radius ramped, 2 epochs each.
const BASELINES_GRID: &str = r#"name = "baselines-tiny"
steps = ["train", "attack"]

[axes]
method = [
  { method = "standard" },
  { method = "pgd-at", eps = 0.3, eps-warmup-epochs = 1 },
]
seed = [0]

[train]
dataset = "digits"
model = "mlp"
mlp-hidden = "16"
epochs = 2
threads = 1

[attack]
attacks = "pgd5"
eps = 0.3
n-eval = 20
seed = 0
threads = 1
"#;

#[test]
fn train_logs_copies_each_points_metrics_under_its_label() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = run_grid(tmp.path(), "baselines-tiny", BASELINES_GRID);
    let points = finished(&runs, 2);
    let out = tmp.path().join("logs");
    let printed = report(&[
        "train-logs",
        "--runs",
        s(&runs),
        "--label-by",
        "method",
        "--out",
        s(&out),
    ]);
    assert_eq!(
        common::files_in(&out),
        ["pgd-at-metrics.csv", "standard-metrics.csv"]
    );
    for p in &points {
        let copy = out.join(format!("{}-metrics.csv", p["method"]));
        assert!(printed.contains(s(&copy)), "{printed}");
        let log = PathBuf::from(&p["dir"]).join("train").join("metrics.csv");
        let bytes = fs::read(&copy).unwrap();
        assert_eq!(bytes, fs::read(&log).unwrap(), "{}", copy.display());
        // One row per epoch under the header.
        assert_eq!(common::metrics_rows(&log.with_file_name("")), 2);
    }

    // A parameter some point lacks, and one the points share, are refused
    // by name before anything is written.
    for (by, says) in [
        ("eps", "no grid parameter `eps`"),
        ("seed", "two grid points have seed = 0"),
    ] {
        let out = tmp.path().join(format!("by-{by}"));
        let o = run(
            "report",
            &[
                "train-logs",
                "--runs",
                s(&runs),
                "--label-by",
                by,
                "--out",
                s(&out),
            ],
        );
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains(says) && err.contains("--label-by"), "{err}");
        assert!(
            common::files_in(&out).is_empty(),
            "{:?}",
            common::files_in(&out)
        );
    }
}

#[test]
fn reports_refuse_a_runs_folder_without_finished_points_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    // A sweep output whose jobs/ holds no finished point, and a folder that
    // is no sweep output at all.
    let empty = tmp.path().join("no-points");
    fs::create_dir_all(empty.join("jobs")).unwrap();
    let plain = tmp.path().join("plain");
    fs::create_dir_all(&plain).unwrap();
    for kind in ["score-table1", "digits-methods", "train-logs"] {
        for (runs, says) in [
            (&empty, "no finished grid point in it (0 pending, 0 failed)"),
            (&plain, "no jobs/ folder in it"),
        ] {
            let out = tmp.path().join(format!("out-{kind}"));
            let mut args = vec![kind, "--runs", s(runs), "--out", s(&out)];
            if kind == "train-logs" {
                args.extend(["--label-by", "method"]);
            }
            let o = run("report", &args);
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(2), "{kind}: {err}");
            assert!(err.contains(s(runs)) && err.contains(says), "{kind}: {err}");
            // The fix names the command that writes a sweep's output, and
            // the shipped grid's make target where the kind has one.
            assert!(err.contains("sweep run GRID --out"), "{kind}: {err}");
            let target = match kind {
                "score-table1" => Some("make score-table1-digits"),
                "digits-methods" => Some("make digits-methods"),
                _ => None,
            };
            match target {
                Some(t) => assert!(err.contains(t), "{kind}: {err}"),
                None => assert!(!err.contains("`make "), "{kind}: {err}"),
            }
            assert!(!out.exists() || common::files_in(&out).is_empty(), "{kind}");
        }
    }
}
