//! The metric columns of a comparison: which metrics each row has (those
//! every evaluation of the row has), their table order, and a metric's
//! per-point 0/1 outcomes (or, for [`ROBUST_AVG`], the per-point mean of its
//! components).
use super::eval::Evaluation;
use super::pairing::RowInput;

/// Clean accuracy (per point: the `clean_correct` column).
pub const CLEAN: &str = "clean";
/// Correct under every attack of the evaluation (the `worst_case` column).
pub const WORST_CASE: &str = "worst_case";
/// AutoAttack, the first component of [`ROBUST_AVG`].
pub const AUTOATTACK: &str = "aa";
/// SPSA, the second component of [`ROBUST_AVG`].
pub const SPSA: &str = "spsa";
/// The metric "robust accuracy avg": per point, the mean of the AutoAttack
/// ([`AUTOATTACK`]) and SPSA ([`SPSA`]) outcomes (TASER Table 2).
pub const ROBUST_AVG: &str = "robust_avg";
/// The components averaged for [`ROBUST_AVG`], in this order.
pub const ROBUST_AVG_COMPONENTS: [&str; 2] = [AUTOATTACK, SPSA];

/// The metrics of one row and the notes they call for.
#[derive(Debug, Clone, PartialEq)]
pub struct RowMetrics {
    /// [`CLEAN`], [`ROBUST_AVG`] when a component was evaluated, every
    /// attack column all of the row's evaluations have (in file order), and
    /// [`WORST_CASE`] when all have it.
    pub metrics: Vec<String>,
    /// The components of [`ROBUST_AVG`] present in this row (0, 1 or 2).
    pub robust: Vec<String>,
    /// E.g. "robust avg = aa only (spsa missing)".
    pub notes: Vec<String>,
}

/// The metrics every evaluation (baselines and treatments, all seeds) of
/// `row` has. With one component of [`ROBUST_AVG`] missing, robust avg is
/// the other one alone (with a note); with both missing it is left out.
pub fn row_metrics(row: &RowInput) -> RowMetrics {
    let evals: Vec<&Evaluation> = row
        .pairs
        .iter()
        .flat_map(|p| [&p.baseline, &p.treatment])
        .collect();
    let common: Vec<String> = evals[0]
        .attacks
        .iter()
        .filter(|a| evals.iter().all(|e| e.outcomes.contains_key(*a)))
        .cloned()
        .collect();
    let robust: Vec<String> = ROBUST_AVG_COMPONENTS
        .iter()
        .filter(|a| common.iter().any(|c| c == *a))
        .map(|a| a.to_string())
        .collect();
    let mut metrics = vec![CLEAN.to_string()];
    let mut notes = Vec::new();
    match robust.len() {
        2 => metrics.push(ROBUST_AVG.into()),
        1 => {
            metrics.push(ROBUST_AVG.into());
            let missing = ROBUST_AVG_COMPONENTS
                .iter()
                .find(|c| **c != robust[0])
                .expect("two components");
            notes.push(format!(
                "robust avg = {} only ({missing} missing)",
                robust[0]
            ));
        }
        _ => notes.push(format!(
            "robust avg unavailable (neither {AUTOATTACK} nor {SPSA} evaluated)"
        )),
    }
    metrics.extend(common.iter().cloned());
    if evals.iter().all(|e| e.outcomes.contains_key(WORST_CASE)) {
        metrics.push(WORST_CASE.into());
    }
    RowMetrics {
        metrics,
        robust,
        notes,
    }
}

/// Every metric of any row, once, in table order: [`CLEAN`], [`ROBUST_AVG`],
/// the attacks (in order of first appearance), [`WORST_CASE`].
pub fn table_order(rows: &[RowMetrics]) -> Vec<String> {
    let mut metrics: Vec<String> = Vec::new();
    for m in rows.iter().flat_map(|r| &r.metrics) {
        if !metrics.contains(m) {
            metrics.push(m.clone());
        }
    }
    metrics.sort_by_key(|m| match m.as_str() {
        CLEAN => 0,
        ROBUST_AVG => 1,
        WORST_CASE => 3,
        _ => 2,
    });
    metrics
}

/// True for the metrics that are attacks (not clean, robust avg or worst case).
pub fn is_attack(metric: &str) -> bool {
    ![CLEAN, ROBUST_AVG, WORST_CASE].contains(&metric)
}

/// The per-point outcomes of `metric` for one evaluation (0/1 each, or
/// for [`ROBUST_AVG`] the mean of the `robust` components' outcomes).
pub fn outcomes(e: &Evaluation, metric: &str, robust: &[String]) -> Vec<f64> {
    if metric == ROBUST_AVG {
        let cols: Vec<&Vec<f64>> = robust.iter().map(|c| &e.outcomes[c]).collect();
        (0..e.len())
            .map(|i| cols.iter().map(|c| c[i]).sum::<f64>() / cols.len() as f64)
            .collect()
    } else {
        e.outcomes[metric].clone()
    }
}

/// The attack columns of the per-attack table: the spec's `[tables]
/// attacks` when given (noting those evaluated in no row), else every
/// attack among `metrics`.
pub fn attack_columns(
    metrics: &[String],
    requested: Vec<String>,
    notes: &mut Vec<String>,
) -> Vec<String> {
    if requested.is_empty() {
        return metrics.iter().filter(|m| is_attack(m)).cloned().collect();
    }
    for a in &requested {
        if !metrics.contains(a) {
            notes.push(format!(
                "attack `{a}` of [tables] attacks was evaluated in no row"
            ));
        }
    }
    requested
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::pairing::explicit_row;
    use crate::stats::testing::evaluation;
    use serde_json::json;

    fn row(columns: &[(&str, &[u8])]) -> RowInput {
        let b = evaluation("b", "fp", columns, json!({}));
        let t = evaluation("t", "fp", columns, json!({}));
        explicit_row(b, t, "r".into()).unwrap()
    }

    #[test]
    fn robust_avg_uses_the_components_present_and_says_so() {
        let v: &[u8] = &[1, 0];
        let both = row_metrics(&row(&[
            (CLEAN, v),
            (SPSA, v),
            ("pgd20", v),
            (AUTOATTACK, v),
            (WORST_CASE, v),
        ]));
        assert_eq!(
            both.metrics,
            [CLEAN, ROBUST_AVG, SPSA, "pgd20", AUTOATTACK, WORST_CASE]
        );
        assert_eq!(both.robust, [AUTOATTACK, SPSA]);
        assert!(both.notes.is_empty());

        let spsa_only = row_metrics(&row(&[(CLEAN, v), (SPSA, v)]));
        assert_eq!(spsa_only.robust, [SPSA]);
        assert_eq!(spsa_only.notes, ["robust avg = spsa only (aa missing)"]);
        let none = row_metrics(&row(&[(CLEAN, v), ("pgd20", v)]));
        assert_eq!(none.metrics, [CLEAN, "pgd20"]);
        assert_eq!(
            none.notes,
            ["robust avg unavailable (neither aa nor spsa evaluated)"]
        );
        assert_eq!(
            table_order(&[none, spsa_only, both]),
            [CLEAN, ROBUST_AVG, "pgd20", SPSA, AUTOATTACK, WORST_CASE]
        );
    }

    #[test]
    fn robust_avg_is_the_per_point_mean_of_its_components() {
        let e = evaluation(
            "e",
            "fp",
            &[
                (CLEAN, &[1, 1, 0]),
                (AUTOATTACK, &[1, 0, 0]),
                (SPSA, &[1, 1, 0]),
            ],
            json!({}),
        );
        let robust = [AUTOATTACK.to_string(), SPSA.to_string()];
        assert_eq!(outcomes(&e, ROBUST_AVG, &robust), [1.0, 0.5, 0.0]);
        assert_eq!(outcomes(&e, AUTOATTACK, &robust), [1.0, 0.0, 0.0]);
    }
}
