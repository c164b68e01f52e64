//! TASER Table 1 and Figure 2 (docs/METHOD.md, "The toys"): the 1-D toy regression with ℓ2
//! versus the exact Stein penalty λ·mean((f'' − x f')²), p = N(0, 1).
//!
//! Reads every run folder under the runs directory (each with the
//! `model.json` that `train` writes), groups by regulariser and λ, and
//! writes `table.csv` (one row per regulariser and λ: means and standard
//! deviations over seeds), `table.md` (the paper's layout beside the
//! paper's numbers, and the pattern checks), `predictions.csv` and the
//! figure drawn from it, `predictions.svg` and `predictions.png`
//! (predictions of the first seed on the OOD grid; [`redraw`] draws it
//! again from the CSV alone).
use super::{finished_runs, mean_std, run_metric};
use crate::checkpoint;
use crate::csvio;
use crate::data::toy::toy_sin;
use crate::error::Result;
use crate::figure::{self, Figure, Line, Panel, GREY, INK, PALETTE};
use crate::fsutil::write_text;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use tch::Device;

/// The figure's file stem and its data's file name in the output folder.
pub const FIGURE: &str = "predictions";
pub const PREDICTIONS_CSV: &str = "predictions.csv";

/// One row of the paper's Table 1: λ, ℓ2 ID, ℓ2 OOD, Stein ID, Stein OOD
/// (Stein has no λ = 0 entry).
pub type PaperRow = (f64, f64, f64, Option<f64>, Option<f64>);

/// The paper's Table 1.
pub const PAPER_TABLE1: [PaperRow; 5] = [
    (0.0, 4.19e-05, 1.267, None, None),
    (1e-4, 2.37e-04, 5.335, Some(1.85e-06), Some(1.225)),
    (1e-3, 1.80e-03, 5.407, Some(2.68e-05), Some(1.245)),
    (1e-2, 1.29e-02, 1.158, Some(5.95e-04), Some(1.336)),
    (1e-1, 6.00e-02, 2.546, Some(2.04e-02), Some(0.540)),
];

/// One finished toy run.
#[derive(Debug, Clone)]
pub struct ToyRun {
    pub reg: String,
    pub lambda: f64,
    pub seed: u64,
    pub id_mse: f64,
    pub ood_mse: f64,
    pub checkpoint: std::path::PathBuf,
}

/// One row of the table.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ToyRow {
    pub reg: String,
    pub lambda: f64,
    pub id_mse: f64,
    pub id_mse_std: f64,
    pub ood_mse: f64,
    pub ood_mse_std: f64,
    pub seeds: usize,
}

/// The paper's pattern (docs/METHOD.md, "The toys"), checked on our table.
#[derive(Debug, Clone)]
pub struct PatternChecks {
    /// At every λ > 0, Stein's ID MSE < ℓ2's.
    pub stein_id_below_l2_everywhere: bool,
    /// Mean over λ > 0 of the OOD MSE: (Stein, ℓ2).
    pub mean_ood: (f64, f64),
    /// max/min over λ > 0 of the OOD MSE: (Stein, ℓ2).
    pub ood_spread: (f64, f64),
}

impl PatternChecks {
    pub fn all_hold(&self) -> bool {
        self.stein_id_below_l2_everywhere
            && self.mean_ood.0 < self.mean_ood.1
            && self.ood_spread.0 < self.ood_spread.1
    }
}

fn lookup<'a>(v: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
    v.get("config").and_then(|c| c.get(key))
}

/// Reads every finished toy run under `runs`.
pub fn collect(runs: &Path) -> Result<Vec<ToyRun>> {
    finished_runs(runs, "toy-sin", "toy-table1")?
        .into_iter()
        .map(|(ckpt, meta)| {
            let hp = &meta.hyperparameters;
            let lambda = lookup(hp, "lambda").and_then(|v| v.as_f64()).unwrap_or(0.0);
            let reg = lookup(hp, "reg")
                .and_then(|v| v.as_str())
                .unwrap_or("stein");
            Ok(ToyRun {
                // λ = 0 is the unregularised baseline whatever the flag said.
                reg: if lambda == 0.0 {
                    "l2".into()
                } else {
                    reg.to_string()
                },
                lambda,
                seed: meta.seed,
                id_mse: run_metric(&ckpt, &meta, "test_loss")?,
                ood_mse: run_metric(&ckpt, &meta, "ood_loss")?,
                checkpoint: ckpt,
            })
        })
        .collect()
}

fn group(runs: &[ToyRun]) -> BTreeMap<(String, u64), Vec<&ToyRun>> {
    let mut groups: BTreeMap<(String, u64), Vec<&ToyRun>> = BTreeMap::new();
    for r in runs {
        groups
            .entry((r.reg.clone(), r.lambda.to_bits()))
            .or_default()
            .push(r);
    }
    // Seeds in ascending order, whatever order the run folders were read
    // in, so the means and deviations do not depend on folder names.
    for g in groups.values_mut() {
        g.sort_by_key(|r| r.seed);
    }
    groups
}

/// Aggregates runs into rows (sorted by regulariser, then λ).
pub fn table(runs: &[ToyRun]) -> Vec<ToyRow> {
    let mut rows: Vec<ToyRow> = group(runs)
        .into_iter()
        .map(|((reg, bits), rs)| {
            let (id, id_sd) = mean_std(&rs.iter().map(|r| r.id_mse).collect::<Vec<_>>());
            let (ood, ood_sd) = mean_std(&rs.iter().map(|r| r.ood_mse).collect::<Vec<_>>());
            ToyRow {
                reg,
                lambda: f64::from_bits(bits),
                id_mse: id,
                id_mse_std: id_sd,
                ood_mse: ood,
                ood_mse_std: ood_sd,
                seeds: rs.len(),
            }
        })
        .collect();
    rows.sort_by(|a, b| a.reg.cmp(&b.reg).then(a.lambda.total_cmp(&b.lambda)));
    rows
}

/// Checks the paper's pattern on λ > 0 rows present for both regularisers.
pub fn pattern(rows: &[ToyRow]) -> Option<PatternChecks> {
    let positive = |reg: &str| -> BTreeMap<u64, &ToyRow> {
        rows.iter()
            .filter(|r| r.reg == reg && r.lambda > 0.0)
            .map(|r| (r.lambda.to_bits(), r))
            .collect()
    };
    let (l2, stein) = (positive("l2"), positive("stein"));
    let shared: Vec<u64> = l2
        .keys()
        .filter(|k| stein.contains_key(k))
        .copied()
        .collect();
    if shared.is_empty() {
        return None;
    }
    let ood = |m: &BTreeMap<u64, &ToyRow>| shared.iter().map(|k| m[k].ood_mse).collect::<Vec<_>>();
    let spread = |v: &[f64]| {
        v.iter().cloned().fold(f64::MIN, f64::max) / v.iter().cloned().fold(f64::MAX, f64::min)
    };
    let (os, ol) = (ood(&stein), ood(&l2));
    Some(PatternChecks {
        stein_id_below_l2_everywhere: shared.iter().all(|k| stein[k].id_mse < l2[k].id_mse),
        mean_ood: (mean_std(&os).0, mean_std(&ol).0),
        ood_spread: (spread(&os), spread(&ol)),
    })
}

fn sci(v: f64) -> String {
    format!("{v:.2e}")
}

fn markdown(rows: &[ToyRow], checks: Option<&PatternChecks>) -> String {
    let find = |reg: &str, lambda: f64| rows.iter().find(|r| r.reg == reg && r.lambda == lambda);
    let cell = |r: Option<&ToyRow>, id: bool| match r {
        Some(r) if id => format!("{} ± {}", sci(r.id_mse), sci(r.id_mse_std)),
        Some(r) => format!("{:.3} ± {:.3}", r.ood_mse, r.ood_mse_std),
        None => "–".into(),
    };
    let seeds = rows.iter().map(|r| r.seeds).max().unwrap_or(0);
    let mut md = String::new();
    let _ = writeln!(md, "# TASER Table 1 (toy 1-D regression), rebuilt\n");
    let _ = writeln!(
        md,
        "Test MSE, mean ± std over {seeds} seeds. Set-up: 1000 training points x ~ N(0,1), y = sin x; \
         ID: 1000 fresh draws; OOD: 1201 grid points on [−6, 6]; MLP 1→64→64→1 (tanh), Adam lr 1e-3, \
         3000 full-batch steps; ℓ2 = λ‖θ‖², Stein = λ·mean((f'' − x f')²) (exact operator, autograd).\n"
    );
    let _ = writeln!(md, "| λ | ℓ2 (ID) | ℓ2 (OOD) | Stein (ID) | Stein (OOD) | paper ℓ2 (ID) | paper ℓ2 (OOD) | paper Stein (ID) | paper Stein (OOD) |");
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|");
    for (lambda, pl2_id, pl2_ood, ps_id, ps_ood) in PAPER_TABLE1 {
        let (l2, st) = (find("l2", lambda), find("stein", lambda));
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            if lambda == 0.0 {
                "0".to_string()
            } else {
                format!("{lambda:e}")
            },
            cell(l2, true),
            cell(l2, false),
            cell(st, true),
            cell(st, false),
            sci(pl2_id),
            pl2_ood,
            ps_id.map(sci).unwrap_or("–".into()),
            ps_ood.map(|v| v.to_string()).unwrap_or("–".into()),
        );
    }
    if let Some(c) = checks {
        let mark = |b: bool| if b { "holds" } else { "DOES NOT HOLD" };
        let _ = writeln!(md, "\nThe paper's pattern, on λ > 0:\n");
        let _ = writeln!(
            md,
            "- Stein's ID MSE below ℓ2's at every λ: {}.",
            mark(c.stein_id_below_l2_everywhere)
        );
        let _ = writeln!(
            md,
            "- Mean OOD MSE: Stein {:.3} vs ℓ2 {:.3}: {}.",
            c.mean_ood.0,
            c.mean_ood.1,
            mark(c.mean_ood.0 < c.mean_ood.1)
        );
        let _ = writeln!(
            md,
            "- OOD MSE spread across λ (max/min): Stein {:.2} vs ℓ2 {:.2}: {}.",
            c.ood_spread.0,
            c.ood_spread.1,
            mark(c.ood_spread.0 < c.ood_spread.1)
        );
    }
    let _ = writeln!(md, "\nFigure: `predictions.svg` / `predictions.png` (first seed, OOD grid; the shaded band is ±2 around the training mean).");
    md
}

/// Rebuilds the table, the pattern checks and the figure from `runs` into `out`.
pub fn toy_table1(runs: &Path, out: &Path) -> Result<(Vec<ToyRow>, Option<PatternChecks>)> {
    let all = collect(runs)?;
    let rows = table(&all);
    let checks = pattern(&rows);

    csvio::write_records(&out.join("table.csv"), &rows)?;
    write_text(&out.join("table.md"), &markdown(&rows, checks.as_ref()))?;

    // Predictions of the first seed of every (regulariser, λ) on the grid.
    let grid = toy_sin(0).ood.expect("toy-sin has an OOD grid");
    let xs: Vec<f64> = Vec::<f32>::try_from(grid.x.view([-1]))
        .unwrap_or_default()
        .into_iter()
        .map(f64::from)
        .collect();
    let mut predictions = Vec::new();
    for ((reg, bits), rs) in group(&all) {
        let first = rs.iter().min_by_key(|r| r.seed).expect("non-empty group");
        let (model, _) = checkpoint::load(&first.checkpoint, Device::Cpu)?;
        let pred: Vec<f32> =
            tch::no_grad(|| Vec::try_from(model.forward_t(&grid.x, false).view([-1])))
                .unwrap_or_default();
        predictions.extend(xs.iter().zip(pred).map(|(x, p)| Prediction {
            x: *x,
            reg: reg.clone(),
            lambda: f64::from_bits(bits),
            seed: first.seed,
            prediction: p,
        }));
    }
    csvio::write_records(&out.join(PREDICTIONS_CSV), &predictions)?;
    figure::draw(&predictions_figure(&predictions), &out.join(FIGURE))?;
    Ok((rows, checks))
}

/// One row of `predictions.csv`: the model of the first seed of one
/// (regulariser, λ) at one point of the OOD grid.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Prediction {
    #[serde(serialize_with = "csvio::display")]
    pub x: f64,
    pub reg: String,
    #[serde(serialize_with = "csvio::display")]
    pub lambda: f64,
    pub seed: u64,
    #[serde(serialize_with = "csvio::display")]
    pub prediction: f32,
}

/// TASER Figure 2: f(x) of every (regulariser, λ) beside sin x, ℓ2 on the
/// left and Stein on the right, one colour per λ in both panels and the
/// unregularised λ = 0 baseline in grey in both; the training inputs' ±2
/// band shaded, y cut to [−3, 3].
pub fn predictions_figure(predictions: &[Prediction]) -> Figure {
    let mut curves: BTreeMap<(&str, u64), Vec<(f64, f64)>> = BTreeMap::new();
    for p in predictions {
        curves
            .entry((p.reg.as_str(), p.lambda.to_bits()))
            .or_default()
            .push((p.x, f64::from(p.prediction)));
    }
    let xs: Vec<f64> = curves
        .values()
        .next()
        .map_or(Vec::new(), |c| c.iter().map(|p| p.0).collect());
    let mut panels: Vec<Panel> = ["ℓ2 regularisation", "Stein (TASER) regularisation"]
        .into_iter()
        .map(|title| Panel {
            title: title.into(),
            x_label: "x".into(),
            y_label: "f(x)".into(),
            y_range: Some((-3.0, 3.0)),
            shade_x: Some((-2.0, 2.0, GREY)),
            lines: vec![Line {
                label: "sin x".into(),
                points: xs.iter().map(|x| (*x, x.sin())).collect(),
                color: INK,
                dashed: true,
            }],
            ..Default::default()
        })
        .collect();
    let mut lambdas: Vec<f64> = predictions
        .iter()
        .map(|p| p.lambda)
        .filter(|l| *l > 0.0)
        .collect();
    lambdas.sort_by(f64::total_cmp);
    lambdas.dedup();
    for ((reg, bits), points) in curves {
        let lambda = f64::from_bits(bits);
        let line = Line {
            label: if lambda == 0.0 {
                "λ = 0 (no regulariser)".into()
            } else {
                format!("λ = {lambda:e}")
            },
            points,
            color: match lambdas.iter().position(|l| *l == lambda) {
                Some(i) => PALETTE[i % PALETTE.len()],
                None => GREY,
            },
            dashed: false,
        };
        // λ = 0 is the common baseline: drawn in both panels.
        for (i, panel) in panels.iter_mut().enumerate() {
            if (reg == "stein") == (i == 1) || lambda == 0.0 {
                panel.lines.push(line.clone());
            }
        }
    }
    Figure {
        panels,
        panel_width: 520,
        height: 380,
    }
}

/// Draws `predictions.svg` and `predictions.png` in `dir` again from its
/// `predictions.csv`, without the runs; returns their paths.
///
/// Errors: [`Error::MissingInput`] when the CSV cannot be opened,
/// [`Error::CorruptInput`] when a row does not parse.
pub fn redraw(dir: &Path) -> Result<Vec<PathBuf>> {
    let path = dir.join(PREDICTIONS_CSV);
    let predictions: Vec<Prediction> = super::read_csv(&path, "make toy-table1")?;
    Ok(figure::draw(&predictions_figure(&predictions), &dir.join(FIGURE))?.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(reg: &str, lambda: f64) -> impl Iterator<Item = Prediction> + '_ {
        (0..3).map(move |i| Prediction {
            x: i as f64,
            reg: reg.into(),
            lambda,
            seed: 0,
            prediction: 0.5 * i as f32,
        })
    }

    #[test]
    fn the_baseline_is_in_both_panels_and_each_lambda_keeps_its_colour() {
        let predictions: Vec<Prediction> = curve("l2", 0.0)
            .chain(curve("l2", 1e-3))
            .chain(curve("stein", 1e-3))
            .chain(curve("stein", 1e-1))
            .collect();
        let f = predictions_figure(&predictions);
        let labels = |i: usize| -> Vec<String> {
            f.panels[i].lines.iter().map(|l| l.label.clone()).collect()
        };
        assert_eq!(labels(0), ["sin x", "λ = 0 (no regulariser)", "λ = 1e-3"]);
        assert_eq!(
            labels(1),
            ["sin x", "λ = 0 (no regulariser)", "λ = 1e-3", "λ = 1e-1"]
        );
        let (l2, stein) = (&f.panels[0].lines, &f.panels[1].lines);
        assert_eq!(l2[1].color, GREY, "λ = 0 in grey");
        assert_eq!((l2[2].color, stein[2].color), (PALETTE[0], PALETTE[0]));
        assert_eq!(stein[3].color, PALETTE[1]);
        assert_eq!(
            l2[0].points,
            vec![(0.0, 0.0), (1.0, 1f64.sin()), (2.0, 2f64.sin())]
        );
        assert_eq!(stein[3].points[2], (2.0, 1.0));
    }
}
