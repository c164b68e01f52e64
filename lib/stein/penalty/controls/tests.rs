//! Closed-form checks of the controls, the coordinates and the Hutchinson
//! noise share.
use super::*;
use crate::stein::penalty::centred_penalty;
use crate::stein::penalty::coordinates::Rescale;
use crate::stein::penalty::instruments::{probe_noise, NOISE_SHARE_PROBES};
use crate::stein::{
    rademacher, residual, Center, Difference, Laplacian, Mode, Order, Residual, ResidualOptions,
};
use tch::Device;

const F64: (Kind, Device) = (Kind::Double, Device::Cpu);

fn opts(laplacian: Laplacian, probes: i64) -> ResidualOptions {
    ResidualOptions {
        order: Order::Full,
        mode: Mode::Autograd,
        laplacian,
        probes,
        fd_step: 1e-3,
        difference: Difference::Central,
    }
}

/// A symmetric d×d matrix with seed `seed`.
fn symmetric(d: i64, seed: i64) -> Tensor {
    tch::manual_seed(seed);
    let m = Tensor::randn([d, d], F64);
    (&m + m.transpose(0, 1)) * 0.5
}

/// m(x) = aᵀx + ½xᵀAx per sample of `x` `[B, d]`.
fn quadratic(a: &Tensor, big_a: &Tensor, x: &Tensor) -> Tensor {
    x.matmul(a) + (x.matmul(big_a) * x).sum_dim_intlist(1, false, Kind::Double) * 0.5
}

/// A random quadratic (A from `seed`, a) and a batch of `b` inputs in ℝᵈ.
fn quadratic_batch(d: i64, b: i64, seed: i64) -> (Tensor, Tensor, Tensor) {
    let big_a = symmetric(d, seed);
    let a = Tensor::randn([d], F64);
    (big_a, a, Tensor::randn([b, d], F64))
}

fn labels(b: i64) -> Tensor {
    Tensor::zeros([b], (Kind::Int64, Device::Cpu))
}

#[test]
fn the_derangement_keeps_every_index_once_and_moves_each() {
    for n in [2usize, 3, 10, 1797] {
        let perm = derangement(n, 42);
        let mut sorted = perm.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            (0..n as i64).collect::<Vec<_>>(),
            "n = {n}: multiset"
        );
        assert!(
            perm.iter().enumerate().all(|(i, &p)| p != i as i64),
            "n = {n}: a fixed point"
        );
        assert_eq!(perm, derangement(n, 42), "n = {n}: same seed, same pairing");
    }
    assert_ne!(derangement(1797, 42), derangement(1797, 43));
    assert_eq!(derangement(1, 0), vec![0]);
}

#[test]
fn the_cosine_is_averaged_over_samples_and_zero_where_a_vector_vanishes() {
    let s = Tensor::from_slice(&[1.0, 0.0, 2.0, 2.0, 0.0, 0.0]).view([3, 2]);
    let g = Tensor::from_slice(&[3.0, 0.0, -1.0, -1.0, 1.0, 1.0]).view([3, 2]);
    // cos = 1, −1 and 0 (a zero score).
    assert!((mean_cosine(&s.to_kind(Kind::Float), &g.to_kind(Kind::Float)) - 0.0).abs() < 1e-7);
    let s2 = Tensor::from_slice(&[1.0, 0.0, 0.0, 1.0]).view([2, 2]);
    let g2 = Tensor::from_slice(&[2.0, 0.0, 1.0, 1.0]).view([2, 2]);
    let expect = (1.0 + 0.5f64.sqrt()) / 2.0;
    assert!((mean_cosine(&s2, &g2) - expect).abs() < 1e-12);
}

#[test]
fn the_gradient_penalty_is_the_mean_squared_norm_of_a_plus_ax() {
    let b = 32;
    let (big_a, a, x) = quadratic_batch(6, b, 3);
    let (values, grad) =
        input_gradient(|xx, _| quadratic(&a, &big_a, xx), &x, &labels(b), false).unwrap();
    let expect_grad = x.matmul(&big_a) + &a;
    let expect = expect_grad.square().sum(Kind::Double).double_value(&[]) / b as f64;
    let got = grad_norm_penalty(&grad).double_value(&[]);
    assert!((got - expect).abs() < 1e-10 * expect, "{got} vs {expect}");
    assert!(
        (values - quadratic(&a, &big_a, &x))
            .abs()
            .max()
            .double_value(&[])
            < 1e-12
    );
    // λ·mean‖∇m‖² with λ = 0.3, as `--reg grad-norm` weighs it.
    let lambda_term = (grad_norm_penalty(&grad) * 0.3).double_value(&[]);
    assert!((lambda_term - 0.3 * expect).abs() < 1e-10 * expect);
}

#[test]
fn zero_scores_leave_the_laplacian_alone() {
    let b = 8;
    let (big_a, a, x) = quadratic_batch(5, b, 5);
    let zero = x.zeros_like();
    let m = |xx: &Tensor, _: &Tensor| quadratic(&a, &big_a, xx).tanh();
    let Residual {
        residual: r,
        first_order,
        laplacian,
    } = residual(
        m,
        &x,
        &labels(b),
        &zero,
        &opts(Laplacian::Exact, 1),
        None,
        false,
    )
    .unwrap();
    assert_eq!(first_order.abs().max().double_value(&[]), 0.0);
    assert!(r.equal(&laplacian.unwrap()));
    // On the quadratic itself Δm = tr A for every sample.
    let q = residual(
        |xx: &Tensor, _: &Tensor| quadratic(&a, &big_a, xx),
        &x,
        &labels(b),
        &zero,
        &opts(Laplacian::Exact, 1),
        None,
        false,
    )
    .unwrap()
    .residual;
    let tr = big_a.trace().double_value(&[]);
    assert!((q - tr).abs().max().double_value(&[]) < 1e-10);
}

#[test]
fn model_coordinates_scale_a_one_channel_penalty_by_std_to_the_fourth() {
    let (d, b) = (4, 16);
    let big_a = symmetric(d, 7);
    let a = Tensor::randn([d], F64);
    let (mu, sigma) = (0.3f64, 0.4f64);
    let rescale = Rescale {
        mean: Tensor::from_slice(&[mu]).view([1, 1]),
        std: Tensor::from_slice(&[sigma]).view([1, 1]),
    };
    // A network-like probe of the normalised input: m(x) = g((x − μ)/σ).
    let m_pixel =
        |xx: &Tensor, _: &Tensor| quadratic(&a, &big_a, &rescale.to_model(xx)).tanh() * 2.0;
    let x = Tensor::rand([b, d], F64);
    let s = -&x * 3.0 + 1.0;
    let y = labels(b);
    for (laplacian, center) in [
        (Laplacian::Exact, Center::Batch),
        (Laplacian::Hutchinson, Center::None),
    ] {
        tch::manual_seed(1);
        let probes = rademacher(3, &x);
        let o = opts(laplacian, 3);
        let pix = residual(m_pixel, &x, &y, &s, &o, Some(&probes), false).unwrap();
        let z = rescale.to_model(&x);
        let m_model = |zz: &Tensor, yy: &Tensor| m_pixel(&rescale.to_pixel(zz), yy);
        let s_z = rescale.score_to_model(&s);
        let mdl = residual(m_model, &z, &y, &s_z, &o, Some(&probes), false).unwrap();
        let r_pix = centred_penalty(&pix.residual, center, false, 0.0).double_value(&[]);
        let r_mdl = centred_penalty(&mdl.residual, center, false, 0.0).double_value(&[]);
        let expect = sigma.powi(4) * r_pix;
        assert!(
            (r_mdl - expect).abs() < 1e-9 * expect,
            "{laplacian:?}: R_model {r_mdl} vs σ⁴·R_pixel {expect}"
        );
    }
}

#[test]
fn the_noise_share_of_a_quadratic_matches_its_closed_form() {
    let (d, b) = (4, 4096);
    let big_a = symmetric(d, 9);
    let a = Tensor::zeros([d], F64);
    let x = Tensor::randn([b, d], F64);
    let s = -&x;
    let y = labels(b);
    tch::manual_seed(2);
    let probes = rademacher(NOISE_SHARE_PROBES, &x);
    let noise = probe_noise(
        |xx: &Tensor, _: &Tensor| quadratic(&a, &big_a, xx),
        &x,
        &y,
        &s,
        &opts(Laplacian::Hutchinson, 1),
        &probes,
        Center::Batch,
        0.0,
    )
    .unwrap();
    let share = noise.share;
    // Exact residual tr A − xᵀAx; its batch-centred penalty is its variance.
    let exact = big_a.trace() - (x.matmul(&big_a) * &x).sum_dim_intlist(1, false, Kind::Double);
    let r_exact = centred_penalty(&exact, Center::Batch, false, 0.0).double_value(&[]);
    let off = &big_a - big_a.diag(0).diag_embed(0, -2, -1);
    let v = 2.0 * off.square().sum(Kind::Double).double_value(&[]) * (1.0 - 1.0 / b as f64);
    let expect = v / (r_exact + v);
    println!(
        "noise share {share:.4}, closed form {expect:.4} (V' = {v:.3}, R_exact = {r_exact:.3})"
    );
    assert!(
        (share - expect).abs() < 0.03 * expect,
        "{share} vs {expect}"
    );
    // R₁ − V estimates the exact penalty without the probes' noise.
    println!("unbiased {:.4} vs R_exact {r_exact:.4}", noise.unbiased);
    assert!((noise.unbiased - r_exact).abs() < 0.03 * (r_exact + v));
    // Fewer than two probes or the exact Laplacian: no share to measure.
    let one = probes.narrow(0, 0, 1);
    let m = |xx: &Tensor, _: &Tensor| quadratic(&a, &big_a, xx);
    assert!(probe_noise(
        m,
        &x,
        &y,
        &s,
        &opts(Laplacian::Hutchinson, 1),
        &one,
        Center::Batch,
        0.0
    )
    .is_err());
}
