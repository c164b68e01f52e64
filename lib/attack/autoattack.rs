//! AutoAttack `standard` (Croce & Hein 2020): APGD-CE, APGD-T, FAB-T and
//! Square, each run only on the points every earlier component left
//! robust; the robust accuracy is the pointwise worst case. Each component
//! seeds libtorch's generator from the run's seed and its own name, so a
//! component gives the same result whatever ran before it in the process
//! (which makes resumed evaluations identical to uninterrupted ones).
use super::apgd::{apgd_ce, apgd_t, ApgdConfig};
use super::fab::fab_t;
use super::square::{square, SquareConfig, WindowRange};
use super::{fooled_mask, logits_no_grad, mask_indices, select_rows, Threat};
use crate::models::Model;
use tch::Tensor;

/// A component of AutoAttack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    ApgdCe,
    ApgdT,
    FabT,
    Square,
}

/// The `standard` version's components, in order.
pub const STANDARD: [Component; 4] = [
    Component::ApgdCe,
    Component::ApgdT,
    Component::FabT,
    Component::Square,
];

impl Component {
    pub fn name(self) -> &'static str {
        match self {
            Component::ApgdCe => "apgd-ce",
            Component::ApgdT => "apgd-t",
            Component::FabT => "fab-t",
            Component::Square => "square",
        }
    }

    /// Whether the component uses gradients (Square does not).
    pub fn white_box(self) -> bool {
        !matches!(self, Component::Square)
    }

    /// Runs the component on a batch as AutoAttack `standard` does; returns
    /// the adversarial batch (inside the threat set) and the fooled mask.
    pub fn run(self, model: &Model, x: &Tensor, y: &Tensor, threat: &Threat) -> (Tensor, Tensor) {
        self.run_with(model, x, y, threat, WindowRange::Reference)
    }

    /// [`Component::run`] with Square's window offsets drawn from `window`.
    pub fn run_with(
        self,
        model: &Model,
        x: &Tensor,
        y: &Tensor,
        threat: &Threat,
        window: WindowRange,
    ) -> (Tensor, Tensor) {
        match self {
            Component::ApgdCe => apgd_ce(model, x, y, &ApgdConfig::standard(*threat)),
            Component::ApgdT => apgd_t(model, x, y, &ApgdConfig::standard(*threat)),
            Component::FabT => fab_t(model, x, y, threat),
            Component::Square => {
                let cfg = SquareConfig {
                    window,
                    ..SquareConfig::standard(*threat)
                };
                square(model, x, y, &cfg)
            }
        }
    }
}

/// A deterministic 63-bit seed for attack `name` of a run seeded `seed`
/// (FNV-1a of the name mixed with the seed).
pub fn seed_for(seed: u64, name: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h >> 1) as i64
}

/// Result of AutoAttack on one batch.
#[derive(Debug)]
pub struct AutoAttackResult {
    /// Adversarial batch: the first successful component's point, x where
    /// none succeeded.
    pub adv: Tensor,
    /// Robust mask (correct on x and under every component).
    pub robust: Tensor,
    /// Robust mask after each component, in order.
    pub after: Vec<(Component, Tensor)>,
}

/// AutoAttack `standard` on one batch (the evaluator batches the points
/// itself; this is the single-batch form for tests and benchmarks).
pub fn autoattack_standard(
    model: &Model,
    x: &Tensor,
    y: &Tensor,
    threat: &Threat,
    seed: u64,
) -> AutoAttackResult {
    autoattack_with(model, x, y, threat, seed, WindowRange::Reference)
}

/// [`autoattack_standard`] with Square's window offsets drawn from `window`.
pub fn autoattack_with(
    model: &Model,
    x: &Tensor,
    y: &Tensor,
    threat: &Threat,
    seed: u64,
    window: WindowRange,
) -> AutoAttackResult {
    let mut adv = x.detach().copy();
    let mut robust = fooled_mask(&logits_no_grad(model, x), y).logical_not();
    let mut after = Vec::new();
    for c in STANDARD {
        let idx = mask_indices(&robust);
        if idx.numel() > 0 {
            tch::manual_seed(seed_for(seed, c.name()));
            let (xs, ys) = (x.index_select(0, &idx), y.index_select(0, &idx));
            let (a, fooled) = c.run_with(model, &xs, &ys, threat, window);
            adv = adv.index_copy(0, &idx, &select_rows(&fooled, &a, &xs));
            robust = robust.index_copy(0, &idx, &fooled.logical_not());
        }
        after.push((c, robust.copy()));
    }
    AutoAttackResult { adv, robust, after }
}
