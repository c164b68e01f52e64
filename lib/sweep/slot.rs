//! A job slot: the devices one sweep rank (or one array task) runs its jobs
//! on, and how it starts each step.
//!
//! With the grid's `ranks_per_job = 1` (the default) a slot is one device
//! ([`crate::device::rank_device`]: with `auto`, the CUDA device of the
//! node-local rank) and every step is one process on it.
//!
//! With `ranks_per_job = G > 1` each train/finetune step runs as G
//! data-parallel ranks (`--data-parallel`, GUIDE "Data-parallel training")
//! started by a nested `mpirun -np G` on this node; the attack and
//! score-precompute steps stay one process on the slot's first device.
//! The node-local rank l owns the G GPUs l·G … l·G+G−1 of those it sees
//! (a step's ranks see only them, through `CUDA_VISIBLE_DEVICES`, and take
//! one each with `--device auto`), so a launch gives each sweep rank G GPUs
//! (`sweep plan` prints the lines). The nested `mpirun` starts with the
//! outer launch's variables removed (`OMPI_*`, `PMIX_*`, `PRTE_*`, `PMI_*`,
//! `SLURM_*`): it is a launch of its own on this node, inside the cores and
//! GPUs Slurm gave the sweep rank; `OMP_NUM_THREADS`, when set, is divided
//! among the G ranks.
//!
//! Why not `MPI_Comm_split` of the sweep's own ranks: a step is a separate
//! process (the `train` binary, so it keeps its own logs, exit code and
//! resume state), and processes that the sweep's ranks start cannot join
//! the sweep's communicator; `MPI_Comm_spawn` could start them, but Slurm's
//! `srun` launch does not support it.
use crate::error::{Error, Result};
use std::path::Path;
use std::process::Command;

/// Where a sweep rank or array task runs its jobs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    /// Device (`cpu`, `cuda:N`; with one rank also `auto` when a GPU is
    /// expected but none is visible, which the step then refuses) of
    /// one-process steps.
    pub device: String,
    /// Ranks of each train/finetune step (the grid's `ranks_per_job`).
    pub ranks: usize,
    /// `CUDA_VISIBLE_DEVICES` of a multi-rank step: the slot's GPUs, as
    /// the sweep sees them named (None on the CPU and with one rank).
    pub gpus: Option<String>,
}

/// Variables of an MPI or Slurm launch that a nested `mpirun` must not
/// see (it would take itself for part of the outer launch).
const OUTER_LAUNCH: [&str; 5] = ["OMPI_", "PMIX_", "PRTE_", "PMI_", "SLURM_"];

impl Slot {
    /// The slot of node-local rank `local_rank` for the sweep's `--device`
    /// `spec` and `ranks` ranks per job.
    ///
    /// Errors, with `ranks` > 1: [`Error::InvalidArgument`] (`--device`)
    /// for a spec naming one GPU (`cuda:N`), or when the node shows fewer
    /// than (l+1)·G GPUs; [`Error::GpuNotVisible`] for `auto` when a GPU
    /// was expected (Slurm gave one, nvidia-smi lists one) and libtorch
    /// sees none.
    pub fn new(spec: &str, local_rank: usize, ranks: usize) -> Result<Slot> {
        if ranks <= 1 {
            return Ok(Slot {
                device: crate::device::rank_device(spec, local_rank),
                ranks: 1,
                gpus: None,
            });
        }
        device_fits(ranks, spec)?;
        let visible = tch::Cuda::device_count().max(0) as usize;
        if spec == "auto" && visible == 0 {
            // Refused here, not left to the steps: the nested launch does
            // not carry Slurm's variables, the GPU signal among them.
            if let Some(signal) = crate::device::expected::gpu_expected() {
                return Err(crate::device::gpu_not_visible(signal));
            }
        }
        if spec == "cpu" || visible == 0 {
            return Ok(Slot {
                device: "cpu".into(),
                ranks,
                gpus: None,
            });
        }
        let first = local_rank * ranks;
        if first + ranks > visible {
            return Err(Error::invalid(
                "--device",
                spec,
                format!(
                    "node-local rank {local_rank} runs jobs of {ranks} ranks on GPUs {first}–{} \
                     but {visible} are visible: start one sweep rank per {ranks} GPUs (`sweep \
                     plan GRID --gpus-per-node N` prints the launch lines)",
                    first + ranks - 1
                ),
            ));
        }
        let names = visible_names(std::env::var("CUDA_VISIBLE_DEVICES").ok(), visible);
        Ok(Slot {
            device: format!("cuda:{first}"),
            ranks,
            gpus: Some(names[first..first + ranks].join(",")),
        })
    }

    /// The slot in words for logs: its device, or with G > 1 ranks its
    /// GPUs (or device) and `ranks=G`.
    pub fn describe(&self) -> String {
        match self.ranks {
            1 => self.device.clone(),
            g => format!("{} ranks={g}", self.gpus.as_deref().unwrap_or(&self.device)),
        }
    }

    /// The command of one step: `binary` (a path) with `args` and the
    /// device; a train/finetune step (`model_step`) of a multi-rank slot
    /// under a nested `mpirun -np G`.
    pub fn command(&self, binary: &Path, args: &[String], model_step: bool) -> StepCommand {
        let shown = |program: &str, words: &[String]| format!("{program} {}", words.join(" "));
        if !(model_step && self.ranks > 1) {
            let mut words = args.to_vec();
            words.extend(["--device".into(), self.device.clone()]);
            let mut cmd = Command::new(binary);
            cmd.args(&words);
            let shown = shown(&binary.display().to_string(), &words);
            return StepCommand {
                cmd,
                shown,
                launcher: false,
            };
        }
        let device = if self.device == "cpu" { "cpu" } else { "auto" };
        let mut words: Vec<String> = ["-np", &self.ranks.to_string()]
            .into_iter()
            .chain(["--oversubscribe", "--bind-to", "none"])
            .map(String::from)
            .collect();
        words.push(binary.display().to_string());
        words.extend(args.iter().cloned());
        words.extend(["--device".into(), device.into()]);
        let mut cmd = Command::new("mpirun");
        cmd.args(&words);
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            let outer = OUTER_LAUNCH.iter().any(|p| k.starts_with(p));
            if outer && !k.starts_with("OMPI_ALLOW_RUN_AS_ROOT") {
                cmd.env_remove(k.as_ref());
            }
        }
        if let Some(gpus) = &self.gpus {
            cmd.env("CUDA_VISIBLE_DEVICES", gpus);
        }
        let threads = std::env::var("OMP_NUM_THREADS").ok();
        if let Some(t) = threads.and_then(|t| t.parse::<usize>().ok()) {
            cmd.env("OMP_NUM_THREADS", (t / self.ranks).max(1).to_string());
        }
        StepCommand {
            cmd,
            shown: shown("mpirun", &words),
            launcher: true,
        }
    }
}

/// A step's process, as a slot starts it.
pub struct StepCommand {
    /// The command, ready to spawn.
    pub cmd: Command,
    /// Its words, for the step's log.
    pub shown: String,
    /// Whether it is a launcher (`mpirun`) whose children are the ranks:
    /// a stop is sent to them, so each rank ends its step and exits with
    /// the interrupted code (Open MPI's `mpirun`, signalled itself, kills
    /// its ranks a second later and exits 1).
    pub launcher: bool,
}

/// The names of the `visible` CUDA devices: `CUDA_VISIBLE_DEVICES`'s
/// entries when it lists them (indices or UUIDs), else 0…visible−1.
fn visible_names(cvd: Option<String>, visible: usize) -> Vec<String> {
    let listed: Vec<String> = cvd
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if listed.len() >= visible {
        listed
    } else {
        (0..visible).map(|i| i.to_string()).collect()
    }
}

/// Whether `--device` `spec` can hold jobs of `ranks` ranks: `auto` or
/// `cpu` (one named GPU cannot). Errors: [`Error::InvalidArgument`].
fn device_fits(ranks: usize, spec: &str) -> Result<()> {
    if ranks > 1 && spec != "auto" && spec != "cpu" {
        return Err(Error::invalid(
            "--device",
            spec,
            format!(
                "the grid's ranks_per_job = {ranks} runs each model step on {ranks} devices: \
                 give --device auto (the node-local rank's {ranks} GPUs) or --device cpu"
            ),
        ));
    }
    Ok(())
}

/// What jobs of `ranks` > 1 ranks need before any folder is made: `mpirun`
/// on PATH, and a `--device` spec (`device`; None: not yet known) of
/// `auto` or `cpu`. Errors: [`Error::InvalidArgument`] naming
/// `ranks_per_job` or `--device` and the fix.
pub fn preflight(ranks: usize, device: Option<&str>) -> Result<()> {
    if ranks <= 1 {
        return Ok(());
    }
    if let Some(spec) = device {
        device_fits(ranks, spec)?;
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("mpirun").is_file()))
        .unwrap_or(false);
    if !on_path {
        return Err(Error::invalid(
            "ranks_per_job",
            ranks,
            "each train/finetune step starts its ranks with mpirun, and no mpirun is on PATH: \
             load the Open MPI the suite was built with (e.g. `module load openmpi`), or set \
             ranks_per_job = 1 in the grid",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_one_rank_slot_is_the_rank_device_and_runs_steps_plainly() {
        let s = Slot::new("cpu", 3, 1).unwrap();
        assert_eq!((s.device.as_str(), s.ranks, s.gpus), ("cpu", 1, None));
        let s = Slot::new("cpu", 0, 1).unwrap();
        let c = s.command(
            Path::new("/b/train"),
            &["--epochs".into(), "2".into()],
            true,
        );
        assert_eq!(c.cmd.get_program(), "/b/train");
        assert_eq!(c.shown, "/b/train --epochs 2 --device cpu");
        assert!(!c.launcher);
    }

    #[test]
    fn a_multi_rank_model_step_runs_under_a_nested_mpirun_without_the_outer_launch() {
        std::env::set_var("SLURM_SLOT_TEST_OUTER", "1");
        let s = Slot::new("cpu", 1, 2).unwrap();
        assert_eq!(s.describe(), "cpu ranks=2");
        let c = s.command(
            Path::new("/b/train"),
            &["--epochs".into(), "2".into()],
            true,
        );
        assert!(c.launcher);
        let cmd = c.cmd;
        assert_eq!(cmd.get_program(), "mpirun");
        assert_eq!(
            c.shown,
            "mpirun -np 2 --oversubscribe --bind-to none /b/train --epochs 2 --device cpu"
        );
        let removed = cmd
            .get_envs()
            .any(|(k, v)| k == "SLURM_SLOT_TEST_OUTER" && v.is_none());
        std::env::remove_var("SLURM_SLOT_TEST_OUTER");
        assert!(removed, "the outer launch's variables are removed");
        // The attack step stays one process.
        let c = s.command(Path::new("/b/attack"), &[], false);
        assert_eq!(c.cmd.get_program(), "/b/attack");
    }

    #[test]
    fn one_named_gpu_cannot_hold_a_multi_rank_job() {
        let e = Slot::new("cuda:1", 0, 2).unwrap_err().to_string();
        assert!(e.contains("--device") && e.contains("auto"), "{e}");
    }

    #[test]
    fn visible_names_follow_cuda_visible_devices() {
        assert_eq!(visible_names(Some("3,5,7".into()), 3), ["3", "5", "7"]);
        assert_eq!(visible_names(None, 2), ["0", "1"]);
        assert_eq!(visible_names(Some(String::new()), 2), ["0", "1"]);
    }
}
