//! One training run's record as a single JSON object, for scripts: what
//! its sidecar records (model, data, hyperparameters, the runtime with the
//! device and numerics) and its per-epoch log, read through the run-folder
//! layout so a script never names the files.
use crate::csvio::{self, Fixes};
use crate::error::{Error, Result};
use crate::layout::TrainRun;
use serde_json::{json, Map, Value as Json};
use std::path::Path;

/// The record of the `train`/`finetune` output folder `dir`:
/// `{"dir", "weights": {"final", "best", "last"}: the checkpoint paths
/// that exist (null otherwise), "sidecar": <the sidecar's JSON>, "epochs":
/// <rows of the per-epoch log>, "last_epoch": <its last row, or null>}`. Log fields that
/// parse as numbers are numbers, the rest text.
///
/// Errors: [`Error::MissingInput`] when the sidecar or the log cannot be
/// read (not a finished run folder); [`Error::CorruptInput`] when the
/// sidecar is not JSON or a log row does not fit its header.
pub fn run_record(dir: &Path) -> Result<Json> {
    let run = TrainRun::at(dir);
    let fix = "give a `train` or `finetune` --out folder (one that finished an epoch)";
    let text = std::fs::read_to_string(run.sidecar()).map_err(|e| Error::MissingInput {
        path: run.sidecar(),
        reason: e.to_string(),
        fix: fix.into(),
    })?;
    let sidecar: Json = serde_json::from_str(&text).map_err(|e| Error::CorruptInput {
        path: run.sidecar(),
        reason: e.to_string(),
        fix: fix.into(),
    })?;
    let fixes = Fixes {
        missing: fix,
        corrupt: "rerun the training into a new --out folder",
    };
    let log = csvio::read_table(&run.metrics(), fixes)?;
    let epochs: Vec<Json> = log
        .rows
        .iter()
        .map(|row| {
            let fields = log
                .header
                .iter()
                .zip(row)
                .map(|(k, v)| (k.clone(), field(v)));
            Json::Object(fields.collect::<Map<_, _>>())
        })
        .collect();
    let existing = |p: std::path::PathBuf| p.is_file().then(|| p.display().to_string());
    Ok(json!({
        "dir": dir.display().to_string(),
        "weights": {
            "final": existing(run.weights()),
            "best": existing(run.best_weights()),
            "last": existing(run.last_weights()),
        },
        "sidecar": sidecar,
        "last_epoch": epochs.last().cloned().unwrap_or(Json::Null),
        "epochs": epochs,
    }))
}

/// A log field as JSON: null when empty (a column this run does not
/// log), an integer or a finite number when it parses as one, else text.
fn field(v: &str) -> Json {
    if v.is_empty() {
        return Json::Null;
    }
    if let Ok(i) = v.parse::<i64>() {
        return Json::from(i);
    }
    match v.parse::<f64>().ok().and_then(serde_json::Number::from_f64) {
        Some(n) => Json::Number(n),
        None => Json::String(v.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_folder_reads_as_its_sidecar_and_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let run = TrainRun::at(dir.path());
        let missing = run_record(dir.path()).unwrap_err();
        assert!(matches!(missing, Error::MissingInput { .. }), "{missing}");
        std::fs::write(
            run.sidecar(),
            r#"{"runtime": {"device": {"device": "cpu"}}}"#,
        )
        .unwrap();
        std::fs::write(
            run.metrics(),
            "epoch,train_loss,note,penalty\n1,0.5,a,\n2,0.25,NaN,\n",
        )
        .unwrap();
        let r = run_record(dir.path()).unwrap();
        assert_eq!(r["sidecar"]["runtime"]["device"]["device"], "cpu");
        assert_eq!(r["weights"]["final"], Json::Null);
        std::fs::write(run.weights(), b"w").unwrap();
        let r = run_record(dir.path()).unwrap();
        assert_eq!(r["weights"]["final"], run.weights().display().to_string());
        assert_eq!(r["epochs"].as_array().unwrap().len(), 2);
        assert_eq!(r["last_epoch"]["epoch"], 2);
        assert_eq!(r["last_epoch"]["penalty"], Json::Null);
        assert_eq!(r["last_epoch"]["train_loss"], 0.25);
        // NaN is no JSON number: it stays text rather than turning into null.
        assert_eq!(r["last_epoch"]["note"], "NaN");
        std::fs::write(run.sidecar(), "{not json").unwrap();
        let corrupt = run_record(dir.path()).unwrap_err();
        assert!(matches!(corrupt, Error::CorruptInput { .. }), "{corrupt}");
    }
}
