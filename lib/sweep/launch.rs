//! `sweep plan`'s launch lines: how a grid runs on a Slurm cluster, with
//! the GPUs and CPUs each rank (MPI) or array task (no MPI) asks for.
//!
//! One [`Launch`] holds the request, checked once; [`launch_text`] prints
//! every form from it, each command shell-quoted (a path with a space or
//! non-ASCII letters stays one argument when the line is pasted into a
//! shell):
//! - `srun` (an allocation and its MPI launch in one), `salloc … mpirun`
//!   (Open MPI in an allocation), `sbatch slurm/sweep-mpi.sbatch`;
//! - the job-array form (`slurm/sweep-array.sbatch`, `sweep run-one`): one
//!   array per kind of task — shared score sets, then shared base models,
//!   then grid points — each submitted with `--dependency=afterok:` on the
//!   arrays of the shared tasks it needs, so no task waits on a shared
//!   task's lock while it holds a GPU; and each split into chunks of at most
//!   [`Launch::max_array_size`] tasks (Slurm's MaxArraySize: indices
//!   `0..=max-1`), the chunk's first index given to the script as
//!   `--offset`.
use super::job::{Kind, WorkItem};
use crate::error::{Error, Result};
use std::path::Path;

/// Slurm's default MaxArraySize: array indices 0..=1000.
pub const MAX_ARRAY_SIZE: usize = 1001;

/// The resources of a launch, as `sweep plan`'s flags give them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    /// Nodes of the MPI forms (≥ 1).
    pub nodes: usize,
    /// MPI ranks per node (≥ 1); with GPUs, one GPU each.
    pub ranks_per_node: usize,
    /// GPUs per rank of a job: 1, or 0 for CPU-only jobs (a rank trains
    /// on one device, so more would sit idle; a job of G ranks, the grid's
    /// `ranks_per_job`, takes G).
    pub gpus_per_job: usize,
    /// CPUs per rank or array task (`--cpus-per-task`, ≥ 1).
    pub cpus_per_job: usize,
    /// Most tasks in one job array (Slurm's MaxArraySize, ≥ 1).
    pub max_array_size: usize,
    /// Ranks of each job's model steps (the grid's `ranks_per_job`): each
    /// sweep rank or array task holds that many ranks' GPUs and CPUs.
    pub ranks_per_job: usize,
}

impl Launch {
    /// Checks the request. Errors: [`Error::InvalidArgument`] naming the
    /// flag (`--nodes`, `--gpus-per-node`, `--gpus-per-job`,
    /// `--cpus-per-job`, `--max-array-size`) for a 0, or a GPU count
    /// other than 0 or 1 per job.
    pub fn new(
        nodes: usize,
        ranks_per_node: usize,
        gpus_per_job: usize,
        cpus_per_job: usize,
        max_array_size: usize,
    ) -> Result<Launch> {
        for (flag, v) in [
            ("--nodes", nodes),
            ("--gpus-per-node", ranks_per_node),
            ("--cpus-per-job", cpus_per_job),
            ("--max-array-size", max_array_size),
        ] {
            if v == 0 {
                return Err(Error::invalid(flag, v, "must be at least 1"));
            }
        }
        if gpus_per_job > 1 {
            return Err(Error::invalid(
                "--gpus-per-job",
                gpus_per_job,
                "GPUs per rank of a job: give 1 (one GPU per rank) or 0 (CPU only); for \
                 jobs of several GPUs set ranks_per_job = G in the grid file, and for more \
                 jobs at once raise --gpus-per-node or --nodes",
            ));
        }
        Ok(Launch {
            nodes,
            ranks_per_node,
            gpus_per_job,
            cpus_per_job,
            max_array_size,
            ranks_per_job: 1,
        })
    }

    /// The launch of a grid whose jobs train on `g` ranks each
    /// (`ranks_per_job`): a sweep rank per g of a node's ranks.
    ///
    /// Errors: [`Error::InvalidArgument`] (`--gpus-per-node`) when the
    /// ranks per node are not a multiple of `g` (a job's ranks share one
    /// node).
    pub fn with_ranks_per_job(mut self, g: usize) -> Result<Launch> {
        if g > 1 && !self.ranks_per_node.is_multiple_of(g) {
            return Err(Error::invalid(
                "--gpus-per-node",
                self.ranks_per_node,
                format!(
                    "the grid's jobs train on ranks_per_job = {g} ranks, which share one node: \
                     give a multiple of {g}"
                ),
            ));
        }
        self.ranks_per_job = g.max(1);
        Ok(self)
    }

    /// Sweep ranks of the MPI forms (one job at a time each); also how
    /// many array tasks of one line run at once (`%N`).
    pub fn ranks(&self) -> usize {
        self.nodes * self.slots_per_node()
    }

    /// Sweep ranks per node: the node's job ranks over a job's ranks.
    fn slots_per_node(&self) -> usize {
        self.ranks_per_node / self.ranks_per_job
    }

    /// CPUs of one sweep rank or array task: every rank of its job's.
    fn cpus_per_slot(&self) -> usize {
        self.cpus_per_job * self.ranks_per_job
    }

    /// `--nodes --ntasks-per-node [--gpus-per-node] --cpus-per-task` of an
    /// allocation; `gpu_off` names the GPU-free override of a script's
    /// default (`--gpus-per-node=0`) for CPU-only jobs.
    fn allocation(&self, gpu_off: bool) -> Vec<String> {
        let mut v = vec![
            format!("--nodes={}", self.nodes),
            format!("--ntasks-per-node={}", self.slots_per_node()),
        ];
        if self.gpus_per_job > 0 {
            v.push(format!(
                "--gpus-per-node={}",
                self.ranks_per_node * self.gpus_per_job
            ));
        } else if gpu_off {
            v.push("--gpus-per-node=0".into());
        }
        v.push(format!("--cpus-per-task={}", self.cpus_per_slot()));
        v
    }

    /// An array task's `--gpus=N --cpus-per-task=C` (`--gpus=0` overrides
    /// the script's default GPU for CPU-only jobs): a job's ranks', or one
    /// rank's for a task of `kind` that trains nothing (a score set).
    fn per_task(&self, kind: Kind) -> Vec<String> {
        let ranks = match kind {
            Kind::Score => 1,
            _ => self.ranks_per_job,
        };
        vec![
            format!("--gpus={}", self.gpus_per_job * ranks),
            format!("--cpus-per-task={}", self.cpus_per_job * ranks),
        ]
    }

    /// What each rank or task gets, in words.
    fn each(&self) -> String {
        let g = self.ranks_per_job;
        let gpu = match self.gpus_per_job * g {
            0 => "no GPU".to_string(),
            1 => "1 GPU".to_string(),
            n => format!("{n} GPUs"),
        };
        let job = match g {
            1 => String::new(),
            g => format!(", for one job of {g} ranks at a time"),
        };
        format!("{gpu} and {} CPU(s) each{job}", self.cpus_per_slot())
    }
}

/// Shell words of `args`, quoted ([`shell_words::quote`]) where the shell
/// would split, expand or glob them. `=` is left bare: no printed word is
/// in a command's first position, where `a=b` would be an assignment.
fn sh<S: AsRef<str>>(args: &[S]) -> String {
    let plain = |a: &str| {
        !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_=+,./:@%".contains(c))
    };
    args.iter()
        .map(|a| match a.as_ref() {
            a if plain(a) => a.to_string(),
            a => shell_words::quote(a).into_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The chunks `(first index, count)` of `n` tasks, at most `max` each.
pub fn chunks(n: usize, max: usize) -> Vec<(usize, usize)> {
    (0..n)
        .step_by(max.max(1))
        .map(|start| (start, max.min(n - start)))
        .collect()
}

/// The launch lines of `tasks` (the grid's task list) for the grid file
/// `grid` and output folder `out`: a header line, then one command per
/// line, indented by two spaces; the array form's lines form one bash
/// snippet (its job ids are kept in shell variables).
pub fn launch_text(launch: &Launch, grid: &Path, out: &Path, tasks: &[WorkItem]) -> String {
    let (g, o) = (grid.display().to_string(), out.display().to_string());
    let (n, r) = (launch.nodes, launch.ranks());
    let (per_node, slots) = (launch.ranks_per_node, launch.slots_per_node());
    let alloc = launch.allocation(false);
    let cpus = launch.cpus_per_slot().to_string();
    let unit = if launch.gpus_per_job > 0 {
        "GPU(s)"
    } else {
        "rank(s)"
    };
    let shape = match launch.ranks_per_job {
        1 => format!(
            "{n} node(s) × {per_node} {unit} = {r} rank(s), {}",
            launch.each()
        ),
        g => format!(
            "{n} node(s) × {per_node} {unit} = {} {unit} in jobs of {g} ranks: {r} sweep \
             rank(s), {}",
            n * per_node,
            launch.each()
        ),
    };
    let srun = [&["srun".to_string()][..], &alloc, &["--mpi=pmix".into()]].concat();
    let salloc = [&["salloc".to_string()][..], &alloc].concat();
    let mpirun = [
        "mpirun",
        "-np",
        &r.to_string(),
        "--map-by",
        &format!("ppr:{slots}:node"),
        "--bind-to",
        "none",
        "-x",
        &format!("OMP_NUM_THREADS={cpus}"),
    ];
    let sbatch = [&["sbatch".to_string()][..], &launch.allocation(true)].concat();
    let run = ["sweep", "run", &g, "--out", &o];
    let mut s = format!("\nlaunch on {shape}:\n");
    s.push_str(&format!("  {} {}\n", sh(&srun), sh(&run)));
    s.push_str(&format!("  {} {} {}\n", sh(&salloc), sh(&mpirun), sh(&run)));
    s.push_str(&format!(
        "  {} {}\n",
        sh(&sbatch),
        sh(&["slurm/sweep-mpi.sbatch", &g, &o])
    ));
    s.push_str(&array_text(launch, &g, &o, tasks));
    s
}

/// The job-array form: per kind of task (score sets, bases, grid points)
/// with any tasks, one `sbatch --array` per chunk; the shared kinds'
/// job ids go into shell variables, and a later kind's arrays depend
/// (`afterok`) on those of the kinds its tasks need.
fn array_text(launch: &Launch, grid: &str, out: &str, tasks: &[WorkItem]) -> String {
    let stages: Vec<(Kind, usize)> = [Kind::Score, Kind::Base, Kind::Point]
        .into_iter()
        .map(|k| (k, tasks.iter().filter(|t| t.kind == k).count()))
        .filter(|&(k, count)| count > 0 || k == Kind::Point)
        .collect();
    let mut s = format!(
        "job-array form, without MPI ({}, at most {} at once per line; at most {} task(s) per \
         array, Slurm's MaxArraySize: --max-array-size; shared tasks first, later lines start \
         after them):\n",
        launch.each(),
        launch.ranks(),
        launch.max_array_size
    );
    // The job-id variables of each shared kind submitted so far.
    let mut before: Vec<(Kind, Vec<String>)> = Vec::new();
    for (kind, count) in stages {
        // Only the arrays this kind's tasks depend on: e.g. bases that
        // need no score set start beside the score array.
        let needs: Vec<String> = before
            .iter()
            .filter(|(k, _)| {
                tasks
                    .iter()
                    .filter(|t| t.kind == kind)
                    .any(|t| t.deps.iter().any(|&d| tasks[d].kind == *k))
            })
            .flat_map(|(_, ids)| ids.iter().cloned())
            .collect();
        let parts = chunks(count.max(1), launch.max_array_size);
        let mut ids = Vec::new();
        for (c, &(start, len)) in parts.iter().enumerate() {
            let shared = kind != Kind::Point;
            let mut head = vec!["sbatch".to_string()];
            if shared {
                head.push("--parsable".into());
            }
            head.push(format!("--array=0-{}%{}", len - 1, launch.ranks()));
            let dep = if needs.is_empty() {
                String::new()
            } else {
                format!(" --dependency=afterok:{}", needs.join(":"))
            };
            let mut tail = launch.per_task(kind);
            tail.extend(["slurm/sweep-array.sbatch".into(), grid.into(), out.into()]);
            if start > 0 {
                tail.extend(["--offset".into(), start.to_string()]);
            }
            if shared {
                tail.extend(["--kind".into(), kind.name().into()]);
            }
            let cmd = format!("{}{dep} {}", sh(&head), sh(&tail));
            if shared {
                let var = match parts.len() {
                    1 => kind.name().to_string(),
                    _ => format!("{}{c}", kind.name()),
                };
                s.push_str(&format!("  {var}=$({cmd} | cut -d ';' -f 1)\n"));
                ids.push(format!("${var}"));
            } else {
                s.push_str(&format!("  {cmd}\n"));
            }
        }
        before.push((kind, ids));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_every_index_within_the_limit() {
        assert_eq!(chunks(4, 1001), vec![(0, 4)]);
        assert_eq!(chunks(1001, 1001), vec![(0, 1001)]);
        assert_eq!(chunks(1002, 1001), vec![(0, 1001), (1001, 1)]);
        let c = chunks(10_000, 1001);
        assert_eq!(c.len(), 10);
        assert_eq!(c[9], (9009, 991));
        assert_eq!(c.iter().map(|x| x.1).sum::<usize>(), 10_000);
        assert!(c.windows(2).all(|w| w[0].0 + w[0].1 == w[1].0));
    }

    #[test]
    fn jobs_of_several_ranks_take_several_gpus_per_sweep_rank() {
        let l = Launch::new(2, 4, 1, 8, 1001)
            .unwrap()
            .with_ranks_per_job(2)
            .unwrap();
        assert_eq!(l.ranks(), 4);
        assert_eq!(
            l.allocation(false),
            [
                "--nodes=2",
                "--ntasks-per-node=2",
                "--gpus-per-node=4",
                "--cpus-per-task=16"
            ]
        );
        assert_eq!(l.per_task(Kind::Point), ["--gpus=2", "--cpus-per-task=16"]);
        assert_eq!(l.per_task(Kind::Score), ["--gpus=1", "--cpus-per-task=8"]);
        let e = Launch::new(1, 3, 1, 8, 1001)
            .unwrap()
            .with_ranks_per_job(2)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--gpus-per-node") && e.contains("multiple of 2"),
            "{e}"
        );
    }

    #[test]
    fn a_request_is_checked_once() {
        assert!(Launch::new(2, 4, 1, 8, 1001).is_ok());
        for (bad, flag) in [
            (Launch::new(0, 4, 1, 8, 1001), "--nodes"),
            (Launch::new(1, 0, 1, 8, 1001), "--gpus-per-node"),
            (Launch::new(1, 1, 2, 8, 1001), "--gpus-per-job"),
            (Launch::new(1, 1, 1, 0, 1001), "--cpus-per-job"),
            (Launch::new(1, 1, 1, 8, 0), "--max-array-size"),
        ] {
            let e = bad.unwrap_err().to_string();
            assert!(e.contains(flag), "{e}");
        }
    }
}
