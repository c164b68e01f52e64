//! One task of a sweep (a shared score-precompute, or a grid point's chain)
//! and how a worker runs it: every step a child process with its logs in the
//! task's directory, a `<step>.done` marker after each step and a `done`
//! marker after the last, all written atomically, so a kill at any moment
//! leaves either a finished step or one that is rerun.
use super::grid::{to_args, FlagValue, Flags, Grid, JobSpec, Step};
use super::{lock, signal};
use crate::attack::results::read_summary;
use crate::error::{Error, Result};
use crate::fsutil::{write_atomically, write_bytes_atomically};
use crate::layout::{self, JobDir};
use serde_json::{json, Value as Json};
use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
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
/// attempts logs and lock files, and when this sweep started (unix
/// seconds): a task another process recorded as failed since then is that
/// process's outcome for this sweep, not something to retry.
#[derive(Clone, Debug)]
pub struct Worker {
    /// Folder of the suite's binaries.
    pub bin_dir: PathBuf,
    /// Device of the jobs (`cpu`, `cuda:N`).
    pub device: String,
    /// `rank=R/N host=H` or `array-index=I`.
    pub name: String,
    /// Start of this sweep process (unix seconds).
    pub since: f64,
}

impl Worker {
    /// A worker started now.
    pub fn new(bin_dir: &Path, device: &str, name: String) -> Worker {
        Worker {
            bin_dir: bin_dir.to_path_buf(),
            device: device.to_string(),
            name,
            since: now_unix(),
        }
    }
}

/// A unit of work that one worker runs.
#[derive(Clone, Debug)]
pub struct Task {
    /// `score:<name>` or the grid point's id.
    pub id: String,
    /// Directory of its logs, markers and outputs.
    pub dir: PathBuf,
    /// The chain.
    pub steps: Vec<StepRun>,
    /// Indices (in the task list) of the tasks that must finish first.
    pub deps: Vec<usize>,
    /// Grid point (None for a score task).
    pub job: Option<JobSpec>,
}

/// Every task of a grid: the score tasks first, then the grid points.
pub fn tasks(grid: &Grid, out: &Path) -> Vec<Task> {
    let mut tasks = Vec::new();
    let mut score_path = BTreeMap::new();
    let mut score_index = BTreeMap::new();
    for (name, spec) in &grid.scores {
        let dir = out
            .join(layout::SCORES_DIR)
            .join(format!("{name}-{}", spec.id));
        let file = dir.join(layout::SCORES);
        let mut args = to_args(&spec.flags);
        args.push("--out".into());
        args.push(file.display().to_string());
        args.push("--overwrite".into()); // a retry after a crash past the rename replaces the file
        score_index.insert(name.clone(), tasks.len());
        score_path.insert(name.clone(), file);
        tasks.push(Task {
            id: format!("score:{name}"),
            dir,
            steps: vec![StepRun {
                label: "score-precompute".into(),
                binary: "score-precompute".into(),
                args,
                resume_if: None,
            }],
            deps: Vec::new(),
            job: None,
        });
    }
    let model = grid.model_step();
    for job in grid.jobs() {
        let job_dir = JobDir::at(out.join(layout::JOBS_DIR).join(&job.id));
        let model_dir = job_dir.train_step(model.name());
        let mut steps = Vec::new();
        for step in &grid.steps {
            let mut flags: Flags = job.flags[step].clone();
            for v in flags.values_mut() {
                if let FlagValue::One(s) = v {
                    if let Some(name) = s.strip_prefix('@') {
                        *v = FlagValue::One(score_path[name].display().to_string());
                    }
                }
            }
            let mut args = to_args(&flags);
            let resume_if = match step {
                Step::Train | Step::Finetune => {
                    args.push("--out".into());
                    args.push(model_dir.dir().display().to_string());
                    // train/finetune write a resume state every epoch; a
                    // restarted job continues it instead of starting over.
                    Some((model_dir.resume_state(), vec!["--resume".into()]))
                }
                Step::Attack => {
                    args.push("--checkpoint".into());
                    args.push(model_dir.weights().display().to_string());
                    args.push("--out".into());
                    args.push(job_dir.eval().dir().display().to_string());
                    // attack resumes itself from its state file.
                    None
                }
            };
            steps.push(StepRun {
                label: step.name().into(),
                binary: step.name().into(),
                args,
                resume_if,
            });
        }
        let deps = job.needs_scores.iter().map(|n| score_index[n]).collect();
        tasks.push(Task {
            id: job.id.clone(),
            dir: job_dir.0,
            steps,
            deps,
            job: Some(job),
        });
    }
    tasks
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

fn read_json(path: &Path) -> Option<Json> {
    fs::read_to_string(path)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
}

impl Task {
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
            "kind": if job.is_some() { "job" } else { "score" },
            "index": job.map(|j| j.index),
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
            &json!({"step": step, "exit_code": code, "error": error, "at": now_unix()}),
        )
    }

    /// The failure another process recorded for this task since `since`
    /// (unix seconds), if any.
    fn failed_since(&self, since: f64) -> bool {
        read_json(&self.folder().failed())
            .and_then(|v| v["at"].as_f64())
            .is_some_and(|at| at >= since)
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
        if self.failed_since(w.since) {
            return Ok(Outcome::Failed);
        }
        self.clear_failure()?;
        let (bin_dir, device, worker) = (&w.bin_dir, w.device.as_str(), &w.name);
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
            args.push("--device".into());
            args.push(device.into());
            let started = Instant::now();
            let (status, err_tail) =
                run_child(&bin_dir.join(&step.binary), &args, &self.dir, &step.label)?;
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
            &json!({"status": "ok", "seconds": seconds, "metrics": metrics, "at": now_unix()}),
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

    /// The metrics of a finished grid point: the model step's `model.json`
    /// metrics (prefixed with the step's name) and attack's summary row
    /// (prefixed `attack_`), plus where its per-sample CSV is.
    pub fn metrics(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for step in &self.steps {
            match step.label.as_str() {
                "train" | "finetune" => {
                    let sidecar = self.folder().train_step(&step.label).sidecar();
                    if let Some(Json::Object(m)) = read_json(&sidecar).map(|v| v["metrics"].clone())
                    {
                        for (k, v) in m {
                            let text = match v {
                                Json::Number(n) => n.to_string(),
                                Json::String(s) => s,
                                other => other.to_string(),
                            };
                            out.insert(format!("{}_{k}", step.label), text);
                        }
                    }
                }
                "attack" => {
                    let eval = self.folder().eval();
                    let summary = eval.summary();
                    // An unfinished or unreadable summary leaves the columns empty.
                    if let Ok(row) = read_summary(&summary) {
                        for (h, v) in row.values {
                            if h != "checkpoint" {
                                out.insert(format!("attack_{h}"), v);
                            }
                        }
                    }
                    out.insert("per_sample".into(), eval.per_sample().display().to_string());
                }
                _ => {}
            }
        }
        out
    }
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

fn run_child(bin: &Path, args: &[String], dir: &Path, label: &str) -> Result<(ChildEnd, String)> {
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
    let _ = writeln!(err, "# {} {}", bin.display(), args.join(" "));
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .stdin(Stdio::null())
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
            // A step killed by a signal (or ending while a stop is pending)
            // did not fail on its own: it is rerun, not recorded as failed.
            if killed || (term_sent.is_some() && !status.success()) {
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
                    // SAFETY: plain kill(2) of our own child's pid.
                    unsafe {
                        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
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

/// The status of a task directory as results.csv gives it.
pub fn dir_status(dir: &Path) -> (&'static str, Option<Json>) {
    if let Some(v) = read_json(&JobDir::at(dir).done()) {
        ("ok", Some(v))
    } else if let Some(v) = read_json(&JobDir::at(dir).failed()) {
        ("failed", Some(v))
    } else {
        ("pending", None)
    }
}

/// Writes `rows` (header first) to `path` atomically.
pub fn write_csv(path: &Path, rows: &[Vec<String>]) -> Result<()> {
    write_atomically(path, |tmp| {
        let csv_err = |e: csv::Error| Error::OutputFailed {
            path: tmp.to_path_buf(),
            reason: e.to_string(),
        };
        let mut w = csv::Writer::from_path(tmp).map_err(csv_err)?;
        for r in rows {
            w.write_record(r).map_err(csv_err)?;
        }
        w.flush().map_err(|e| Error::io(tmp, e))
    })
}
