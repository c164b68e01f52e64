//! Paired bootstrap comparisons of evaluations (SPEC §7): Δ = acc(treatment)
//! − acc(baseline) on a shared evaluation subset with seeded percentile or
//! BCa intervals, average rows from joint resamples, and the TASER paper's
//! Table 2 / Table 3 layouts (CSV, Markdown, LaTeX) with SVG plots.
//!
//! Modules: [`eval`] reads `attack` outputs, [`spec`] pairs a sweep's grid
//! points by rule, [`bootstrap`] resamples, [`normal`] is Φ and Φ⁻¹ for
//! BCa, [`table`] and [`plot`] write the outputs.
pub mod bootstrap;
pub mod eval;
pub mod plot;
pub mod spec;
pub mod table;

use crate::error::{Error, Result};
use crate::fsutil::ensure_writable_dir;
use bootstrap::{Interval, IntervalKind, Series, Settings};
use eval::{check_pairable, Evaluation};
use serde_json::Value;
use spec::{same_value, show, Spec};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The metric "robust accuracy avg": per point, the mean of the AutoAttack
/// (`aa`) and SPSA (`spsa`) outcomes (TASER Table 2).
pub const ROBUST_AVG: &str = "robust_avg";

/// Where the pairs come from.
#[derive(Debug, Clone)]
pub enum PairSource {
    /// Explicit (baseline dir, treatment dir, optional label), in order.
    Explicit(Vec<(PathBuf, PathBuf, Option<String>)>),
    /// A comparison spec applied to a sweep directory.
    Spec { spec: PathBuf, runs: PathBuf },
}

/// Options of one `bootstrap` run.
#[derive(Debug, Clone)]
pub struct Options {
    pub source: PairSource,
    pub resamples: usize,
    pub seed: u64,
    /// Confidence level, e.g. 0.95.
    pub level: f64,
    pub interval: IntervalKind,
    /// Overrides the spec's `cluster_by_seed` when set.
    pub cluster_by_seed: Option<bool>,
    pub out: PathBuf,
}

/// One baseline/treatment pair (one seed slot of a row).
#[derive(Debug, Clone)]
pub struct Pair {
    pub baseline: Evaluation,
    pub treatment: Evaluation,
    /// The seed value (for clustering and labels), when known.
    pub seed: Option<String>,
}

/// A table row before resampling: one or more pairs (seeds) of the same
/// comparison.
#[derive(Debug, Clone)]
pub struct RowInput {
    pub label: String,
    /// Rows of one family differ only in the varied hyperparameter (x).
    pub family: String,
    pub x: Option<f64>,
    pub pairs: Vec<Pair>,
}

/// Baseline, treatment and Δ of one metric in one row.
#[derive(Debug, Clone)]
pub struct MetricResult {
    pub baseline: f64,
    pub treatment: f64,
    pub delta: f64,
    pub interval: Interval,
}

/// One output row (a comparison or an average of comparisons).
#[derive(Debug, Clone)]
pub struct RowResult {
    pub label: String,
    pub average: bool,
    pub family: String,
    pub x: Option<f64>,
    pub seeds: usize,
    pub points: usize,
    /// train_seconds(treatment) / train_seconds(baseline), means over seeds.
    pub overhead: Option<f64>,
    pub metrics: BTreeMap<String, MetricResult>,
    pub notes: Vec<String>,
}

/// Everything a run computed, as written to --out.
#[derive(Debug, Clone)]
pub struct Report {
    pub title: String,
    pub caption: String,
    /// Name of the varied hyperparameter (x axis), e.g. "lambda".
    pub vary: String,
    pub rows: Vec<RowResult>,
    /// Metric columns in table order: clean, robust_avg, attacks, worst_case.
    pub metrics: Vec<String>,
    /// Attacks of the per-attack table.
    pub attacks: Vec<String>,
    pub resamples: usize,
    pub seed: u64,
    pub level: f64,
    pub interval: IntervalKind,
    pub cluster_by_seed: bool,
    pub notes: Vec<String>,
    pub files: Vec<PathBuf>,
}

fn default_label(dir: &Path) -> String {
    let name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| p.display().to_string())
    };
    match (name(dir).as_str(), dir.parent()) {
        ("eval" | "attack" | "evaluation", Some(p)) if p.file_name().is_some() => name(p),
        (n, _) => n.to_string(),
    }
}

fn x_of(e: &Evaluation, key: &str) -> Option<f64> {
    e.attributes.get(key).and_then(Value::as_f64)
}

fn explicit_rows(list: &[(PathBuf, PathBuf, Option<String>)]) -> Result<Vec<RowInput>> {
    if list.is_empty() {
        return Err(Error::invalid(
            "--baseline/--treatment",
            "none",
            "give at least one --baseline DIR --treatment DIR pair, or --spec FILE --runs DIR",
        ));
    }
    list.iter()
        .map(|(b, t, label)| {
            let baseline = Evaluation::load(b, None)?;
            let treatment = Evaluation::load(t, None)?;
            check_pairable(&baseline, &treatment)?;
            let label = label.clone().unwrap_or_else(|| default_label(t));
            Ok(RowInput {
                family: label.clone(),
                label,
                x: x_of(&treatment, "lambda"),
                pairs: vec![Pair {
                    seed: treatment.attributes.get("seed").map(|v| show(Some(v))),
                    baseline,
                    treatment,
                }],
            })
        })
        .collect()
}

fn matches(e: &Evaluation, filter: &BTreeMap<String, Value>) -> bool {
    filter
        .iter()
        .all(|(k, v)| same_value(e.attributes.get(k), Some(v)))
}

fn describe(e: &Evaluation, keys: &[String]) -> String {
    keys.iter()
        .map(|k| format!("{k}={}", show(e.attributes.get(k))))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Pairs the grid points of `runs` by the spec's rule and groups them into
/// rows (see [`spec`]). Refuses a treatment with no baseline or with more
/// than one, a row that matches no pair, and a row with a seed twice.
fn spec_rows(spec: &Spec, runs: &Path, notes: &mut Vec<String>) -> Result<Vec<RowInput>> {
    let points = spec::grid_points(runs, &spec.eval_dir)?;
    if points.is_empty() {
        return Err(Error::MissingInput {
            path: runs.to_path_buf(),
            reason: format!("no grid point holds {}/per_sample.csv", spec.eval_dir),
            fix: format!(
                "run `attack --out <point>/{}` for each grid point, or set [layout] eval_dir in {}",
                spec.eval_dir,
                spec.path.display()
            ),
        });
    }
    let mut evals = Vec::new();
    for p in &points {
        let side = p.join(&spec.sidecar);
        let e = Evaluation::load(&p.join(&spec.eval_dir), Some(&side))?;
        if e.sidecar.is_none() {
            return Err(Error::MissingInput {
                path: side,
                reason: "pairing by rule needs the checkpoint's hyperparameters".into(),
                fix: format!(
                    "keep `train`'s model.json in each grid point, or set [layout] sidecar in {}",
                    spec.path.display()
                ),
            });
        }
        evals.push(e);
    }
    let is_baseline =
        |e: &Evaluation| same_value(e.attributes.get(&spec.vary), Some(&spec.baseline));
    let mut rule_keys = spec.match_keys.clone();
    rule_keys.push(spec.seed_key.clone());
    let mut pairs: Vec<Pair> = Vec::new();
    let mut used_baselines = vec![false; evals.len()];
    for t in evals.iter().filter(|e| !is_baseline(e)) {
        if let Some(list) = &spec.treatments {
            if !list
                .iter()
                .any(|v| same_value(t.attributes.get(&spec.vary), Some(v)))
            {
                continue;
            }
        }
        let candidates: Vec<usize> = (0..evals.len())
            .filter(|&k| {
                is_baseline(&evals[k])
                    && rule_keys
                        .iter()
                        .all(|key| same_value(evals[k].attributes.get(key), t.attributes.get(key)))
            })
            .collect();
        match candidates.as_slice() {
            [k] => {
                used_baselines[*k] = true;
                let baseline = evals[*k].clone();
                check_pairable(&baseline, t)?;
                pairs.push(Pair {
                    seed: Some(show(t.attributes.get(&spec.seed_key))),
                    baseline,
                    treatment: t.clone(),
                });
            }
            [] => {
                return Err(Error::CorruptInput {
                    path: t.dir.clone(),
                    reason: format!(
                        "no baseline under the rule of {}: no grid point has {}={} and {}",
                        spec.path.display(),
                        spec.vary,
                        show(Some(&spec.baseline)),
                        describe(t, &rule_keys)
                    ),
                    fix: format!(
                        "train and evaluate that baseline, or drop keys from [pairing] match / \
                         list only the wanted values in [pairing] treatments of {}",
                        spec.path.display()
                    ),
                })
            }
            many => {
                return Err(Error::CorruptInput {
                    path: t.dir.clone(),
                    reason: format!(
                        "{} baselines match it under the rule ({}): {}",
                        many.len(),
                        describe(t, &rule_keys),
                        many.iter()
                            .map(|&k| evals[k].dir.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    fix: format!(
                        "add the hyperparameter that tells them apart to [pairing] match in {}",
                        spec.path.display()
                    ),
                })
            }
        }
    }
    if pairs.is_empty() {
        return Err(Error::CorruptInput {
            path: runs.to_path_buf(),
            reason: format!(
                "no treatment ({} ≠ {}) found among {} grid points",
                spec.vary,
                show(Some(&spec.baseline)),
                evals.len()
            ),
            fix: "check [pairing] vary/baseline/treatments of the spec and the sweep's grid".into(),
        });
    }
    let unused = used_baselines
        .iter()
        .zip(&evals)
        .filter(|(u, e)| !**u && is_baseline(e))
        .count();
    if unused > 0 {
        notes.push(format!(
            "{unused} baseline grid point(s) had no treatment and are not shown"
        ));
    }

    // Group pairs into families (spec rows, or distinct match-key values).
    let mut families: Vec<(String, Vec<Pair>)> = Vec::new();
    if spec.rows.is_empty() {
        let varying: Vec<String> = spec
            .match_keys
            .iter()
            .filter(|k| {
                pairs.iter().any(|p| {
                    !same_value(
                        p.treatment.attributes.get(*k),
                        pairs[0].treatment.attributes.get(*k),
                    )
                })
            })
            .cloned()
            .collect();
        for p in pairs {
            let label = if varying.is_empty() {
                show(p.treatment.attributes.get("method"))
            } else {
                describe(&p.treatment, &varying)
            };
            match families.iter_mut().find(|(l, _)| *l == label) {
                Some((_, v)) => v.push(p),
                None => families.push((label, vec![p])),
            }
        }
    } else {
        let mut shown = vec![false; pairs.len()];
        for r in &spec.rows {
            let members: Vec<Pair> = pairs
                .iter()
                .enumerate()
                .filter(|(_, p)| matches(&p.treatment, &r.filter))
                .map(|(k, p)| {
                    shown[k] = true;
                    p.clone()
                })
                .collect();
            if members.is_empty() {
                return Err(Error::CorruptInput {
                    path: spec.path.clone(),
                    reason: format!(
                        "row `{}` (where {}) matches no baseline/treatment pair in {}",
                        r.label,
                        r.filter
                            .iter()
                            .map(|(k, v)| format!("{k}={}", show(Some(v))))
                            .collect::<Vec<_>>()
                            .join(", "),
                        runs.display()
                    ),
                    fix: "run that grid point and its baseline, or remove the row from the spec"
                        .into(),
                });
            }
            families.push((r.label.clone(), members));
        }
        let hidden = shown.iter().filter(|s| !**s).count();
        if hidden > 0 {
            notes.push(format!(
                "{hidden} pair(s) matched no [[row]] of the spec and are not shown"
            ));
        }
    }

    // Split families by the varied value; seeds of one row become its slots.
    let mut rows = Vec::new();
    for (family, members) in families {
        let mut xs: Vec<f64> = members
            .iter()
            .filter_map(|p| x_of(&p.treatment, &spec.vary))
            .collect();
        xs.sort_by(f64::total_cmp);
        xs.dedup();
        let several = xs.len() > 1;
        let mut groups: Vec<(Option<f64>, Vec<Pair>)> = Vec::new();
        for p in members {
            let x = x_of(&p.treatment, &spec.vary);
            match groups.iter_mut().find(|(gx, _)| *gx == x) {
                Some((_, v)) => v.push(p),
                None => groups.push((x, vec![p])),
            }
        }
        groups.sort_by(|a, b| a.0.unwrap_or(f64::NAN).total_cmp(&b.0.unwrap_or(f64::NAN)));
        for (x, mut slots) in groups {
            slots.sort_by(|a, b| a.seed.cmp(&b.seed));
            if let Some(w) = slots.windows(2).find(|w| w[0].seed == w[1].seed) {
                return Err(Error::CorruptInput {
                    path: w[1].treatment.dir.clone(),
                    reason: format!(
                        "row `{family}` has {}={} twice (also {})",
                        spec.seed_key,
                        w[0].seed.clone().unwrap_or_default(),
                        w[0].treatment.dir.display()
                    ),
                    fix: format!(
                        "add the hyperparameter that tells them apart to [pairing] match or a [[row]] where in {}",
                        spec.path.display()
                    ),
                });
            }
            let label = match (several, x) {
                (true, Some(x)) => format!("{family} ({} = {x})", symbol(&spec.vary)),
                _ => family.clone(),
            };
            rows.push(RowInput {
                label,
                family: family.clone(),
                x,
                pairs: slots,
            });
        }
    }
    Ok(rows)
}

/// The Greek letter of a hyperparameter name (λ, β) for labels, else the name.
pub fn symbol(name: &str) -> String {
    match name {
        "lambda" => "λ".into(),
        "beta" => "β".into(),
        other => other.into(),
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// The per-point outcomes of `metric` for one evaluation; `robust` lists
/// the components averaged for [`ROBUST_AVG`].
fn outcomes(e: &Evaluation, metric: &str, robust: &[String]) -> Vec<f64> {
    if metric == ROBUST_AVG {
        let cols: Vec<&Vec<f64>> = robust.iter().map(|c| &e.outcomes[c]).collect();
        (0..e.len())
            .map(|i| cols.iter().map(|c| c[i]).sum::<f64>() / cols.len() as f64)
            .collect()
    } else {
        e.outcomes[metric].clone()
    }
}

/// Runs the whole analysis: reads and pairs the inputs (refusing anything
/// that does not line up), resamples, and writes tables and plots to
/// `opts.out` (each file atomically). Nothing is written when an input is
/// refused.
pub fn run(opts: &Options) -> Result<Report> {
    if !(opts.level > 0.0 && opts.level < 1.0) {
        return Err(Error::invalid(
            "--level",
            opts.level,
            "must lie strictly between 0 and 1, e.g. 0.95",
        ));
    }
    if opts.resamples < 10 {
        return Err(Error::invalid(
            "--resamples",
            opts.resamples,
            "must be at least 10 (10000 is the default)",
        ));
    }
    let mut notes = Vec::new();
    let (rows, title, caption, vary, spec_attacks, averages, spec_cluster) = match &opts.source {
        PairSource::Explicit(list) => {
            let rows = explicit_rows(list)?;
            let averages = if rows.len() > 1 {
                vec![("Avg.".to_string(), (0..rows.len()).collect::<Vec<_>>())]
            } else {
                Vec::new()
            };
            (
                rows,
                "Paired bootstrap comparison".to_string(),
                String::new(),
                "lambda".to_string(),
                Vec::new(),
                averages,
                false,
            )
        }
        PairSource::Spec { spec, runs } => {
            let spec = Spec::load(spec)?;
            let rows = spec_rows(&spec, runs, &mut notes)?;
            let mut averages = Vec::new();
            let specs = match &spec.averages {
                Some(list) => list.clone(),
                None if rows.len() > 1 => vec![spec::AverageSpec {
                    label: "Avg.".into(),
                    include: None,
                    exclude: Vec::new(),
                }],
                None => Vec::new(),
            };
            for a in &specs {
                for name in a.include.iter().flatten().chain(&a.exclude) {
                    if !rows.iter().any(|r| &r.family == name) {
                        return Err(Error::CorruptInput {
                            path: spec.path.clone(),
                            reason: format!(
                                "average `{}` names row `{name}`, which is not a row of the table",
                                a.label
                            ),
                            fix: "use the labels of the [[row]] entries".into(),
                        });
                    }
                }
                let members: Vec<usize> = (0..rows.len())
                    .filter(|&k| {
                        a.include
                            .as_ref()
                            .is_none_or(|inc| inc.contains(&rows[k].family))
                            && !a.exclude.contains(&rows[k].family)
                    })
                    .collect();
                if members.is_empty() {
                    notes.push(format!(
                        "average `{}` has no member rows and is not shown",
                        a.label
                    ));
                } else {
                    averages.push((a.label.clone(), members));
                }
            }
            (
                rows,
                spec.title.clone(),
                spec.caption.clone(),
                spec.vary.clone(),
                spec.attacks.clone(),
                averages,
                spec.cluster_by_seed,
            )
        }
    };
    let cluster = opts.cluster_by_seed.unwrap_or(spec_cluster);

    // Subset groups: rows on the same subset share their resampled indices.
    let mut groups: Vec<&Evaluation> = Vec::new();
    let mut row_group = Vec::new();
    for r in &rows {
        let first = &r.pairs[0].baseline;
        for p in &r.pairs[1..] {
            check_pairable(first, &p.baseline)?;
        }
        let g = match groups
            .iter()
            .position(|e| e.fingerprint == first.fingerprint && e.index == first.index)
        {
            Some(g) => g,
            None => {
                groups.push(first);
                groups.len() - 1
            }
        };
        row_group.push(g);
    }
    if groups.len() > 1 {
        notes.push(format!(
            "{} different evaluation subsets: rows on different subsets are resampled independently",
            groups.len()
        ));
    }

    // Metrics per row: those every evaluation of the row has.
    let mut row_metrics: Vec<Vec<String>> = Vec::new();
    let mut row_robust: Vec<Vec<String>> = Vec::new();
    let mut row_notes: Vec<Vec<String>> = vec![Vec::new(); rows.len()];
    for (k, r) in rows.iter().enumerate() {
        let evals: Vec<&Evaluation> = r
            .pairs
            .iter()
            .flat_map(|p| [&p.baseline, &p.treatment])
            .collect();
        let common: Vec<String> = evals[0]
            .attacks
            .iter()
            .filter(|a| evals.iter().all(|e| e.outcomes.contains_key(*a)))
            .cloned()
            .collect();
        let robust: Vec<String> = ["aa", "spsa"]
            .iter()
            .filter(|a| common.iter().any(|c| c == *a))
            .map(|a| a.to_string())
            .collect();
        let mut m = vec!["clean".to_string()];
        match robust.len() {
            2 => m.push(ROBUST_AVG.into()),
            1 => {
                m.push(ROBUST_AVG.into());
                row_notes[k].push(format!(
                    "robust avg = {} only ({} missing)",
                    robust[0],
                    if robust[0] == "aa" { "spsa" } else { "aa" }
                ));
            }
            _ => row_notes[k].push("robust avg unavailable (neither aa nor spsa evaluated)".into()),
        }
        m.extend(common.iter().cloned());
        if evals.iter().all(|e| e.outcomes.contains_key("worst_case")) {
            m.push("worst_case".into());
        }
        row_metrics.push(m);
        row_robust.push(robust);
    }
    let mut metrics: Vec<String> = Vec::new();
    for m in row_metrics.iter().flatten() {
        if !metrics.contains(m) {
            metrics.push(m.clone());
        }
    }
    // Table order: clean, robust_avg, attacks, worst_case.
    metrics.sort_by_key(|m| match m.as_str() {
        "clean" => 0,
        ROBUST_AVG => 1,
        "worst_case" => 3,
        _ => 2,
    });

    // Series per (row, metric) and statistics per row and average row.
    let mut series = Vec::new();
    let mut index: BTreeMap<(usize, String), usize> = BTreeMap::new();
    let mut levels: BTreeMap<(usize, String), (f64, f64)> = BTreeMap::new();
    for (k, r) in rows.iter().enumerate() {
        for m in &row_metrics[k] {
            let mut slots = Vec::new();
            let (mut b_acc, mut t_acc) = (Vec::new(), Vec::new());
            for p in &r.pairs {
                let b = outcomes(&p.baseline, m, &row_robust[k]);
                let t = outcomes(&p.treatment, m, &row_robust[k]);
                b_acc.push(mean(&b));
                t_acc.push(mean(&t));
                slots.push(t.iter().zip(&b).map(|(t, b)| t - b).collect());
            }
            index.insert((k, m.clone()), series.len());
            levels.insert((k, m.clone()), (mean(&b_acc), mean(&t_acc)));
            series.push(Series {
                group: row_group[k],
                slots,
            });
        }
    }
    let mut statistics: Vec<Vec<usize>> = Vec::new();
    let mut stat_of: Vec<(usize, String)> = Vec::new(); // (output row, metric)
    for (k, _) in rows.iter().enumerate() {
        for m in &row_metrics[k] {
            statistics.push(vec![index[&(k, m.clone())]]);
            stat_of.push((k, m.clone()));
        }
    }
    for (a, (_, members)) in averages.iter().enumerate() {
        for m in &metrics {
            if members.iter().all(|k| index.contains_key(&(*k, m.clone()))) {
                statistics.push(members.iter().map(|k| index[&(*k, m.clone())]).collect());
                stat_of.push((rows.len() + a, m.clone()));
            }
        }
    }
    let settings = Settings {
        resamples: opts.resamples,
        seed: opts.seed,
        cluster_by_seed: cluster,
    };
    let dists = bootstrap::resample(&series, &statistics, &settings)?;

    let mut results: Vec<RowResult> = rows
        .iter()
        .enumerate()
        .map(|(k, r)| {
            let tb: Vec<Option<f64>> = r.pairs.iter().map(|p| p.baseline.train_seconds).collect();
            let tt: Vec<Option<f64>> = r.pairs.iter().map(|p| p.treatment.train_seconds).collect();
            let overhead = match (
                tb.iter().copied().collect::<Option<Vec<f64>>>(),
                tt.iter().copied().collect::<Option<Vec<f64>>>(),
            ) {
                (Some(b), Some(t)) if mean(&b) > 0.0 => Some(mean(&t) / mean(&b)),
                _ => None,
            };
            RowResult {
                label: r.label.clone(),
                average: false,
                family: r.family.clone(),
                x: r.x,
                seeds: r.pairs.len(),
                points: groups[row_group[k]].len(),
                overhead,
                metrics: BTreeMap::new(),
                notes: row_notes[k].clone(),
            }
        })
        .chain(averages.iter().map(|(label, members)| {
            RowResult {
                label: label.clone(),
                average: true,
                family: label.clone(),
                x: None,
                seeds: members
                    .iter()
                    .map(|k| rows[*k].pairs.len())
                    .max()
                    .unwrap_or(0),
                points: members
                    .iter()
                    .map(|k| groups[row_group[*k]].len())
                    .sum::<usize>()
                    / members.len(),
                overhead: None,
                metrics: BTreeMap::new(),
                notes: vec![format!(
                    "mean of {} (joint resamples)",
                    members
                        .iter()
                        .map(|k| rows[*k].label.clone())
                        .collect::<Vec<_>>()
                        .join(", ")
                )],
            }
        }))
        .collect();
    for ((row, m), dist) in stat_of.iter().zip(&dists) {
        let (b, t) = if *row < rows.len() {
            levels[&(*row, m.clone())]
        } else {
            let members = &averages[row - rows.len()].1;
            let n = members.len() as f64;
            let (sb, st) = members.iter().fold((0.0, 0.0), |(sb, st), k| {
                let (b, t) = levels[&(*k, m.clone())];
                (sb + b, st + t)
            });
            (sb / n, st / n)
        };
        let interval = dist.interval(opts.interval, opts.level);
        if let Some(n) = &interval.note {
            results[*row].notes.push(format!("{m}: {n}"));
        }
        results[*row].metrics.insert(
            m.clone(),
            MetricResult {
                baseline: b,
                treatment: t,
                delta: dist.estimate,
                interval,
            },
        );
    }
    if cluster {
        notes.push("clustered by seed: each resample draws seeds, then points".into());
    }

    let attacks: Vec<String> = if spec_attacks.is_empty() {
        metrics
            .iter()
            .filter(|m| !["clean", ROBUST_AVG, "worst_case"].contains(&m.as_str()))
            .cloned()
            .collect()
    } else {
        for a in &spec_attacks {
            if !metrics.contains(a) {
                notes.push(format!(
                    "attack `{a}` of [tables] attacks was evaluated in no row"
                ));
            }
        }
        spec_attacks
    };
    let mut report = Report {
        title,
        caption,
        vary,
        rows: results,
        metrics,
        attacks,
        resamples: opts.resamples,
        seed: opts.seed,
        level: opts.level,
        interval: opts.interval,
        cluster_by_seed: cluster,
        notes,
        files: Vec::new(),
    };
    ensure_writable_dir(&opts.out)?;
    report.files = table::write_all(&report, &opts.out)?;
    report.files.extend(plot::write_all(&report, &opts.out)?);
    Ok(report)
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&table::table2_markdown(self))?;
        writeln!(f)?;
        for p in &self.files {
            writeln!(f, "wrote {}", p.display())?;
        }
        Ok(())
    }
}
