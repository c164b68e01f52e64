//! How often each interval kind excludes 0 when there is no effect: a
//! small seeded simulation of null two-arm comparisons with several seeds
//! (run by `make test`; it prints the rates).
//!
//! Each replicate has n points with a shared difficulty pᵢ ~ U(0.2, 0.9)
//! and S seeds per arm; the model of arm a and seed s shifts every point's
//! log-odds by τ·z_{a,s}, z ~ N(0, 1), and a point's outcome is
//! Bernoulli(σ(logit pᵢ + τ·z_{a,s})). Both arms are drawn alike, so the
//! true Δ is 0; a 95% interval should exclude it in about 5% of
//! replicates. With τ > 0 the models of the two arms differ by chance,
//! which only resampling seeds (clustering) sees.
use super::average;
use super::bootstrap::{IntervalKind, Settings};
use super::compare::{compare, subset_groups};
use super::metrics::CLEAN;
use super::pairing::explicit_row;
use super::testing::evaluation;
use super::RowInput;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde_json::json;

/// One null row: `seeds` pairs of `n` points with model shift `tau`.
fn null_row(rng: &mut ChaCha8Rng, n: usize, seeds: usize, tau: f64) -> RowInput {
    let difficulty: Vec<f64> = (0..n).map(|_| rng.gen_range(0.2..0.9)).collect();
    let model = |rng: &mut ChaCha8Rng| -> Vec<u8> {
        let z: f64 = StandardNormal.sample(rng);
        let shift = tau * z;
        difficulty
            .iter()
            .map(|p| {
                let logit = (p / (1.0 - p)).ln() + shift;
                u8::from(rng.gen::<f64>() < 1.0 / (1.0 + (-logit).exp()))
            })
            .collect()
    };
    let mut pairs = Vec::with_capacity(seeds);
    for s in 0..seeds {
        let (b, t) = (model(rng), model(rng));
        let b = evaluation("b", "fp", &[(CLEAN, &b)], json!({}));
        let t = evaluation("t", "fp", &[(CLEAN, &t)], json!({}));
        let mut pair = explicit_row(b, t, "null".into()).unwrap().pairs.remove(0);
        pair.seed = Some(s.to_string());
        pairs.push(pair);
    }
    let mut row = explicit_row(
        pairs[0].baseline.clone(),
        pairs[0].treatment.clone(),
        "null".into(),
    )
    .unwrap();
    row.pairs = pairs;
    row
}

/// The share of `replicates` null rows whose interval excludes 0.
fn exclusion_rate(
    seeds: usize,
    tau: f64,
    kind: IntervalKind,
    cluster_by_seed: bool,
    replicates: usize,
) -> f64 {
    let mut rng = ChaCha8Rng::seed_from_u64(2026 + seeds as u64);
    let mut excluded = 0;
    for r in 0..replicates {
        let rows = vec![null_row(&mut rng, 100, seeds, tau)];
        let groups = subset_groups(&rows, &mut Vec::new()).unwrap();
        let settings = Settings {
            resamples: 400,
            seed: r as u64,
            cluster_by_seed,
        };
        let averages = average::resolve(&[], &rows, &mut Vec::new());
        let c = compare(&rows, &averages, &groups, &settings, kind, 0.95).unwrap();
        if c.rows[0].metrics[CLEAN].interval.excludes_zero() {
            excluded += 1;
        }
    }
    excluded as f64 / replicates as f64
}

#[test]
fn null_exclusion_rates_of_each_interval_kind() {
    let replicates = 200;
    let mut rates = Vec::new();
    println!("null exclusion rate of 95% intervals ({replicates} replicates, 100 points):");
    for (seeds, tau) in [(3, 0.0), (3, 0.5), (8, 0.5)] {
        for kind in [IntervalKind::Percentile, IntervalKind::Bca] {
            for cluster in [false, true] {
                let rate = exclusion_rate(seeds, tau, kind, cluster, replicates);
                println!("  S = {seeds}, τ = {tau}: {kind:?}, clustered {cluster}: {rate:.3}");
                rates.push(((seeds, tau, kind, cluster), rate));
            }
        }
    }
    let rate = |key| rates.iter().find(|(k, _)| *k == key).unwrap().1;
    // No model variation: the point bootstrap holds its level (SE ≈ 0.015).
    assert!(rate((3, 0.0, IntervalKind::Percentile, false)) < 0.10);
    // Model variation with 3 seeds: unclustered intervals are far too
    // narrow; clustering helps but 3 clusters stay short of the level.
    let unclustered = rate((3, 0.5, IntervalKind::Percentile, false));
    let clustered = rate((3, 0.5, IntervalKind::Percentile, true));
    assert!(unclustered > 0.15, "unclustered {unclustered}");
    assert!(clustered < unclustered, "{clustered} vs {unclustered}");
    // Eight seeds, clustered: close to the level.
    assert!(rate((8, 0.5, IntervalKind::Percentile, true)) < 0.12);
}
