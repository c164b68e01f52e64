//! The MPI side of [`super::Group`] (feature `mpi`): the world and its
//! polled sums.
use crate::error::{Error, Result};
use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use std::time::{Duration, Instant};

/// The MPI world of this process (finalised when dropped).
pub(super) struct Comm {
    world: SimpleCommunicator,
    _universe: Universe,
}

impl Comm {
    /// Initialises MPI (funneled: only the main thread calls it) and
    /// returns the world with this rank, the size and the node-local rank.
    pub(super) fn join() -> Result<(Comm, usize, usize, usize)> {
        let (universe, _) =
            mpi::initialize_with_threading(mpi::Threading::Funneled).ok_or_else(|| {
                Error::invalid(
                    "--data-parallel",
                    "on",
                    "MPI was already initialised in this process",
                )
            })?;
        let world = universe.world();
        let rank = world.rank();
        let (size, local) = (world.size() as usize, world.split_shared(rank).rank());
        Ok((
            Comm {
                world,
                _universe: universe,
            },
            rank as usize,
            size,
            local as usize,
        ))
    }

    /// Stops every rank of the world with exit `code` (`MPI_Abort`).
    pub(super) fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }

    /// Replaces `values` by their sums over the world, waiting at most
    /// `timeout`; past it, aborts every rank (`MPI_Abort`, exit 1) after
    /// saying so, as a rank that died or hangs would otherwise block the
    /// others forever.
    pub(super) fn sum<T: Equivalence + Copy>(
        &self,
        values: &mut [T],
        rank: usize,
        timeout: Duration,
    ) {
        let send = values.to_vec();
        let start = Instant::now();
        mpi::request::scope(|scope| {
            let mut request = self.world.immediate_all_reduce_into(
                scope,
                &send[..],
                values,
                SystemOperation::sum(),
            );
            loop {
                request = match request.test() {
                    Ok(_) => return,
                    Err(pending) => pending,
                };
                let waited = start.elapsed();
                if waited > timeout {
                    eprintln!(
                        "error: data-parallel rank {rank} waited {:.0} s for the other ranks in a \
                         sum (a rank died or hangs); stopping every rank. Fix: rerun the same \
                         command with --resume; raise --collective-timeout if a rank's epoch-end \
                         work (evaluation, validation) takes longer",
                        waited.as_secs_f64()
                    );
                    self.abort(1);
                }
                // Spin briefly (a step's sums are short), then sleep so a
                // rank that waits for rank 0's evaluation leaves its core.
                if waited < Duration::from_millis(5) {
                    std::thread::yield_now();
                } else {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
    }
}
