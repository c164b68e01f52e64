//! The cost of a run's step, timed in isolation: the summary metrics
//! `step_seconds` and `penalty_step_overhead` (tables' Overhead column).
//!
//! Wall time under shared load says little about what the penalty costs
//! (two runs of one sweep share cores with different neighbours). After its
//! last epoch a run therefore times, on one fixed batch (the first
//! `--batch-size` training inputs, unaugmented), rounds of two steps back
//! to back, so that both see the same load:
//!
//! ```text
//!   full step       the method's loss (its training attack), the teacher's
//!                   KL, λ·penalty, backward, optimiser update
//!   without         the same step with no regulariser
//!   overhead        = min(full) / min(without)
//! ```
//!
//! over [`TIMED_ROUNDS`] rounds after one untimed warm-up round: the
//! fastest of the rounds, as Python's `timeit` takes it, is the one least
//! disturbed by other load (a median of 5 differed by 16% between two
//! identical steps beside two busy processes on 2 cores). A run whose step
//! has no penalty term (no regulariser, or λ = 0 with the instruments only)
//! times the one step and has overhead 1. The steps
//! update a throwaway optimiser and every weight and buffer is put back
//! afterwards, so the checkpoint is the one training ended with; the
//! training attack's random starts draw from libtorch's generator after
//! training, which nothing of the run reads again. On CUDA each timed step
//! ends with a device synchronisation.
use super::session::Session;
use super::split::TrainSplit;
use super::step::train_step;
use crate::data::Batch;
use crate::error::Result;
use crate::models::Model;
use crate::optim::Optimizer;
use crate::stein::penalty::Regularizer;
use std::time::Instant;
use tch::{Device, Tensor};

/// Timed rounds (each one full step and one step without the regulariser).
pub const TIMED_ROUNDS: usize = 5;

/// Fastest step times of a run, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepTiming {
    /// The run's full step.
    pub step_seconds: f64,
    /// The same step without the regulariser.
    pub without_penalty_seconds: f64,
}

impl StepTiming {
    /// step_seconds / without_penalty_seconds.
    pub fn overhead(&self) -> f64 {
        self.step_seconds / self.without_penalty_seconds
    }
}

/// Times the session's step as the module doc says, at the last epoch's
/// method, learning rate and λ; leaves the model's weights and buffers as
/// they were.
///
/// Errors: the step's (the regulariser's).
pub(super) fn time_steps(s: &Session, split: &TrainSplit) -> Result<StepTiming> {
    let plan = s.plan;
    let device = plan.runtime.device;
    let n = (plan.batch_size as i64).min(plan.data.train.len());
    let idx = Tensor::arange(n, (tch::Kind::Int64, device));
    let (x, y) = split.batch(&idx, &[], device)?;
    let batch = Batch {
        x: &x,
        y: &y,
        indices: &idx,
        aug: None,
        share: None,
    };
    let saved = snapshot(&s.model);
    let mut opt = Optimizer::new(&plan.optimizer, s.model.named_trainable());
    let (total, per_epoch) = (plan.steps.total, plan.steps.per_epoch);
    let lr = plan
        .schedule
        .lr_at(total.saturating_sub(1), total, per_epoch);
    let last_epoch = plan.epochs.saturating_sub(1);
    let none = Regularizer::None;
    let regs = if penalised(&s.regularizer) {
        vec![&s.regularizer, &none]
    } else {
        vec![&none]
    };
    let mut seconds = [f64::INFINITY; 2];
    for round in 0..=TIMED_ROUNDS {
        for (k, reg) in regs.iter().enumerate() {
            let loss = plan.step_loss(reg, &plan.method, last_epoch);
            let start = Instant::now();
            let step = train_step(&s.model, &mut opt, &loss, &batch, total, lr);
            synchronize(device);
            let elapsed = start.elapsed().as_secs_f64();
            if let Err(e) = step {
                restore(&s.model, &saved);
                return Err(e);
            }
            if round > 0 {
                seconds[k] = seconds[k].min(elapsed);
            }
        }
    }
    restore(&s.model, &saved);
    let without_penalty_seconds = seconds[regs.len() - 1];
    Ok(StepTiming {
        step_seconds: seconds[0],
        without_penalty_seconds,
    })
}

/// Whether `reg` adds a term to the step's loss.
fn penalised(reg: &Regularizer) -> bool {
    match reg {
        Regularizer::None => false,
        Regularizer::L2 { lambda } => *lambda > 0.0,
        Regularizer::Stein(p) => p.ramp.active(),
    }
}

/// Copies of every variable and buffer of `model`, by name.
fn snapshot(model: &Model) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> = model
        .vs
        .variables()
        .into_iter()
        .map(|(k, t)| (k, t.detach().copy()))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// Writes `saved` back into `model`'s variables.
fn restore(model: &Model, saved: &[(String, Tensor)]) {
    let vars = model.vs.variables();
    tch::no_grad(|| {
        for (k, t) in saved {
            if let Some(mut v) = vars.get(k).map(Tensor::shallow_clone) {
                v.copy_(t);
            }
        }
    });
}

fn synchronize(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}
