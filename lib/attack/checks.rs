//! AutoAttack-style sanity checks of an evaluation (Croce & Hein 2020; the
//! reference implementation keeps them in `checks.py`): warnings that a
//! model's robustness figures may be overstated, printed on stderr and
//! returned with the results.
//!
//! - during the clean pass: correctly classified points whose input
//!   gradient of the cross-entropy is all zero (gradient masking or a
//!   saturated softmax), and two forward passes that disagree (randomised
//!   or non-deterministic outputs, which need an EOT evaluation);
//! - after the attacks: a black-box attack (Square within AutoAttack, SPSA)
//!   breaking points that the white-box attacks left robust.
use super::grammar::AttackKind;
use super::state::AttackResult;
use super::{
    cross_entropy, finite, fooled_mask, logits_no_grad, loss_and_grad, per_sample_norm, Norm,
};
use crate::error::Result;
use crate::models::Model;
use tch::{Kind, Tensor};

/// Prints `warning: <text>` on stderr and keeps `text`.
pub fn warn(warnings: &mut Vec<String>, text: String) {
    eprintln!("warning: {text}");
    warnings.push(text);
}

/// The clean pass over the evaluation points `x` `[N, …]` (pixels in
/// [0,1]) with labels `y` `[N]`, in batches of `batch_size`; returns the
/// clean-correct mask `[N]` (bool) and adds the warnings of the clean-pass
/// checks (zero input gradients, non-deterministic outputs on the first
/// batch).
///
/// Errors: [`crate::Error::NonFinite`] when a batch's logits or input
/// gradients hold NaN or ±Inf.
pub fn clean_pass(
    model: &Model,
    x: &Tensor,
    y: &Tensor,
    batch_size: usize,
    warnings: &mut Vec<String>,
) -> Result<Tensor> {
    let _ = finite::gradients_finite_since_last();
    let n = x.size()[0];
    let mut clean_parts = Vec::new();
    let mut zero_grad = 0i64;
    let mut start = 0i64;
    while start < n {
        let len = (batch_size as i64).min(n - start);
        let (xb, yb) = (x.narrow(0, start, len), y.narrow(0, start, len));
        let (logits, _, grad) = loss_and_grad(model, &xb, &|z: &Tensor| cross_entropy(z, &yb));
        finite::check_logits(&logits, "the clean pass")?;
        finite::check_gradients("the clean pass")?;
        let correct = fooled_mask(&logits, &yb).logical_not();
        let zero = per_sample_norm(&grad, Norm::Linf)
            .eq(0.0)
            .logical_and(&correct);
        zero_grad += zero.sum(Kind::Int64).int64_value(&[]);
        if start == 0 {
            check_determinism(model, &xb, &logits, warnings);
        }
        clean_parts.push(correct);
        start += len;
    }
    let clean = Tensor::cat(&clean_parts, 0);
    if zero_grad > 0 {
        let n_correct = clean.sum(Kind::Int64).int64_value(&[]);
        warn(
            warnings,
            format!(
                "{zero_grad} of {n_correct} correctly classified points have an all-zero input gradient of the \
                 cross-entropy: gradient-based attacks cannot move them, so white-box results there are \
                 unreliable (gradient masking or a saturated softmax)"
            ),
        );
    }
    Ok(clean)
}

/// Warns when a second forward pass on `xb` differs from `logits` by more
/// than 1e-5 of the logits' scale.
fn check_determinism(model: &Model, xb: &Tensor, logits: &Tensor, warnings: &mut Vec<String>) {
    let again = logits_no_grad(model, xb);
    let diff = (&again - logits).abs().max().double_value(&[]);
    let scale = logits.abs().max().double_value(&[]).max(1.0);
    if diff > 1e-5 * scale {
        warn(
            warnings,
            format!(
                "two forward passes on the same inputs differ (max |Δlogit| = {diff:.3e}): the model's \
                 outputs are randomised or non-deterministic, so these attacks may overstate its \
                 robustness (an EOT evaluation would be needed)"
            ),
        );
    }
}

/// Warns when a black-box attack (Square, SPSA) breaks points the white-box
/// attacks left robust, a sign of gradient masking. `results` are the
/// finished attacks of `attacks`, in any order.
pub fn black_box_warnings(
    attacks: &[AttackKind],
    results: &[&AttackResult],
    warnings: &mut Vec<String>,
) {
    for r in results {
        if let Some(sq) = r.components.iter().find(|c| c.name == "square") {
            let before = &r.components[r.components.len() - 2];
            let k = before
                .robust
                .iter()
                .zip(&sq.robust)
                .filter(|(b, a)| **b && !**a)
                .count();
            if k > 0 {
                warn(
                    warnings,
                    format!(
                        "within AutoAttack, Square (black-box) broke {k} points that APGD-CE, APGD-T and FAB-T \
                         left robust: the white-box attacks may be hampered by gradient masking"
                    ),
                );
            }
        }
    }
    let is = |r: &AttackResult, white: bool| {
        attacks
            .iter()
            .any(|a| a.to_string() == r.name && a.white_box() == white)
    };
    let white: Vec<&&AttackResult> = results.iter().filter(|r| is(r, true)).collect();
    if white.is_empty() {
        return;
    }
    for r in results.iter().filter(|r| is(r, false)) {
        let k = (0..r.robust.len())
            .filter(|&i| !r.robust[i] && white.iter().all(|w| w.robust[i]))
            .count();
        if k > 0 {
            let names: Vec<&str> = white.iter().map(|w| w.name.as_str()).collect();
            warn(
                warnings,
                format!(
                    "{} (black-box) broke {k} points that every white-box attack run ({}) left robust: \
                     the gradients may be masked, so white-box figures overstate robustness",
                    r.name,
                    names.join(", ")
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::grammar::parse_attacks;
    use super::*;

    fn result(name: &str, robust: &[bool], components: Vec<AttackResult>) -> AttackResult {
        AttackResult {
            name: name.into(),
            robust: robust.to_vec(),
            seconds: 0.0,
            components,
        }
    }

    #[test]
    fn black_box_attacks_beating_white_box_ones_are_warned_about() {
        let (t, f) = (true, false);
        let comps = vec![
            result("apgd-ce", &[t, t, f], vec![]),
            result("apgd-t", &[t, t, f], vec![]),
            result("fab-t", &[t, t, f], vec![]),
            result("square", &[t, f, f], vec![]),
        ];
        let aa = result("aa", &[t, f, f], comps);
        let spsa = result("spsa", &[f, f, f], vec![]);
        let pgd = result("pgd20", &[t, t, f], vec![]);
        let attacks = parse_attacks(&["aa".into(), "spsa".into(), "pgd20".into()]).unwrap();
        let mut w = Vec::new();
        black_box_warnings(&attacks, &[&aa, &spsa, &pgd], &mut w);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("Square") && w[0].contains("broke 1 points"));
        assert!(w[1].contains("spsa") && w[1].contains("broke 1 points"));
        // No warning when the white-box attacks found everything.
        let spsa = result("spsa", &[t, f, f], vec![]);
        let aa = result("aa", &[t, f, f], vec![]);
        let mut w = Vec::new();
        black_box_warnings(&attacks, &[&aa, &spsa, &pgd], &mut w);
        assert!(w.is_empty(), "{w:?}");
    }
}
