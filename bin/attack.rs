//! `attack`: evaluate a checkpoint with AutoAttack, SPSA and PGD on a fixed evaluation subset.
use anyhow::Context;
use clap::Parser;
use std::process::ExitCode;
use taser::attack::eval::{evaluate, EvalConfig};

/// Evaluate a checkpoint's robustness: clean accuracy and accuracy under
/// AutoAttack (standard: APGD-CE, APGD-T, FAB-T, Square), SPSA and PGD, per
/// test point of a fixed evaluation subset (SPEC §6).
///
/// Outputs in --out: per_sample.csv (index,label,clean_correct,<one column
/// per attack>,worst_case; 1 = correct/robust), summary.csv (one row:
/// checkpoint, dataset, norm, eps, subset size and fingerprint, seed, clean
/// accuracy, accuracy per attack and per AutoAttack component, worst-case
/// accuracy, seconds per attack), attack-state.json (finished attacks and
/// the flags; a rerun of the same command continues an interrupted
/// evaluation and never repeats a finished attack; a rerun with other flags
/// is refused) and subset.json when the subset was drawn here.
///
/// Warnings on stderr follow AutoAttack's checks: points with zero input
/// gradient, outputs that differ between two forward passes, and a
/// black-box attack (Square, SPSA) breaking points the white-box attacks
/// left robust.
///
/// Example: attack --checkpoint runs/std/model.safetensors --attacks aa,spsa,pgd20
///          --norm linf --eps 8/255 --out runs/std/eval
#[derive(Parser, Debug)]
#[command(version, about, long_about, allow_negative_numbers = true)]
struct Args {
    #[command(flatten)]
    config: EvalConfig,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match evaluate(&args.config).context("attack failed") {
        Ok(summary) => {
            println!("clean = {:.6}", summary.clean_accuracy);
            for (name, acc) in &summary.accuracies {
                println!("{name} = {acc:.6}");
            }
            if summary.complete {
                println!("worst_case = {:.6}", summary.worst_case_accuracy);
                println!("results: {}", summary.out.display());
            } else {
                println!(
                    "stopped before every attack finished (--stop-after); rerun the same command to continue"
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
