//! A seeded validation split carved out of a training split (`train
//! --val-size N`), as Rice et al. (2020) and SCORE (Pang et al. 2022, §4.1)
//! select checkpoints against robust overfitting.
use super::Split;
use crate::error::{Error, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::Tensor;

/// Offset mixed into the run's seed for the validation draw, so that it is
/// independent of the other draws from the same seed.
const VALIDATION_STREAM: u64 = 0x7A11_DA7E;

/// Splits `train` into (remaining training split, validation split of
/// `size` rows): a uniform draw without replacement from a ChaCha8 stream
/// seeded with `seed` (the same seed gives the same split); both parts keep
/// the original row order.
///
/// Errors: [`Error::InvalidArgument`] naming `--val-size` when `size` is 0
/// or leaves fewer than 2 training rows.
pub fn carve(train: &Split, size: usize, seed: u64) -> Result<(Split, Split)> {
    let n = train.len() as usize;
    if size == 0 || size + 2 > n {
        return Err(Error::invalid(
            "--val-size",
            size,
            format!(
                "must be in 1..={} (the training split has {n} rows)",
                n.saturating_sub(2)
            ),
        ));
    }
    let mut order: Vec<i64> = (0..n as i64).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ VALIDATION_STREAM));
    let (val, rest) = order.split_at_mut(size);
    val.sort_unstable();
    rest.sort_unstable();
    Ok((
        train.select(&Tensor::from_slice(rest)),
        train.select(&Tensor::from_slice(val)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_split_is_a_seeded_partition() {
        let x = Tensor::arange(20, (tch::Kind::Float, tch::Device::Cpu)).view([20, 1]);
        let split = Split {
            y: Tensor::arange(20, (tch::Kind::Int64, tch::Device::Cpu)),
            x,
        };
        let (rest, val) = carve(&split, 5, 3).unwrap();
        let ids = |s: &Split| Vec::<i64>::try_from(&s.y).unwrap();
        let (a, b) = (ids(&rest), ids(&val));
        assert_eq!((a.len(), b.len()), (15, 5));
        let mut all = [a.clone(), b.clone()].concat();
        all.sort_unstable();
        assert_eq!(all, (0..20).collect::<Vec<_>>());
        assert_eq!(
            ids(&carve(&split, 5, 3).unwrap().1),
            b,
            "same seed, same split"
        );
        assert_ne!(ids(&carve(&split, 5, 4).unwrap().1), b, "another seed");
        assert!(carve(&split, 19, 3)
            .unwrap_err()
            .to_string()
            .contains("--val-size"));
    }
}
