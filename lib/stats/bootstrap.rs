//! The paired bootstrap engine (docs/METHOD.md, "Bootstrap statistics").
//!
//! A *series* holds, for one table row and one metric, the per-point paired
//! differences dᵢ = treatment correctᵢ − baseline correctᵢ on a shared
//! evaluation subset, one vector per seed *slot* (several seeds of the same
//! comparison). Its statistic is θ = (1/S)·Σₛ (1/n)·Σᵢ d\[s\]\[i\], the mean
//! accuracy difference Δ = acc(treatment) − acc(baseline).
//!
//! A *statistic* is the mean of one or more series (a single row, or an
//! average row over several rows). Every resample draws the point indices
//! once per subset *group* and applies them to every series of that group,
//! so average rows are computed from joint resamples, never from
//! independently resampled rows. Series on different subsets are
//! independent samples and are drawn independently.
//!
//! With clustering by seed, each resample first draws S seed slots with
//! replacement (shared by every series), then the points afresh for each
//! drawn slot (two-stage cluster bootstrap).
use crate::error::{Error, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use statrs::distribution::{ContinuousCDF, Normal};

/// Paired differences of one row and one metric on one subset group.
#[derive(Debug, Clone)]
pub struct Series {
    /// Which subset group the points belong to (index into the group sizes).
    pub group: usize,
    /// d\[slot\]\[point\], all slots of the same length (the group's size).
    pub slots: Vec<Vec<f64>>,
}

impl Series {
    /// Slot-averaged differences d̄ᵢ = (1/S)·Σₛ d\[s\]\[i\].
    pub fn averaged(&self) -> Vec<f64> {
        let n = self.slots[0].len();
        let s = self.slots.len() as f64;
        (0..n)
            .map(|i| self.slots.iter().map(|d| d[i]).sum::<f64>() / s)
            .collect()
    }

    /// The point estimate θ̂ = mean of d̄.
    pub fn estimate(&self) -> f64 {
        let d = self.averaged();
        d.iter().sum::<f64>() / d.len() as f64
    }
}

/// Bootstrap settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Number of resamples B.
    pub resamples: usize,
    /// Seed of the ChaCha8 generator.
    pub seed: u64,
    /// Two-stage resampling (seeds, then points).
    pub cluster_by_seed: bool,
}

/// The bootstrap distribution of one statistic (mean of member series).
#[derive(Debug, Clone)]
pub struct Distribution {
    /// θ̂ on the original data.
    pub estimate: f64,
    /// θ*₁..θ*_B, sorted ascending.
    pub samples: Vec<f64>,
    /// Jackknife acceleration â (BCa).
    pub acceleration: f64,
}

/// Resamples every series jointly (see the module doc) and returns, for
/// each statistic (a list of member series indices, averaged), its
/// bootstrap distribution.
///
/// Errors: [`Error::InvalidArgument`] for zero resamples, a series whose
/// slots are empty or differ in length, series of one group that differ in
/// size, clustering by seed with series of different seed counts, and a
/// statistic with no member or one that does not exist.
pub fn resample(
    series: &[Series],
    statistics: &[Vec<usize>],
    settings: &Settings,
) -> Result<Vec<Distribution>> {
    if settings.resamples == 0 {
        return Err(Error::invalid("--resamples", 0, "must be at least 1"));
    }
    if series.is_empty() {
        return Ok(Vec::new());
    }
    let sizes = group_sizes(series)?;
    let n_slots = series[0].slots.len();
    if settings.cluster_by_seed && series.iter().any(|s| s.slots.len() != n_slots) {
        return Err(Error::invalid(
            "cluster_by_seed",
            true,
            "clustering by seed needs every row to have the same seeds; \
             some rows have a different number of seeds (turn clustering off or complete the grid)",
        ));
    }
    let layout = GroupLayout::new(series, sizes, settings.cluster_by_seed);
    let per_series = draw(&layout, series.len(), n_slots, settings);
    statistics
        .iter()
        .map(|stat| distribution(series, stat, &per_series, &layout.sizes))
        .collect()
}

/// The number of points of each subset group (groups are numbered 0..G).
fn group_sizes(series: &[Series]) -> Result<Vec<usize>> {
    let n_groups = series.iter().map(|s| s.group).max().unwrap_or(0) + 1;
    let mut sizes = vec![0usize; n_groups];
    for s in series {
        let n = s.slots.first().map(Vec::len).unwrap_or(0);
        if n == 0 || s.slots.iter().any(|d| d.len() != n) {
            return Err(Error::invalid(
                "series",
                s.group,
                "every seed slot needs the same, non-zero number of points",
            ));
        }
        if sizes[s.group] != 0 && sizes[s.group] != n {
            return Err(Error::invalid(
                "series",
                s.group,
                "series of one subset group differ in size",
            ));
        }
        sizes[s.group] = n;
    }
    Ok(sizes)
}

/// Point-major copies of the series per subset group, so one drawn index
/// adds a contiguous row of values (one per series of the group).
struct GroupLayout {
    /// Points of each group.
    sizes: Vec<usize>,
    /// The series of each group, ascending.
    members: Vec<Vec<usize>>,
    /// data[g][slot][i · k_g + j] = point i of the j-th series of group g
    /// (one slot layer of slot-averaged differences unless clustering).
    data: Vec<Vec<Vec<f64>>>,
}

impl GroupLayout {
    fn new(series: &[Series], sizes: Vec<usize>, cluster_by_seed: bool) -> GroupLayout {
        let n_groups = sizes.len();
        let members: Vec<Vec<usize>> = (0..n_groups)
            .map(|g| {
                (0..series.len())
                    .filter(|&k| series[k].group == g)
                    .collect()
            })
            .collect();
        let slot_layers = if cluster_by_seed {
            series[0].slots.len()
        } else {
            1
        };
        let data = (0..n_groups)
            .map(|g| {
                let k_g = members[g].len();
                (0..slot_layers)
                    .map(|slot| {
                        let mut m = vec![0.0; sizes[g] * k_g];
                        for (j, &k) in members[g].iter().enumerate() {
                            let d = if cluster_by_seed {
                                series[k].slots[slot].clone()
                            } else {
                                series[k].averaged()
                            };
                            for (i, v) in d.iter().enumerate() {
                                m[i * k_g + j] = *v;
                            }
                        }
                        m
                    })
                    .collect()
            })
            .collect();
        GroupLayout {
            sizes,
            members,
            data,
        }
    }
}

/// Draws the B resamples: per_series[k][r] = θ*_r of series k. Per
/// resample, with clustering, first S slots with replacement; then for each
/// (drawn) slot and each group, n_g point indices with replacement, shared
/// by the group's series.
// Index loops: r and g address transposed layouts ([series][resample],
// [group][member]), which iterators would obscure.
#[allow(clippy::needless_range_loop)]
fn draw(
    layout: &GroupLayout,
    n_series: usize,
    n_slots: usize,
    settings: &Settings,
) -> Vec<Vec<f64>> {
    let GroupLayout {
        sizes,
        members,
        data: layers,
    } = layout;
    let n_groups = sizes.len();
    let slot_layers = if settings.cluster_by_seed { n_slots } else { 1 };
    let mut rng = ChaCha8Rng::seed_from_u64(settings.seed);
    let b = settings.resamples;
    let mut per_series = vec![vec![0.0; b]; n_series];
    let mut acc: Vec<Vec<f64>> = members.iter().map(|m| vec![0.0; m.len()]).collect();
    let mut picks = vec![0usize; slot_layers];
    for r in 0..b {
        for a in acc.iter_mut() {
            a.iter_mut().for_each(|v| *v = 0.0);
        }
        if settings.cluster_by_seed {
            for p in picks.iter_mut() {
                *p = rng.gen_range(0..n_slots);
            }
        }
        for &slot in &picks {
            for g in 0..n_groups {
                let k_g = members[g].len();
                let data = &layers[g][slot];
                let a = &mut acc[g];
                for _ in 0..sizes[g] {
                    let i = rng.gen_range(0..sizes[g]);
                    for (v, x) in a.iter_mut().zip(&data[i * k_g..(i + 1) * k_g]) {
                        *v += x;
                    }
                }
            }
        }
        for g in 0..n_groups {
            let denom = (sizes[g] * picks.len()) as f64;
            for (j, &k) in members[g].iter().enumerate() {
                per_series[k][r] = acc[g][j] / denom;
            }
        }
    }
    per_series
}

/// The distribution of one statistic (the mean of its member series) from
/// the resampled series values.
fn distribution(
    series: &[Series],
    stat: &[usize],
    per_series: &[Vec<f64>],
    sizes: &[usize],
) -> Result<Distribution> {
    if stat.is_empty() || stat.iter().any(|&k| k >= series.len()) {
        return Err(Error::invalid(
            "statistic",
            format!("{stat:?}"),
            "needs member series that exist",
        ));
    }
    let m = stat.len() as f64;
    let b = per_series[0].len();
    let mut samples: Vec<f64> = (0..b)
        .map(|r| stat.iter().map(|&k| per_series[k][r]).sum::<f64>() / m)
        .collect();
    samples.sort_by(f64::total_cmp);
    let estimate = stat.iter().map(|&k| series[k].estimate()).sum::<f64>() / m;
    Ok(Distribution {
        estimate,
        samples,
        acceleration: acceleration(series, stat, sizes),
    })
}

/// Jackknife acceleration (Efron 1987): â = Σⱼ uⱼ³ / (6·(Σⱼ uⱼ²)^{3/2}),
/// uⱼ = θ̄₍.₎ − θ₍ⱼ₎, leaving out one evaluation point j (of one subset
/// group) at a time from the slot-averaged differences. Removing point i of
/// group g changes only that group's series: θₖ₍ᵢ₎ = (n·θₖ − d̄ₖ[i])/(n − 1).
/// Returns 0 when every jackknife value is equal (no spread).
#[allow(clippy::needless_range_loop)]
fn acceleration(series: &[Series], stat: &[usize], sizes: &[usize]) -> f64 {
    let m = stat.len() as f64;
    let thetas: Vec<f64> = stat.iter().map(|&k| series[k].estimate()).collect();
    let theta = thetas.iter().sum::<f64>() / m;
    let averaged: Vec<Vec<f64>> = stat.iter().map(|&k| series[k].averaged()).collect();
    let mut groups: Vec<usize> = stat.iter().map(|&k| series[k].group).collect();
    groups.sort_unstable();
    groups.dedup();
    let mut jack = Vec::new();
    for g in groups {
        let n = sizes[g] as f64;
        if sizes[g] < 2 {
            continue;
        }
        for i in 0..sizes[g] {
            let mut t = theta * m;
            for (j, &k) in stat.iter().enumerate() {
                if series[k].group == g {
                    t += (n * thetas[j] - averaged[j][i]) / (n - 1.0) - thetas[j];
                }
            }
            jack.push(t / m);
        }
    }
    if jack.is_empty() {
        return 0.0;
    }
    let mean = jack.iter().sum::<f64>() / jack.len() as f64;
    let (s2, s3) = jack.iter().fold((0.0, 0.0), |(s2, s3), t| {
        let u = mean - t;
        (s2 + u * u, s3 + u * u * u)
    });
    if s2 <= 1e-300 {
        0.0
    } else {
        s3 / (6.0 * s2.powf(1.5))
    }
}

/// Which interval to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IntervalKind {
    /// Percentile interval [θ*_(α/2), θ*_(1−α/2)].
    Percentile,
    /// Bias-corrected and accelerated (Efron 1987).
    Bca,
}

impl std::fmt::Display for IntervalKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IntervalKind::Percentile => "percentile",
            IntervalKind::Bca => "bca",
        })
    }
}

/// A confidence interval and, when BCa had to fall back, why.
#[derive(Debug, Clone, PartialEq)]
pub struct Interval {
    pub lower: f64,
    pub upper: f64,
    /// Set when BCa was asked for but is undefined here (percentile used).
    pub note: Option<String>,
}

impl Interval {
    /// True when 0 lies outside [lower, upper].
    pub fn excludes_zero(&self) -> bool {
        self.lower > 0.0 || self.upper < 0.0
    }
}

/// The empirical q-quantile of sorted samples: the smallest θ*₍ₖ₎ with
/// k/B ≥ q, i.e. θ*₍⌈qB⌉₎ (inverse of the empirical CDF), clamped to the
/// sample range.
pub fn empirical_quantile(sorted: &[f64], q: f64) -> f64 {
    let b = sorted.len();
    // The small tolerance keeps q·B = 250 from becoming 250.00000000000003.
    let k = ((q * b as f64) - 1e-9).ceil().max(1.0) as usize;
    sorted[k.min(b) - 1]
}

impl Distribution {
    /// Percentile interval at confidence `level`: the α/2 and 1 − α/2
    /// empirical quantiles, α = 1 − level.
    pub fn percentile(&self, level: f64) -> Interval {
        let alpha = 1.0 - level;
        Interval {
            lower: empirical_quantile(&self.samples, alpha / 2.0),
            upper: empirical_quantile(&self.samples, 1.0 - alpha / 2.0),
            note: None,
        }
    }

    /// BCa interval (Efron 1987): ẑ₀ = Φ⁻¹(#{θ* < θ̂}/B, ties counted half),
    /// α₁,₂ = Φ(ẑ₀ + (ẑ₀ + z_{α/2, 1−α/2}) / (1 − â·(ẑ₀ + z))), interval =
    /// the α₁, α₂ empirical quantiles. Falls back to the percentile interval
    /// (with a note) when ẑ₀ is infinite (θ̂ outside the bootstrap
    /// distribution) or a denominator is not positive.
    pub fn bca(&self, level: f64) -> Interval {
        let b = self.samples.len() as f64;
        let tol = 1e-12 * self.estimate.abs().max(1.0);
        let below = self
            .samples
            .iter()
            .filter(|t| **t < self.estimate - tol)
            .count() as f64;
        let ties = self
            .samples
            .iter()
            .filter(|t| (**t - self.estimate).abs() <= tol)
            .count() as f64;
        let p0 = (below + 0.5 * ties) / b;
        let z0 = normal_quantile(p0);
        let alpha = 1.0 - level;
        let a = self.acceleration;
        let adjust = |q: f64| -> Option<f64> {
            let z = normal_quantile(q);
            let denom = 1.0 - a * (z0 + z);
            (z0.is_finite() && denom > 0.0).then(|| normal_cdf(z0 + (z0 + z) / denom))
        };
        match (adjust(alpha / 2.0), adjust(1.0 - alpha / 2.0)) {
            (Some(q1), Some(q2)) => Interval {
                lower: empirical_quantile(&self.samples, q1),
                upper: empirical_quantile(&self.samples, q2),
                note: None,
            },
            _ => Interval {
                note: Some(format!(
                    "BCa undefined (bias correction p0 = {p0}); percentile interval shown"
                )),
                ..self.percentile(level)
            },
        }
    }

    /// The two-sided bootstrap p-value of θ = 0: twice the smaller share
    /// of resamples on either side of 0 (ties counted half), at most 1. A
    /// percentile interval at level 1 − α excludes 0 exactly when p < α
    /// (up to the ties' convention).
    pub fn p_value(&self) -> f64 {
        let b = self.samples.len() as f64;
        let below = self.samples.iter().filter(|t| **t < 0.0).count() as f64;
        let ties = self.samples.iter().filter(|t| **t == 0.0).count() as f64;
        let lower = (below + 0.5 * ties) / b;
        (2.0 * lower.min(1.0 - lower)).min(1.0)
    }

    /// The interval of the requested kind.
    pub fn interval(&self, kind: IntervalKind, level: f64) -> Interval {
        match kind {
            IntervalKind::Percentile => self.percentile(level),
            IntervalKind::Bca => self.bca(level),
        }
    }
}

/// Φ(x), the standard normal CDF (statrs: ½·erfc(−x/√2)). NaN for NaN.
fn normal_cdf(x: f64) -> f64 {
    Normal::standard().cdf(x)
}

/// Φ⁻¹(p), the standard normal quantile (statrs: −√2·erfc⁻¹(2p)). −∞ at
/// p = 0, +∞ at p = 1, NaN outside [0, 1] (statrs panics there).
fn normal_quantile(p: f64) -> f64 {
    if (0.0..=1.0).contains(&p) {
        Normal::standard().inverse_cdf(p)
    } else {
        f64::NAN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(seed: u64) -> Settings {
        Settings {
            resamples: 4000,
            seed,
            cluster_by_seed: false,
        }
    }

    fn series(group: usize, d: Vec<f64>) -> Series {
        Series {
            group,
            slots: vec![d],
        }
    }

    #[test]
    fn empirical_quantile_is_the_inverse_cdf() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(empirical_quantile(&s, 0.025), 3.0);
        assert_eq!(empirical_quantile(&s, 0.975), 98.0);
        assert_eq!(empirical_quantile(&s, 0.0), 1.0);
        assert_eq!(empirical_quantile(&s, 1.0), 100.0);
    }

    #[test]
    fn zero_differences_give_a_zero_width_interval_for_both_kinds() {
        let d = resample(&[series(0, vec![0.0; 50])], &[vec![0]], &settings(1)).unwrap();
        for kind in [IntervalKind::Percentile, IntervalKind::Bca] {
            let i = d[0].interval(kind, 0.95);
            assert_eq!((i.lower, i.upper), (0.0, 0.0), "{kind}");
            assert!(i.note.is_none());
        }
    }

    #[test]
    fn bca_is_close_to_percentile_on_a_symmetric_case() {
        // Half +1, half −1 differences plus zeros: θ̂ = 0, symmetric, â = 0.
        let mut d = vec![1.0; 100];
        d.extend(vec![-1.0; 100]);
        d.extend(vec![0.0; 300]);
        let dist = resample(&[series(0, d)], &[vec![0]], &settings(3)).unwrap();
        assert!(dist[0].acceleration.abs() < 1e-12);
        let (p, b) = (dist[0].percentile(0.95), dist[0].bca(0.95));
        assert!((p.lower - b.lower).abs() <= 0.005, "{p:?} {b:?}");
        assert!((p.upper - b.upper).abs() <= 0.005, "{p:?} {b:?}");
    }

    #[test]
    fn acceleration_matches_the_closed_form_for_a_mean() {
        // For a mean, θ̄ − θ₍ᵢ₎ ∝ dᵢ − d̄, so â = Σ(dᵢ − d̄)³ / (6 (Σ(dᵢ − d̄)²)^{3/2}).
        let d: Vec<f64> = [1.0, 1.0, 1.0, 0.0, 0.0, -1.0, 1.0, 0.0].to_vec();
        let mean = d.iter().sum::<f64>() / d.len() as f64;
        let s2: f64 = d.iter().map(|x| (x - mean).powi(2)).sum();
        let s3: f64 = d.iter().map(|x| (x - mean).powi(3)).sum();
        let want = s3 / (6.0 * s2.powf(1.5));
        let got = acceleration(&[series(0, d.clone())], &[0], &[d.len()]);
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    }

    #[test]
    fn same_seed_same_samples_other_seed_other_samples() {
        let d: Vec<f64> = (0..80).map(|i| ((i % 3) as f64) - 1.0).collect();
        let a = resample(&[series(0, d.clone())], &[vec![0]], &settings(7)).unwrap();
        let b = resample(&[series(0, d.clone())], &[vec![0]], &settings(7)).unwrap();
        let c = resample(&[series(0, d)], &[vec![0]], &settings(8)).unwrap();
        assert_eq!(a[0].samples, b[0].samples);
        assert_ne!(a[0].samples, c[0].samples);
    }

    #[test]
    fn average_of_anticorrelated_rows_is_narrower_than_its_parts() {
        // Row 2 = −row 1 point by point: jointly resampled, their average is
        // exactly 0 in every resample; averaging the rows' own intervals
        // would give a wide interval.
        let d1: Vec<f64> = (0..200)
            .map(|i| if i % 4 == 0 { 1.0 } else { 0.0 })
            .collect();
        let d2: Vec<f64> = d1.iter().map(|v| -v).collect();
        let dist = resample(
            &[series(0, d1), series(0, d2)],
            &[vec![0], vec![1], vec![0, 1]],
            &settings(5),
        )
        .unwrap();
        let avg = dist[2].percentile(0.95);
        assert_eq!((avg.lower, avg.upper), (0.0, 0.0));
        let naive = (dist[0].percentile(0.95).upper - dist[0].percentile(0.95).lower
            + dist[1].percentile(0.95).upper
            - dist[1].percentile(0.95).lower)
            / 2.0;
        assert!(naive > 0.05, "{naive}");
    }

    #[test]
    fn clustering_by_seed_widens_the_interval_when_seeds_disagree() {
        // Seed 0 gains +0.4, seed 1 loses −0.4, on the same points: point
        // resampling alone sees a constant 0 average; resampling seeds sees
        // the between-seed spread.
        let s = Series {
            group: 0,
            slots: vec![vec![0.4; 100], vec![-0.4; 100]],
        };
        let flat = resample(std::slice::from_ref(&s), &[vec![0]], &settings(2)).unwrap();
        let clustered = resample(
            &[s],
            &[vec![0]],
            &Settings {
                cluster_by_seed: true,
                ..settings(2)
            },
        )
        .unwrap();
        let (f, c) = (flat[0].percentile(0.95), clustered[0].percentile(0.95));
        assert!(f.upper - f.lower < 1e-12);
        assert!(
            (c.lower + 0.4).abs() < 1e-12 && (c.upper - 0.4).abs() < 1e-12,
            "{c:?}"
        );
    }

    #[test]
    fn clustering_refuses_rows_with_different_seed_counts() {
        let a = Series {
            group: 0,
            slots: vec![vec![0.0; 5], vec![0.0; 5]],
        };
        let b = series(0, vec![0.0; 5]);
        let e = resample(
            &[a, b],
            &[vec![0]],
            &Settings {
                cluster_by_seed: true,
                ..settings(1)
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("same seeds"), "{e}");
    }

    #[test]
    fn normal_cdf_matches_reference_values() {
        // Reference values from the closed form Φ(x) = erfc(−x/√2)/2
        // (computed to 16 digits with mpmath). statrs 0.19's erfc is good to
        // about 1e-10 relative (its per-interval constants carry 10 digits),
        // far below what BCa's quantile levels need.
        for (x, want) in [
            (0.0, 0.5),
            (1.0, 0.841_344_746_068_542_9),
            (-1.0, 0.158_655_253_931_457_05),
            (1.96, 0.975_002_104_851_780),
            (-3.0, 0.001_349_898_031_630_094_6),
            (5.0, 0.999_999_713_348_428),
        ] {
            assert!(
                (normal_cdf(x) - want).abs() < 1e-10,
                "Φ({x}) = {} ≠ {want}",
                normal_cdf(x)
            );
        }
    }

    #[test]
    fn normal_quantile_matches_reference_values_and_inverts_the_cdf() {
        for (p, want) in [
            (0.5, 0.0),
            (0.975, 1.959_963_984_540_054),
            (0.025, -1.959_963_984_540_054),
            (0.995, 2.575_829_303_548_901),
            (0.001, -3.090_232_306_167_813_5),
            (0.8, 0.841_621_233_572_914_2),
        ] {
            assert!(
                (normal_quantile(p) - want).abs() < 1e-9,
                "Φ⁻¹({p}) = {} ≠ {want}",
                normal_quantile(p)
            );
        }
        for k in 1..200 {
            let p = k as f64 / 200.0;
            assert!(
                (normal_cdf(normal_quantile(p)) - p).abs() < 1e-10,
                "p = {p}"
            );
        }
        assert_eq!(normal_quantile(0.0), f64::NEG_INFINITY);
        assert!(normal_quantile(1.5).is_nan());
    }

    #[test]
    fn the_p_value_agrees_with_the_percentile_interval() {
        // θ* = −2.5, −1.5, …, 96.5: 3 of 100 below 0, so p = 0.06.
        let d = Distribution {
            estimate: 47.0,
            samples: (1..=100).map(|i| i as f64 - 3.5).collect(),
            acceleration: 0.0,
        };
        assert!((d.p_value() - 0.06).abs() < 1e-12);
        assert!(!d.percentile(0.95).excludes_zero(), "p = 0.06 ≥ 0.05");
        assert!(d.percentile(0.90).excludes_zero(), "p = 0.06 < 0.10");
        // Ties at 0 count half on each side; never above 1.
        let tied = Distribution {
            estimate: 0.0,
            samples: vec![0.0; 10],
            acceleration: 0.0,
        };
        assert_eq!(tied.p_value(), 1.0);
    }
}
