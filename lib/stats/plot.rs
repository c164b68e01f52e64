//! Figures of the comparisons, each drawn by [`crate::figure`] as SVG and
//! PNG: `forest`, every row's Δ with its interval (clean and robust avg side
//! by side), and `delta_vs_<vary>`, Δ against the varied hyperparameter
//! (λ or β) per row family with the interval as a band.
//!
//! Both are drawn from [`Deltas`], the part of `comparisons.csv` they show:
//! taken from a [`Report`] after a run, or read back from the file to
//! redraw the figures without resampling.
use super::table::metric_name;
use super::{axis_label, symbol, Report, ROBUST_AVG};
use crate::csvio::{read_table, Fixes, Table};
use crate::error::{Error, Result};
use crate::figure::{self, Band, ErrorBar, Figure, Line, Panel, PALETTE};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Δ of one metric in one row and its interval, as fractions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Delta {
    pub delta: f64,
    pub lower: f64,
    pub upper: f64,
}

impl Delta {
    /// True when 0 lies outside [lower, upper].
    pub fn excludes_zero(&self) -> bool {
        self.lower > 0.0 || self.upper < 0.0
    }
}

/// One row of `comparisons.csv`, as far as the figures need it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeltaRow {
    pub label: String,
    pub family: String,
    /// The varied hyperparameter's value (none for average rows).
    pub x: Option<f64>,
    pub average: bool,
    /// Metric name → Δ (metrics a row lacks are absent).
    pub metrics: BTreeMap<String, Delta>,
}

/// What the figures show: the rows, the metric columns, the varied
/// hyperparameter's name and the interval's kind and level.
#[derive(Debug, Clone, PartialEq)]
pub struct Deltas {
    pub vary: String,
    pub metrics: Vec<String>,
    /// Confidence level, e.g. 0.95.
    pub level: f64,
    /// "percentile" or "bca".
    pub interval: String,
    pub rows: Vec<DeltaRow>,
}

impl Deltas {
    /// The figures' part of a report.
    pub fn of(report: &Report) -> Deltas {
        let rows = report
            .rows
            .iter()
            .map(|r| DeltaRow {
                label: r.label.clone(),
                family: r.family.clone(),
                x: r.x,
                average: r.average,
                metrics: r
                    .metrics
                    .iter()
                    .map(|(m, v)| {
                        let (lower, upper) = (v.interval.lower, v.interval.upper);
                        (
                            m.clone(),
                            Delta {
                                delta: v.delta,
                                lower,
                                upper,
                            },
                        )
                    })
                    .collect(),
            })
            .collect();
        Deltas {
            vary: report.vary.clone(),
            metrics: report.metrics.clone(),
            level: report.level,
            interval: report.interval.to_string(),
            rows,
        }
    }

    /// Reads a `comparisons.csv` that `bootstrap` wrote: the varied
    /// hyperparameter is its fourth column, the metrics are the columns
    /// named `<metric>_delta` (with `_lower` and `_upper` beside them).
    ///
    /// Errors: [`Error::MissingInput`] when it cannot be opened;
    /// [`Error::CorruptInput`] when a column is missing or a value is not a
    /// number.
    pub fn read(path: &Path) -> Result<Deltas> {
        let corrupt = |reason: String| Error::CorruptInput {
            path: path.to_path_buf(),
            reason,
            fix: "rerun `bootstrap` to rewrite it".into(),
        };
        let fixes = Fixes {
            missing: "run `bootstrap` first (it writes comparisons.csv)",
            corrupt: "rerun `bootstrap` to rewrite it",
        };
        let Table { header, rows } = read_table(path, fixes)?;
        let col = |name: &str| {
            header
                .iter()
                .position(|h| h == name)
                .ok_or_else(|| corrupt(format!("no column `{name}`")))
        };
        let metrics: Vec<String> = header
            .iter()
            .filter_map(|h| h.strip_suffix("_delta").map(String::from))
            .collect();
        let (label, kind, family, x) = (col("row")?, col("kind")?, col("family")?, 3);
        let (interval, level) = (col("interval")?, col("level")?);
        let mut deltas = Deltas {
            vary: header.get(x).cloned().unwrap_or_default(),
            metrics: metrics.clone(),
            level: 0.95,
            interval: String::new(),
            rows: Vec::new(),
        };
        for (n, record) in rows.iter().enumerate() {
            let cell = |i: usize| record.get(i).map(String::as_str).unwrap_or_default();
            let number = |i: usize| -> Result<Option<f64>> {
                match cell(i) {
                    "" => Ok(None),
                    s => s.parse().map(Some).map_err(|_| {
                        corrupt(format!(
                            "line {}, column `{}`: `{s}` is not a number",
                            n + 2,
                            header[i]
                        ))
                    }),
                }
            };
            let mut values = BTreeMap::new();
            for m in &metrics {
                let part = |p: &str| col(&format!("{m}_{p}")).and_then(number);
                if let (Some(delta), Some(lower), Some(upper)) =
                    (part("delta")?, part("lower")?, part("upper")?)
                {
                    values.insert(
                        m.clone(),
                        Delta {
                            delta,
                            lower,
                            upper,
                        },
                    );
                }
            }
            deltas.level = number(level)?.unwrap_or(deltas.level);
            deltas.interval = cell(interval).to_string();
            deltas.rows.push(DeltaRow {
                label: cell(label).to_string(),
                family: cell(family).to_string(),
                x: number(x)?,
                average: cell(kind) == "average",
                metrics: values,
            });
        }
        Ok(deltas)
    }
}

fn panel_metrics(deltas: &Deltas) -> Vec<&str> {
    ["clean", ROBUST_AVG]
        .into_iter()
        .filter(|m| deltas.metrics.iter().any(|x| x == m))
        .collect()
}

/// The forest plot: one line per row (averages last, in a second colour),
/// Δ in percentage points, dot filled when the interval excludes 0.
pub fn forest(deltas: &Deltas) -> Figure {
    let n = deltas.rows.len();
    let longest = deltas
        .rows
        .iter()
        .map(|r| r.label.chars().count())
        .max()
        .unwrap_or(4) as u32;
    let panel = |m: &str| {
        // Pad the x range so intervals at the ends do not touch the frame.
        let (lo, hi) = deltas
            .rows
            .iter()
            .filter_map(|r| r.metrics.get(m))
            .fold((0.0f64, 0.0f64), |(a, b), d| {
                (a.min(100.0 * d.lower), b.max(100.0 * d.upper))
            });
        let pad = 0.06 * (hi - lo).max(1.0);
        let y = |i: usize| (n - 1 - i) as f64;
        Panel {
            x_range: Some((lo - pad, hi + pad)),
            title: format!("Δ {} (pp)", metric_name(m)),
            x_label: format!(
                "Δ = +TASER − no TASER, {:.0}% {} interval",
                100.0 * deltas.level,
                deltas.interval
            ),
            error_bars: (deltas.rows.iter().enumerate())
                .filter_map(|(i, r)| {
                    r.metrics.get(m).map(|d| ErrorBar {
                        y: y(i),
                        x: 100.0 * d.delta,
                        lo: 100.0 * d.lower,
                        hi: 100.0 * d.upper,
                        color: if r.average { PALETTE[1] } else { PALETTE[0] },
                        filled: d.excludes_zero(),
                    })
                })
                .collect(),
            y_tick_labels: Some(
                (deltas.rows.iter().enumerate())
                    .map(|(i, r)| (y(i), r.label.clone()))
                    .collect(),
            ),
            y_range: Some((-0.7, n as f64 - 0.3)),
            x_refs: vec![0.0],
            label_width: Some(20 + 7 * longest),
            ..Default::default()
        }
    };
    Figure {
        panels: panel_metrics(deltas).into_iter().map(panel).collect(),
        panel_width: 380 + 7 * longest,
        height: 90 + 26 * n as u32,
    }
}

/// Δ against the varied hyperparameter, one line and band per family of
/// rows; `None` when no row has a value of it. Log x axis when every value
/// is positive and they span a factor of 10 or more.
pub fn delta_vs_x(deltas: &Deltas) -> Option<Figure> {
    let rows: Vec<&DeltaRow> = deltas
        .rows
        .iter()
        .filter(|r| !r.average && r.x.is_some())
        .collect();
    if rows.is_empty() {
        return None;
    }
    let mut families: Vec<&str> = Vec::new();
    for r in &rows {
        if !families.contains(&r.family.as_str()) {
            families.push(&r.family);
        }
    }
    let (lo, hi) = (rows.iter().filter_map(|r| r.x))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(x), b.max(x))
        });
    let log_x = lo > 0.0 && hi / lo >= 10.0;
    let symbol = symbol(&deltas.vary);
    let panel = |m: &str| {
        let mut p = Panel {
            title: format!("Δ {} vs {symbol}", metric_name(m)),
            x_label: axis_label(&deltas.vary),
            y_label: format!("Δ {} (pp)", metric_name(m)),
            y_refs: vec![0.0],
            log_x,
            ..Default::default()
        };
        if lo == hi {
            p.x_range = Some(if log_x {
                (lo / 2.0, lo * 2.0)
            } else {
                (lo - 0.5, lo + 0.5)
            });
        }
        for (k, fam) in families.iter().enumerate() {
            // (x, Δ, lower, upper) in pp, by x.
            let mut pts: Vec<(f64, f64, f64, f64)> = (rows.iter())
                .filter(|r| r.family == *fam)
                .filter_map(|r| {
                    let d = r.metrics.get(m)?;
                    Some((r.x?, 100.0 * d.delta, 100.0 * d.lower, 100.0 * d.upper))
                })
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            let color = PALETTE[k % PALETTE.len()];
            p.bands.push(Band {
                xs: pts.iter().map(|q| q.0).collect(),
                lower: pts.iter().map(|q| q.2).collect(),
                upper: pts.iter().map(|q| q.3).collect(),
                color,
            });
            p.lines.push(Line {
                label: fam.to_string(),
                points: pts.iter().map(|q| (q.0, q.1)).collect(),
                color,
                dashed: false,
            });
        }
        p
    };
    Some(Figure {
        panels: panel_metrics(deltas).into_iter().map(panel).collect(),
        panel_width: 420,
        height: 320,
    })
}

/// Draws the figures of `deltas` into `out` (each as .svg and .png,
/// atomically) and returns their paths.
pub fn draw_all(deltas: &Deltas, out: &Path) -> Result<Vec<PathBuf>> {
    let mut written = figure::draw(&forest(deltas), &out.join("forest"))?.to_vec();
    if let Some(f) = delta_vs_x(deltas) {
        written.extend(figure::draw(
            &f,
            &out.join(format!("delta_vs_{}", deltas.vary)),
        )?);
    }
    Ok(written)
}

/// Draws the figures of a report into `out`; see [`draw_all`].
pub fn write_all(report: &Report, out: &Path) -> Result<Vec<PathBuf>> {
    draw_all(&Deltas::of(report), out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "row,kind,family,lambda,seeds,points,overhead,clean_baseline,clean_treatment,clean_delta,clean_lower,clean_upper,robust_avg_baseline,robust_avg_treatment,robust_avg_delta,robust_avg_lower,robust_avg_upper,interval,level,resamples,seed,cluster_by_seed,notes
mart (λ = 0.1),pair,mart,0.1,1,359,1.5,0.9,0.8,-0.013928,-0.036212,0.005571,0.5,0.4,-0.033426,-0.058496,-0.008357,percentile,0.95,10000,0,false,
mart (λ = 1),pair,mart,1,1,359,1.5,0.9,0.8,-0.02,-0.03,-0.01,,,,,,percentile,0.95,10000,0,false,
Avg.,average,Avg.,,1,359,,0.9,0.8,-0.022284,-0.032498,-0.012535,0.5,0.4,-0.053853,-0.069174,-0.039461,percentile,0.95,10000,0,false,
";

    #[test]
    fn comparisons_csv_is_read_back_into_the_figures_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("comparisons.csv");
        std::fs::write(&path, CSV).unwrap();
        let d = Deltas::read(&path).unwrap();
        assert_eq!(
            (d.vary.as_str(), d.level, d.interval.as_str()),
            ("lambda", 0.95, "percentile")
        );
        assert_eq!(d.metrics, ["clean", "robust_avg"]);
        assert_eq!(d.rows.len(), 3);
        assert_eq!(d.rows[0].x, Some(0.1));
        assert_eq!(
            d.rows[0].metrics["robust_avg"],
            Delta {
                delta: -0.033426,
                lower: -0.058496,
                upper: -0.008357
            }
        );
        assert!(
            !d.rows[1].metrics.contains_key("robust_avg"),
            "empty cells are no Δ"
        );
        assert!(d.rows[2].average && d.rows[2].x.is_none());
        assert!(
            !d.rows[0].metrics["clean"].excludes_zero()
                && d.rows[2].metrics["clean"].excludes_zero()
        );

        let forest = forest(&d);
        assert_eq!(forest.panels.len(), 2);
        assert_eq!(forest.panels[0].error_bars.len(), 3);
        assert_eq!(forest.panels[1].error_bars.len(), 2);
        assert_eq!(
            forest.panels[0].error_bars[2].color, PALETTE[1],
            "the average row"
        );
        let vs = delta_vs_x(&d).expect("rows have a λ");
        assert!(vs.panels[0].log_x, "λ spans a factor of 10");
        assert_eq!(
            vs.panels[0].lines[0].points,
            vec![(0.1, 100.0 * -0.013928), (1.0, 100.0 * -0.02)]
        );

        let written = draw_all(&d, dir.path()).unwrap();
        let names: Vec<_> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "forest.svg",
                "forest.png",
                "delta_vs_lambda.svg",
                "delta_vs_lambda.png"
            ]
        );
        let err = Deltas::read(&dir.path().join("none.csv")).unwrap_err();
        assert!(matches!(err, Error::MissingInput { .. }), "{err}");
    }
}
