//! Reading one evaluation directory written by `attack`: `per_sample.csv`
//! (index, label, clean_correct, one 0/1 column per attack, worst_case),
//! `summary.csv` (one row: subset fingerprint, accuracies, timings…) and,
//! when it can be found, the evaluated checkpoint's `model.json` sidecar
//! (hyperparameters for pairing by rule, train_seconds for overhead).
use super::measurement::Measurement;
use crate::attack::results::{read_results, PerSampleTable};
use crate::error::{Error, Result};
use crate::layout::{self, EvalRun};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    /// What was measured: data set, threat model, attacks, points.
    pub measurement: Measurement,
    /// Flattened hyperparameters from the sidecar (`config.*` overlaid by
    /// the non-null `resolved.*`, plus the sidecar's `seed`, `dataset` and
    /// [`STAGE`]) and the summary's columns as `eval.<column>`.
    pub attributes: BTreeMap<String, Value>,
    /// Training wall-clock seconds (sidecar `metrics.train_seconds`).
    pub train_seconds: Option<f64>,
    /// The step's time with its penalty over without it, timed in
    /// isolation (sidecar `metrics.penalty_step_overhead`).
    pub step_overhead: Option<f64>,
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
    let finetuned = hp
        .and_then(|h| h.get("finetuned_from"))
        .is_some_and(|f| !f.is_null());
    let stage = if finetuned { "finetune" } else { "base" };
    into.insert(STAGE.to_string(), Value::from(stage));
    if !finetuned {
        if let Some(e) = v.get("epochs_completed") {
            into.insert(BASE_EPOCHS.to_string(), e.clone());
        }
    }
    if let Some(x) = strength_of(into) {
        into.insert(STRENGTH.to_string(), Value::from(x));
    }
}

/// The attribute that says how strong the run's regulariser was, in units
/// of TASER's λ: the λ₀ of TASER whose initial weighted penalty it matches.
/// λ for TASER itself (`reg = stein` with real scores), `lambda_match`'s
/// λ₀ for a control matched to TASER (`--lambda-match`), 0 without a
/// penalty (λ = 0); absent for a control at a given λ, whose strength
/// relative to TASER was not measured. A spec plots Δ against strength
/// by `vary = "strength"`, `baseline = 0`.
pub const STRENGTH: &str = "strength";

/// The attribute that says how many epochs the base model was trained:
/// a base's own `epochs_completed`, and for a fine-tune that of the
/// checkpoint it was fine-tuned from (its sidecar, when it can be read).
/// Separates fine-tunes of a weak base from those of a full one.
pub const BASE_EPOCHS: &str = "base_epochs";

/// [`STRENGTH`] of a run's flattened hyperparameters.
fn strength_of(attributes: &BTreeMap<String, Value>) -> Option<f64> {
    let number = |k: &str| attributes.get(k).and_then(Value::as_f64);
    if let Some(lambda0) = number("lambda_match") {
        return Some(lambda0);
    }
    let lambda = number("lambda")?;
    let set = |k: &str| attributes.get(k).and_then(Value::as_bool) == Some(true);
    let taser = attributes.get("reg").and_then(Value::as_str) == Some("stein")
        && !set("score_permute")
        && !set("zero_scores");
    (lambda == 0.0 || taser).then_some(lambda)
}

/// The `epochs_completed` of the checkpoint a fine-tune's sidecar names in
/// `hyperparameters.finetuned_from` (as given, then relative to the
/// sidecar's folder); `None` when that sidecar cannot be read.
fn teacher_epochs(v: &Value, side: &Path) -> Option<Value> {
    let from = v.get("hyperparameters")?.get("finetuned_from")?.as_str()?;
    let teacher = crate::checkpoint::sidecar_path(Path::new(from));
    let candidates = [teacher.clone(), side.parent()?.join(&teacher)];
    let text = candidates
        .iter()
        .find_map(|c| std::fs::read_to_string(c).ok())?;
    let meta: Value = serde_json::from_str(&text).ok()?;
    meta.get("epochs_completed").cloned()
}

/// The attribute that says which stage of the fine-tune protocol (TASER
/// App. C.2) made the evaluated checkpoint: `"finetune"` when its sidecar
/// records `hyperparameters.finetuned_from` (written by `finetune`), else
/// `"base"` (trained from scratch by `train`). A spec pairs TASER with the
/// base checkpoint by `vary = "stage"`, `baseline = "base"`, and with the
/// λ = 0 fine-tune control by `vary = "lambda"` with `stage` in `match`.
pub const STAGE: &str = "stage";

/// The 0/1 outcomes per metric ("clean", each attack, "worst_case") of a
/// per_sample.csv read through [`read_results`], which owns its format.
fn outcomes_of(table: &PerSampleTable) -> BTreeMap<String, Vec<f64>> {
    let zero_one = |flags: &[bool]| flags.iter().map(|&b| f64::from(u8::from(b))).collect();
    let mut outcomes = BTreeMap::new();
    outcomes.insert("clean".to_string(), zero_one(&table.clean_correct));
    for (name, flags) in &table.attacks {
        outcomes.insert(name.clone(), zero_one(flags));
    }
    if let Some(flags) = &table.worst_case {
        outcomes.insert("worst_case".to_string(), zero_one(flags));
    }
    outcomes
}

/// What an evaluation reads from its checkpoint's sidecar.
#[derive(Debug, Default)]
struct SidecarReading {
    /// Flattened hyperparameters ([`flatten_sidecar`], [`BASE_EPOCHS`]).
    attributes: BTreeMap<String, Value>,
    /// `metrics.train_seconds`.
    train_seconds: Option<f64>,
    /// `metrics.penalty_step_overhead`.
    step_overhead: Option<f64>,
}

/// The sidecar's flattened hyperparameters (see [`flatten_sidecar`]) and
/// its timings.
fn read_sidecar(side: &Path) -> Result<SidecarReading> {
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
    if let Some(e) = teacher_epochs(&v, side) {
        attributes.insert(BASE_EPOCHS.to_string(), e);
    }
    let metric = |k: &str| {
        v.get("metrics")
            .and_then(|m| m.get(k))
            .and_then(Value::as_f64)
    };
    Ok(SidecarReading {
        attributes,
        train_seconds: metric("train_seconds"),
        step_overhead: metric("penalty_step_overhead"),
    })
}

impl Evaluation {
    /// Reads `dir/per_sample.csv`, `dir/summary.csv` and the sidecar:
    /// `sidecar_hint` if present, else the summary's `checkpoint` with
    /// `.json` (as given, then relative to `dir` and its parent), else
    /// `model.json` in `dir`'s parent. Every outcome must be 0 or 1 and
    /// `index` unique.
    ///
    /// The [`Measurement`] comes from `dir/attack-state.json` when present,
    /// else from summary.csv and the attack columns.
    ///
    /// Errors: [`Error::MissingInput`] for a missing CSV file;
    /// [`Error::CorruptInput`] for malformed CSV, sidecar JSON or state;
    /// [`Error::Io`] when the sidecar cannot be read.
    pub fn load(dir: &Path, sidecar_hint: Option<&Path>) -> Result<Evaluation> {
        let (table, summary) = read_results(&EvalRun::at(dir))?;
        let outcomes = outcomes_of(&table);
        let attacks: Vec<String> = table.attacks.into_iter().map(|(name, _)| name).collect();
        let (per_sample, index) = (table.path, table.index);
        let (summary, fingerprint) = (summary.values, summary.subset_fingerprint);
        let measurement = Measurement::read(&EvalRun::at(dir), &summary, &attacks, &fingerprint)?;
        let sidecar = find_sidecar(dir, &summary, sidecar_hint);
        let reading = match &sidecar {
            Some(side) => read_sidecar(side)?,
            None => SidecarReading::default(),
        };
        let mut attributes = reading.attributes;
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
            measurement,
            attributes,
            train_seconds: reading.train_seconds,
            step_overhead: reading.step_overhead,
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
    let fix = "evaluate both checkpoints with the same `attack --subset FILE` (or --n-eval and \
               --seed), so both have the same subset_fingerprint, and pair only such evaluations";
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_says_whether_finetune_or_train_made_the_checkpoint() {
        let stage = |v: Value| {
            let mut a = BTreeMap::new();
            flatten_sidecar(&v, &mut a);
            a[STAGE].clone()
        };
        let tuned =
            serde_json::json!({"hyperparameters": {"finetuned_from": "b/model.safetensors"}});
        assert_eq!(stage(tuned), "finetune");
        let base = serde_json::json!({"hyperparameters": {"finetuned_from": null}, "seed": 0});
        assert_eq!(stage(base), "base");
    }

    #[test]
    fn strength_is_tasers_lambda_or_the_matched_lambda0_and_unknown_for_an_unmatched_control() {
        let strength = |config: Value| {
            let mut a = BTreeMap::new();
            flatten_sidecar(
                &serde_json::json!({"hyperparameters": {"config": config}}),
                &mut a,
            );
            a.get(STRENGTH).and_then(Value::as_f64)
        };
        let taser = serde_json::json!({"lambda": 0.01, "reg": "stein", "score_permute": false});
        assert_eq!(strength(taser), Some(0.01));
        let control = serde_json::json!({"lambda": 0.0, "reg": "stein"});
        assert_eq!(strength(control), Some(0.0));
        let matched = serde_json::json!({"lambda": 0.0, "lambda_match": 0.001, "reg": "grad-norm"});
        assert_eq!(strength(matched), Some(0.001));
        let unmatched = serde_json::json!({"lambda": 0.01, "reg": "grad-norm"});
        assert_eq!(strength(unmatched), None);
        let permuted = serde_json::json!({"lambda": 0.01, "reg": "stein", "score_permute": true});
        assert_eq!(strength(permuted), None);
    }

    #[test]
    fn base_epochs_is_the_bases_own_or_read_from_the_checkpoint_a_finetune_started_from() {
        let dir = tempfile::tempdir().unwrap();
        let base = serde_json::json!({"epochs_completed": 3, "hyperparameters": {}});
        std::fs::write(dir.path().join("base.json"), base.to_string()).unwrap();
        let tuned = serde_json::json!({"epochs_completed": 5,
            "hyperparameters": {"finetuned_from": "base.safetensors"}});
        let side = dir.path().join("tuned.json");
        std::fs::write(&side, tuned.to_string()).unwrap();
        let a = read_sidecar(&side).unwrap().attributes;
        assert_eq!(a[BASE_EPOCHS], 3);
        let a = read_sidecar(&dir.path().join("base.json"))
            .unwrap()
            .attributes;
        assert_eq!(a[BASE_EPOCHS], 3);
        std::fs::remove_file(dir.path().join("base.json")).unwrap();
        let a = read_sidecar(&side).unwrap().attributes;
        assert!(
            !a.contains_key(BASE_EPOCHS),
            "no base sidecar, no attribute"
        );
    }
}
