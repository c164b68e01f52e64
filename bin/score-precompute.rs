//! `score-precompute`: score fields s̃(x) ≈ ∇ log p(x) into HDF5.
use anyhow::Context;
use clap::Parser;
use std::process::ExitCode;
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
/// scores abort the write.
///
/// Example: score-precompute --dataset digits --source dsm --out runs/digits-dsm.h5
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    #[command(flatten)]
    args: PrecomputeArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match precompute(&args.args).context("score-precompute failed") {
        Ok(s) => {
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
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
