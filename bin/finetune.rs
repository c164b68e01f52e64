//! `finetune`: fine-tune a checkpoint with the TASER penalty and a KL anchor
//! to the frozen teacher (TASER §3.4, eq. 26).
use anyhow::Context;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};
use std::process::ExitCode;
use taser::checkpoint;
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
/// `--method pgd-at --attack-steps 3` for an adversarial-lite base loss).
///
/// Outputs in --out are those of `train` (model.safetensors + model.json,
/// metrics.csv, resume state for --resume); the sidecar records --from and α.
///
/// Example: finetune --from runs/pgdat/model.safetensors --method pgd-at
///   --lambda 1 --scores digits-dsm.h5 --out runs/pgdat-taser
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

/// `train`'s flags with the fine-tuning protocol's defaults.
fn command() -> clap::Command {
    let defaults = [
        ("epochs", "50"),
        ("optimizer", "adam"),
        ("lr", "1e-3"),
        ("lr_min", "1e-4"),
        ("weight_decay", "1e-4"),
        ("schedule", "warmup-cosine"),
    ];
    defaults
        .into_iter()
        .fold(Args::command(), |cmd, (id, value)| {
            cmd.mut_arg(id, |a| a.default_value(value))
        })
}

fn given(m: &ArgMatches, id: &str) -> bool {
    m.value_source(id) == Some(ValueSource::CommandLine)
}

fn main() -> ExitCode {
    let matches = command().get_matches();
    let mut args = match Args::from_arg_matches(&matches) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    let result = (|| {
        let meta = checkpoint::read_meta(&args.finetune.from)?;
        if !given(&matches, "model") {
            args.config.model = meta.model.arch;
        }
        if !given(&matches, "activation") {
            args.config.activation = meta.model.activation;
        }
        if !given(&matches, "mlp_hidden") {
            args.config.mlp_hidden = meta.model.mlp_hidden.clone();
        }
        if !given(&matches, "dataset") {
            args.config.dataset = meta.dataset.parse()?;
        }
        if !given(&matches, "warmup_epochs") {
            args.config.warmup_epochs = 0.1 * args.config.epochs as f64;
        }
        args.finetune.ramp_lambda_over_warmup = !given(&matches, "lambda_warmup_steps");
        anyhow::Ok(finetune(&args.config, &args.run, &args.finetune)?)
    })()
    .context("finetune failed");
    match result {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
