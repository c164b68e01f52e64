//! The penalty's weight over training: the linear λ ramp of TASER App. C.5,
//! λ(t) = λ_max·min(1, t/T_warm) at optimiser step t (0-based), λ_max from
//! the start when T_warm = 0 (docs/METHOD.md, "The penalty").
use serde::Serialize;

/// λ(t) of a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LambdaRamp {
    /// λ_max (`--lambda`), ≥ 0; 0 turns the regulariser off.
    pub max: f64,
    /// T_warm in optimiser steps (`--lambda-warmup-steps`, or the
    /// learning-rate warm-up's length when `finetune` ramps over it).
    pub warmup_steps: usize,
}

impl LambdaRamp {
    /// λ(t) at optimiser step `step` (0-based).
    pub fn at(&self, step: usize) -> f64 {
        if self.warmup_steps == 0 {
            self.max
        } else {
            self.max * (step as f64 / self.warmup_steps as f64).min(1.0)
        }
    }

    /// Whether any regulariser is active (λ_max > 0).
    pub fn active(&self) -> bool {
        self.max > 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ramp_rises_linearly_to_lambda_max_and_stays() {
        let ramp = |warmup_steps| LambdaRamp {
            max: 2.0,
            warmup_steps,
        };
        assert_eq!(ramp(10).at(0), 0.0);
        assert_eq!(ramp(10).at(5), 1.0);
        assert_eq!(ramp(10).at(50), 2.0);
        assert_eq!(ramp(0).at(0), 2.0);
        assert!(!LambdaRamp {
            max: 0.0,
            warmup_steps: 0
        }
        .active());
    }
}
