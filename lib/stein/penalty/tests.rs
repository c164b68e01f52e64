//! The penalty engine: controls, coordinates, subsampling and fd reuse on
//! small smooth models.
use super::*;
use crate::models::{Activation, Arch, ModelSpec};
use crate::stein::{Difference, Laplacian, Order};
use tch::Device;

/// Scores that name their sample: s̃ of sample i is i + 1 everywhere.
#[derive(Debug)]
struct IndexField(Vec<i64>);

impl ScoreField for IndexField {
    fn input_shape(&self) -> &[i64] {
        &self.0
    }
    fn score(&self, x: &Tensor, indices: &Tensor, _: Option<&CropFlip>) -> Tensor {
        let v: Vec<f64> = Vec::<i64>::try_from(indices)
            .unwrap()
            .iter()
            .map(|&i| (i + 1) as f64)
            .collect();
        let mut shape = vec![v.len() as i64];
        shape.extend(std::iter::repeat_n(1, x.dim() - 1));
        Tensor::from_slice(&v)
            .view(shape.as_slice())
            .expand_as(x)
            .to_kind(x.kind())
    }
    fn describe(&self) -> String {
        "index".into()
    }
}

/// A one-channel smooth classifier on 2×2 inputs normalised by (μ, σ).
fn model(mean: f32, std: f32) -> Model {
    tch::manual_seed(5);
    let spec = ModelSpec {
        arch: Arch::Mlp,
        activation: Activation::Tanh,
        mlp_hidden: vec![8],
        input_shape: vec![1, 2, 2],
        num_outputs: 3,
    };
    let mut m = Model::new(&spec, Device::Cpu, &[mean], &[std]).unwrap();
    m.set_kind(Kind::Double);
    m
}

fn penalty(
    field: Option<Box<dyn ScoreField>>,
    control: ScoreControl,
    laplacian: Laplacian,
) -> SteinPenalty {
    SteinPenalty {
        ramp: LambdaRamp {
            max: 1.0,
            warmup_steps: 0,
        },
        options: ResidualOptions {
            order: Order::Full,
            mode: Mode::Autograd,
            laplacian,
            probes: 1,
            fd_step: 1e-3,
            difference: Difference::Central,
        },
        estimator: Estimator::Plain,
        probe: Probe::Margin,
        center: Center::Batch,
        detach_mean: false,
        bn_train: false,
        global_center: 0.0,
        field,
        control,
        grad_norm: false,
        coordinates: Coordinates::Pixel,
        fraction: 1.0,
        seed: 0,
        strength: Strength::Given,
        chunk: None,
        auto_chunk: false,
    }
}

/// A batch of every sample of `x` (indices 0..B), without augmentation.
fn whole_batch<'a>(x: &'a Tensor, y: &'a Tensor, idx: &'a Tensor) -> Batch<'a> {
    Batch {
        x,
        y,
        indices: idx,
        aug: None,
        share: None,
    }
}

/// `b` uniform 1×2×2 inputs drawn after `tch::manual_seed(seed)`, labels
/// 0, 1, 2, 0, … and indices 0..b.
fn random_inputs(seed: i64, b: i64) -> (Tensor, Tensor, Tensor) {
    tch::manual_seed(seed);
    let x = Tensor::rand([b, 1, 2, 2], (Kind::Double, Device::Cpu));
    let y = Tensor::arange(b, (Kind::Int64, Device::Cpu)).remainder(3);
    (x, y, Tensor::arange(b, (Kind::Int64, Device::Cpu)))
}

/// A score field whose score of sample i is i + 1 on a 1×2×2 input.
fn index_field() -> Option<Box<dyn ScoreField>> {
    Some(Box::new(IndexField(vec![1, 2, 2])))
}

#[test]
fn permuted_scores_keep_their_multiset_and_come_from_another_sample() {
    let n = 300;
    let partner = controls::derangement(n, 9 ^ PERMUTE_STREAM);
    let field = Box::new(IndexField(vec![1, 2, 2]));
    let p = penalty(
        Some(field),
        ScoreControl::Permute(Tensor::from_slice(&partner)),
        Laplacian::Exact,
    );
    let all: Vec<i64> = (0..n as i64).collect();
    let x = Tensor::zeros([n as i64, 1, 2, 2], (Kind::Double, Device::Cpu));
    let s = p.score(&x, &Tensor::from_slice(&all), None).unwrap();
    let got: Vec<i64> = Vec::<f64>::try_from(s.select(1, 0).select(1, 0).select(1, 0))
        .unwrap()
        .into_iter()
        .map(|v| v as i64 - 1)
        .collect();
    assert_eq!(got, partner);
    let mut sorted = got.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, all, "the multiset of scores is unchanged");
    assert!(
        got.iter().zip(&all).all(|(a, b)| a != b),
        "every sample gets another's score"
    );
    // A batch in any order gets its samples' partners.
    let batch = [17i64, 3, 250];
    let sb = p
        .score(&x.narrow(0, 0, 3), &Tensor::from_slice(&batch), None)
        .unwrap();
    assert_eq!(
        Vec::<f64>::try_from(sb.flatten(1, -1).select(1, 0)).unwrap(),
        batch
            .iter()
            .map(|&i| (partner[i as usize] + 1) as f64)
            .collect::<Vec<_>>()
    );
}

#[test]
fn zero_scores_give_the_laplacian_alone() {
    let m = model(0.4, 0.3);
    let x = Tensor::rand([6, 1, 2, 2], (Kind::Double, Device::Cpu));
    let y = Tensor::from_slice(&[0i64, 1, 2, 0, 1, 2]);
    let p = penalty(None, ScoreControl::Zero, Laplacian::Exact);
    let r = p
        .residual(
            &m,
            &x,
            &y,
            &Tensor::arange(6, (Kind::Int64, Device::Cpu)),
            None,
            false,
        )
        .unwrap();
    assert_eq!(r.first_order.abs().max().double_value(&[]), 0.0);
    assert!(r.residual.equal(r.laplacian.as_ref().unwrap()));
    assert!(r.residual.abs().max().double_value(&[]) > 0.0);
}

#[test]
fn model_coordinates_scale_a_one_channel_residual_by_std_squared() {
    let sigma = 0.3f64;
    let m = model(0.4, sigma as f32);
    let x = Tensor::rand([8, 1, 2, 2], (Kind::Double, Device::Cpu));
    let y = Tensor::from_slice(&[0i64, 1, 2, 0, 1, 2, 0, 1]);
    let idx = Tensor::arange(8, (Kind::Int64, Device::Cpu));
    let pixel = penalty(index_field(), ScoreControl::None, Laplacian::Exact);
    let mut model_c = penalty(index_field(), ScoreControl::None, Laplacian::Exact);
    model_c.coordinates = Coordinates::Model;
    let rp = pixel
        .residual(&m, &x, &y, &idx, None, false)
        .unwrap()
        .residual;
    let rm = model_c
        .residual(&m, &x, &y, &idx, None, false)
        .unwrap()
        .residual;
    let s2 = (sigma as f32 as f64).powi(2);
    let err = (&rm - &rp * s2).abs().max().double_value(&[]);
    assert!(
        err < 1e-9 * rp.abs().max().double_value(&[]),
        "r_model − σ²r_pixel: {err}"
    );
    let (pp, pm) = (
        centred_penalty(&rp, Center::Batch, false, 0.0).double_value(&[]),
        centred_penalty(&rm, Center::Batch, false, 0.0).double_value(&[]),
    );
    println!(
        "R_pixel {pp:.6e}, R_model {pm:.6e}, σ⁴ R_pixel {:.6e}",
        s2 * s2 * pp
    );
    assert!((pm - s2 * s2 * pp).abs() < 1e-9 * pm);
}

#[test]
fn a_fraction_of_the_batch_estimates_the_whole_batch_penalty_without_bias() {
    let m = model(0.4, 0.3);
    let (x, y, idx) = random_inputs(2, 40);
    let batch = whole_batch(&x, &y, &idx);
    for center in [Center::Batch, Center::None] {
        let mut p = penalty(index_field(), ScoreControl::None, Laplacian::Exact);
        p.options.order = Order::FirstOrder;
        p.center = center;
        let pen = |p: &SteinPenalty, step| {
            p.term(&m, &batch, None, step)
                .unwrap()
                .1
                .penalty
                .double_value(&[])
        };
        let whole = pen(&p, 0);
        p.fraction = 0.25;
        p.seed = 7;
        let draws: Vec<f64> = (0..600).map(|t| pen(&p, t)).collect();
        let n = draws.len() as f64;
        let mean = draws.iter().sum::<f64>() / n;
        let sd = (draws.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
        let se = sd / n.sqrt();
        println!("{center:?}: R {whole:.6e}, fraction mean {mean:.6e} ± {se:.2e} (sd {sd:.2e})");
        assert!(se > 0.0, "subsets should differ between steps");
        // Unbiased: the mean of 600 draws within 4 standard errors of R.
        assert!(
            (mean - whole).abs() < 4.0 * se,
            "{center:?}: {mean} vs {whole}"
        );
        // Same seed and step → same subset and value.
        assert_eq!(pen(&p, 3), draws[3]);
    }
}

#[test]
fn one_sided_fd_reusing_the_clean_logits_agrees_with_central_fd() {
    let m = model(0.4, 0.3);
    assert!(!m.has_batch_norm());
    let x = Tensor::rand([8, 1, 2, 2], (Kind::Double, Device::Cpu));
    let y = Tensor::from_slice(&[0i64, 1, 2, 0, 1, 2, 0, 1]);
    let idx = Tensor::arange(8, (Kind::Int64, Device::Cpu));
    let batch = whole_batch(&x, &y, &idx);
    let mut p = penalty(index_field(), ScoreControl::None, Laplacian::Exact);
    p.options.order = Order::FirstOrder;
    p.options.mode = Mode::Fd;
    p.options.fd_step = 1e-5;
    let central = p.term(&m, &batch, None, 0).unwrap().0;
    p.options.difference = Difference::Forward;
    let before = m.forward_calls();
    let clean = m.forward_t(&x, true);
    let one_sided = p.term(&m, &batch, Some(&clean), 0).unwrap().0;
    assert_eq!(
        m.forward_calls() - before,
        2,
        "one forward for the step, one for x + hŝ"
    );
    let (c, o) = (central.double_value(&[]), one_sided.double_value(&[]));
    // O(h) truncation at h = 1e-5: 1e-3 relative.
    assert!((c - o).abs() < 1e-3 * c.abs(), "{o} vs {c}");
}

/// The one-probe variance of the Hutchinson Laplacian at each sample,
/// σᵢ² = 2 Σ_{j≠l} (∇²m(xᵢ))_{jl}², from the exact Hessian `[B]`.
fn one_probe_variances(p: &SteinPenalty, model: &Model, x: &Tensor, y: &Tensor) -> Tensor {
    let m = p.probe_fn(model, None, false);
    let xg = x.detach().set_requires_grad(true);
    let values = m(&xg, y).sum(Kind::Double);
    let grad = Tensor::run_backward(&[values], &[&xg], true, true)
        .pop()
        .unwrap()
        .flatten(1, -1);
    let rows: Vec<Tensor> = (0..grad.size()[1])
        .map(|j| {
            let gj = grad.select(1, j).sum(Kind::Double);
            let row = Tensor::run_backward(&[gj], &[&xg], true, false);
            row[0].flatten(1, -1)
        })
        .collect();
    let h = Tensor::stack(&rows, 1);
    let all = h
        .square()
        .sum_dim_intlist([1i64, 2].as_slice(), false, Kind::Double);
    let diagonal = h
        .diagonal(0, 1, 2)
        .square()
        .sum_dim_intlist(1, false, Kind::Double);
    (all - diagonal) * 2.0
}

/// Mean and standard error of `n` penalties of `p` on `batch`, one probe
/// draw each (libtorch's generator, seeded by the caller).
fn mean_and_se(p: &SteinPenalty, m: &Model, batch: &Batch, n: usize) -> (f64, f64) {
    let draws: Vec<f64> = (0..n)
        .map(|t| {
            p.term(m, batch, None, t)
                .unwrap()
                .1
                .penalty
                .double_value(&[])
        })
        .collect();
    let k = n as f64;
    let mean = draws.iter().sum::<f64>() / k;
    let var = draws.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (k - 1.0);
    (mean, (var / k).sqrt())
}

#[test]
fn the_unbiased_estimator_averages_to_the_exact_penalty_and_plain_exceeds_it_by_the_probe_variance()
{
    let m = model(0.4, 0.3);
    tch::manual_seed(11);
    let b = 16i64;
    let x = Tensor::rand([b, 1, 2, 2], (Kind::Double, Device::Cpu));
    let y = Tensor::arange(b, (Kind::Int64, Device::Cpu)).remainder(3);
    let idx = Tensor::arange(b, (Kind::Int64, Device::Cpu));
    let batch = whole_batch(&x, &y, &idx);
    for control in [ScoreControl::None, ScoreControl::Zero] {
        let field = || match control {
            ScoreControl::Zero => None,
            _ => index_field(),
        };
        let reference = penalty(field(), control.clone(), Laplacian::Exact)
            .term(&m, &batch, None, 0)
            .unwrap()
            .1
            .penalty
            .double_value(&[]);
        let mut plain = penalty(field(), control.clone(), Laplacian::Hutchinson);
        let sigma2 = one_probe_variances(&plain, &m, &x, &y).mean(Kind::Double);
        let bias = (1.0 - 1.0 / b as f64) * sigma2.double_value(&[]);
        tch::manual_seed(12);
        let (p_mean, p_se) = mean_and_se(&plain, &m, &batch, 1000);
        plain.estimator = Estimator::Unbiased;
        let (u_mean, u_se) = mean_and_se(&plain, &m, &batch, 1000);
        println!(
            "{control:?}: exact R {reference:.6e}; unbiased {u_mean:.6e} ± {u_se:.2e}; \
             plain {p_mean:.6e} ± {p_se:.2e}, exact + (1 − 1/B)·mean σ² = {:.6e}",
            reference + bias
        );
        assert!(
            (u_mean - reference).abs() < 3.0 * u_se,
            "unbiased {u_mean} vs {reference}"
        );
        assert!(
            (p_mean - reference - bias).abs() < 3.0 * p_se,
            "plain {p_mean} vs {reference} + {bias}"
        );
        assert!(
            bias > 6.0 * p_se,
            "the test must see the bias: {bias} vs se {p_se}"
        );
    }
}

/// The parameter gradient `model`'s trainable variables get from `f`
/// (zeroed first), flattened into one vector.
fn parameter_gradient(model: &Model, f: impl FnOnce()) -> Tensor {
    let params = model.vs.trainable_variables();
    for p in &params {
        let mut g = p.grad();
        if g.defined() {
            let _ = g.zero_();
        }
    }
    f();
    Tensor::cat(
        &params
            .iter()
            .map(|p| p.grad().flatten(0, -1).copy())
            .collect::<Vec<_>>(),
        0,
    )
}

/// A change to the test's penalty.
type Setting = dyn Fn(&mut SteinPenalty);

/// `--penalty-chunk`: the chunked backward gives the whole-batch λ·R's
/// parameter gradient (and the same penalty) for every centring, both
/// estimators, the first-order and exact-Laplacian residuals, fd, a
/// fraction of the batch and the grad-norm control, at chunk sizes that do
/// and do not divide the batch; the same seed draws the same probes.
#[test]
fn the_chunked_penalty_has_the_whole_batch_gradient() {
    let m = model(0.4, 0.3);
    let (x, y, idx) = random_inputs(3, 10);
    let batch = whole_batch(&x, &y, &idx);
    let variants: Vec<(&str, Box<Setting>)> = vec![
        ("batch plain", Box::new(|_| {})),
        (
            "batch unbiased",
            Box::new(|p| p.estimator = Estimator::Unbiased),
        ),
        (
            "global",
            Box::new(|p| (p.center, p.global_center) = (Center::Global, 0.7)),
        ),
        (
            "none unbiased",
            Box::new(|p| {
                p.center = Center::None;
                p.estimator = Estimator::Unbiased;
            }),
        ),
        (
            "detached mean, 3 probes",
            Box::new(|p| {
                p.detach_mean = true;
                p.options.probes = 3;
            }),
        ),
        (
            "first-order",
            Box::new(|p| p.options.order = Order::FirstOrder),
        ),
        (
            "exact Laplacian",
            Box::new(|p| p.options.laplacian = Laplacian::Exact),
        ),
        ("fd", Box::new(|p| p.options.mode = Mode::Fd)),
        ("fraction 0.6", Box::new(|p| p.fraction = 0.6)),
        ("grad-norm", Box::new(|p| p.grad_norm = true)),
    ];
    for (name, set) in &variants {
        let mut p = penalty(index_field(), ScoreControl::None, Laplacian::Hutchinson);
        p.ramp.max = 0.3;
        set(&mut p);
        tch::manual_seed(11);
        let mut whole = 0.0;
        let g_whole = parameter_gradient(&m, || {
            let (term, stats) = p.term(&m, &batch, None, 4).unwrap();
            whole = stats.penalty.double_value(&[]);
            term.backward();
        });
        for chunk in [1usize, 3, 10, 64] {
            tch::manual_seed(11);
            let mut chunked = 0.0;
            let g = parameter_gradient(&m, || {
                let stats = p.backward_chunked(&m, &batch, 4, chunk).unwrap();
                chunked = stats.penalty.double_value(&[]);
            });
            let err = (&g - &g_whole).norm().double_value(&[]);
            let scale = g_whole.norm().double_value(&[]);
            assert!(scale > 0.0, "{name}: no gradient to compare");
            assert!(
                err <= 1e-5 * scale,
                "{name}, chunk {chunk}: |Δ∇| {err:.3e} vs |∇| {scale:.3e}"
            );
            assert!(
                (chunked - whole).abs() <= 1e-9 * whole.abs().max(1e-12),
                "{name}"
            );
        }
    }
}
