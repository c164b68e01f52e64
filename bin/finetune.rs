//! `finetune`: fine-tune a checkpoint with the TASER penalty and a KL anchor
//! to the frozen teacher (TASER §3.4, eq. 26).
use anyhow::Context;
use clap::Parser;
use std::process::ExitCode;
use taser::exit::{self, Status};
use taser::train::{finetune, FinetuneArgs, RunOptions, TrainConfig};

/// Fine-tune a trained checkpoint: L = L_base + α·KL(f_θ0(x) ‖ f_θ(x)) +
/// λ(t)·R(x) (TASER eq. 26), starting from θ0 (--from), which also stays
/// frozen as the teacher.
///
/// Defaults follow the paper's fine-tuning protocol (Appendix C.5): 50
/// epochs, Adam, linear warm-up over the first 10% of the steps then cosine
/// from --lr 1e-3 to --lr-min 1e-4, weight decay 1e-4, and λ ramped over the
/// warm-up (unless --lambda-warmup-steps is given). --model, --activation,
/// --mlp-hidden and --dataset are taken from the checkpoint's sidecar unless
/// given; if given they must match it. The base loss is any --method's (e.g.
/// `--method pgd-at --attack-steps 3` for an adversarial-lite base loss;
/// --eps-warmup-epochs ramps its attack's ε as in `train`).
///
/// Outputs in --out are those of `train` (model.safetensors + model.json,
/// metrics.csv with its instrument columns, resume state for --resume); the
/// sidecar records --from and α. The controls --reg grad-norm,
/// --score-permute, --zero-scores and --stein-coordinates work as in `train`
/// (see `train --help` for them and for metrics.csv's columns).
///
/// Example: finetune --from runs/pgdat/model.safetensors --method pgd-at
///   --lambda 1 --scores digits-dsm.h5 --out runs/pgdat-taser
///
/// --out is locked and a failure keeps the finished files, as with train.
///
/// Exit codes: 0 fine-tuned (or the run in --out was already complete), 1
/// the training failed (diverged: loss or penalty not finite; an I/O or
/// libtorch error; another run writing --out), 2 bad usage or input (a flag out of its domain, a
/// missing or corrupt --from, a checkpoint of another model or data set, an
/// --out that holds another run or cannot be written), 3 interrupted (a
/// --data-parallel run stopped by SIGTERM or SIGINT on any rank; the same
/// command with --resume continues it). A data-parallel rank stopped by
/// another rank's failure exits with that rank's code.
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    long_about,
    allow_negative_numbers = true,
    args_override_self = true
)]
struct Args {
    #[command(flatten)]
    finetune: FinetuneArgs,
    #[command(flatten)]
    config: TrainConfig,
    #[command(flatten)]
    run: RunOptions,
}

fn main() -> ExitCode {
    let (mut args, given) =
        exit::stop_if_checking_with(taser::train::finetuning::parse::<Args>(), |(a, _)| {
            taser::train::parallel::check_flags(&a.config, a.run.data_parallel)
        });
    args.finetune.given = given;
    exit::run_main(|| run(args))
}

fn run(args: Args) -> anyhow::Result<Status> {
    let summary = finetune(&args.config, &args.run, &args.finetune).context("finetune failed")?;
    println!("{summary}");
    Ok(Status::Ok)
}
