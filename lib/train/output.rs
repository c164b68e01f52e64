//! The final checkpoint of a run: `model.safetensors` and its sidecar
//! `model.json` (model spec, data set, every hyperparameter as given and as
//! resolved, seed, version, final metrics, and the provenance of the score
//! file it trained with), and with `--val-size` the best validation
//! epoch's `model-best.safetensors` / `model-best.json`.
use super::method::MethodSettings;
use super::metrics::{summary_metrics, EpochMetrics};
use super::session::Session;
use super::validation::Select;
use crate::checkpoint::{self, sidecar_path, CheckpointMeta};
use crate::device::device_name;
use crate::error::{Error, Result};
use crate::fsutil::write_atomically;
use crate::stein::penalty::{strength, Regularizer};
use std::collections::BTreeMap;

/// The defaults a run actually used (ε, step, β…), for the sidecar, with
/// the length of the ε warm-up in steps (E·S; 0 without one).
fn resolved_settings(s: &MethodSettings, eps_warmup_steps: usize) -> serde_json::Value {
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
        "eps_warmup_steps": eps_warmup_steps,
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

/// The sidecar of the session's current weights after `epochs_completed`
/// epochs, with `metrics` and `weights` ("last", "ema" or "best").
fn sidecar(
    s: &Session,
    metrics: &BTreeMap<String, f64>,
    epochs_completed: usize,
    weights: &str,
) -> CheckpointMeta {
    let plan = s.plan;
    let teacher = plan.teacher.as_ref();
    CheckpointMeta {
        format: checkpoint::FORMAT.into(),
        version: crate::VERSION.into(),
        model: plan.spec.clone(),
        dataset: plan.data.name.to_string(),
        train_fingerprint: plan.data.train.fingerprint(),
        seed: plan.seed,
        epochs_completed,
        hyperparameters: serde_json::json!({
            "config": plan.identity,
            "device": device_name(plan.runtime.device),
            "libtorch_threads": tch::get_num_threads(),
            "data_parallel": plan.group.is_parallel().then(|| serde_json::json!({
                "ranks": plan.group.size(),
                "sums": plan.group.describe_backend(),
            })),
            "resolved": resolved_settings(&plan.method, plan.eps_warmup.steps),
            "posterior": plan.posterior,
            "strength_match": strength::record(&s.regularizer),
            "finetuned_from": teacher.map(|t| t.from.display().to_string()),
            "teacher_alpha": teacher.map(|t| t.alpha),
            "weights": weights,
            "validation": plan.validation.as_ref().map(|v| serde_json::json!({
                "size": v.split.len(),
                "fingerprint": v.split.fingerprint(),
                "attack_steps": v.attack.map(|a| a.steps),
                "attack_eps": v.attack.map(|a| a.threat.eps),
                "objective": v.objective,
                "best_epoch": s.best.map(|b| b.0),
                "best_criterion": s.best.map(|b| b.1),
            })),
            "extra_data": plan.extra.as_ref().map(|e| serde_json::json!({
                "size": e.source.len(),
                "fingerprint": e.source.fingerprint(),
                "original_per_batch": e.original_per_batch,
            })),
        }),
        metrics: metrics.clone(),
        score_file: score_provenance(&s.regularizer),
        runtime: Some(plan.runtime.record.clone()),
        weights_sha256: None,
    }
}

/// Writes the session's current weights (the EMA's when there is one) as
/// the best epoch's, `model-best.safetensors` / `model-best.json`, with the
/// summary metrics of `rows` (the epochs so far).
pub fn write_best(s: &Session, rows: &[EpochMetrics]) -> Result<()> {
    let metrics = summary_metrics(rows, s.global_center, None);
    let epoch = rows.last().map_or(0, |r| r.epoch);
    let meta = sidecar(s, &metrics, epoch, "best");
    checkpoint::save(s.eval_model(), &s.plan.out.best_weights(), &meta)
}

/// Writes the session's final weights (the EMA's when there is one) with
/// their sidecar to `model.safetensors` / `model.json` in `--out`; under
/// `--select best` they go to `model-last.safetensors` / `model-last.json`
/// and `model.*` become copies of `model-best.*`.
pub fn write_checkpoint(s: &Session, metrics: &BTreeMap<String, f64>) -> Result<()> {
    let plan = s.plan;
    let weights = if s.ema.is_some() { "ema" } else { "last" };
    let meta = sidecar(s, metrics, plan.epochs, weights);
    let select_best = plan
        .validation
        .as_ref()
        .is_some_and(|v| v.select == Select::Best);
    if !select_best {
        return checkpoint::save(s.eval_model(), &plan.out.weights(), &meta);
    }
    checkpoint::save(s.eval_model(), &plan.out.last_weights(), &meta)?;
    let best = plan.out.best_weights();
    for (from, to) in [
        (sidecar_path(&best), plan.out.sidecar()),
        (best, plan.out.weights()),
    ] {
        write_atomically(&to, |tmp| {
            std::fs::copy(&from, tmp)
                .map(|_| ())
                .map_err(|e| Error::io(&from, e))
        })?;
    }
    Ok(())
}
