//! Integration tests of the sweep's bookkeeping without `mpirun` (a lone
//! `sweep run` is a one-rank launch): equal grid values under two
//! spellings, failure records written by a host whose clock runs ahead,
//! and results.csv when job folders vanish mid-sweep.
mod common;

use common::{bin, stderr, stdout};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

/// A one-point grid (or more with `axes`): a 1-epoch mlp on digits,
/// evaluated by a 5-step PGD at ε = 0.2 (unless an axis sets
/// `attack.eps`) on 50 points.
fn grid(dir: &Path, name: &str, axes: &str) -> PathBuf {
    let eps = if axes.contains("attack.eps") {
        ""
    } else {
        "eps = \"0.2\""
    };
    let text = format!(
        r#"name = "{name}"
steps = ["train", "attack"]

[axes]
seed = [0]
{axes}

[train]
dataset = "digits"
model = "mlp"
mlp-hidden = "16"
epochs = 1
threads = 1

[attack]
attacks = "pgd5"
n-eval = 50
threads = 1
{eps}
"#
    );
    let p = dir.join(format!("{name}.toml"));
    fs::write(&p, text).unwrap();
    p
}

fn sweep(args: &[&str]) -> Output {
    std::process::Command::new(bin("sweep"))
        .args(args)
        .env("TASER_BIN_DIR", bin("sweep").parent().unwrap())
        .output()
        .expect("the sweep binary runs")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The job ids that `sweep plan` lists, in plan order.
fn planned_ids(grid: &Path) -> Vec<String> {
    let o = sweep(&["plan", s(grid)]);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let first = w.next()?;
            let id = w.next()?;
            // Task lines are indented and start with their row index.
            let numbered = first.chars().all(|c| c.is_ascii_digit());
            (l.starts_with(' ') && numbered).then(|| id.to_string())
        })
        .collect()
}

/// results.csv as rows of column → value.
fn results(out: &Path) -> Vec<BTreeMap<String, String>> {
    let mut r = csv::Reader::from_path(out.join("results.csv")).expect("results.csv");
    let header = r.headers().unwrap().clone();
    r.records()
        .map(|row| {
            header
                .iter()
                .map(String::from)
                .zip(row.unwrap().iter().map(String::from))
                .collect()
        })
        .collect()
}

#[test]
fn a_failure_stamped_by_a_clock_running_ahead_does_not_block_the_retry() {
    let tmp = tempfile::tempdir().unwrap();
    let grid = grid(tmp.path(), "clock", "");
    let ids = planned_ids(&grid);
    assert_eq!(ids.len(), 1, "{ids:?}");
    let out = tmp.path().join("out");
    let dir = out.join("jobs").join(&ids[0]);
    fs::create_dir_all(&dir).unwrap();
    // An earlier attempt on a node whose clock runs 600 s ahead failed.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let record = format!(
        r#"{{"step": "train", "exit_code": 1, "error": "error: old failure", "at": {}}}"#,
        now + 600.0
    );
    fs::write(dir.join("failed.json"), record).unwrap();
    fs::write(
        dir.join("attempts.log"),
        "1.000 rank=0/1 host=fast device=cpu\n",
    )
    .unwrap();
    let o = sweep(&["run", s(&grid), "--out", s(&out)]);
    assert!(
        o.status.success(),
        "the retry must run and pass: {}",
        stderr(&o)
    );
    let attempts = fs::read_to_string(dir.join("attempts.log")).unwrap();
    assert_eq!(attempts.lines().count(), 2, "no new attempt:\n{attempts}");
    assert!(!dir.join("failed.json").exists());
    let rows = results(&out);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["status"], "ok", "{:?}", rows[0]);
    assert!(!stderr(&o).contains("old failure"), "{}", stderr(&o));
}

#[test]
fn job_folders_removed_mid_sweep_still_have_rows_and_failures_their_fields() {
    let tmp = tempfile::tempdir().unwrap();
    // Three points; optimizer "bogus" is refused by train, so one fails.
    let grid = grid(
        tmp.path(),
        "gone",
        r#"optimizer = ["sgd", "adam", "bogus"]"#,
    );
    let out = tmp.path().join("out");
    let o = sweep(&["run", s(&grid), "--out", s(&out)]);
    assert!(!o.status.success());
    let rows = results(&out);
    assert_eq!(rows.len(), 3);
    let id_of = |opt: &str| rows.iter().find(|r| r["optimizer"] == opt).unwrap()["id"].clone();
    let (ok_id, gone_id, bad_id) = (id_of("sgd"), id_of("adam"), id_of("bogus"));
    // Someone removes a finished folder and the failed one's record, then
    // the run is repeated without retrying failures and collected.
    fs::remove_dir_all(out.join("jobs").join(&gone_id)).unwrap();
    fs::remove_file(out.join("jobs").join(&bad_id).join("failed.json")).unwrap();
    fs::remove_dir_all(out.join("jobs").join(&bad_id)).unwrap();
    let c = sweep(&["collect", s(&out)]);
    assert!(c.status.success(), "{}", stderr(&c));
    for line in ["jobs = 3", "ok = 1", "failed = 0", "pending = 2"] {
        assert!(
            stdout(&c).lines().any(|l| l == line),
            "{line}: {}",
            stdout(&c)
        );
    }
    let rows = results(&out);
    let status: BTreeMap<String, (String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["id"].clone(),
                (r["status"].clone(), r["optimizer"].clone()),
            )
        })
        .collect();
    assert_eq!(status[&ok_id], ("ok".into(), "sgd".into()));
    assert_eq!(status[&gone_id], ("pending".into(), "adam".into()));
    assert_eq!(status[&bad_id], ("pending".into(), "bogus".into()));
    // --grid gives the plan even when no folder is left to name the grid.
    fs::remove_dir_all(out.join("jobs").join(&ok_id)).unwrap();
    let c = sweep(&["collect", s(&out), "--grid", s(&grid)]);
    assert!(c.status.success(), "{}", stderr(&c));
    assert!(
        stdout(&c).lines().any(|l| l == "pending = 3"),
        "{}",
        stdout(&c)
    );
    assert_eq!(results(&out).len(), 3);
}

#[test]
fn two_spellings_of_one_value_are_refused_and_shipped_ids_stay() {
    let tmp = tempfile::tempdir().unwrap();
    for (axis, a, b) in [
        (r#"attack.eps = ["0.2", "0.20"]"#, "0.2", "0.20"),
        (
            r#"attack.eps = ["8/255", "0.03137254901960784"]"#,
            "8/255",
            "0.03137254901960784",
        ),
    ] {
        let grid = grid(tmp.path(), "twice", axis);
        let o = sweep(&["plan", s(&grid)]);
        assert_eq!(o.status.code(), Some(2), "{axis}: {}", stdout(&o));
        let err = stderr(&o);
        assert!(
            err.contains(&format!("`attack.eps`: \"{a}\" and \"{b}\"")),
            "{err}"
        );
        let out = tmp.path().join("out");
        let o = sweep(&["run", s(&grid), "--out", s(&out)]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(!out.join("jobs").exists(), "no job may start");
    }
    // The ids that `sweep plan` gave these shipped grids before values were
    // compared by value: runs on disk resume by them. (The demo's third arm,
    // grad-norm matched in strength, added 98704313ddc1 and ecd0710e4d4a.)
    let demo = "base:97ae5ce6b787 b6ee19fdcb56 c7b9ed52f9f9 ff27f2424ecf 98704313ddc1 \
                base:3573bd4af445 dc3be005b998 dacb174ff9ae 45ed6a4606df ecd0710e4d4a";
    let table1 = "43e504bc33b8 20ae0d2e3a8e 342de8e708f2 3654f661c50c 0e6ae450b10f f19834892595 \
                  11bd9a246f05 1082ed5f0712 12dd456de50e 324e637b33ff 41a4551f877e 16b8045b6b88 \
                  9665c16baea9 54c76075582d 5fdfb157b44c 8f35a5c53df0 4fbca2abce2e 8a0912039263 \
                  3da7c3692a09 6d7f3d75c452 8c3db968df81 1ed1f7303f7b 082fc1c6da7e 3f1543e322de";
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("sweeps");
    for (name, ids) in [("digits-demo", demo), ("score-table1", table1)] {
        let want: Vec<&str> = ids.split_whitespace().collect();
        assert_eq!(
            planned_ids(&root.join(format!("{name}.toml"))),
            want,
            "{name}"
        );
    }
}
