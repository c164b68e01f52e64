//! The 1-D toys.
//!
//! - `toy-sin`, the regression toy of TASER Table 1 (docs/METHOD.md, "Coordinates and data", §9): x ~ N(0,1),
//!   y = sin x; 1000 training points, 1000 fresh in-distribution test points,
//!   and an out-of-distribution grid of 1201 points uniform on [−6, 6].
//! - `toy-score`, the binary problem of SCORE §2–3 (Figures 1–3), whose
//!   posterior is known in closed form: p_d(y=1) = 1/6 with x|y=1 ~ N(1, 1),
//!   p_d(y=0) = 5/6 with x|y=0 ~ N(−1, 4) (variance 4). Its targets are the
//!   posterior p_d(y=1|x) itself, not sampled labels.
use super::{Dataset, DatasetName, Split, Task};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use tch::{Kind, Tensor};

pub const NUM_TRAIN: usize = 1000;
pub const NUM_TEST: usize = 1000;
pub const OOD_POINTS: usize = 1201;
pub const OOD_HALF_WIDTH: f64 = 6.0;

fn split_of(xs: Vec<f32>) -> Split {
    let ys: Vec<f32> = xs.iter().map(|v| v.sin()).collect();
    let n = xs.len() as i64;
    Split {
        x: Tensor::from_slice(&xs).view([n, 1]),
        y: Tensor::from_slice(&ys),
    }
}

/// Draws the toy data set from `seed` (training and test draws come from one
/// stream, so different seeds give different samples).
pub fn toy_sin(seed: u64) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut draw = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                let v: f64 = StandardNormal.sample(&mut rng);
                v as f32
            })
            .collect()
    };
    let train = draw(NUM_TRAIN);
    let test = draw(NUM_TEST);
    let grid: Vec<f32> = (0..OOD_POINTS)
        .map(|i| {
            (-OOD_HALF_WIDTH + 2.0 * OOD_HALF_WIDTH * i as f64 / (OOD_POINTS - 1) as f64) as f32
        })
        .collect();
    Dataset {
        name: DatasetName::ToySin,
        task: Task::Regression,
        input_shape: vec![1],
        num_outputs: 1,
        train: split_of(train),
        test: split_of(test),
        ood: Some(split_of(grid)),
    }
}

/// toy-score: prior p_d(y=1).
pub const SCORE_PRIOR_1: f64 = 1.0 / 6.0;
/// toy-score: x|y=1 ~ N(1, 1).
pub const SCORE_MEAN_1: f64 = 1.0;
pub const SCORE_STD_1: f64 = 1.0;
/// toy-score: x|y=0 ~ N(−1, 4), i.e. standard deviation 2.
pub const SCORE_MEAN_0: f64 = -1.0;
pub const SCORE_STD_0: f64 = 2.0;
/// toy-score: training points unless `--train-size` says otherwise (SCORE
/// Figure 1); Figure 2 uses 6.
pub const SCORE_NUM_TRAIN: usize = 60_000;
/// toy-score: fresh test draws from p_d(x), on which the posterior gap and
/// the risks are estimated.
pub const SCORE_NUM_TEST: usize = 60_000;
/// The posterior's log-odds is a concave quadratic (class 0 has the larger
/// variance and owns both tails), so p_d(y=1|x) rises to its single peak at
/// x = 5/3 (where d/dx log-odds = −(x − 1) + (x + 1)/4 = 0) and falls after.
pub const SCORE_POSTERIOR_PEAK: f64 = 5.0 / 3.0;

/// log p_d(y=1|x) − log p_d(y=0|x) on a tensor (any float kind).
pub fn score_log_odds(x: &Tensor) -> Tensor {
    let log_normal =
        |mean: f64, std: f64| -> Tensor { ((x - mean) / std).square() * -0.5 - std.ln() };
    log_normal(SCORE_MEAN_1, SCORE_STD_1) - log_normal(SCORE_MEAN_0, SCORE_STD_0)
        + (SCORE_PRIOR_1 / (1.0 - SCORE_PRIOR_1)).ln()
}

/// The closed-form posterior p_d(y=1|x) of toy-score (Bayes' rule with the
/// two Gaussians), elementwise, in the kind of `x`.
pub fn score_posterior(x: &Tensor) -> Tensor {
    score_log_odds(x).sigmoid()
}

/// The density p_d(x) = (5/6)·N(x; −1, 4) + (1/6)·N(x; 1, 1), elementwise.
pub fn score_density(x: &Tensor) -> Tensor {
    let normal = |mean: f64, std: f64| -> Tensor {
        (((x - mean) / std).square() * -0.5).exp() / (std * (2.0 * std::f64::consts::PI).sqrt())
    };
    normal(SCORE_MEAN_1, SCORE_STD_1) * SCORE_PRIOR_1
        + normal(SCORE_MEAN_0, SCORE_STD_0) * (1.0 - SCORE_PRIOR_1)
}

/// `n` draws of (x, y) from p_d(x, y) of toy-score.
pub fn score_sample(rng: &mut ChaCha8Rng, n: usize) -> (Vec<f32>, Vec<i64>) {
    (0..n)
        .map(|_| {
            let y = rng.gen_bool(SCORE_PRIOR_1);
            let z: f64 = StandardNormal.sample(rng);
            let x = if y {
                SCORE_MEAN_1 + SCORE_STD_1 * z
            } else {
                SCORE_MEAN_0 + SCORE_STD_0 * z
            };
            (x as f32, i64::from(y))
        })
        .unzip()
}

fn score_split(xs: Vec<f32>) -> Split {
    let x = Tensor::from_slice(&xs).view([xs.len() as i64, 1]);
    let y = score_posterior(&x.to_kind(Kind::Double))
        .to_kind(Kind::Float)
        .view([-1]);
    Split { x, y }
}

/// Draws toy-score from `seed`: `num_train` training inputs and
/// [`SCORE_NUM_TEST`] fresh test inputs from p_d(x) (one stream, training
/// first), each with the target p_d(y=1|x). The sampled labels are not
/// kept: every objective of SCORE §2 compares with p_d(·|x) directly.
pub fn toy_score(seed: u64, num_train: usize) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (train, _) = score_sample(&mut rng, num_train);
    let (test, _) = score_sample(&mut rng, SCORE_NUM_TEST);
    Dataset {
        name: DatasetName::ToyScore,
        task: Task::Posterior,
        input_shape: vec![1],
        num_outputs: 1,
        train: score_split(train),
        test: score_split(test),
        ood: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toy_score_posterior_is_bayes_rule_and_samples_follow_the_mixture() {
        // Bayes' rule by hand at a few points.
        for x in [-4.0f64, -1.0, 0.0, 1.0, 5.0 / 3.0, 3.0] {
            let n = |m: f64, s: f64| (-0.5 * ((x - m) / s).powi(2)).exp() / s;
            let a = SCORE_PRIOR_1 * n(1.0, 1.0);
            let b = (1.0 - SCORE_PRIOR_1) * n(-1.0, 2.0);
            let t = Tensor::from_slice(&[x]);
            let got = score_posterior(&t).double_value(&[0]);
            assert!((got - a / (a + b)).abs() < 1e-12, "x = {x}");
        }
        // The peak sits at 5/3.
        let t = Tensor::from_slice(&[5.0 / 3.0 - 1e-3, 5.0 / 3.0, 5.0 / 3.0 + 1e-3]);
        let p: Vec<f64> = Vec::try_from(score_posterior(&t)).unwrap();
        assert!(p[1] > p[0] && p[1] > p[2]);
        // The density integrates to one.
        let grid = Tensor::linspace(-30.0, 30.0, 60_001, (Kind::Double, tch::Device::Cpu));
        let mass = score_density(&grid).sum(Kind::Double).double_value(&[]) * 1e-3;
        assert!((mass - 1.0).abs() < 1e-9, "mass {mass}");
        // Sample class frequency and moments.
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let (xs, ys) = score_sample(&mut rng, 60_000);
        let frac = ys.iter().sum::<i64>() as f64 / 60_000.0;
        assert!((frac - 1.0 / 6.0).abs() < 0.006, "class-1 fraction {frac}");
        let mean = xs.iter().map(|&v| v as f64).sum::<f64>() / 60_000.0;
        // E[x] = (1/6)·1 + (5/6)·(−1) = −2/3.
        assert!((mean + 2.0 / 3.0).abs() < 0.03, "mean {mean}");
        let d = toy_score(1, 6);
        assert_eq!(d.train.x.size(), vec![6, 1]);
        assert_eq!(d.test.x.size(), vec![SCORE_NUM_TEST as i64, 1]);
        assert_eq!(toy_score(1, 6).train.fingerprint(), d.train.fingerprint());
        assert_ne!(toy_score(2, 6).train.fingerprint(), d.train.fingerprint());
    }

    #[test]
    fn toy_sin_shapes_targets_and_grid() {
        let d = toy_sin(3);
        assert_eq!(d.train.x.size(), vec![1000, 1]);
        assert_eq!(d.test.x.size(), vec![1000, 1]);
        let ood = d.ood.as_ref().unwrap();
        assert_eq!(ood.x.size(), vec![1201, 1]);
        let grid: Vec<f32> = Vec::try_from(ood.x.view([-1])).unwrap();
        assert_eq!((grid[0], grid[600], grid[1200]), (-6.0, 0.0, 6.0));
        let err = (d.train.x.view([-1]).sin() - &d.train.y)
            .abs()
            .max()
            .double_value(&[]);
        assert!(err < 1e-6);
        assert_ne!(toy_sin(4).train.fingerprint(), d.train.fingerprint());
        assert_eq!(toy_sin(3).train.fingerprint(), d.train.fingerprint());
    }
}
