//! The epoch loop: shuffle (and augment) with the epoch's seed, one
//! [`train_step`] per mini-batch, measure, stop on divergence, log, and
//! save metrics and the resume state every `--checkpoint-every` epochs.
use super::evaluate::{EpochEvaluation, EpochEvaluator};
use super::metrics::{epoch_line, write_metrics, EpochMetrics};
use super::output;
use super::parallel::{self, RankPart};
use super::resume;
use super::session::Session;
use super::split::TrainSplit;
use super::step::{train_step, StepOutput};
use super::timing;
use crate::collective::{BatchShare, Group};
use crate::data::augment::CropFlip;
use crate::data::Batch;
use crate::device::transfers;
use crate::error::{Error, Result};
use crate::progress;
use crate::stein::penalty::instruments::{Instruments, Readings};
use crate::stein::penalty::{Regularizer, SteinStats};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Seed of epoch `epoch`'s shuffling and augmentation, mixed from the run's
/// seed ([`crate::runtime::mix_seed`] of stream epoch + 1).
pub fn epoch_seed(seed: u64, epoch: usize) -> u64 {
    crate::runtime::mix_seed(seed, epoch as u64 + 1)
}

/// Sums of the Stein statistics over an epoch's batches (on the device).
struct SteinSums {
    /// Σ over batches of the batch penalty R.
    penalty: Tensor,
    /// Σ over samples of r(x).
    residual: Tensor,
    /// Σ over samples of r(x)².
    residual_sq: Tensor,
    /// Whether the penalty has residuals (not `--reg grad-norm`).
    has_residual: bool,
}

/// Running sums of one epoch (on the device, read once at its end).
struct EpochSums {
    loss: Tensor,
    correct: Tensor,
    seen: usize,
    batches: usize,
    stein: Option<SteinSums>,
    /// The learning rate of the epoch's last step.
    lr: f64,
    /// The training attack's ε at the epoch's last step (the ε warm-up's
    /// value; 0 without an attack).
    train_eps: f64,
    /// λ(t) of the epoch's last step (TASER or grad-norm penalty).
    lambda: Option<f64>,
}

impl EpochSums {
    fn new(device: Device, stein_on: bool, lr: f64, train_eps: f64) -> EpochSums {
        let zero = |kind: Kind| Tensor::zeros([], (kind, device));
        EpochSums {
            loss: zero(Kind::Double),
            correct: zero(Kind::Int64),
            seen: 0,
            batches: 0,
            stein: stein_on.then(|| SteinSums {
                penalty: zero(Kind::Double),
                residual: zero(Kind::Double),
                residual_sq: zero(Kind::Double),
                has_residual: false,
            }),
            lr,
            train_eps,
            lambda: None,
        }
    }

    fn add(&mut self, out: StepOutput, batch_len: usize) {
        self.batches += 1;
        self.loss += out.task_loss * batch_len as f64;
        if let Some(c) = out.correct {
            self.correct += c;
        }
        if let (
            Some(sums),
            Some(SteinStats {
                penalty,
                residual_sums,
            }),
        ) = (self.stein.as_mut(), out.stein)
        {
            sums.penalty += penalty;
            if let Some([r, r2]) = residual_sums {
                sums.residual += r;
                sums.residual_sq += r2;
                sums.has_residual = true;
            }
        }
        self.seen += batch_len;
    }

    /// The sums over the ranks of a data-parallel run (one sum of a few
    /// numbers); alone, as they are.
    fn summed(mut self, group: &Group) -> Result<EpochSums> {
        if group.size() == 1 {
            return Ok(self);
        }
        let device = self.loss.device();
        let zero = Tensor::zeros([], (Kind::Double, device));
        let stein = self.stein.as_ref();
        let parts = [
            self.loss.shallow_clone(),
            self.correct.to_kind(Kind::Double),
            Tensor::full([], self.seen as f64, (Kind::Double, device)),
            stein.map_or(zero.shallow_clone(), |s| s.penalty.shallow_clone()),
            stein.map_or(zero.shallow_clone(), |s| s.residual.shallow_clone()),
            stein.map_or(zero, |s| s.residual_sq.shallow_clone()),
        ];
        let all = Tensor::stack(&parts, 0);
        group.sum_(&all)?;
        let at = |i: i64| all.get(i);
        self.loss = at(0);
        self.correct = at(1).to_kind(Kind::Int64);
        self.seen = transfers::read_f64(&at(2)) as usize;
        if let Some(st) = self.stein.as_mut() {
            (st.penalty, st.residual, st.residual_sq) = (at(3), at(4), at(5));
        }
        Ok(self)
    }

    /// [`Error::Diverged`] when the epoch's training loss or penalty is not
    /// finite (1-based `epoch`).
    fn divergence(&self, epoch: usize) -> Option<Error> {
        let loss = transfers::read_f64(&self.loss) / self.seen as f64;
        let penalty = self
            .stein
            .as_ref()
            .map(|s| transfers::read_f64(&s.penalty) / self.batches as f64);
        (!loss.is_finite() || penalty.is_some_and(|p| !p.is_finite())).then(|| Error::Diverged {
            epoch,
            detail: match penalty {
                Some(p) => format!("train loss {loss}, penalty {p}"),
                None => format!("train loss {loss}"),
            },
        })
    }

    /// The epoch's row of `metrics.csv` (1-based `epoch`), with the
    /// penalty's instruments `diag` and the global centre `center`.
    fn row(
        &self,
        epoch: usize,
        eval: EpochEvaluation,
        classifies: bool,
        seconds: f64,
        (diag, center): (Option<Readings>, Option<f64>),
    ) -> EpochMetrics {
        let seen = self.seen as f64;
        let (penalty, residual_mean, residual_std) = match &self.stein {
            Some(s) => {
                let [p, r, r2] = [&s.penalty, &s.residual, &s.residual_sq].map(transfers::read_f64);
                let mean = r / seen;
                let residuals = s.has_residual;
                (
                    Some(p / self.batches as f64),
                    residuals.then_some(mean),
                    residuals.then(|| (r2 / seen - mean * mean).max(0.0).sqrt()),
                )
            }
            None => (None, None, None),
        };
        let train_loss = transfers::read_f64(&self.loss) / seen;
        EpochMetrics {
            epoch,
            lr: self.lr,
            train_eps: Some(self.train_eps),
            train_loss,
            train_acc: classifies.then(|| transfers::read_f64(&self.correct) / seen),
            test_loss: eval.test.loss,
            test_acc: eval.test.accuracy,
            ood_loss: eval.ood_loss,
            penalty,
            residual_mean,
            residual_std,
            risk_standard: eval.risks.map(|r| r.standard),
            risk_madry: eval.risks.map(|r| r.madry),
            risk_score: eval.risks.map(|r| r.score),
            grad_norm_mean: diag.map(|d| d.grad_norm_mean),
            probe_mean: diag.map(|d| d.probe_mean),
            penalty_ratio: self
                .lambda
                .zip(penalty)
                .filter(|_| diag.is_some())
                .map(|(l, p)| l * p / (train_loss + l * p)),
            score_grad_cosine: diag.and_then(|d| d.score_grad_cosine),
            hutchinson_noise_share: diag.and_then(|d| d.hutchinson_noise_share),
            penalty_plain: diag.and_then(|d| d.penalty_plain),
            penalty_unbiased: diag.and_then(|d| d.penalty_unbiased),
            global_center: center,
            val_acc: None,
            val_robust_acc: None,
            seconds,
        }
    }
}

/// One epoch (0-based `epoch`) of optimiser steps.
fn train_epoch(
    s: &mut Session,
    split: &TrainSplit,
    epoch: usize,
    bar: &indicatif::ProgressBar,
) -> Result<EpochSums> {
    let plan = s.plan;
    let (device, steps) = (plan.runtime.device, plan.steps);
    let schedule = &plan.schedule;
    let seed = epoch_seed(plan.seed, epoch);
    let group = &plan.group;
    tch::manual_seed(group.rank_seed(seed) as i64);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut shuffled: Vec<i64> = (0..plan.data.train.len()).collect();
    shuffled.shuffle(&mut rng);
    let stein = match &s.regularizer {
        Regularizer::Stein(p) if p.ramp.active() => Some(p.ramp),
        _ => None,
    };
    let first_lr = schedule.lr_at(epoch * steps.per_epoch, steps.total, steps.per_epoch);
    let mut sums = EpochSums::new(device, stein.is_some(), first_lr, 0.0);
    // (original indices, extra indices) per batch; a final batch of one
    // sample (of fewer than 2 per rank) is dropped when nothing is mixed in.
    let batches: Vec<(Vec<i64>, Vec<i64>)> = match &plan.extra {
        Some(e) => e.batches(&shuffled, &mut rng),
        None => shuffled
            .chunks(plan.batch_size)
            .filter(|c| c.len() >= 2 * group.size())
            .map(|c| (c.to_vec(), Vec::new()))
            .collect(),
    };
    // One upload per epoch: the original samples' indices of every batch
    // in order, and the crop-and-flip draws of every sample (drawn in the
    // order the batches use them); each step takes views of them.
    let flat: Vec<i64> = batches
        .iter()
        .flat_map(|(i, _)| i.iter().copied())
        .collect();
    let order = transfers::upload(&flat, device);
    let samples: usize = batches.iter().map(|(i, e)| i.len() + e.len()).sum();
    let crops = plan
        .crop_flip
        .then(|| CropFlip::draw(samples, &mut rng, device));
    let (mut at, mut at_sample) = (0i64, 0i64);
    for (b, (idx, extra_idx)) in batches.iter().enumerate() {
        if group.is_parallel() {
            let at = format!("epoch {}, step {} of {}", epoch + 1, b + 1, batches.len());
            parallel::agree(group, &at)?;
        }
        let step = epoch * steps.per_epoch + b;
        sums.lr = schedule.lr_at(step, steps.total, steps.per_epoch);
        // During the ε warm-up the step's method attacks at ε_s (a scaled
        // copy of the plan's); after it, the plan's method itself.
        let warming = plan.method_at(step);
        let method = warming.as_ref().unwrap_or(&plan.method);
        sums.train_eps = method.attack_eps();
        // This rank's part of the global batch (alone: all of it).
        let part = RankPart::of(idx.len(), extra_idx.len(), group.rank(), group.size());
        let indices = order.narrow(0, at + part.orig.0, part.orig.1);
        let n = (idx.len() + extra_idx.len()) as i64;
        let aug = crops
            .as_ref()
            .map(|c| c.narrow(at_sample + part.offset, part.samples()));
        (at, at_sample) = (at + idx.len() as i64, at_sample + n);
        let (x, y) = split.batch(&indices, &extra_idx[part.extra.clone()], device)?;
        let x = match &aug {
            Some(a) => a.apply(&x),
            None => x,
        };
        let loss = plan.step_loss(&s.regularizer, method, epoch);
        let batch = Batch {
            x: &x,
            y: &y,
            indices: &indices,
            aug: aug.as_ref(),
            share: group.is_parallel().then_some(BatchShare {
                group,
                global_len: n,
            }),
        };
        let out = train_step(&s.model, &mut s.opt, &loss, &batch, step, sums.lr)?;
        if let Some(ema) = s.ema.as_mut() {
            ema.update();
        }
        sums.add(out, part.samples() as usize);
        sums.lambda = stein.map(|l| l.at(step));
        bar.inc(1);
    }
    Ok(sums)
}

/// Offset mixed into an epoch's seed for the global centre's calibration.
const CALIBRATION_STREAM: u64 = 0xCA11_B4A7;

/// Re-estimates the centre D of `--center global` on the current model at
/// the start of 0-based `epoch` (on the same `--calibration-size` inputs
/// every epoch, Hutchinson probes from the epoch's own stream, so a resumed
/// run computes the D of the uninterrupted one).
fn recalibrate(s: &mut Session, epoch: usize) -> Result<()> {
    let plan = s.plan;
    if let Regularizer::Stein(p) = &mut s.regularizer {
        if p.needs_calibration() {
            tch::manual_seed((epoch_seed(plan.seed, epoch) ^ CALIBRATION_STREAM) as i64);
            let size = plan.calibration_size;
            s.global_center = Some(p.calibrate(&s.model, &plan.data, size, plan.seed)?);
        }
    }
    Ok(())
}

/// Trains epochs `start_epoch..epochs`, appending their rows to `rows`
/// (replacing any row of a recomputed epoch), then times the run's step in
/// isolation ([`timing`]; `None` when no epoch was left to train).
///
/// Errors: [`Error::Diverged`] when an epoch's training loss or penalty is
/// not finite (the resume state of a run that never saved an epoch is
/// removed); the step's and the writers' errors.
pub fn train_epochs(
    s: &mut Session,
    start_epoch: usize,
    rows: &mut Vec<EpochMetrics>,
) -> Result<Option<timing::StepTiming>> {
    let plan = s.plan;
    let epochs = plan.epochs;
    let device = plan.runtime.device;
    let split = TrainSplit {
        x: plan.data.train.x.to_device(device),
        y: plan.data.train.y.to_device(device),
        extra: plan.extra.as_ref().map(|e| &e.source),
    };
    let evaluator = EpochEvaluator::new(plan);
    let classifies = plan.base_loss().classifies();
    // Rank 0 alone measures (and writes).
    let instruments = (plan.group.is_root() && matches!(s.regularizer, Regularizer::Stein(_)))
        .then(|| Instruments::new(&plan.data, plan.seed, plan.instrument_batch_size, device));
    let bar = progress::bar(plan.steps.total as u64, "train");
    bar.set_position((start_epoch * plan.steps.per_epoch) as u64);
    let group = &plan.group;
    for epoch in start_epoch..epochs {
        let epoch_start = Instant::now();
        recalibrate(s, epoch)?;
        let sums = train_epoch(s, &split, epoch, &bar)?.summed(group)?;
        parallel::agree_models(group, &s.model, s.ema.as_ref().map(|e| &e.model))?;
        if let Some(e) = sums.divergence(epoch + 1) {
            if group.is_root() {
                resume::discard_if_unsaved(&plan.out);
            }
            return Err(e);
        }
        if !group.is_root() {
            // Rank 0 evaluates and writes; the others go on to the next
            // epoch's first sum.
            continue;
        }
        let eval = evaluator.measure(s.eval_model());
        let diag = match (&instruments, &s.regularizer) {
            (Some(d), Regularizer::Stein(p)) => Some(d.measure(p, &s.model)?),
            _ => None,
        };
        let mut row = sums.row(
            epoch + 1,
            eval,
            classifies,
            epoch_start.elapsed().as_secs_f64(),
            (diag, s.global_center),
        );
        let val = plan
            .validation
            .as_ref()
            .filter(|v| v.due(epoch + 1, epochs))
            .map(|v| {
                v.measure(
                    s.eval_model(),
                    plan.eval_batch_size,
                    epoch_seed(plan.seed, epoch),
                )
            });
        if let Some(m) = val {
            (row.val_acc, row.val_robust_acc) = (Some(m.acc), m.robust_acc);
        }
        let last_epoch = row.epoch == epochs;
        if last_epoch || row.epoch.is_multiple_of(plan.log_every) {
            bar.suspend(|| println!("{}", epoch_line(&row, epochs)));
        }
        rows.retain(|r| r.epoch < row.epoch);
        rows.push(row);
        if let Some(m) = val.filter(|m| s.best.is_none_or(|(_, b)| m.criterion() > b)) {
            s.best = Some((epoch + 1, m.criterion()));
            output::write_best(s, rows)?;
        }
        if last_epoch || (epoch + 1).is_multiple_of(plan.checkpoint_every) {
            write_metrics(&plan.out.metrics(), rows)?;
            let ema = s.ema.as_ref();
            resume::save_state(&plan.out, &s.model, &s.opt, ema, epoch + 1, s.global_center)?;
        }
    }
    bar.finish_and_clear();
    if start_epoch < epochs && plan.step_timing {
        return timing::time_steps(s, &split).map(Some);
    }
    Ok(None)
}
