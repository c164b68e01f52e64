//! SCORE's Figures 1–3, drawn from the CSVs the report writes beside them
//! (`curves.csv` and `runs.csv` for Figures 1 and 2, `figure3.csv` for
//! Figure 3) and from p_d itself, so [`redraw`] can draw them again
//! without the runs.
use super::{objective_label, Turn};
use crate::csvio;
use crate::data::toy::{score_density, score_log_odds, toy_score, SCORE_PRIOR_1};
use crate::error::Result;
use crate::figure::{self, Figure, Line, Panel, DARK_GREY, GREY, INK, PALETTE};
use crate::train::posterior::Objective;
use std::path::{Path, PathBuf};
use tch::Tensor;

/// The posterior curves of Figures 1 and 2 (one row per run and x).
pub const CURVES_CSV: &str = "curves.csv";
/// One row per run: objective, distance, training size, seed, gap, risks.
pub const RUNS_CSV: &str = "runs.csv";
/// R_Madry^ℓ2 and R_SCORE^ℓ2 per step of every madry/ℓ2 run.
pub const FIGURE3_CSV: &str = "figure3.csv";
/// The command that writes these files.
const REBUILD: &str = "make score-toy";

/// One row of `curves.csv`: p_d(y=1|x) and the run's p_θ(y=1|x) at x.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CurveRow {
    /// "figure1" or "figure2".
    pub figure: String,
    /// "R_Standard", "R_Madry" or "R_SCORE".
    pub objective: String,
    pub distance: String,
    pub train_size: usize,
    pub seed: u64,
    #[serde(serialize_with = "csvio::display")]
    pub x: f64,
    #[serde(serialize_with = "csvio::display")]
    pub p_d: f64,
    #[serde(serialize_with = "csvio::display")]
    pub p_theta: f64,
}

/// The columns of a `runs.csv` row that the figures show.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct RunGap {
    pub objective: String,
    pub distance: String,
    pub train_size: usize,
    pub seed: u64,
    /// mean |p_θ − p_d| on the 60 000 test draws.
    pub posterior_gap: f64,
}

/// One row of `figure3.csv`: both risks after one step of a madry/ℓ2 run.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Figure3Row {
    pub seed: u64,
    pub step: usize,
    #[serde(serialize_with = "csvio::display")]
    pub risk_madry_l2: f64,
    #[serde(serialize_with = "csvio::display")]
    pub risk_score_l2: f64,
    #[serde(serialize_with = "csvio::display")]
    pub c_l2: f64,
}

/// x values of the curves: 601 points on [−6, 6].
pub fn curve_grid() -> Vec<f64> {
    (0..=600).map(|i| -6.0 + 12.0 * i as f64 / 600.0).collect()
}

/// p_d(y=1|x) at each x (the logistic of the exact log-odds).
pub fn posterior_on(xs: &[f64]) -> Vec<f64> {
    let t = Tensor::from_slice(xs);
    Vec::try_from(score_log_odds(&t).sigmoid()).unwrap_or_default()
}

/// The left panel of Figures 1 and 2: the joint density p_d(x, y) of each
/// class and the posterior p_d(y=1|x).
fn data_panel(xs: &[f64]) -> Panel {
    let t = Tensor::from_slice(xs);
    let normal = |m: f64, s: f64| -> Vec<f64> {
        xs.iter()
            .map(|x| {
                (-0.5 * ((x - m) / s).powi(2)).exp() / (s * (2.0 * std::f64::consts::PI).sqrt())
            })
            .collect()
    };
    let (n1, n0) = (normal(1.0, 1.0), normal(-1.0, 2.0));
    let density: Vec<f64> = Vec::try_from(score_density(&t)).unwrap_or_default();
    let pts = |v: Vec<f64>| xs.iter().copied().zip(v).collect::<Vec<_>>();
    let line = |label: &str, points, color, dashed| Line {
        label: label.into(),
        points,
        color,
        dashed,
    };
    Panel {
        title: "data: p_d(x, y) and p_d(y=1|x)".into(),
        x_label: "x".into(),
        y_label: "density / probability".into(),
        y_range: Some((0.0, 1.0)),
        lines: vec![
            line(
                "p_d(x, y=1) = N(1, 1)/6",
                pts(n1.iter().map(|v| v * SCORE_PRIOR_1).collect()),
                PALETTE[1],
                false,
            ),
            line(
                "p_d(x, y=0) = 5·N(−1, 4)/6",
                pts(n0.iter().map(|v| v * (1.0 - SCORE_PRIOR_1)).collect()),
                PALETTE[0],
                false,
            ),
            line("p_d(x)", pts(density), GREY, true),
            line("p_d(y=1|x)", pts(posterior_on(xs)), INK, false),
        ],
        ..Default::default()
    }
}

/// Figure 1 or 2 (`figure` names it in `curves`): the data panel, then one
/// panel per objective that has curves, p_θ beside p_d, titled with the
/// run's posterior gap from `gaps`. With 20 training draws or fewer the
/// draws are marked by grey lines. `None` when no objective has curves.
pub fn curves_figure(curves: &[CurveRow], figure: &str, gaps: &[RunGap]) -> Option<Figure> {
    let mut panels = vec![data_panel(&curve_grid())];
    for (i, objective) in [Objective::Standard, Objective::Madry, Objective::Score]
        .into_iter()
        .enumerate()
    {
        let label = objective_label(objective);
        let rows: Vec<&CurveRow> = (curves.iter())
            .filter(|c| c.figure == figure && c.objective == label)
            .collect();
        let Some(first) = rows.first() else {
            continue;
        };
        let gap = gaps.iter().find(|g| {
            (
                g.objective.as_str(),
                g.distance.as_str(),
                g.train_size,
                g.seed,
            ) == (label, first.distance.as_str(), first.train_size, first.seed)
        });
        // The training inputs, drawn as vertical lines when there are few.
        let x_refs: Vec<f64> = if first.train_size <= 20 {
            let d = toy_score(first.seed, first.train_size);
            Vec::<f32>::try_from(d.train.x.view([-1]))
                .unwrap_or_default()
                .into_iter()
                .map(f64::from)
                .collect()
        } else {
            Vec::new()
        };
        panels.push(Panel {
            title: match gap {
                Some(g) => format!(
                    "{label}^{}: mean |p_θ − p_d| = {:.4}",
                    first.distance, g.posterior_gap
                ),
                None => format!("{label}^{}", first.distance),
            },
            x_label: if x_refs.is_empty() {
                "x".into()
            } else {
                "x (grey lines: the training inputs)".into()
            },
            y_label: "p(y=1|x)".into(),
            y_range: Some((0.0, 1.0)),
            x_refs,
            lines: vec![
                Line {
                    label: "p_d(y=1|x)".into(),
                    points: rows.iter().map(|c| (c.x, c.p_d)).collect(),
                    color: INK,
                    dashed: true,
                },
                Line {
                    label: format!("p_θ(y=1|x), seed {}", first.seed),
                    points: rows.iter().map(|c| (c.x, c.p_theta)).collect(),
                    color: PALETTE[(i + 2) % PALETTE.len()],
                    dashed: false,
                },
            ],
            ..Default::default()
        });
    }
    (panels.len() > 1).then_some(Figure {
        panels,
        panel_width: 400,
        height: 340,
    })
}

/// The turn of one run's rows (consecutive steps): the step where
/// R_SCORE^ℓ2 is smallest, against the last step.
fn turn_of(run: &[Figure3Row]) -> Option<Turn> {
    let turn = run
        .iter()
        .min_by(|a, b| a.risk_score_l2.total_cmp(&b.risk_score_l2))?;
    let last = run.last()?;
    Some(Turn {
        seed: turn.seed,
        step: turn.step,
        madry_at_turn: turn.risk_madry_l2,
        score_at_turn: turn.risk_score_l2,
        madry_last: last.risk_madry_l2,
        score_last: last.risk_score_l2,
        steps: last.step,
    })
}

/// The rows of each run (consecutive rows of one seed), in their order.
fn by_run(rows: &[Figure3Row]) -> impl Iterator<Item = &[Figure3Row]> {
    rows.chunk_by(|a, b| a.seed == b.seed)
}

/// The turn of every run in `rows`, in their order.
pub fn turns(rows: &[Figure3Row]) -> Vec<Turn> {
    by_run(rows).filter_map(turn_of).collect()
}

/// Figure 3: R_Madry^ℓ2 and R_SCORE^ℓ2 per step of the first run in `rows`
/// (the lowest seed), C^ℓ2 as a dashed line and the turn as a vertical
/// one; y cut to [0, 0.3]. `None` when `rows` is empty.
pub fn figure3(rows: &[Figure3Row]) -> Option<Figure> {
    let run = by_run(rows).next()?;
    let turn = turn_of(run)?;
    let (c_l2, last) = (run[0].c_l2, turn.steps);
    let line = |label: String, color, pick: fn(&Figure3Row) -> f64| Line {
        label,
        points: run.iter().map(|r| (r.step as f64, pick(r))).collect(),
        color,
        dashed: false,
    };
    let panel = Panel {
        title: format!("minimising R_Madry^ℓ2 (seed {}, 60 000 draws)", turn.seed),
        x_label: "training step".into(),
        y_label: "risk".into(),
        y_range: Some((0.0, 0.3)),
        lines: vec![
            line(
                format!("R_Madry^ℓ2 ({:.3} at the turn)", turn.madry_at_turn),
                PALETTE[0],
                |r| r.risk_madry_l2,
            ),
            line(
                format!("R_SCORE^ℓ2 (smallest at step {}: the turn)", turn.step),
                PALETTE[1],
                |r| r.risk_score_l2,
            ),
            Line {
                label: format!("C^ℓ2 = {c_l2:.4}"),
                points: vec![(1.0, c_l2), (last as f64, c_l2)],
                color: DARK_GREY,
                dashed: true,
            },
        ],
        x_refs: vec![turn.step as f64],
        ..Default::default()
    };
    Some(Figure {
        panels: vec![panel],
        panel_width: 760,
        height: 420,
    })
}

/// Draws `figure1`–`figure3` (.svg and .png) in `dir` again from its
/// `curves.csv`, `runs.csv` and `figure3.csv`; returns the files written.
///
/// Errors: [`crate::Error::MissingInput`] when a CSV cannot be opened,
/// [`crate::Error::CorruptInput`] when a row does not parse.
pub fn redraw(dir: &Path) -> Result<Vec<PathBuf>> {
    let curves: Vec<CurveRow> = super::super::read_csv(&dir.join(CURVES_CSV), REBUILD)?;
    let gaps: Vec<RunGap> = super::super::read_csv(&dir.join(RUNS_CSV), REBUILD)?;
    let fig3: Vec<Figure3Row> = super::super::read_csv(&dir.join(FIGURE3_CSV), REBUILD)?;
    let mut written = Vec::new();
    for name in ["figure1", "figure2"] {
        if let Some(f) = curves_figure(&curves, name, &gaps) {
            written.extend(figure::draw(&f, &dir.join(name))?);
        }
    }
    if let Some(f) = figure3(&fig3) {
        written.extend(figure::draw(&f, &dir.join("figure3"))?);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seed: u64, step: usize, madry: f64, score: f64) -> Figure3Row {
        Figure3Row {
            seed,
            step,
            risk_madry_l2: madry,
            risk_score_l2: score,
            c_l2: 0.12,
        }
    }

    #[test]
    fn each_run_turns_where_r_score_is_smallest_and_figure_3_draws_the_first() {
        let rows = [
            row(0, 1, 0.5, 0.4),
            row(0, 2, 0.3, 0.1),
            row(0, 3, 0.2, 0.2),
            row(1, 1, 0.5, 0.3),
            row(1, 2, 0.6, 0.35),
        ];
        let t = turns(&rows);
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].seed, t[0].step, t[0].steps), (0, 2, 3));
        assert_eq!((t[0].madry_at_turn, t[0].score_last), (0.3, 0.2));
        assert!(t[0].shows_overfitting());
        assert_eq!((t[1].seed, t[1].step), (1, 1));
        assert!(!t[1].shows_overfitting(), "R_Madry rose too");
        let f = figure3(&rows).unwrap();
        let p = &f.panels[0];
        assert!(p.title.contains("seed 0"), "{}", p.title);
        assert_eq!(p.lines[1].points, vec![(1.0, 0.4), (2.0, 0.1), (3.0, 0.2)]);
        assert_eq!(p.lines[2].points, vec![(1.0, 0.12), (3.0, 0.12)]);
        assert_eq!(p.x_refs, vec![2.0]);
        assert!(figure3(&[]).is_none());
    }

    #[test]
    fn figures_1_and_2_have_the_data_panel_and_a_panel_per_objective_drawn() {
        let curve = |objective: &'static str| {
            (0..3).map(move |i| CurveRow {
                figure: "figure1".into(),
                objective: objective.into(),
                distance: "kl".into(),
                train_size: 60_000,
                seed: 0,
                x: i as f64,
                p_d: 0.2,
                p_theta: 0.1 * i as f64,
            })
        };
        let curves: Vec<CurveRow> = curve("R_SCORE").chain(curve("R_Standard")).collect();
        let gaps = [RunGap {
            objective: "R_SCORE".into(),
            distance: "kl".into(),
            train_size: 60_000,
            seed: 0,
            posterior_gap: 0.0057,
        }];
        let f = curves_figure(&curves, "figure1", &gaps).unwrap();
        let titles: Vec<&str> = f.panels.iter().map(|p| p.title.as_str()).collect();
        assert_eq!(
            titles,
            [
                "data: p_d(x, y) and p_d(y=1|x)",
                "R_Standard^kl",
                "R_SCORE^kl: mean |p_θ − p_d| = 0.0057"
            ]
        );
        assert_eq!(f.panels[2].lines[1].color, PALETTE[4], "R_SCORE's colour");
        assert_eq!(f.panels[1].lines[1].points[2], (2.0, 0.2));
        assert!(f.panels[1].x_refs.is_empty(), "60 000 draws are not marked");
        assert!(curves_figure(&curves, "figure2", &gaps).is_none());
    }
}
