//! The ranks of a data-parallel run (`train --data-parallel`, started as G
//! processes by `mpirun -np G` or `srun -n G`) and the sums they share.
//!
//! Every rank holds the whole model and takes a contiguous share of every
//! global batch of B samples ([`share`]: as even as it goes, lower ranks
//! the larger). After backward each rank's gradient is its share of the
//! gradient of the global loss (its mean loss weighted by bᵣ/B; the TASER
//! penalty weighted by the global centre and count), and [`Group::sum_`]
//! adds them: every rank then applies the same update, that of one process
//! on the whole batch, up to the order of the float sums.
//!
//! Communication ([`Transport`], chosen by [`Group::connect`] once every
//! rank has its device): NCCL's all-reduce on the device when every rank
//! computes on a CUDA device and NCCL loads ([`nccl`]); otherwise MPI's
//! `MPI_Iallreduce` (sum) on host memory, a CUDA buffer through a host
//! copy. The agreements of [`Group::agree`] and the other host sums always
//! go through MPI. Either wait is polled: one longer than the group's
//! timeout prints which rank waited and calls `MPI_Abort`, which stops
//! every rank (exit 1) instead of hanging.
//!
//! Random draws inside a step (the training attacks' random starts,
//! Hutchinson probes) come from each rank's own stream
//! ([`Group::rank_seed`]), as under PyTorch DDP; rank 0's is the
//! single-process stream.
#[cfg(feature = "mpi")]
mod connect;
#[cfg(feature = "mpi")]
mod nccl;
#[cfg(feature = "mpi")]
mod world;

use crate::error::{Error, Result};
use std::time::Duration;
use tch::{Device, Kind, Tensor};

/// The ranks of one run: this process's rank among `size` and its rank
/// on its node.
pub struct Group {
    rank: usize,
    size: usize,
    local_rank: usize,
    /// The longest wait in one sum before every rank is stopped.
    #[cfg(feature = "mpi")]
    timeout: Duration,
    /// Wall time spent in sums so far (communication and waiting for the
    /// slowest rank).
    in_sums: std::cell::Cell<Duration>,
    /// Whether an agreement ended the run (every rank leaves with it).
    settled: std::cell::Cell<bool>,
    #[cfg(feature = "mpi")]
    comm: Option<world::Comm>,
    /// NCCL's communicator, once [`Group::connect`] chose it.
    #[cfg(feature = "mpi")]
    nccl: std::cell::OnceCell<nccl::Comm>,
    /// Why the sums go through MPI (set by [`Group::connect`]).
    mpi_because: std::cell::OnceCell<String>,
}

/// What carries the data-parallel sums of CUDA buffers (`--collective`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// NCCL when every rank computes on a CUDA device and NCCL loads;
    /// otherwise MPI, with the reason in the run's first line.
    Auto,
    /// NCCL, or an error (a rank on the CPU, NCCL missing).
    Nccl,
    /// MPI on host memory (CUDA buffers copied to the host and back).
    Mpi,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Group(rank {} of {}, {})",
            self.rank,
            self.size,
            self.backend()
        )
    }
}

/// The share of a global batch of `global` samples that rank `rank` of
/// `size` takes: (offset, length), contiguous, the first `global % size`
/// ranks one sample more.
pub fn share(global: i64, rank: usize, size: usize) -> (i64, i64) {
    let (r, g) = (rank as i64, size as i64);
    let (base, extra) = (global / g, global % g);
    (r * base + r.min(extra), base + i64::from(r < extra))
}

/// What a rank says at an agreement point ([`Group::agree`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go on.
    Go,
    /// Stop: a signal asked for it (exit 3).
    Stop,
    /// This rank failed with this exit code.
    Failed(u8),
}

/// One rank's share of a global batch: the group and the global batch's
/// size (a [`crate::data::Batch`] of a data-parallel step carries it).
#[derive(Debug, Clone, Copy)]
pub struct BatchShare<'a> {
    pub group: &'a Group,
    /// Samples in the global batch (every rank's share together).
    pub global_len: i64,
}

impl Group {
    /// A run of one process, with no communication.
    pub fn single() -> Group {
        Group {
            rank: 0,
            size: 1,
            local_rank: 0,
            #[cfg(feature = "mpi")]
            timeout: Duration::MAX,
            in_sums: Default::default(),
            settled: Default::default(),
            #[cfg(feature = "mpi")]
            comm: None,
            #[cfg(feature = "mpi")]
            nccl: Default::default(),
            mpi_because: Default::default(),
        }
    }

    /// Joins the MPI world this process was started in (a lone process is
    /// a group of one). `timeout`: the longest a rank waits in one sum.
    ///
    /// Errors: [`Error::InvalidArgument`] naming `--data-parallel` when the
    /// binary was built without MPI (the portable `make dist` form) or MPI
    /// was already initialised.
    pub fn join(timeout: Duration) -> Result<Group> {
        #[cfg(feature = "mpi")]
        {
            let (comm, rank, size, local_rank) = world::Comm::join()?;
            Ok(Group {
                rank,
                size,
                local_rank,
                timeout,
                in_sums: Default::default(),
                settled: Default::default(),
                comm: Some(comm),
                nccl: Default::default(),
                mpi_because: Default::default(),
            })
        }
        #[cfg(not(feature = "mpi"))]
        {
            let _ = timeout;
            Err(Error::invalid(
                "--data-parallel",
                "on",
                "this binary was built without MPI (the portable `make dist` form): build train \
                 against the cluster's MPI (`make build` on a login node after `module load \
                 <your MPI>`), or train without --data-parallel",
            ))
        }
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// This rank's rank among the ranks of its node (picks its GPU).
    pub fn local_rank(&self) -> usize {
        self.local_rank
    }

    /// Whether this rank writes the run's files (rank 0).
    pub fn is_root(&self) -> bool {
        self.rank == 0
    }

    /// Whether this is a data-parallel run (joined, even as one rank).
    pub fn is_parallel(&self) -> bool {
        #[cfg(feature = "mpi")]
        return self.comm.is_some();
        #[cfg(not(feature = "mpi"))]
        false
    }

    /// What carries the sums of gradient buffers: "nccl" (after
    /// [`Group::connect`] chose it), "mpi" (host buffers), or "none" alone.
    pub fn backend(&self) -> &'static str {
        #[cfg(feature = "mpi")]
        if self.nccl.get().is_some() {
            return "nccl";
        }
        if self.is_parallel() {
            "mpi"
        } else {
            "none"
        }
    }

    /// The transport in words: "nccl 2.28.9", or "mpi" with why NCCL is
    /// not used ("mpi (host copies; NCCL not used: this rank computes on
    /// cpu)").
    pub fn describe_backend(&self) -> String {
        #[cfg(feature = "mpi")]
        if let Some(c) = self.nccl.get() {
            return format!("nccl {}", c.version());
        }
        match self.mpi_because.get() {
            Some(why) => format!("mpi (host copies; NCCL not used: {why})"),
            None => self.backend().into(),
        }
    }

    /// Seconds this rank has spent in sums: moving the buffers and waiting
    /// for the slowest rank (host copies of CUDA buffers included).
    pub fn seconds_in_sums(&self) -> f64 {
        self.in_sums.get().as_secs_f64()
    }

    /// The seed of this rank's random stream for a step seeded `seed`:
    /// `seed` itself on rank 0, a SplitMix64 mix of it with the rank
    /// elsewhere ([`crate::runtime::mix_seed`]: unrelated streams).
    pub fn rank_seed(&self, seed: u64) -> u64 {
        match self.rank {
            0 => seed,
            r => crate::runtime::mix_seed(seed, r as u64),
        }
    }

    /// Replaces `t` (f32 or f64, any device) by its sum over the ranks, in
    /// place. Alone: nothing to do.
    ///
    /// Errors: [`Error::Invariant`] for another dtype.
    pub fn sum_(&self, t: &Tensor) -> Result<()> {
        if self.size == 1 {
            return Ok(());
        }
        let double = match t.kind() {
            Kind::Float => false,
            Kind::Double => true,
            kind => {
                return Err(Error::Invariant {
                    what: "the data-parallel sum".into(),
                    reason: format!("a {kind:?} buffer (f32 or f64 expected)"),
                })
            }
        };
        let start = std::time::Instant::now();
        #[cfg(feature = "mpi")]
        let on_device = self.nccl_sum(t, double);
        #[cfg(not(feature = "mpi"))]
        let on_device = false;
        if !on_device {
            let host = t.to_device(Device::Cpu).contiguous();
            let n = host.numel();
            // SAFETY: `host` is a contiguous CPU tensor of n elements of
            // the dtype `double` names, alive and not aliased while the
            // slice is used.
            match double {
                false => self.sum_values(unsafe {
                    std::slice::from_raw_parts_mut(host.data_ptr() as *mut f32, n)
                })?,
                true => self.sum_values(unsafe {
                    std::slice::from_raw_parts_mut(host.data_ptr() as *mut f64, n)
                })?,
            }
            if host.data_ptr() != t.data_ptr() {
                tch::no_grad(|| t.shallow_clone().copy_(&host));
            }
        }
        self.in_sums.set(self.in_sums.get() + start.elapsed());
        Ok(())
    }

    /// Replaces `values` by their sums over the ranks.
    pub fn sum_f64(&self, values: &mut [f64]) -> Result<()> {
        if self.size == 1 {
            return Ok(());
        }
        let start = std::time::Instant::now();
        self.sum_values(values)?;
        self.in_sums.set(self.in_sums.get() + start.elapsed());
        Ok(())
    }

    /// Gives every rank rank 0's `t` (a sum with zeros from the others:
    /// exact).
    pub fn broadcast_(&self, t: &Tensor) -> Result<()> {
        if self.size > 1 && !self.is_root() {
            let _ = tch::no_grad(|| t.shallow_clone().zero_());
        }
        self.sum_(t)
    }

    /// The ranks' agreement at a point every rank passes (the start, each
    /// step, the end): everyone's [`Verdict`] combined, a failure (the
    /// highest exit code among failed ranks) before a stop before go.
    /// After a verdict other than go the group is settled: this rank leaves
    /// with it and [`Group::leave_after_error`] says nothing more. Alone:
    /// `mine`.
    pub fn agree(&self, mine: Verdict) -> Result<Verdict> {
        if self.size == 1 {
            return Ok(mine);
        }
        // [stop, failed with exit code 1, 2, 3, other]
        let mut v = [0.0f64; 5];
        match mine {
            Verdict::Go => {}
            Verdict::Stop => v[0] = 1.0,
            Verdict::Failed(code) => v[usize::from(code.clamp(1, 4))] = 1.0,
        }
        self.sum_f64(&mut v)?;
        let verdict = match (1..5).rev().find(|&c| v[c] > 0.0) {
            Some(code) => Verdict::Failed(code as u8),
            None if v[0] > 0.0 => Verdict::Stop,
            None => Verdict::Go,
        };
        if verdict != Verdict::Go {
            self.settled.set(true);
        }
        Ok(verdict)
    }

    /// After this rank failed with exit `code` on its own (not by an
    /// agreement's verdict): tells the other ranks, which wait at their
    /// next agreement, so they stop too instead of waiting for the
    /// timeout. Once; nothing alone or when already settled.
    pub fn leave_after_error(&self, code: u8) {
        if self.size > 1 && !self.settled.get() {
            let _ = self.agree(Verdict::Failed(code));
        }
    }

    /// Without MPI a group is never data-parallel: nothing to connect.
    #[cfg(not(feature = "mpi"))]
    pub fn connect(&self, _device: Device, _choice: Transport) -> Result<()> {
        Ok(())
    }

    #[cfg(feature = "mpi")]
    fn sum_values<T: ::mpi::traits::Equivalence + Copy>(&self, values: &mut [T]) -> Result<()> {
        match &self.comm {
            Some(c) => {
                c.sum(values, self.rank, self.timeout);
                Ok(())
            }
            None => Ok(()),
        }
    }

    #[cfg(not(feature = "mpi"))]
    fn sum_values<T>(&self, _values: &mut [T]) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_the_batch_in_order() {
        for (global, size) in [(64, 2), (64, 3), (7, 3), (5, 5), (1000, 7)] {
            let mut next = 0;
            for rank in 0..size {
                let (offset, len) = share(global, rank, size);
                assert_eq!(offset, next, "{global} over {size}, rank {rank}");
                assert!(len == global / size as i64 || len == global / size as i64 + 1);
                next += len;
            }
            assert_eq!(next, global);
        }
        assert_eq!(share(64, 0, 3), (0, 22));
        assert_eq!(share(64, 2, 3), (43, 21));
    }

    #[test]
    fn rank_zero_keeps_the_seed_and_others_differ() {
        let mut g = Group::single();
        assert_eq!(g.rank_seed(42), 42);
        g.rank = 1;
        let a = g.rank_seed(42);
        g.rank = 2;
        assert_ne!(a, 42);
        assert_ne!(a, g.rank_seed(42));
    }

    #[test]
    fn alone_a_sum_is_the_value() {
        let g = Group::single();
        let t = Tensor::from_slice(&[1.5f32, -2.0]);
        g.sum_(&t).unwrap();
        g.broadcast_(&t).unwrap();
        assert_eq!(Vec::<f32>::try_from(&t).unwrap(), [1.5, -2.0]);
        assert_eq!(g.agree(Verdict::Stop).unwrap(), Verdict::Stop);
        assert_eq!(g.agree(Verdict::Go).unwrap(), Verdict::Go);
        assert!(!g.is_parallel());
    }
}
