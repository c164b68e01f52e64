//! `report`: rebuilds the papers' small tables and figures from finished runs.
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use taser::exit::{self, Status};

/// Rebuild reports (tables as CSV and Markdown, figures as SVG and PNG)
/// from the run folders that `train` wrote, or redraw the figures of an
/// output folder from its CSVs.
///
/// Exit codes: 0 ok; 1 a failed computation (a model or figure could not be
/// computed or written, another run writing the same folder, or score-toy's
/// self-consistency check fails); 2 bad
/// usage or input (a missing runs folder or CSV, a corrupt sidecar or CSV).
/// report does not catch signals, so it never exits 3.
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
    /// predictions.svg/.png into --out. `make toy-table1` trains the runs
    /// first.
    ToyTable1 {
        /// Folder holding one sub-folder per run.
        #[arg(long, default_value = "runs/toy-table1")]
        runs: PathBuf,
        /// Output folder.
        #[arg(long, default_value = "analysis/toy-table1")]
        out: PathBuf,
    },
    /// SCORE Figures 1–3 (1-D binary toy with a known posterior): reads every
    /// toy-score run under --runs and writes constants.csv (C^D by
    /// quadrature), runs.csv (posterior gap and risks per run), curves.csv,
    /// figure3.csv, figure1 (60 000 draws), figure2 (the smallest training
    /// size) and figure3 (R_Madry^l2 and R_SCORE^l2 per step of the madry/l2
    /// runs, with C^l2), each as .svg and .png, and summary.md into --out.
    /// Exits 1 when
    /// the self-consistency check of Figure 1 fails. `make score-toy` trains
    /// the runs first.
    ScoreToy {
        /// Folder holding one sub-folder per run.
        #[arg(long, default_value = "runs/score-toy")]
        runs: PathBuf,
        /// Output folder.
        #[arg(long, default_value = "analysis/score-toy")]
        out: PathBuf,
    },
    /// SCORE Table 1 on digits: reads the finished points of the sweep
    /// output --runs (the grid sweeps/score-table1-digits.toml: PGD-AT per
    /// --loss and --lr, attack of the best and last checkpoints) and writes
    /// table.csv (loss, lr, best_epoch, best_clean, best_pgd20, best_aa,
    /// last_clean, last_pgd20, last_aa; accuracies in %, one decimal) and
    /// table.md into --out. `make score-table1-digits` runs the sweep first.
    ScoreTable1 {
        /// The sweep's --out folder.
        #[arg(long, default_value = "runs/score-table1-digits")]
        runs: PathBuf,
        /// Output folder.
        #[arg(long, default_value = "analysis/score-table1-digits")]
        out: PathBuf,
    },
    /// The digits methods table: reads the finished points of the sweep
    /// output --runs (the grid sweeps/digits-methods.toml: every method
    /// without and with TASER) and writes table.csv (method, taser, clean,
    /// pgd20, aa, spsa, worst_case, train_seconds, seconds_aa,
    /// seconds_spsa), table.md and, in bootstrap/, the paired bootstrap of
    /// each method's TASER run against its run without (as `bootstrap
    /// --baseline … --treatment … --label METHOD --seed 0`) into --out.
    /// `make digits-methods` runs the sweep first.
    DigitsMethods {
        /// The sweep's --out folder.
        #[arg(long, default_value = "runs/digits-methods")]
        runs: PathBuf,
        /// Output folder.
        #[arg(long, default_value = "analysis/digits-methods")]
        out: PathBuf,
    },
    /// Copy the per-epoch training log of every finished point of the
    /// sweep output --runs into --out as <LABEL>-metrics.csv, LABEL being
    /// the point's value of the grid parameter --label-by. E.g. `report
    /// train-logs --runs runs/mnist-5k-baselines --label-by method --out
    /// analysis/mnist-5k-baselines`.
    TrainLogs {
        /// The sweep's --out folder.
        #[arg(long)]
        runs: PathBuf,
        /// The grid parameter whose value names each copy.
        #[arg(long)]
        label_by: String,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print one training run's record as JSON on stdout, for scripts that
    /// would otherwise read the run folder's files by name: {"dir",
    /// "sidecar": what model.json records (model, data, hyperparameters,
    /// "runtime" with the device and numerics), "epochs": the per-epoch log's
    /// rows, "last_epoch": its last row}. E.g. `report run runs/demo/jobs/<id>/train
    /// | python3 -c 'import json,sys; print(json.load(sys.stdin)["last_epoch"]["test_acc"])'`.
    Run {
        /// A `train` or `finetune` --out folder.
        dir: PathBuf,
    },
    /// Take the TASER penalty of trained checkpoints apart (docs/METHOD.md,
    /// "Diagnosis"): on --samples training inputs (probe batches of 256
    /// drawn with --seed, 8 Rademacher probes each, BatchNorm in eval mode,
    /// pixel coordinates) print and write to --out one CSV row per
    /// checkpoint: grad_norm_penalty (mean ‖∇ₓm‖², the grad-norm control),
    /// score_grad_cosine (mean cos(s, ∇ₓm)), penalty_first_order (R of
    /// sᵀ∇ₓm), penalty_zero_scores (R of Δm: the Laplacian part, the
    /// penalty with zero scores), penalty (R, unbiased), penalty_plain (the
    /// expected one-probe R̂ of Algorithm 1) and noise_share (its share that
    /// is probe noise), penalty_permuted and penalty_noised (R with another
    /// sample's score, as --score-permute at the same --seed, and with
    /// --noised-scores), match_grad_norm / match_permuted /
    /// match_zero_scores (the λ of that control matching TASER at λ₀ = 1),
    /// and the data set's class separation r (half the smallest distance
    /// between points of different classes, train and test splits) in L∞
    /// and L2 with ε/r of its default threat models. E.g. `report diagnose
    /// --checkpoint runs/demo/jobs/<id>/train/model.safetensors --scores
    /// runs/demo/scores/dsm.h5 --out diagnosis.csv`.
    Diagnose {
        /// A model.safetensors to diagnose (repeat for several; one data set).
        #[arg(long = "checkpoint", required = true)]
        checkpoints: Vec<PathBuf>,
        /// The score file of the checkpoints' training split (score-precompute).
        #[arg(long)]
        scores: PathBuf,
        /// A second score file of the same split, e.g. `score-precompute
        /// --source dsm --score-input noised` (column penalty_noised).
        #[arg(long)]
        noised_scores: Option<PathBuf>,
        /// Training inputs the figures average over (the whole split if fewer).
        #[arg(long, default_value_t = 2048)]
        samples: usize,
        /// Seed of the probe batches, their probes and the permutation.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Centre of R: batch (Algorithm 1) or none.
        #[arg(long, value_enum, default_value = "batch")]
        center: taser::stein::Center,
        /// The probe m of the residual (as train's --probe).
        #[arg(long, value_enum, default_value = "margin")]
        probe: taser::stein::Probe,
        /// Points the separation r is measured on, drawn with --seed from the
        /// train and test splits (0: all; r of a subset is an upper bound).
        #[arg(long, default_value_t = 0)]
        separation_points: usize,
        /// The CSV file to write (replaced atomically).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        runtime: taser::runtime::RuntimeArgs,
    },
    /// One sentence saying what bootstrap tables show: for each
    /// --comparisons FILE (a bootstrap's comparisons.csv) with its
    /// --subject, which pair rows have a Δ whose interval lies above 0,
    /// below 0 or around 0 on --metric, with Δ and the interval in points.
    /// Printed, not written. `make demo` closes with it, e.g. `report
    /// conclusion --comparisons runs/demo/vs-control/comparisons.csv
    /// --subject "TASER vs the λ = 0 fine-tune" --metric aa`.
    Conclusion {
        /// A bootstrap output's comparisons.csv (repeat, one per --subject).
        #[arg(long, required = true, value_name = "FILE")]
        comparisons: Vec<PathBuf>,
        /// What each --comparisons compares, in its order (as many as files).
        #[arg(long, required = true, value_name = "TEXT")]
        subject: Vec<String>,
        /// The metric: a column prefix of comparisons.csv (clean, aa, spsa, robust_avg, …).
        #[arg(long, default_value = "aa")]
        metric: String,
    },
    /// Draw the figures of an output folder again (.svg and .png) from the
    /// CSVs beside them, without the runs: predictions from predictions.csv
    /// (toy-table1), figure1-3 from curves.csv, runs.csv and figure3.csv
    /// (score-toy), forest and delta_vs_<vary> from comparisons.csv
    /// (bootstrap). E.g. `report redraw analysis/score-toy`.
    Redraw {
        /// The folder holding the CSVs; the figures are written beside them.
        dir: PathBuf,
    },
}

/// Runs `work`, which writes into the folder `out`, holding it
/// (`taser::outdir`): another run writing it is refused, naming the
/// holder; a failure removes only partial files and names the finished ones.
fn writing<T>(out: &Path, work: impl FnOnce() -> taser::Result<T>) -> taser::Result<T> {
    let hint = || "rerun the same command (it writes every file again)".to_string();
    taser::outdir::run_in(out, hint, work)
}

fn main() -> ExitCode {
    let args = exit::parse_args::<Args>();
    exit::run_main(|| run(&args).map(|()| Status::Ok))
}

fn run(args: &Args) -> anyhow::Result<()> {
    match &args.report {
        Report::ToyTable1 { runs, out } => writing(out, || taser::report::toy::toy_table1(runs, out))
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
        Report::ScoreToy { runs, out } => writing(out, || taser::report::score_toy::score_toy(runs, out))
            .context("report score-toy failed")
            .and_then(|s| {
                for g in &s.gaps {
                    println!(
                        "{:>6} draws  D={:<3} {:?}: mean |p_θ − p_d| = {:.4} ± {:.4} ({} seeds)",
                        g.train_size, g.distance.as_str(), g.objective, g.gap_mean, g.gap_std, g.seeds
                    );
                }
                for t in &s.turns {
                    println!(
                        "figure 3, seed {}: R_SCORE^l2 turns at step {} with R_Madry^l2 = {:.4} (C^l2 = {:.4}); at step {}: R_Madry^l2 {:.4}, R_SCORE^l2 {:.4}",
                        t.seed, t.step, t.madry_at_turn, s.c_l2, t.steps, t.madry_last, t.score_last
                    );
                }
                println!("written to {}", out.display());
                match (s.self_consistency_kl, s.self_consistency_holds()) {
                    (Some((score, madry, _, _)), Some(true)) => {
                        println!("self-consistency (KL, 60000 draws): SCORE {score:.4}, Madry {madry:.4} ({:.1}×): holds", madry / score);
                        Ok(())
                    }
                    (Some((score, madry, _, _)), _) => Err(anyhow::anyhow!(
                        "self-consistency (KL, 60000 draws) does not hold: SCORE gap {score:.4} (limit 0.02), Madry {madry:.4} ({:.1}×, at least 3× required)",
                        madry / score
                    )),
                    (None, _) => {
                        println!("self-consistency: no madry and score runs with KL at 60000 draws to check");
                        Ok(())
                    }
                }
            }),
        Report::ScoreTable1 { runs, out } => {
            let md = writing(out, || taser::report::score_table1::score_table1(runs, out))
                .context("report score-table1 failed")?;
            print!("{md}");
            println!("written to {}", out.display());
            Ok(())
        }
        Report::DigitsMethods { runs, out } => {
            let (table, table2) = writing(out, || taser::report::digits_methods::digits_methods(runs, out))
                .context("report digits-methods failed")?;
            print!("{table}\n{table2}");
            println!("written to {}", out.display());
            Ok(())
        }
        Report::Diagnose {
            checkpoints,
            scores,
            noised_scores,
            samples,
            seed,
            center,
            probe,
            separation_points,
            out,
            runtime,
        } => {
            let opts = taser::report::diagnose::DiagnoseOptions {
                checkpoints: checkpoints.clone(),
                scores: scores.clone(),
                noised_scores: noised_scores.clone(),
                samples: *samples,
                seed: *seed,
                center: *center,
                probe: *probe,
                separation_points: *separation_points,
            };
            let runtime = runtime.resolve().context("report diagnose failed")?;
            let rows = taser::report::diagnose::diagnose(&opts, &runtime, out)
                .context("report diagnose failed")?;
            for r in &rows {
                print!("{}", taser::report::diagnose::summary(r));
            }
            println!("written to {}", out.display());
            Ok(())
        }
        Report::Run { dir } => {
            let record = taser::report::run_record::run_record(dir)
                .with_context(|| format!("report run {} failed", dir.display()))?;
            // A reader that stops early (`| head`) is no failure.
            let mut stdout = std::io::stdout().lock();
            match writeln!(stdout, "{}", serde_json::to_string_pretty(&record)?) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(()),
            }
        }
        Report::TrainLogs {
            runs,
            label_by,
            out,
        } => {
            let written = writing(out, || taser::report::train_logs::train_logs(runs, label_by, out))
                .context("report train-logs failed")?;
            for p in written {
                println!("{}", p.display());
            }
            Ok(())
        }
        Report::Conclusion {
            comparisons,
            subject,
            metric,
        } => {
            if comparisons.len() != subject.len() {
                return Err(taser::Error::invalid(
                    "--subject",
                    subject.len(),
                    format!("give one --subject per --comparisons ({})", comparisons.len()),
                )
                .into());
            }
            let clauses: Vec<taser::report::conclusion::Clause> = comparisons
                .iter()
                .zip(subject)
                .map(|(c, s)| taser::report::conclusion::Clause {
                    comparisons: c,
                    subject: s,
                })
                .collect();
            let sentence = taser::report::conclusion::conclusion(&clauses, metric)
                .context("report conclusion failed")?;
            println!("{sentence}");
            Ok(())
        }
        Report::Redraw { dir } => {
            let written = writing(dir, || taser::report::redraw(dir)).context("report redraw failed")?;
            for p in written {
                println!("{}", p.display());
            }
            Ok(())
        }
    }
}
