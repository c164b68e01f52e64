//! `train`: trains a model on a data set and writes a checkpoint.
use anyhow::Context;
use clap::Parser;
use std::process::ExitCode;
use taser::exit::{self, Status};
use taser::train::{parallel, train, RunOptions, TrainConfig};

/// Train a classifier (or the toy regressor) and write a safetensors
/// checkpoint with a JSON sidecar and a per-epoch metrics CSV.
///
/// Outputs in --out: model.safetensors + model.json (final weights, model
/// spec, every hyperparameter, seed, version, metrics), metrics.csv (one row
/// per epoch: epoch, lr, train_eps, train_loss, train_acc, test_loss,
/// test_acc, ood_loss, penalty, residual_mean, residual_std, risk_standard,
/// risk_madry, risk_score, grad_norm_mean, probe_mean, penalty_ratio,
/// score_grad_cosine, hutchinson_noise_share, penalty_plain,
/// penalty_unbiased, global_center, val_acc, val_robust_acc, seconds; a column a run does not measure is empty) and
/// the resume state (resume.safetensors, resume.json), written after every
/// epoch, which --resume continues from. With --val-size N:
/// model-best.safetensors + model-best.json (the epoch with the highest
/// val_robust_acc, or val_acc under --val-attack none; its sidecar's
/// hyperparameters.validation.best_epoch), and under --select best
/// model.safetensors is that epoch's while model-last.safetensors keeps the
/// last. attack --checkpoint and finetune --from take any of them.
///
/// Extra data (--extra-data FILE, --extra-ratio r, SCORE's generated-data
/// mixing): every batch of B holds round(r·B) samples of the original
/// training set and the rest from FILE, each from a seeded shuffle,
/// augmentation applied to both; an epoch is one pass over the original
/// set. FILE is HDF5 (datasets images: float32 [N,C,H,W] in [0,1] or uint8
/// [N,H,W,C]; labels: int64 [N]) or in the CIFAR binary format. It is
/// checked whole on start (in chunks) and then streamed from the host, each
/// batch's rows read as stored (uint8 stays uint8) and copied to the device
/// once: host memory does not grow with the file (1M CIFAR images: 3 GB).
///
/// Instruments (--reg stein or grad-norm with --lambda > 0), measured after
/// each epoch on a fixed probe batch of 256 training inputs (or
/// --instrument-batch-size N; model.json records it as the metric
/// instrument_batch_size) drawn from --seed, live model, BatchNorm in eval mode, in --stein-coordinates:
/// grad_norm_mean = mean ‖∇ₓm‖; probe_mean = mean m (the smooth margin
/// unless --probe; > 0 is misclassified); penalty_ratio = λ(t)·penalty /
/// (train_loss + λ(t)·penalty) (λ at the epoch's last step); score_grad_cosine = mean over
/// samples of cos(s̃(x), ∇ₓm(x)) (empty with --zero-scores or grad-norm);
/// hutchinson_noise_share = V/R₁ from 8 single-probe residuals r⁽ᵏ⁾ with
/// fixed probes: R₁ = mean_k R(r⁽ᵏ⁾), R₈ = R(mean_k r⁽ᵏ⁾), V = 8/7·(R₁ − R₈),
/// the share of the one-probe penalty that is estimator noise (empty unless
/// --stein-order full with --stein-laplacian hutchinson); global_center = D
/// of --center global, re-estimated at the start of every epoch on the
/// current model.
///
/// Controls of the TASER penalty: --reg grad-norm (λ·mean‖∇ₓm‖², no score),
/// --score-permute (each sample gets another sample's score from --scores),
/// --zero-scores (r = Δm) and --stein-coordinates pixel|model.
///
/// Methods (--method): standard, pgd-at, trades, mart, each with --loss kl
/// (the references) or one of SCORE's Table 1 distances between class
/// probability vectors (se, l1, l2, linf, js, js-dist, l1-sq), --clip, --label-smoothing,
/// --awp (adversarial weight perturbation) and --ema-tau. The training
/// attacks default to the data set's threat model: L∞ ε = 8/255 on CIFAR,
/// ε = 0.2 on digits, ε = 0.3 on mnist and mnist-5k, 10 PGD steps of ε/4. The TASER penalty (--lambda > 0)
/// combines with every method and is always computed on the clean input.
/// --eps-warmup-epochs E ramps the training attack's radius linearly: at
/// optimiser step s (0-based, across epochs; S steps per epoch) it attacks
/// with ε_s = ε·min(1, (s+1)/(E·S)) and a step size scaled alike; the
/// resume state carries E, so a run resumed mid-ramp continues the same
/// schedule. metrics.csv's train_eps is ε_s at each epoch's last step (0
/// for runs without a training attack).
///
/// SCORE's 1-D toy (--dataset toy-score: p_d(y=1) = 1/6, x|1 ~ N(1,1),
/// x|0 ~ N(−1,4), 60 000 draws or --train-size) trains one of SCORE's risks
/// against the closed-form posterior: --objective standard | madry | score
/// with --distance kl | l1 | l2 | se over B(x) = [x − r, x + r] (--radius,
/// default 1), the inner maximum on a grid (default) or by PGD (--inner-max).
/// R_SCORE needs the posterior p_d(y|x′) at the perturbed point, so it exists
/// only for toy-score. There test_loss is the posterior gap mean |p_θ − p_d|
/// on 60 000 fresh draws, and metrics.csv adds risk_standard, risk_madry and
/// risk_score (the run's distance, after every epoch). Use --model mlp and
/// --batch-size ≥ the training size for full-batch steps; `make score-toy`
/// runs Figures 1–3.
///
/// Examples:
///   train --dataset digits --model cnn-small --epochs 20 --out runs/std
///
///   train --dataset digits --method trades --loss se --beta 3 --out runs/trades-se
///
///   train --dataset digits --method pgd-at --lambda 1 --scores digits.h5
///     --lambda-warmup-steps 450 --optimizer adam --lr 1e-3 --out runs/pgdat-taser
///
///   train --dataset toy-score --objective score --distance l2 --model mlp
///     --mlp-hidden 32,32 --activation tanh --optimizer adam --lr 3e-3
///     --weight-decay 0 --schedule constant --epochs 500 --batch-size 60000
///     --out runs/score-l2
///
/// While it runs, --out is locked (.taser-lock): a second run on it is
/// refused naming the holder. A failed run removes only its partial files
/// (and the folders it created that are left empty); the finished ones stay
/// (the resume state of every saved epoch), and the message names them and
/// how to continue (--resume).
///
/// Exit codes: 0 trained (or the run in --out was already complete), 1 the
/// training failed (diverged: loss or penalty not finite; an I/O or libtorch
/// error; another run writing --out), 2 bad usage or input (a flag out of its domain, missing or
/// corrupt data or scores, an --out that holds another run or cannot be
/// written), 3 interrupted (a --data-parallel run stopped by SIGTERM or
/// SIGINT on any rank; the same command with --resume continues it). A
/// data-parallel rank stopped by another rank's failure exits with that
/// rank's code.
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    long_about,
    allow_negative_numbers = true,
    args_override_self = true
)]
struct Args {
    #[command(flatten)]
    config: TrainConfig,
    #[command(flatten)]
    run: RunOptions,
}

fn main() -> ExitCode {
    let args = exit::stop_if_checking_with(<Args as clap::Parser>::parse(), |a| {
        parallel::check_flags(&a.config, a.run.data_parallel)
    });
    exit::run_main(|| run(args))
}

fn run(args: Args) -> anyhow::Result<Status> {
    let summary = train(&args.config, &args.run).context("train failed")?;
    println!("{summary}");
    Ok(Status::Ok)
}
