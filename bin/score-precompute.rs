//! `score-precompute`: precompute score fields s(x) ≈ ∇ log p(x) into HDF5 (gaussian, gmm, dsm, torchscript sources).
//!
//! Not implemented yet: this binary exists so that scripts and the layout
//! are stable; it refuses to run rather than pretend to work.
use clap::Parser;
use std::process::ExitCode;

/// NOT IMPLEMENTED YET — precompute score fields s(x) ≈ ∇ log p(x) into HDF5 (gaussian, gmm, dsm, torchscript sources).
///
/// This command is part of the suite's layout but its work has not landed;
/// it exits with status 2 and does nothing. See the README's status table.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    /// Arguments (ignored until the command is implemented).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    rest: Vec<String>,
}

fn main() -> ExitCode {
    let _ = Args::parse();
    eprintln!("error: `score-precompute` is not implemented yet (precompute score fields s(x) ≈ ∇ log p(x) into HDF5 (gaussian, gmm, dsm, torchscript sources)); see the README's status table");
    ExitCode::from(2)
}
