//! `train`: trains a model on a data set and writes a checkpoint.
use anyhow::Context;
use clap::Parser;
use std::process::ExitCode;
use taser::train::{train, RunOptions, TrainConfig};

/// Train a classifier (or the toy regressor) and write a safetensors
/// checkpoint with a JSON sidecar and a per-epoch metrics CSV.
///
/// Outputs in --out: model.safetensors + model.json (final weights, model
/// spec, every hyperparameter, seed, version, metrics), metrics.csv (one row
/// per epoch: epoch, lr, train_loss, train_acc, test_loss, test_acc,
/// seconds) and the resume state (resume.safetensors, resume.json), written
/// after every epoch, which --resume continues from.
///
/// Methods so far: standard (cross-entropy). The robust methods (pgd-at,
/// trades, mart, awp) and the TASER penalty arrive with later releases and
/// are refused until then.
///
/// Example: train --dataset digits --model cnn-small --epochs 20 --out runs/std
#[derive(Parser, Debug)]
#[command(version, about, long_about, allow_negative_numbers = true)]
struct Args {
    #[command(flatten)]
    config: TrainConfig,
    #[command(flatten)]
    run: RunOptions,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match train(&args.config, &args.run).context("train failed") {
        Ok(summary) => {
            if summary.already_complete {
                println!("already complete: {}", summary.checkpoint.display());
            }
            for (k, v) in &summary.metrics {
                println!("{k} = {v:.6}");
            }
            println!("checkpoint: {}", summary.checkpoint.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
