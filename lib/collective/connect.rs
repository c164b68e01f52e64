//! The choice of what carries a group's sums of CUDA buffers
//! ([`Group::connect`]) and the NCCL sum itself.
use super::{Group, Transport};
use crate::error::{Error, Result};
use tch::Device;

impl Group {
    /// Chooses what carries this group's sums of CUDA buffers, once every
    /// rank has its `device` (every rank calls it, at the same point):
    /// NCCL when `choice` allows it, every rank computes on a CUDA device
    /// and every rank loads NCCL; then rank 0 makes the communicator's id,
    /// MPI gives it to the others, and each joins on its device. Otherwise
    /// MPI, and [`Group::describe_backend`] says why. Alone: nothing.
    ///
    /// Errors: [`Error::InvalidArgument`] naming `--collective` when
    /// `choice` is [`Transport::Nccl`] and a rank cannot use NCCL;
    /// [`Error::Collective`] when rank 0 cannot make an id. A rank whose
    /// NCCL join fails says why and stops every rank (`MPI_Abort`, exit 1):
    /// the others wait inside NCCL, where no agreement reaches them.
    pub fn connect(&self, device: Device, choice: Transport) -> Result<()> {
        if !self.is_parallel() {
            return Ok(());
        }
        let here = match (choice, device) {
            (Transport::Mpi, _) => Err("--collective mpi".to_string()),
            (_, Device::Cuda(ordinal)) => usable_nccl()
                .map(|nccl| (nccl, ordinal))
                .map_err(|e| format!("NCCL does not load ({e})")),
            (_, d) => Err(format!(
                "rank {} computes on {}",
                self.rank,
                crate::device::device_name(d)
            )),
        };
        let mut able = [f64::from(u8::from(here.is_ok()))];
        self.sum_f64(&mut able)?;
        let all = able[0] as usize == self.size;
        let (nccl, ordinal) = match (here, all) {
            (Ok(found), true) => found,
            (here, _) => {
                let why = here
                    .err()
                    .unwrap_or_else(|| "another rank cannot use NCCL (its line says why)".into());
                if choice == Transport::Nccl {
                    return Err(Error::invalid(
                        "--collective",
                        "nccl",
                        format!(
                            "{why}; NCCL needs every rank on a CUDA device that loads \
                             libnccl.so.2 (PyTorch's CUDA wheels ship it): use --collective \
                             auto or mpi"
                        ),
                    ));
                }
                let _ = self.mpi_because.set(why);
                return Ok(());
            }
        };
        let id = self.share_id(&nccl)?;
        match NcclComm::join(nccl, id, self.rank, self.size, ordinal) {
            Ok(comm) => {
                let _ = self.nccl.set(comm);
                Ok(())
            }
            Err(e) => self.stop_every_rank(&format!(
                "NCCL could not join rank {} on cuda:{ordinal}: {e}. Fix: rerun with \
                 --collective mpi (sums through host copies)",
                self.rank
            )),
        }
    }

    /// Rank 0's new communicator id, given to every rank over MPI (each
    /// byte a float of a sum with zeros: exact).
    fn share_id(&self, nccl: &Nccl) -> Result<UniqueId> {
        let mut values = [0.0f64; 129];
        let mut failed = None;
        if self.is_root() {
            match nccl.unique_id() {
                Ok(id) => {
                    values[0] = 1.0;
                    for (v, b) in values[1..].iter_mut().zip(id.internal) {
                        *v = f64::from(b);
                    }
                }
                Err(e) => failed = Some(e),
            }
        }
        self.sum_f64(&mut values)?;
        if values[0] != 1.0 {
            return Err(Error::Collective {
                detail: failed.unwrap_or_else(|| "rank 0 could not make NCCL's id".into()),
            });
        }
        let mut id = UniqueId { internal: [0; 128] };
        for (b, v) in id.internal.iter_mut().zip(&values[1..]) {
            *b = *v as u8;
        }
        Ok(id)
    }

    /// `t` (a CUDA tensor of f64 values with `double`, else f32) summed
    /// over the ranks in place by NCCL, when [`Group::connect`] chose it:
    /// whether it was (false: the caller sums through MPI).
    pub(super) fn nccl_sum(&self, t: &tch::Tensor, double: bool) -> bool {
        let Some(comm) = self.nccl.get().filter(|_| t.device().is_cuda()) else {
            return false;
        };
        let buf = t.contiguous();
        if let Err(e) = comm.sum(buf.data_ptr(), buf.numel(), double, self.timeout) {
            self.stop_every_rank(&format!(
                "data-parallel rank {}: NCCL: {e}; stopping every rank. Fix: rerun the same \
                 command with --resume; raise --collective-timeout if a rank's epoch-end work \
                 takes longer, or use --collective mpi if NCCL itself fails",
                self.rank
            ));
        }
        if buf.data_ptr() != t.data_ptr() {
            tch::no_grad(|| t.shallow_clone().copy_(&buf));
        }
        true
    }

    /// Prints `message` and stops every rank (`MPI_Abort`, exit 1).
    fn stop_every_rank(&self, message: &str) -> ! {
        eprintln!("error: {message}");
        match &self.comm {
            Some(c) => c.abort(1),
            None => std::process::exit(1),
        }
    }
}

use super::nccl::{Comm as NcclComm, Nccl, UniqueId};

/// NCCL, loaded and answering `ncclGetVersion`.
fn usable_nccl() -> std::result::Result<Nccl, String> {
    let nccl = Nccl::load()?;
    nccl.version()?;
    Ok(nccl)
}
