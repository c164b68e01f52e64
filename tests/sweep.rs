//! Integration tests of the `sweep` launcher: real `train` and `attack`
//! runs on the embedded digits data (mlp, 1 epoch), under `mpirun` with 1
//! and 3 ranks, killed and resumed, with a failing point and with malformed
//! grid files. Tests that start `mpirun` are named `mpirun_…`, so a
//! quick loop can leave them out (`make test-fast` skips them).
mod common;

use common::{bin, stderr, stdout, sweep_cmd};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A grid of `n_seeds` × 2 learning rates of a 1-epoch mlp, evaluated by a
/// 5-step PGD on 50 points; `extra` is appended (more axes, [[exclude]]…).
fn tiny_grid(dir: &Path, name: &str, epochs: usize, seeds: &str, extra: &str) -> PathBuf {
    let text = format!(
        r#"name = "{name}"
steps = ["train", "attack"]

[axes]
seed = [{seeds}]
lr = [0.02, 0.05]

[train]
dataset = "digits"
model = "mlp"
mlp-hidden = "32"
epochs = {epochs}
threads = 1

[attack]
attacks = "pgd5"
eps = "0.2"
n-eval = 50
threads = 1
{extra}"#
    );
    let p = dir.join(format!("{name}.toml"));
    fs::write(&p, text).unwrap();
    p
}

fn sweep(ranks: Option<usize>, args: &[&str]) -> Output {
    sweep_cmd(ranks, args)
        .output()
        .expect("mpirun and the sweep binary run (install openmpi-bin: `make setup`)")
}

/// results.csv as rows of column → value.
fn results(out: &Path) -> Vec<BTreeMap<String, String>> {
    let mut r = csv::Reader::from_path(out.join("results.csv")).expect("results.csv");
    let header = r.headers().unwrap().clone();
    r.records()
        .map(|row| {
            let row = row.unwrap();
            header
                .iter()
                .map(String::from)
                .zip(row.iter().map(String::from))
                .collect()
        })
        .collect()
}

/// The columns that must not depend on scheduling: everything but timings
/// and paths.
fn metrics_only(rows: &[BTreeMap<String, String>]) -> Vec<BTreeMap<String, String>> {
    rows.iter()
        .map(|r| {
            r.iter()
                .filter(|(k, _)| !k.contains("seconds") && *k != "dir" && *k != "per_sample")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn mpirun_three_ranks_and_one_rank_give_identical_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let grid = tiny_grid(tmp.path(), "agree", 1, "0, 1", "");
    let mut tables = Vec::new();
    for ranks in [3, 1] {
        let out = tmp.path().join(format!("np{ranks}"));
        let o = sweep(Some(ranks), &["run", s(&grid), "--out", s(&out)]);
        assert!(
            o.status.success(),
            "np {ranks}: {}\n{}",
            stdout(&o),
            stderr(&o)
        );
        assert!(stdout(&o).contains("ok = 4"), "{}", stdout(&o));
        let rows = results(&out);
        assert_eq!(rows.len(), 4);
        assert!(rows.iter().all(|r| r["status"] == "ok"), "{rows:?}");
        assert!(rows
            .iter()
            .all(|r| !r["train_test_acc"].is_empty() && !r["attack_acc_pgd5"].is_empty()));
        if ranks == 3 {
            // Every rank took part: the attempts logs name three ranks.
            let mut seen = std::collections::BTreeSet::new();
            for r in &rows {
                let log = fs::read_to_string(Path::new(&r["dir"]).join("attempts.log")).unwrap();
                for w in log.split_whitespace().filter(|w| w.starts_with("rank=")) {
                    seen.insert(w.to_string());
                }
            }
            assert!(seen.len() >= 2, "jobs ran on {seen:?} only");
        }
        tables.push(metrics_only(&rows));
    }
    assert_eq!(tables[0], tables[1]);
}

fn done_markers(out: &Path) -> BTreeMap<String, (std::time::SystemTime, String)> {
    let mut m = BTreeMap::new();
    for e in fs::read_dir(out.join("jobs")).unwrap().flatten() {
        let done = e.path().join("done");
        if let Ok(meta) = fs::metadata(&done) {
            m.insert(
                e.file_name().to_string_lossy().into_owned(),
                (meta.modified().unwrap(), fs::read_to_string(&done).unwrap()),
            );
        }
    }
    m
}

/// Waits until `out` holds at least one `done` marker (and fewer than
/// `total`), then sends SIGTERM to `child`.
fn terminate_mid_sweep(child: &mut Child, out: &Path, total: usize) {
    wait_for_first_result(child, out, total);
    // SAFETY: kill(2) of the child this test started.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
}

/// Waits until `out` holds at least one `done` marker (and fewer than
/// `total`) and results.csv, which the sweep keeps up to date.
fn wait_for_first_result(child: &mut Child, out: &Path, total: usize) {
    let t0 = Instant::now();
    loop {
        let n = fs::read_dir(out.join("jobs"))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().join("done").exists())
                    .count()
            })
            .unwrap_or(0);
        if n >= 1 && out.join("results.csv").exists() {
            assert!(
                n < total,
                "the sweep finished before it could be stopped; make the jobs longer"
            );
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "the sweep ended early");
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no job finished in 2 minutes"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Stops a run mid-sweep, reruns it, and checks that only the missing jobs
/// ran: no finished job's marker rewritten or attempted again, one row per
/// job in the end. `ranks` None: a lone process gets SIGTERM (the Slurm
/// preemption path, which must stop cleanly with exit status 3); Some(n):
/// `mpirun` gets it and takes its ranks down hard.
fn kill_and_resume(ranks: Option<usize>) {
    let tmp = tempfile::tempdir().unwrap();
    let grid = tiny_grid(tmp.path(), "resume", 6, "0, 1, 2", "");
    let out = tmp.path().join("out");
    let total = 6;
    let mut child = sweep_cmd(ranks, &["run", s(&grid), "--out", s(&out)])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    terminate_mid_sweep(&mut child, &out, total);
    let first = child.wait_with_output().unwrap();
    assert!(
        !first.status.success(),
        "a stopped sweep must not report success"
    );
    if ranks.is_none() {
        assert_eq!(first.status.code(), Some(3), "{}", stderr(&first));
    }
    // OpenMPI's mpirun answers SIGTERM with exit 1 whatever its ranks
    // return, and SIGKILLs them a second after forwarding it; rank 0 has
    // kept results.csv up to date, so the table of what finished is there
    // either way: the unfinished jobs pending, none marked failed.
    let rows = results(&out);
    let before = done_markers(&out);
    assert_eq!(rows.len(), total);
    assert!(rows.iter().all(|r| r["status"] != "failed"), "{rows:?}");
    assert!(rows.iter().any(|r| r["status"] == "pending"), "{rows:?}");
    for r in rows.iter().filter(|r| r["status"] == "ok") {
        assert!(before.contains_key(&r["id"]), "{r:?}");
    }
    assert!(!before.is_empty() && before.len() < total);
    // Every marker left behind is a finished job: its metrics are in it.
    for (id, (_, text)) in &before {
        assert!(
            text.contains("train_test_acc") && text.contains("attack_acc_pgd5"),
            "{id}: {text}"
        );
    }
    let o = sweep(ranks, &["run", s(&grid), "--out", s(&out)]);
    assert!(o.status.success(), "rerun: {}\n{}", stdout(&o), stderr(&o));
    let after = done_markers(&out);
    assert_eq!(after.len(), total);
    for (id, m) in &before {
        assert_eq!(&after[id], m, "finished job {id} was recomputed");
        let attempts = fs::read_to_string(out.join("jobs").join(id).join("attempts.log")).unwrap();
        assert_eq!(
            attempts.lines().count(),
            1,
            "finished job {id} ran again:\n{attempts}"
        );
    }
    let rows = results(&out);
    let ids: std::collections::BTreeSet<_> = rows.iter().map(|r| r["id"].clone()).collect();
    assert_eq!(rows.len(), total, "rows lost or duplicated");
    assert_eq!(ids.len(), total, "rows duplicated");
    assert!(rows.iter().all(|r| r["status"] == "ok"), "{rows:?}");
    // collect rebuilds the same table from the job directories.
    let before_csv = fs::read_to_string(out.join("results.csv")).unwrap();
    let c = sweep(None, &["collect", s(&out)]);
    assert!(c.status.success(), "{}", stderr(&c));
    assert_eq!(
        fs::read_to_string(out.join("results.csv")).unwrap(),
        before_csv
    );
}

#[test]
fn sigterm_stops_a_lone_sweep_cleanly_and_a_rerun_does_only_the_rest() {
    kill_and_resume(None);
}

#[test]
fn mpirun_killed_mid_sweep_and_a_rerun_completes_only_missing_jobs() {
    kill_and_resume(Some(2));
}

#[test]
fn mpirun_a_failing_point_is_recorded_and_the_others_complete() {
    let tmp = tempfile::tempdir().unwrap();
    // optimizer = "bogus" is refused by train: two of the four points fail.
    let grid = tiny_grid(tmp.path(), "fail", 1, "0", "\n[[exclude]]\nlr = 0.05\n").to_owned();
    let text = fs::read_to_string(&grid)
        .unwrap()
        .replace("seed = [0]", "seed = [0]\noptimizer = [\"sgd\", \"bogus\"]");
    fs::write(&grid, text).unwrap();
    let out = tmp.path().join("out");
    let o = sweep(Some(2), &["run", s(&grid), "--out", s(&out)]);
    assert!(!o.status.success(), "a failed job must fail the sweep");
    let rows = results(&out);
    assert_eq!(rows.len(), 2);
    let bad: Vec<_> = rows.iter().filter(|r| r["optimizer"] == "bogus").collect();
    let good: Vec<_> = rows.iter().filter(|r| r["optimizer"] == "sgd").collect();
    assert_eq!(bad.len(), 1);
    assert_eq!(good.len(), 1);
    assert_eq!(good[0]["status"], "ok");
    assert_eq!(bad[0]["status"], "failed");
    assert_eq!(bad[0]["failed_step"], "train");
    assert_eq!(bad[0]["exit_code"], "2");
    assert!(
        bad[0]["error"].contains("invalid value 'bogus'"),
        "{:?}",
        bad[0]
    );
    assert!(
        stderr(&o).contains(&format!("failed job {}", bad[0]["id"])),
        "{}",
        stderr(&o)
    );
}

#[test]
fn malformed_grids_name_the_key_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    for (text, key, line) in [
        ("[axes]\nseed = [0]\nlr = 0.1\n", "axes.lr", 3),
        (
            "steps = [\"train\"]\n\n[train]\nout = \"x\"\n",
            "train.out",
            4,
        ),
        (
            "[axes]\nseed = [0, 1]\n[[exclude]]\nsed = 1\n",
            "exclude.sed",
            4,
        ),
        ("name = \"x\"\nbogus = 1\n", "bogus", 2),
        ("[train]\nscores = \"@dsm\"\n", "train.scores", 2),
        ("[axes]\nseed = [0, 1\n", "", 2),
    ] {
        let g = tmp.path().join("bad.toml");
        fs::write(&g, text).unwrap();
        let o = sweep(None, &["plan", s(&g)]);
        assert_eq!(o.status.code(), Some(2), "{text}");
        let e = stderr(&o);
        assert!(e.contains(&format!("line {line}")), "{text}: {e}");
        assert!(e.contains(key), "{text}: {e}");
    }
}

#[test]
fn plan_lists_jobs_and_the_launch_line() {
    let tmp = tempfile::tempdir().unwrap();
    let grid = tiny_grid(
        tmp.path(),
        "plan",
        1,
        "0, 1",
        "\n[[exclude]]\nseed = 1\nlr = 0.05\n",
    );
    let plan = [
        "plan",
        s(&grid),
        "--nodes",
        "2",
        "--gpus-per-node",
        "4",
        "--out",
        "runs/x",
    ];
    let o = sweep(None, &plan);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("3 job(s)"), "{text}");
    assert!(
        text.contains("srun --nodes=2 --ntasks-per-node=4"),
        "{text}"
    );
    assert!(text.contains("mpirun -np 8"), "{text}");
    // Ids are stable: the same grid plans the same ids.
    let again = stdout(&sweep(None, &plan));
    assert_eq!(text, again);
}

#[test]
fn shipped_grids_plan_and_slurm_scripts_parse() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = [
        (
            "digits-demo.toml",
            "1 score task(s), 2 base model(s) (train, each run once and shared), \
             8 job(s): 2 baseline evaluation(s) + 6 fine-tune(s); 8 attack(s) in all",
        ),
        (
            "table2.toml",
            "1 score task(s), 18 base model(s) (train, each run once and shared), \
             54 job(s): 18 baseline evaluation(s) + 36 fine-tune(s); 54 attack(s) in all",
        ),
        (
            "mnist-study.toml",
            "1 score task(s), 9 base model(s) (train, each run once and shared), \
             45 job(s): 9 baseline evaluation(s) + 36 fine-tune(s); 45 attack(s) in all",
        ),
        ("table2-end-to-end.toml", "1 score task(s), 36 job(s)"),
        ("score-beta.toml", "0 score task(s), 8 job(s)"),
        ("toy.toml", "0 score task(s), 45 job(s)"),
        (
            "digits-taser-study.toml",
            "1 score task(s), 12 base model(s) (train, each run once and shared), \
             75 job(s): 15 baseline evaluation(s) + 60 fine-tune(s); 75 attack(s) in all",
        ),
        ("score-table1.toml", "0 score task(s), 24 job(s)"),
        ("score-table2.toml", "0 score task(s), 20 job(s)"),
        ("score-toy.toml", "0 score task(s), 26 job(s)"),
        ("score-table1-digits.toml", "0 score task(s), 24 job(s)"),
        ("digits-methods.toml", "1 score task(s), 14 job(s)"),
        ("mnist-5k-baselines.toml", "0 score task(s), 2 job(s)"),
    ];
    // Every grid in sweeps/ is planned here.
    let mut listed: Vec<&str> = shipped.iter().map(|(g, _)| *g).collect();
    let mut on_disk: Vec<String> = fs::read_dir(root.join("sweeps"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    listed.sort();
    on_disk.sort();
    assert_eq!(listed, on_disk, "every shipped grid is planned here");
    for (grid, jobs) in shipped {
        let p = root.join("sweeps").join(grid);
        let o = sweep(
            None,
            &["plan", s(&p), "--nodes", "2", "--gpus-per-node", "4"],
        );
        assert!(o.status.success(), "{grid}: {}", stderr(&o));
        assert!(stdout(&o).contains(jobs), "{grid}: {}", stdout(&o));
        assert!(stdout(&o).contains("slurm/sweep-mpi.sbatch"), "{grid}");
    }
    for script in ["sweep-mpi.sbatch", "sweep-array.sbatch"] {
        let o = Command::new("bash")
            .arg("-n")
            .arg(root.join("slurm").join(script))
            .output()
            .unwrap();
        assert!(o.status.success(), "{script}: {}", stderr(&o));
    }
}

/// The sweep ranks `mpirun` (pid `mpirun`) started on this machine, by rank.
fn ranks_of(mpirun: u32) -> BTreeMap<String, i32> {
    let mut m = BTreeMap::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // ppid is the second field after the parenthesised command name.
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().nth(1));
        if ppid != Some(&mpirun.to_string()) {
            continue;
        }
        let env = fs::read(e.path().join("environ")).unwrap_or_default();
        for var in env.split(|b| *b == 0) {
            if let Some(r) = String::from_utf8_lossy(var).strip_prefix("OMPI_COMM_WORLD_RANK=") {
                m.insert(r.to_string(), pid);
            }
        }
    }
    m
}

#[test]
fn mpirun_a_worker_stopped_mid_job_hands_it_back_and_the_sweep_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let grid = tiny_grid(tmp.path(), "worker", 6, "0, 1, 2", "");
    let out = tmp.path().join("out");
    let child = sweep_cmd(Some(3), &["run", s(&grid), "--out", s(&out)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until rank 1 is on a job (its attempts line is written), then
    // stop that rank alone, as Slurm does when one task's node is preempted.
    let t0 = Instant::now();
    let victim = loop {
        let started = fs::read_dir(out.join("jobs"))
            .map(|d| {
                d.flatten().any(|e| {
                    fs::read_to_string(e.path().join("attempts.log"))
                        .map(|l| l.contains("rank=1/3"))
                        .unwrap_or(false)
                })
            })
            .unwrap_or(false);
        if started {
            if let Some(pid) = ranks_of(child.id()).get("1") {
                break *pid;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "rank 1 never started a job"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // SAFETY: kill(2) of a rank of the mpirun this test started.
    unsafe {
        libc::kill(victim, libc::SIGTERM);
    }
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let rows = results(&out);
    assert_eq!(rows.len(), 6);
    assert!(rows.iter().all(|r| r["status"] == "ok"), "{rows:?}");
    // The interrupted job was run again by another rank; no other job twice.
    let mut twice = 0;
    for r in &rows {
        let log = fs::read_to_string(Path::new(&r["dir"]).join("attempts.log")).unwrap();
        let n = log.lines().count();
        assert!(n <= 2, "{}: {log}", r["id"]);
        if n == 2 {
            twice += 1;
            assert!(
                log.lines().nth(1).unwrap().contains("rank=")
                    && !log.lines().nth(1).unwrap().contains("rank=1/3")
            );
        }
    }
    assert!(twice <= 1, "only the stopped rank's job runs twice");
}

#[test]
fn run_one_runs_a_single_job_and_collect_lists_the_rest_as_pending() {
    let tmp = tempfile::tempdir().unwrap();
    let grid = tiny_grid(tmp.path(), "array", 1, "0, 1", "");
    let out = tmp.path().join("out");
    let o = sweep(
        None,
        &["run-one", s(&grid), "--index", "2", "--out", s(&out)],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let c = sweep(None, &["collect", s(&out)]);
    assert!(c.status.success(), "{}", stderr(&c));
    // The three points whose array task never started count as pending.
    for line in ["jobs = 4", "ok = 1", "failed = 0", "pending = 3"] {
        assert!(
            stdout(&c).lines().any(|l| l == line),
            "{line}: {}",
            stdout(&c)
        );
    }
    let rows = results(&out);
    let status: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r["index"].as_str(), r["status"].as_str()))
        .collect();
    assert_eq!(
        status,
        [
            ("0", "pending"),
            ("1", "pending"),
            ("2", "ok"),
            ("3", "pending")
        ]
    );
}

/// Job directories of `out` with the names of their files.
fn job_dirs(out: &Path) -> Vec<(PathBuf, Vec<String>)> {
    fs::read_dir(out.join("jobs"))
        .unwrap()
        .flatten()
        .map(|e| (e.path(), common::files_in(&e.path())))
        .collect()
}

#[test]
fn two_sweeps_on_one_out_run_each_job_once_and_agree_with_what_they_print() {
    let tmp = tempfile::tempdir().unwrap();
    // Four points, two of which train refuses (optimizer "bogus").
    let grid = tiny_grid(tmp.path(), "twice", 1, "0, 1", "\n[[exclude]]\nlr = 0.05\n");
    let text = fs::read_to_string(&grid).unwrap().replace(
        "lr = [0.02, 0.05]",
        "lr = [0.02, 0.05]\noptimizer = [\"sgd\", \"bogus\"]",
    );
    fs::write(&grid, text).unwrap();
    let out = tmp.path().join("out");
    let run = ["run", s(&grid), "--out", s(&out)];
    let spawn = || {
        sweep_cmd(None, &run)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    for o in [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()] {
        let (so, se) = (stdout(&o), stderr(&o));
        // Each sweep's verdict is what it printed: two points FAILED.
        assert_eq!(o.status.code(), Some(1), "{so}\n{se}");
        assert!(
            so.contains("failed = 2") && so.contains("ok = 2"),
            "{so}\n{se}"
        );
        assert_eq!(se.matches(" FAILED (rank").count(), 2, "{se}");
    }
    for (dir, files) in job_dirs(&out) {
        let attempts = fs::read_to_string(dir.join("attempts.log")).unwrap();
        assert_eq!(
            attempts.lines().count(),
            1,
            "{}: ran twice:\n{attempts}",
            dir.display()
        );
        let done = files.iter().any(|f| f == "done");
        let failed = files.iter().any(|f| f == "failed.json");
        assert!(done != failed, "{}: {files:?}", dir.display());
    }
    let rows = results(&out);
    assert_eq!(rows.iter().filter(|r| r["status"] == "failed").count(), 2);
}

/// A bin folder for the sweep whose `score-precompute` hangs (until
/// killed) while the file `stall` exists, and runs the real one otherwise.
fn stalling_bin_dir(dir: &Path, stall: &Path) -> PathBuf {
    let bins = dir.join("bin");
    fs::create_dir_all(&bins).unwrap();
    for b in ["train", "attack", "finetune"] {
        std::os::unix::fs::symlink(bin(b), bins.join(b)).unwrap();
    }
    let script = bins.join("score-precompute");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ -e '{}' ] && [ \"$TASER_CHECK_ARGS\" != 1 ] && exec sleep 600\nexec '{}' \"$@\"\n",
            stall.display(),
            bin("score-precompute").display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    bins
}

#[test]
fn a_run_one_killed_while_computing_scores_does_not_block_the_next() {
    let tmp = tempfile::tempdir().unwrap();
    let extra =
        "\n[scores.dsm]\ndataset = \"digits\"\nsource = \"dsm\"\ndsm-steps = 20\nseed = 0\n";
    let grid = tiny_grid(tmp.path(), "stale", 1, "0", extra);
    let text = fs::read_to_string(&grid).unwrap().replace(
        "threads = 1\n\n[attack]",
        "threads = 1\nscores = \"@dsm\"\n\n[attack]",
    );
    fs::write(&grid, text).unwrap();
    let stall = tmp.path().join("stall");
    fs::write(&stall, "").unwrap();
    let bins = stalling_bin_dir(tmp.path(), &stall);
    let out = tmp.path().join("out");
    let args = ["run-one", s(&grid), "--index", "0", "--out", s(&out)];
    let mut first = sweep_cmd(None, &args)
        .env("TASER_BIN_DIR", &bins)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the first holds the score task's lock and its step runs.
    let t0 = Instant::now();
    let lock = loop {
        let found = fs::read_dir(out.join("scores")).ok().and_then(|d| {
            d.flatten()
                .map(|e| e.path())
                .find(|p| p.join("score-precompute.stderr.log").exists())
        });
        if let Some(dir) = found {
            break dir.join("lock");
        }
        assert!(
            first.try_wait().unwrap().is_none(),
            "the first run-one ended early"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no score task started"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    assert!(lock.exists(), "the killed holder's lock file stays");
    fs::remove_file(&stall).unwrap();
    let mut second = sweep_cmd(None, &args)
        .env("TASER_BIN_DIR", &bins)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while second.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(240) {
            let _ = second.kill();
            panic!("the next run-one still waits for the killed holder's lock");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let o = second.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("waiting for"), "{}", stderr(&o));
    assert!(sweep(None, &["collect", s(&out)]).status.success());
    assert_eq!(results(&out)[0]["status"], "ok");
}

#[test]
fn mpirun_a_misspelt_grid_flag_is_refused_before_any_job_with_its_line_and_the_real_flag() {
    let tmp = tempfile::tempdir().unwrap();
    for (from, to, key, real) in [
        ("n-eval = 50", "n_eval = 50", "attack.n_eval", "--n-eval"),
        ("lr = [0.02", "lr_rate = [0.02", "axes.lr_rate", "--lr"),
    ] {
        let grid = tiny_grid(tmp.path(), "typo", 1, "0", "");
        let text = fs::read_to_string(&grid).unwrap();
        let line = text[..text.find(from).unwrap()].matches('\n').count() + 1;
        fs::write(&grid, text.replace(from, to)).unwrap();
        let out = tmp.path().join(format!("out-{line}"));
        let plan = sweep(None, &["plan", s(&grid), "--out", s(&out)]);
        let run = sweep(Some(2), &["run", s(&grid), "--out", s(&out)]);
        for o in [&plan, &run] {
            let e = stderr(o);
            assert_eq!(o.status.code(), Some(2), "{key}: {e}");
            assert!(e.contains(&format!("line {line}, key `{key}`")), "{e}");
            assert!(
                e.contains(&format!("'{real}'")),
                "{key}: no suggestion in {e}"
            );
        }
        // Nothing ran: no job folder holds an attempt.
        assert!(
            !out.join("jobs").exists()
                || job_dirs(&out)
                    .iter()
                    .all(|(_, f)| !f.contains(&"attempts.log".to_string())),
            "{key}: a job started"
        );
    }
}

#[test]
fn mpirun_sigterm_to_every_rank_exits_3_with_results() {
    let tmp = tempfile::tempdir().unwrap();
    let grid = tiny_grid(tmp.path(), "ranks", 6, "0, 1, 2", "");
    let out = tmp.path().join("out");
    let mut child = sweep_cmd(Some(2), &["run", s(&grid), "--out", s(&out)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // As Slurm stops a step (scancel, time limit): SIGTERM to every rank.
    wait_for_first_result(&mut child, &out, 6);
    for pid in ranks_of(child.id()).values() {
        // SAFETY: kill(2) of a rank of the mpirun this test started.
        unsafe {
            libc::kill(*pid, libc::SIGTERM);
        }
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(3), "{}\n{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("failed = 0"), "{}", stdout(&o));
    let rows = results(&out);
    assert_eq!(rows.len(), 6);
    assert!(rows.iter().any(|r| r["status"] == "ok"), "{rows:?}");
    assert!(rows.iter().all(|r| r["status"] != "failed"), "{rows:?}");
}

#[test]
fn a_failed_score_task_counts_as_failed_with_its_dependants() {
    let tmp = tempfile::tempdir().unwrap();
    let grid = tmp.path().join("bad-scores.toml");
    let text = "steps = [\"train\"]\n\n[scores.bad]\ndataset = \"digits\"\nsource = \"gaussian\"\n\
                shrinkage = 5\n\n[train]\ndataset = \"digits\"\nmodel = \"mlp\"\nepochs = 1\n\
                lambda = 0.01\nscores = \"@bad\"\n";
    fs::write(&grid, text).unwrap();
    let out = tmp.path().join("out");
    let o = sweep(
        None,
        &["run", s(&grid), "--out", s(&out), "--device", "cpu"],
    );
    let so = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{so}\n{}", stderr(&o));
    assert!(so.contains("failed = 2"), "{so}");
    assert!(
        stderr(&o).contains("failed job score:bad"),
        "{}",
        stderr(&o)
    );
}

/// A `train → finetune → attack` grid of one tiny mlp base (`epochs`
/// epochs) fine-tuned `epochs` epochs with two teacher weights α, each
/// evaluated by a 5-step PGD on 50 points; `extra` is appended.
fn chain_grid(dir: &Path, name: &str, epochs: usize, base_axes: &str, extra: &str) -> PathBuf {
    let text = format!(
        r#"name = "{name}"
steps = ["train", "finetune", "attack"]

[axes]
seed = [0]
{base_axes}
finetune.alpha = [0, 1]

[train]
dataset = "digits"
model = "mlp"
mlp-hidden = "32"
epochs = {epochs}
threads = 1

[finetune]
epochs = {epochs}
threads = 1

[attack]
attacks = "pgd5"
eps = "0.2"
n-eval = 50
threads = 1
{extra}"#
    );
    let p = dir.join(format!("{name}.toml"));
    fs::write(&p, text).unwrap();
    p
}

/// Job folders (base folders included) whose `step`'s stdout log exists
/// but whose `step.done` marker does not: the step is running.
fn running(out: &Path, step: &str) -> Vec<String> {
    fs::read_dir(out.join("jobs"))
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    let p = e.path();
                    p.join(format!("{step}.stdout.log")).exists()
                        && !p.join(format!("{step}.done")).exists()
                })
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Starts a lone sweep, waits until `step` runs in some job folder, sends
/// SIGTERM and checks it stopped cleanly (exit status 3); returns the
/// folders that were running the step.
fn stop_during(grid: &Path, out: &Path, step: &str) -> Vec<String> {
    let mut child = sweep_cmd(None, &["run", s(grid), "--out", s(out)])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let busy = loop {
        let r = running(out, step);
        if !r.is_empty() {
            break r;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the sweep ended before {step} ran"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "{step} did not start in 2 minutes"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // SAFETY: kill(2) of the child this test started.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    busy
}

/// Each job folder's attempts.log line count and `done` marker text.
fn attempts_and_done(out: &Path) -> BTreeMap<String, (usize, Option<String>)> {
    fs::read_dir(out.join("jobs"))
        .unwrap()
        .flatten()
        .map(|e| {
            let p = e.path();
            let n = fs::read_to_string(p.join("attempts.log"))
                .map(|t| t.lines().count())
                .unwrap_or(0);
            let done = fs::read_to_string(p.join("done")).ok();
            (e.file_name().to_string_lossy().into_owned(), (n, done))
        })
        .collect()
}

#[test]
fn a_chained_sweep_shares_its_base_and_resumes_after_kills_in_a_base_and_a_fine_tune() {
    let tmp = tempfile::tempdir().unwrap();
    let grid = chain_grid(tmp.path(), "chain", 6, "", "");
    let out = tmp.path().join("out");
    let plan = stdout(&sweep(None, &["plan", s(&grid), "--out", s(&out)]));
    assert!(
        plan.contains("1 base model(s)")
            && plan.contains("3 job(s): 1 baseline evaluation(s) + 2 fine-tune(s)"),
        "{plan}"
    );
    assert!(plan.contains("(shared by 3 job(s))"), "{plan}");
    // Stopped while the base trains: nothing is finished, nothing failed.
    let bases = stop_during(&grid, &out, "train");
    assert_eq!(bases.len(), 1);
    let base = bases[0].clone();
    let rows = results(&out);
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(rows.iter().all(|r| r["status"] == "pending"), "{rows:?}");
    // Stopped again while a fine-tune runs: the base is finished by then.
    let tuning = stop_during(&grid, &out, "finetune");
    assert!(!tuning.contains(&base));
    assert!(out.join("jobs").join(&base).join("done").exists());
    let before = attempts_and_done(&out);
    assert_eq!(
        before[&base].0, 2,
        "the base ran in the first two sweeps only"
    );
    let rows = results(&out);
    assert!(rows.iter().all(|r| r["status"] != "failed"), "{rows:?}");
    assert!(rows.iter().any(|r| r["status"] == "pending"), "{rows:?}");
    // The rerun does only what is missing: the base and every finished
    // point are neither run again nor rewritten.
    let o = sweep(None, &["run", s(&grid), "--out", s(&out)]);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let after = attempts_and_done(&out);
    for (id, (n, done)) in &before {
        if done.is_some() {
            assert_eq!(&after[id], &(*n, done.clone()), "finished {id} ran again");
        } else {
            assert_eq!(after[id].0, n + 1, "unfinished {id} ran once more");
        }
    }
    for id in &tuning {
        let err =
            fs::read_to_string(out.join("jobs").join(id).join("finetune.stderr.log")).unwrap();
        let from = out
            .join("jobs")
            .join(&base)
            .join("train")
            .join("model.safetensors");
        assert!(err.contains(&format!("--from {}", from.display())), "{err}");
    }
    let rows = results(&out);
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r["status"] == "ok"), "{rows:?}");
    let stages: Vec<&str> = rows.iter().map(|r| r["stage"].as_str()).collect();
    assert_eq!(stages, ["base", "finetune", "finetune"]);
    // Every row carries the shared base's metrics; fine-tunes their own too.
    let base_acc = &rows[0]["train_test_acc"];
    assert!(!base_acc.is_empty());
    for r in &rows[1..] {
        assert_eq!(&r["train_test_acc"], base_acc);
        assert!(!r["finetune_test_acc"].is_empty() && !r["attack_acc_pgd5"].is_empty());
    }
    assert_eq!(rows[0]["finetune.alpha"], "");
    assert_eq!(rows[1]["finetune.alpha"], "0");
}

#[test]
fn a_failed_base_marks_its_baseline_and_fine_tunes_as_not_run() {
    let tmp = tempfile::tempdir().unwrap();
    // train.optimizer = "bogus" is refused by train: that base fails.
    let grid = chain_grid(
        tmp.path(),
        "bad-base",
        1,
        "train.optimizer = [\"sgd\", \"bogus\"]",
        "",
    );
    let out = tmp.path().join("out");
    let o = sweep(None, &["run", s(&grid), "--out", s(&out)]);
    assert_eq!(o.status.code(), Some(1), "{}\n{}", stdout(&o), stderr(&o));
    let rows = results(&out);
    assert_eq!(rows.len(), 6, "{rows:?}");
    let (bad, good): (Vec<_>, Vec<_>) = rows.iter().partition(|r| r["train.optimizer"] == "bogus");
    assert_eq!(bad.len(), 3);
    assert!(good.iter().all(|r| r["status"] == "ok"), "{good:?}");
    for r in &bad {
        assert_eq!(r["status"], "failed", "{r:?}");
        assert_eq!(r["failed_step"], "dependency", "{r:?}");
        assert!(
            r["error"].starts_with("not run: base:")
                && r["error"].contains("step train, exit code 2")
                && r["error"].contains("invalid value 'bogus'"),
            "{r:?}"
        );
    }
    let err = stderr(&o);
    assert!(err.contains("failed job base:"), "{err}");
    assert!(stdout(&o).contains("failed = 4"), "{}", stdout(&o));
}

#[test]
fn run_one_of_a_fine_tune_trains_its_base_first_and_a_second_reuses_it() {
    let tmp = tempfile::tempdir().unwrap();
    let grid = chain_grid(tmp.path(), "chain-array", 1, "", "");
    let out = tmp.path().join("out");
    for index in ["1", "2"] {
        let o = sweep(
            None,
            &["run-one", s(&grid), "--index", index, "--out", s(&out)],
        );
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let runs = attempts_and_done(&out);
    let bases: Vec<_> = runs
        .iter()
        .filter(|(id, _)| out.join("jobs").join(id).join("train").is_dir())
        .collect();
    assert_eq!(bases.len(), 1, "{runs:?}");
    assert_eq!(
        bases[0].1 .0, 1,
        "the base trained once for both fine-tunes"
    );
    let c = sweep(None, &["collect", s(&out)]);
    assert!(
        stdout(&c).contains("jobs = 3")
            && stdout(&c).contains("ok = 2")
            && stdout(&c).contains("pending = 1"),
        "{}",
        stdout(&c)
    );
    let rows = results(&out);
    let status: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r["stage"].as_str(), r["status"].as_str()))
        .collect();
    // The baseline evaluation (index 0) was not asked for: collect counts
    // it as pending (run-one writes every point's config.json).
    assert_eq!(
        status,
        [("base", "pending"), ("finetune", "ok"), ("finetune", "ok")]
    );
    assert_eq!(rows[1]["index"], "1");
}

/// The `checkpoints` column of an evaluation's summary.csv.
fn evaluated_checkpoint(eval: &Path) -> String {
    let mut r = csv::Reader::from_path(eval.join("summary.csv")).expect("summary.csv");
    let at = r.headers().unwrap().iter().position(|h| h == "checkpoint");
    let row = r.records().next().unwrap().unwrap();
    row[at.expect("a checkpoint column")].to_string()
}

#[test]
fn the_attack_step_evaluates_the_best_and_the_last_checkpoint_of_each_point() {
    let tmp = tempfile::tempdir().unwrap();
    // Two epochs with a validation split; the second point keeps the best
    // epoch in model.safetensors (--select best), so its last weights are
    // model-last.safetensors.
    let extra = "val-size = 100\nval-attack = \"none\"\n";
    let grid = tiny_grid(tmp.path(), "ckpts", 2, "0", "");
    let text = fs::read_to_string(&grid)
        .unwrap()
        .replace("steps = [", "checkpoints = [\"best\", \"last\"]\nsteps = [")
        .replace("lr = [0.02, 0.05]", "select = [\"last\", \"best\"]")
        .replace(
            "threads = 1\n\n[attack]",
            &format!("threads = 1\n{extra}\n[attack]"),
        );
    fs::write(&grid, text).unwrap();
    let plan = sweep(None, &["plan", s(&grid)]);
    assert!(plan.status.success(), "{}", stderr(&plan));
    assert!(
        stdout(&plan).contains("chain train → attack [best] [last]"),
        "{}",
        stdout(&plan)
    );
    let out = tmp.path().join("out");
    let o = sweep(
        None,
        &["run", s(&grid), "--out", s(&out), "--device", "cpu"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = results(&out);
    assert_eq!(rows.len(), 2);
    for row in &rows {
        assert_eq!(row["status"], "ok", "{row:?}");
        let dir = PathBuf::from(&row["dir"]);
        let weights = |c: &str| evaluated_checkpoint(&dir.join(format!("eval-{c}")));
        let last = if row["select"] == "best" {
            "model-last.safetensors"
        } else {
            "model.safetensors"
        };
        assert!(
            weights("best").ends_with("train/model-best.safetensors"),
            "{row:?}"
        );
        assert!(
            weights("last").ends_with(&format!("train/{last}")),
            "{row:?}"
        );
        assert!(
            !dir.join("eval").exists(),
            "no single evaluation beside them"
        );
        for c in ["best", "last"] {
            let acc: f64 = row[&format!("attack_{c}_clean_acc")].parse().unwrap();
            assert!((0.0..=1.0).contains(&acc), "{row:?}");
            assert!(row[&format!("per_sample_{c}")].ends_with(&format!("eval-{c}/per_sample.csv")));
            assert!(dir.join(format!("attack-{c}.done")).is_file());
        }
        // Only the per-checkpoint columns: no single evaluation's.
        assert!(row.get("attack_clean_acc").is_none(), "{row:?}");
    }
    // `best` without a validation split is refused at its line.
    let bad = tmp.path().join("bad.toml");
    let text = fs::read_to_string(&grid).unwrap().replace(extra, "");
    fs::write(
        &bad,
        text.replace("select = [\"last\", \"best\"]", "select = [\"last\"]"),
    )
    .unwrap();
    let o = sweep(None, &["plan", s(&bad)]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("line 2") && err.contains("checkpoints"),
        "{err}"
    );
    assert!(err.contains("val-size"), "{err}");
}
