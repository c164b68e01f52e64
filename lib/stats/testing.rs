//! In-memory evaluations for the unit tests of pairing and average rows
//! (no files: what [`Evaluation::load`] would have read, built directly).
use super::eval::Evaluation;
use super::measurement::Measurement;
use super::metrics::{CLEAN, WORST_CASE};
use crate::layout;
use serde_json::Value;
use std::path::PathBuf;

/// An evaluation in folder `dir` on subset `fingerprint` with points
/// indexed 0..n, the given per-point 0/1 outcomes per metric (`clean` and
/// attacks, in column order) and sidecar attributes (a JSON object). Its
/// measurement: digits, L∞, ε = 0.2, those attacks, that subset.
pub fn evaluation(
    dir: &str,
    fingerprint: &str,
    columns: &[(&str, &[u8])],
    attributes: Value,
) -> Evaluation {
    let n = columns[0].1.len();
    let dir = PathBuf::from(dir);
    let attacks: Vec<String> = columns
        .iter()
        .map(|(m, _)| m.to_string())
        .filter(|m| m != CLEAN && m != WORST_CASE)
        .collect();
    Evaluation {
        per_sample: dir.join(layout::PER_SAMPLE),
        dir,
        index: (0..n).map(|i| i.to_string()).collect(),
        outcomes: columns
            .iter()
            .map(|(m, v)| (m.to_string(), v.iter().map(|x| f64::from(*x)).collect()))
            .collect(),
        measurement: Measurement {
            dataset: Some("digits".into()),
            norm: Some("linf".into()),
            eps: Some(0.2),
            attacks: attacks.clone(),
            subset_fingerprint: fingerprint.to_string(),
            settings: Default::default(),
        },
        attacks,
        summary: Default::default(),
        fingerprint: fingerprint.to_string(),
        attributes: match attributes {
            Value::Object(m) => m.into_iter().collect(),
            _ => Default::default(),
        },
        train_seconds: None,
        step_overhead: None,
        sidecar: None,
    }
}
