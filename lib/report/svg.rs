//! A small SVG line-plot writer: panels side by side, each with axes, ticks,
//! a legend, optional shaded x-range and interval bands. Plain SVG 1.1, no
//! fonts to install, readable by browsers and vector editors.
use std::fmt::Write;

/// One line of a panel.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub color: String,
    pub dashed: bool,
}

/// A filled band between `lower` and `upper` (same x values).
#[derive(Debug, Clone)]
pub struct Band {
    pub xs: Vec<f64>,
    pub lower: Vec<f64>,
    pub upper: Vec<f64>,
    pub color: String,
}

/// A point estimate with a horizontal interval (one line of a forest plot):
/// drawn as a segment from `lo` to `hi` at height `y` with a dot at `x`.
#[derive(Debug, Clone)]
pub struct ErrorBar {
    pub y: f64,
    pub x: f64,
    pub lo: f64,
    pub hi: f64,
    pub color: String,
    /// Drawn filled when true, hollow otherwise (e.g. "interval excludes 0").
    pub filled: bool,
}

/// One plot area.
#[derive(Debug, Clone, Default)]
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub bands: Vec<Band>,
    /// Fixed axis ranges; computed from the data when `None`.
    pub x_range: Option<(f64, f64)>,
    pub y_range: Option<(f64, f64)>,
    /// An x-interval drawn shaded (e.g. where the training data lie).
    pub shade_x: Option<(f64, f64, String)>,
    /// Logarithmic x axis (values must be > 0).
    pub log_x: bool,
    /// Horizontal intervals (forest plots).
    pub error_bars: Vec<ErrorBar>,
    /// Text labels at given y values, replacing the numeric y ticks
    /// (categorical axes such as the rows of a forest plot).
    pub y_tick_labels: Option<Vec<(f64, String)>>,
    /// Reference lines drawn dark grey: vertical at these x values, horizontal
    /// at these y values (e.g. Δ = 0).
    pub x_refs: Vec<f64>,
    pub y_refs: Vec<f64>,
    /// Left margin in pixels (wider for long category labels); 62 when `None`.
    pub margin_left: Option<f64>,
}

/// A qualitative palette (colour-blind friendly, Okabe–Ito).
pub const PALETTE: [&str; 8] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000",
];

/// About five "nice" tick values covering [lo, hi].
pub fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        return vec![lo];
    }
    let raw = (hi - lo) / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let start = (lo / step).ceil() * step;
    (0..)
        .map(|i| start + i as f64 * step)
        .take_while(|v| *v <= hi + step * 1e-9)
        .map(|v| if v.abs() < step * 1e-9 { 0.0 } else { v })
        .collect()
}

fn fmt_tick(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1e4 || v.abs() < 1e-3 {
        format!("{v:.0e}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn data_range(panel: &Panel) -> ((f64, f64), (f64, f64)) {
    let xs = panel
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .chain(panel.bands.iter().flat_map(|b| b.xs.clone()))
        .chain(panel.error_bars.iter().flat_map(|e| [e.lo, e.hi, e.x]))
        .chain(panel.x_refs.iter().copied());
    let ys = panel
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .chain(
            panel
                .bands
                .iter()
                .flat_map(|b| b.lower.iter().chain(&b.upper).copied().collect::<Vec<_>>()),
        )
        .chain(panel.error_bars.iter().map(|e| e.y))
        .chain(panel.y_refs.iter().copied());
    let fold = |it: &mut dyn Iterator<Item = f64>| {
        it.filter(|v| v.is_finite())
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                (a.min(v), b.max(v))
            })
    };
    let (mut x0, mut x1) = fold(&mut xs.into_iter());
    if x1 - x0 < 1e-12 && x0.is_finite() {
        // A single x value (e.g. every interval is [0, 0]): widen so the
        // axis has a length.
        x0 -= 0.5;
        x1 += 0.5;
    }
    let (mut y0, mut y1) = fold(&mut ys.into_iter());
    if !x0.is_finite() {
        (x0, x1) = (0.0, 1.0);
    }
    if !y0.is_finite() {
        (y0, y1) = (0.0, 1.0);
    }
    if y1 - y0 < 1e-12 {
        y0 -= 0.5;
        y1 += 0.5;
    }
    let pad = 0.05 * (y1 - y0);
    (
        panel.x_range.unwrap_or((x0, x1)),
        panel.y_range.unwrap_or((y0 - pad, y1 + pad)),
    )
}

/// Renders panels side by side into one SVG document.
pub fn render(panels: &[Panel], panel_width: f64, height: f64) -> String {
    let (mr, mt, mb) = (16.0, 34.0, 48.0);
    let width = panel_width * panels.len() as f64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    for (k, panel) in panels.iter().enumerate() {
        let ox = k as f64 * panel_width;
        let ml = panel.margin_left.unwrap_or(62.0);
        let (pw, ph) = (panel_width - ml - mr, height - mt - mb);
        let ((x0, x1), (y0, y1)) = data_range(panel);
        let tx = |x: f64| {
            let (a, b, v) = if panel.log_x {
                (x0.log10(), x1.log10(), x.log10())
            } else {
                (x0, x1, x)
            };
            ox + ml + (v - a) / (b - a) * pw
        };
        let ty = |y: f64| mt + (y1 - y) / (y1 - y0) * ph;
        let clip = format!("clip{k}");
        let _ = writeln!(
            out,
            r#"<clipPath id="{clip}"><rect x="{}" y="{mt}" width="{pw}" height="{ph}"/></clipPath>"#,
            ox + ml
        );
        if let Some((a, b, color)) = &panel.shade_x {
            let (xa, xb) = (tx(a.max(x0)), tx(b.min(x1)));
            let _ = writeln!(
                out,
                r#"<rect x="{xa:.2}" y="{mt}" width="{:.2}" height="{ph}" fill="{color}" opacity="0.12"/>"#,
                xb - xa
            );
        }
        // Grid and ticks.
        let xticks = if panel.log_x {
            let (a, b) = (x0.log10().floor() as i32, x1.log10().ceil() as i32);
            (a..=b)
                .map(|e| 10f64.powi(e))
                .filter(|v| *v >= x0 * 0.999 && *v <= x1 * 1.001)
                .collect()
        } else {
            ticks(x0, x1)
        };
        for v in xticks {
            let x = tx(v);
            let _ = writeln!(
                out,
                r##"<line x1="{x:.2}" y1="{mt}" x2="{x:.2}" y2="{:.2}" stroke="#e6e6e6"/>"##,
                mt + ph
            );
            let _ = writeln!(
                out,
                r#"<text x="{x:.2}" y="{:.2}" text-anchor="middle">{}</text>"#,
                mt + ph + 16.0,
                fmt_tick(v)
            );
        }
        let yticks: Vec<(f64, String)> = match &panel.y_tick_labels {
            Some(labels) => labels.clone(),
            None => ticks(y0, y1)
                .into_iter()
                .map(|v| (v, fmt_tick(v)))
                .collect(),
        };
        for (v, text) in yticks {
            let y = ty(v);
            let _ = writeln!(
                out,
                r##"<line x1="{:.2}" y1="{y:.2}" x2="{:.2}" y2="{y:.2}" stroke="#e6e6e6"/>"##,
                ox + ml,
                ox + ml + pw
            );
            let _ = writeln!(
                out,
                r#"<text x="{:.2}" y="{:.2}" text-anchor="end">{}</text>"#,
                ox + ml - 6.0,
                y + 4.0,
                escape(&text)
            );
        }
        let _ = writeln!(
            out,
            r##"<rect x="{}" y="{mt}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##,
            ox + ml
        );
        for &v in &panel.x_refs {
            let x = tx(v);
            let _ = writeln!(
                out,
                r##"<line x1="{x:.2}" y1="{mt}" x2="{x:.2}" y2="{:.2}" stroke="#555" stroke-dasharray="3,3"/>"##,
                mt + ph
            );
        }
        for &v in &panel.y_refs {
            let y = ty(v);
            let _ = writeln!(
                out,
                r##"<line x1="{:.2}" y1="{y:.2}" x2="{:.2}" y2="{y:.2}" stroke="#555" stroke-dasharray="3,3"/>"##,
                ox + ml,
                ox + ml + pw
            );
        }
        for e in &panel.error_bars {
            let (y, xa, xb) = (ty(e.y), tx(e.lo), tx(e.hi));
            let _ = writeln!(
                out,
                r#"<line x1="{xa:.2}" y1="{y:.2}" x2="{xb:.2}" y2="{y:.2}" stroke="{c}" stroke-width="2"/><line x1="{xa:.2}" y1="{:.2}" x2="{xa:.2}" y2="{:.2}" stroke="{c}" stroke-width="1.5"/><line x1="{xb:.2}" y1="{:.2}" x2="{xb:.2}" y2="{:.2}" stroke="{c}" stroke-width="1.5"/>"#,
                y - 4.0,
                y + 4.0,
                y - 4.0,
                y + 4.0,
                c = e.color
            );
            let fill = if e.filled { e.color.as_str() } else { "white" };
            let _ = writeln!(
                out,
                r#"<circle cx="{:.2}" cy="{y:.2}" r="4" fill="{fill}" stroke="{}" stroke-width="1.5"/>"#,
                tx(e.x),
                e.color
            );
        }
        for band in &panel.bands {
            let mut d = String::new();
            for (i, (x, u)) in band.xs.iter().zip(&band.upper).enumerate() {
                let _ = write!(
                    d,
                    "{}{:.2},{:.2} ",
                    if i == 0 { "M" } else { "L" },
                    tx(*x),
                    ty(*u)
                );
            }
            for (x, l) in band.xs.iter().zip(&band.lower).rev() {
                let _ = write!(d, "L{:.2},{:.2} ", tx(*x), ty(*l));
            }
            let _ = writeln!(
                out,
                r#"<path d="{d}Z" fill="{}" opacity="0.2" clip-path="url(#{clip})"/>"#,
                band.color
            );
        }
        for s in &panel.series {
            let mut d = String::new();
            let mut pen_up = true;
            for (x, y) in &s.points {
                if !x.is_finite() || !y.is_finite() {
                    pen_up = true;
                    continue;
                }
                let _ = write!(
                    d,
                    "{}{:.2},{:.2} ",
                    if pen_up { "M" } else { "L" },
                    tx(*x),
                    ty(*y)
                );
                pen_up = false;
            }
            let dash = if s.dashed {
                r#" stroke-dasharray="6,4""#
            } else {
                ""
            };
            let _ = writeln!(
                out,
                r#"<path d="{d}" fill="none" stroke="{}" stroke-width="1.6"{dash} clip-path="url(#{clip})"/>"#,
                s.color
            );
            if s.points.len() == 1 {
                let (x, y) = s.points[0];
                let _ = writeln!(
                    out,
                    r#"<circle cx="{:.2}" cy="{:.2}" r="3" fill="{}"/>"#,
                    tx(x),
                    ty(y),
                    s.color
                );
            }
        }
        // Legend (top-left inside the panel).
        for (i, s) in panel.series.iter().enumerate() {
            let (lx, ly) = (ox + ml + 10.0, mt + 14.0 + 15.0 * i as f64);
            let dash = if s.dashed {
                r#" stroke-dasharray="6,4""#
            } else {
                ""
            };
            let _ = writeln!(
                out,
                r#"<line x1="{lx:.2}" y1="{ly:.2}" x2="{:.2}" y2="{ly:.2}" stroke="{}" stroke-width="2"{dash}/>"#,
                lx + 22.0,
                s.color
            );
            let _ = writeln!(
                out,
                r#"<text x="{:.2}" y="{:.2}">{}</text>"#,
                lx + 28.0,
                ly + 4.0,
                escape(&s.label)
            );
        }
        let _ = writeln!(
            out,
            r#"<text x="{:.2}" y="20" text-anchor="middle" font-size="14" font-weight="bold">{}</text>"#,
            ox + ml + pw / 2.0,
            escape(&panel.title)
        );
        let _ = writeln!(
            out,
            r#"<text x="{:.2}" y="{:.2}" text-anchor="middle">{}</text>"#,
            ox + ml + pw / 2.0,
            height - 10.0,
            escape(&panel.x_label)
        );
        let _ = writeln!(
            out,
            r#"<text transform="translate({:.2},{:.2}) rotate(-90)" text-anchor="middle">{}</text>"#,
            ox + 16.0,
            mt + ph / 2.0,
            escape(&panel.y_label)
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_nice_and_cover_the_range() {
        let close = |a: Vec<f64>, b: Vec<f64>| {
            a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-12)
        };
        assert!(close(ticks(0.0, 1.0), vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]));
        assert!(close(ticks(-6.0, 6.0), vec![-5.0, -2.5, 0.0, 2.5, 5.0]));
        assert!(close(ticks(0.013, 0.087), vec![0.02, 0.04, 0.06, 0.08]));
    }

    #[test]
    fn render_writes_one_path_per_series_and_escapes_labels() {
        let panel = Panel {
            title: "a < b".into(),
            series: vec![Series {
                label: "sin".into(),
                points: (0..10).map(|i| (i as f64, (i as f64).sin())).collect(),
                color: PALETTE[0].into(),
                dashed: false,
            }],
            ..Default::default()
        };
        let svg = render(&[panel.clone(), panel], 300.0, 200.0);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("stroke-width=\"1.6\"").count(), 2);
        assert!(svg.contains("a &lt; b"));
    }

    #[test]
    fn forest_panel_draws_bars_labels_and_reference_line() {
        let panel = Panel {
            error_bars: vec![
                ErrorBar {
                    y: 0.0,
                    x: 1.0,
                    lo: 0.5,
                    hi: 1.5,
                    color: PALETTE[0].into(),
                    filled: true,
                },
                ErrorBar {
                    y: 1.0,
                    x: 0.0,
                    lo: 0.0,
                    hi: 0.0,
                    color: PALETTE[1].into(),
                    filled: false,
                },
            ],
            y_tick_labels: Some(vec![(0.0, "PGD".into()), (1.0, "A & B".into())]),
            x_refs: vec![0.0],
            margin_left: Some(120.0),
            ..Default::default()
        };
        let svg = render(&[panel], 400.0, 200.0);
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(svg.contains(">PGD</text>") && svg.contains("A &amp; B"));
        assert!(svg.contains("stroke-dasharray=\"3,3\""));
        assert!(!svg.contains("NaN"));
    }
}
