//! The library's error type: every variant names the thing that is wrong and
//! how to fix it, so binaries can print it as is.
use std::path::PathBuf;

/// Errors of the library. Binaries wrap them in `anyhow` and exit non-zero.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An input file is missing or unreadable.
    #[error("cannot read {path}: {reason}. Fix: {fix}")]
    MissingInput {
        path: PathBuf,
        reason: String,
        fix: String,
    },
    /// An input file exists but its content is not what it should be.
    #[error("{path} is corrupt: {reason}. Fix: {fix}")]
    CorruptInput {
        path: PathBuf,
        reason: String,
        fix: String,
    },
    /// A file is locked: another process holds it (an HDF5 writer's lock,
    /// errno 11), or the file system does not support locks. Nothing is
    /// wrong with the file; a later run can open it.
    #[error(
        "{path} is locked: {detail}. Another process holds it open for writing (wait for it to finish; \
         recomputing it now would race that process), or the file system has no locks (Lustre, NFS). \
         Fix: wait and rerun, or on a file system without locks set HDF5_USE_FILE_LOCKING=FALSE"
    )]
    FileLocked { path: PathBuf, detail: String },
    /// An output folder (or file) that another live run is writing (it
    /// holds the folder's lock, [`crate::outdir`]): two runs on one output
    /// would overwrite or mix each other's results.
    #[error(
        "{path} is being written by another run ({holder}); two runs writing one output would \
         overwrite or mix each other's results. Fix: wait for that run to end, or write elsewhere \
         (another --out)"
    )]
    OutputInUse { path: PathBuf, holder: String },
    /// A run failed after it had begun writing its outputs: the failure,
    /// then what it kept and how to continue ([`crate::outdir`]).
    /// (Not a `source`: its text is part of this message, printed once.)
    #[error("{error}\n{note}")]
    AfterWrites { error: Box<Error>, note: String },
    /// An output location cannot be written.
    #[error("cannot write to {path}: {reason}. Fix: choose a writable --out directory")]
    Unwritable { path: PathBuf, reason: String },
    /// Writing an output failed part-way (nothing is left at its final name).
    #[error("writing {path} failed: {reason}. Nothing was left at the final name; check the disk and rerun")]
    OutputFailed { path: PathBuf, reason: String },
    /// Training produced a non-finite loss.
    #[error(
        "training diverged in epoch {epoch} ({detail}); no checkpoint of it was written. Fix: lower --lr or \
         --lambda, ramp λ with --lambda-warmup-steps, or use --optimizer adam (scale-free steps)"
    )]
    Diverged { epoch: usize, detail: String },
    /// A command-line or configuration value is out of its domain.
    #[error("invalid {name} = {value}: {reason}")]
    InvalidArgument {
        name: String,
        value: String,
        reason: String,
    },
    /// A checkpoint does not match the model or data it is used with.
    #[error("checkpoint {path} does not match: {reason}. Fix: {fix}")]
    CheckpointMismatch {
        path: PathBuf,
        reason: String,
        fix: String,
    },
    /// A computation broke one of its own invariants (e.g. an attack returned
    /// a point outside its threat set): a bug of the suite, not of the input.
    #[error("{what} broke an invariant: {reason}. This is a bug of the suite: please report it with the command line")]
    Invariant { what: String, reason: String },
    /// A computation produced NaN or ±Inf where a number was needed (an
    /// attack's logits or input gradients): its result would be meaningless,
    /// so it stops instead of reporting one.
    #[error("{what} is not finite ({detail}); no result was reported. Fix: {fix}")]
    NonFinite {
        what: String,
        detail: String,
        fix: String,
    },
    /// `--device auto` where the job was given a GPU (a Slurm allocation,
    /// `CUDA_VISIBLE_DEVICES`, a GPU `nvidia-smi` lists) but libtorch sees
    /// none: computing on the CPU instead would be silent and slow.
    #[error(
        "--device auto: {signal}, but libtorch sees no CUDA device ({detail}). Fix: run where the GPU \
         is visible to libtorch (update the NVIDIA driver; under Slurm request it with --gpus), or pass \
         --device cpu to compute on the CPU on purpose"
    )]
    GpuNotVisible { signal: String, detail: String },
    /// An MPI command (`sweep run`, `sweep devices`) of a binary built
    /// without MPI: the portable `make dist` form, which runs on any
    /// cluster's MPI-less array path.
    #[error(
        "{command}: this sweep binary was built without MPI (the portable `make dist` form). Fix: run \
         the grid as a Slurm job array (slurm/sweep-array.sbatch; `sweep plan GRID --out DIR` prints \
         the sbatch lines, each task runs `sweep run-one`), or build sweep against the cluster's MPI \
         on a login node (`module load <your MPI>` then `make sweep-mpi`; docs/CLUSTER.md)"
    )]
    NoMpi { command: String },
    /// A stop signal (SIGTERM/SIGINT) ended the work before it finished;
    /// what was saved stays and the same command with `resume` continues.
    #[error("{what} was stopped by a signal ({detail}). Fix: rerun the same command with --resume; it continues after the last saved epoch")]
    Interrupted { what: String, detail: String },
    /// Another rank of a data-parallel run failed with exit `code`; this
    /// rank stopped with it (the failed rank's own error says why).
    #[error("another rank of this data-parallel run failed (its error, printed by that rank, says why); rank {rank} of {size} stopped with it")]
    RankFailed { rank: usize, size: usize, code: u8 },
    /// The data-parallel ranks could not set up their communication.
    #[error("data-parallel communication: {detail}. Fix: rerun with --collective mpi (sums through host copies over MPI)")]
    Collective { detail: String },
    /// A libtorch error, with a hint when its text names a known cause
    /// ([`torch_hint`]).
    /// (Not a `source`: its text is part of this message, printed once.)
    #[error("libtorch: {0}{hint}", hint = torch_hint(&.0.to_string()))]
    Torch(tch::TchError),
    /// An I/O error with the path it happened on.
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The hint added to a libtorch error whose text names a known cause:
/// running out of (GPU or CPU) memory names the knobs that shrink a step;
/// an op without a deterministic implementation names `--deterministic`.
/// Empty for any other text.
pub fn torch_hint(message: &str) -> &'static str {
    let m = message.to_ascii_lowercase();
    if m.contains("out of memory") || m.contains("can't allocate memory") {
        ". Fix: make a step smaller: lower --batch-size (train, finetune, attack) or \
         --eval-batch-size, use fewer --hutchinson-probes, penalise part of each batch with \
         --stein-fraction, or train with --precision bf16; on a shared GPU check nvidia-smi for \
         other processes"
    } else if m.contains("does not have a deterministic implementation")
        || m.contains("cublas_workspace_config")
    {
        ". Fix: this operation has no deterministic implementation on this device; run without \
         --deterministic"
    } else {
        ""
    }
}

impl From<tch::TchError> for Error {
    fn from(e: tch::TchError) -> Self {
        Error::Torch(e)
    }
}

/// Result alias of the library.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(name: &str, value: impl ToString, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            name: name.to_string(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    /// Wraps an I/O error with its path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
