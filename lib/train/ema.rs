//! Exponential moving average of the weights (Polyak averaging as used by
//! Rebuffi et al. 2021): w̄ ← τ·w̄ + (1 − τ)·w after every step; buffers
//! (BatchNorm statistics, normalisation) are copied as they are.
use crate::checkpoint;
use crate::error::Result;
use crate::models::Model;
use tch::Tensor;

pub struct Ema {
    pub tau: f64,
    /// The averaged model (what evaluation and the final checkpoint use).
    pub model: Model,
    /// (average, live variable, trainable) handles, matched by name once:
    /// the variables are updated in place, so the handles stay valid and
    /// the per-step update needs no lookup.
    pairs: Vec<(Tensor, Tensor, bool)>,
}

impl Ema {
    /// Starts the average at the model's current weights.
    pub fn new(model: &Model, tau: f64) -> Result<Ema> {
        let c = model.spec.channels() as usize;
        let mut shadow = Model::new(&model.spec, model.device(), &vec![0.0; c], &vec![1.0; c])?;
        shadow.set_memory_format(model.memory_format())?;
        shadow.copy_from(model)?;
        let live = model.vs.variables();
        let pairs = shadow
            .vs
            .variables()
            .into_iter()
            .filter_map(|(name, avg)| {
                live.get(&name)
                    .map(|w| (avg, w.shallow_clone(), w.requires_grad()))
            })
            .collect();
        Ok(Ema {
            tau,
            model: shadow,
            pairs,
        })
    }

    /// One averaging step after an optimiser step of the model it was
    /// built from.
    pub fn update(&mut self) {
        let _guard = tch::no_grad_guard();
        for (avg, w, trainable) in &mut self.pairs {
            if *trainable {
                let next: Tensor = &*avg * self.tau + &*w * (1.0 - self.tau);
                avg.copy_(&next);
            } else {
                avg.copy_(w);
            }
        }
    }

    /// The average's tensors for the resume state, prefixed `ema.`.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        checkpoint::model_tensors(&self.model)
            .into_iter()
            .map(|(n, t)| (format!("ema.{n}"), t))
            .collect()
    }
}
