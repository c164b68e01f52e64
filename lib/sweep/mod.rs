//! The sweep launcher (docs/CLUSTER.md): a grid file ([`grid`]) expands into tasks
//! ([`job`]) that MPI ranks run as they free up, each in its own directory;
//! [`results`] gathers one results.csv row per grid point.
//!
//! Layout of `--out DIR`:
//! ```text
//! DIR/scores/<name>-<id>/   score-precompute output (scores.h5), logs, markers
//! DIR/jobs/<id>/            config.json, attempts.log, <step>.stdout.log,
//!                           <step>.stderr.log, <step>.done, train/ (or
//!                           finetune/), eval/, and `done` or failed.json
//! DIR/results.csv           one row per grid point
//! ```
//!
//! Scheduling: rank 0 hands out tasks whose score dependencies are finished
//! to ranks as they report back, and runs tasks itself on a second thread,
//! so one rank alone runs the whole sweep. Only rank 0's main thread calls
//! MPI, and every wait polls with a sleep, so idle ranks do not spin on the
//! shared cores.
pub mod check;
pub mod devices;
pub mod expand;
pub mod grid;
pub mod job;
pub mod launch;
pub mod lock;
pub mod plan;
pub mod results;
pub mod signal;
pub mod status;

use crate::error::{Error, Result};
use grid::Grid;
use job::{Kind, Outcome, WorkItem, Worker};
use mpi::point_to_point::MatchedReceiveVec;
use mpi::traits::*;
pub use plan::plan_text;
use status::JobStatus;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// Options of `sweep run`.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// The grid file.
    pub grid: PathBuf,
    /// Output directory.
    pub out: PathBuf,
    /// Folder of the suite's binaries (train, attack, …).
    pub bin_dir: PathBuf,
    /// `auto` (node-local rank's CUDA device, else CPU), `cpu` or `cuda:N`.
    pub device: String,
    /// Run failed tasks again (default) or leave them recorded as failed.
    pub retry_failed: bool,
}

/// What rank 0 reports at the end of `sweep run` (other ranks get None).
#[derive(Clone, Debug)]
pub struct RunSummary {
    /// Grid points in the plan.
    pub jobs: usize,
    /// Finished (now or before).
    pub ok: usize,
    /// Ids of failed grid points with their failed step and error tail.
    pub failed: Vec<(String, String)>,
    /// Whether a stop signal ended the run before every task ran.
    pub interrupted: bool,
    /// Where results.csv was written.
    pub results: PathBuf,
}

const TAG: i32 = 7;
const POLL: Duration = Duration::from_millis(25);

/// The device a rank's jobs use: with `auto`, the CUDA device of the
/// node-local rank (modulo the visible devices) when libtorch sees any,
/// otherwise the CPU — unless the job was given a GPU
/// ([`crate::device::expected::gpu_expected`]): then `auto` itself, so each
/// job's binary refuses the missing GPU by its own rule (exit 2).
pub fn pick_device(spec: &str, local_rank: usize) -> String {
    if spec != "auto" {
        return spec.to_string();
    }
    let n = tch::Cuda::device_count().max(0) as usize;
    if n == 0 && crate::device::expected::gpu_expected().is_some() {
        "auto".into()
    } else if n == 0 {
        "cpu".into()
    } else {
        format!("cuda:{}", local_rank % n)
    }
}

/// Rank 0's book of tasks.
struct Book {
    tasks: Vec<WorkItem>,
    state: Vec<JobStatus>,
}

impl Book {
    fn next_ready(&self) -> Option<usize> {
        (0..self.tasks.len()).find(|&i| {
            self.state[i] == JobStatus::Pending
                && self.tasks[i]
                    .deps
                    .iter()
                    .all(|&d| self.state[d] == JobStatus::Ok)
        })
    }

    fn has_pending(&self) -> bool {
        self.state.contains(&JobStatus::Pending)
    }

    /// Records an outcome; a failed score or base task fails its
    /// dependants (they cannot run), recorded as not run with the reason.
    fn record(&mut self, i: usize, outcome: Outcome) {
        self.state[i] = JobStatus::after(outcome);
        if outcome == Outcome::Failed {
            let failed_id = self.tasks[i].id.clone();
            let why = job::failure_reason(&self.tasks[i].dir)
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            for j in 0..self.tasks.len() {
                if self.state[j] == JobStatus::Pending && self.tasks[j].deps.contains(&i) {
                    self.state[j] = JobStatus::Failed;
                    let _ = self.tasks[j].record_failure(
                        "dependency",
                        None,
                        &format!(
                            "not run: {failed_id} failed{why}; see {}",
                            self.tasks[i].folder().failed().display()
                        ),
                    );
                    self.record(j, Outcome::Failed);
                }
            }
        }
    }
}

/// Prepares the plan on rank 0: expands the grid, writes every task's
/// config.json, and marks finished tasks (and, without retry, failed ones).
fn open_book(grid: &Grid, cfg: &RunConfig) -> Result<Book> {
    let tasks = job::tasks(grid, &cfg.out);
    let mut state = Vec::with_capacity(tasks.len());
    for t in &tasks {
        t.write_config(grid)?;
        let s = match JobStatus::on_disk(&t.dir).0 {
            JobStatus::Failed if cfg.retry_failed => JobStatus::Pending,
            s => s,
        };
        state.push(s);
    }
    Ok(Book { tasks, state })
}

/// Absolute form of the output directory, so job command lines and
/// config.json do not depend on the directory the sweep was started from.
fn absolute_out(out: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(out).map_err(|e| Error::Unwritable {
        path: out.to_path_buf(),
        reason: e.to_string(),
    })?;
    out.canonicalize().map_err(|e| Error::io(out, e))
}

/// `sweep run`: runs every unfinished task of the grid on the MPI ranks of
/// this launch (a lone process is a one-rank launch). Returns rank 0's
/// summary; other ranks return None.
pub fn run(cfg: &RunConfig) -> Result<Option<RunSummary>> {
    signal::install();
    let grid = Grid::load(&cfg.grid)?;
    let mut cfg = cfg.clone();
    cfg.out = absolute_out(&cfg.out)?;
    // Funneled: only the main thread calls MPI; rank 0's local worker
    // thread only spawns processes.
    let (universe, _) =
        mpi::initialize_with_threading(mpi::Threading::Funneled).ok_or_else(|| {
            Error::invalid("MPI", "init", "MPI was already initialised in this process")
        })?;
    let world = universe.world();
    let rank = world.rank();
    let size = world.size();
    let local_rank = world.split_shared(rank).rank() as usize;
    let device = pick_device(&cfg.device, local_rank);
    let me = format!("rank={rank}/{size} host={}", lock::host_name());
    let worker = Worker::new(&cfg.bin_dir, &device, me);
    let tasks = job::tasks(&grid, &cfg.out);
    if rank != 0 {
        worker_loop(&world, &tasks, &worker);
        return Ok(None);
    }
    if let Err(e) = check::check_args(&grid, &tasks, &cfg.bin_dir) {
        // No job starts: the other ranks are told to leave before the error.
        retire_all(&world);
        return Err(e);
    }
    let mut book = open_book(&grid, &cfg)?;
    // After the collective split above every rank has its stop handler:
    // slurm/sweep-mpi.sbatch waits for this line before it forwards a
    // time-limit stop to the ranks (keep its "sweep …: … rank(s)" shape).
    eprintln!(
        "sweep {}: {} task(s), {} already finished, {} rank(s); rank 0 on {device}",
        grid.name,
        book.tasks.len(),
        book.state.iter().filter(|s| **s == JobStatus::Ok).count(),
        size
    );
    schedule(&world, &mut book, &cfg.out, &worker)?;
    drop(universe);
    let rows = write_results(&book, &cfg.out)?;
    Ok(Some(summary(&book, &rows, &cfg.out)))
}

/// Rewrites results.csv from the job directories of the book's grid
/// points: after every outcome (so a run killed hard, as mpirun does after
/// forwarding SIGTERM, leaves the table of what finished) and at the end.
fn write_results(book: &Book, out: &Path) -> Result<Vec<results::Row>> {
    let rows: Vec<results::Row> = book
        .tasks
        .iter()
        .filter(|t| t.kind == Kind::Point)
        .filter_map(|t| results::read_row(&t.dir))
        .collect();
    results::write(&out.join(crate::layout::RESULTS), &rows)?;
    Ok(rows)
}

/// The run's verdict from the book — the outcomes this run printed — with
/// each failed point's reason from its failed.json.
fn summary(book: &Book, rows: &[results::Row], out: &Path) -> RunSummary {
    let jobs: Vec<usize> = (0..book.tasks.len())
        .filter(|&i| book.tasks[i].kind == Kind::Point)
        .collect();
    // A failed score or base task counts too, even when no job of this run
    // needed it any more: the run printed it as FAILED.
    let failed_shared = (0..book.tasks.len())
        .filter(|&i| book.tasks[i].kind != Kind::Point && book.state[i] == JobStatus::Failed)
        .map(|i| {
            let task = &book.tasks[i];
            let record = task.folder().failed();
            let why = job::failure_reason(&task.dir).unwrap_or_default();
            (task.id.clone(), format!("{why}; see {}", record.display()))
        });
    let failed = jobs
        .iter()
        .filter(|&&i| book.state[i] == JobStatus::Failed)
        .map(|&i| {
            let id = &book.tasks[i].id;
            let row = rows.iter().find(|r| &r.id == id);
            let (step, code, err) = row.and_then(|r| r.failure.clone()).unwrap_or_default();
            // The first `error:` line says why; else the last line of the tail.
            let last = err
                .lines()
                .find(|l| l.starts_with("error"))
                .or_else(|| err.lines().last())
                .unwrap_or("")
                .to_string();
            (id.clone(), format!("step {step}, exit code {code}: {last}"))
        })
        .chain(failed_shared)
        .collect();
    RunSummary {
        jobs: jobs.len(),
        ok: jobs
            .iter()
            .filter(|&&i| book.state[i] == JobStatus::Ok)
            .count(),
        failed,
        interrupted: book.has_pending(),
        results: out.join(crate::layout::RESULTS),
    }
}

/// Rank 0 when the sweep ends before any job: every other rank's first
/// request is answered with "no work".
fn retire_all(world: &mpi::topology::SimpleCommunicator) {
    let mut left = world.size() - 1;
    while left > 0 {
        match world.any_process().immediate_matched_probe_with_tag(TAG) {
            Some(probe) => {
                let (_, status) = probe.matched_receive_vec::<i64>();
                world
                    .process_at_rank(status.source_rank())
                    .send_with_tag(&[-1i64][..], TAG);
                left -= 1;
            }
            None => std::thread::sleep(POLL),
        }
    }
}

/// Rank 0's loop: collect reports, hand out ready tasks, retire ranks when
/// nothing is left for them (or a stop was requested).
fn schedule(
    world: &mpi::topology::SimpleCommunicator,
    book: &mut Book,
    out: &Path,
    worker: &Worker,
) -> Result<()> {
    let size = world.size();
    let (to_local, local_in) = mpsc::channel::<Option<WorkItem>>();
    let (local_out, from_local) = mpsc::channel::<Outcome>();
    let w = worker.clone();
    let local = std::thread::spawn(move || {
        while let Ok(Some(task)) = local_in.recv() {
            let _ = local_out.send(run_task(&task, &w));
        }
    });
    // The task the local worker is on (it runs one at a time).
    let mut local_running: Option<usize> = None;
    let mut local_retired = false;
    let mut idle: Vec<i32> = Vec::new();
    let mut retired = 0;
    let mut remote_running = vec![None::<usize>; size as usize];
    loop {
        while let Some(probe) = world.any_process().immediate_matched_probe_with_tag(TAG) {
            let (msg, status) = probe.matched_receive_vec::<i64>();
            let src = status.source_rank();
            if msg.len() == 2 && msg[0] >= 0 {
                let i = msg[0] as usize;
                let outcome = Outcome::from_code(msg[1]);
                book.record(i, outcome);
                report(book, i, outcome, src, out);
                remote_running[src as usize] = None;
                if outcome == Outcome::Interrupted {
                    // A rank that was stopped gets no further work.
                    world.process_at_rank(src).send_with_tag(&[-1i64][..], TAG);
                    retired += 1;
                    continue;
                }
            }
            idle.push(src);
        }
        if let Ok(outcome) = from_local.try_recv() {
            let i = local_running
                .take()
                .expect("the local worker reports what it ran");
            book.record(i, outcome);
            report(book, i, outcome, 0, out);
        }
        let stopping = signal::stop_requested();
        if !local_retired && local_running.is_none() {
            match (stopping, book.next_ready()) {
                (false, Some(i)) => {
                    book.state[i] = JobStatus::Running;
                    local_running = Some(i);
                    let _ = to_local.send(Some(book.tasks[i].clone()));
                }
                _ if stopping || !book.has_pending() => {
                    let _ = to_local.send(None);
                    local_retired = true;
                }
                _ => {}
            }
        }
        let mut still_idle = Vec::new();
        for src in idle.drain(..) {
            match (stopping, book.next_ready()) {
                (false, Some(i)) => {
                    book.state[i] = JobStatus::Running;
                    remote_running[src as usize] = Some(i);
                    world
                        .process_at_rank(src)
                        .send_with_tag(&[i as i64][..], TAG);
                }
                _ if stopping || !book.has_pending() => {
                    world.process_at_rank(src).send_with_tag(&[-1i64][..], TAG);
                    retired += 1;
                }
                _ => still_idle.push(src),
            }
        }
        idle = still_idle;
        if local_retired && local_running.is_none() && retired == size - 1 {
            break;
        }
        std::thread::sleep(POLL);
    }
    let _ = local.join();
    Ok(())
}

/// Prints an outcome and brings results.csv up to date with it.
fn report(book: &Book, i: usize, outcome: Outcome, rank: i32, out: &Path) {
    let t = &book.tasks[i];
    let done = book.state.iter().filter(|s| s.is_final()).count();
    let what = match outcome {
        Outcome::Ok => "ok",
        Outcome::Failed => "FAILED",
        Outcome::Interrupted => "interrupted (will rerun)",
    };
    eprintln!(
        "[{done}/{}] {} {what} (rank {rank})",
        book.tasks.len(),
        t.id
    );
    if let Err(e) = write_results(book, out) {
        eprintln!("warning: results.csv not updated: {e}");
    }
}

fn run_task(task: &WorkItem, worker: &Worker) -> Outcome {
    match task.run(worker) {
        Ok(o) => o,
        Err(e) => {
            // The sweep's own I/O failed for this task: record it as the
            // task's failure so the sweep goes on and the table shows it.
            let _ = task.record_failure("sweep", None, &e.to_string());
            Outcome::Failed
        }
    }
}

/// A rank other than 0: ask for work, run it, report, until retired.
fn worker_loop(world: &mpi::topology::SimpleCommunicator, tasks: &[WorkItem], worker: &Worker) {
    let root = world.process_at_rank(0);
    let mut last: [i64; 2] = [-1, 0];
    loop {
        root.send_with_tag(&last[..], TAG);
        let reply = loop {
            if let Some(probe) = root.immediate_matched_probe_with_tag(TAG) {
                break probe.matched_receive_vec::<i64>().0;
            }
            std::thread::sleep(POLL);
        };
        let Some(&i) = reply.first() else { break };
        if i < 0 {
            break;
        }
        let outcome = run_task(&tasks[i as usize], worker);
        last = [i, outcome.code()];
    }
}

/// `sweep run-one`: runs one task by its index among the tasks of its
/// kind, in plan order, without MPI (the job-array form): a grid point
/// ([`Kind::Point`], as `sweep plan` numbers them), a shared base model
/// ([`Kind::Base`]) or a shared score set ([`Kind::Score`]); tasks it
/// depends on run first if not finished.
///
/// Errors: [`Error::InvalidArgument`] (`--index`) when the grid has no
/// such task; the grid's and the task's own errors.
pub fn run_one(cfg: &RunConfig, kind: Kind, index: usize) -> Result<Outcome> {
    signal::install();
    let grid = Grid::load(&cfg.grid)?;
    let mut cfg = cfg.clone();
    cfg.out = absolute_out(&cfg.out)?;
    let tasks = job::tasks(&grid, &cfg.out);
    let jobs: Vec<&WorkItem> = tasks.iter().filter(|t| t.kind == Kind::Point).collect();
    let of_kind: Vec<&WorkItem> = tasks.iter().filter(|t| t.kind == kind).collect();
    let task = *of_kind.get(index).ok_or_else(|| {
        Error::invalid(
            "--index",
            index,
            format!(
                "the grid has {} task(s) of kind {} (--kind), 0-based",
                of_kind.len(),
                kind.name()
            ),
        )
    })?;
    check::check_args(&grid, &tasks, &cfg.bin_dir)?;
    // Every grid point's config.json, as `run` writes them: `sweep collect`
    // then counts the points whose array task never started as pending.
    for t in &jobs {
        if !t.folder().config().exists() {
            t.write_config(&grid)?;
        }
    }
    let device = pick_device(&cfg.device, 0);
    let name = match kind {
        Kind::Point => format!("array-index={index}"),
        _ => format!("array-{}-index={index}", kind.name()),
    };
    let worker = Worker::new(&cfg.bin_dir, &device, name);
    run_with_deps(&grid, &tasks, task, &worker)
}

/// Runs `task` after its dependencies (a base after its score tasks, then
/// the point), each unless finished. Array tasks may start together: a
/// shared task's lock keeps it to one runner; the others wait for it
/// (saying who holds it) and take its outcome. The kernel drops the lock
/// of a killed holder.
fn run_with_deps(
    grid: &Grid,
    tasks: &[WorkItem],
    task: &WorkItem,
    worker: &Worker,
) -> Result<Outcome> {
    task.write_config(grid)?;
    for &d in &task.deps {
        let dep = &tasks[d];
        let o = run_with_deps(grid, tasks, dep, worker)?;
        if o != Outcome::Ok {
            if o == Outcome::Failed {
                let why = job::failure_reason(&dep.dir)
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default();
                task.record_failure(
                    "dependency",
                    None,
                    &format!("not run: {} failed{why}", dep.id),
                )?;
            }
            return Ok(o);
        }
    }
    Ok(run_task(task, worker))
}
