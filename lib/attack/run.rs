//! Running attacks: one parsed attack on one batch
//! ([`AttackKind::run_batch`]), and one attack of an evaluation over its
//! points ([`Target`]): in batches, only
//! on the points still robust, each attack (and each AutoAttack component)
//! seeded from `--seed` and its own name, every returned batch checked to
//! lie in the threat set, and robustness decided by the model's prediction
//! on the returned points.
use super::autoattack::{autoattack_with, seed_for, STANDARD};
use super::grammar::AttackKind;
use super::spsa::{spsa, SpsaConfig};
use super::square::WindowRange;
use super::state::{accuracy, AttackResult};
use super::{
    correct_margin, cross_entropy, finite, fooled_mask, logits_no_grad, mask_indices,
    per_sample_norm, pgd, PgdConfig, Start, Threat,
};
use crate::error::{Error, Result};
use crate::models::Model;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// What every attack of one evaluation runs against.
pub struct Target<'a> {
    pub model: &'a Model,
    /// The evaluation points `[N, …]` (pixels in [0,1]).
    pub x: &'a Tensor,
    /// Their labels `[N]` (int64).
    pub y: &'a Tensor,
    pub threat: Threat,
    /// The run's seed (`--seed`); each attack's seed is derived from it.
    pub seed: u64,
    /// Points per attack batch.
    pub batch_size: usize,
    /// Where Square (alone or in AutoAttack) draws its window offsets.
    pub square_window: WindowRange,
    /// Most model inputs in one SPSA forward pass (`--spsa-inputs-per-pass`).
    pub spsa_inputs_per_pass: usize,
}

impl AttackKind {
    /// Runs the attack on one batch of clean-correct points `x` `[B, …]`
    /// (pixels in [0,1]) with labels `y` `[B]`; returns the adversarial
    /// batch (inside the threat set) and the fooled mask `[B]`. (The
    /// evaluator runs AutoAttack component by component, not through here.)
    /// Square, alone or in AutoAttack, draws its window offsets from
    /// `window`; SPSA evaluates at most `spsa_inputs_per_pass` inputs per
    /// forward pass.
    pub fn run_batch(
        self,
        model: &Model,
        x: &Tensor,
        y: &Tensor,
        threat: &Threat,
        (window, spsa_inputs_per_pass): (WindowRange, usize),
    ) -> (Tensor, Tensor) {
        match self {
            AttackKind::AutoAttack => {
                let r = autoattack_with(model, x, y, threat, 0, window);
                let fooled = r.robust.logical_not();
                (r.adv, fooled)
            }
            AttackKind::Component(c) => c.run_with(model, x, y, threat, window),
            AttackKind::Spsa => {
                let cfg = SpsaConfig {
                    max_inputs_per_pass: spsa_inputs_per_pass,
                    ..SpsaConfig::standard(*threat)
                };
                spsa(model, x, y, &cfg)
            }
            AttackKind::Pgd(k) | AttackKind::CwPgd(k) => {
                let cfg = PgdConfig {
                    threat: *threat,
                    steps: k,
                    step_size: 2.5 * threat.eps / k as f64,
                    start: Start::Uniform,
                    bn_train: false,
                };
                let adv = if matches!(self, AttackKind::Pgd(_)) {
                    pgd(model, x, &cfg, &|z: &Tensor| cross_entropy(z, y))
                } else {
                    pgd(model, x, &cfg, &|z: &Tensor| -correct_margin(z, y))
                };
                let fooled = fooled_mask(&logits_no_grad(model, &adv), y);
                (adv, fooled)
            }
        }
    }
}

/// A bool mask `[N]` (any device) as flags.
pub fn to_flags(mask: &Tensor) -> Vec<bool> {
    Vec::<bool>::try_from(&mask.to_device(Device::Cpu).to_kind(Kind::Bool)).expect("bool mask")
}

impl Target<'_> {
    /// Runs `kind` on the clean-correct points (`clean`, bool `[N]`); for
    /// AutoAttack, each component on the points every earlier one left
    /// robust, with the cumulative flags after each as `components`.
    ///
    /// Errors: [`Error::Invariant`] when an attack returns a point outside
    /// the threat set (a bug); [`Error::NonFinite`] when the model's logits
    /// on a returned batch, or an input gradient computed for it, hold NaN
    /// or ±Inf (never reported as robust).
    pub fn run(&self, kind: AttackKind, clean: &Tensor) -> Result<AttackResult> {
        let name = kind.to_string();
        let started = Instant::now();
        let mut components = Vec::new();
        let robust = if kind == AttackKind::AutoAttack {
            let mut robust = clean.copy();
            for c in STANDARD {
                let t0 = Instant::now();
                tch::manual_seed(seed_for(self.seed, c.name()));
                let run = |xb: &Tensor, yb: &Tensor| {
                    c.run_with(self.model, xb, yb, &self.threat, self.square_window)
                };
                robust = self.attack_points(&run, &robust, &format!("aa/{}", c.name()))?;
                let r = AttackResult {
                    name: c.name().to_string(),
                    robust: to_flags(&robust),
                    seconds: t0.elapsed().as_secs_f64(),
                    components: vec![],
                };
                eprintln!(
                    "  aa/{:<8} robust accuracy {:.4} ({:.1} s)",
                    c.name(),
                    accuracy(&r.robust),
                    r.seconds
                );
                components.push(r);
            }
            robust
        } else {
            tch::manual_seed(seed_for(self.seed, &name));
            let run = |xb: &Tensor, yb: &Tensor| {
                let settings = (self.square_window, self.spsa_inputs_per_pass);
                kind.run_batch(self.model, xb, yb, &self.threat, settings)
            };
            self.attack_points(&run, clean, &name)?
        };
        Ok(AttackResult {
            name,
            robust: to_flags(&robust),
            seconds: started.elapsed().as_secs_f64(),
            components,
        })
    }

    /// Runs `run` (a batch → adversarial batch, fooled mask) over the
    /// points where `robust_in` holds, in batches; returns the robust mask
    /// over all points, decided by the model's prediction on the returned
    /// points after checking they lie in the threat set.
    fn attack_points(
        &self,
        run: &dyn Fn(&Tensor, &Tensor) -> (Tensor, Tensor),
        robust_in: &Tensor,
        name: &str,
    ) -> Result<Tensor> {
        let idx = mask_indices(robust_in);
        let mut robust = robust_in.copy();
        let n = idx.numel() as i64;
        let pb = crate::progress::bar(n as u64, name);
        let _ = finite::gradients_finite_since_last();
        let mut start = 0i64;
        while start < n {
            let len = (self.batch_size as i64).min(n - start);
            let bidx = idx.narrow(0, start, len);
            let (xb, yb) = (self.x.index_select(0, &bidx), self.y.index_select(0, &bidx));
            let (adv, _) = run(&xb, &yb);
            let what = format!("attack {name}");
            finite::check_gradients(&what)?;
            let logits = logits_no_grad(self.model, &adv);
            finite::check_logits(&logits, &what)?;
            if !self.threat.contains(&adv, &xb) {
                return Err(self.outside_threat_set(&adv, &xb, name));
            }
            let wrong = fooled_mask(&logits, &yb);
            robust = robust.index_copy(0, &bidx, &wrong.logical_not());
            start += len;
            pb.set_position(start as u64);
        }
        pb.finish_and_clear();
        Ok(robust)
    }

    fn outside_threat_set(&self, adv: &Tensor, x: &Tensor, name: &str) -> Error {
        let dist = per_sample_norm(&(adv - x), self.threat.norm)
            .max()
            .double_value(&[]);
        Error::Invariant {
            what: format!("attack {name}"),
            reason: format!(
                "it returned a point outside the threat set (distance {dist}, ε = {}, or outside [0,1])",
                self.threat.eps
            ),
        }
    }
}
