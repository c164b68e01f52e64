//! Strength-matched controls (`--lambda-match λ₀`).
//!
//! A control (`--reg grad-norm`, `--score-permute`, `--zero-scores`) at the
//! same λ as TASER is matched in form, not in strength: its penalty can be
//! an order of magnitude smaller or larger than TASER's on the same model.
//! The strength of a regulariser is its initial weighted penalty λ·P(θ₀)
//! at the run's starting weights θ₀ (the fine-tune's base, or the seeded
//! initialisation), averaged over probe batches of 256 training inputs
//! ([`super::instruments`]) that hold [`MATCH_SAMPLES`] inputs together
//! (or the whole training split): on one batch of 256 the ratio of two
//! penalties varies by several percent from batch to batch, which the
//! average removes. A control asked to match TASER at λ₀ trains with
//!
//! ```text
//!   λ = λ₀ · R_TASER(θ₀) / P_control(θ₀)
//! ```
//!
//! where R_TASER is the TASER penalty with the run's residual flags and its
//! real scores (`--scores`, or the analytic source), and each penalty is
//! the one the run trains on, in expectation over the probes (plain at the
//! run's K, or unbiased; [`super::instruments::Instruments::expected_penalty`]).
//! θ₀ and the probe batches are fixed by the seed, so a resumed run
//! matches to the same λ. The sidecar records λ₀, λ and both penalties.
use super::instruments::Instruments;
use super::{Regularizer, ScoreControl, SteinPenalty};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::models::Model;
use crate::score::ScoreField;
use serde::Serialize;
use tch::Device;

/// Training inputs the match averages over (in probe batches of 256).
pub const MATCH_SAMPLES: usize = 2048;

/// Offset mixed into `--seed` for the match's probe batches.
pub const MATCH_STREAM: u64 = 0x57E4_6711;

/// What a control asked to match (set by the flags, resolved at θ₀).
#[derive(Debug, Default)]
pub enum Strength {
    /// λ as given by `--lambda`.
    #[default]
    Given,
    /// `--lambda-match λ₀`, not yet resolved; `field` holds TASER's real
    /// scores when the control itself has none (grad-norm, zero scores).
    Match {
        lambda0: f64,
        field: Option<Box<dyn ScoreField>>,
    },
    /// Resolved: the λ the run trains with.
    Matched(MatchedStrength),
}

/// The record of a resolved match (the sidecar's `strength_match`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MatchedStrength {
    /// TASER's λ₀ the control matches.
    pub lambda0: f64,
    /// The control's λ = λ₀·R_TASER/P_control.
    pub lambda: f64,
    /// R_TASER(θ₀) and P_control(θ₀) on the probe batch, before λ.
    pub reference_penalty: f64,
    pub control_penalty: f64,
    /// Training inputs the penalties were averaged over.
    pub samples: usize,
}

/// Resolves `--lambda-match` of `reg` at the model's current weights θ₀
/// on `data`'s probe batch of `seed`; sets λ_max of the control's ramp.
/// Does nothing for any other regulariser. Reseeds libtorch's generator
/// (the probe batch's probes).
///
/// Errors: the residual's; [`Error::InvalidArgument`] naming
/// `--lambda-match` when the control's penalty at θ₀ is 0 or either penalty
/// is not finite (nothing to scale).
pub fn resolve(
    reg: &mut Regularizer,
    model: &Model,
    data: &Dataset,
    seed: u64,
    device: Device,
) -> Result<Option<MatchedStrength>> {
    let Regularizer::Stein(p) = reg else {
        return Ok(None);
    };
    let Strength::Match { lambda0, field } = std::mem::take(&mut p.strength) else {
        return Ok(None);
    };
    let batches = Instruments::covering(data, seed, MATCH_STREAM, MATCH_SAMPLES, device);
    let samples: usize = batches.iter().map(Instruments::len).sum();
    let (mut control_penalty, mut reference_penalty) = (0.0, 0.0);
    let mut field = field;
    for b in &batches {
        let w = b.len() as f64 / samples as f64;
        control_penalty += w * b.expected_penalty(p, model)?;
        let (r, f) = reference(p, field, b, model)?;
        reference_penalty += w * r;
        field = f;
    }
    if !(control_penalty > 0.0 && control_penalty.is_finite() && reference_penalty.is_finite()) {
        return Err(Error::invalid(
            "--lambda-match",
            lambda0,
            format!(
                "the control's penalty at the starting weights is {control_penalty:e} and TASER's \
                 {reference_penalty:e}: there is no strength to match; give --lambda instead"
            ),
        ));
    }
    let matched = MatchedStrength {
        lambda0,
        lambda: lambda0 * reference_penalty / control_penalty,
        reference_penalty,
        control_penalty,
        samples,
    };
    p.ramp.max = matched.lambda;
    p.strength = Strength::Matched(matched);
    Ok(Some(matched))
}

/// TASER's own penalty with the control `p`'s residual flags on `batch`:
/// its real scores (`field`, or the control's own field once the
/// permutation is lifted), no control, the residual penalty. Hands `field`
/// back for the next batch.
fn reference(
    p: &mut SteinPenalty,
    field: Option<Box<dyn ScoreField>>,
    batch: &Instruments,
    model: &Model,
) -> Result<(f64, Option<Box<dyn ScoreField>>)> {
    let control = std::mem::replace(&mut p.control, ScoreControl::None);
    let grad_norm = std::mem::replace(&mut p.grad_norm, false);
    let swapped = field.map(|f| p.field.replace(f));
    let measured = batch.expected_penalty(p, model);
    let field = match swapped {
        Some(own) => std::mem::replace(&mut p.field, own),
        None => None,
    };
    p.control = control;
    p.grad_norm = grad_norm;
    Ok((measured?, field))
}

/// The matched strength of a resolved run, if any.
pub fn record(reg: &Regularizer) -> Option<MatchedStrength> {
    match reg {
        Regularizer::Stein(SteinPenalty {
            strength: Strength::Matched(m),
            ..
        }) => Some(*m),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{Activation, Arch, ModelSpec};
    use crate::stein::penalty::RegArgs;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        reg: RegArgs,
    }

    fn regularizer(args: &[&str], data: &Dataset) -> Regularizer {
        let mut full = vec!["reg"];
        full.extend(args);
        let reg = Cli::parse_from(full).reg;
        let ramp = reg.ramp().unwrap();
        reg.build(ramp, data, Device::Cpu, 3).unwrap()
    }

    fn stein(reg: &Regularizer) -> &SteinPenalty {
        match reg {
            Regularizer::Stein(p) => p,
            _ => panic!("not a Stein regulariser"),
        }
    }

    fn mlp(data: &Dataset) -> Model {
        tch::manual_seed(0);
        let spec = ModelSpec {
            arch: Arch::Mlp,
            activation: Activation::Silu,
            mlp_hidden: vec![64],
            input_shape: data.input_shape.clone(),
            num_outputs: data.num_outputs,
        };
        Model::new(&spec, Device::Cpu, &[0.3], &[0.3]).unwrap()
    }

    /// `--reg grad-norm --lambda-match λ₀ --stein-estimator unbiased`
    /// matches TASER's unbiased penalty (the exact R), not the plain one's
    /// R + V: the same grad-norm penalty, a smaller reference, and the
    /// reference is TASER-unbiased's expected penalty on the match batches.
    #[test]
    fn a_matched_grad_norm_control_takes_tasers_estimator_for_its_reference() {
        let data = crate::data::digits::load(&crate::data::default_data_dir()).unwrap();
        let model = mlp(&data);
        let matched = |estimator: &str| {
            let args = [
                "--lambda-match",
                "0.01",
                "--reg",
                "grad-norm",
                "--stein-estimator",
                estimator,
            ];
            let mut reg = regularizer(&args, &data);
            resolve(&mut reg, &model, &data, 3, Device::Cpu)
                .unwrap()
                .expect("a match")
        };
        let (plain, unbiased) = (matched("plain"), matched("unbiased"));
        assert!((plain.control_penalty / unbiased.control_penalty - 1.0).abs() < 1e-9);
        let taser = regularizer(
            &["--lambda", "0.01", "--stein-estimator", "unbiased"],
            &data,
        );
        let batches = Instruments::covering(&data, 3, MATCH_STREAM, MATCH_SAMPLES, Device::Cpu);
        let total: usize = batches.iter().map(Instruments::len).sum();
        let r_unbiased: f64 = batches
            .iter()
            .map(|b| b.expected_penalty(stein(&taser), &model).unwrap() * b.len() as f64)
            .sum::<f64>()
            / total as f64;
        println!(
            "R_TASER plain {:.4e}, unbiased {:.4e} (TASER-unbiased {r_unbiased:.4e}); λ {:.4e} vs {:.4e}",
            plain.reference_penalty, unbiased.reference_penalty, plain.lambda, unbiased.lambda
        );
        assert!(unbiased.reference_penalty < plain.reference_penalty);
        assert!((unbiased.reference_penalty / r_unbiased - 1.0).abs() < 1e-9);
        assert!(unbiased.lambda < plain.lambda);
    }

    /// A matched control has TASER's initial strength: λ·P_control and
    /// λ₀·R_TASER agree within 5% over the whole training split in other
    /// batches and with other probes (seed 4) than the match drew (seed 3).
    #[test]
    fn a_matched_control_has_tasers_initial_strength_on_another_batch() {
        let data = crate::data::digits::load(&crate::data::default_data_dir()).unwrap();
        let model = mlp(&data);
        let lambda0 = 0.01;
        let taser = regularizer(&["--lambda", "0.01"], &data);
        // The whole training split, in other batches with other probes.
        let other = Instruments::covering(&data, 4, MATCH_STREAM, usize::MAX, Device::Cpu);
        let total: usize = other.iter().map(Instruments::len).sum();
        assert_eq!(total, data.train.len() as usize);
        let average = |p: &SteinPenalty| -> f64 {
            other
                .iter()
                .map(|b| b.expected_penalty(p, &model).unwrap() * b.len() as f64)
                .sum::<f64>()
                / total as f64
        };
        let r_taser = average(stein(&taser));
        for control in [&["--reg", "grad-norm"][..], &["--zero-scores"][..]] {
            let mut args = vec!["--lambda-match", "0.01"];
            args.extend(control);
            let mut reg = regularizer(&args, &data);
            let m = resolve(&mut reg, &model, &data, 3, Device::Cpu)
                .unwrap()
                .expect("a match");
            assert_eq!(record(&reg), Some(m));
            assert_eq!(stein(&reg).ramp.max, m.lambda);
            assert!((m.lambda * m.control_penalty - lambda0 * m.reference_penalty).abs() < 1e-12);
            let p_control = average(stein(&reg));
            let (a, b) = (m.lambda * p_control, lambda0 * r_taser);
            println!(
                "{control:?}: λ = {:.4e} (×{:.2} of λ₀); over the split λ·P = {a:.4e}, λ₀·R = {b:.4e}",
                m.lambda,
                m.lambda / lambda0
            );
            assert!((a / b - 1.0).abs() < 0.05, "{control:?}: {a} vs {b}");
        }
    }
}
