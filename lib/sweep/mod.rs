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
#[cfg(feature = "mpi")]
mod book;
pub mod check;
pub mod devices;
pub mod expand;
pub mod grid;
pub mod job;
pub mod launch;
pub mod lock;
pub mod plan;
#[cfg(feature = "mpi")]
mod ranks;
pub mod results;
pub use crate::signal;
pub mod slot;
pub mod status;

use crate::error::{Error, Result};
use grid::Grid;
use job::{Kind, Outcome, WorkItem, Worker};
pub use plan::plan_text;
use std::path::{Path, PathBuf};

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
///
/// Errors: [`Error::NoMpi`] when the binary was built without MPI (the
/// portable `make dist` form), naming the job-array form; the grid's and
/// the output folder's errors.
pub fn run(cfg: &RunConfig) -> Result<Option<RunSummary>> {
    #[cfg(not(feature = "mpi"))]
    return Err(Error::NoMpi {
        command: format!("sweep run {}", cfg.grid.display()),
    });
    #[cfg(feature = "mpi")]
    {
        signal::install();
        let grid = Grid::load(&cfg.grid)?;
        slot::preflight(grid.ranks_per_job, Some(&cfg.device))?;
        let mut cfg = cfg.clone();
        cfg.out = absolute_out(&cfg.out)?;
        ranks::run(&grid, &cfg).map_err(|e| with_continue_note(e, &cfg.out))
    }
}

/// A failure of the sweep's own work (not a refused grid or flag) gains
/// what stays in `out` and how to continue.
fn with_continue_note(error: Error, out: &Path) -> Error {
    if error.status() != crate::exit::Status::Failed {
        return error;
    }
    let note = format!(
        "Kept in {}: every finished job (marked done) and the finished steps of the others; no \
         partial file is left. To continue: rerun the same command (finished jobs and steps are \
         not run again); `sweep collect {}` rewrites results.csv alone",
        out.display(),
        out.display()
    );
    Error::AfterWrites {
        error: Box::new(error),
        note,
    }
}

/// Runs one task, recording an error of the sweep's own I/O as its failure.
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
    slot::preflight(grid.ranks_per_job, Some(&cfg.device))?;
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
    let slot = slot::Slot::new(&cfg.device, 0, grid.ranks_per_job)?;
    let name = match kind {
        Kind::Point => format!("array-index={index}"),
        _ => format!("array-{}-index={index}", kind.name()),
    };
    let worker = Worker::new(&cfg.bin_dir, slot, name, &tasks);
    run_with_deps(&grid, &tasks, task, &worker).map_err(|e| with_continue_note(e, &cfg.out))
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
