//! Plots of a [`Report`] as SVG (drawn by [`crate::report::svg`]):
//! `forest.svg`, every row's Δ with its interval (clean and robust avg side
//! by side), and `delta_vs_<vary>.svg`, Δ against the varied
//! hyperparameter (λ or β) per row family with the interval as a band.
use super::table::metric_name;
use super::{Report, ROBUST_AVG};
use crate::error::Result;
use crate::report::svg::{self, Band, ErrorBar, Panel, Series, PALETTE};
use crate::report::write_text;
use std::path::{Path, PathBuf};

fn panel_metrics(report: &Report) -> Vec<&str> {
    ["clean", ROBUST_AVG]
        .into_iter()
        .filter(|m| report.metrics.iter().any(|x| x == m))
        .collect()
}

/// The forest plot: one line per row (averages last, in a second colour),
/// Δ in percentage points, dot filled when the interval excludes 0.
pub fn forest(report: &Report) -> String {
    let n = report.rows.len();
    let longest = report
        .rows
        .iter()
        .map(|r| r.label.chars().count())
        .max()
        .unwrap_or(4);
    let panels: Vec<Panel> = panel_metrics(report)
        .into_iter()
        .map(|m| {
            // Pad the x range so intervals at the ends do not touch the frame.
            let (lo, hi) = report.rows.iter().filter_map(|r| r.metrics.get(m)).fold(
                (0.0f64, 0.0f64),
                |(a, b), x| {
                    (
                        a.min(100.0 * x.interval.lower),
                        b.max(100.0 * x.interval.upper),
                    )
                },
            );
            let pad = 0.06 * (hi - lo).max(1.0);
            (m, (lo - pad, hi + pad))
        })
        .map(|(m, x_range)| Panel {
            x_range: Some(x_range),
            title: format!("Δ {} (pp)", metric_name(m)),
            x_label: format!(
                "Δ = +TASER − no TASER, {:.0}% {} interval",
                100.0 * report.level,
                report.interval
            ),
            error_bars: report
                .rows
                .iter()
                .enumerate()
                .filter_map(|(i, r)| {
                    r.metrics.get(m).map(|x| ErrorBar {
                        y: (n - 1 - i) as f64,
                        x: 100.0 * x.delta,
                        lo: 100.0 * x.interval.lower,
                        hi: 100.0 * x.interval.upper,
                        color: if r.average { PALETTE[1] } else { PALETTE[0] }.into(),
                        filled: x.interval.excludes_zero(),
                    })
                })
                .collect(),
            y_tick_labels: Some(
                report
                    .rows
                    .iter()
                    .enumerate()
                    .map(|(i, r)| ((n - 1 - i) as f64, r.label.clone()))
                    .collect(),
            ),
            y_range: Some((-0.7, n as f64 - 0.3)),
            x_refs: vec![0.0],
            margin_left: Some(20.0 + 7.0 * longest as f64),
            ..Default::default()
        })
        .collect();
    let width = 380.0 + 7.0 * longest as f64;
    svg::render(&panels, width, 90.0 + 26.0 * n as f64)
}

/// Δ against the varied hyperparameter, one series and band per family of
/// rows; `None` when no row has a value of it. Log x axis when every value
/// is positive and they span a factor of 10 or more.
pub fn delta_vs_x(report: &Report) -> Option<String> {
    let rows: Vec<_> = report
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
    let xs: Vec<f64> = rows.iter().filter_map(|r| r.x).collect();
    let (lo, hi) = xs
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(*x), b.max(*x))
        });
    let log_x = lo > 0.0 && hi / lo >= 10.0;
    let symbol = super::symbol(&report.vary);
    let panels = panel_metrics(report)
        .into_iter()
        .map(|m| {
            let mut p = Panel {
                title: format!("Δ {} vs {symbol}", metric_name(m)),
                x_label: symbol.clone(),
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
                let mut pts: Vec<(f64, f64, f64, f64)> = rows
                    .iter()
                    .filter(|r| r.family == *fam)
                    .filter_map(|r| {
                        let x = r.metrics.get(m)?;
                        Some((
                            r.x?,
                            100.0 * x.delta,
                            100.0 * x.interval.lower,
                            100.0 * x.interval.upper,
                        ))
                    })
                    .collect();
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                let color = PALETTE[k % PALETTE.len()].to_string();
                p.bands.push(Band {
                    xs: pts.iter().map(|q| q.0).collect(),
                    lower: pts.iter().map(|q| q.2).collect(),
                    upper: pts.iter().map(|q| q.3).collect(),
                    color: color.clone(),
                });
                p.series.push(Series {
                    label: fam.to_string(),
                    points: pts.iter().map(|q| (q.0, q.1)).collect(),
                    color,
                    dashed: false,
                });
            }
            p
        })
        .collect::<Vec<_>>();
    Some(svg::render(&panels, 420.0, 320.0))
}

/// Writes the plots into `out` (atomically) and returns their paths.
pub fn write_all(report: &Report, out: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let p = out.join("forest.svg");
    write_text(&p, &forest(report))?;
    written.push(p);
    if let Some(svg) = delta_vs_x(report) {
        let p = out.join(format!("delta_vs_{}.svg", report.vary));
        write_text(&p, &svg)?;
        written.push(p);
    }
    Ok(written)
}
