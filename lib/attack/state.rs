//! The resume state of an evaluation (`attack-state.json` in `--out`): the
//! evaluation's identity, the clean predictions and every finished attack's
//! per-sample flags. It is written after the clean pass and after each
//! attack, so a rerun of the same command continues where a preempted one
//! stopped and never repeats a finished attack; a rerun whose identity
//! differs is refused, listing every differing field.
//!
//! Resumed results are bit-identical to uninterrupted ones because each
//! attack seeds libtorch's generator from `--seed` and its own name
//! ([`super::autoattack::seed_for`]).
use super::square::WindowRange;
use super::Norm;
use crate::data::subset::EvalSubset;
use crate::error::{Error, Result};
use crate::fsutil::{read_versioned_json, write_bytes_atomically, JsonFixes};
use crate::identity::differences;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;

/// The `format` tag of the state file.
pub const STATE_FORMAT: &str = "taser-attack-state/1";

/// What a resumed evaluation must share with the saved one: everything
/// that decides its numbers. Compared field by field through serde
/// ([`differences`]), so a new field is compared without further code.
/// The runtime flags (`--device`, `--threads`, `--data-dir`) are not part
/// of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalIdentity {
    /// First 16 hex digits of the checkpoint's SHA-256 ([`checkpoint_sha`]).
    pub checkpoint_sha256: String,
    pub dataset: String,
    pub norm: Norm,
    /// Attack radius ε (inputs in [0,1]).
    pub eps: f64,
    /// The `--attacks` names, in order.
    pub attacks: Vec<String>,
    pub seed: u64,
    /// [`subset_fingerprint`] of the evaluated points.
    pub subset_fingerprint: String,
    /// Number of evaluated points.
    pub n_points: usize,
    pub batch_size: usize,
    /// Square's window-offset range when an attack runs Square (alone or in
    /// AutoAttack), else absent. States written before the option lack it
    /// and read as absent, so an old evaluation with Square is not resumed
    /// under the new default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub square_window_range: Option<WindowRange>,
}

/// Per-sample results of one finished attack (or AutoAttack component).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttackResult {
    /// The attack's name in the `--attacks` grammar (a component's name
    /// inside AutoAttack).
    pub name: String,
    /// Correct under the attack, one flag per evaluated point (false where
    /// the clean point is wrong).
    pub robust: Vec<bool>,
    /// Wall-clock seconds the attack took.
    pub seconds: f64,
    /// AutoAttack only: robust flags after each component (cumulative).
    #[serde(default)]
    pub components: Vec<AttackResult>,
}

/// The resume state file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// [`STATE_FORMAT`].
    pub format: String,
    /// The suite's version that wrote it (informational).
    pub version: String,
    /// The checkpoint path as given (informational; its hash is compared).
    pub checkpoint: String,
    /// The evaluation's identity (named `config` in the file).
    pub config: EvalIdentity,
    /// Clean prediction correct, one flag per evaluated point.
    pub clean_correct: Vec<bool>,
    /// Finished attacks, in the order they finished.
    pub finished: Vec<AttackResult>,
}

/// Fraction of `flags` that hold (0 when there are none).
pub fn accuracy(flags: &[bool]) -> f64 {
    if flags.is_empty() {
        0.0
    } else {
        flags.iter().filter(|&&b| b).count() as f64 / flags.len() as f64
    }
}

fn sha16(bytes: &[u8]) -> String {
    Sha256::digest(bytes)[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Fingerprint of an evaluation subset: the first 16 hex digits of the
/// SHA-256 of `dataset|split|test_fingerprint|i1,i2,…`.
pub fn subset_fingerprint(s: &EvalSubset) -> String {
    let idx: Vec<String> = s.indices.iter().map(|i| i.to_string()).collect();
    sha16(
        format!(
            "{}|{}|{}|{}",
            s.dataset,
            s.split,
            s.test_fingerprint,
            idx.join(",")
        )
        .as_bytes(),
    )
}

/// The first 16 hex digits of the SHA-256 of the checkpoint's weights file.
///
/// Errors: [`Error::MissingInput`] when it cannot be read.
pub fn checkpoint_sha(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::MissingInput {
        path: path.to_path_buf(),
        reason: e.to_string(),
        fix: "give the path of a .safetensors checkpoint written by `train` or `finetune`".into(),
    })?;
    Ok(sha16(&bytes))
}

/// `field: saved → now` lines, with a field written as its flag (`eps` →
/// `--eps`, `batch_size` → `--batch-size`) where `flags` (long names,
/// without dashes) has one of that name.
fn describe_differences(saved: &EvalIdentity, now: &EvalIdentity, flags: &[String]) -> String {
    differences(saved, now)
        .into_iter()
        .map(|line| match line.split_once(": ") {
            Some((field, change)) if flags.contains(&field.replace('_', "-")) => {
                format!("--{}: {change}", field.replace('_', "-"))
            }
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl State {
    /// A state with no finished attack.
    pub fn new(checkpoint: &Path, identity: EvalIdentity, clean_correct: Vec<bool>) -> State {
        State {
            format: STATE_FORMAT.into(),
            version: crate::VERSION.into(),
            checkpoint: checkpoint.display().to_string(),
            config: identity,
            clean_correct,
            finished: vec![],
        }
    }

    /// Reads the state at `path`; `None` when there is none.
    ///
    /// Errors: [`Error::CorruptInput`] when it is not a state file of
    /// [`STATE_FORMAT`]; [`Error::MissingInput`] when it exists but cannot
    /// be read.
    pub fn load(path: &Path) -> Result<Option<State>> {
        if !path.exists() {
            return Ok(None);
        }
        let fixes = JsonFixes {
            missing: "make it readable, or choose a new --out",
            corrupt: "delete it to start the evaluation afresh, or choose a new --out",
        };
        read_versioned_json(path, STATE_FORMAT, fixes).map(Some)
    }

    /// Writes the state to `path` atomically (compact JSON).
    ///
    /// Errors: [`Error::OutputFailed`] / [`Error::Io`] when it cannot be
    /// written.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string(self).map_err(|e| Error::OutputFailed {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        write_bytes_atomically(path, text.as_bytes())
    }

    /// Refuses to continue this saved evaluation as `now`.
    ///
    /// Errors: [`Error::InvalidArgument`] on `--out` listing each differing
    /// field as `field: saved → now`, written as its flag (`--eps`,
    /// `--batch-size`) where `flags` (long names without dashes) has one of
    /// the field's name.
    pub fn check_identity(&self, now: &EvalIdentity, out: &Path, flags: &[String]) -> Result<()> {
        if &self.config == now {
            return Ok(());
        }
        Err(Error::invalid(
            "--out",
            out.display(),
            format!(
                "holds an evaluation with other settings ({}). Fix: rerun with the same flags to \
                 continue it, or choose a new --out",
                describe_differences(&self.config, now, flags)
            ),
        ))
    }

    /// Refuses to continue when this run's clean predictions differ from
    /// the saved ones.
    ///
    /// Errors: [`Error::InvalidArgument`] on `--out`.
    pub fn check_clean(&self, clean_correct: &[bool], out: &Path) -> Result<()> {
        if self.clean_correct == clean_correct {
            return Ok(());
        }
        Err(Error::invalid(
            "--out",
            out.display(),
            "its saved clean predictions differ from this run's (non-deterministic model or another \
             device). Fix: choose a new --out",
        ))
    }

    /// The finished attack called `name`, if any.
    pub fn finished(&self, name: &str) -> Option<&AttackResult> {
        self.finished.iter().find(|r| r.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> EvalIdentity {
        EvalIdentity {
            checkpoint_sha256: "3f9ca30c3fb38c5c".into(),
            dataset: "digits".into(),
            norm: Norm::Linf,
            eps: 0.25,
            attacks: vec!["aa".into(), "pgd20".into()],
            seed: 3,
            subset_fingerprint: "c0458f01bb219926".into(),
            n_points: 60,
            batch_size: 50,
            square_window_range: Some(WindowRange::Reference),
        }
    }

    #[test]
    fn a_changed_identity_is_refused_listing_every_changed_field_with_both_values() {
        let saved = State::new(Path::new("m.safetensors"), identity(), vec![true, false]);
        let now = EvalIdentity {
            eps: 0.125,
            batch_size: 25,
            ..identity()
        };
        let flags: Vec<String> = ["eps", "batch-size"].map(String::from).to_vec();
        let err = saved
            .check_identity(&now, Path::new("runs/eval"), &flags)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--eps: 0.25 → 0.125"), "{err}");
        assert!(err.contains("--batch-size: 50 → 25"), "{err}");
        assert!(err.contains("new --out") && !err.contains("seed"), "{err}");
        // A field with no flag of its name keeps the field's name.
        let other = EvalIdentity {
            n_points: 61,
            ..identity()
        };
        let err = saved
            .check_identity(&other, Path::new("o"), &flags)
            .unwrap_err();
        assert!(err.to_string().contains("n_points: 60 → 61"), "{err}");
        saved
            .check_identity(&identity(), Path::new("o"), &flags)
            .unwrap();
    }

    #[test]
    fn a_state_without_the_square_window_range_is_not_resumed_under_the_reference_default() {
        let mut old = serde_json::to_value(identity()).unwrap();
        old.as_object_mut().unwrap().remove("square_window_range");
        let old: EvalIdentity = serde_json::from_value(old).unwrap();
        assert_eq!(old.square_window_range, None);
        let saved = State::new(Path::new("m.safetensors"), old, vec![true]);
        let flags = vec!["square-window-range".to_string()];
        let err = saved
            .check_identity(&identity(), Path::new("o"), &flags)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--square-window-range"), "{err}");
    }

    #[test]
    fn a_saved_state_reads_back_and_a_foreign_file_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(crate::layout::ATTACK_STATE);
        assert_eq!(State::load(&path).unwrap(), None);
        let mut state = State::new(Path::new("m.safetensors"), identity(), vec![true, false]);
        state.finished.push(AttackResult {
            name: "pgd20".into(),
            robust: vec![true, false],
            seconds: 1.5,
            components: vec![],
        });
        state.save(&path).unwrap();
        assert_eq!(State::load(&path).unwrap(), Some(state.clone()));
        assert!(state.finished("pgd20").is_some() && state.finished("aa").is_none());
        std::fs::write(&path, r#"{"format": "taser-other/1"}"#).unwrap();
        let err = State::load(&path).unwrap_err();
        assert!(matches!(err, Error::CorruptInput { .. }), "{err}");
    }
}
