//! `--fd-residual` of the train_step bench: how far the finite-difference
//! first-order Stein residual lies from the autograd one on one batch, with
//! TF32 off and (CUDA only) on.
//!
//! Model: resnet18 with SiLU (smooth, so no ReLU kink lies within the fd
//! step and the gap is rounding plus O(h²) truncation), seeded at 0, its
//! BatchNorm statistics taken from three train-mode forwards of the batch,
//! then eval mode as in the penalty. Batch: B CIFAR-shaped uniform images
//! (`--batch`, default 128 on CUDA, 32 on the CPU) with random labels;
//! scores of N(0, I); probe: the logit margin. Residual r(x) = s̃(x)ᵀ∇ₓm(x),
//! by autograd and by central differences with h = 1e-2.
//!
//! The reference is the autograd residual of the same weights in float64
//! (TF32 never applies to it). For each TF32 state the float32 fd and
//! autograd residuals are compared with it, and one line is printed:
//! `fd-residual: tf32 off|on, resnet18 silu, batch B, vs f64 autograd: fd median A p90 P, autograd median C p90 D`
//! with relative errors |r − r_ref| / |r_ref| per sample (median and 90th
//! percentile over the batch). On the CPU TF32 does not exist: only the
//! `off` line is printed, then a line saying so.
//!
//! What to expect: in float64 the two modes agree to ~1e-7 here (the O(h²)
//! truncation is negligible), so the float32 fd gap is rounding, ~ε·|m|·‖s̃‖/h
//! (ε = 6e-8, ‖s̃‖ = ‖x‖ ≈ 32): absolute ~5e-4, large next to an untrained
//! network's small residuals (~1e-2 here, giving a median of a few 1e-2;
//! a trained network's larger input gradients should give a smaller
//! relative gap, not measured here). TF32 rounds the
//! convolutions' operands to ε ≈ 4.9e-4, ~8000 times float32's, so with
//! TF32 on the fd residual is expected to be noise (not yet run on a GPU).
use crate::{stein_penalty, Opts};
use taser::data::Dataset;
use taser::device::numerics::{self, NumericMode};
use taser::models::{Activation, Arch, Model, ModelSpec};
use taser::stein::{Difference, Mode, Order};
use tch::{Kind, Tensor};

/// The first-order residuals `[B]` of `model` on (`x`, `y`) in `mode`.
fn residual(model: &Model, data: &Dataset, x: &Tensor, y: &Tensor, mode: Mode) -> Tensor {
    let penalty = stein_penalty(
        Order::FirstOrder,
        mode,
        Difference::Central,
        1.0,
        data,
        x.device(),
    );
    let indices = Tensor::arange(x.size()[0], (tch::Kind::Int64, x.device()));
    penalty
        .residual(model, x, y, &indices, None, false)
        .expect("first-order residual")
        .residual
        .detach()
        .to_kind(Kind::Double)
}

/// Median and 90th percentile of |r − r_ref| / |r_ref| over the batch.
fn relative_error(r: &Tensor, reference: &Tensor) -> (f64, f64) {
    let e = (r - reference).abs() / reference.abs().clamp_min(1e-30);
    let q = |p: f64| {
        e.quantile_scalar(p, None::<i64>, false, "linear")
            .double_value(&[])
    };
    (q(0.5), q(0.9))
}

/// Sets TF32 (deterministic stays off), checking that libtorch holds it.
fn set_tf32(on: bool) {
    numerics::apply(NumericMode {
        tf32: on,
        deterministic: false,
    })
    .expect("numerical mode");
    assert_eq!(numerics::read_back().tf32, on, "libtorch's TF32 state");
}

/// Prints the `fd-residual:` lines (see the module's documentation).
pub fn run(cifar_like: &Dataset, o: &Opts) {
    let cuda = o.device.is_cuda();
    let batch = o.batch.unwrap_or(if cuda { 128 } else { 32 });
    tch::manual_seed(0);
    let spec = ModelSpec {
        arch: Arch::Resnet18,
        activation: Activation::Silu,
        mlp_hidden: vec![],
        input_shape: cifar_like.input_shape.clone(),
        num_outputs: cifar_like.num_outputs,
    };
    let new = || Model::new(&spec, o.device, &[0.5; 3], &[0.25; 3]).expect("resnet18");
    let model = new();
    let x = Tensor::rand([batch, 3, 32, 32], (Kind::Float, o.device));
    let y = Tensor::randint(10, [batch], (Kind::Int64, o.device));
    tch::no_grad(|| {
        for _ in 0..3 {
            let _ = model.forward_t(&x, true);
        }
    });
    let mut double = new();
    double.copy_from(&model).expect("copy of resnet18");
    double.set_kind(Kind::Double);
    let x64 = x.to_kind(Kind::Double);
    let reference = residual(&double, cifar_like, &x64, &y, Mode::Autograd);
    let states: &[bool] = if cuda { &[false, true] } else { &[false] };
    for &tf32 in states {
        set_tf32(tf32);
        let fd = relative_error(&residual(&model, cifar_like, &x, &y, Mode::Fd), &reference);
        let ag = relative_error(
            &residual(&model, cifar_like, &x, &y, Mode::Autograd),
            &reference,
        );
        println!(
            "fd-residual: tf32 {}, resnet18 silu, batch {batch}, vs f64 autograd: fd median {:.1e} p90 {:.1e}, autograd median {:.1e} p90 {:.1e}",
            if tf32 { "on" } else { "off" },
            fd.0,
            fd.1,
            ag.0,
            ag.1
        );
    }
    set_tf32(false);
    if !cuda {
        println!("fd-residual: tf32 on n/a (TF32 exists on CUDA devices only)");
    }
}
