//! SCORE Figures 1–3 (Pang et al. 2022, §2–3) from finished toy-score runs:
//! self-consistency with 60 000 samples, sample efficiency with 6, and the
//! overfitting of R_SCORE^ℓ2 once R_Madry^ℓ2 falls below C^ℓ2.
//!
//! Writes into the output folder: `constants.csv` (C^D by quadrature, both
//! conventions), `runs.csv` (one row per run: objective, distance, training
//! size, seed, posterior gap and final risks), `curves.csv` (p_θ and p_d on a
//! grid, one row per run and x), `figure3.csv` (R_Madry^ℓ2 and R_SCORE^ℓ2 per
//! step of every madry/ℓ2 run), `figure1`, `figure2` and `figure3` (each as
//! .svg and .png, drawn from those CSVs by [`figures`]) and `summary.md`
//! (gaps, the self-consistency check and the turn of Figure 3 beside C^ℓ2).
pub mod figures;

use super::{finished_runs, mean_std, run_metric};
use crate::checkpoint;
use crate::csvio;
use crate::data::toy::SCORE_NUM_TRAIN;
use crate::error::{Error, Result};
use crate::figure;
use crate::fsutil::write_text;
use crate::layout::TrainRun;
use crate::train::posterior::{data_constant, BinaryDivergence, Objective};
use crate::train::read_metrics;
use figures::{
    curve_grid, posterior_on, CurveRow, Figure3Row, RunGap, CURVES_CSV, FIGURE3_CSV, RUNS_CSV,
};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// The acceptance of the self-consistency claim (SCORE Figure 1): with 60 000
/// samples, the SCORE model's mean |p_θ − p_d| is below this …
pub const SCORE_GAP_LIMIT: f64 = 0.02;
/// … and the Madry model's is at least this many times larger.
pub const MADRY_OVER_SCORE_MIN: f64 = 3.0;

/// One finished toy-score run.
#[derive(Debug, Clone)]
pub struct ScoreToyRun {
    pub objective: Objective,
    pub distance: BinaryDivergence,
    pub train_size: usize,
    pub seed: u64,
    /// mean |p_θ − p_d| on the 60 000 test draws.
    pub gap: f64,
    pub risk_standard: f64,
    pub risk_madry: f64,
    pub risk_score: f64,
    /// Model, optimiser and inner maximiser, from the sidecar.
    pub setup: String,
    pub checkpoint: PathBuf,
}

impl ScoreToyRun {
    fn dir(&self) -> &Path {
        self.checkpoint.parent().unwrap_or(Path::new("."))
    }
}

fn parse_enum<T: clap::ValueEnum>(v: Option<&serde_json::Value>) -> Option<T> {
    T::from_str(v?.as_str()?, true).ok()
}

/// Reads every finished toy-score run under `runs`.
pub fn collect(runs: &Path) -> Result<Vec<ScoreToyRun>> {
    let mut out = finished_runs(runs, "toy-score", "score-toy")?
        .into_iter()
        .map(|(ckpt, meta)| {
            let hp = &meta.hyperparameters;
            let corrupt = |what: &str| Error::CorruptInput {
                path: checkpoint::sidecar_path(&ckpt),
                reason: format!("no {what}"),
                fix: "retrain the run with this version of `train`".into(),
            };
            let posterior = hp
                .get("posterior")
                .ok_or_else(|| corrupt("`posterior` settings"))?;
            Ok(ScoreToyRun {
                objective: parse_enum(posterior.get("objective"))
                    .ok_or_else(|| corrupt("objective"))?,
                distance: parse_enum(posterior.get("distance"))
                    .ok_or_else(|| corrupt("distance"))?,
                train_size: hp
                    .get("config")
                    .and_then(|c| c.get("train_size"))
                    .and_then(|v| v.as_u64())
                    .map_or(SCORE_NUM_TRAIN, |n| n as usize),
                setup: setup_line(&meta, posterior),
                seed: meta.seed,
                gap: run_metric(&ckpt, &meta, "test_loss")?,
                risk_standard: run_metric(&ckpt, &meta, "risk_standard")?,
                risk_madry: run_metric(&ckpt, &meta, "risk_madry")?,
                risk_score: run_metric(&ckpt, &meta, "risk_score")?,
                checkpoint: ckpt,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    out.sort_by_key(|r| (r.train_size, r.distance.as_str(), r.objective as u8, r.seed));
    Ok(out)
}

/// Model, optimiser and inner maximiser of a run, from its sidecar.
fn setup_line(meta: &checkpoint::CheckpointMeta, posterior: &serde_json::Value) -> String {
    let cfg = meta.hyperparameters.get("config");
    let field = |k: &str| {
        cfg.and_then(|c| c.get(k)).map_or("?".to_string(), |v| {
            v.to_string().trim_matches('"').to_string()
        })
    };
    let inner = if posterior.get("inner_max").and_then(|v| v.as_str()) == Some("grid") {
        format!("grid of {} points per ball", posterior["grid_points"])
    } else {
        format!("PGD, {} steps", posterior["inner_steps"])
    };
    format!(
        "{} hidden {:?} ({:?}) with a sigmoid output; {} lr {}, weight decay {}, {} epochs of batch {}; inner maximum: {inner}, radius {}",
        meta.model.arch,
        meta.model.mlp_hidden,
        meta.model.activation,
        field("optimizer"),
        field("lr"),
        field("weight_decay"),
        meta.epochs_completed,
        field("batch_size"),
        posterior["radius"],
    )
}

/// Mean ± std of the posterior gap over seeds of one setting.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GapRow {
    pub objective: Objective,
    pub distance: BinaryDivergence,
    pub train_size: usize,
    pub gap_mean: f64,
    pub gap_std: f64,
    pub seeds: usize,
}

/// Aggregates the gaps by (training size, distance, objective).
pub fn gap_table(runs: &[ScoreToyRun]) -> Vec<GapRow> {
    let mut groups: BTreeMap<(usize, &str, u8), Vec<&ScoreToyRun>> = BTreeMap::new();
    for r in runs {
        groups
            .entry((r.train_size, r.distance.as_str(), r.objective as u8))
            .or_default()
            .push(r);
    }
    groups
        .into_values()
        .map(|rs| {
            let (gap_mean, gap_std) = mean_std(&rs.iter().map(|r| r.gap).collect::<Vec<_>>());
            GapRow {
                objective: rs[0].objective,
                distance: rs[0].distance,
                train_size: rs[0].train_size,
                gap_mean,
                gap_std,
                seeds: rs.len(),
            }
        })
        .collect()
}

/// The self-consistency check of Figure 1 for one distance at 60 000
/// samples: (SCORE's mean gap, Madry's mean gap, seeds of each).
pub fn self_consistency(
    rows: &[GapRow],
    distance: BinaryDivergence,
) -> Option<(f64, f64, usize, usize)> {
    let find = |o: Objective| {
        rows.iter()
            .find(|r| r.objective == o && r.distance == distance && r.train_size == SCORE_NUM_TRAIN)
    };
    let (s, m) = (find(Objective::Score)?, find(Objective::Madry)?);
    Some((s.gap_mean, m.gap_mean, s.seeds, m.seeds))
}

/// Where R_SCORE^ℓ2 turns upward in one run minimising R_Madry^ℓ2.
#[derive(Debug, Clone, Copy)]
pub struct Turn {
    pub seed: u64,
    /// Step (1-based) of the smallest R_SCORE^ℓ2.
    pub step: usize,
    pub madry_at_turn: f64,
    pub score_at_turn: f64,
    pub madry_last: f64,
    pub score_last: f64,
    pub steps: usize,
}

impl Turn {
    /// R_SCORE rose after its minimum while R_Madry kept falling.
    pub fn shows_overfitting(&self) -> bool {
        self.step < self.steps
            && self.score_last > self.score_at_turn
            && self.madry_last < self.madry_at_turn
    }
}

fn model_posterior_on(run: &ScoreToyRun, xs: &[f64]) -> Result<Vec<f64>> {
    let (model, _) = checkpoint::load(&run.checkpoint, Device::Cpu)?;
    let x = Tensor::from_slice(xs).to_kind(Kind::Float).view([-1, 1]);
    let p = tch::no_grad(|| model.forward_t(&x, false).sigmoid().view([-1]));
    Ok(Vec::<f32>::try_from(p)
        .unwrap_or_default()
        .into_iter()
        .map(f64::from)
        .collect())
}

fn objective_label(o: Objective) -> &'static str {
    match o {
        Objective::Standard => "R_Standard",
        Objective::Madry => "R_Madry",
        Objective::Score => "R_SCORE",
    }
}

/// The curves of Figure 1 or 2 (`figure`): p_θ(y=1|x) of the lowest seed
/// of each objective with `train_size` draws and `distance`, beside
/// p_d(y=1|x), on [`curve_grid`].
fn curves_of(
    runs: &[ScoreToyRun],
    train_size: usize,
    distance: BinaryDivergence,
    figure: &str,
) -> Result<Vec<CurveRow>> {
    let xs = curve_grid();
    let p_d = posterior_on(&xs);
    let mut curves = Vec::new();
    for objective in [Objective::Standard, Objective::Madry, Objective::Score] {
        let Some(run) = runs
            .iter()
            .filter(|r| {
                r.train_size == train_size && r.distance == distance && r.objective == objective
            })
            .min_by_key(|r| r.seed)
        else {
            continue;
        };
        let p_theta = model_posterior_on(run, &xs)?;
        curves.extend(
            xs.iter()
                .zip(&p_d)
                .zip(p_theta)
                .map(|((x, pd), pt)| CurveRow {
                    figure: figure.into(),
                    objective: objective_label(objective).into(),
                    distance: distance.as_str().into(),
                    train_size,
                    seed: run.seed,
                    x: *x,
                    p_d: *pd,
                    p_theta: pt,
                }),
        );
    }
    Ok(curves)
}

/// What [`score_toy`] found.
#[derive(Debug, Clone)]
pub struct ScoreToySummary {
    pub gaps: Vec<GapRow>,
    /// (SCORE gap, Madry gap, seeds, seeds) at 60 000 samples with KL.
    pub self_consistency_kl: Option<(f64, f64, usize, usize)>,
    pub turns: Vec<Turn>,
    pub c_l2: f64,
}

impl ScoreToySummary {
    /// The Figure 1 acceptance: SCORE's gap < 0.02 and Madry's ≥ 3× it.
    pub fn self_consistency_holds(&self) -> Option<bool> {
        self.self_consistency_kl
            .map(|(s, m, _, _)| s < SCORE_GAP_LIMIT && m >= MADRY_OVER_SCORE_MIN * s)
    }
}

fn markdown(
    runs: &[ScoreToyRun],
    summary: &ScoreToySummary,
    constants: &[(BinaryDivergence, f64)],
) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# SCORE's 1-D toy (Figures 1–3), rebuilt\n");
    let _ = writeln!(
        md,
        "p_d(y=1) = 1/6, x|y=1 ~ N(1, 1); p_d(y=0) = 5/6, x|y=0 ~ N(−1, 4); B(x) = {{x′ : |x′ − x| ≤ r}}. \
         Gaps and risks are estimated on 60 000 fresh draws from p_d(x) (risks with the grid maximiser: \
         the window's grid points plus the ball's two end points). {} runs, set up as:\n",
        runs.len()
    );
    let mut setups: Vec<&str> = runs.iter().map(|r| r.setup.as_str()).collect();
    setups.sort();
    setups.dedup();
    for s in setups {
        let _ = writeln!(md, "- {s}");
    }
    let _ = writeln!(md);
    let _ = writeln!(md, "## The constant C^D (Theorem 1), by quadrature\n");
    let _ = writeln!(md, "Class-1 convention: ℓ1 = ℓ2 = |p − q| and SE = (p − q)² on p(y=1); the full two-vector values are 2×, √2× and 2× these (KL has no convention).\n");
    let _ = writeln!(
        md,
        "| D | C^D (class-1) | C^D (two-vector) |\n|---|---|---|"
    );
    for (d, c) in constants {
        let _ = writeln!(
            md,
            "| {} | {:.4} | {:.4} |",
            d.as_str(),
            c,
            c * d.two_vector_factor()
        );
    }
    let _ = writeln!(md, "\n## Self-consistency: mean |p_θ − p_d| over p_d(x)\n");
    let _ = writeln!(
        md,
        "| training draws | D | objective | mean gap ± std | seeds |\n|---|---|---|---|---|"
    );
    for g in &summary.gaps {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.4} ± {:.4} | {} |",
            g.train_size,
            g.distance.as_str(),
            objective_label(g.objective),
            g.gap_mean,
            g.gap_std,
            g.seeds
        );
    }
    if let (Some((s, m, ns, nm)), Some(holds)) = (
        summary.self_consistency_kl,
        summary.self_consistency_holds(),
    ) {
        let _ = writeln!(
            md,
            "\nFigure 1's claim with KL at 60 000 draws: R_SCORE's gap {s:.4} (mean of {ns} seeds, limit {SCORE_GAP_LIMIT}), \
             R_Madry's {m:.4} (mean of {nm} seeds) = {:.1}× SCORE's (at least {MADRY_OVER_SCORE_MIN}× required): {}.",
            m / s,
            if holds { "holds" } else { "DOES NOT HOLD" }
        );
    }
    let _ = writeln!(md, "\n## Figure 3: minimising R_Madry^ℓ2\n");
    let _ = writeln!(
        md,
        "C^ℓ2 = {:.4}. The turn is the step where R_SCORE^ℓ2 is smallest; after it R_SCORE^ℓ2 rises.\n",
        summary.c_l2
    );
    let _ = writeln!(md, "| seed | turn (step) | R_Madry^ℓ2 at the turn | R_SCORE^ℓ2 at the turn | R_Madry^ℓ2 at step 500 | R_SCORE^ℓ2 at step 500 | R_SCORE up while R_Madry down |\n|---|---|---|---|---|---|---|");
    for t in &summary.turns {
        let _ = writeln!(
            md,
            "| {} | {} | {:.4} | {:.4} | {:.4} | {:.4} | {} |",
            t.seed,
            t.step,
            t.madry_at_turn,
            t.score_at_turn,
            t.madry_last,
            t.score_last,
            if t.shows_overfitting() { "yes" } else { "no" }
        );
    }
    let _ = writeln!(
        md,
        "\nFigures (each .svg and .png): `figure1` (60 000 draws), `figure2` (6 draws; grey lines mark them), `figure3`. \
         Data: `runs.csv`, `curves.csv`, `figure3.csv`, `constants.csv`."
    );
    md
}

/// R_Madry^ℓ2 and R_SCORE^ℓ2 per step of every madry/ℓ2 run with 60 000
/// draws (Figure 3's data), read from the runs' metrics.
fn figure3_rows(runs: &[ScoreToyRun], c_l2: f64) -> Result<Vec<Figure3Row>> {
    let mut rows = Vec::new();
    for run in runs.iter().filter(|r| {
        r.objective == Objective::Madry
            && r.distance == BinaryDivergence::L2
            && r.train_size == SCORE_NUM_TRAIN
    }) {
        for m in read_metrics(&TrainRun::at(run.dir()).metrics())? {
            if let (Some(madry), Some(score)) = (m.risk_madry, m.risk_score) {
                rows.push(Figure3Row {
                    seed: run.seed,
                    step: m.epoch,
                    risk_madry_l2: madry,
                    risk_score_l2: score,
                    c_l2,
                });
            }
        }
    }
    Ok(rows)
}

/// One row of `constants.csv`: C^D of one distance in both conventions.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct ConstantRow {
    distance: String,
    #[serde(serialize_with = "csvio::display")]
    c_class1: f64,
    #[serde(serialize_with = "csvio::display")]
    c_two_vector: f64,
}

/// One row of `runs.csv`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct RunRow {
    objective: String,
    distance: String,
    train_size: usize,
    seed: u64,
    #[serde(serialize_with = "csvio::display")]
    posterior_gap: f64,
    #[serde(serialize_with = "csvio::display")]
    risk_standard: f64,
    #[serde(serialize_with = "csvio::display")]
    risk_madry: f64,
    #[serde(serialize_with = "csvio::display")]
    risk_score: f64,
}

/// Writes `constants.csv` and `runs.csv`.
fn write_tables(
    runs: &[ScoreToyRun],
    constants: &[(BinaryDivergence, f64)],
    out: &Path,
) -> Result<()> {
    let constants: Vec<ConstantRow> = constants
        .iter()
        .map(|&(d, c)| ConstantRow {
            distance: d.as_str().into(),
            c_class1: c,
            c_two_vector: c * d.two_vector_factor(),
        })
        .collect();
    csvio::write_records(&out.join("constants.csv"), &constants)?;
    let rows: Vec<RunRow> = runs
        .iter()
        .map(|r| RunRow {
            objective: objective_label(r.objective).into(),
            distance: r.distance.as_str().into(),
            train_size: r.train_size,
            seed: r.seed,
            posterior_gap: r.gap,
            risk_standard: r.risk_standard,
            risk_madry: r.risk_madry,
            risk_score: r.risk_score,
        })
        .collect();
    csvio::write_records(&out.join(RUNS_CSV), &rows)
}

/// Writes `curves.csv` and draws Figures 1 (60 000 draws) and 2 (the
/// smallest training size below it) from it.
fn write_figures_1_and_2(runs: &[ScoreToyRun], out: &Path) -> Result<()> {
    let small = runs
        .iter()
        .map(|r| r.train_size)
        .filter(|&n| n < SCORE_NUM_TRAIN)
        .min();
    let mut curves = Vec::new();
    for (name, size) in [("figure1", Some(SCORE_NUM_TRAIN)), ("figure2", small)] {
        if let Some(size) = size {
            curves.extend(curves_of(runs, size, BinaryDivergence::Kl, name)?);
        }
    }
    csvio::write_records(&out.join(CURVES_CSV), &curves)?;
    let gaps: Vec<RunGap> = runs
        .iter()
        .map(|r| RunGap {
            objective: objective_label(r.objective).into(),
            distance: r.distance.as_str().into(),
            train_size: r.train_size,
            seed: r.seed,
            posterior_gap: r.gap,
        })
        .collect();
    for name in ["figure1", "figure2"] {
        if let Some(f) = figures::curves_figure(&curves, name, &gaps) {
            figure::draw(&f, &out.join(name))?;
        }
    }
    Ok(())
}

/// Rebuilds Figures 1–3, their CSVs and the summary from the toy-score runs
/// under `runs_dir` into `out`.
pub fn score_toy(runs_dir: &Path, out: &Path) -> Result<ScoreToySummary> {
    let runs = collect(runs_dir)?;
    let constants: Vec<(BinaryDivergence, f64)> = BinaryDivergence::ALL
        .iter()
        .map(|&d| (d, data_constant(d, 1.0)))
        .collect();
    let c_l2 = constants
        .iter()
        .find(|(d, _)| *d == BinaryDivergence::L2)
        .map(|(_, c)| *c)
        .expect("ℓ2 is in BinaryDivergence::ALL");
    write_tables(&runs, &constants, out)?;
    write_figures_1_and_2(&runs, out)?;

    // Figure 3: every madry/ℓ2 run at 60 000 draws; the lowest seed drawn.
    let fig3 = figure3_rows(&runs, c_l2)?;
    csvio::write_records(&out.join(FIGURE3_CSV), &fig3)?;
    if let Some(f) = figures::figure3(&fig3) {
        figure::draw(&f, &out.join("figure3"))?;
    }

    let gaps = gap_table(&runs);
    let summary = ScoreToySummary {
        self_consistency_kl: self_consistency(&gaps, BinaryDivergence::Kl),
        gaps,
        turns: figures::turns(&fig3),
        c_l2,
    };
    write_text(
        &out.join("summary.md"),
        &markdown(&runs, &summary, &constants),
    )?;
    Ok(summary)
}
