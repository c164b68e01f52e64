//! `attack`: evaluate a checkpoint with AutoAttack, SPSA and PGD on a fixed evaluation subset.
use anyhow::Context;
use clap::Parser;
use std::process::ExitCode;
use taser::attack::eval::{evaluate, EvalConfig};
use taser::exit::{self, Status};

/// Evaluate a checkpoint's robustness: clean accuracy and accuracy under
/// AutoAttack (standard: APGD-CE, APGD-T, FAB-T, Square), SPSA and PGD, per
/// test point of a fixed evaluation subset (docs/METHOD.md, "Attacks and their budgets").
///
/// Outputs in --out: per_sample.csv (index,label,clean_correct,<one column
/// per attack>,worst_case; 1 = correct/robust), summary.csv (one row:
/// checkpoint, dataset, norm, eps, subset size and fingerprint, seed,
/// device, libtorch_threads (the CPU threads it ran with), clean accuracy,
/// accuracy per attack and per AutoAttack component, worst-case accuracy,
/// seconds per attack), attack-state.json (finished attacks and
/// the flags; a rerun of the same command continues an interrupted
/// evaluation and never repeats a finished attack; a rerun with other flags
/// is refused) and subset.json when the subset was drawn here.
///
/// Square (alone or inside aa) is the official AutoAttack code's: its
/// square's offset is drawn from 0 … h − s − 1, never moving the last row
/// and column (--square-window-range reference, the default);
/// --square-window-range full draws from every position (a stronger,
/// non-standard Square, recorded in attack-state.json and summary.csv).
///
/// Refused before anything is written: a checkpoint with a NaN or ±Inf
/// weight (named), an ε that covers the whole [0,1] input box (L∞ ε ≥ 1,
/// L2 ε ≥ √d; "did you mean ε/255?"; L∞ ε > 0.5 is warned about), and a
/// subset file that is empty, unsorted, has duplicate, non-integer or
/// out-of-range indices or unknown fields. NaN or ±Inf logits or input
/// gradients during an attack stop it; they are never counted as robust.
/// While it runs, --out is locked (.taser-lock): a second run on it is
/// refused (exit 1) naming the holder. A failed run removes only its
/// partial files and the folders it created that are left empty; its
/// finished files stay (attack-state.json with every finished attack), and
/// the message names them and says to rerun the same command, which
/// continues without repeating a finished attack.
///
/// Warnings on stderr follow AutoAttack's checks: points with zero input
/// gradient, outputs that differ between two forward passes, and a
/// black-box attack (Square, SPSA) breaking points the white-box attacks
/// left robust.
///
/// Example: attack --checkpoint runs/std/model.safetensors --attacks aa,spsa,pgd20
///          --norm linf --eps 8/255 --out runs/std/eval
///
/// Exit codes: 0 ok (also when --stop-after stopped early), 1 a failed
/// computation (an I/O or libtorch error, non-finite logits or gradients,
/// another run writing --out),
/// 2 bad usage or input (a flag out of its domain, an ε on the wrong scale,
/// a missing, mismatched or non-finite checkpoint, a bad subset file, an
/// --out that holds an evaluation with other flags or cannot be written). A
/// killed evaluation has no code of its own: rerun the same command to
/// continue it.
#[derive(Parser, Debug)]
#[command(version, about, long_about, allow_negative_numbers = true)]
struct Args {
    #[command(flatten)]
    config: EvalConfig,
}

fn main() -> ExitCode {
    let args = exit::parse_args::<Args>();
    exit::run_main(|| run(args))
}

fn run(args: Args) -> anyhow::Result<Status> {
    let summary = evaluate(&args.config).context("attack failed")?;
    println!("{summary}");
    Ok(Status::Ok)
}
