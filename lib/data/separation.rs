//! The class separation of a data set: r = ½·min ‖xᵢ − xⱼ‖ over pairs of
//! points with different labels, in the threat model's norm (L∞ or L2).
//! An ε-ball of radius ε ≥ r around some point reaches a point of another
//! class, so ε/r says how harsh a threat model is for its data: ε/r ≥ 1
//! allows no robust classifier of every point (Yang et al. 2020, "A
//! closer look at accuracy vs. robustness", measure r the same way).
use crate::error::{Error, Result};
use tch::{Kind, Tensor};

/// Pairs of points compared at once (bounds the memory of one chunk).
const PAIRS_PER_CHUNK: i64 = 1 << 24;

/// The separation of a labelled set and the pair that attains it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Separation {
    /// r = ½·min ‖xᵢ − xⱼ‖_p over yᵢ ≠ yⱼ (pixel units).
    pub radius: f64,
    /// Indices (i, j) of the closest pair of different labels.
    pub pair: (i64, i64),
}

/// r of the points `x` `[N, …]` with labels `y` `[N]` (int64) in the L`p`
/// norm (`p` = 2 or `f64::INFINITY`), by exact pairwise distances in chunks.
///
/// Errors: [`Error::InvalidArgument`] when every point has one label (no
/// pair to measure) or `p` is neither 2 nor ∞.
pub fn separation(x: &Tensor, y: &Tensor, p: f64) -> Result<Separation> {
    if p != 2.0 && p != f64::INFINITY {
        return Err(Error::invalid(
            "norm",
            p,
            "the separation is measured in L2 or L∞",
        ));
    }
    let flat = x.flatten(1, -1).to_kind(Kind::Double);
    let n = flat.size()[0];
    let rows = (PAIRS_PER_CHUNK / n.max(1)).max(1);
    let mut best = (f64::INFINITY, (0, 0));
    let mut start = 0;
    while start < n {
        let len = rows.min(n - start);
        let d = Tensor::cdist(&flat.narrow(0, start, len), &flat, p, None::<i64>);
        let same = y
            .narrow(0, start, len)
            .unsqueeze(1)
            .eq_tensor(&y.unsqueeze(0));
        let d = d.masked_fill(&same, f64::INFINITY).flatten(0, -1);
        let at = d.argmin(0, false).int64_value(&[]);
        let v = d.double_value(&[at]);
        if v < best.0 {
            best = (v, (start + at / n, at % n));
        }
        start += len;
    }
    if !best.0.is_finite() {
        return Err(Error::invalid(
            "labels",
            "one class",
            "the separation needs two classes",
        ));
    }
    Ok(Separation {
        radius: best.0 / 2.0,
        pair: best.1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_closest_pair_of_different_labels_sets_the_radius() {
        // Points on a line: the nearest pair overall (0 and 0.1) shares a
        // label; the nearest pair of different labels is 0.1 and 0.45.
        let x = Tensor::from_slice(&[0.0f32, 0.1, 0.45, 0.9]).view([4, 1]);
        let y = Tensor::from_slice(&[0i64, 0, 1, 1]);
        for p in [2.0, f64::INFINITY] {
            let s = separation(&x, &y, p).unwrap();
            assert!((s.radius - 0.175).abs() < 1e-7, "{s:?}");
            assert!(s.pair == (1, 2) || s.pair == (2, 1), "{s:?}");
        }
        // In 2-D the norms differ: (0,0) vs (0.3,0.4) is 0.5 in L2, 0.4 in L∞.
        let x = Tensor::from_slice(&[0.0f32, 0.0, 0.3, 0.4]).view([2, 2]);
        let y = Tensor::from_slice(&[0i64, 1]);
        assert!((separation(&x, &y, 2.0).unwrap().radius - 0.25).abs() < 1e-7);
        assert!((separation(&x, &y, f64::INFINITY).unwrap().radius - 0.2).abs() < 1e-7);
        assert!(separation(&x, &Tensor::from_slice(&[1i64, 1]), 2.0).is_err());
    }
}
