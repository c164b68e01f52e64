//! Reports rebuilt from finished runs: tables (CSV, Markdown) and figures
//! (SVG). [`toy`] rebuilds TASER Table 1 and Figure 2 from the toy runs;
//! [`score_toy`] SCORE's Figures 1–3 from the toy-score runs.
pub mod score_toy;
pub mod svg;
pub mod toy;

use crate::error::{Error, Result};
use crate::fsutil::write_bytes_atomically;
use std::path::Path;

/// Writes a text file atomically, creating its folder.
pub fn write_text(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    write_bytes_atomically(path, text.as_bytes())
}

/// Mean and sample standard deviation (n − 1; 0 for one value).
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = if values.len() > 1 {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}
