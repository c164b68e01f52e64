//! The measurement identity of an evaluation: every property that defines
//! what a robust accuracy measured — data set, norm, ε, the attacks with
//! their budgets (the `--attacks` names: `pgd20` is 20 steps, `spsa` and
//! `aa` the docs/METHOD.md, "Attacks and their budgets" settings) and the evaluated points (subset
//! fingerprint, which also fixes the split) — and the one check that a
//! comparison only puts side by side what was measured the same way.
//!
//! A Δ between two robust accuracies is a treatment effect only when both
//! were measured under one threat model: the same checkpoint at L∞ ε = 0.2
//! and ε = 0.05 "differs" by 46 points. So every baseline/treatment pair,
//! every seed slot of a row and every row of an average row must agree on
//! the [`Measurement`] (rows of an average may lie on different subsets;
//! they are resampled independently).
//!
//! The identity is read from what `attack` writes: `attack-state.json`'s
//! `config` ([`EvalIdentity`](crate::attack::state::EvalIdentity)) when the folder has one, so any field added
//! to it later (an attack option) is compared without further code; else
//! `summary.csv`'s `dataset`, `norm`, `eps` columns and per_sample.csv's
//! attack columns (folders written before the resume state). A property
//! that only one side records (a folder written before it existed) cannot
//! be compared: it is skipped and named in the report's notes.
use super::average::AverageRow;
use super::eval::Evaluation;
use super::pairing::RowInput;
use crate::attack::state::STATE_FORMAT;
use crate::error::{Error, Result};
use crate::fsutil::{read_versioned_json, JsonFixes};
use crate::identity::differences;
use crate::layout::EvalRun;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Fields of [`EvalIdentity`](crate::attack::state::EvalIdentity) that do not define what was measured: which
/// model, by its weights and its architecture (that is what a comparison
/// varies), the attack's random seed, the batch size (results do not depend
/// on it) and the number of points (the subset fingerprint fixes it).
pub const NOT_MEASURED: [&str; 5] = [
    "checkpoint_sha256",
    "model",
    "seed",
    "batch_size",
    "n_points",
];

/// The measurement identity's field naming the evaluated points.
pub const POINTS: &str = "subset_fingerprint";

/// What an evaluation measured (see the module documentation). Compared
/// field by field through serde ([`differences`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// Data set name (`digits`, `cifar10`); `None` when not recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    /// `linf` or `l2`; `None` when not recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub norm: Option<String>,
    /// Attack radius ε (inputs in [0,1]); `None` when not recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eps: Option<f64>,
    /// The `--attacks` names in order (each fixes its budget).
    pub attacks: Vec<String>,
    /// Fingerprint of the evaluated points (data set, split, indices).
    pub subset_fingerprint: String,
    /// Every further field `attack-state.json` records (attack options).
    #[serde(flatten)]
    pub settings: BTreeMap<String, Value>,
}

/// `attack-state.json` as far as the measurement goes: its identity
/// (`config`) as raw fields, so a state written before or after a field was
/// added to [`EvalIdentity`](crate::attack::state::EvalIdentity) is still read.
#[derive(Deserialize)]
struct SavedIdentity {
    config: Map<String, Value>,
}

impl Measurement {
    /// The identity of the evaluation folder `run`: from its
    /// `attack-state.json` when present ([`Measurement::of_fields`]), else
    /// from the `summary` row, the per_sample.csv `attacks` columns and the
    /// subset `fingerprint`.
    ///
    /// Errors: [`Error::MissingInput`] for an unreadable state file;
    /// [`Error::CorruptInput`] for one that is not a state of
    /// [`STATE_FORMAT`] or whose identity lacks `attacks` or
    /// `subset_fingerprint`.
    pub fn read(
        run: &EvalRun,
        summary: &BTreeMap<String, String>,
        attacks: &[String],
        fingerprint: &str,
    ) -> Result<Measurement> {
        let state = run.state();
        if state.is_file() {
            let fixes = JsonFixes {
                missing: "make it readable",
                corrupt: "rerun `attack` with this --out to rewrite it, or delete it \
                          (summary.csv's columns are then used)",
            };
            let saved: SavedIdentity = read_versioned_json(&state, STATE_FORMAT, fixes)?;
            return Measurement::of_fields(saved.config).map_err(|e| Error::CorruptInput {
                path: state,
                reason: format!("its `config` is not an evaluation identity: {e}"),
                fix: fixes.corrupt.into(),
            });
        }
        Ok(Measurement {
            dataset: summary.get("dataset").cloned(),
            norm: summary.get("norm").cloned(),
            eps: summary.get("eps").and_then(|e| e.parse().ok()),
            attacks: attacks.to_vec(),
            subset_fingerprint: fingerprint.to_string(),
            settings: BTreeMap::new(),
        })
    }

    /// The measured part of an evaluation identity's fields (as
    /// [`EvalIdentity`](crate::attack::state::EvalIdentity) serialises): all but [`NOT_MEASURED`]; fields
    /// beyond the named ones go to `settings`.
    ///
    /// Errors: serde's, when `attacks` or `subset_fingerprint` is missing or
    /// a named field has another type.
    pub fn of_fields(mut fields: Map<String, Value>) -> serde_json::Result<Measurement> {
        for key in NOT_MEASURED {
            fields.remove(key);
        }
        serde_json::from_value(Value::Object(fields))
    }
}

/// How two measurements compare: the differing fields (`field: a → b`)
/// and the fields only one of them records (not compared).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldDiff {
    pub differing: Vec<String>,
    pub unrecorded: Vec<String>,
}

/// Compares `a` with `b` field by field; `same_points` false leaves the
/// evaluated points ([`POINTS`]) out.
pub fn diff_fields(a: &Measurement, b: &Measurement, same_points: bool) -> FieldDiff {
    let fields = |m: &Measurement| match serde_json::to_value(m) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    let (mut fa, mut fb) = (fields(a), fields(b));
    if !same_points {
        fa.remove(POINTS);
        fb.remove(POINTS);
    }
    let mut unrecorded: Vec<String> = fa
        .keys()
        .filter(|k| !fb.contains_key(*k))
        .chain(fb.keys().filter(|k| !fa.contains_key(*k)))
        .cloned()
        .collect();
    unrecorded.sort();
    for key in &unrecorded {
        fa.remove(key);
        fb.remove(key);
    }
    FieldDiff {
        differing: differences(&fa, &fb),
        unrecorded,
    }
}

/// Refuses a plan that compares what was not measured the same way: each
/// pair's baseline and treatment must agree on every field (points too),
/// and the treatments of a row's seed slots and of an average's rows on
/// every field but the points. Fields only one side records are noted.
///
/// Errors: [`Error::InvalidArgument`] naming the row or average, both
/// folders and each differing field with both values.
pub fn check_plan(
    rows: &[RowInput],
    averages: &[AverageRow],
    notes: &mut Vec<String>,
) -> Result<()> {
    for row in rows {
        let what = format!("row `{}`", row.label);
        for p in &row.pairs {
            PAIR.check(&what, &p.baseline, &p.treatment, notes)?;
        }
        let first = &row.pairs[0].treatment;
        for p in &row.pairs[1..] {
            SEED_SLOTS.check(&what, first, &p.treatment, notes)?;
        }
    }
    for a in averages {
        let what = format!("average row `{}`", a.label);
        let first = &rows[a.members[0]].pairs[0].treatment;
        for &k in &a.members[1..] {
            AVERAGE.check(&what, first, &rows[k].pairs[0].treatment, notes)?;
        }
    }
    Ok(())
}

/// What [`check_plan`] compares: two roles, whether the points count, and
/// the fix when they differ.
struct Scope {
    roles: [&'static str; 2],
    same_points: bool,
    fix: &'static str,
}

const PAIR: Scope = Scope {
    roles: ["baseline", "treatment"],
    same_points: true,
    fix: "evaluate both checkpoints (of one data set) with the same `attack` flags: --norm, \
          --eps, --attacks, and --subset or --n-eval/--seed",
};

const SEED_SLOTS: Scope = Scope {
    roles: ["seed slot", "seed slot"],
    same_points: false,
    fix: "add the differing property (as `eval.<column>` of summary.csv, e.g. eval.eps) to \
          [pairing] match of the spec, so each threat model gets its own rows",
};

const AVERAGE: Scope = Scope {
    roles: ["member row", "member row"],
    same_points: false,
    fix: "average only rows of one threat model: list them in the spec's [[average]] include \
          or exclude, or compare each threat model in its own `bootstrap` run",
};

impl Scope {
    fn check(
        &self,
        what: &str,
        a: &Evaluation,
        b: &Evaluation,
        notes: &mut Vec<String>,
    ) -> Result<()> {
        let c = diff_fields(&a.measurement, &b.measurement, self.same_points);
        for field in c.unrecorded {
            let note = format!(
                "`{field}` is recorded in only one of {} and {} (written by an older `attack`): \
                 not compared",
                a.dir.display(),
                b.dir.display()
            );
            if !notes.contains(&note) {
                notes.push(note);
            }
        }
        if c.differing.is_empty() {
            return Ok(());
        }
        let [ra, rb] = self.roles;
        Err(Error::invalid(
            "comparison",
            what,
            format!(
                "{ra} {} and {rb} {} were measured under different threat models ({}; {ra} → \
                 {rb}), so their difference is not an effect. Fix: {}",
                a.dir.display(),
                b.dir.display(),
                c.differing.join("; "),
                self.fix
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::average::AverageRow;
    use super::super::pairing::explicit_row;
    use super::super::testing::evaluation;
    use super::*;
    use crate::attack::square::WindowRange;
    use crate::attack::state::EvalIdentity;
    use serde_json::json;

    fn eval(dir: &str, norm: &str, eps: f64) -> Evaluation {
        let clean: &[u8] = &[1, 0, 1];
        let mut e = evaluation(dir, "fp", &[("clean", clean), ("aa", clean)], json!({}));
        e.measurement.norm = Some(norm.into());
        e.measurement.eps = Some(eps);
        e
    }

    fn plan(pairs: &[(Evaluation, Evaluation)]) -> Vec<RowInput> {
        pairs
            .iter()
            .map(|(b, t)| explicit_row(b.clone(), t.clone(), t.dir.display().to_string()).unwrap())
            .collect()
    }

    #[test]
    fn a_pair_under_two_threat_models_is_refused_naming_the_field_and_both_values() {
        let mut notes = Vec::new();
        let same = plan(&[(eval("a", "linf", 0.2), eval("b", "linf", 0.2))]);
        check_plan(&same, &[], &mut notes).unwrap();
        let rows = plan(&[(eval("a", "linf", 0.2), eval("b", "linf", 0.05))]);
        let e = check_plan(&rows, &[], &mut notes).unwrap_err().to_string();
        assert!(e.contains("eps: 0.2 → 0.05"), "{e}");
        let rows = plan(&[(eval("a", "linf", 0.2), eval("b", "l2", 0.2))]);
        let e = check_plan(&rows, &[], &mut notes).unwrap_err().to_string();
        assert!(e.contains("norm: \"linf\" → \"l2\""), "{e}");
        let mut other = eval("b", "linf", 0.2);
        other.measurement.attacks = vec!["pgd20".into()];
        other
            .measurement
            .settings
            .insert("square_offsets".into(), json!("full"));
        let mut base = eval("a", "linf", 0.2);
        base.measurement
            .settings
            .insert("square_offsets".into(), json!("reference"));
        let e = check_plan(&plan(&[(base, other)]), &[], &mut notes)
            .unwrap_err()
            .to_string();
        assert!(e.contains("attacks: [\"aa\"] → [\"pgd20\"]"), "{e}");
        assert!(
            e.contains("square_offsets: \"reference\" → \"full\""),
            "{e}"
        );
        assert!(notes.is_empty(), "{notes:?}");
    }

    #[test]
    fn an_average_over_rows_of_two_threat_models_is_refused_but_subsets_may_differ() {
        let mut far = eval("c", "linf", 0.2);
        far.measurement.subset_fingerprint = "other".into();
        far.fingerprint = "other".into();
        let rows = plan(&[
            (eval("a", "linf", 0.2), eval("b", "linf", 0.2)),
            (far.clone(), far),
        ]);
        let avg = [AverageRow {
            label: "Avg.".into(),
            members: vec![0, 1],
        }];
        check_plan(&rows, &avg, &mut Vec::new()).unwrap();
        let rows = plan(&[
            (eval("a", "linf", 0.2), eval("b", "linf", 0.2)),
            (eval("c", "linf", 0.05), eval("d", "linf", 0.05)),
        ]);
        let e = check_plan(&rows, &avg, &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("average row `Avg.`") && e.contains("eps: 0.2 → 0.05"),
            "{e}"
        );
    }

    #[test]
    fn a_field_only_one_side_records_is_noted_not_compared() {
        let mut old = eval("old", "linf", 0.2);
        old.measurement.eps = None;
        let mut notes = Vec::new();
        check_plan(&plan(&[(old, eval("new", "linf", 0.05))]), &[], &mut notes).unwrap();
        assert_eq!(notes.len(), 1);
        assert!(
            notes[0].contains("`eps` is recorded in only one of old and new"),
            "{notes:?}"
        );
    }

    #[test]
    fn the_identity_leaves_out_model_seed_and_batch_size_but_keeps_square_s_window() {
        let spec = |arch: crate::models::Arch| crate::models::ModelSpec {
            arch,
            activation: crate::models::Activation::Relu,
            mlp_hidden: vec![8],
            input_shape: vec![1, 8, 8],
            num_outputs: 10,
        };
        let id = |sha: &str, seed: u64| EvalIdentity {
            checkpoint_sha256: sha.into(),
            dataset: "digits".into(),
            norm: crate::attack::Norm::L2,
            eps: 0.5,
            attacks: vec!["aa".into()],
            seed,
            subset_fingerprint: "fp".into(),
            n_points: 3,
            batch_size: 7,
            square_window_range: Some(WindowRange::Reference),
            model: Some(spec(if seed == 0 {
                crate::models::Arch::Mlp
            } else {
                crate::models::Arch::CnnSmall
            })),
        };
        let fields = |id: EvalIdentity| match serde_json::to_value(id).unwrap() {
            Value::Object(map) => Measurement::of_fields(map).unwrap(),
            other => panic!("{other}"),
        };
        let (a, b) = (fields(id("00", 0)), fields(id("ff", 1)));
        assert_eq!(a, b);
        assert_eq!(a.norm.as_deref(), Some("l2"));
        assert_eq!(a.eps, Some(0.5));
        assert_eq!(a.settings.len(), 1, "{:?}", a.settings);
        let full = EvalIdentity {
            square_window_range: Some(WindowRange::Full),
            ..id("00", 0)
        };
        assert_ne!(
            fields(full),
            a,
            "Square's window range is part of the measurement"
        );
    }

    #[test]
    fn read_takes_the_state_s_identity_with_later_fields_else_the_summary() {
        let dir = tempfile::tempdir().unwrap();
        let run = EvalRun::at(dir.path());
        let summary: BTreeMap<String, String> = [("norm", "linf"), ("eps", "0.25")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into();
        let old = Measurement::read(&run, &summary, &["pgd1".into()], "fp").unwrap();
        assert_eq!(
            (old.norm.as_deref(), old.eps, old.dataset),
            (Some("linf"), Some(0.25), None)
        );
        let state = json!({"format": STATE_FORMAT, "config": {
            "checkpoint_sha256": "00", "dataset": "digits", "norm": "l2", "eps": 0.5,
            "attacks": ["aa"], "seed": 0, "subset_fingerprint": "fp", "n_points": 3,
            "batch_size": 2, "square_offsets": "full"}});
        std::fs::write(run.state(), state.to_string()).unwrap();
        let new = Measurement::read(&run, &summary, &["pgd1".into()], "fp").unwrap();
        assert_eq!((new.norm.as_deref(), new.eps), (Some("l2"), Some(0.5)));
        assert_eq!(new.attacks, ["aa"]);
        assert_eq!(new.settings.keys().collect::<Vec<_>>(), ["square_offsets"]);
        let broken = json!({"format": STATE_FORMAT, "config": {"eps": 0.5}});
        std::fs::write(run.state(), broken.to_string()).unwrap();
        let e = Measurement::read(&run, &summary, &[], "fp")
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not an evaluation identity"), "{e}");
    }

    #[test]
    fn seed_slots_of_one_row_under_two_threat_models_are_refused() {
        let mut rows = plan(&[(eval("a", "linf", 0.2), eval("b", "linf", 0.2))]);
        let other = plan(&[(eval("c", "linf", 0.05), eval("d", "linf", 0.05))]);
        rows[0].pairs.extend(other[0].pairs.clone());
        let e = check_plan(&rows, &[], &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("seed slot b and seed slot d") && e.contains("eps: 0.2 → 0.05"),
            "{e}"
        );
        assert!(e.contains("[pairing] match"), "{e}");
    }
}
