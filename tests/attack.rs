//! Attack tests with known answers (linear classifiers, whose robust
//! accuracy and boundary distances are known in closed form), and the
//! `attack` binary end to end on digits: outputs, resume, refusals.
mod common;
use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use taser::attack::apgd::{apgd_ce, apgd_t, ApgdConfig};
use taser::attack::autoattack::autoattack_standard;
use taser::attack::fab::{fab_t, fab_targeted_run, FabConfig};
use taser::attack::square::{square, SquareConfig, WindowRange};
use taser::attack::{per_sample_norm, Norm, Threat};
use taser::checkpoint::{self, CheckpointMeta};
use taser::data::{self, DatasetName};
use taser::layout::EvalRun;
use taser::models::{Activation, Arch, Model, ModelSpec};
use tch::{Device, Kind, Tensor};

const CLASSES: i64 = 10;

/// A linear classifier z = Wx + b on 8×8 single-channel inputs.
fn linear_model(w: &Tensor, b: &Tensor) -> Model {
    let spec = ModelSpec {
        arch: Arch::Mlp,
        activation: Activation::Relu,
        mlp_hidden: vec![],
        input_shape: vec![1, 8, 8],
        num_outputs: CLASSES,
    };
    let model = Model::new(&spec, Device::Cpu, &[0.0], &[1.0]).unwrap();
    let vars = model.vs.variables();
    tch::no_grad(|| {
        vars["layers.0.weight"].shallow_clone().copy_(w);
        vars["layers.0.bias"].shallow_clone().copy_(b);
    });
    model
}

/// 1000 points near 0.5 (so the ε-balls below stay inside [0,1]), labels
/// the model's predictions except every tenth (a random label). Points
/// within 10⁻⁴ of a robustness threshold (L∞ at ε = 0.004, L2 at ε = 0.03)
/// are left out, so float rounding cannot decide any point.
fn linear_problem() -> (Model, Tensor, Tensor, Tensor, Tensor) {
    tch::manual_seed(42);
    problem_with(Tensor::randn([CLASSES, 64], (Kind::Float, Device::Cpu)))
}

/// As [`linear_problem`] but each class's weights live on their own block
/// of 6 pixels (disjoint supports). There, raising every other class at
/// once costs nothing extra in L∞, so the cross-entropy's maximiser is
/// also the worst case for every target class and APGD-CE alone can reach
/// the closed form.
fn block_linear_problem() -> (Model, Tensor, Tensor, Tensor, Tensor) {
    tch::manual_seed(43);
    let mask = Tensor::zeros([CLASSES, 64], (Kind::Float, Device::Cpu));
    for c in 0..CLASSES {
        let _ = mask.get(c).narrow(0, 6 * c, 6).fill_(1.0);
    }
    problem_with(Tensor::randn([CLASSES, 64], (Kind::Float, Device::Cpu)) * mask * 2.0)
}

/// Square alone on `x` with the full window range and with the reference
/// one (both seeded 2): the number of points each leaves robust. On a
/// linear model the L∞ worst case moves every pixel to ±ε; only the full
/// range can flip the last row's and column's pixels after the start, so
/// only it is expected to reach the closed form — the reference is sound
/// but weaker there (a field case).
fn square_full_and_reference(
    model: &Model,
    x: &Tensor,
    y: &Tensor,
    threat: Threat,
) -> (usize, usize) {
    let n = x.size()[0] as usize;
    let robust = |window: WindowRange| {
        tch::manual_seed(2);
        let cfg = SquareConfig {
            window,
            ..SquareConfig::standard(threat)
        };
        let (adv, fooled) = square(model, x, y, &cfg);
        assert!(threat.contains(&adv, x));
        n - count(&flags(&fooled))
    };
    (robust(WindowRange::Full), robust(WindowRange::Reference))
}

fn problem_with(w: Tensor) -> (Model, Tensor, Tensor, Tensor, Tensor) {
    let center = Tensor::full([64], 0.5, (Kind::Float, Device::Cpu));
    let b = -w.matmul(&center) + Tensor::randn([CLASSES], (Kind::Float, Device::Cpu)) * 0.1;
    let model = linear_model(&w, &b);
    let n = 1200;
    let x = Tensor::rand([n, 1, 8, 8], (Kind::Float, Device::Cpu)) * 0.4 + 0.3;
    let mut y = model.forward_t(&x, false).argmax(-1, false);
    let noise = Tensor::randint(CLASSES, [n / 10], (Kind::Int64, Device::Cpu));
    let every_tenth = Tensor::arange_start_step(0, n, 10, (Kind::Int64, Device::Cpu));
    y = y.index_copy(0, &every_tenth, &noise);
    let (_, linf_slack, _) = closed_form(&w, &b, &x, &y, Norm::Linf, 0.004);
    let (_, l2_slack, _) = closed_form(&w, &b, &x, &y, Norm::L2, 0.03);
    let clear: Vec<i64> = (0..n as usize)
        .filter(|&i| linf_slack[i] > 1e-4 && l2_slack[i] > 1e-4)
        .map(|i| i as i64)
        .take(1000)
        .collect();
    assert_eq!(clear.len(), 1000);
    let keep = Tensor::from_slice(&clear);
    (
        model,
        w,
        b,
        x.index_select(0, &keep),
        y.index_select(0, &keep),
    )
}

/// Closed form: robust iff correct and (w_y − w_j)ᵀx + b_y − b_j > ε‖w_y − w_j‖
/// (dual norm: ℓ₁ for L∞, ℓ₂ for L2) for every j ≠ y. Also returns each
/// point's smallest |slack| (its distance from the threshold) and its
/// distance to the decision boundary (∞ where misclassified).
fn closed_form(
    w: &Tensor,
    b: &Tensor,
    x: &Tensor,
    y: &Tensor,
    norm: Norm,
    eps: f64,
) -> (Vec<bool>, Vec<f64>, Vec<f64>) {
    let w = w.to_kind(Kind::Double);
    let b = b.to_kind(Kind::Double);
    let x = x.to_kind(Kind::Double).flatten(1, -1);
    let z = x.matmul(&w.tr()) + &b;
    let wy = w.index_select(0, y); // [N, 64]
    let zy = z.gather(1, &y.unsqueeze(1), false); // [N,1]
    let m = &zy - &z; // [N, C] margins to every class
    let diff = wy.unsqueeze(1) - w.unsqueeze(0); // [N, C, 64]
    let dual = match norm {
        Norm::Linf => diff.abs().sum_dim_intlist([2i64].as_slice(), false, None),
        Norm::L2 => diff
            .square()
            .sum_dim_intlist([2i64].as_slice(), false, None)
            .sqrt(),
    };
    let not_y = Tensor::ones([x.size()[0], CLASSES], (Kind::Bool, Device::Cpu)).scatter_value(
        1,
        &y.unsqueeze(1),
        0,
    );
    let slack = (&m - &dual * eps).where_self(&not_y, &Tensor::full_like(&m, f64::INFINITY));
    let dist =
        (&m / dual.clamp_min(1e-30)).where_self(&not_y, &Tensor::full_like(&m, f64::INFINITY));
    let robust: Vec<bool> = Vec::try_from(&slack.amin([1i64].as_slice(), false).gt(0.0)).unwrap();
    let min_slack: Vec<f64> = Vec::try_from(&slack.abs().amin([1i64].as_slice(), false)).unwrap();
    let dist: Vec<f64> =
        Vec::try_from(&dist.amin([1i64].as_slice(), false).clamp_min(0.0)).unwrap();
    (robust, min_slack, dist)
}

fn count(mask: &[bool]) -> usize {
    mask.iter().filter(|&&b| b).count()
}

fn flags(t: &Tensor) -> Vec<bool> {
    Vec::try_from(t).unwrap()
}

#[test]
fn linf_robust_accuracy_of_a_linear_model_matches_the_closed_form() {
    tch::set_num_threads(1);
    let (model, w, b, x, y) = linear_problem();
    let eps = 0.004;
    let threat = Threat {
        norm: Norm::Linf,
        eps,
    };
    let (expected, slack, _) = closed_form(&w, &b, &x, &y, Norm::Linf, eps);
    let min_slack = slack.iter().copied().fold(f64::INFINITY, f64::min);
    let clean = flags(&model.forward_t(&x, false).argmax(-1, false).eq_tensor(&y));
    let n_exp = count(&expected);
    eprintln!(
        "closed form: {n_exp}/1000 robust (clean {}), min |slack| {min_slack:.2e}",
        count(&clean)
    );
    assert!(
        n_exp > 200 && n_exp < 700,
        "the problem should have robust and non-robust points"
    );
    assert!(
        min_slack > 1e-4,
        "a point lies on the threshold; float rounding could decide it"
    );

    let aa = autoattack_standard(&model, &x, &y, &threat, 0);
    assert!(threat.contains(&aa.adv, &x));
    let aa_robust = flags(&aa.robust);
    let n_aa = count(&aa_robust);
    // Sound (never breaks a provably robust point) and exact.
    assert!(aa_robust.iter().zip(&expected).all(|(a, e)| !*e || *a));
    let after: Vec<String> = aa
        .after
        .iter()
        .map(|(c, r)| format!("{}={}", c.name(), count(&flags(r))))
        .collect();
    eprintln!("AutoAttack: {n_aa} robust; after components {after:?}");
    assert_eq!(
        n_aa, n_exp,
        "AutoAttack must reach the closed-form robust accuracy"
    );
    let mut last = count(&clean);
    for (_, r) in &aa.after {
        let k = count(&flags(r));
        assert!(k <= last && k >= n_aa);
        last = k;
    }

    let cfg = ApgdConfig::standard(threat);
    tch::manual_seed(1);
    let (adv, fooled) = apgd_ce(&model, &x, &y, &cfg);
    assert!(threat.contains(&adv, &x));
    let n_ce = 1000 - count(&flags(&fooled));
    let (n_sq, n_sq_ref) = square_full_and_reference(&model, &x, &y, threat);
    tch::manual_seed(3);
    let (adv_t, fooled_t) = apgd_t(&model, &x, &y, &cfg);
    assert!(threat.contains(&adv_t, &x));
    let n_t = 1000 - count(&flags(&fooled_t));
    tch::manual_seed(4);
    let (adv_f, fooled_f) = fab_t(&model, &x, &y, &threat);
    assert!(threat.contains(&adv_f, &x));
    let n_f = 1000 - count(&flags(&fooled_f));
    eprintln!("robust: closed form {n_exp}, AA {n_aa}, APGD-CE {n_ce}, APGD-T {n_t}, FAB-T {n_f}, Square {n_sq} (reference window {n_sq_ref}), clean {}", count(&clean));
    assert!(
        n_sq_ref >= n_exp,
        "reference Square broke a provably robust point"
    );
    assert!(
        n_sq >= n_exp && n_sq <= n_exp + 10,
        "Square: {n_sq} robust vs closed form {n_exp}"
    );
    // APGD-CE maximises the cross-entropy, whose maximiser over the ball is
    // not always adversarial when the nearest boundary is not the runner-up
    // class's: it must be sound and match PGD-CE (100 steps), which tops
    // out at the same count whatever the budget; the targeted components
    // close the gap (the block model below shows APGD-CE exact where the
    // cross-entropy is a faithful surrogate).
    tch::manual_seed(5);
    let pgd_cfg = taser::attack::PgdConfig {
        threat,
        steps: 100,
        step_size: 0.1 * eps,
        start: taser::attack::Start::Uniform,
        bn_train: false,
    };
    let adv_pgd = taser::attack::pgd(&model, &x, &pgd_cfg, &|z: &Tensor| {
        taser::attack::cross_entropy(z, &y)
    });
    let n_pgd = count(&flags(
        &model
            .forward_t(&adv_pgd, false)
            .argmax(-1, false)
            .eq_tensor(&y),
    ));
    eprintln!("PGD-CE-100 {n_pgd} robust");
    assert!(
        n_ce >= n_exp && n_ce <= n_pgd + 2,
        "APGD-CE {n_ce} vs PGD-CE {n_pgd}"
    );
    assert!(n_t <= n_exp + 10 && n_f <= n_exp + 10);
    for k in [n_ce, n_t, n_f, n_sq] {
        assert!(n_aa <= k && k <= count(&clean));
    }
}

/// Why APGD-CE alone misses the closed form on a generic linear model: on
/// 8 input dimensions the L∞ ball has 2⁸ vertices, and the cross-entropy is
/// convex in x for a linear model, so its exact maximiser over the ball is
/// the best vertex. Enumerating them shows points that are not robust (some
/// vertex is misclassified) whose cross-entropy maximiser is still
/// classified correctly: no attack that maximises CE can flag them. APGD-CE
/// lands between the closed form and that exact CE maximiser.
#[test]
fn apgd_ce_misses_only_points_where_the_exact_cross_entropy_maximiser_is_not_adversarial() {
    tch::set_num_threads(1);
    tch::manual_seed(7);
    let (d, n, eps) = (8i64, 1000i64, 0.02);
    let w = Tensor::randn([CLASSES, d], (Kind::Float, Device::Cpu));
    let b = -w.matmul(&Tensor::full([d], 0.5, (Kind::Float, Device::Cpu)))
        + Tensor::randn([CLASSES], (Kind::Float, Device::Cpu)) * 0.1;
    let spec = ModelSpec {
        arch: Arch::Mlp,
        activation: Activation::Relu,
        mlp_hidden: vec![],
        input_shape: vec![d],
        num_outputs: CLASSES,
    };
    let model = Model::new(&spec, Device::Cpu, &[0.0], &[1.0]).unwrap();
    let vars = model.vs.variables();
    tch::no_grad(|| {
        vars["layers.0.weight"].shallow_clone().copy_(&w);
        vars["layers.0.bias"].shallow_clone().copy_(&b);
    });
    let x_all = Tensor::rand([2 * n, d], (Kind::Float, Device::Cpu)) * 0.4 + 0.3;
    let y_all = model.forward_t(&x_all, false).argmax(-1, false);
    let (_, slack, _) = closed_form(&w, &b, &x_all, &y_all, Norm::Linf, eps);
    let clear: Vec<i64> = (0..2 * n as usize)
        .filter(|&i| slack[i] > 1e-4)
        .map(|i| i as i64)
        .take(n as usize)
        .collect();
    let keep = Tensor::from_slice(&clear);
    let (x, y) = (x_all.index_select(0, &keep), y_all.index_select(0, &keep));
    let (expected, _, _) = closed_form(&w, &b, &x, &y, Norm::Linf, eps);
    let n_exp = count(&expected);

    // Every vertex x + ε·s, s ∈ {−1, 1}⁸ (the box [0,1] does not bind).
    let signs: Vec<f32> = (0..1i64 << d)
        .flat_map(|v| (0..d).map(move |k| if v >> k & 1 == 1 { 1.0 } else { -1.0 }))
        .collect();
    let s = Tensor::from_slice(&signs).view([1 << d, d]);
    let vertices = (x.unsqueeze(1) + s.unsqueeze(0) * eps).view([-1, d]);
    let z = tch::no_grad(|| model.forward_t(&vertices, false)).view([n, 1 << d, CLASSES]);
    let y_rep = y.unsqueeze(1).expand([n, 1 << d], false);
    let ce = -z
        .log_softmax(-1, Kind::Double)
        .gather(2, &y_rep.unsqueeze(2), false)
        .squeeze_dim(2);
    let correct = z.argmax(-1, false).eq_tensor(&y_rep);
    // The worst vertex is the exact worst case of a linear model.
    let robust_by_vertices = flags(&correct.all_dim(1, false));
    assert_eq!(
        robust_by_vertices, expected,
        "vertex enumeration vs closed form"
    );
    let best = ce.argmax(1, true);
    let ce_max_correct = flags(&correct.gather(1, &best, false).squeeze_dim(1));
    let unreachable = expected
        .iter()
        .zip(&ce_max_correct)
        .filter(|(e, c)| !**e && **c)
        .count();
    let n_ce_exact = n_exp + unreachable;

    let threat = Threat {
        norm: Norm::Linf,
        eps,
    };
    tch::manual_seed(1);
    let (adv, fooled) = apgd_ce(&model, &x, &y, &ApgdConfig::standard(threat));
    assert!(threat.contains(&adv, &x));
    let apgd_robust: Vec<bool> = flags(&fooled).iter().map(|f| !f).collect();
    let n_apgd = count(&apgd_robust);
    eprintln!(
        "8-d linear model, ε = {eps}: closed form {n_exp}/{n} robust; the exact CE maximiser leaves {unreachable} non-robust points correctly classified ({n_ce_exact} 'robust'); APGD-CE {n_apgd}"
    );
    assert!(unreachable > 0, "the seed should show the effect");
    // Sound, and never worse than the exact CE maximiser by more than a point.
    assert!(apgd_robust.iter().zip(&expected).all(|(a, e)| !*e || *a));
    assert!(
        n_apgd >= n_exp && n_apgd <= n_ce_exact + 1,
        "APGD-CE {n_apgd} outside [closed form {n_exp}, exact CE maximiser {n_ce_exact} + 1]"
    );
    // AutoAttack's targeted components close the gap.
    let aa = autoattack_standard(&model, &x, &y, &threat, 0);
    assert_eq!(count(&flags(&aa.robust)), n_exp);
}

#[test]
fn apgd_ce_and_square_reach_the_closed_form_where_cross_entropy_is_faithful() {
    tch::set_num_threads(1);
    let (model, w, b, x, y) = block_linear_problem();
    let eps = 0.004;
    let threat = Threat {
        norm: Norm::Linf,
        eps,
    };
    let (expected, slack, _) = closed_form(&w, &b, &x, &y, Norm::Linf, eps);
    let n_exp = count(&expected);
    assert!(slack.iter().all(|&s| s > 1e-4));
    assert!(n_exp > 200 && n_exp < 800, "{n_exp}");
    tch::manual_seed(1);
    let (adv, fooled) = apgd_ce(&model, &x, &y, &ApgdConfig::standard(threat));
    assert!(threat.contains(&adv, &x));
    let n_ce = 1000 - count(&flags(&fooled));
    let (n_sq, n_sq_ref) = square_full_and_reference(&model, &x, &y, threat);
    assert!(
        n_sq_ref >= n_exp,
        "reference Square broke a provably robust point"
    );
    eprintln!("block model: closed form {n_exp}, APGD-CE {n_ce}, Square {n_sq} (reference window {n_sq_ref})");
    for (name, k) in [("APGD-CE", n_ce), ("Square", n_sq)] {
        assert!(
            k >= n_exp && k <= n_exp + 10,
            "{name}: {k} robust vs closed form {n_exp}"
        );
    }
}

#[test]
fn l2_autoattack_on_a_linear_model_matches_the_closed_form() {
    tch::set_num_threads(1);
    let (model, w, b, x, y) = linear_problem();
    let x = x.narrow(0, 0, 300);
    let y = y.narrow(0, 0, 300);
    let eps = 0.03;
    let threat = Threat {
        norm: Norm::L2,
        eps,
    };
    let (expected, slack, _) = closed_form(&w, &b, &x, &y, Norm::L2, eps);
    let min_slack = slack.iter().copied().fold(f64::INFINITY, f64::min);
    let n_exp = count(&expected);
    assert!(min_slack > 1e-4);
    assert!(n_exp > 50 && n_exp < 250, "{n_exp}");
    let aa = autoattack_standard(&model, &x, &y, &threat, 0);
    assert!(threat.contains(&aa.adv, &x));
    let after: Vec<String> = aa
        .after
        .iter()
        .map(|(c, r)| format!("{}={}", c.name(), count(&flags(r))))
        .collect();
    eprintln!("L2: closed form {n_exp}, AutoAttack after {after:?}");
    assert_eq!(count(&flags(&aa.robust)), n_exp);
}

#[test]
fn fab_t_finds_the_boundary_of_a_linear_model_within_one_percent() {
    tch::set_num_threads(1);
    let (model, w, b, x, y) = linear_problem();
    // Correctly classified points only (FAB attacks those).
    let correct = model.forward_t(&x, false).argmax(-1, false).eq_tensor(&y);
    let idx = correct.nonzero().view([-1]).narrow(0, 0, 200);
    let (x, y) = (x.index_select(0, &idx), y.index_select(0, &idx));
    let order = model.forward_t(&x, false).argsort(1, true);
    for norm in [Norm::Linf, Norm::L2] {
        let (_, _, exact) = closed_form(&w, &b, &x, &y, norm, 0.0);
        let cfg = FabConfig::standard(norm);
        let mut best = Tensor::full([200], f64::INFINITY, (Kind::Float, Device::Cpu));
        for rank in 1..CLASSES {
            let target = order.select(1, rank);
            let (adv, dist) = fab_targeted_run(&model, &x, &y, &target, &cfg);
            // Every recorded point is misclassified, in [0,1], at that distance.
            let found = dist.isfinite();
            let wrong = model.forward_t(&adv, false).argmax(-1, false).ne_tensor(&y);
            assert!(
                wrong
                    .logical_or(&found.logical_not())
                    .all()
                    .int64_value(&[])
                    == 1
            );
            assert!(adv.min().double_value(&[]) >= 0.0 && adv.max().double_value(&[]) <= 1.0);
            let measured = per_sample_norm(&(&adv - &x), norm);
            assert!(
                (&measured - &dist)
                    .abs()
                    .where_self(&found, &dist.zeros_like())
                    .max()
                    .double_value(&[])
                    < 1e-5
            );
            best = best.minimum(&dist);
        }
        let best: Vec<f64> = Vec::try_from(&best.to_kind(Kind::Double)).unwrap();
        let worst_ratio = best
            .iter()
            .zip(&exact)
            .map(|(f, e)| f / e)
            .fold(0.0f64, f64::max);
        let min_ratio = best
            .iter()
            .zip(&exact)
            .map(|(f, e)| f / e)
            .fold(f64::INFINITY, f64::min);
        eprintln!("FAB-T {norm:?}: distance / analytic in [{min_ratio:.5}, {worst_ratio:.5}]");
        assert!(
            min_ratio >= 1.0 - 1e-4,
            "{norm:?}: below the analytic distance"
        );
        assert!(
            worst_ratio <= 1.01,
            "{norm:?}: {worst_ratio} times the analytic distance"
        );
    }
}

// ---------------------------------------------------------------------------
// The binary, end to end, on digits.

fn data_dir() -> PathBuf {
    std::env::var("TASER_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| data::default_data_dir())
}

/// A logistic-regression checkpoint on digits (a few hundred steps of
/// full-batch gradient descent), written to `dir/model.safetensors`.
fn digits_checkpoint(dir: &Path) -> PathBuf {
    tch::set_num_threads(1);
    let data = data::load(DatasetName::Digits, &data_dir(), 0).unwrap();
    tch::manual_seed(0);
    let spec = ModelSpec {
        arch: Arch::Mlp,
        activation: Activation::Relu,
        mlp_hidden: vec![],
        input_shape: vec![1, 8, 8],
        num_outputs: 10,
    };
    let model = Model::new(&spec, Device::Cpu, &[0.0], &[1.0]).unwrap();
    let mut opt =
        tch::nn::OptimizerConfig::build(tch::nn::Adam::default(), &model.vs, 0.05).unwrap();
    for _ in 0..150 {
        let loss = model
            .forward_t(&data.train.x, true)
            .cross_entropy_for_logits(&data.train.y);
        opt.backward_step(&loss);
    }
    let path = dir.join("model.safetensors");
    let meta = CheckpointMeta {
        format: checkpoint::FORMAT.into(),
        version: taser::VERSION.into(),
        model: spec,
        dataset: "digits".into(),
        train_fingerprint: data.train.fingerprint(),
        seed: 0,
        epochs_completed: 1,
        hyperparameters: serde_json::json!({}),
        metrics: BTreeMap::new(),
        score_file: None,
        runtime: None,
        weights_sha256: None,
    };
    checkpoint::save(&model, &path, &meta).unwrap();
    path
}

fn attack_args(ckpt: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "--checkpoint",
        &ckpt.display().to_string(),
        "--out",
        &out.display().to_string(),
        "--data-dir",
        &data_dir().display().to_string(),
        "--device",
        "cpu",
        "--n-eval",
        "120",
        "--batch-size",
        "50",
        "--seed",
        "3",
        "--threads",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn run_attack(args: &[String]) -> std::process::Output {
    let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    run("attack", &refs)
}

fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = csv::Reader::from_path(path).unwrap();
    let header = r.headers().unwrap().iter().map(|s| s.to_string()).collect();
    let rows = r
        .records()
        .map(|rec| rec.unwrap().iter().map(|s| s.to_string()).collect())
        .collect();
    (header, rows)
}

const ATTACKS: &str = "aa,spsa,pgd10,cw-pgd10";

#[test]
fn attack_binary_writes_per_sample_and_summary_and_resumes_identically() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = digits_checkpoint(dir.path());
    let full = dir.path().join("full");
    let o = run_attack(&attack_args(
        &ckpt,
        &full,
        &["--attacks", ATTACKS, "--eps", "8/255"],
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    let (header, rows) = read_csv(&EvalRun::at(&full).per_sample());
    assert_eq!(
        header,
        [
            "index",
            "label",
            "clean_correct",
            "aa",
            "spsa",
            "pgd10",
            "cw-pgd10",
            "worst_case"
        ]
    );
    assert_eq!(rows.len(), 120);
    for row in &rows {
        let v: Vec<u8> = row[2..].iter().map(|s| s.parse().unwrap()).collect();
        // An attack can only turn correct into wrong; worst case is the AND.
        assert!(v[1..].iter().all(|&a| a <= v[0]));
        assert_eq!(v[5], v[..5].iter().copied().min().unwrap());
    }
    let (sh, srows) = read_csv(&EvalRun::at(&full).summary());
    assert_eq!(srows.len(), 1);
    let s: BTreeMap<&str, &str> = sh
        .iter()
        .map(|h| h.as_str())
        .zip(srows[0].iter().map(|v| v.as_str()))
        .collect();
    for key in [
        "checkpoint",
        "dataset",
        "norm",
        "eps",
        "n_eval",
        "subset_fingerprint",
        "seed",
        "seconds_aa",
        "seconds_spsa",
    ] {
        assert!(s.contains_key(key), "summary lacks {key}: {sh:?}");
    }
    assert_eq!(s["n_eval"], "120");
    let acc = |k: &str| -> f64 { s[k].parse().unwrap() };
    let clean = acc("clean_acc");
    let worst = acc("acc_worst_case");
    eprintln!("digits logistic: {s:?}");
    assert!(clean > 0.8, "clean accuracy {clean}");
    let mut last = clean;
    for c in ["apgd-ce", "apgd-t", "fab-t", "square"] {
        let a = acc(&format!("acc_aa_{c}"));
        assert!(
            a <= last + 1e-12,
            "AutoAttack's cumulative accuracy must not rise"
        );
        last = a;
    }
    assert!((acc("acc_aa") - last).abs() < 1e-12);
    for k in ["acc_aa", "acc_spsa", "acc_pgd10", "acc_cw-pgd10"] {
        assert!(worst <= acc(k) && acc(k) <= clean, "{k}");
    }
    assert!(
        acc("acc_aa") <= acc("acc_pgd10") + 1e-12,
        "AutoAttack weaker than PGD-10"
    );
    assert!(EvalRun::at(&full).subset().exists());

    // Interrupted after one attack, then resumed: the same flags.
    let part = dir.path().join("part");
    let args = attack_args(&ckpt, &part, &["--attacks", ATTACKS, "--eps", "8/255"]);
    let mut first = args.clone();
    first.extend(["--stop-after".to_string(), "1".to_string()]);
    let o = run_attack(&first);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!EvalRun::at(&part).per_sample().exists());
    let o = run_attack(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("aa: already finished"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read_to_string(EvalRun::at(&part).per_sample()).unwrap(),
        std::fs::read_to_string(EvalRun::at(&full).per_sample()).unwrap()
    );
    // A finished evaluation is not repeated.
    let o = run_attack(&args);
    assert!(o.status.success());
    assert_eq!(
        stderr(&o).matches("already finished").count(),
        4,
        "{}",
        stderr(&o)
    );

    // Other flags on the same --out are refused (bad input, exit 2), naming
    // each difference with both values.
    let o = run_attack(&attack_args(
        &ckpt,
        &part,
        &["--attacks", ATTACKS, "--eps", "4/255", "--norm", "l2"],
    ));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    for needle in [
        "--eps: 0.03137254901960784 → 0.01568627450980392",
        "--norm: \"linf\" → \"l2\"",
        "new --out",
    ] {
        assert!(
            stderr(&o).contains(needle),
            "lacks {needle:?}: {}",
            stderr(&o)
        );
    }

    // The saved subset can be given back with --subset: same points.
    let again = dir.path().join("again");
    let subset = EvalRun::at(&full).subset().display().to_string();
    let o = run_attack(&attack_args(
        &ckpt,
        &again,
        &["--attacks", "pgd10", "--eps", "8/255", "--subset", &subset],
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    let (_, rows2) = read_csv(&EvalRun::at(&again).per_sample());
    assert_eq!(
        rows2.iter().map(|r| r[0].clone()).collect::<Vec<_>>(),
        rows.iter().map(|r| r[0].clone()).collect::<Vec<_>>()
    );
    assert!(!EvalRun::at(&again).subset().exists());
}

#[test]
fn bad_inputs_are_refused_with_clear_errors_and_no_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = digits_checkpoint(dir.path());
    // A subset with an index past the digits test split (359 points).
    let good = dir.path().join("good");
    let o = run_attack(&attack_args(
        &ckpt,
        &good,
        &["--attacks", "pgd1", "--eps", "0.1"],
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(EvalRun::at(&good).subset()).unwrap();
    let mut subset: serde_json::Value = serde_json::from_str(&text).unwrap();
    subset["indices"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!(5000));
    let bad_subset = dir.path().join("bad-subset.json");
    std::fs::write(&bad_subset, subset.to_string()).unwrap();
    // A checkpoint whose model does not fit digits.
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let spec = ModelSpec {
        arch: Arch::Mlp,
        activation: Activation::Relu,
        mlp_hidden: vec![],
        input_shape: vec![1, 4, 4],
        num_outputs: 10,
    };
    let m = Model::new(&spec, Device::Cpu, &[0.0], &[1.0]).unwrap();
    let mut meta: CheckpointMeta = checkpoint::read_meta(&ckpt).unwrap();
    meta.model = spec;
    let wrong_shape = other.join("small.safetensors");
    checkpoint::save(&m, &wrong_shape, &meta).unwrap();
    // Weights that do not match their sidecar.
    let lying = other.join("lying.safetensors");
    std::fs::copy(&wrong_shape, &lying).unwrap();
    std::fs::copy(
        checkpoint::sidecar_path(&ckpt),
        checkpoint::sidecar_path(&lying),
    )
    .unwrap();
    let missing = dir.path().join("none.safetensors");

    let bs = bad_subset.display().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            attack_args(
                &ckpt,
                &dir.path().join("o1"),
                &["--eps", "0", "--attacks", "pgd1"],
            ),
            "--eps",
        ),
        (
            attack_args(
                &ckpt,
                &dir.path().join("o2"),
                &["--eps", "-1/255", "--attacks", "pgd1"],
            ),
            "--eps",
        ),
        (
            attack_args(
                &ckpt,
                &dir.path().join("o3"),
                &["--eps", "8/0", "--attacks", "pgd1"],
            ),
            "denominator",
        ),
        (
            attack_args(
                &ckpt,
                &dir.path().join("o4"),
                &["--eps", "0.1", "--norm", "l3"],
            ),
            "--norm",
        ),
        (
            attack_args(
                &ckpt,
                &dir.path().join("o5"),
                &["--eps", "0.1", "--attacks", "aa,fgsm"],
            ),
            "fgsm",
        ),
        (
            attack_args(
                &ckpt,
                &dir.path().join("o6"),
                &["--eps", "0.1", "--attacks", "pgd1", "--subset", &bs],
            ),
            "out of range",
        ),
        (
            attack_args(
                &wrong_shape,
                &dir.path().join("o7"),
                &["--eps", "0.1", "--attacks", "pgd1"],
            ),
            "[1, 4, 4]",
        ),
        (
            attack_args(
                &lying,
                &dir.path().join("o8"),
                &["--eps", "0.1", "--attacks", "pgd1"],
            ),
            "lying.safetensors",
        ),
        (
            attack_args(
                &missing,
                &dir.path().join("o9"),
                &["--eps", "0.1", "--attacks", "pgd1"],
            ),
            "none.safetensors",
        ),
    ];
    for (args, needle) in cases {
        let o = run_attack(&args);
        let err = stderr(&o);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{args:?}: bad usage or input exits 2: {err}"
        );
        assert!(
            err.contains(needle),
            "{args:?}: stderr lacks {needle:?}: {err}"
        );
        let out = PathBuf::from(&args[3]);
        assert!(
            files_in(&out).is_empty(),
            "{args:?} left {:?}",
            files_in(&out)
        );
    }
    let help = run("attack", &["--help"]);
    let text = stdout(&help);
    for flag in [
        "--checkpoint",
        "--attacks",
        "--norm",
        "--eps",
        "--subset",
        "--out",
        "--seed",
        "--device",
        "--batch-size",
        "--data-dir",
        "cw-pgdK",
        "8/255",
        "Exit codes: 0 ok (also when --stop-after stopped early), 1 a failed",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}");
    }
    // Bad usage (clap's own errors) exits 2 as well.
    let o = run("attack", &["--no-such-flag"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // A computation that fails after the work (per_sample.csv cannot be
    // written: a folder holds its name) exits 1, its state kept for a rerun.
    let blocked = dir.path().join("blocked");
    std::fs::create_dir_all(EvalRun::at(&blocked).per_sample()).unwrap();
    let o = run_attack(&attack_args(
        &ckpt,
        &blocked,
        &["--attacks", "pgd1", "--eps", "0.1"],
    ));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("per_sample.csv"), "{}", stderr(&o));
    assert!(EvalRun::at(&blocked).state().is_file());
}
