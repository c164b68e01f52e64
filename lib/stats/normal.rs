//! The standard normal distribution's CDF Φ and quantile Φ⁻¹, needed by the
//! BCa interval. Written here because `statrs` is not in the offline crate
//! cache this project builds from; both are checked against reference
//! values in the tests below.

/// Φ(x), the standard normal CDF, by Marsaglia's Taylor series
/// (J. Stat. Softw. 11(4), 2004): Φ(x) = ½ + φ(x)·(x + x³/3 + x⁵/(3·5) + …),
/// absolute error about 1e-15. Beyond |x| > 8.5 it returns 0 or 1 (the
/// true tail is below 1e-17).
pub fn cdf(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x < -8.5 {
        return 0.0;
    }
    if x > 8.5 {
        return 1.0;
    }
    let q = x * x;
    let (mut s, mut t, mut b, mut i) = (x, 0.0, x, 1.0);
    while s != t {
        t = s;
        i += 2.0;
        b *= q / i;
        s = t + b;
    }
    // ln √(2π) = 0.918938533204672741780…
    (0.5 + s * (-0.5 * q - 0.918_938_533_204_672_7).exp()).clamp(0.0, 1.0)
}

/// Φ⁻¹(p), the standard normal quantile: Acklam's rational approximation
/// (relative error 1.15e-9) refined by one Halley step on Φ(x) − p, which
/// brings it to about machine precision. Returns ∓∞ at p = 0, 1 and NaN
/// outside [0, 1].
pub fn quantile(p: f64) -> f64 {
    if !(0.0..=1.0).contains(&p) || p.is_nan() {
        return f64::NAN;
    }
    if p == 0.0 {
        return f64::NEG_INFINITY;
    }
    if p == 1.0 {
        return f64::INFINITY;
    }
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    const P_LOW: f64 = 0.02425;
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    let x = if p < P_LOW {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - P_LOW {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    };
    // One Halley step: e = Φ(x) − p, u = e·√(2π)·exp(x²/2).
    let e = cdf(x) - p;
    let u = e * (2.0 * std::f64::consts::PI).sqrt() * (0.5 * x * x).exp();
    let refined = x - u / (1.0 + 0.5 * x * u);
    if refined.is_finite() {
        refined
    } else {
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdf_matches_reference_values() {
        // Reference values from the closed form Φ(x) = erfc(−x/√2)/2
        // (computed to 16 digits with mpmath).
        for (x, want) in [
            (0.0, 0.5),
            (1.0, 0.841_344_746_068_542_9),
            (-1.0, 0.158_655_253_931_457_05),
            (1.96, 0.975_002_104_851_780),
            (-3.0, 0.001_349_898_031_630_094_6),
            (5.0, 0.999_999_713_348_428),
        ] {
            assert!(
                (cdf(x) - want).abs() < 1e-13,
                "Φ({x}) = {} ≠ {want}",
                cdf(x)
            );
        }
    }

    #[test]
    fn quantile_matches_reference_values_and_inverts_cdf() {
        for (p, want) in [
            (0.5, 0.0),
            (0.975, 1.959_963_984_540_054),
            (0.025, -1.959_963_984_540_054),
            (0.995, 2.575_829_303_548_901),
            (0.001, -3.090_232_306_167_813_5),
            (0.8, 0.841_621_233_572_914_2),
        ] {
            assert!(
                (quantile(p) - want).abs() < 1e-9,
                "Φ⁻¹({p}) = {} ≠ {want}",
                quantile(p)
            );
        }
        for k in 1..200 {
            let p = k as f64 / 200.0;
            assert!((cdf(quantile(p)) - p).abs() < 1e-12, "p = {p}");
        }
        assert_eq!(quantile(0.0), f64::NEG_INFINITY);
        assert!(quantile(1.5).is_nan());
    }
}
