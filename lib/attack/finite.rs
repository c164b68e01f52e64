//! NaN or ±Inf logits and input gradients stop an evaluation with
//! [`Error::NonFinite`] instead of producing a number. A model whose outputs
//! are not finite predicts class 0 everywhere (argmax of NaN), so without
//! this check every correctly classified point of class 0 would be reported
//! "robust"; gradient attacks fed NaN gradients keep their start point and
//! report the same.
//!
//! Cost: logits are checked once per batch (the clean pass, and the points
//! each attack batch returns): one `isfinite().all()` and one read to the
//! host. Gradients are checked without any per-step read:
//! [`super::loss_and_grad`] folds each gradient's `isfinite().all()` into a
//! per-thread flag that stays on the gradient's device (no
//! synchronisation), and the batch loop reads it once per batch with
//! [`check_gradients`].
use crate::error::{Error, Result};
use std::cell::RefCell;
use tch::Tensor;

thread_local! {
    /// All gradients finite since the last [`check_gradients`] (a bool
    /// scalar on the gradients' device); `None` when none was computed.
    static GRADIENTS_FINITE: RefCell<Option<Tensor>> = const { RefCell::new(None) };
}

const FIX: &str = "the model's weights are finite but its outputs or gradients are not on these \
                   inputs (they overflow); evaluate another checkpoint, or retrain this one with a \
                   smaller --lr";

/// Folds `grad`'s finiteness into the per-thread flag (no host read).
pub(super) fn note_gradient(grad: &Tensor) {
    let ok = grad.isfinite().all();
    GRADIENTS_FINITE.with(|cell| {
        let mut cell = cell.borrow_mut();
        let next = match cell.take() {
            Some(prev) => prev.logical_and(&ok),
            None => ok,
        };
        *cell = Some(next);
    });
}

/// Whether every input gradient computed on this thread since the last call
/// was finite (true when none was computed); resets the flag.
pub fn gradients_finite_since_last() -> bool {
    GRADIENTS_FINITE
        .with(|cell| cell.borrow_mut().take())
        .is_none_or(|t| bool::try_from(&t).unwrap_or(false))
}

/// Stops `what` (e.g. "attack pgd20") when an input gradient computed since
/// the last call was NaN or ±Inf.
///
/// Errors: [`Error::NonFinite`].
pub fn check_gradients(what: &str) -> Result<()> {
    if gradients_finite_since_last() {
        return Ok(());
    }
    Err(Error::NonFinite {
        what: format!("an input gradient of {what}"),
        detail: "NaN or ±Inf in the cross-entropy/margin gradient of the model".into(),
        fix: FIX.into(),
    })
}

/// Stops `what` when `logits` `[B, K]` hold NaN or ±Inf.
///
/// Errors: [`Error::NonFinite`] with the number of points affected.
pub fn check_logits(logits: &Tensor, what: &str) -> Result<()> {
    if bool::try_from(logits.isfinite().all()).unwrap_or(false) {
        return Ok(());
    }
    let rows = logits
        .isfinite()
        .logical_not()
        .flatten(1, -1)
        .any_dim(1, false)
        .sum(tch::Kind::Int64)
        .int64_value(&[]);
    Err(Error::NonFinite {
        what: format!("the model's logits in {what}"),
        detail: format!(
            "{rows} of {} points have NaN or ±Inf logits",
            logits.size()[0]
        ),
        fix: FIX.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn non_finite_logits_and_gradients_are_errors_and_the_flag_resets() {
        let ok = Tensor::zeros([3, 2], (Kind::Float, Device::Cpu));
        check_logits(&ok, "test").unwrap();
        for bad in [f64::NAN, f64::INFINITY] {
            let z = ok.copy();
            let _ = z.get(1).get(0).fill_(bad);
            let err = check_logits(&z, "attack x").unwrap_err().to_string();
            assert!(
                err.contains("1 of 3 points") && err.contains("attack x"),
                "{err}"
            );
        }
        let _ = gradients_finite_since_last();
        note_gradient(&ok);
        check_gradients("test").unwrap();
        note_gradient(&Tensor::from_slice(&[1.0f32, f32::NAN]));
        note_gradient(&ok);
        let err = check_gradients("attack y").unwrap_err();
        assert!(matches!(err, Error::NonFinite { .. }), "{err}");
        check_gradients("test").unwrap();
    }
}
