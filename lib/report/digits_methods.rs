//! The digits methods table from the sweep of
//! `sweeps/digits-methods.toml` (every training method, without and with
//! TASER, evaluated with PGD-20 and AutoAttack; two runs without TASER once
//! more with SPSA as points of their own): `table.csv` with one row per finished
//! point — method (`-awp` appended under `--awp`), taser (yes where λ > 0),
//! the accuracies clean, PGD-20, AutoAttack, SPSA and worst case as
//! fractions, training seconds and the seconds of AutoAttack and SPSA, each
//! as the run wrote it (empty when not run) — and `table.md` (accuracies in
//! %, one decimal; seconds rounded; — when not run); then the paired
//! bootstrap of each method's TASER run against its run without TASER
//! evaluated with the same attacks (a difference is an effect only when
//! both were measured alike; [`crate::stats::run`], explicit pairs labelled
//! by method, B = 10 000, seed 0, 95% percentile intervals) into
//! `bootstrap/`.
use super::finished_points;
use crate::csvio;
use crate::error::{Error, Result};
use crate::fsutil::write_text;
use crate::layout::JobDir;
use crate::stats::{self, bootstrap::IntervalKind, Multiplicity, Options, PairSource};
use crate::sweep::results::Row;
use std::path::{Path, PathBuf};

/// The columns of table.csv after method and taser, each with the
/// results.csv metric it copies.
const METRICS: [(&str, &str); 8] = [
    ("clean", "attack_clean_acc"),
    ("pgd20", "attack_acc_pgd20"),
    ("aa", "attack_acc_aa"),
    ("spsa", "attack_acc_spsa"),
    ("worst_case", "attack_acc_worst_case"),
    ("train_seconds", "train_train_seconds"),
    ("seconds_aa", "attack_seconds_aa"),
    ("seconds_spsa", "attack_seconds_spsa"),
];

/// The folder of the bootstrap inside the output folder.
pub const BOOTSTRAP_DIR: &str = "bootstrap";

/// A point's method label and whether it trained with TASER (λ > 0).
fn label(point: &Row) -> Result<(String, bool)> {
    let method = point
        .params
        .get("method")
        .ok_or_else(|| Error::CorruptInput {
            path: point.dir.clone(),
            reason: "no grid parameter `method`".into(),
            fix: "run the grid sweeps/digits-methods.toml (make digits-methods)".into(),
        })?;
    let awp = point.params.get("awp").is_some_and(|v| v == "true");
    let lambda: f64 = point
        .params
        .get("lambda")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let name = if awp {
        format!("{method}-awp")
    } else {
        method.clone()
    };
    Ok((name, lambda > 0.0))
}

/// The grid parameter of the attack step's attack list.
const ATTACKS: &str = "attack.attacks";

/// A finished point as the bootstrap pairs it: its method label, its
/// [`ATTACKS`] value (empty when the grid does not vary it), its
/// evaluation folder and its job folder.
struct Evaluated {
    name: String,
    attacks: String,
    eval: PathBuf,
    dir: PathBuf,
}

/// Each method's TASER run against its run without TASER evaluated with
/// the same attacks (a run without TASER that has no such partner, e.g. an
/// extra SPSA evaluation, stays out), in table order: (baseline eval,
/// treatment eval, method label).
///
/// Errors: [`Error::CorruptInput`] naming a TASER point that has no run
/// without TASER of its method evaluated with the same attacks.
fn taser_pairs(
    base: &[Evaluated],
    taser: &[Evaluated],
) -> Result<Vec<(PathBuf, PathBuf, Option<String>)>> {
    if let Some(t) = taser.iter().find(|t| {
        !base
            .iter()
            .any(|b| b.name == t.name && b.attacks == t.attacks)
    }) {
        return Err(Error::CorruptInput {
            path: t.dir.clone(),
            reason: format!(
                "its TASER run of `{}` (attacks `{}`) has no run without TASER evaluated with \
                 the same attacks, so no paired comparison measures its gain",
                t.name, t.attacks
            ),
            fix: "evaluate both runs of each method with the same attack.attacks, as \
                  sweeps/digits-methods.toml does (SPSA on points of its own)"
                .into(),
        });
    }
    Ok(base
        .iter()
        .filter_map(|b| {
            let t = taser
                .iter()
                .find(|t| t.name == b.name && t.attacks == b.attacks)?;
            Some((b.eval.clone(), t.eval.clone(), Some(b.name.clone())))
        })
        .collect())
}

/// One Markdown cell: a fraction in % or seconds, — when empty.
fn cell(v: &str, percent: bool) -> String {
    match v.parse::<f64>() {
        Ok(x) if percent => format!("{:.1}%", 100.0 * x),
        Ok(x) => format!("{x:.0}"),
        Err(_) => "—".into(),
    }
}

/// Rebuilds table.csv, table.md and bootstrap/ in `out` from the sweep
/// output `runs`; returns the two Markdown tables (the methods table, then
/// the bootstrap's Table 2).
///
/// Errors: [`Error::MissingInput`] without finished points;
/// [`Error::CorruptInput`] for a TASER point without a run of its method
/// evaluated with the same attacks; bootstrap's errors (e.g. evaluations on
/// different subsets); write errors.
pub fn digits_methods(runs: &Path, out: &Path) -> Result<(String, String)> {
    let points = finished_points(runs, Some("digits-methods"))?;
    let header: Vec<&str> = ["method", "taser"]
        .into_iter()
        .chain(METRICS.iter().map(|(c, _)| *c))
        .collect();
    let mut csv: Vec<Vec<String>> = Vec::new();
    let mut md = String::from(
        "| method | TASER | clean | PGD-20 | AutoAttack | SPSA | worst case | train s | AA s | SPSA s |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut base = Vec::new();
    let mut taser = Vec::new();
    for p in &points {
        let (name, with) = label(p)?;
        let values: Vec<String> = METRICS
            .iter()
            .map(|(_, k)| p.metrics.get(*k).cloned().unwrap_or_default())
            .collect();
        let yes = if with { "yes" } else { "no" };
        let cells: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| cell(v, i < 5))
            .collect();
        md.push_str(&format!("| {name} | {yes} | {} |\n", cells.join(" | ")));
        let mut row = vec![name.clone(), yes.to_string()];
        row.extend(values);
        csv.push(row);
        let eval = Evaluated {
            name,
            attacks: p.params.get(ATTACKS).cloned().unwrap_or_default(),
            eval: JobDir::at(&p.dir).eval().dir().to_path_buf(),
            dir: p.dir.clone(),
        };
        if with {
            taser.push(eval);
        } else {
            base.push(eval);
        }
    }
    // Refuses unpaired TASER points before anything is written.
    let pairs = taser_pairs(&base, &taser)?;
    csvio::write_table(&out.join("table.csv"), &header, &csv)?;
    write_text(&out.join("table.md"), &md)?;
    let report = stats::run(&Options {
        source: PairSource::Explicit(pairs),
        resamples: 10_000,
        seed: 0,
        level: 0.95,
        interval: IntervalKind::Percentile,
        cluster_by_seed: None,
        multiplicity: Multiplicity::Holm,
        out: out.join(BOOTSTRAP_DIR),
    })?;
    Ok((md, stats::table::table2_markdown(&report)))
}
