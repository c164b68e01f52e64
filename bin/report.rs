//! `report`: rebuilds the papers' small tables and figures from finished runs.
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Rebuild reports (tables as CSV and Markdown, figures as SVG) from the
/// run folders that `train` wrote.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    #[command(subcommand)]
    report: Report,
}

#[derive(Subcommand, Debug)]
enum Report {
    /// TASER Table 1 and Figure 2 (toy 1-D regression, ℓ2 vs Stein): reads
    /// every toy-sin run under --runs, writes table.csv (reg, lambda, id_mse,
    /// id_mse_std, ood_mse, ood_mse_std, seeds), table.md (beside the
    /// paper's numbers, with the pattern checks), predictions.csv and
    /// predictions.svg into --out. `make toy-table1` trains the runs first.
    ToyTable1 {
        /// Folder holding one sub-folder per run.
        #[arg(long, default_value = "runs/toy-table1")]
        runs: PathBuf,
        /// Output folder.
        #[arg(long, default_value = "analysis/toy-table1")]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match &args.report {
        Report::ToyTable1 { runs, out } => taser::report::toy::toy_table1(runs, out)
            .map(|(rows, checks)| {
                for r in &rows {
                    println!(
                        "{:<6} λ={:<8e} id_mse {:.3e} ± {:.1e}  ood_mse {:.3} ± {:.3}  ({} seeds)",
                        r.reg, r.lambda, r.id_mse, r.id_mse_std, r.ood_mse, r.ood_mse_std, r.seeds
                    );
                }
                if let Some(c) = checks {
                    println!(
                        "pattern: stein ID < l2 ID at every λ>0: {}; mean OOD stein {:.3} vs l2 {:.3}; OOD max/min stein {:.2} vs l2 {:.2}; all hold: {}",
                        c.stein_id_below_l2_everywhere, c.mean_ood.0, c.mean_ood.1, c.ood_spread.0, c.ood_spread.1, c.all_hold()
                    );
                }
                println!("written to {}", out.display());
            })
            .context("report toy-table1 failed"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
