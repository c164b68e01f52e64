//! Images stored as gzip-compressed CSV text (no header, parsed by
//! [`crate::csvio::parse_headerless`]): one row per image, its pixel
//! values (integers 0..`max_value`) then its integer label. The format of
//! `digits.csv.gz` (64 pixels 0..16) and `mnist_5k.csv.gz` (784 pixels 0..255).
use crate::csvio;
use crate::error::{Error, Result};
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::Path;

/// What one file must hold.
#[derive(Debug, Clone, Copy)]
pub struct CsvFormat {
    /// Pixel values per row (before the label).
    pub pixels: usize,
    /// Largest pixel value; pixels are divided by it into [0,1].
    pub max_value: f64,
    /// Labels are 0..num_classes−1.
    pub num_classes: usize,
    /// Rows the file must hold.
    pub num_samples: usize,
    /// How to get a sound copy (part of every error).
    pub fix: &'static str,
}

impl CsvFormat {
    fn corrupt(&self, path: &Path, reason: String) -> Error {
        Error::CorruptInput {
            path: path.to_path_buf(),
            reason,
            fix: self.fix.to_string(),
        }
    }
}

/// Reads the gzip-compressed text file `path`.
///
/// Errors: [`Error::MissingInput`] when it cannot be opened,
/// [`Error::CorruptInput`] when it is not gzip-compressed UTF-8 text; both
/// name the file and `format.fix`.
pub fn read_gz_text(path: &Path, format: &CsvFormat) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::MissingInput {
        path: path.to_path_buf(),
        reason: e.to_string(),
        fix: format.fix.to_string(),
    })?;
    decode_gz_text(&bytes, path, format)
}

/// Decompresses `bytes` (read from `path`, named in errors) into text.
///
/// Errors: [`Error::CorruptInput`] when they are not gzip-compressed UTF-8.
pub fn decode_gz_text(bytes: &[u8], path: &Path, format: &CsvFormat) -> Result<String> {
    let mut text = String::new();
    GzDecoder::new(bytes)
        .read_to_string(&mut text)
        .map_err(|e| format.corrupt(path, format!("not a readable gzip text file ({e})")))?;
    Ok(text)
}

/// Parses the CSV `text` (read from `path`, named in errors) into pixels
/// scaled to [0,1] (row-major, `num_samples × pixels`) and labels.
///
/// Errors: [`Error::CorruptInput`] for a row with the wrong number of values,
/// a pixel outside 0..max_value (NaN and ±Inf included), a label outside the
/// classes, or a row count other than `num_samples`.
pub fn parse(text: &str, path: &Path, format: &CsvFormat) -> Result<(Vec<f32>, Vec<i64>)> {
    let width = format.pixels + 1;
    let mut pixels = Vec::with_capacity(format.num_samples * format.pixels);
    let mut labels = Vec::with_capacity(format.num_samples);
    let rows: Vec<(u64, Vec<f64>)> = csvio::parse_headerless(text, path, format.fix)?;
    for (line_no, values) in rows {
        if values.len() != width {
            return Err(format.corrupt(
                path,
                format!(
                    "line {line_no} has {} values, expected {width} ({} pixels and a label)",
                    values.len(),
                    format.pixels
                ),
            ));
        }
        for &v in &values[..format.pixels] {
            if !(0.0..=format.max_value).contains(&v) {
                return Err(format.corrupt(
                    path,
                    format!("line {line_no}: pixel {v} outside 0..{}", format.max_value),
                ));
            }
            pixels.push((v / format.max_value) as f32);
        }
        let label = values[format.pixels];
        if !(0.0..format.num_classes as f64).contains(&label) || label.fract() != 0.0 {
            return Err(format.corrupt(
                path,
                format!(
                    "line {line_no}: label {label} is not 0..{}",
                    format.num_classes - 1
                ),
            ));
        }
        labels.push(label as i64);
    }
    if labels.len() != format.num_samples {
        return Err(format.corrupt(
            path,
            format!("{} samples, expected {}", labels.len(), format.num_samples),
        ));
    }
    Ok((pixels, labels))
}
