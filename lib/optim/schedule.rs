//! Learning-rate schedules, evaluated per optimisation step.
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::f64::consts::PI;

/// Which schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleKind {
    /// η_max throughout.
    Constant,
    /// η_max·γ^k after the k-th milestone epoch.
    Piecewise,
    /// η_min + ½(η_max − η_min)(1 + cos(π t/T)) over all T steps.
    Cosine,
    /// Linear warm-up from 0 over the warm-up epochs, then cosine.
    WarmupCosine,
}

/// A schedule with its constants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub kind: ScheduleKind,
    pub lr_max: f64,
    pub lr_min: f64,
    pub warmup_epochs: f64,
    pub milestones: Vec<usize>,
    pub gamma: f64,
}

impl Schedule {
    pub fn check(&self, epochs: usize) -> Result<()> {
        if !(self.lr_max > 0.0 && self.lr_max.is_finite()) {
            return Err(Error::invalid(
                "--lr",
                self.lr_max,
                "must be a positive number",
            ));
        }
        if !(0.0..=self.lr_max).contains(&self.lr_min) {
            return Err(Error::invalid(
                "--lr-min",
                self.lr_min,
                "must be in [0, --lr]",
            ));
        }
        if self.kind == ScheduleKind::WarmupCosine
            && !(0.0..epochs as f64).contains(&self.warmup_epochs)
        {
            return Err(Error::invalid(
                "--warmup-epochs",
                self.warmup_epochs,
                format!("must be in [0, {epochs}) (the number of epochs)"),
            ));
        }
        if self.kind == ScheduleKind::Piecewise && self.milestones.is_empty() {
            return Err(Error::invalid(
                "--milestones",
                "(none)",
                "the piecewise schedule needs milestone epochs, e.g. --milestones 100,150",
            ));
        }
        Ok(())
    }

    /// Learning rate at step `step` (0-based) of `total` steps with
    /// `per_epoch` steps per epoch.
    pub fn lr_at(&self, step: usize, total: usize, per_epoch: usize) -> f64 {
        let cosine = |t: f64, span: f64| {
            self.lr_min
                + 0.5
                    * (self.lr_max - self.lr_min)
                    * (1.0 + (PI * (t / span.max(1.0)).min(1.0)).cos())
        };
        match self.kind {
            ScheduleKind::Constant => self.lr_max,
            ScheduleKind::Piecewise => {
                let epoch = step / per_epoch.max(1);
                let passed = self.milestones.iter().filter(|&&m| epoch >= m).count();
                self.lr_max * self.gamma.powi(passed as i32)
            }
            ScheduleKind::Cosine => cosine(step as f64, total as f64),
            ScheduleKind::WarmupCosine => {
                let warm = self.warmup_epochs * per_epoch as f64;
                if (step as f64) < warm {
                    self.lr_max * (step as f64 + 1.0) / warm
                } else {
                    cosine(step as f64 - warm, total as f64 - warm)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(kind: ScheduleKind) -> Schedule {
        Schedule {
            kind,
            lr_max: 0.1,
            lr_min: 0.001,
            warmup_epochs: 2.0,
            milestones: vec![3, 6],
            gamma: 0.1,
        }
    }

    #[test]
    fn schedules_follow_their_formulas() {
        let (total, per) = (100, 10);
        assert_eq!(sched(ScheduleKind::Constant).lr_at(57, total, per), 0.1);
        let p = sched(ScheduleKind::Piecewise);
        assert_eq!(p.lr_at(29, total, per), 0.1);
        assert!((p.lr_at(30, total, per) - 0.01).abs() < 1e-15);
        assert!((p.lr_at(99, total, per) - 0.001).abs() < 1e-15);
        let c = sched(ScheduleKind::Cosine);
        assert_eq!(c.lr_at(0, total, per), 0.1);
        assert!((c.lr_at(50, total, per) - 0.0505).abs() < 1e-12);
        let w = sched(ScheduleKind::WarmupCosine);
        assert!((w.lr_at(0, total, per) - 0.005).abs() < 1e-12);
        assert!((w.lr_at(19, total, per) - 0.1).abs() < 1e-12);
        assert!((w.lr_at(20, total, per) - 0.1).abs() < 1e-12);
        assert!((w.lr_at(60, total, per) - 0.0505).abs() < 1e-12);
    }

    #[test]
    fn bad_values_are_refused() {
        let mut s = sched(ScheduleKind::WarmupCosine);
        s.warmup_epochs = 10.0;
        assert!(s
            .check(10)
            .unwrap_err()
            .to_string()
            .contains("--warmup-epochs"));
        let mut s = sched(ScheduleKind::Cosine);
        s.lr_max = -1.0;
        assert!(s.check(10).unwrap_err().to_string().contains("--lr"));
    }
}
