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
use crate::models::ModelSpec;
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
    /// The model the checkpoint's sidecar describes (architecture,
    /// activation, widths, input shape, outputs): the same weights read as
    /// another model give other numbers. States written before it was
    /// recorded lack it and are not resumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelSpec>,
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

/// One attack's result at `field`: one flag per point of `within`, robust
/// only where `within` holds, a finite duration ≥ 0.
fn check_result(r: &AttackResult, field: &str, within: &[bool]) -> std::result::Result<(), String> {
    if r.robust.len() != within.len() {
        return Err(format!(
            "field `{field}.robust` holds {} flags for {} points",
            r.robust.len(),
            within.len()
        ));
    }
    if let Some(i) = (0..within.len()).find(|&i| r.robust[i] && !within[i]) {
        return Err(format!(
            "field `{field}.robust[{i}]` = true where the point is not correct (clean, or after \
             the component before)"
        ));
    }
    if !(r.seconds.is_finite() && r.seconds >= 0.0) {
        return Err(format!(
            "field `{field}.seconds` = {} is invalid: it is a finite duration ≥ 0",
            r.seconds
        ));
    }
    Ok(())
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
        let state: State = read_versioned_json(path, STATE_FORMAT, fixes)?;
        state.check().map_err(|reason| Error::CorruptInput {
            path: path.to_path_buf(),
            reason,
            fix: fixes.corrupt.into(),
        })?;
        Ok(Some(state))
    }

    /// The state's fields in their ranges and consistent with each other:
    /// ε finite and > 0, at least one attack and point, batch size ≥ 1;
    /// one clean flag per point; every finished attack one of the
    /// identity's, finished once, with one flag per point, robust only
    /// where the clean prediction is correct, and a finite duration ≥ 0;
    /// an AutoAttack's components likewise, each robust only where the one
    /// before is, the last one's flags the attack's. Returns what is
    /// wrong, naming the field and its value.
    fn check(&self) -> std::result::Result<(), String> {
        let c = &self.config;
        let n = c.n_points;
        if !(c.eps.is_finite() && c.eps > 0.0) {
            return Err(format!(
                "field `config.eps` = {} is invalid: it is a finite radius > 0",
                c.eps
            ));
        }
        for (field, value) in [("n_points", n), ("batch_size", c.batch_size)] {
            if value == 0 {
                return Err(format!("field `config.{field}` = 0 is invalid: it is ≥ 1"));
            }
        }
        if c.attacks.is_empty() {
            return Err(
                "field `config.attacks` is empty: it lists the evaluation's attacks".into(),
            );
        }
        if self.clean_correct.len() != n {
            return Err(format!(
                "field `clean_correct` holds {} flags for `config.n_points` = {n} points",
                self.clean_correct.len()
            ));
        }
        for (i, r) in self.finished.iter().enumerate() {
            if !c.attacks.contains(&r.name) {
                return Err(format!(
                    "field `finished[{i}].name` = {:?} is not one of `config.attacks` {:?}",
                    r.name, c.attacks
                ));
            }
            if self.finished[..i].iter().any(|p| p.name == r.name) {
                return Err(format!("attack {:?} is listed in `finished` twice", r.name));
            }
            check_result(r, &format!("finished[{i}]"), &self.clean_correct)?;
            let mut before = &self.clean_correct;
            for (k, comp) in r.components.iter().enumerate() {
                check_result(comp, &format!("finished[{i}].components[{k}]"), before)?;
                before = &comp.robust;
            }
            if !r.components.is_empty() && before != &r.robust {
                return Err(format!(
                    "field `finished[{i}].robust` differs from its last component's flags"
                ));
            }
        }
        Ok(())
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
            model: None,
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
        let two = EvalIdentity {
            n_points: 2,
            ..identity()
        };
        let mut state = State::new(Path::new("m.safetensors"), two, vec![true, false]);
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

    #[test]
    fn a_state_out_of_range_or_inconsistent_is_refused_naming_the_field_and_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(crate::layout::ATTACK_STATE);
        let (t, f) = (true, false);
        let result = |name: &str, robust: Vec<bool>, seconds: f64| AttackResult {
            name: name.into(),
            robust,
            seconds,
            components: vec![],
        };
        let id = EvalIdentity {
            n_points: 3,
            ..identity()
        };
        let mut good = State::new(Path::new("m.safetensors"), id, vec![t, t, f]);
        let mut aa = result("aa", vec![t, f, f], 2.0);
        aa.components = vec![
            result("apgd-ce", vec![t, t, f], 1.0),
            result("apgd-t", vec![t, f, f], 1.0),
        ];
        good.finished = vec![result("pgd20", vec![t, f, f], 0.5), aa];
        good.save(&path).unwrap();
        assert_eq!(State::load(&path).unwrap(), Some(good.clone()));
        type Edit = Box<dyn Fn(&mut State)>;
        let cases: Vec<(Edit, &str)> = vec![
            (Box::new(|s| s.config.eps = -0.2), "`config.eps` = -0.2"),
            (
                Box::new(|s| s.config.batch_size = 0),
                "`config.batch_size` = 0",
            ),
            (
                Box::new(|s| {
                    s.clean_correct.pop();
                }),
                "`clean_correct` holds 2",
            ),
            (
                Box::new(|s| {
                    s.finished[0].robust.pop();
                }),
                "`finished[0].robust` holds 2",
            ),
            (
                Box::new(|s| s.finished[0].robust[2] = true),
                "`finished[0].robust[2]` = true",
            ),
            (
                Box::new(|s| s.finished[0].seconds = -1.0),
                "`finished[0].seconds` = -1",
            ),
            (
                Box::new(|s| s.finished[0].name = "pgd7".into()),
                "`finished[0].name` = \"pgd7\"",
            ),
            (
                Box::new(|s| s.finished[1].name = "pgd20".into()),
                "listed in `finished` twice",
            ),
            (
                Box::new(|s| s.finished[1].components[1].robust[1] = true),
                "`finished[1].robust` differs",
            ),
            (
                Box::new(|s| s.finished[1].components[0].robust[0] = false),
                "`finished[1].components[1].robust[0]` = true",
            ),
        ];
        for (edit, want) in cases {
            let mut bad = good.clone();
            edit(&mut bad);
            bad.save(&path).unwrap();
            let err = State::load(&path).unwrap_err();
            assert!(matches!(err, Error::CorruptInput { .. }), "{err}");
            let err = err.to_string();
            assert!(
                err.contains(want) && err.contains("attack-state.json"),
                "{want}: {err}"
            );
        }
    }
}
