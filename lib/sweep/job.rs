//! One task of a sweep (a shared score-precompute, or a grid point's chain)
//! and how a worker runs it: every step a child process with its logs in the
//! task's directory, a `<step>.done` marker after each step and a `done`
//! marker after the last, all written atomically, so a kill at any moment
//! leaves either a finished step or one that is rerun.
use super::grid::{Grid, JobSpec};
use super::slot::{Slot, StepCommand};
use super::status::JobStatus;
use super::{lock, signal};
use crate::attack::results::read_summary;
use crate::error::{Error, Result};
use crate::fsutil::write_bytes_atomically;
use crate::layout::{self, JobDir, TrainRun};
use crate::runtime::RuntimeRecord;

pub use super::expand::tasks;
use serde_json::{json, Value as Json};
use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// How a task ended on a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every step finished; the `done` marker is written.
    Ok,
    /// A step exited non-zero; `failed.json` records it.
    Failed,
    /// Stopped by a signal; nothing is marked, a rerun continues it.
    Interrupted,
}

impl Outcome {
    /// Wire code of the outcome in MPI messages.
    pub fn code(self) -> i64 {
        match self {
            Outcome::Ok => 0,
            Outcome::Failed => 1,
            Outcome::Interrupted => 2,
        }
    }

    /// Inverse of [`Outcome::code`].
    pub fn from_code(c: i64) -> Outcome {
        match c {
            0 => Outcome::Ok,
            1 => Outcome::Failed,
            _ => Outcome::Interrupted,
        }
    }
}

/// One process of a task's chain.
#[derive(Clone, Debug)]
pub struct StepRun {
    /// Label: the binary's name (logs and markers are named after it).
    pub label: String,
    /// The binary to run.
    pub binary: String,
    /// Its arguments, without --device (added by the worker that runs it).
    pub args: Vec<String>,
    /// Extra arguments when the step's output holds a resume state.
    pub resume_if: Option<(PathBuf, Vec<String>)>,
}

/// Who runs tasks: the binaries' folder, the device, the worker's name in
/// attempts logs and lock files, and each task's failure record as it was
/// when the worker started: a task whose record changed since then was
/// failed by another process of this sweep (its outcome, not something to
/// retry). No clock is compared: a record written by a host whose clock
/// runs ahead is still an old record.
#[derive(Clone, Debug)]
pub struct Worker {
    /// Folder of the suite's binaries.
    pub bin_dir: PathBuf,
    /// The devices of its jobs and how their steps start.
    pub slot: Slot,
    /// `rank=R/N host=H` or `array-index=I`.
    pub name: String,
    /// The text of each task's failed.json when the worker started (None:
    /// no readable record), by task folder.
    pub failures_at_start: BTreeMap<PathBuf, Option<String>>,
}

impl Worker {
    /// A worker started now that runs (some of) `tasks`.
    pub fn new(bin_dir: &Path, slot: Slot, name: String, tasks: &[WorkItem]) -> Worker {
        let failures_at_start = tasks
            .iter()
            .map(|t| (t.dir.clone(), t.failure_record()))
            .collect();
        Worker {
            bin_dir: bin_dir.to_path_buf(),
            slot,
            name,
            failures_at_start,
        }
    }
}

/// A token that no other failure record shares: host, process and a
/// per-process count (the time is part of it only to tell apart processes
/// that reuse a pid; it is never compared).
fn attempt_token() -> String {
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(
        "host={} pid={} n={n} t={:.6}",
        super::lock::host_name(),
        std::process::id(),
        now_unix()
    )
}

/// What a task is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A shared score-precompute.
    Score,
    /// A shared base model of the `train → finetune → attack` chain.
    Base,
    /// A grid point: one results.csv row (in the three-step chain a
    /// baseline evaluation of a base, or a fine-tune and its evaluation).
    Point,
}

impl Kind {
    /// The `kind` of config.json.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Score => "score",
            Kind::Base => "base",
            Kind::Point => "job",
        }
    }
}

/// A unit of work that one worker runs: a shared score file, a shared base
/// model, or a grid point (a job: one results.csv row). (The data set's
/// `data::Task` is what a model predicts; this is what a rank runs.)
#[derive(Clone, Debug)]
pub struct WorkItem {
    /// `score:<name>`, `base:<id>` or the grid point's id.
    pub id: String,
    /// What it is.
    pub kind: Kind,
    /// Directory of its logs, markers and outputs.
    pub dir: PathBuf,
    /// The chain.
    pub steps: Vec<StepRun>,
    /// Indices (in the task list) of the tasks that must finish first.
    pub deps: Vec<usize>,
    /// Grid point (for a base: the first point that uses it).
    pub job: Option<JobSpec>,
    /// The base model's folder a point of the three-step chain starts from
    /// (its `train` metrics go into the point's row).
    pub base_model: Option<PathBuf>,
}

fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn write_json(path: &Path, v: &Json) -> Result<()> {
    let text = serde_json::to_string_pretty(v).expect("JSON of plain values");
    write_bytes_atomically(path, text.as_bytes())
}

/// A JSON marker's contents (None when absent or unreadable).
pub(super) fn read_json(path: &Path) -> Option<Json> {
    fs::read_to_string(path)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
}

impl WorkItem {
    /// The task's folder and the marker and log files in it.
    pub fn folder(&self) -> JobDir {
        JobDir::at(&self.dir)
    }

    /// Whether the task's `done` marker exists.
    pub fn is_done(&self) -> bool {
        self.folder().done().is_file()
    }

    /// Writes the resolved configuration (before any step runs, so `sweep
    /// collect` lists tasks that never started as pending).
    pub fn write_config(&self, grid: &Grid) -> Result<()> {
        fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        let steps: Vec<Json> = self
            .steps
            .iter()
            .map(|s| json!({"step": s.label, "binary": s.binary, "args": s.args}))
            .collect();
        let job = self.job.as_ref();
        let v = json!({
            "id": self.id,
            "grid": grid.path.display().to_string(),
            "grid_name": grid.name,
            "kind": self.kind.name(),
            "index": job.filter(|_| self.kind == Kind::Point).map(|j| j.index),
            "params": job.map(|j| j.params.clone()).unwrap_or_default(),
            "steps": steps,
            "version": crate::VERSION,
        });
        write_json(&self.folder().config(), &v)
    }

    /// Records a failure in `failed.json` (a step failed, or a dependency
    /// did). A finished task (`done`) is left alone: `done` is never beside
    /// `failed.json`.
    pub fn record_failure(&self, step: &str, code: Option<i32>, error: &str) -> Result<()> {
        fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        if self.is_done() {
            return Ok(());
        }
        write_json(
            &self.folder().failed(),
            &json!({"step": step, "exit_code": code, "error": error, "at": now_unix(),
                    "attempt": attempt_token()}),
        )
    }

    /// The text of the task's failed.json (None when absent or unreadable).
    fn failure_record(&self) -> Option<String> {
        fs::read_to_string(self.folder().failed()).ok()
    }

    /// Whether a failure was recorded for this task after worker `w`
    /// started: failed.json exists and is not the record `w` saw at its
    /// start (each record carries a unique `attempt` token).
    fn failed_since_start(&self, w: &Worker) -> bool {
        let now = self.failure_record();
        now.is_some() && w.failures_at_start.get(&self.dir) != Some(&now)
    }

    /// Runs the chain's unfinished steps with the worker's device and
    /// binaries, holding the task's lock ([`lock::acquire`]) throughout, so
    /// one task never runs twice at once: a second sweep on the same --out
    /// waits for the holder and takes its outcome (`done`, or a failure
    /// recorded since the worker started) instead of running the task again.
    pub fn run(&self, w: &Worker) -> Result<Outcome> {
        if self.is_done() {
            return Ok(Outcome::Ok);
        }
        let Some(_lock) = lock::acquire(&self.dir, &self.id, &w.name)? else {
            return Ok(Outcome::Interrupted);
        };
        if self.is_done() {
            return Ok(Outcome::Ok);
        }
        if self.failed_since_start(w) {
            return Ok(Outcome::Failed);
        }
        self.clear_failure()?;
        let (bin_dir, worker, device) = (&w.bin_dir, &w.name, w.slot.describe());
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.folder().attempts())
            .map_err(|e| Error::io(self.folder().attempts(), e))?;
        writeln!(log, "{:.3} {worker} device={device}", now_unix())
            .map_err(|e| Error::io(self.folder().attempts(), e))?;
        let mut seconds = BTreeMap::new();
        for step in &self.steps {
            let marker = self.dir.join(layout::step_done(&step.label));
            if let Some(m) = read_json(&marker) {
                seconds.insert(step.label.clone(), m["seconds"].as_f64().unwrap_or(0.0));
                continue;
            }
            if signal::stop_requested() {
                return Ok(Outcome::Interrupted);
            }
            let mut args = step.args.clone();
            if let Some((state, extra)) = &step.resume_if {
                if state.is_file() {
                    args.extend(extra.iter().cloned());
                }
            }
            let model_step = matches!(step.binary.as_str(), "train" | "finetune");
            let command = w
                .slot
                .command(&bin_dir.join(&step.binary), &args, model_step);
            let started = Instant::now();
            let (status, err_tail) = run_child(command, &self.dir, &step.label)?;
            let secs = started.elapsed().as_secs_f64();
            match status {
                ChildEnd::Exited(0) => {
                    write_json(&marker, &json!({"seconds": secs, "at": now_unix()}))?;
                    seconds.insert(step.label.clone(), secs);
                }
                ChildEnd::Interrupted => return Ok(Outcome::Interrupted),
                ChildEnd::Exited(code) => {
                    self.record_failure(&step.label, Some(code), &err_tail)?;
                    return Ok(Outcome::Failed);
                }
                ChildEnd::Spawn(reason) => {
                    self.record_failure(&step.label, None, &reason)?;
                    return Ok(Outcome::Failed);
                }
            }
        }
        let metrics = self.metrics();
        // failed.json goes before done appears, so no reader ever sees both.
        self.clear_failure()?;
        write_json(
            &self.folder().done(),
            &json!({"status": JobStatus::Ok.as_str(), "seconds": seconds, "metrics": metrics, "at": now_unix()}),
        )?;
        Ok(Outcome::Ok)
    }

    /// Removes an earlier attempt's failed.json.
    fn clear_failure(&self) -> Result<()> {
        let path = self.folder().failed();
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(&path, e)),
            _ => Ok(()),
        }
    }

    /// The metrics of a finished grid point: the model steps' `model.json`
    /// metrics (prefixed with the step's name; a chain's base as `train_`)
    /// and attack's summary row (prefixed `attack_`, or `attack_<checkpoint>_`
    /// per evaluated checkpoint), plus where its per-sample CSV is
    /// (`per_sample`, or `per_sample_<checkpoint>`).
    pub fn metrics(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if let Some(base) = &self.base_model {
            sidecar_metrics(&TrainRun(base.clone()).sidecar(), "train", &mut out);
        }
        for step in &self.steps {
            match step.binary.as_str() {
                "train" | "finetune" => {
                    let sidecar = self.folder().train_step(&step.label).sidecar();
                    sidecar_metrics(&sidecar, &step.label, &mut out);
                }
                "attack" => {
                    // `attack` evaluates into eval/; `attack-<checkpoint>`
                    // into eval-<checkpoint>/, its columns suffixed alike.
                    let (eval, suffix) = match step.label.strip_prefix("attack-") {
                        Some(c) => (self.folder().checkpoint_eval(c), format!("_{c}")),
                        None => (self.folder().eval(), String::new()),
                    };
                    let summary = eval.summary();
                    // An unfinished or unreadable summary leaves the columns empty.
                    if let Ok(row) = read_summary(&summary) {
                        for (h, v) in row.values {
                            if h != "checkpoint" {
                                out.insert(format!("attack{suffix}_{h}"), v);
                            }
                        }
                    }
                    let per_sample = eval.per_sample().display().to_string();
                    out.insert(format!("per_sample{suffix}"), per_sample);
                }
                _ => {}
            }
        }
        out
    }
}

/// Adds the `metrics` of a model.json sidecar to `out` as `<prefix>_<name>`,
/// and what the run computed on (its `runtime` record's columns: `tf32`,
/// `deterministic`, `device_name`, versions) the same way.
fn sidecar_metrics(sidecar: &Path, prefix: &str, out: &mut BTreeMap<String, String>) {
    let json = read_json(sidecar);
    let runtime = json.as_ref().map(|v| v["runtime"].clone());
    if let Some(Ok(record)) = runtime.map(serde_json::from_value::<RuntimeRecord>) {
        for (k, v) in record.columns() {
            out.insert(format!("{prefix}_{k}"), v);
        }
    }
    if let Some(Json::Object(m)) = json.map(|v| v["metrics"].clone()) {
        for (k, v) in m {
            let text = match v {
                Json::Number(n) => n.to_string(),
                Json::String(s) => s,
                other => other.to_string(),
            };
            out.insert(format!("{prefix}_{k}"), text);
        }
    }
}

/// One line of why a task failed, from its failed.json: the step, the exit
/// code and the first `error` line of the error tail (else its last line).
pub fn failure_reason(dir: &Path) -> Option<String> {
    let v = read_json(&JobDir::at(dir).failed())?;
    let err = v["error"].as_str().unwrap_or("");
    let line = err
        .lines()
        .find(|l| l.starts_with("error"))
        .or_else(|| err.lines().last())
        .unwrap_or("");
    let code = match &v["exit_code"] {
        Json::Null => "none".to_string(),
        c => c.to_string(),
    };
    Some(format!(
        "step {}, exit code {code}: {line}",
        v["step"].as_str().unwrap_or("?")
    ))
}

/// The pids of `pid`'s children (empty when the kernel does not list them).
fn children(pid: u32) -> Vec<u32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

enum ChildEnd {
    Exited(i32),
    Interrupted,
    Spawn(String),
}

/// Last `n` lines of `path` from byte `from` on (this attempt's part).
fn tail(path: &Path, from: u64, n: usize) -> String {
    let mut text = String::new();
    if let Ok(mut f) = fs::File::open(path) {
        let _ = f.seek(SeekFrom::Start(from));
        let mut bytes = Vec::new();
        let _ = f.read_to_end(&mut bytes);
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs a step's command (and the words its log shows) with its output
/// appended to the step's logs in `dir`, until it ends or a stop is asked
/// for (SIGTERM to it, SIGKILL 20 s later).
fn run_child(step: StepCommand, dir: &Path, label: &str) -> Result<(ChildEnd, String)> {
    let StepCommand {
        mut cmd,
        shown,
        launcher,
    } = step;
    let program = PathBuf::from(cmd.get_program());
    let bin = program.as_path();
    let open = |name: String| -> Result<(fs::File, u64)> {
        let p = dir.join(name);
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .map_err(|e| Error::io(&p, e))?;
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        Ok((f, len))
    };
    let (out_log, err_log) = layout::step_logs(label);
    let (out, _) = open(out_log)?;
    let err_path = dir.join(&err_log);
    let (mut err, err_start) = open(err_log)?;
    let _ = writeln!(err, "# {shown}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    // SAFETY: prctl is async-signal-safe; it makes the kernel kill the child
    // when the thread that spawned it dies, so a killed sweep never leaves a
    // job writing into a directory that a rerun is about to use.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Ok((
                ChildEnd::Spawn(format!("cannot start {}: {e}", bin.display())),
                String::new(),
            ))
        }
    };
    let mut term_sent: Option<Instant> = None;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| Error::io(bin, e))? {
            let killed = matches!(
                status.signal(),
                Some(libc::SIGTERM) | Some(libc::SIGKILL) | Some(libc::SIGINT)
            );
            // A step killed by a signal (or ending while a stop is pending,
            // or with the interrupted code while one is: the signal reached
            // it before this loop sent one) did not fail on its own: it is
            // rerun, not recorded as failed.
            let interrupted =
                status.code() == Some(i32::from(crate::exit::Status::Interrupted.code()));
            let stopped = signal::stop_requested() && interrupted;
            if killed || (term_sent.is_some() && !status.success()) || stopped {
                return Ok((ChildEnd::Interrupted, String::new()));
            }
            let code = status.code().unwrap_or(-1);
            let tail_text = if code == 0 {
                String::new()
            } else {
                tail(&err_path, err_start, 20)
            };
            return Ok((ChildEnd::Exited(code), tail_text));
        }
        if signal::stop_requested() {
            match term_sent {
                None => {
                    // A launcher's ranks, else the child itself.
                    let mut pids = if launcher {
                        children(child.id())
                    } else {
                        Vec::new()
                    };
                    if pids.is_empty() {
                        pids.push(child.id());
                    }
                    for pid in pids {
                        // SAFETY: plain kill(2) of our child or its children.
                        unsafe {
                            libc::kill(pid as libc::pid_t, libc::SIGTERM);
                        }
                    }
                    term_sent = Some(Instant::now());
                }
                Some(t) if t.elapsed() > Duration::from_secs(20) => {
                    let _ = child.kill();
                }
                Some(_) => {}
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
