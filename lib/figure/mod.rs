//! Figures: one plain description ([`Figure`]: panels side by side, each
//! with lines, interval bands, horizontal error bars, reference lines and a
//! shaded x-interval) drawn by [plotters](https://docs.rs/plotters) to both
//! `<stem>.svg` (vector, for papers) and `<stem>.png` (bitmap, for the
//! README), each written atomically.
//!
//! Text in the PNG is rasterised with `ab_glyph` from DejaVu Sans, read once
//! from the system (Debian's `fonts-dejavu-core`, which
//! `scripts/system-deps.sh` installs) or from the file named by
//! `TASER_FONT`; no fontconfig is needed. The SVG names the family
//! `sans-serif` and leaves the glyphs to the viewer.
//!
//! Every coordinate is in data units; a panel's axes cover its data (plus
//! 5% above and below) unless its ranges are fixed, and whatever falls
//! outside fixed ranges is clipped ([`clip`]).
pub mod clip;
mod render;

use crate::error::{Error, Result};
use crate::fsutil::{create_parent_dir, write_atomically};
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub use plotters::style::RGBColor as Rgb;

/// A qualitative palette (colour-blind friendly, Okabe–Ito).
pub const PALETTE: [Rgb; 8] = [
    Rgb(0x00, 0x72, 0xB2),
    Rgb(0xD5, 0x5E, 0x00),
    Rgb(0x00, 0x9E, 0x73),
    Rgb(0xCC, 0x79, 0xA7),
    Rgb(0xE6, 0x9F, 0x00),
    Rgb(0x56, 0xB4, 0xE9),
    Rgb(0xF0, 0xE4, 0x42),
    Rgb(0x00, 0x00, 0x00),
];
/// Black, for reference curves (the true function, p_d).
pub const INK: Rgb = Rgb(0x00, 0x00, 0x00);
/// Mid grey, for baselines and shading.
pub const GREY: Rgb = Rgb(0x99, 0x99, 0x99);
/// Dark grey, for reference lines and constants.
pub const DARK_GREY: Rgb = Rgb(0x55, 0x55, 0x55);

/// One line of a panel, with its legend entry. A non-finite point breaks
/// the line; a line of one point is drawn as a dot.
#[derive(Debug, Clone)]
pub struct Line {
    pub label: String,
    /// (x, y) in data units, in drawing order.
    pub points: Vec<(f64, f64)>,
    pub color: Rgb,
    pub dashed: bool,
}

/// A band filled between `lower` and `upper` at the same `xs` (an interval
/// around a line), drawn at 20% opacity.
#[derive(Debug, Clone)]
pub struct Band {
    pub xs: Vec<f64>,
    pub lower: Vec<f64>,
    pub upper: Vec<f64>,
    pub color: Rgb,
}

/// A point estimate with a horizontal interval (one line of a forest plot):
/// a segment from `lo` to `hi` at height `y`, with end caps and a dot at `x`.
#[derive(Debug, Clone)]
pub struct ErrorBar {
    pub y: f64,
    pub x: f64,
    pub lo: f64,
    pub hi: f64,
    pub color: Rgb,
    /// Dot filled when true, hollow otherwise (e.g. "interval excludes 0").
    pub filled: bool,
}

/// One plot area.
#[derive(Debug, Clone, Default)]
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub lines: Vec<Line>,
    pub bands: Vec<Band>,
    /// Fixed axis ranges; computed from the data when `None`.
    pub x_range: Option<(f64, f64)>,
    pub y_range: Option<(f64, f64)>,
    /// An x-interval shaded at 12% opacity (e.g. where the training data lie).
    pub shade_x: Option<(f64, f64, Rgb)>,
    /// Logarithmic x axis (only x > 0 is drawn).
    pub log_x: bool,
    /// Horizontal intervals (forest plots).
    pub error_bars: Vec<ErrorBar>,
    /// Text labels at given y values, replacing the numeric y ticks
    /// (categorical axes such as the rows of a forest plot).
    pub y_tick_labels: Option<Vec<(f64, String)>>,
    /// Dashed dark-grey reference lines: vertical at these x values,
    /// horizontal at these y values (e.g. Δ = 0).
    pub x_refs: Vec<f64>,
    pub y_refs: Vec<f64>,
    /// Width in pixels of the y-label area (wider for long category
    /// labels); 60 when `None`.
    pub label_width: Option<u32>,
}

/// Panels side by side, each `panel_width` × `height` pixels (the PNG's
/// size; the SVG's viewport).
#[derive(Debug, Clone)]
pub struct Figure {
    pub panels: Vec<Panel>,
    pub panel_width: u32,
    pub height: u32,
}

impl Figure {
    /// The whole image in pixels: (panels × panel width, height).
    pub fn size(&self) -> (u32, u32) {
        (
            self.panel_width * self.panels.len().max(1) as u32,
            self.height,
        )
    }
}

/// The font family every text of a figure is set in.
const FAMILY: &str = "sans-serif";
/// Where DejaVu Sans lives on Debian/Ubuntu and on Fedora/RHEL.
const FONT_PATHS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
];

/// Registers DejaVu Sans (or `TASER_FONT`) as [`FAMILY`] with plotters,
/// once per process; later calls return the first outcome.
fn register_font() -> Result<()> {
    static FONT: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    let outcome = FONT.get_or_init(|| {
        let candidates: Vec<PathBuf> = match std::env::var_os("TASER_FONT") {
            Some(p) => vec![PathBuf::from(p)],
            None => FONT_PATHS.iter().map(PathBuf::from).collect(),
        };
        let path = candidates
            .iter()
            .find(|p| p.is_file())
            .ok_or_else(|| format!("no font file at {candidates:?}"))?;
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        // plotters keeps fonts for the life of the process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font(FAMILY, FontStyle::Normal, bytes)
            .map_err(|_| format!("{} is not a TrueType/OpenType font", path.display()))
    });
    outcome.clone().map_err(|reason| Error::MissingInput {
        path: PathBuf::from(FONT_PATHS[0]),
        reason,
        fix: "install DejaVu Sans (`apt-get install fonts-dejavu-core`, which \
              `make setup` does) or set TASER_FONT to a .ttf file"
            .into(),
    })
}

/// Draws `figure` to `<stem>.svg` and `<stem>.png` (creating the folder),
/// each atomically (a temporary sibling, then a rename), and returns the
/// two paths (SVG first).
///
/// Errors: [`Error::MissingInput`] when no font can be found;
/// [`Error::Io`] when the folder cannot be made; [`Error::OutputFailed`]
/// when plotters cannot draw or write a file.
pub fn draw(figure: &Figure, stem: &Path) -> Result<[PathBuf; 2]> {
    register_font()?;
    create_parent_dir(stem)?;
    let size = figure.size();
    let svg = stem.with_extension("svg");
    write_atomically(&svg, |tmp| {
        let root = SVGBackend::new(tmp, size).into_drawing_area();
        render::figure(&root, figure).map_err(|e| failed(&svg, e))?;
        root.present().map_err(|e| failed(&svg, e))
    })?;
    let png = stem.with_extension("png");
    write_atomically(&png, |tmp| {
        let root = BitMapBackend::new(tmp, size).into_drawing_area();
        render::figure(&root, figure).map_err(|e| failed(&png, e))?;
        root.present().map_err(|e| failed(&png, e))
    })?;
    Ok([svg, png])
}

fn failed(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::OutputFailed {
        path: path.to_path_buf(),
        reason: format!("drawing the figure: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Width and height from a PNG's IHDR chunk (bytes 16..24, big-endian).
    fn png_size(bytes: &[u8]) -> (u32, u32) {
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
        assert_eq!(&bytes[12..16], b"IHDR");
        let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        (be(&bytes[16..20]), be(&bytes[20..24]))
    }

    fn sine(label: &str) -> Line {
        Line {
            label: label.into(),
            points: (0..10).map(|i| (i as f64, (i as f64).sin())).collect(),
            color: PALETTE[0],
            dashed: false,
        }
    }

    #[test]
    fn draw_writes_an_svg_and_a_png_of_the_figure_size() {
        let dir = tempfile::tempdir().unwrap();
        let panel = Panel {
            title: "a < b".into(),
            lines: vec![sine("sin x"), {
                let mut l = sine("sin x, dashed & broken");
                l.points[4].1 = f64::NAN;
                l.dashed = true;
                l
            }],
            bands: vec![Band {
                xs: vec![0.0, 9.0],
                lower: vec![-0.5, -0.5],
                upper: vec![0.5, 0.5],
                color: PALETTE[1],
            }],
            shade_x: Some((2.0, 4.0, GREY)),
            y_refs: vec![0.0],
            ..Default::default()
        };
        let figure = Figure {
            panels: vec![
                panel.clone(),
                Panel {
                    log_x: true,
                    ..panel
                },
            ],
            panel_width: 300,
            height: 200,
        };
        let [svg, png] = draw(&figure, &dir.path().join("sub/fig")).unwrap();
        assert_eq!(svg, dir.path().join("sub/fig.svg"));
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.starts_with("<svg") && text.trim_end().ends_with("</svg>"));
        assert!(text.contains("sin x, dashed &amp; broken") && text.contains("a &lt; b"));
        assert!(text.contains("opacity=\"0.2\""), "the band is drawn");
        assert!(!text.contains("NaN"));
        assert_eq!(png_size(&std::fs::read(&png).unwrap()), (600, 200));
        let names: Vec<String> = std::fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "no temporary file is left: {names:?}");
    }

    #[test]
    fn forest_panel_draws_bars_labels_and_reference_line() {
        let bar = |y: f64, x: f64, lo: f64, hi: f64, filled: bool| ErrorBar {
            y,
            x,
            lo,
            hi,
            color: PALETTE[y as usize],
            filled,
        };
        let panel = Panel {
            error_bars: vec![
                bar(0.0, 1.0, 0.5, 1.5, true),
                bar(1.0, 0.0, 0.0, 0.0, false),
            ],
            y_tick_labels: Some(vec![(0.0, "PGD".into()), (1.0, "A & B".into())]),
            y_range: Some((-0.7, 1.7)),
            x_refs: vec![0.0],
            label_width: Some(120),
            ..Default::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let figure = Figure {
            panels: vec![panel],
            panel_width: 400,
            height: 200,
        };
        let [svg, png] = draw(&figure, &dir.path().join("forest")).unwrap();
        let text = std::fs::read_to_string(svg).unwrap();
        // A filled dot for the first bar; a white disc ringed in colour for
        // the hollow one.
        assert_eq!(text.matches("<circle").count(), 3, "{text}");
        assert!(
            text.contains("\nPGD\n</text>") && text.contains("\nA &amp; B\n"),
            "{text}"
        );
        assert!(!text.contains("NaN"));
        assert_eq!(png_size(&std::fs::read(png).unwrap()), (400, 200));
    }

    #[test]
    fn a_missing_folder_is_created_and_an_unwritable_stem_fails() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain-file");
        std::fs::write(&file, b"x").unwrap();
        let figure = Figure {
            panels: vec![Panel::default()],
            panel_width: 100,
            height: 100,
        };
        let err = draw(&figure, &file.join("fig")).unwrap_err();
        assert!(err.to_string().contains("plain-file"), "{err}");
    }
}
