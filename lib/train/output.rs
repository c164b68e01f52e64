//! The final checkpoint of a run: `model.safetensors` and its sidecar
//! `model.json` (model spec, data set, every hyperparameter as given and as
//! resolved, seed, version, final metrics, and the provenance of the score
//! file it trained with).
use super::epochs::Session;
use super::method::MethodSettings;
use super::regularizer::Regularizer;
use crate::checkpoint::{self, CheckpointMeta};
use crate::device::device_name;
use crate::error::Result;
use std::collections::BTreeMap;

/// The defaults a run actually used (ε, step, β…), for the sidecar.
fn resolved_settings(s: &MethodSettings) -> serde_json::Value {
    serde_json::json!({
        "method": s.method,
        "loss": s.divergence,
        "beta": s.beta,
        "clip": s.clip,
        "label_smoothing": s.label_smoothing,
        "attack": s.attack.map(|a| serde_json::json!({
            "norm": a.threat.norm,
            "eps": a.threat.eps,
            "steps": a.steps,
            "step_size": a.step_size,
            "start": format!("{:?}", a.start),
            "bn_train": a.bn_train,
        })),
        "awp_gamma": s.awp.map(|a| a.0),
        "awp_first_epoch": s.awp.map(|a| a.1),
        "ema_tau": s.ema_tau,
    })
}

/// The provenance of the score file the regulariser reads, as JSON.
fn score_provenance(reg: &Regularizer) -> Option<serde_json::Value> {
    match reg {
        Regularizer::Stein(p) => {
            p.field.as_ref().and_then(|f| f.provenance()).map(|prov| {
                serde_json::to_value(prov).expect("score provenance serialises to JSON")
            })
        }
        _ => None,
    }
}

/// Writes the session's final weights (the EMA's when there is one) with
/// their sidecar to `model.safetensors` / `model.json` in `--out`.
pub fn write_checkpoint(s: &Session, metrics: &BTreeMap<String, f64>) -> Result<()> {
    let plan = s.plan;
    let teacher = plan.teacher.as_ref();
    let meta = CheckpointMeta {
        format: checkpoint::FORMAT.into(),
        version: crate::VERSION.into(),
        model: plan.spec.clone(),
        dataset: plan.data.name.to_string(),
        train_fingerprint: plan.data.train.fingerprint(),
        seed: plan.config.seed,
        epochs_completed: plan.config.epochs,
        hyperparameters: serde_json::json!({
            "config": plan.config,
            "device": device_name(plan.runtime.device),
            "libtorch_threads": tch::get_num_threads(),
            "resolved": resolved_settings(&plan.method),
            "posterior": plan.posterior,
            "finetuned_from": teacher.map(|t| t.from.display().to_string()),
            "teacher_alpha": teacher.map(|t| t.alpha),
            "weights": if s.ema.is_some() { "ema" } else { "last" },
        }),
        metrics: metrics.clone(),
        score_file: score_provenance(&s.regularizer),
    };
    checkpoint::save(s.eval_model(), &plan.out.weights(), &meta)
}
