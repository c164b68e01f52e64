//! `sweep`: fans a grid of train/finetune → attack jobs over MPI ranks and
//! collects one results.csv.
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use taser::exit::{self, Status};
use taser::sweep::{
    self,
    grid::Grid,
    job::{Kind, Outcome},
    launch::Launch,
    status::JobStatus,
    RunConfig,
};

/// Run a grid of training-and-evaluation jobs (docs/CLUSTER.md): each grid point
/// chains `train` (or `finetune`) → `attack` in its own directory, shared
/// score sets are computed once by `score-precompute`, and results.csv holds
/// one row per point (parameters, metrics, seconds, status).
///
/// Under `mpirun`/`srun`, rank 0 hands out jobs as ranks free up and runs
/// jobs itself too; one process alone runs the whole grid. Each rank uses
/// the CUDA device of its node-local rank when libtorch sees one, else the
/// CPU. A finished job leaves an atomic `done` marker and is skipped when
/// the same command runs again; a failed job is recorded (exit code, error
/// tail in failed.json) and the sweep goes on; SIGTERM (Slurm preemption,
/// time limit) stops the running jobs without marking them done.
///
/// Grid file (TOML): `steps = ["train", "attack"]` (or finetune); `[axes]`
/// with one array per flag (`seed = [0, 1]`; `attack.eps = [...]` for the
/// attack step; an array of inline tables sets several flags together);
/// `[train]`/`[finetune]`/`[attack]` with fixed flags; `[scores.NAME]` with
/// score-precompute flags, referenced as `scores = "@NAME"`; `[[exclude]]`
/// tables of parameter values whose points are dropped. `key = v` becomes
/// `--key v`, `true` a bare `--key`. --out, --device, --checkpoint and
/// --resume are the sweep's own. A job's id is a hash of its resolved flags.
/// `ranks_per_job = G` (top level) trains every model step as G
/// data-parallel ranks, one GPU each (`mpirun -np G train --data-parallel`
/// started by the sweep on its node; with --device auto node-local rank l
/// owns GPUs l·G … l·G+G−1): launch one sweep rank or array task per G GPUs
/// (`sweep plan` prints the lines; docs/CLUSTER.md, "One model on several
/// GPUs").
///
/// The fine-tune protocol (TASER App. C.2), `steps = ["train", "finetune",
/// "attack"]`: bare keys set both model steps (e.g. method, seed),
/// `train.KEY` only the base, `finetune.KEY` only the fine-tune (an axis
/// `finetune.taser = [{ lambda = 0 }, { lambda = 0.1, scores = "@dsm" }]`
/// sets several fine-tune flags per value). Each distinct base is trained
/// once and shared; the sweep sets each fine-tune's --from to its
/// checkpoint; each base also gets a baseline evaluation. results.csv has
/// a `stage` column (base: the base checkpoint evaluated as it is;
/// finetune: a fine-tune) and the base's `train_*` metrics in every row; a
/// failed base marks its dependants as failed (step `dependency`, error
/// `not run: base:<id> failed …`).
/// Before any job starts, every step's binary parses its argument list in
/// check mode (TASER_CHECK_ARGS=1), so a misspelt flag is refused with its
/// grid line and the closest real flag.
///
/// Each task runs holding an OS file lock on its folder's `lock` file: a
/// second sweep on the same --out waits for it (naming the holder) and takes
/// its outcome; a killed holder's lock is released by the kernel.
///
/// Exit codes (the suite's one policy): 0 ok (`run`: every job finished);
/// 1 a failed computation (`run`/`run-one`: some job failed, their ids are
/// printed; an MPI or I/O error); 2 bad usage or input (a flag, a missing
/// or malformed grid file, a grid flag its step's binary refuses, an
/// unwritable --out); 3 interrupted (`run`/`run-one`: stopped by a signal
/// before the end; run the same command again to continue). Under mpirun,
/// send SIGTERM to the ranks for exit 3: OpenMPI's mpirun answers a
/// SIGTERM of its own with exit 1.
///
/// Under Slurm (docs/CLUSTER.md): `sweep plan` prints the launch lines —
/// srun, salloc + mpirun, `sbatch slurm/sweep-mpi.sbatch`, and the job-array
/// form — shell-quoted, each asking for the GPUs and CPUs that --nodes,
/// --gpus-per-node, --gpus-per-job and --cpus-per-job give. The array form
/// submits shared score sets and base models first (`run-one --kind`) and
/// the points after them (`--dependency=afterok`), in arrays of at most
/// --max-array-size tasks (slurm/sweep-array.sbatch's --offset).
///
/// Examples:
///   sweep plan sweeps/digits-demo.toml --nodes 2 --gpus-per-node 4 --cpus-per-job 8
///
///   mpirun --oversubscribe -np 2 sweep run sweeps/digits-demo.toml --out runs/demo
///
///   sweep collect runs/demo
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the score tasks and jobs with their ids, and the launch lines.
    Plan {
        /// Grid file (TOML).
        grid: PathBuf,
        /// Output directory the launch lines name.
        #[arg(long, default_value = "runs/sweep")]
        out: PathBuf,
        /// Nodes of the MPI launch lines.
        #[arg(long, default_value_t = 1)]
        nodes: usize,
        /// MPI ranks per node of the launch lines, one GPU each (with
        /// --gpus-per-job 0: CPU ranks per node); also how many array tasks
        /// of one array line run at once (× --nodes). With the grid's
        /// `ranks_per_job = G` these are the ranks of the jobs: a multiple
        /// of G, and the lines start one sweep rank (or array task) per G of
        /// them, holding G GPUs and G × --cpus-per-job CPUs. Default: G
        /// (1 without the key).
        #[arg(long)]
        gpus_per_node: Option<usize>,
        /// GPUs each rank or array task asks for: 1 (`--gpus-per-node` of
        /// the MPI lines, `--gpus=1` per array task), or 0 for CPU-only
        /// jobs (`--gpus-per-node=0`/`--gpus=0`, overriding the scripts'
        /// default GPU). Per rank of a job: a job of the grid's
        /// `ranks_per_job = G` ranks asks for G.
        #[arg(long, default_value_t = 1)]
        gpus_per_job: usize,
        /// CPUs per rank of a job: each sweep rank or array task asks for
        /// this × the grid's `ranks_per_job` (`--cpus-per-task`; the
        /// scripts set OMP_NUM_THREADS and SRUN_CPUS_PER_TASK from it).
        #[arg(long, default_value_t = 8)]
        cpus_per_job: usize,
        /// Most tasks in one job array: Slurm's MaxArraySize (`scontrol
        /// show config | grep MaxArraySize`). Longer arrays are printed as
        /// several sbatch lines, each `--array=0-K` with its `--offset`.
        #[arg(long, default_value_t = sweep::launch::MAX_ARRAY_SIZE)]
        max_array_size: usize,
        /// Folder of the suite's binaries, whose parsers check the grid's
        /// flags (default: this binary's folder).
        #[arg(long, env = "TASER_BIN_DIR")]
        bin_dir: Option<PathBuf>,
    },
    /// Run every unfinished job of the grid (under mpirun/srun or alone).
    Run {
        /// Grid file (TOML).
        grid: PathBuf,
        #[command(flatten)]
        opts: RunOpts,
    },
    /// Run one task by its plan index, without MPI (Slurm job-array form):
    /// a grid point, or with --kind a shared base model or score set (the
    /// array lines of `sweep plan` submit those first).
    RunOne {
        /// Grid file (TOML).
        grid: PathBuf,
        /// 0-based index among the tasks of --kind (as `sweep plan` lists
        /// them; slurm/sweep-array.sbatch passes SLURM_ARRAY_TASK_ID plus
        /// its --offset).
        #[arg(long, env = "SLURM_ARRAY_TASK_ID")]
        index: usize,
        /// Which tasks --index counts: grid points (`job`), shared base
        /// models (`base`) or shared score sets (`score`).
        #[arg(long, value_enum, default_value_t = TaskKind::Job)]
        kind: TaskKind,
        #[command(flatten)]
        opts: RunOpts,
    },
    /// Print the device each MPI rank of this launch takes (the rule of
    /// `run`: with auto, the CUDA device of the node-local rank modulo the
    /// GPUs libtorch sees, else the CPU), one line per rank: rank, host,
    /// node-local rank (MPI's and the launcher's), visible GPUs, device.
    /// Exits 1 naming the rank when a node-local rank disagrees with the
    /// launcher's, a rank's device is not visible to it, or two ranks of a
    /// node share a GPU although the node has one per rank. Run it as
    /// `mpirun -np <GPUs> sweep devices` on a node (alone: rank 0).
    Devices {
        /// The rule to check: auto, cpu or cuda:N.
        #[arg(long, default_value = "auto")]
        device: String,
    },
    /// Rebuild DIR/results.csv from the job directories: one row per grid
    /// point of the plan (a point whose folder is missing is pending).
    Collect {
        /// The --out directory of a run.
        dir: PathBuf,
        /// The grid file of the run (default: the one named in the job
        /// folders' config.json; without any, only the folders on disk are
        /// listed).
        #[arg(long)]
        grid: Option<PathBuf>,
    },
}

/// The kinds of task `run-one --kind` addresses.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum TaskKind {
    /// A grid point (one results.csv row).
    Job,
    /// A shared base model of the train → finetune → attack chain.
    Base,
    /// A shared score set (score-precompute).
    Score,
}

impl TaskKind {
    fn kind(self) -> Kind {
        match self {
            TaskKind::Job => Kind::Point,
            TaskKind::Base => Kind::Base,
            TaskKind::Score => Kind::Score,
        }
    }
}

#[derive(clap::Args, Debug)]
struct RunOpts {
    /// Output directory (job directories, results.csv).
    #[arg(long)]
    out: PathBuf,
    /// Device of the jobs: auto (CUDA device of the node-local rank, else
    /// CPU), cpu or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Folder of the suite's binaries (default: this binary's folder).
    #[arg(long, env = "TASER_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// Leave jobs recorded as failed alone instead of running them again.
    #[arg(long)]
    no_retry_failed: bool,
}

/// `--bin-dir`, or the folder of this binary.
fn bin_dir_or_own(given: &Option<PathBuf>) -> anyhow::Result<PathBuf> {
    Ok(match given {
        Some(d) => d.clone(),
        None => std::env::current_exe()
            .context("locating the sweep binary")?
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default(),
    })
}

impl RunOpts {
    fn config(&self, grid: PathBuf) -> anyhow::Result<RunConfig> {
        Ok(RunConfig {
            grid,
            out: self.out.clone(),
            bin_dir: bin_dir_or_own(&self.bin_dir)?,
            device: self.device.clone(),
            retry_failed: !self.no_retry_failed,
        })
    }
}

fn main() -> ExitCode {
    let args = exit::parse_args::<Args>();
    exit::run_main(|| real_main(args))
}

fn real_main(args: Args) -> anyhow::Result<Status> {
    match args.command {
        Command::Plan {
            grid,
            out,
            nodes,
            gpus_per_node,
            gpus_per_job,
            cpus_per_job,
            max_array_size,
            bin_dir,
        } => {
            let g = Grid::load(&grid)?;
            let launch = Launch::new(
                nodes,
                gpus_per_node.unwrap_or(g.ranks_per_job),
                gpus_per_job,
                cpus_per_job,
                max_array_size,
            )?
            .with_ranks_per_job(g.ranks_per_job)?;
            let tasks = sweep::job::tasks(&g, &out);
            sweep::check::check_args(&g, &tasks, &bin_dir_or_own(&bin_dir)?)?;
            print!("{}", sweep::plan_text(&g, &out, &launch));
            Ok(Status::Ok)
        }
        Command::Run { grid, opts } => {
            let cfg = opts.config(grid)?;
            let Some(summary) = sweep::run(&cfg).context("sweep run failed")? else {
                // Ranks other than 0 leave the verdict to rank 0; a non-zero
                // status here would make mpirun abort the others.
                return Ok(Status::Ok);
            };
            println!("jobs = {}", summary.jobs);
            println!("ok = {}", summary.ok);
            println!("failed = {}", summary.failed.len());
            println!("results = {}", summary.results.display());
            for (id, why) in &summary.failed {
                eprintln!("failed job {id}: {why}");
            }
            if summary.interrupted {
                eprintln!("stopped by a signal before every job ran; run the same command again to continue");
                Ok(Status::Interrupted)
            } else if !summary.failed.is_empty() {
                eprintln!(
                    "kept: the {} finished jobs (each marked done) and the finished steps of the \
                     failed ones; run the same command again (without --no-retry-failed) to retry \
                     the failed jobs: finished jobs and steps are not run again",
                    summary.ok
                );
                Ok(Status::Failed)
            } else {
                Ok(Status::Ok)
            }
        }
        Command::RunOne {
            grid,
            index,
            kind,
            opts,
        } => {
            let cfg = opts.config(grid)?;
            match sweep::run_one(&cfg, kind.kind(), index).context("sweep run-one failed")? {
                Outcome::Ok => Ok(Status::Ok),
                Outcome::Failed => Ok(Status::Failed),
                Outcome::Interrupted => Ok(Status::Interrupted),
            }
        }
        Command::Devices { device } => {
            let Some(ranks) = sweep::devices::gather(&device)? else {
                return Ok(Status::Ok);
            };
            println!("rank host local_rank launcher_local_rank visible_gpus device");
            for r in &ranks {
                println!("{r}");
            }
            let problems = sweep::devices::problems(&ranks);
            for p in &problems {
                eprintln!("error: {p}");
            }
            Ok(if problems.is_empty() {
                Status::Ok
            } else {
                Status::Failed
            })
        }
        Command::Collect { dir, grid } => {
            let (rows, note) = sweep::results::collect(&dir, grid.as_deref())?;
            if let Some(note) = note {
                eprintln!("note: {note}");
            }
            let path = dir.join(taser::layout::RESULTS);
            sweep::results::write(&path, &rows)?;
            let count = |s: JobStatus| rows.iter().filter(|r| r.status == s).count();
            let (ok, failed) = (count(JobStatus::Ok), count(JobStatus::Failed));
            println!("jobs = {}", rows.len());
            println!("ok = {ok}");
            println!("failed = {failed}");
            println!("pending = {}", rows.len() - ok - failed);
            println!("results = {}", path.display());
            Ok(Status::Ok)
        }
    }
}
