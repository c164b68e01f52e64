//! The 1-D regression toy of TASER Table 1 (SPEC §1, §9): x ~ N(0,1),
//! y = sin x; 1000 training points, 1000 fresh in-distribution test points,
//! and an out-of-distribution grid of 1201 points uniform on [−6, 6].
use super::{Dataset, DatasetName, Split, Task};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use tch::Tensor;

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

#[cfg(test)]
mod tests {
    use super::*;

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
