//! Helpers shared by the integration tests: run the real binaries on tiny
//! data.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin(name: &str) -> PathBuf {
    let var = format!("CARGO_BIN_EXE_{name}");
    PathBuf::from(std::env::var(&var).unwrap_or_else(|_| panic!("{var} not set by cargo")))
}

pub fn run(name: &str, args: &[&str]) -> Output {
    Command::new(bin(name))
        .args(args)
        .env_remove("TASER_DATA_DIR")
        .output()
        .expect("binary runs")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The venv's python (TASER_PYTHON, set by the Makefile, or .venv/bin/python).
pub fn python() -> PathBuf {
    let p = std::env::var("TASER_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    assert!(p.exists(), "{} missing: run `make setup`", p.display());
    p
}

/// Files in `dir` (names), sorted; empty if `dir` does not exist.
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// `base` flags, then `--out OUT`, then `extra`, as owned strings.
pub fn flags_with_out(base: &[&str], out: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = base.iter().map(|s| s.to_string()).collect();
    v.push("--out".into());
    v.push(out.display().to_string());
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// Runs binary `name` with the whitespace-separated words of `line` as its
/// arguments (paths from tempdirs have no spaces).
pub fn run_line(name: &str, line: &str) -> Output {
    let words: Vec<&str> = line.split_whitespace().collect();
    run(name, &words)
}

/// Column `name` of `out`/metrics.csv, parsed as numbers (one per epoch).
pub fn column(out: &Path, name: &str) -> Vec<f64> {
    let text = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let k = header.iter().position(|h| *h == name).unwrap();
    lines
        .map(|l| l.split(',').nth(k).unwrap().parse().unwrap())
        .collect()
}

/// Rows written so far to `out`/metrics.csv, header excluded (0 if absent).
pub fn metrics_rows(out: &Path) -> usize {
    std::fs::read_to_string(out.join("metrics.csv"))
        .map_or(0, |t| t.lines().count().saturating_sub(1))
}

/// Spawns `train` with `args` (whose `--out` is `out`), kills it (SIGKILL)
/// as soon as `ready(out)` holds or after 120 s, and asserts that it had not
/// finished (no model.json), so that a resume has work left to do.
pub fn kill_train_when(args: &[String], out: &Path, ready: impl Fn(&Path) -> bool) {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let mut child = Command::new(bin("train"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ready(out) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !out.join("model.json").exists(),
        "the run finished before it could be killed; the test needs more epochs"
    );
}

/// The sweep command, under `mpirun -np N` when `ranks` is given.
pub fn sweep_cmd(ranks: Option<usize>, args: &[&str]) -> Command {
    let mut c = match ranks {
        Some(n) => {
            let mut c = Command::new("mpirun");
            c.args(["--oversubscribe", "-np", &n.to_string()])
                .arg(bin("sweep"));
            c
        }
        None => Command::new(bin("sweep")),
    };
    // TASER_DATA_DIR passes through: the jobs read digits from it (or from
    // the repository's data/cache that `make setup` fills).
    c.args(args)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        // The child binaries sit beside `sweep` in cargo's target folder.
        .env("TASER_BIN_DIR", bin("sweep").parent().unwrap());
    c
}
