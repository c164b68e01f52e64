//! `score-precompute`: score fields s̃(x) ≈ ∇ log p(x) into HDF5.
use anyhow::Context;
use clap::Parser;
use std::process::ExitCode;
use taser::exit::{self, Status};
use taser::score::precompute::{precompute, PrecomputeArgs};

/// Compute a score field s̃(x) ≈ ∇ₓ log p(x) (in [0,1] pixel coordinates)
/// for every input of a split and write it to HDF5, once per data set, for
/// every training job of a sweep to read (train --scores FILE).
///
/// Sources: gaussian-std (N(0, I)), gaussian (fitted μ, Σ with shrinkage),
/// gmm (class-conditional Gaussians, marginal mixture score), dsm (a score
/// network trained here by denoising score matching at --dsm-sigma; saved
/// beside --out for reuse with --dsm-model), torchscript (a traced
/// ε-prediction diffusion model (x_t, t) → ε: s = −ε/σ_t at timestep --t of
/// the linear-β DDPM schedule, inputs mapped by --input-range and the score
/// mapped back by the chain rule).
///
/// File layout (h5py-readable): /score float32 [N, C, H, W] (chunked,
/// compressed), /index uint64 [N], root attributes format, dataset, split,
/// input_shape, source, source_config, t, sigma_t, score_std, c_t
/// (σ̂_t/σ̂_50; apply with train --score-normalise), fingerprint, version.
/// Written under a temporary name and renamed when complete; NaN/Inf
/// scores abort the write. An existing --out is replaced only with
/// --overwrite (checked before any work), and never while another process
/// holds it open for writing. `train --scores` records the file's SHA-256
/// and attributes in model.json (`score_file`).
///
/// Example: score-precompute --dataset digits --source dsm --out runs/digits-dsm.h5
///
/// Exit codes: 0 the file is written; 1 a failed computation (DSM training,
/// libtorch or I/O error; nothing is left at --out), an --out another
/// score-precompute is writing (its lock, .<name>.taser-lock beside it,
/// names the holder) or an --out that another process holds (HDF5 file
/// lock; on Lustre/NFS without locks set HDF5_USE_FILE_LOCKING=FALSE); 2 bad usage or input (a flag out of its
/// domain, a missing data set or --model file, an unwritable --out, an
/// existing --out without --overwrite); 3 is not used (precompute does not
/// stop on signals).
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    #[command(flatten)]
    args: PrecomputeArgs,
}

fn main() -> ExitCode {
    let args = exit::parse_args::<Args>();
    exit::run_main(|| run(args))
}

fn run(args: Args) -> anyhow::Result<Status> {
    let s = precompute(&args.args).context("score-precompute failed")?;
    println!(
        "wrote {} scores to {} in {:.2}s ({:.0} samples/s; source set-up {:.2}s); score std {:.4}, c_t {:.4}",
        s.samples,
        s.path.display(),
        s.seconds,
        s.samples as f64 / s.seconds.max(1e-9),
        s.setup_seconds,
        s.score_std,
        s.c_t
    );
    Ok(Status::Ok)
}
