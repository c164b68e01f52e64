//! Reading one evaluation directory written by `attack`: `per_sample.csv`
//! (index, label, clean_correct, one 0/1 column per attack, worst_case),
//! `summary.csv` (one row: subset fingerprint, accuracies, timings…) and,
//! when it can be found, the evaluated checkpoint's `model.json` sidecar
//! (hyperparameters for pairing by rule, train_seconds for overhead).
use crate::error::{Error, Result};
use crate::layout;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Columns of per_sample.csv that are not attacks.
const NON_ATTACK: [&str; 4] = ["index", "label", "clean_correct", "worst_case"];

/// One evaluation: per-point 0/1 outcomes and what is known about the model.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub dir: PathBuf,
    /// The per_sample.csv it was read from (named in errors).
    pub per_sample: PathBuf,
    /// The `index` column, in file order.
    pub index: Vec<String>,
    /// Outcomes per metric: "clean", each attack column, "worst_case".
    pub outcomes: BTreeMap<String, Vec<f64>>,
    /// Attack column names in file order.
    pub attacks: Vec<String>,
    /// The summary.csv row (column → value).
    pub summary: BTreeMap<String, String>,
    pub fingerprint: String,
    /// Flattened hyperparameters from the sidecar (`config.*` overlaid by
    /// the non-null `resolved.*`, plus the sidecar's `seed`, `dataset`) and
    /// the summary's columns as `eval.<column>`.
    pub attributes: BTreeMap<String, Value>,
    /// Training wall-clock seconds (sidecar `metrics.train_seconds`).
    pub train_seconds: Option<f64>,
    /// The sidecar that was read, if any.
    pub sidecar: Option<PathBuf>,
}

fn corrupt(path: &Path, reason: impl Into<String>, fix: &str) -> Error {
    Error::CorruptInput {
        path: path.to_path_buf(),
        reason: reason.into(),
        fix: fix.into(),
    }
}

const FIX_RERUN: &str = "rerun `attack` on this checkpoint with --out pointing at this directory";

fn read_csv(path: &Path) -> Result<(Vec<String>, Vec<Vec<String>>)> {
    if !path.is_file() {
        return Err(Error::MissingInput {
            path: path.to_path_buf(),
            reason: "no such file".into(),
            fix: format!(
                "give a directory written by `attack` (it holds {} and {})",
                layout::PER_SAMPLE,
                layout::SUMMARY
            ),
        });
    }
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(path)
        .map_err(|e| corrupt(path, e.to_string(), FIX_RERUN))?;
    let headers: Vec<String> = rdr
        .headers()
        .map_err(|e| corrupt(path, e.to_string(), FIX_RERUN))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let mut rows = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| corrupt(path, e.to_string(), FIX_RERUN))?;
        rows.push(rec.iter().map(|v| v.trim().to_string()).collect());
    }
    Ok((headers, rows))
}

/// Looks up the sidecar: `sidecar_hint` if given and present, else the
/// summary's `checkpoint` column with `.json` (as given, then relative to
/// the evaluation directory and its parent), else `model.json` in the
/// evaluation directory's parent.
fn find_sidecar(
    dir: &Path,
    summary: &BTreeMap<String, String>,
    hint: Option<&Path>,
) -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(h) = hint {
        candidates.push(h.to_path_buf());
    }
    if let Some(ck) = summary.get("checkpoint").filter(|c| !c.is_empty()) {
        let side = crate::checkpoint::sidecar_path(Path::new(ck));
        candidates.push(side.clone());
        if side.is_relative() {
            candidates.push(dir.join(&side));
            if let Some(p) = dir.parent() {
                candidates.push(p.join(&side));
            }
        }
    }
    if let Some(p) = dir.parent() {
        candidates.push(p.join(layout::MODEL_SIDECAR));
    }
    candidates.into_iter().find(|c| c.is_file())
}

fn flatten_sidecar(v: &Value, into: &mut BTreeMap<String, Value>) {
    let hp = v.get("hyperparameters");
    if let Some(Value::Object(cfg)) = hp.and_then(|h| h.get("config")) {
        for (k, x) in cfg {
            into.insert(k.clone(), x.clone());
        }
    }
    if let Some(Value::Object(res)) = hp.and_then(|h| h.get("resolved")) {
        for (k, x) in res {
            if !x.is_null() {
                into.insert(k.clone(), x.clone());
            }
        }
    }
    for k in ["seed", "dataset"] {
        if let Some(x) = v.get(k) {
            into.insert(k.to_string(), x.clone());
        }
    }
}

/// What `attack` wrote in an evaluation directory, parsed: per_sample.csv
/// (outcomes per point) and summary.csv (one row).
struct AttackOutputs {
    per_sample: PathBuf,
    index: Vec<String>,
    outcomes: BTreeMap<String, Vec<f64>>,
    attacks: Vec<String>,
    summary: BTreeMap<String, String>,
    fingerprint: String,
}

/// Reads `dir/per_sample.csv` and `dir/summary.csv`. Every outcome must be
/// 0 or 1, `index` unique, and the summary's `subset_size` (when given)
/// the number of rows.
fn read_attack_outputs(dir: &Path) -> Result<AttackOutputs> {
    let per_sample = dir.join(layout::PER_SAMPLE);
    let (headers, rows) = read_csv(&per_sample)?;
    for need in ["index", "clean_correct"] {
        if !headers.iter().any(|h| h == need) {
            return Err(corrupt(
                &per_sample,
                format!("column `{need}` is missing (header: {})", headers.join(",")),
                FIX_RERUN,
            ));
        }
    }
    if rows.is_empty() {
        return Err(corrupt(&per_sample, "no data rows", FIX_RERUN));
    }
    let col = |name: &str| headers.iter().position(|h| h == name);
    let idx_col = col("index").expect("checked above");
    let index: Vec<String> = rows.iter().map(|r| r[idx_col].clone()).collect();
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = index.iter().find(|i| !seen.insert(i.as_str())) {
        return Err(corrupt(
            &per_sample,
            format!("index {dup} appears twice"),
            FIX_RERUN,
        ));
    }
    let attacks: Vec<String> = headers
        .iter()
        .filter(|h| !NON_ATTACK.contains(&h.as_str()))
        .cloned()
        .collect();
    let mut outcomes = BTreeMap::new();
    let metric_cols = std::iter::once(("clean".to_string(), "clean_correct"))
        .chain(attacks.iter().map(|a| (a.clone(), a.as_str())))
        .chain(col("worst_case").map(|_| ("worst_case".to_string(), "worst_case")));
    for (metric, column) in metric_cols {
        let c = col(column).expect("column from header");
        let mut v = Vec::with_capacity(rows.len());
        for (line, r) in rows.iter().enumerate() {
            match r[c].as_str() {
                "0" => v.push(0.0),
                "1" => v.push(1.0),
                other => {
                    return Err(corrupt(
                        &per_sample,
                        format!(
                            "line {}: column `{column}` is `{other}`, expected 0 or 1",
                            line + 2
                        ),
                        FIX_RERUN,
                    ))
                }
            }
        }
        outcomes.insert(metric, v);
    }

    let summary_path = dir.join(layout::SUMMARY);
    let (sh, srows) = read_csv(&summary_path)?;
    if srows.len() != 1 {
        return Err(corrupt(
            &summary_path,
            format!("expected one data row, found {}", srows.len()),
            FIX_RERUN,
        ));
    }
    let summary: BTreeMap<String, String> = sh.into_iter().zip(srows[0].iter().cloned()).collect();
    let fingerprint = summary
        .get("subset_fingerprint")
        .filter(|f| !f.is_empty())
        .cloned()
        .ok_or_else(|| {
            corrupt(
                &summary_path,
                "column `subset_fingerprint` is missing or empty",
                FIX_RERUN,
            )
        })?;
    if let Some(n) = summary
        .get("subset_size")
        .and_then(|s| s.parse::<usize>().ok())
    {
        if n != index.len() {
            return Err(corrupt(
                &per_sample,
                format!(
                    "{} rows but summary.csv says subset_size = {n}",
                    index.len()
                ),
                FIX_RERUN,
            ));
        }
    }

    Ok(AttackOutputs {
        per_sample,
        index,
        outcomes,
        attacks,
        summary,
        fingerprint,
    })
}

/// The sidecar's flattened hyperparameters (see [`flatten_sidecar`]) and
/// its `metrics.train_seconds`.
fn read_sidecar(side: &Path) -> Result<(BTreeMap<String, Value>, Option<f64>)> {
    let text = std::fs::read_to_string(side).map_err(|e| Error::io(side, e))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| {
        corrupt(
            side,
            format!("not JSON: {e}"),
            "point at the model.json written by `train`/`finetune`",
        )
    })?;
    let mut attributes = BTreeMap::new();
    flatten_sidecar(&v, &mut attributes);
    let train_seconds = v
        .get("metrics")
        .and_then(|m| m.get("train_seconds"))
        .and_then(Value::as_f64);
    Ok((attributes, train_seconds))
}

impl Evaluation {
    /// Reads `dir/per_sample.csv`, `dir/summary.csv` and the sidecar:
    /// `sidecar_hint` if present, else the summary's `checkpoint` with
    /// `.json` (as given, then relative to `dir` and its parent), else
    /// `model.json` in `dir`'s parent. Every outcome must be 0 or 1 and
    /// `index` unique.
    ///
    /// Errors: [`Error::MissingInput`] for a missing CSV file;
    /// [`Error::CorruptInput`] for malformed CSV or sidecar JSON;
    /// [`Error::Io`] when the sidecar cannot be read.
    pub fn load(dir: &Path, sidecar_hint: Option<&Path>) -> Result<Evaluation> {
        let AttackOutputs {
            per_sample,
            index,
            outcomes,
            attacks,
            summary,
            fingerprint,
        } = read_attack_outputs(dir)?;
        let sidecar = find_sidecar(dir, &summary, sidecar_hint);
        let (mut attributes, train_seconds) = match &sidecar {
            Some(side) => read_sidecar(side)?,
            None => (BTreeMap::new(), None),
        };
        for (k, x) in &summary {
            let v = x
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .unwrap_or_else(|| Value::String(x.clone()));
            attributes.insert(format!("eval.{k}"), v);
        }
        Ok(Evaluation {
            dir: dir.to_path_buf(),
            per_sample,
            index,
            outcomes,
            attacks,
            summary,
            fingerprint,
            attributes,
            train_seconds,
            sidecar,
        })
    }

    /// Number of evaluated points.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when no point was evaluated (never after [`Evaluation::load`]).
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

/// Refuses a pair that was not evaluated on the same points in the same
/// order: same `subset_fingerprint` and identical `index` columns. Pairing
/// is point by point, so anything else would be a silent misalignment.
pub fn check_pairable(baseline: &Evaluation, treatment: &Evaluation) -> Result<()> {
    let fix = "evaluate both checkpoints with the same `attack --subset-size/--subset-seed` \
               (the same subset_fingerprint) and pair only such evaluations";
    if baseline.fingerprint != treatment.fingerprint {
        return Err(corrupt(
            &treatment.per_sample,
            format!(
                "baseline and treatment were evaluated on different subsets: this one on {}, \
                 its baseline {} on {}; the paired bootstrap needs both on the same points",
                treatment.fingerprint,
                baseline.per_sample.display(),
                baseline.fingerprint
            ),
            fix,
        ));
    }
    if baseline.index != treatment.index {
        let reason = if baseline.len() != treatment.len() {
            format!(
                "{} rows but its baseline {} has {}",
                treatment.len(),
                baseline.per_sample.display(),
                baseline.len()
            )
        } else {
            let k = (0..baseline.len())
                .find(|&k| baseline.index[k] != treatment.index[k])
                .unwrap_or(0);
            format!(
                "row {} has index {} but row {} of its baseline {} has index {}",
                k + 1,
                treatment.index[k],
                k + 1,
                baseline.per_sample.display(),
                baseline.index[k]
            )
        };
        return Err(corrupt(&treatment.per_sample, reason, fix));
    }
    Ok(())
}
