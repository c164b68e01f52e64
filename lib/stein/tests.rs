//! Analytic checks of the residual and penalty (closed forms, Stein identity, Hutchinson, fd vs autograd).
use super::penalty::centred_penalty;
use super::*;
use crate::models::{Activation, Arch, Model, ModelSpec};
use tch::{Device, Kind, Tensor};

const F64: (Kind, Device) = (Kind::Double, Device::Cpu);

fn opts(
    order: Order,
    mode: Mode,
    laplacian: Laplacian,
    probes: i64,
    fd_step: f64,
) -> ResidualOptions {
    ResidualOptions {
        order,
        mode,
        laplacian,
        probes,
        fd_step,
        difference: Difference::Central,
    }
}

/// m(x) = aᵀx + ½xᵀAx with A symmetric, per sample.
struct Quadratic {
    a: Tensor,
    big_a: Tensor,
}

impl Quadratic {
    fn new(d: i64) -> Quadratic {
        tch::manual_seed(11);
        let m = Tensor::randn([d, d], F64);
        Quadratic {
            a: Tensor::randn([d], F64),
            big_a: (&m + m.transpose(0, 1)) * 0.5,
        }
    }

    fn m(&self, x: &Tensor) -> Tensor {
        x.matmul(&self.a)
            + (x.matmul(&self.big_a) * x).sum_dim_intlist(1, false, Kind::Double) * 0.5
    }

    /// tr(A) + s(x)ᵀ(a + Ax).
    fn exact(&self, x: &Tensor, s: &Tensor) -> Tensor {
        let grad = x.matmul(&self.big_a) + &self.a;
        (s * grad).sum_dim_intlist(1, false, Kind::Double) + self.big_a.trace()
    }
}

fn score_of(x: &Tensor) -> Tensor {
    -x * 0.7 + 0.3
}

#[test]
fn a_exact_residual_of_a_quadratic_matches_the_closed_form() {
    let q = Quadratic::new(5);
    let x = Tensor::randn([16, 5], F64);
    let s = score_of(&x);
    let y = Tensor::zeros([16], (Kind::Int64, Device::Cpu));
    let expect = q.exact(&x, &s);
    for (mode, h) in [(Mode::Autograd, 1e-3), (Mode::Fd, 1e-3)] {
        let r = residual(
            |xx, _| q.m(xx),
            &x,
            &y,
            &s,
            &opts(Order::Full, mode, Laplacian::Exact, 1, h),
            None,
            false,
        )
        .unwrap();
        let err = (&r.residual - &expect).abs().max().double_value(&[]);
        assert!(err < 1e-5, "{mode:?}: max error {err}");
        let first = (&s * (x.matmul(&q.big_a) + &q.a)).sum_dim_intlist(1, false, Kind::Double);
        assert!((&r.first_order - first).abs().max().double_value(&[]) < 1e-5);
    }
}

#[test]
fn a_hutchinson_mean_is_within_three_standard_errors() {
    let q = Quadratic::new(5);
    // Many copies of one point, each with its own Rademacher probe: the
    // per-sample residuals are independent Hutchinson estimates.
    let n = 20_000;
    let x = Tensor::randn([1, 5], F64).repeat([n, 1]);
    let s = score_of(&x);
    let y = Tensor::zeros([n], (Kind::Int64, Device::Cpu));
    let expect = q
        .exact(&x.narrow(0, 0, 1), &s.narrow(0, 0, 1))
        .double_value(&[0]);
    tch::manual_seed(5);
    for mode in [Mode::Autograd, Mode::Fd] {
        let r = residual(
            |xx, _| q.m(xx),
            &x,
            &y,
            &s,
            &opts(Order::Full, mode, Laplacian::Hutchinson, 1, 1e-3),
            None,
            false,
        )
        .unwrap()
        .residual;
        let mean = r.mean(Kind::Double).double_value(&[]);
        let se = r.std(true).double_value(&[]) / (n as f64).sqrt();
        assert!(se > 0.0, "Hutchinson estimates should vary");
        assert!(
            (mean - expect).abs() < 3.0 * se,
            "{mode:?}: mean {mean} vs {expect}, se {se}"
        );
    }
}

fn smooth_model(arch: Arch, input_shape: Vec<i64>, outputs: i64) -> Model {
    tch::manual_seed(3);
    let spec = ModelSpec {
        arch,
        activation: if arch == Arch::Mlp {
            Activation::Tanh
        } else {
            Activation::Silu
        },
        mlp_hidden: vec![16, 16],
        input_shape: input_shape.clone(),
        num_outputs: outputs,
    };
    let c = if input_shape.len() == 3 {
        input_shape[0] as usize
    } else {
        1
    };
    let mut m = Model::new(&spec, Device::Cpu, &vec![0.0; c], &vec![1.0; c]).unwrap();
    m.set_kind(Kind::Double);
    m
}

#[test]
fn b_stein_identity_holds_by_monte_carlo() {
    // p = N(0, I₃): E[Δf + sᵀ∇f] = 0 with s(x) = −x for any smooth f.
    let model = smooth_model(Arch::Mlp, vec![3], 1);
    let n = 100_000;
    tch::manual_seed(21);
    let x = Tensor::randn([n, 3], F64);
    let y = Tensor::zeros([n], (Kind::Int64, Device::Cpu));
    let mut values = Vec::new();
    for k in 0..10 {
        let xb = x.narrow(0, k * 10_000, 10_000);
        let yb = y.narrow(0, k * 10_000, 10_000);
        let r = residual(
            |xx, yy| probe_values(&model.forward_t(xx, false), yy, Probe::Output),
            &xb,
            &yb,
            &(-&xb),
            &opts(Order::Full, Mode::Autograd, Laplacian::Exact, 1, 1e-3),
            None,
            false,
        )
        .unwrap();
        values.push(r.residual);
    }
    let r = Tensor::cat(&values, 0);
    let mean = r.mean(Kind::Double).double_value(&[]);
    let se = r.std(true).double_value(&[]) / (n as f64).sqrt();
    assert!(
        se > 1e-4,
        "residuals should not vanish identically (se {se})"
    );
    assert!(
        mean.abs() < 4.0 * se,
        "Stein identity: mean {mean}, se {se}"
    );
    // The check can fail: shifting the score along the mean gradient
    // (s = −x + 3ĝ) moves the mean by 3‖E∇f‖, far beyond 4 standard errors.
    let x0 = x.narrow(0, 0, 10_000).detach().set_requires_grad(true);
    let f = model.forward_t(&x0, false).sum(Kind::Double);
    let g = Tensor::run_backward(&[f], &[&x0], false, false)
        .pop()
        .unwrap()
        .mean_dim(0, false, Kind::Double);
    let shift = &g / g.norm() * 3.0;
    let bad = residual(
        |xx, yy| probe_values(&model.forward_t(xx, false), yy, Probe::Output),
        &x.narrow(0, 0, 10_000),
        &y.narrow(0, 0, 10_000),
        &(-x.narrow(0, 0, 10_000) + &shift),
        &opts(Order::Full, Mode::Autograd, Laplacian::Exact, 1, 1e-3),
        None,
        false,
    )
    .unwrap()
    .residual;
    let bad_mean = bad.mean(Kind::Double).double_value(&[]);
    let bad_se = bad.std(true).double_value(&[]) / 100.0;
    assert!(
        bad_mean.abs() > 4.0 * bad_se,
        "a wrong score went unnoticed"
    );
}

/// Residuals and the penalty's parameter gradient, flattened.
fn residual_and_gradient(
    model: &Model,
    x: &Tensor,
    y: &Tensor,
    s: &Tensor,
    o: &ResidualOptions,
    probes: &Tensor,
) -> (Tensor, Tensor) {
    let r = residual(
        |xx, yy| probe_values(&model.forward_t(xx, false), yy, Probe::Margin),
        x,
        y,
        s,
        o,
        Some(probes),
        true,
    )
    .unwrap()
    .residual;
    let pen = centred_penalty(&r, Center::Batch, false, 0.0);
    let params: Vec<Tensor> = model.vs.trainable_variables();
    let grads = Tensor::run_backward(&[pen], &params, false, false);
    let flat: Vec<Tensor> = grads.iter().map(|g| g.flatten(0, -1)).collect();
    (r.detach(), Tensor::cat(&flat, 0))
}

fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).norm().double_value(&[]) / b.norm().double_value(&[]).max(1e-30)
}

#[test]
fn c_fd_and_autograd_agree_in_double_precision() {
    // Tolerance 1e-4 relative, justified in the module docs: with h = 1e-3 in
    // f64 the central differences' truncation error is ~h²·|m'''| ≈ 1e-6
    // relative and rounding ~1e-10.
    // Smooth networks only: cnn-small's max-pooling has kinks that a finite
    // difference may straddle. The wide ResNet (SiLU, eval-mode BatchNorm,
    // average pooling) is smooth.
    for (arch, shape) in [
        (Arch::Mlp, vec![1, 4, 4]),
        (
            Arch::Wrn {
                depth: 10,
                width: 1,
            },
            vec![3, 8, 8],
        ),
    ] {
        let model = smooth_model(arch, shape.clone(), 5);
        tch::manual_seed(8);
        let mut xs = vec![6];
        xs.extend(&shape);
        let x = Tensor::rand(xs.as_slice(), F64);
        let y = Tensor::from_slice(&[0i64, 1, 2, 3, 4, 0]);
        let s = Tensor::randn(xs.as_slice(), F64);
        let probes = rademacher(2, &x);
        for order in [Order::FirstOrder, Order::Full] {
            let auto = opts(order, Mode::Autograd, Laplacian::Hutchinson, 2, 1e-3);
            let fd = opts(order, Mode::Fd, Laplacian::Hutchinson, 2, 1e-3);
            let (ra, ga) = residual_and_gradient(&model, &x, &y, &s, &auto, &probes);
            let (rf, gf) = residual_and_gradient(&model, &x, &y, &s, &fd, &probes);
            let (er, eg) = (rel_err(&rf, &ra), rel_err(&gf, &ga));
            assert!(
                er < 1e-4 && eg < 1e-4,
                "{arch} {order:?}: residual {er:e}, gradient {eg:e}"
            );
            assert!(ga.norm().double_value(&[]) > 0.0);
        }
    }
}

#[test]
fn d_detaching_the_exact_batch_mean_leaves_the_gradient_unchanged() {
    let model = smooth_model(Arch::Mlp, vec![1, 4, 4], 5);
    let x = Tensor::rand([8, 1, 4, 4], F64);
    let y = Tensor::from_slice(&[0i64, 1, 2, 3, 4, 0, 1, 2]);
    let s = -(&x - 0.5) * 4.0;
    let o = opts(
        Order::FirstOrder,
        Mode::Autograd,
        Laplacian::Hutchinson,
        1,
        1e-3,
    );
    let grads = |detach: bool, center: Center| {
        let r = residual(
            |xx, yy| probe_values(&model.forward_t(xx, false), yy, Probe::Margin),
            &x,
            &y,
            &s,
            &o,
            None,
            true,
        )
        .unwrap()
        .residual;
        let pen = centred_penalty(&r, center, detach, 0.0);
        let params: Vec<Tensor> = model.vs.trainable_variables();
        Tensor::cat(
            &Tensor::run_backward(&[pen], &params, false, false)
                .iter()
                .map(|g| g.flatten(0, -1))
                .collect::<Vec<_>>(),
            0,
        )
    };
    let attached = grads(false, Center::Batch);
    let detached = grads(true, Center::Batch);
    assert!(
        rel_err(&detached, &attached) < 1e-12,
        "detach changed the gradient"
    );
    // Not a vacuous check: without centring the gradient differs.
    assert!(rel_err(&grads(false, Center::None), &attached) > 1e-3);
}

#[test]
fn probes_and_penalty_follow_their_definitions() {
    let z = Tensor::from_slice(&[1.0f64, 2.0, 3.0, 0.5, 0.5, 0.5]).view([2, 3]);
    let y = Tensor::from_slice(&[2i64, 0]);
    let m = probe_values(&z, &y, Probe::Margin);
    let expect0 = (1f64.exp() + 2f64.exp()).ln() - 3.0;
    let expect1 = (2.0 * 0.5f64.exp()).ln() - 0.5;
    assert!((m.double_value(&[0]) - expect0).abs() < 1e-12);
    assert!((m.double_value(&[1]) - expect1).abs() < 1e-12);
    assert_eq!(probe_values(&z, &y, Probe::Logit).double_value(&[0]), -3.0);
    let p = probe_values(&z, &y, Probe::Prob).double_value(&[1]);
    assert!((p - 1.0 / 3.0).abs() < 1e-12);
    let lp = probe_values(&z, &y, Probe::LogProb).double_value(&[1]);
    assert!((lp - (1.0f64 / 3.0).ln()).abs() < 1e-12);

    let r = Tensor::from_slice(&[1.0f64, 2.0, 3.0]);
    assert!(
        (centred_penalty(&r, Center::Batch, false, 0.0).double_value(&[]) - 2.0 / 3.0).abs()
            < 1e-12
    );
    assert!(
        (centred_penalty(&r, Center::Global, false, 1.0).double_value(&[]) - 5.0 / 3.0).abs()
            < 1e-12
    );
    assert!(
        (centred_penalty(&r, Center::None, false, 0.0).double_value(&[]) - 14.0 / 3.0).abs()
            < 1e-12
    );
}

#[test]
fn bad_options_and_shapes_are_refused() {
    let o = |probes, h| {
        opts(
            Order::Full,
            Mode::Autograd,
            Laplacian::Hutchinson,
            probes,
            h,
        )
    };
    assert!(o(0, 1e-2)
        .check(10)
        .unwrap_err()
        .to_string()
        .contains("--hutchinson-probes"));
    assert!(o(1, 0.0)
        .check(10)
        .unwrap_err()
        .to_string()
        .contains("--fd-step"));
    let exact = opts(Order::Full, Mode::Autograd, Laplacian::Exact, 1, 1e-2);
    assert!(exact
        .check(3072)
        .unwrap_err()
        .to_string()
        .contains("hutchinson"));
    let x = Tensor::zeros([2, 3], F64);
    let err = residual(
        |xx, _| xx.sum_dim_intlist(1, false, Kind::Double),
        &x,
        &x,
        &Tensor::zeros([2, 4], F64),
        &o(1, 1e-2),
        None,
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("shape"), "{err}");
    assert!(check_probe(Probe::Margin, crate::data::Task::Regression).is_err());
}

#[test]
fn e_one_sided_fd_agrees_with_central_and_reuses_the_clean_probe() {
    let m = smooth_model(Arch::Mlp, vec![6], 3);
    let x = Tensor::rand([12, 6], F64);
    let s = score_of(&x);
    let y = Tensor::from_slice(&[0i64, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2]);
    let f = |xx: &Tensor, yy: &Tensor| probe_values(&m.forward_t(xx, false), yy, Probe::Margin);
    let h = 1e-5;
    let central = opts(Order::FirstOrder, Mode::Fd, Laplacian::Hutchinson, 1, h);
    let forward = ResidualOptions {
        difference: Difference::Forward,
        ..central.clone()
    };
    let first = |o: &ResidualOptions, clean: Option<&Tensor>| {
        let inputs = ResidualInputs {
            x: &x,
            y: &y,
            score: &s,
            probes: None,
            clean,
        };
        residual_of(f, &inputs, o, false).unwrap().residual
    };
    let rc = first(&central, None);
    let rf = first(&forward, None);
    // Forward-difference truncation ‖s̃‖·h·|m''|/2 ≈ 1e-5 relative here;
    // rounding ε|m|/h ≈ 1e-11: demand 1e-3 relative.
    let err = rel_err(&rf, &rc);
    assert!(err < 1e-3, "one-sided vs central: {err}");
    assert!(err > 0.0, "the two differences are different formulas");
    // m(x) handed in from a forward made anyway: the same residual.
    let m0 = f(&x, &y);
    let reused = first(&forward, Some(&m0));
    assert!(rel_err(&reused, &rf) < 1e-9);
    // Full residual: the Laplacian's centre term reuses m(x) too.
    tch::manual_seed(4);
    let probes = rademacher(2, &x);
    let full = opts(Order::Full, Mode::Fd, Laplacian::Hutchinson, 2, 1e-3);
    let with = |clean: Option<&Tensor>| {
        let inputs = ResidualInputs {
            x: &x,
            y: &y,
            score: &s,
            probes: Some(&probes),
            clean,
        };
        residual_of(f, &inputs, &full, false).unwrap().residual
    };
    assert!(rel_err(&with(Some(&m0)), &with(None)) < 1e-9);
}

#[test]
fn f_batched_hutchinson_equals_k_separate_probes() {
    let m = smooth_model(Arch::Mlp, vec![6], 3);
    let x = Tensor::rand([10, 6], F64);
    let s = score_of(&x);
    let y = Tensor::from_slice(&[0i64, 1, 2, 0, 1, 2, 0, 1, 2, 0]);
    let f = |xx: &Tensor, yy: &Tensor| probe_values(&m.forward_t(xx, false), yy, Probe::Margin);
    tch::manual_seed(8);
    let k = 4;
    let probes = rademacher(k, &x);
    let o = opts(Order::Full, Mode::Autograd, Laplacian::Hutchinson, k, 1e-3);
    let batched = residual(f, &x, &y, &s, &o, Some(&probes), true).unwrap();
    // K separate probes, one Hessian–vector product each (the loop).
    let looped =
        residual_autograd(&f, &x, &y, &s, Some(&probes), Laplacian::Hutchinson, true).unwrap();
    let one = ResidualOptions {
        probes: 1,
        ..o.clone()
    };
    let singles: Vec<Tensor> = (0..k)
        .map(|i| {
            let p = probes.narrow(0, i, 1);
            residual(f, &x, &y, &s, &one, Some(&p), false)
                .unwrap()
                .residual
        })
        .collect();
    let mean = Tensor::stack(&singles, 0).mean_dim(0, false, Kind::Double);
    assert!(rel_err(&batched.residual, &looped.residual) < 1e-12);
    assert!(rel_err(&batched.residual.detach(), &mean) < 1e-12);
    // The parameter gradients agree too.
    let grads = |r: &Tensor| {
        let p = m.vs.trainable_variables();
        let refs: Vec<&Tensor> = p.iter().collect();
        Tensor::run_backward(&[r.square().sum(Kind::Double)], &refs, true, false)
    };
    for (a, b) in grads(&batched.residual)
        .iter()
        .zip(grads(&looped.residual).iter())
    {
        assert!(rel_err(a, b) < 1e-10);
    }
}
