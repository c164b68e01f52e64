//! What the loop measures after each epoch: the task loss (and accuracy) on
//! the test split, the loss on the out-of-distribution split (toy-sin) and,
//! where the objective is one of SCORE's, its three risks on the test split.
use super::plan::TrainPlan;
use super::posterior::{PosteriorSettings, Risks};
use super::step::task_loss;
use crate::data::{Dataset, Split, Task};
use crate::models::Model;
use tch::{Kind, Tensor};

/// Loss and accuracy of a model on a split.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SplitMetrics {
    /// Mean task loss ([`task_loss`]) over the split.
    pub loss: f64,
    /// Fraction correct in [0, 1]; `None` for regression and toy-score.
    pub accuracy: Option<f64>,
}

/// Evaluates `model` on `split` in eval mode, in batches of `batch_size`
/// (moved to the model's device one at a time).
pub fn evaluate_split(model: &Model, task: Task, split: &Split, batch_size: usize) -> SplitMetrics {
    let _guard = tch::no_grad_guard();
    let n = split.len();
    let device = model.device();
    let mut loss_sum = 0.0;
    let mut correct = 0i64;
    let mut start = 0;
    while start < n {
        let len = (batch_size as i64).min(n - start);
        let x = split.x.narrow(0, start, len).to_device(device);
        let y = split.y.narrow(0, start, len).to_device(device);
        let out = model.forward_t(&x, false);
        loss_sum += task_loss(task, &out, &y).double_value(&[]) * len as f64;
        if task == Task::Classification {
            correct += out
                .argmax(-1, false)
                .eq_tensor(&y)
                .sum(Kind::Int64)
                .int64_value(&[]);
        }
        start += len;
    }
    SplitMetrics {
        loss: loss_sum / n.max(1) as f64,
        accuracy: (task == Task::Classification).then(|| correct as f64 / n.max(1) as f64),
    }
}

/// The measurements after one epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochEvaluation {
    pub test: SplitMetrics,
    /// Mean squared error on the out-of-distribution split (toy-sin).
    pub ood_loss: Option<f64>,
    /// SCORE's risks of the run's distance on the test split (toy-score).
    pub risks: Option<Risks>,
}

/// Measures a model after each epoch of one run.
pub struct EpochEvaluator<'a> {
    data: &'a Dataset,
    batch_size: usize,
    /// The SCORE objective and the test split on the device (moved once).
    risks: Option<(&'a PosteriorSettings, Tensor, Tensor)>,
}

impl<'a> EpochEvaluator<'a> {
    /// The evaluator of `plan`'s run.
    pub fn new(plan: &'a TrainPlan) -> EpochEvaluator<'a> {
        let device = plan.runtime.device;
        let test = &plan.data.test;
        EpochEvaluator {
            data: &plan.data,
            batch_size: plan.eval_batch_size,
            risks: plan
                .posterior
                .as_ref()
                .map(|p| (p, test.x.to_device(device), test.y.to_device(device))),
        }
    }

    /// Evaluates `model` (eval mode, no graph).
    pub fn measure(&self, model: &Model) -> EpochEvaluation {
        let task = self.data.task;
        EpochEvaluation {
            test: evaluate_split(model, task, &self.data.test, self.batch_size),
            ood_loss: self
                .data
                .ood
                .as_ref()
                .map(|o| evaluate_split(model, task, o, self.batch_size).loss),
            risks: self.risks.as_ref().map(|(p, x, y)| p.risks(model, x, y)),
        }
    }
}
