//! A data-parallel run's own pieces (`train`/`finetune --data-parallel`,
//! the ranks and their sums in [`crate::collective`]): joining the group
//! (and what it refuses), each rank's device, its part of a global batch,
//! and the epoch-end agreement of the ranks' models.
//!
//! By design, as under PyTorch DDP: the training attack, AWP's ascent
//! direction and BatchNorm's batch statistics act on each rank's share; the
//! random draws of a step come from the rank's own stream; BatchNorm's
//! running statistics are averaged over the ranks at every epoch's end,
//! before evaluation and checkpointing. A final global batch of fewer than
//! 2 samples per rank is dropped (the single process drops one of 1).
use super::config::{RunOptions, TrainConfig};
use crate::collective::{Group, Verdict};
use crate::error::{Error, Result};
use crate::models::Model;
use crate::runtime::RuntimeArgs;
use crate::stein::penalty::BnMode;
use std::time::Duration;

/// The run's group: joined with `--data-parallel` (SIGTERM/SIGINT then
/// stop the ranks together), else a group of one.
///
/// Errors: [`Error::InvalidArgument`] for a `--collective-timeout` that is
/// not a finite number > 0, a binary built without MPI, or `srun` tasks
/// that MPI does not join into one world (no `--mpi=` plugin).
pub fn group(run: &RunOptions) -> Result<Group> {
    if !run.data_parallel {
        return Ok(Group::single());
    }
    let timeout = run.collective_timeout;
    if !(timeout.is_finite() && timeout > 0.0) {
        return Err(Error::invalid(
            "--collective-timeout",
            timeout,
            "must be a finite number of seconds > 0",
        ));
    }
    let group = Group::join(Duration::from_secs_f64(timeout))?;
    if let Some(tasks) = srun_tasks().filter(|&n| n > 1 && group.size() == 1) {
        return Err(Error::invalid(
            "--data-parallel",
            "on",
            format!(
                "srun started {tasks} tasks but MPI sees each as a run of its own (1 rank): \
                 add --mpi=pmix (or another plugin `srun --mpi=list` shows) to srun, or start \
                 the ranks with mpirun"
            ),
        ));
    }
    crate::signal::install();
    Ok(group)
}

/// The tasks of the Slurm job step this process runs in (`srun -n N`).
fn srun_tasks() -> Option<usize> {
    std::env::var("SLURM_STEP_NUM_TASKS").ok()?.parse().ok()
}

/// Where every rank meets (the start, each step, the end): `Ok` when all
/// go on; [`Error::Interrupted`] when a rank was asked to stop (SIGTERM,
/// SIGINT), [`Error::RankFailed`] when a rank failed. `at` names the point
/// for the message. Alone: only this process's signal.
pub fn agree(group: &Group, at: &str) -> Result<()> {
    let mine = match crate::signal::stop_requested() {
        true => Verdict::Stop,
        false => Verdict::Go,
    };
    match group.agree(mine)? {
        Verdict::Go => Ok(()),
        Verdict::Stop => Err(Error::Interrupted {
            what: format!("data-parallel rank {} of {}", group.rank(), group.size()),
            detail: at.into(),
        }),
        Verdict::Failed(code) => Err(Error::RankFailed {
            rank: group.rank(),
            size: group.size(),
            code,
        }),
    }
}

/// Refuses what a data-parallel step cannot compute as the single process
/// does (`config` with a fine-tune's defaults filled in).
///
/// Errors: [`Error::InvalidArgument`] for `--stein-fraction` < 1 or
/// `--stein-bn train` with the TASER penalty (λ > 0).
pub fn check(config: &TrainConfig, group: &Group) -> Result<()> {
    check_flags(config, group.is_parallel())
}

/// The rules of [`check`] on the flags alone (`data_parallel`: whether the
/// run is data-parallel), so that a binary's argument-check mode
/// ([`crate::exit::stop_if_checking_with`]) applies them before a sweep
/// starts any job.
pub fn check_flags(config: &TrainConfig, data_parallel: bool) -> Result<()> {
    if !data_parallel {
        return Ok(());
    }
    let refuse = |flag: &str, value: &str, why: &str| {
        Err(Error::invalid(
            flag,
            value,
            format!(
                "{why} with --data-parallel; drop the flag, or train without --data-parallel \
                 (in a sweep grid: ranks_per_job = 1)"
            ),
        ))
    };
    let reg = &config.reg;
    if reg.lambda > 0.0 && reg.stein_fraction < 1.0 {
        return refuse(
            "--stein-fraction",
            &reg.stein_fraction.to_string(),
            "each rank would draw its own subset, not the single process's",
        );
    }
    if reg.lambda > 0.0 && reg.stein_bn == BnMode::Train {
        return refuse(
            "--stein-bn",
            "train",
            "the penalty's BatchNorm would see one rank's share, not the batch",
        );
    }
    Ok(())
}

/// Rank 0's line at the start of a data-parallel run: the ranks, what sums
/// the gradients, the global batch and its device. Nothing elsewhere.
pub fn announce(group: &Group, batch_size: usize, device: tch::Device) {
    if group.is_parallel() && group.is_root() {
        println!(
            "data-parallel: {} rank(s), gradients summed by {} ({batch_size} samples per global batch); rank 0 on {}",
            group.size(),
            group.describe_backend(),
            crate::device::device_name(device)
        );
    }
}

/// The runtime flags of this rank: `--device auto` becomes the CUDA
/// device of its node-local rank (modulo the visible devices) when
/// libtorch sees any ([`crate::device::rank_device`]).
pub fn rank_runtime(runtime: &RuntimeArgs, group: &Group) -> RuntimeArgs {
    let mut r = runtime.clone();
    if group.is_parallel() {
        r.device = crate::device::rank_device(&runtime.device, group.local_rank());
    }
    r
}

/// This rank's part of a global batch of `orig` original and `extra`
/// extra samples (in that order): the ranges of each it takes and where
/// its samples start in the global batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankPart {
    /// Offset and length in the batch's original samples.
    pub orig: (i64, i64),
    /// Range of the batch's extra samples.
    pub extra: std::ops::Range<usize>,
    /// Offset of the part's first sample in the global batch.
    pub offset: i64,
}

impl RankPart {
    /// The part of rank `rank` of `size` ([`crate::collective::share`]);
    /// alone, the whole batch.
    pub fn of(orig: usize, extra: usize, rank: usize, size: usize) -> RankPart {
        let (offset, len) = crate::collective::share((orig + extra) as i64, rank, size);
        let (o, end) = (orig as i64, offset + len);
        let orig_part = (offset.min(o), end.min(o) - offset.min(o));
        let extra_start = (offset.max(o) - o) as usize;
        let extra_end = (end.max(o) - o) as usize;
        RankPart {
            orig: orig_part,
            extra: extra_start..extra_end,
            offset,
        }
    }

    /// Samples in the part.
    pub fn samples(&self) -> i64 {
        self.orig.1 + self.extra.len() as i64
    }
}

/// Makes every rank's model rank 0's at an epoch's end: BatchNorm's
/// running statistics averaged over the ranks, then every variable (and
/// the EMA's, `ema`) broadcast from rank 0, so evaluation, checkpoints and
/// the next epoch start from one model (AWP's restore rounds differently
/// on each rank). Alone: nothing.
pub fn agree_models(group: &Group, model: &Model, ema: Option<&Model>) -> Result<()> {
    if group.size() == 1 {
        return Ok(());
    }
    let ranks = group.size() as f64;
    // In name order: every rank makes the same sums in the same order.
    let sorted = |m: &Model| {
        let mut v = m.vs.variables().into_iter().collect::<Vec<_>>();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    for (name, t) in sorted(model) {
        if name.ends_with("running_mean") || name.ends_with("running_var") {
            group.sum_(&t)?;
            let _ = tch::no_grad(|| t.shallow_clone().g_div_scalar_(ranks));
        }
    }
    for m in std::iter::once(model).chain(ema) {
        for (_, t) in sorted(m) {
            if t.is_floating_point() {
                group.broadcast_(&t)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_split_original_then_extra_samples() {
        assert_eq!(
            RankPart::of(5, 3, 0, 1),
            RankPart {
                orig: (0, 5),
                extra: 0..3,
                offset: 0
            }
        );
        // 5 original + 3 extra samples over 3 ranks split 3/3/2: rank 1
        // takes originals 3–4 and extra 0, rank 2 extras 1–2.
        let parts: Vec<RankPart> = (0..3).map(|r| RankPart::of(5, 3, r, 3)).collect();
        assert_eq!((parts[0].orig, parts[0].extra.clone()), ((0, 3), 0..0));
        assert_eq!((parts[1].orig, parts[1].extra.clone()), ((3, 2), 0..1));
        assert_eq!((parts[2].orig, parts[2].extra.clone()), ((5, 0), 1..3));
        assert_eq!(
            parts.iter().map(|p| p.offset).collect::<Vec<_>>(),
            [0, 3, 6]
        );
        assert_eq!(parts.iter().map(RankPart::samples).sum::<i64>(), 8);
    }
}
