//! The resume state of a training run: `resume.json` (the configuration it
//! belongs to and the fingerprints of what it reads, [`RunInputs`]) and `resume.safetensors` (weights `model.*`, optimiser state,
//! EMA weights `ema.*`, the epoch counter `epochs_completed` and the
//! global centre `stein.global_center`), written after every checkpointed
//! epoch and read by `--resume`.
use super::config::TrainConfig;
use super::ema::Ema;
use super::inputs::RunInputs;
use super::metrics::{read_metrics, EpochMetrics};
use crate::checkpoint;
use crate::error::{Error, Result};
use crate::fsutil::{read_versioned_json_or_untagged, write_json_atomically, JsonFixes};
use crate::identity::differences;
use crate::layout::TrainRun;
use crate::models::Model;
use crate::optim::Optimizer;
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::Tensor;

/// Format tag of `resume.json`.
pub const RESUME_FORMAT: &str = "taser-train-resume/1";

const START_AGAIN: &str = "delete the output directory and train again";

/// The configuration a resume state belongs to (`resume.json`).
#[derive(Debug, Serialize, Deserialize)]
struct ResumeConfig {
    format: String,
    version: String,
    config: TrainConfig,
    /// What the run reads; absent in states written before it was
    /// recorded (resumed with a warning that it could not be checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    inputs: Option<RunInputs>,
}

/// Writes `resume.json` for `config` and `inputs` (before the first epoch,
/// so a killed run can be resumed from its first saved epoch).
pub fn write_config(out: &TrainRun, config: &TrainConfig, inputs: &RunInputs) -> Result<()> {
    write_json_atomically(
        &out.resume_state(),
        &ResumeConfig {
            format: RESUME_FORMAT.into(),
            version: crate::VERSION.into(),
            config: config.clone(),
            inputs: Some(inputs.clone()),
        },
    )
}

/// Removes `resume.json` when no epoch was saved, so a run that diverged
/// before saving leaves nothing behind and the same `--out` can be reused.
pub fn discard_if_unsaved(out: &TrainRun) {
    if !out.resume_weights().exists() {
        let _ = std::fs::remove_file(out.resume_state());
    }
}

/// State restored from `--out` when resuming.
pub struct Restored {
    /// Epochs finished before the interruption.
    pub epochs_done: usize,
    /// `metrics.csv`'s rows of those epochs.
    pub rows: Vec<EpochMetrics>,
    /// The calibrated centre of `--center global`, if it was saved.
    pub global_center: Option<f64>,
}

/// Reads `resume.json`. A state written before it carried a format tag (no
/// `format` field; suite 0.1.0 until this tag) is read as this format, so a
/// run or sweep interrupted across the upgrade still resumes.
fn read_config(path: &Path) -> Result<ResumeConfig> {
    let fixes = JsonFixes {
        missing: START_AGAIN,
        corrupt: START_AGAIN,
    };
    read_versioned_json_or_untagged(path, RESUME_FORMAT, fixes)
}

/// Refuses a saved state that belongs to another configuration or read
/// other inputs, listing every differing field (saved → now). A state
/// that recorded no inputs is accepted with a warning on stderr.
fn check_saved(
    saved: &ResumeConfig,
    config: &TrainConfig,
    inputs: &RunInputs,
    (state_path, weights_path): (&Path, &Path),
) -> Result<()> {
    let diffs = differences(&saved.config, config);
    if !diffs.is_empty() {
        return Err(Error::CheckpointMismatch {
            path: weights_path.to_path_buf(),
            reason: format!(
                "it belongs to another configuration (saved → now: {})",
                diffs.join("; ")
            ),
            fix: "resume with the same flags, or choose another --out".into(),
        });
    }
    let Some(saved_inputs) = &saved.inputs else {
        eprintln!(
            "warning: {} records no fingerprints of the data it was trained on (written before they \
             were recorded); resuming without checking that the data, score file and base are the same",
            state_path.display()
        );
        return Ok(());
    };
    let diffs = differences(saved_inputs, inputs);
    if diffs.is_empty() {
        return Ok(());
    }
    Err(Error::CheckpointMismatch {
        path: weights_path.to_path_buf(),
        reason: format!(
            "its epochs were trained on other inputs (saved → now: {})",
            diffs.join("; ")
        ),
        fix: "resume with the inputs it was trained on (the same --data-dir, --val-size, \
              --extra-data, --scores file and finetune --from checkpoint), or choose another --out"
            .into(),
    })
}

/// Restores `model`, `opt` and `ema` from the resume state in `out`;
/// `None` when there is none (the run starts fresh).
///
/// Errors: [`Error::CorruptInput`] for an unreadable state;
/// [`Error::CheckpointMismatch`] when it belongs to another configuration
/// or its epochs read other inputs than `inputs` (the message lists every
/// differing field, saved → now).
pub fn restore(
    config: &TrainConfig,
    inputs: &RunInputs,
    out: &TrainRun,
    model: &mut Model,
    opt: &mut Optimizer,
    ema: Option<&mut Ema>,
) -> Result<Option<Restored>> {
    let (cfg_path, weights_path) = (out.resume_state(), out.resume_weights());
    if !cfg_path.exists() || !weights_path.exists() {
        return Ok(None);
    }
    let saved = read_config(&cfg_path)?;
    check_saved(&saved, config, inputs, (&cfg_path, &weights_path))?;
    let corrupt = |reason: String| Error::CorruptInput {
        path: weights_path.clone(),
        reason,
        fix: START_AGAIN.into(),
    };
    let tensors = checkpoint::read_tensors(&weights_path)?;
    let strip = |prefix: &str, part: Vec<(String, Tensor)>| -> Vec<(String, Tensor)> {
        part.into_iter()
            .map(|(n, t)| (n[prefix.len()..].to_string(), t))
            .collect()
    };
    let (model_part, rest): (Vec<_>, Vec<_>) = tensors
        .into_iter()
        .partition(|(n, _)| n.starts_with("model."));
    let (ema_part, rest): (Vec<_>, Vec<_>) =
        rest.into_iter().partition(|(n, _)| n.starts_with("ema."));
    checkpoint::load_tensors_into(model, &strip("model.", model_part), &weights_path)?;
    if let Some(ema) = ema {
        checkpoint::load_tensors_into(&mut ema.model, &strip("ema.", ema_part), &weights_path)?;
    }
    opt.load_state(&rest).map_err(corrupt)?;
    let scalar = |name: &str| rest.iter().find(|(n, _)| n == name).map(|(_, t)| t);
    let epochs_done = scalar("epochs_completed")
        .map(|t| t.int64_value(&[0]) as usize)
        .ok_or_else(|| corrupt("no epoch counter".into()))?;
    // metrics.csv is written before the resume state, so it may hold one
    // epoch more than the state; that epoch is recomputed.
    let rows = read_metrics(&out.metrics())?
        .into_iter()
        .filter(|r| r.epoch <= epochs_done)
        .collect();
    Ok(Some(Restored {
        epochs_done,
        rows,
        global_center: scalar("stein.global_center").map(|t| t.double_value(&[0])),
    }))
}

/// Writes `resume.safetensors` after `epochs_done` epochs.
pub fn save_state(
    out: &TrainRun,
    model: &Model,
    opt: &Optimizer,
    ema: Option<&Ema>,
    epochs_done: usize,
    global_center: Option<f64>,
) -> Result<()> {
    let mut tensors: Vec<(String, Tensor)> = checkpoint::model_tensors(model)
        .into_iter()
        .map(|(n, t)| (format!("model.{n}"), t))
        .collect();
    tensors.extend(opt.state_tensors());
    if let Some(ema) = ema {
        tensors.extend(ema.state_tensors());
    }
    tensors.push((
        "epochs_completed".into(),
        Tensor::from_slice(&[epochs_done as i64]),
    ));
    if let Some(c) = global_center {
        tensors.push(("stein.global_center".into(), Tensor::from_slice(&[c])));
    }
    checkpoint::write_tensors(&out.resume_weights(), &tensors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::tests::config;

    #[test]
    fn an_untagged_state_of_the_previous_version_is_read_and_a_foreign_tag_is_not() {
        let cfg = config(&["--epochs", "3"]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resume.json");
        let legacy = serde_json::json!({"version": "0.1.0", "config": cfg});
        std::fs::write(&path, legacy.to_string()).unwrap();
        let saved = read_config(&path).unwrap();
        assert!(differences(&saved.config, &cfg).is_empty());
        let foreign = serde_json::json!({"format": "other/1", "version": "0.1.0", "config": cfg});
        std::fs::write(&path, foreign.to_string()).unwrap();
        let err = read_config(&path).unwrap_err().to_string();
        assert!(
            err.contains("other/1") && err.contains(RESUME_FORMAT),
            "{err}"
        );
    }
}
