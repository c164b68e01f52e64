//! Draws a [`Figure`] on any plotters backend (SVG and bitmap alike).
use super::clip::{Point, Window};
use super::{ErrorBar, Figure, Line, Panel, Rgb, DARK_GREY, FAMILY};
use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::iter::once;

type Drawn<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;
type Chart<'a, DB, X> = ChartContext<'a, DB, Cartesian2d<X, RangedCoordf64>>;

/// Light grey of the grid lines.
const GRID: Rgb = Rgb(0xe6, 0xe6, 0xe6);

/// A tick label: "0", up to three decimals without trailing zeros, or
/// scientific notation below 1e-3 and from 1e4 on.
pub(super) fn tick_label(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1e4 || v.abs() < 1e-3 {
        format!("{v:.0e}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Fills `root` white and draws the panels side by side.
pub(super) fn figure<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    figure: &Figure,
) -> Drawn<DB> {
    root.fill(&WHITE)?;
    let areas = root.split_evenly((1, figure.panels.len().max(1)));
    for (panel, area) in figure.panels.iter().zip(&areas) {
        let window = Window::of(panel);
        let mut builder = ChartBuilder::on(area);
        builder
            .margin(8)
            .margin_right(18)
            .x_label_area_size(44)
            .y_label_area_size(panel.label_width.unwrap_or(60));
        if !panel.title.is_empty() {
            builder.caption(&panel.title, (FAMILY, 17));
        }
        let (x, y) = (window.x.0..window.x.1, window.y.0..window.y.1);
        if window.log_x {
            let chart = builder.build_cartesian_2d(x.log_scale(), y)?;
            contents(root, chart, panel, &window)?;
        } else {
            let chart = builder.build_cartesian_2d(x, y)?;
            contents(root, chart, panel, &window)?;
        }
    }
    Ok(())
}

/// Everything inside one panel's axes, back to front: shading, grid and
/// ticks, reference lines, error bars, bands, lines, legend.
fn contents<'a, DB, X>(
    root: &DrawingArea<DB, Shift>,
    mut chart: Chart<'a, DB, X>,
    panel: &Panel,
    w: &Window,
) -> Drawn<DB>
where
    DB: DrawingBackend + 'a,
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    if let Some((a, b, color)) = panel.shade_x {
        let (a, b) = (a.max(w.x.0), b.min(w.x.1));
        if a < b {
            chart.draw_series(once(Rectangle::new(
                [(a, w.y.0), (b, w.y.1)],
                color.mix(0.12).filled(),
            )))?;
        }
    }
    axes(root, &mut chart, panel, w)?;
    let dashed =
        |points: Vec<Point>| DashedLineSeries::new(points, 4, 3, DARK_GREY.stroke_width(1));
    for &x in panel.x_refs.iter().filter(|x| (w.x.0..=w.x.1).contains(*x)) {
        chart.draw_series(dashed(vec![(x, w.y.0), (x, w.y.1)]))?;
    }
    for &y in panel.y_refs.iter().filter(|y| (w.y.0..=w.y.1).contains(*y)) {
        chart.draw_series(dashed(vec![(w.x.0, y), (w.x.1, y)]))?;
    }
    for bar in &panel.error_bars {
        error_bar(&mut chart, bar, w)?;
    }
    for band in &panel.bands {
        let outline: Vec<Point> = band
            .xs
            .iter()
            .zip(&band.upper)
            .chain(band.xs.iter().zip(&band.lower).rev())
            .map(|(x, y)| (*x, *y))
            .collect();
        let inside = w.polygon(&outline);
        if inside.len() >= 3 {
            chart.draw_series(once(Polygon::new(inside, band.color.mix(0.2).filled())))?;
        }
    }
    for line in &panel.lines {
        draw_line(&mut chart, line, w)?;
    }
    if panel.lines.iter().any(|l| !l.label.is_empty()) {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .margin(8)
            .label_font((FAMILY, 13))
            .background_style(WHITE.mix(0.85))
            .border_style(GRID)
            .draw()?;
    }
    Ok(())
}

/// Grid, ticks and axis labels; category labels (drawn on `root`, left of
/// the axis) in place of numeric y ticks when the panel has them.
fn axes<'a, DB, X>(
    root: &DrawingArea<DB, Shift>,
    chart: &mut Chart<'a, DB, X>,
    panel: &Panel,
    w: &Window,
) -> Drawn<DB>
where
    DB: DrawingBackend + 'a,
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let format = |v: &f64| tick_label(*v);
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(panel.x_label.as_str())
        .y_desc(panel.y_label.as_str())
        .label_style((FAMILY, 13))
        .axis_desc_style((FAMILY, 14))
        .light_line_style(TRANSPARENT)
        .bold_line_style(GRID)
        .x_labels(6)
        .x_label_formatter(&format)
        .y_label_formatter(&format);
    if panel.y_tick_labels.is_some() {
        mesh.y_labels(0);
    }
    mesh.draw()?;
    let style = TextStyle::from((FAMILY, 13).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
    for (y, text) in panel.y_tick_labels.iter().flatten() {
        chart.draw_series(once(PathElement::new(vec![(w.x.0, *y), (w.x.1, *y)], GRID)))?;
        let (px, py) = chart.backend_coord(&(w.x.0, *y));
        root.draw(&Text::new(text.clone(), (px - 6, py), style.clone()))?;
    }
    Ok(())
}

/// A horizontal interval with end caps (±4 px) and a dot of radius 4 at
/// the estimate: filled, or a white disc ringed in the colour.
fn error_bar<'a, DB, X>(chart: &mut Chart<'a, DB, X>, bar: &ErrorBar, w: &Window) -> Drawn<DB>
where
    DB: DrawingBackend + 'a,
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let (lo, hi) = (bar.lo.max(w.x.0), bar.hi.min(w.x.1));
    if !(w.y.0..=w.y.1).contains(&bar.y) || lo > hi {
        return Ok(());
    }
    chart.draw_series(once(PathElement::new(
        vec![(lo, bar.y), (hi, bar.y)],
        bar.color.stroke_width(2),
    )))?;
    for end in [lo, hi] {
        let cap = PathElement::new(vec![(0, -4), (0, 4)], bar.color.stroke_width(1));
        chart.draw_series(once(EmptyElement::at((end, bar.y)) + cap))?;
    }
    if w.contains((bar.x, bar.y)) {
        let at = EmptyElement::at((bar.x, bar.y));
        if bar.filled {
            chart.draw_series(once(at + Circle::new((0, 0), 4, bar.color.filled())))?;
        } else {
            let disc = Circle::new((0, 0), 4, WHITE.filled());
            let ring = Circle::new((0, 0), 4, bar.color.stroke_width(2));
            chart.draw_series(once(at + disc + ring))?;
        }
    }
    Ok(())
}

/// One line, cut to the window, with its legend entry on its first visible
/// run; a run of one point is drawn as a dot.
fn draw_line<'a, DB, X>(chart: &mut Chart<'a, DB, X>, line: &Line, w: &Window) -> Drawn<DB>
where
    DB: DrawingBackend + 'a,
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let style = line.color.stroke_width(2);
    let (color, dashed) = (line.color, line.dashed);
    let mut labelled = line.label.is_empty();
    for run in w.line(&line.points) {
        let anno = if run.len() == 1 {
            chart.draw_series(once(Circle::new(run[0], 3, color.filled())))?
        } else if dashed {
            chart.draw_series(DashedLineSeries::new(run, 6, 4, style))?
        } else {
            chart.draw_series(LineSeries::new(run, style))?
        };
        if !labelled {
            labelled = true;
            anno.label(line.label.as_str()).legend(move |(x, y)| {
                let gap = if dashed { 5 } else { 0 };
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(0, 0), (8, 0)], color.stroke_width(2))
                    + PathElement::new(vec![(8 + gap, 0), (20, 0)], color.stroke_width(2))
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::tick_label;

    #[test]
    fn tick_labels_are_short() {
        let labels: Vec<String> = [0.0, 0.2, -2.5, 0.013, 1e-4, 12000.0, 0.30000000000000004]
            .into_iter()
            .map(tick_label)
            .collect();
        assert_eq!(labels, ["0", "0.2", "-2.5", "0.013", "1e-4", "1e4", "0.3"]);
    }
}
