//! Pairing: which baseline evaluation each treatment is compared with, and
//! how the pairs group into the rows of a table.
//!
//! Explicit pairs ([`explicit_rows`]) make one row each. A spec
//! ([`spec_rows`]) pairs the grid points of a sweep by rule: a treatment
//! (`vary` ≠ `baseline`) is paired with the one baseline (`vary` =
//! `baseline`) that has the same values of the `match` keys and the same
//! seed. Pairs then group into families (the spec's `[[row]]`s, or the
//! distinct values of the match keys that vary), and each family splits by
//! the varied value x into rows whose seeds are the row's slots.
//!
//! Everything after loading works on in-memory [`Evaluation`]s
//! ([`rows_by_rule`], [`explicit_row`]).
use super::eval::{check_pairable, Evaluation};
use super::spec::{same_value, show, Spec};
use crate::error::{Error, Result};
use crate::layout;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The varied hyperparameter of explicit pairs: a row's x is its
/// treatment's λ.
pub const EXPLICIT_VARY: &str = "lambda";

/// One baseline/treatment pair (one seed slot of a row).
#[derive(Debug, Clone)]
pub struct Pair {
    pub baseline: Evaluation,
    pub treatment: Evaluation,
    /// The seed value (for clustering and labels), when known.
    pub seed: Option<String>,
}

/// A table row before resampling: one or more pairs (seeds) of the same
/// comparison.
#[derive(Debug, Clone)]
pub struct RowInput {
    pub label: String,
    /// Rows of one family differ only in the varied hyperparameter (x).
    pub family: String,
    pub x: Option<f64>,
    pub pairs: Vec<Pair>,
}

/// Pairs of one family: a spec `[[row]]`, or one combination of the match
/// keys that vary.
#[derive(Debug, Clone)]
struct Family {
    label: String,
    pairs: Vec<Pair>,
}

/// The Greek letter of a hyperparameter name (λ, β) for labels, else the name.
pub fn symbol(name: &str) -> String {
    match name {
        "lambda" => "λ".into(),
        "beta" => "β".into(),
        "strength" => "λ₀".into(),
        other => other.into(),
    }
}

/// The x axis label of a hyperparameter: its [`symbol`], spelled out for
/// `strength` (eval.rs's `STRENGTH`).
pub fn axis_label(name: &str) -> String {
    match name {
        "strength" => "strength: TASER's λ₀ of equal initial λ·penalty".into(),
        other => symbol(other),
    }
}

/// Names an evaluation folder may have inside its run's folder; a row is
/// then labelled by the run's folder.
const EVAL_FOLDER_NAMES: [&str; 3] = [layout::EVAL_DIR, "attack", "evaluation"];

/// The default label of an explicit pair: the treatment folder's name, or
/// its parent's when the folder is an evaluation folder (`…/<run>/eval`).
pub fn default_label(dir: &Path) -> String {
    let name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| p.display().to_string())
    };
    match dir.parent() {
        Some(p) if EVAL_FOLDER_NAMES.contains(&name(dir).as_str()) && p.file_name().is_some() => {
            name(p)
        }
        _ => name(dir),
    }
}

fn x_of(e: &Evaluation, key: &str) -> Option<f64> {
    e.attributes.get(key).and_then(Value::as_f64)
}

/// Explicit pairs (baseline dir, treatment dir, optional label), in order:
/// loads both evaluations of each and makes one row per pair.
///
/// Errors: [`Error::InvalidArgument`] for an empty list; the loading errors
/// of [`Evaluation::load`]; [`Error::CorruptInput`] for a pair not
/// evaluated on the same points (see [`check_pairable`]).
pub fn explicit_rows(list: &[(PathBuf, PathBuf, Option<String>)]) -> Result<Vec<RowInput>> {
    if list.is_empty() {
        return Err(Error::invalid(
            "--baseline/--treatment",
            "none",
            "give at least one --baseline DIR --treatment DIR pair, or --spec FILE --runs DIR",
        ));
    }
    list.iter()
        .map(|(b, t, label)| {
            let baseline = Evaluation::load(b, None)?;
            let treatment = Evaluation::load(t, None)?;
            let label = label.clone().unwrap_or_else(|| default_label(t));
            explicit_row(baseline, treatment, label)
        })
        .collect()
}

/// The row of one explicit pair: its own family, x = the treatment's λ
/// ([`EXPLICIT_VARY`]), one seed slot. Refuses a pair that is not pairable.
pub fn explicit_row(
    baseline: Evaluation,
    treatment: Evaluation,
    label: String,
) -> Result<RowInput> {
    check_pairable(&baseline, &treatment)?;
    Ok(RowInput {
        family: label.clone(),
        label,
        x: x_of(&treatment, EXPLICIT_VARY),
        pairs: vec![Pair {
            seed: treatment.attributes.get("seed").map(|v| show(Some(v))),
            baseline,
            treatment,
        }],
    })
}

/// Loads the grid points of `runs` (see [`super::spec::grid_points`]) with
/// their sidecars, pairs them by the spec's rule and groups them into rows
/// ([`rows_by_rule`]).
///
/// Errors: [`Error::MissingInput`] when no grid point holds an evaluation or
/// one has no sidecar; those of [`rows_by_rule`].
pub fn spec_rows(spec: &Spec, runs: &Path, notes: &mut Vec<String>) -> Result<Vec<RowInput>> {
    let evals = load_grid(spec, runs)?;
    rows_by_rule(spec, &evals, runs, notes)
}

fn load_grid(spec: &Spec, runs: &Path) -> Result<Vec<Evaluation>> {
    let points = super::spec::grid_points(runs, &spec.eval_dir)?;
    if points.is_empty() {
        return Err(Error::MissingInput {
            path: runs.to_path_buf(),
            reason: format!(
                "no grid point holds {}/{}",
                spec.eval_dir,
                layout::PER_SAMPLE
            ),
            fix: format!(
                "run `attack --out <point>/{}` for each grid point, or set [layout] eval_dir in {}",
                spec.eval_dir,
                spec.path.display()
            ),
        });
    }
    let mut evals = Vec::new();
    for p in &points {
        let side = p.join(&spec.sidecar);
        let e = Evaluation::load(&p.join(&spec.eval_dir), Some(&side))?;
        if e.sidecar.is_none() {
            return Err(Error::MissingInput {
                path: side,
                reason: "pairing by rule needs the checkpoint's hyperparameters".into(),
                fix: format!(
                    "keep `train`'s {} in each grid point, or set [layout] sidecar in {}",
                    layout::MODEL_SIDECAR,
                    spec.path.display()
                ),
            });
        }
        evals.push(e);
    }
    Ok(evals)
}

/// Pairs the evaluations of a sweep (`runs` names it in messages) by the
/// spec's rule and groups the pairs into rows: families by `[[row]]` (or by
/// the match keys that vary), split by x, sorted by x, seeds sorted.
///
/// Errors ([`Error::CorruptInput`]): a treatment with no baseline or with
/// more than one; no treatment at all; a `[[row]]` that matches no pair; a
/// row with the same seed twice; a pair not evaluated on the same points.
pub fn rows_by_rule(
    spec: &Spec,
    evals: &[Evaluation],
    runs: &Path,
    notes: &mut Vec<String>,
) -> Result<Vec<RowInput>> {
    let pairs = pair_by_rule(spec, evals, runs, notes)?;
    let families = if spec.rows.is_empty() {
        families_by_match_keys(spec, pairs)
    } else {
        families_by_rows(spec, pairs, runs)?
    };
    let mut rows = Vec::new();
    for family in families {
        rows.extend(split_by_x(spec, family)?);
    }
    Ok(rows)
}

fn is_baseline(spec: &Spec, e: &Evaluation) -> bool {
    same_value(e.attributes.get(&spec.vary), Some(&spec.baseline))
}

/// A treatment the spec asks for: any non-baseline, or one of `treatments`.
fn is_wanted_treatment(spec: &Spec, e: &Evaluation) -> bool {
    !is_baseline(spec, e)
        && spec.treatments.as_ref().is_none_or(|list| {
            list.iter()
                .any(|v| same_value(e.attributes.get(&spec.vary), Some(v)))
        })
}

fn describe(e: &Evaluation, keys: &[String]) -> String {
    keys.iter()
        .map(|k| format!("{k}={}", show(e.attributes.get(k))))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One pair per wanted treatment, with the one baseline that agrees with it
/// on the match keys and the seed key. Notes baselines left without one.
fn pair_by_rule(
    spec: &Spec,
    evals: &[Evaluation],
    runs: &Path,
    notes: &mut Vec<String>,
) -> Result<Vec<Pair>> {
    let mut rule_keys = spec.match_keys.clone();
    rule_keys.push(spec.seed_key.clone());
    let mut pairs: Vec<Pair> = Vec::new();
    let mut used_baselines = vec![false; evals.len()];
    // With [[row]]s, a treatment no row selects is not shown: it needs no
    // baseline (e.g. the λ = 0 fine-tune among `reg = "stein"` treatments
    // of a TASER-vs-grad-norm spec).
    let (shown, hidden): (Vec<&Evaluation>, Vec<&Evaluation>) = evals
        .iter()
        .filter(|e| is_wanted_treatment(spec, e))
        .partition(|e| spec.rows.is_empty() || spec.rows.iter().any(|r| matches(e, &r.filter)));
    if !hidden.is_empty() {
        notes.push(format!(
            "{} treatment grid point(s) matched no [[row]] of the spec and are not shown",
            hidden.len()
        ));
    }
    for t in shown {
        let candidates = baselines_of(spec, evals, t, &rule_keys);
        match candidates.as_slice() {
            [k] => {
                used_baselines[*k] = true;
                let baseline = evals[*k].clone();
                check_pairable(&baseline, t)?;
                pairs.push(Pair {
                    seed: Some(show(t.attributes.get(&spec.seed_key))),
                    baseline,
                    treatment: t.clone(),
                });
            }
            [] => return Err(no_baseline(spec, t, &rule_keys)),
            many => return Err(several_baselines(spec, t, &rule_keys, many, evals)),
        }
    }
    if pairs.is_empty() && hidden.is_empty() {
        return Err(Error::CorruptInput {
            path: runs.to_path_buf(),
            reason: format!(
                "no treatment ({} ≠ {}) found among {} grid points",
                spec.vary,
                show(Some(&spec.baseline)),
                evals.len()
            ),
            fix: "check [pairing] vary/baseline/treatments of the spec and the sweep's grid".into(),
        });
    }
    let unused = used_baselines
        .iter()
        .zip(evals)
        .filter(|(u, e)| !**u && is_baseline(spec, e))
        .count();
    if unused > 0 {
        notes.push(format!(
            "{unused} baseline grid point(s) had no treatment and are not shown"
        ));
    }
    Ok(pairs)
}

/// The baselines a treatment may pair with: those agreeing with it on the
/// rule keys; when there are several, those measured as it was (the
/// [`super::measurement::Measurement`] tells evaluations at several ε or
/// norms apart without listing `eval.eps` in `[pairing] match`), if any.
fn baselines_of(spec: &Spec, evals: &[Evaluation], t: &Evaluation, keys: &[String]) -> Vec<usize> {
    let by_rule: Vec<usize> = (0..evals.len())
        .filter(|&k| {
            is_baseline(spec, &evals[k])
                && keys
                    .iter()
                    .all(|key| same_value(evals[k].attributes.get(key), t.attributes.get(key)))
        })
        .collect();
    let measured_alike: Vec<usize> = by_rule
        .iter()
        .copied()
        .filter(|&k| evals[k].measurement == t.measurement)
        .collect();
    if by_rule.len() > 1 && !measured_alike.is_empty() {
        measured_alike
    } else {
        by_rule
    }
}

fn no_baseline(spec: &Spec, t: &Evaluation, rule_keys: &[String]) -> Error {
    Error::CorruptInput {
        path: t.dir.clone(),
        reason: format!(
            "no baseline under the rule of {}: no grid point has {}={} and {}",
            spec.path.display(),
            spec.vary,
            show(Some(&spec.baseline)),
            describe(t, rule_keys)
        ),
        fix: format!(
            "train and evaluate that baseline, or drop keys from [pairing] match / \
             list only the wanted values in [pairing] treatments of {}",
            spec.path.display()
        ),
    }
}

fn several_baselines(
    spec: &Spec,
    t: &Evaluation,
    rule_keys: &[String],
    many: &[usize],
    evals: &[Evaluation],
) -> Error {
    Error::CorruptInput {
        path: t.dir.clone(),
        reason: format!(
            "{} baselines match it under the rule ({}): {}",
            many.len(),
            describe(t, rule_keys),
            many.iter()
                .map(|&k| evals[k].dir.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        fix: format!(
            "add the hyperparameter that tells them apart to [pairing] match in {}",
            spec.path.display()
        ),
    }
}

/// Without `[[row]]`s: one family per combination of the match keys that
/// vary among the treatments (labelled `key=value, …`), or per `method`
/// when none varies; in order of first appearance.
fn families_by_match_keys(spec: &Spec, pairs: Vec<Pair>) -> Vec<Family> {
    let varying: Vec<String> = spec
        .match_keys
        .iter()
        .filter(|k| {
            pairs.iter().any(|p| {
                !same_value(
                    p.treatment.attributes.get(*k),
                    pairs[0].treatment.attributes.get(*k),
                )
            })
        })
        .cloned()
        .collect();
    let mut families: Vec<Family> = Vec::new();
    for p in pairs {
        let label = if varying.is_empty() {
            show(p.treatment.attributes.get("method"))
        } else {
            describe(&p.treatment, &varying)
        };
        match families.iter_mut().find(|f| f.label == label) {
            Some(f) => f.pairs.push(p),
            None => families.push(Family {
                label,
                pairs: vec![p],
            }),
        }
    }
    families
}

fn matches(e: &Evaluation, filter: &BTreeMap<String, Value>) -> bool {
    filter
        .iter()
        .all(|(k, v)| same_value(e.attributes.get(k), Some(v)))
}

/// One family per `[[row]]`: the pairs whose treatment matches its `where`
/// (a pair may appear in several rows; [`pair_by_rule`] paired only
/// treatments some row selects).
fn families_by_rows(spec: &Spec, pairs: Vec<Pair>, runs: &Path) -> Result<Vec<Family>> {
    let mut families = Vec::new();
    for r in &spec.rows {
        let members: Vec<Pair> = pairs
            .iter()
            .filter(|p| matches(&p.treatment, &r.filter))
            .cloned()
            .collect();
        if members.is_empty() {
            return Err(Error::CorruptInput {
                path: spec.path.clone(),
                reason: format!(
                    "row `{}` (where {}) matches no baseline/treatment pair in {}",
                    r.label,
                    r.filter
                        .iter()
                        .map(|(k, v)| format!("{k}={}", show(Some(v))))
                        .collect::<Vec<_>>()
                        .join(", "),
                    runs.display()
                ),
                fix: "run that grid point and its baseline, or remove the row from the spec".into(),
            });
        }
        families.push(Family {
            label: r.label.clone(),
            pairs: members,
        });
    }
    Ok(families)
}

/// Splits a family by the varied value x (ascending); the pairs of one x
/// are the row's seed slots, sorted by seed. Rows are labelled
/// `family (λ = x)` when the family has several x.
fn split_by_x(spec: &Spec, family: Family) -> Result<Vec<RowInput>> {
    let Family {
        label: family,
        pairs,
    } = family;
    let mut xs: Vec<f64> = pairs
        .iter()
        .filter_map(|p| x_of(&p.treatment, &spec.vary))
        .collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    let several = xs.len() > 1;
    let mut groups: Vec<(Option<f64>, Vec<Pair>)> = Vec::new();
    for p in pairs {
        let x = x_of(&p.treatment, &spec.vary);
        match groups.iter_mut().find(|(gx, _)| *gx == x) {
            Some((_, v)) => v.push(p),
            None => groups.push((x, vec![p])),
        }
    }
    groups.sort_by(|a, b| a.0.unwrap_or(f64::NAN).total_cmp(&b.0.unwrap_or(f64::NAN)));
    let mut rows = Vec::new();
    for (x, mut slots) in groups {
        slots.sort_by(|a, b| a.seed.cmp(&b.seed));
        if let Some(w) = slots.windows(2).find(|w| w[0].seed == w[1].seed) {
            return Err(Error::CorruptInput {
                path: w[1].treatment.dir.clone(),
                reason: format!(
                    "row `{family}` has {}={} twice (also {})",
                    spec.seed_key,
                    w[0].seed.clone().unwrap_or_default(),
                    w[0].treatment.dir.display()
                ),
                fix: format!(
                    "add the hyperparameter that tells them apart to [pairing] match or a [[row]] where in {}",
                    spec.path.display()
                ),
            });
        }
        let label = match (several, x) {
            (true, Some(x)) => format!("{family} ({} = {x})", symbol(&spec.vary)),
            _ => family.clone(),
        };
        rows.push(RowInput {
            label,
            family: family.clone(),
            x,
            pairs: slots,
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::testing::evaluation;
    use serde_json::json;

    const SPEC: &str = "[pairing]\nmatch = [\"method\"]\nvary = \"lambda\"\n";

    fn spec(text: &str) -> Spec {
        Spec::parse(Path::new("cmp.toml"), text).unwrap()
    }

    /// A grid point of `method` at `lambda` and `seed` on subset "fp".
    fn point(dir: &str, method: &str, lambda: f64, seed: u64) -> Evaluation {
        let clean: &[u8] = &[1, 0, 1, 1];
        evaluation(
            dir,
            "fp",
            &[("clean", clean)],
            json!({"method": method, "lambda": lambda, "seed": seed}),
        )
    }

    fn by_rule(spec: &Spec, evals: &[Evaluation]) -> Result<(Vec<RowInput>, Vec<String>)> {
        let mut notes = Vec::new();
        let rows = rows_by_rule(spec, evals, Path::new("runs"), &mut notes)?;
        Ok((rows, notes))
    }

    fn dirs(row: &RowInput) -> Vec<(String, String)> {
        row.pairs
            .iter()
            .map(|p| {
                (
                    p.baseline.dir.display().to_string(),
                    p.treatment.dir.display().to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn an_explicit_pair_needs_the_same_subset_in_the_same_order() {
        let clean: &[u8] = &[1, 0, 1];
        let a = evaluation("a", "fpA", &[("clean", clean)], json!({}));
        let other = evaluation("b", "fpB", &[("clean", clean)], json!({}));
        let e = explicit_row(a.clone(), other, "x".into()).unwrap_err();
        assert!(e.to_string().contains("different subsets"), "{e}");

        let mut shuffled = evaluation("c", "fpA", &[("clean", clean)], json!({}));
        shuffled.index.swap(0, 1);
        let e = explicit_row(a.clone(), shuffled, "x".into()).unwrap_err();
        assert!(e.to_string().contains("row 1 has index 1"), "{e}");

        let t = evaluation(
            "d",
            "fpA",
            &[("clean", clean)],
            json!({"lambda": 2, "seed": 7}),
        );
        let row = explicit_row(a, t, "mine".into()).unwrap();
        assert_eq!((row.label.as_str(), row.family.as_str()), ("mine", "mine"));
        assert_eq!(row.x, Some(2.0));
        assert_eq!(row.pairs.len(), 1);
        assert_eq!(row.pairs[0].seed.as_deref(), Some("7"));
    }

    #[test]
    fn an_explicit_row_is_labelled_by_its_run_folder() {
        assert_eq!(default_label(Path::new("runs/std-taser/eval")), "std-taser");
        assert_eq!(
            default_label(Path::new("runs/std-taser/attack")),
            "std-taser"
        );
        assert_eq!(default_label(Path::new("runs/std-taser")), "std-taser");
        assert_eq!(default_label(Path::new("eval")), "eval");
    }

    #[test]
    fn each_treatment_pairs_with_the_baseline_of_its_method_and_seed() {
        let evals = [
            point("std-l0-s1", "standard", 0.0, 1),
            point("std-l1-s1", "standard", 1.0, 1),
            point("std-l0-s0", "standard", 0.0, 0),
            point("std-l1-s0", "standard", 1.0, 0),
            point("pgd-l0-s0", "pgd-at", 0.0, 0),
            point("pgd-l1-s0", "pgd-at", 1.0, 0),
            point("pgd-l0-s5", "pgd-at", 0.0, 5),
        ];
        let (rows, notes) = by_rule(&spec(SPEC), &evals).unwrap();
        // Families in order of first appearance, labelled by the varying
        // match key; seeds of a row sorted.
        let labels: Vec<&str> = rows.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(labels, ["method=standard", "method=pgd-at"]);
        let pair = |b: &str, t: &str| (b.to_string(), t.to_string());
        assert_eq!(
            dirs(&rows[0]),
            [
                pair("std-l0-s0", "std-l1-s0"),
                pair("std-l0-s1", "std-l1-s1")
            ]
        );
        assert_eq!(dirs(&rows[1]), [pair("pgd-l0-s0", "pgd-l1-s0")]);
        assert_eq!(rows[0].x, Some(1.0));
        assert_eq!(
            notes,
            ["1 baseline grid point(s) had no treatment and are not shown"]
        );
    }

    #[test]
    fn a_treatment_needs_exactly_one_baseline() {
        let orphan = [
            point("std-l0-s0", "standard", 0.0, 0),
            point("std-l1-s1", "standard", 1.0, 1),
        ];
        let e = by_rule(&spec(SPEC), &orphan).unwrap_err().to_string();
        assert!(e.contains("std-l1-s1") && e.contains("no baseline"), "{e}");
        assert!(e.contains("method=standard, seed=1"), "{e}");

        // Without `method` in the rule, both baselines of seed 0 match.
        let twice = [
            point("std-l0", "standard", 0.0, 0),
            point("pgd-l0", "pgd-at", 0.0, 0),
            point("pgd-l1", "pgd-at", 1.0, 0),
        ];
        let e = by_rule(&spec("[pairing]\nvary = \"lambda\"\n"), &twice)
            .unwrap_err()
            .to_string();
        assert!(e.contains("2 baselines match it"), "{e}");
        assert!(e.contains("std-l0") && e.contains("pgd-l0"), "{e}");

        let baselines_only = [point("std-l0", "standard", 0.0, 0)];
        let e = by_rule(&spec(SPEC), &baselines_only)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no treatment (lambda ≠ 0)"), "{e}");
    }

    #[test]
    fn rows_split_by_the_varied_value_and_refuse_a_seed_twice() {
        let text = format!(
            "{SPEC}treatments = [0.5, 2]\n[[row]]\nlabel = \"PGD\"\nwhere = {{ method = \"pgd-at\" }}\n"
        );
        let mut evals = vec![
            point("pgd-l0", "pgd-at", 0.0, 0),
            point("pgd-l2", "pgd-at", 2.0, 0),
            point("pgd-l1", "pgd-at", 1.0, 0),
            point("pgd-l05", "pgd-at", 0.5, 0),
            point("std-l0", "standard", 0.0, 0),
            point("std-l2", "standard", 2.0, 0),
        ];
        let (rows, notes) = by_rule(&spec(&text), &evals).unwrap();
        let labels: Vec<&str> = rows.iter().map(|r| r.label.as_str()).collect();
        // λ = 1 is not a listed treatment; rows sorted by λ.
        assert_eq!(labels, ["PGD (λ = 0.5)", "PGD (λ = 2)"]);
        assert!(rows.iter().all(|r| r.family == "PGD"));
        assert_eq!(
            notes,
            [
                "1 treatment grid point(s) matched no [[row]] of the spec and are not shown",
                "1 baseline grid point(s) had no treatment and are not shown"
            ]
        );

        // A second λ = 2 treatment of seed 0 (it differs in a key outside
        // the rule) lands in the same row slot.
        let mut again = point("pgd-l2-awp", "pgd-at", 2.0, 0);
        again.attributes.insert("awp".into(), json!(true));
        evals.push(again);
        let e = by_rule(&spec(&text), &evals).unwrap_err().to_string();
        assert!(e.contains("row `PGD` has seed=0 twice"), "{e}");
    }

    /// A treatment that no [[row]] selects needs no baseline: the λ = 0
    /// fine-tune (reg = stein) beside TASER in a TASER-vs-grad-norm spec.
    #[test]
    fn a_treatment_no_row_shows_is_not_paired() {
        let text = "[pairing]\nmatch = [\"method\", \"strength\"]\nvary = \"reg\"\n\
                    baseline = \"grad-norm\"\ntreatments = [\"stein\"]\n\
                    [[row]]\nlabel = \"TASER\"\nwhere = { strength = 0.1 }\n";
        let arm = |dir: &str, reg: &str, strength: f64| {
            evaluation(
                dir,
                "fp",
                &[("clean", &[1u8, 0, 1, 1][..])],
                json!({"method": "pgd-at", "reg": reg, "strength": strength, "seed": 0}),
            )
        };
        let evals = [
            arm("control", "stein", 0.0),
            arm("taser", "stein", 0.1),
            arm("grad-norm", "grad-norm", 0.1),
        ];
        let (rows, notes) = by_rule(&spec(text), &evals).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].pairs[0].treatment.dir, Path::new("taser"));
        assert_eq!(rows[0].pairs[0].baseline.dir, Path::new("grad-norm"));
        assert_eq!(
            notes,
            ["1 treatment grid point(s) matched no [[row]] of the spec and are not shown"]
        );
    }

    #[test]
    fn a_row_of_the_spec_that_matches_no_pair_is_refused() {
        let text = format!("{SPEC}[[row]]\nlabel = \"MART\"\nwhere = {{ method = \"mart\" }}\n");
        let evals = [
            point("std-l0", "standard", 0.0, 0),
            point("std-l1", "standard", 1.0, 0),
        ];
        let e = by_rule(&spec(&text), &evals).unwrap_err().to_string();
        assert!(e.contains("cmp.toml"), "{e}");
        assert!(
            e.contains("row `MART` (where method=mart) matches no"),
            "{e}"
        );
    }

    fn at_eps(mut e: Evaluation, eps: f64) -> Evaluation {
        e.measurement.eps = Some(eps);
        e
    }

    #[test]
    fn a_treatment_pairs_with_the_baseline_measured_as_it_was_and_mixing_is_refused() {
        let evals = [
            at_eps(point("b-0.2", "standard", 0.0, 1), 0.2),
            at_eps(point("b-0.05", "standard", 0.0, 1), 0.05),
            at_eps(point("t-0.05", "standard", 1.0, 1), 0.05),
        ];
        let (rows, _) = by_rule(&spec(SPEC), &evals).unwrap();
        assert_eq!(dirs(&rows[0]), [("b-0.05".into(), "t-0.05".into())]);

        let evals = [
            at_eps(point("b-0.2", "standard", 0.0, 1), 0.2),
            at_eps(point("t-0.05", "standard", 1.0, 1), 0.05),
        ];
        let (rows, mut notes) = by_rule(&spec(SPEC), &evals).unwrap();
        let e = super::super::measurement::check_plan(&rows, &[], &mut notes).unwrap_err();
        assert!(e.to_string().contains("eps: 0.2 → 0.05"), "{e}");
    }
}
