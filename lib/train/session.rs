//! What a run trains and keeps between epochs: the plan it follows, the
//! live model, optimiser, EMA and regulariser, the global centre and the
//! best validated epoch so far. The epoch loop ([`super::epochs`]) advances
//! it; the checkpoint writers ([`super::output`]) read it.
use super::ema::Ema;
use super::plan::TrainPlan;
use crate::models::Model;
use crate::optim::Optimizer;
use crate::stein::penalty::Regularizer;

/// What a run trains and keeps between epochs.
pub struct Session<'a> {
    pub plan: &'a TrainPlan,
    pub model: Model,
    pub opt: Optimizer,
    /// The weights' moving average (`--ema-tau`).
    pub ema: Option<Ema>,
    pub regularizer: Regularizer,
    /// The centre of `--center global` (re-estimated every epoch).
    pub global_center: Option<f64>,
    /// The best validated epoch so far (1-based) and its criterion.
    pub best: Option<(usize, f64)>,
}

impl Session<'_> {
    /// The model evaluation and the final checkpoint use: the EMA weights
    /// when there are, else the live ones.
    pub fn eval_model(&self) -> &Model {
        self.ema.as_ref().map_or(&self.model, |e| &e.model)
    }
}
