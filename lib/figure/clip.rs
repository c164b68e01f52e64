//! The visible window of a panel, and lines and polygons cut to it.
//! plotters draws whatever it is given, also outside the plotting area, so
//! data beyond a fixed range (a diverging prediction, the first steps of a
//! risk curve) are clipped here first: lines by Liang–Barsky, polygons by
//! Sutherland–Hodgman, both in axis space (log₁₀ x on a log axis).
use super::Panel;

/// A point in data units.
pub type Point = (f64, f64);

/// The extent of a panel's axes in data units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub x: (f64, f64),
    pub y: (f64, f64),
    /// Logarithmic x axis (both x bounds > 0).
    pub log_x: bool,
}

/// (min, max) of the finite values, `None` when there are none.
fn extent(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((a, b)) => Some((a.min(v), b.max(v))),
        })
}

impl Window {
    /// The window of `panel`: its fixed ranges, else the extent of its data
    /// (finite points of lines, bands, error bars, reference lines). A single x value is
    /// widened by ±0.5 (×/÷ 2 on a log axis); y is padded by 5% of its
    /// extent (±0.5 when it has none).
    pub fn of(panel: &Panel) -> Window {
        let log_x = panel.log_x;
        let drawn = || {
            panel
                .lines
                .iter()
                .flat_map(|l| l.points.iter())
                .filter(|p| p.0.is_finite() && p.1.is_finite())
        };
        let xs = drawn()
            .map(|p| p.0)
            .chain(panel.bands.iter().flat_map(|b| b.xs.iter().copied()))
            .chain(panel.error_bars.iter().flat_map(|e| [e.lo, e.hi, e.x]))
            .chain(panel.x_refs.iter().copied())
            .filter(|x| !log_x || *x > 0.0);
        let ys = drawn()
            .map(|p| p.1)
            .chain(
                panel
                    .bands
                    .iter()
                    .flat_map(|b| b.lower.iter().chain(&b.upper).copied()),
            )
            .chain(panel.error_bars.iter().map(|e| e.y))
            .chain(panel.y_refs.iter().copied());
        let x = panel.x_range.unwrap_or_else(|| match extent(xs) {
            Some((a, b)) if b - a >= 1e-12 => (a, b),
            Some((a, _)) if log_x => (a / 2.0, a * 2.0),
            Some((a, _)) => (a - 0.5, a + 0.5),
            None if log_x => (1.0, 10.0),
            None => (0.0, 1.0),
        });
        let y = panel.y_range.unwrap_or_else(|| match extent(ys) {
            Some((a, b)) if b - a >= 1e-12 => (a - 0.05 * (b - a), b + 0.05 * (b - a)),
            Some((a, _)) => (a - 0.5, a + 0.5),
            None => (0.0, 1.0),
        });
        Window { x, y, log_x }
    }

    fn axis_of(&self, p: Point) -> Point {
        if self.log_x {
            (p.0.log10(), p.1)
        } else {
            p
        }
    }

    fn data_of(&self, p: Point) -> Point {
        if self.log_x {
            (10f64.powf(p.0), p.1)
        } else {
            p
        }
    }

    fn axis_x(&self) -> (f64, f64) {
        (
            self.axis_of((self.x.0, 0.0)).0,
            self.axis_of((self.x.1, 0.0)).0,
        )
    }

    /// Whether `p` lies inside the window (edges included).
    pub fn contains(&self, p: Point) -> bool {
        (self.x.0..=self.x.1).contains(&p.0) && (self.y.0..=self.y.1).contains(&p.1)
    }

    /// The visible runs of a polyline: cut at the window's edges and at
    /// non-finite points (and x ≤ 0 on a log axis). A lone finite point
    /// inside the window is a run of one point.
    pub fn line(&self, points: &[Point]) -> Vec<Vec<Point>> {
        let usable = |p: &Point| p.0.is_finite() && p.1.is_finite() && (!self.log_x || p.0 > 0.0);
        if let [p] = points {
            return if usable(p) && self.contains(*p) {
                vec![vec![*p]]
            } else {
                Vec::new()
            };
        }
        let mut runs: Vec<Vec<Point>> = Vec::new();
        for pair in points.windows(2) {
            if !usable(&pair[0]) || !usable(&pair[1]) {
                continue;
            }
            let (a, b) = (self.axis_of(pair[0]), self.axis_of(pair[1]));
            let Some((s, e)) = clip_segment(a, b, self.axis_x(), self.y) else {
                continue;
            };
            let (s, e) = (self.data_of(s), self.data_of(e));
            match runs.last_mut() {
                Some(run) if s == pair[0] && run.last() == Some(&pair[0]) => run.push(e),
                _ => runs.push(vec![s, e]),
            }
        }
        runs
    }

    /// The part of a polygon inside the window (empty when none is).
    pub fn polygon(&self, points: &[Point]) -> Vec<Point> {
        let mut poly: Vec<Point> = points
            .iter()
            .filter(|p| p.0.is_finite() && p.1.is_finite() && (!self.log_x || p.0 > 0.0))
            .map(|p| self.axis_of(*p))
            .collect();
        let (x, y) = (self.axis_x(), self.y);
        for (axis, bound, keep_above) in [
            (0, x.0, true),
            (0, x.1, false),
            (1, y.0, true),
            (1, y.1, false),
        ] {
            poly = clip_half_plane(&poly, axis, bound, keep_above);
        }
        poly.into_iter().map(|p| self.data_of(p)).collect()
    }
}

/// Liang–Barsky: the part of segment a→b inside [x0, x1] × [y0, y1].
fn clip_segment(a: Point, b: Point, x: (f64, f64), y: (f64, f64)) -> Option<(Point, Point)> {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let (mut t0, mut t1) = (0.0f64, 1.0f64);
    for (p, q) in [
        (-dx, a.0 - x.0),
        (dx, x.1 - a.0),
        (-dy, a.1 - y.0),
        (dy, y.1 - a.1),
    ] {
        if p == 0.0 {
            if q < 0.0 {
                return None;
            }
        } else if p < 0.0 {
            t0 = t0.max(q / p);
        } else {
            t1 = t1.min(q / p);
        }
    }
    (t0 <= t1).then(|| {
        let at = |t: f64| {
            if t == 0.0 {
                a
            } else if t == 1.0 {
                b
            } else {
                (a.0 + t * dx, a.1 + t * dy)
            }
        };
        (at(t0), at(t1))
    })
}

/// One Sutherland–Hodgman step: keeps the side of `coordinate[axis] =
/// bound` above it (`keep_above`) or below it.
fn clip_half_plane(poly: &[Point], axis: usize, bound: f64, keep_above: bool) -> Vec<Point> {
    let value = |p: &Point| if axis == 0 { p.0 } else { p.1 };
    let inside = |p: &Point| {
        if keep_above {
            value(p) >= bound
        } else {
            value(p) <= bound
        }
    };
    let cross = |a: &Point, b: &Point| {
        let t = (bound - value(a)) / (value(b) - value(a));
        (a.0 + t * (b.0 - a.0), a.1 + t * (b.1 - a.1))
    };
    let mut out = Vec::with_capacity(poly.len() + 2);
    for (i, b) in poly.iter().enumerate() {
        let a = &poly[(i + poly.len() - 1) % poly.len()];
        match (inside(a), inside(b)) {
            (true, true) => out.push(*b),
            (true, false) => out.push(cross(a, b)),
            (false, true) => {
                out.push(cross(a, b));
                out.push(*b);
            }
            (false, false) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::figure::{ErrorBar, Line, PALETTE};

    fn window(x: (f64, f64), y: (f64, f64)) -> Window {
        Window { x, y, log_x: false }
    }

    #[test]
    fn the_window_covers_the_data_pads_y_and_widens_a_single_x() {
        let panel = Panel {
            lines: vec![Line {
                label: String::new(),
                points: vec![(0.0, 0.0), (2.0, 10.0), (f64::NAN, 50.0)],
                color: PALETTE[0],
                dashed: false,
            }],
            ..Default::default()
        };
        assert_eq!(Window::of(&panel), window((0.0, 2.0), (-0.5, 10.5)));
        let forest = Panel {
            error_bars: vec![ErrorBar {
                y: 0.0,
                x: 0.0,
                lo: 0.0,
                hi: 0.0,
                color: PALETTE[0],
                filled: false,
            }],
            ..Default::default()
        };
        assert_eq!(Window::of(&forest), window((-0.5, 0.5), (-0.5, 0.5)));
        let log = Panel {
            log_x: true,
            x_refs: vec![0.0, 0.1],
            ..Default::default()
        };
        assert_eq!(Window::of(&log).x, (0.05, 0.2));
    }

    #[test]
    fn lines_are_cut_at_the_edges_and_at_gaps() {
        let w = window((0.0, 10.0), (0.0, 1.0));
        // Leaves through the top at x = 2, comes back at x = 4.
        let runs = w.line(&[
            (0.0, 0.0),
            (1.0, 0.5),
            (3.0, 1.5),
            (5.0, 0.5),
            (f64::NAN, 0.0),
            (6.0, 0.2),
            (7.0, 0.2),
        ]);
        let close = |a: Point, b: Point| (a.0 - b.0).abs() < 1e-12 && (a.1 - b.1).abs() < 1e-12;
        assert_eq!(runs.len(), 3, "{runs:?}");
        assert_eq!(runs[0].len(), 3);
        assert!(close(runs[0][2], (2.0, 1.0)) && close(runs[1][0], (4.0, 1.0)));
        assert_eq!(runs[2], vec![(6.0, 0.2), (7.0, 0.2)]);
        assert_eq!(w.line(&[(11.0, 0.5)]), Vec::<Vec<Point>>::new());
        assert_eq!(w.line(&[(1.0, 0.5)]), vec![vec![(1.0, 0.5)]]);
    }

    #[test]
    fn polygons_keep_only_their_part_inside() {
        let w = window((0.0, 1.0), (0.0, 1.0));
        let square = [(-1.0, -1.0), (2.0, -1.0), (2.0, 2.0), (-1.0, 2.0)];
        let mut clipped = w.polygon(&square);
        clipped.sort_by(|a, b| a.partial_cmp(b).unwrap());
        assert_eq!(
            clipped,
            vec![(0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0)]
        );
        assert!(w.polygon(&[(2.0, 2.0), (3.0, 2.0), (3.0, 3.0)]).is_empty());
        // On a log axis the cut is straight in log₁₀ x: a band from x = 0.01
        // to 100 cut at x = 1 keeps its height at the cut.
        let log = Window {
            x: (1.0, 1000.0),
            y: (0.0, 1.0),
            log_x: true,
        };
        let band = log.polygon(&[(0.01, 0.2), (100.0, 0.2), (100.0, 0.8), (0.01, 0.8)]);
        assert!(band
            .iter()
            .any(|p| (p.0 - 1.0).abs() < 1e-9 && (p.1 - 0.2).abs() < 1e-12));
    }
}
