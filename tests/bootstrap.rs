//! `bootstrap` end to end on synthetic evaluation directories (the layout
//! `attack` writes): exact bootstrap quantiles, degenerate and symmetric
//! cases, reproducibility, joint average rows, pairing by a spec, plots, and
//! refused input (clear message, non-zero exit, nothing written).
mod common;
use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Writes an evaluation directory: per_sample.csv with `index` = `index`,
/// `label` = 0, the given 0/1 columns (first must be clean_correct) and a
/// worst_case column (min over the attack columns), plus summary.csv.
fn write_eval(dir: &Path, index: &[usize], cols: &[(&str, Vec<u8>)], fingerprint: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let n = index.len();
    let attacks: Vec<&(&str, Vec<u8>)> = cols.iter().filter(|c| c.0 != "clean_correct").collect();
    let worst: Vec<u8> = (0..n)
        .map(|i| attacks.iter().map(|c| c.1[i]).min().unwrap_or(1))
        .collect();
    let mut s = String::from("index,label");
    for (name, _) in cols {
        s.push(',');
        s.push_str(name);
    }
    s.push_str(",worst_case\n");
    for (i, ix) in index.iter().enumerate() {
        s.push_str(&format!("{ix},0"));
        for (_, v) in cols {
            s.push_str(&format!(",{}", v[i]));
        }
        s.push_str(&format!(",{}\n", worst[i]));
    }
    std::fs::write(dir.join("per_sample.csv"), s).unwrap();
    let acc = |v: &[u8]| v.iter().map(|x| *x as f64).sum::<f64>() / n as f64;
    let mut head = String::from("checkpoint,dataset,norm,eps,subset_size,subset_fingerprint,seed");
    let mut row = format!(",digits,linf,0.2,{n},{fingerprint},0");
    for (name, v) in cols {
        let name = if *name == "clean_correct" {
            "clean_accuracy".to_string()
        } else {
            format!("acc_{name}")
        };
        head.push_str(&format!(",{name}"));
        row.push_str(&format!(",{}", acc(v)));
    }
    std::fs::write(
        dir.join("summary.csv"),
        format!("{head},acc_worst_case\n{row},{}\n", acc(&worst)),
    )
    .unwrap();
}

/// 0/1 outcomes with `ones` leading ones among `n`.
fn ones(n: usize, ones: usize) -> Vec<u8> {
    (0..n).map(|i| u8::from(i < ones)).collect()
}

/// A pseudo-random 0/1 vector with P(1) ≈ p (deterministic LCG).
fn random01(n: usize, p: f64, seed: u64) -> Vec<u8> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            u8::from(((s >> 11) as f64 / (1u64 << 53) as f64) < p)
        })
        .collect()
}

/// Baseline and treatment clean outcomes on n points with n10 points where
/// only the treatment is right and n01 where only the baseline is.
fn discordant(n: usize, n10: usize, n01: usize) -> (Vec<u8>, Vec<u8>) {
    let both = n / 2;
    let t: Vec<u8> = (0..n)
        .map(|i| u8::from(i < n10 || (i >= n10 + n01 && i < n10 + n01 + both)))
        .collect();
    let b: Vec<u8> = (0..n)
        .map(|i| u8::from(i >= n10 && i < n10 + n01 + both))
        .collect();
    (b, t)
}

fn read_rows(path: &Path) -> Vec<BTreeMap<String, String>> {
    let mut r = csv::Reader::from_path(path).unwrap();
    let h: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    r.records()
        .map(|rec| {
            h.iter()
                .cloned()
                .zip(rec.unwrap().iter().map(String::from))
                .collect()
        })
        .collect()
}

fn f(row: &BTreeMap<String, String>, key: &str) -> f64 {
    row.get(key)
        .unwrap_or_else(|| panic!("no column {key}"))
        .parse()
        .unwrap_or_else(|_| panic!("{key} = {:?}", row[key]))
}

fn run_ok(args: &[&str]) -> String {
    let o = run("bootstrap", args);
    assert!(o.status.success(), "bootstrap failed: {}", stderr(&o));
    stdout(&o)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Exact distribution of (N10 − N01) for (N10, N01, rest) ~
/// Multinomial(n; n10/n, n01/n, rest): N10 ~ Bin(n, p10), N01 | N10 = a ~
/// Bin(n − a, p01 / (1 − p10)). Returns P(D = d) for d = −n..=n.
fn exact_difference_pmf(n: usize, n10: usize, n01: usize) -> Vec<f64> {
    let lf: Vec<f64> = std::iter::once(0.0)
        .chain((1..=n).scan(0.0, |acc, k| {
            *acc += (k as f64).ln();
            Some(*acc)
        }))
        .collect();
    let lbin = |m: usize, k: usize, p: f64| -> f64 {
        if p == 0.0 {
            return if k == 0 { 0.0 } else { f64::NEG_INFINITY };
        }
        if p == 1.0 {
            return if k == m { 0.0 } else { f64::NEG_INFINITY };
        }
        lf[m] - lf[k] - lf[m - k] + k as f64 * p.ln() + (m - k) as f64 * (1.0 - p).ln()
    };
    let (p10, p01) = (n10 as f64 / n as f64, n01 as f64 / n as f64);
    let q = p01 / (1.0 - p10);
    let mut pmf = vec![0.0; 2 * n + 1];
    for a in 0..=n {
        let la = lbin(n, a, p10);
        if la < -60.0 {
            continue;
        }
        for b in 0..=(n - a) {
            let l = la + lbin(n - a, b, q);
            if l > -60.0 {
                pmf[(n as isize + a as isize - b as isize) as usize] += l.exp();
            }
        }
    }
    pmf
}

/// Smallest d/n with P(D ≤ d) ≥ q.
fn exact_quantile(pmf: &[f64], n: usize, q: f64) -> f64 {
    let mut c = 0.0;
    for (k, p) in pmf.iter().enumerate() {
        c += p;
        if c >= q - 1e-12 {
            return (k as f64 - n as f64) / n as f64;
        }
    }
    1.0
}

#[test]
fn percentile_interval_matches_the_exact_bootstrap_quantiles() {
    let dir = tempfile::tempdir().unwrap();
    let n = 1000;
    let idx: Vec<usize> = (0..n).collect();
    for (n10, n01) in [(80, 40), (30, 30), (5, 60)] {
        let (b, t) = discordant(n, n10, n01);
        let (bd, td, out) = (
            dir.path().join("b"),
            dir.path().join("t"),
            dir.path().join(format!("out{n10}-{n01}")),
        );
        write_eval(&bd, &idx, &[("clean_correct", b)], "fp");
        write_eval(&td, &idx, &[("clean_correct", t)], "fp");
        run_ok(&[
            "--baseline",
            s(&bd),
            "--treatment",
            s(&td),
            "--seed",
            "11",
            "--out",
            s(&out),
        ]);
        let rows = read_rows(&out.join("comparisons.csv"));
        assert_eq!(rows.len(), 1);
        let pmf = exact_difference_pmf(n, n10, n01);
        assert!((pmf.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        let (lo, hi) = (
            exact_quantile(&pmf, n, 0.025),
            exact_quantile(&pmf, n, 0.975),
        );
        let (got_lo, got_hi) = (f(&rows[0], "clean_lower"), f(&rows[0], "clean_upper"));
        let delta = f(&rows[0], "clean_delta");
        eprintln!(
            "n10={n10} n01={n01}: Δ = {delta:.4}, exact [{lo:.4}, {hi:.4}], bootstrap (B=10000) [{got_lo:.4}, {got_hi:.4}]"
        );
        assert!((delta - (n10 as f64 - n01 as f64) / n as f64).abs() < 1e-12);
        assert!(
            (got_lo - lo).abs() <= 0.005 && (got_hi - hi).abs() <= 0.005,
            "exact [{lo}, {hi}] vs [{got_lo}, {got_hi}]"
        );
        assert_eq!(f(&rows[0], "resamples"), 10000.0);
        assert_eq!(f(&rows[0], "seed"), 11.0);
    }
}

#[test]
fn identical_inputs_give_zero_width_intervals() {
    let dir = tempfile::tempdir().unwrap();
    let idx: Vec<usize> = (0..300).collect();
    let cols = [
        ("clean_correct", random01(300, 0.8, 1)),
        ("aa", random01(300, 0.3, 2)),
        ("spsa", random01(300, 0.4, 3)),
    ];
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    write_eval(&a, &idx, &cols, "fp");
    write_eval(&b, &idx, &cols, "fp");
    for interval in ["percentile", "bca"] {
        let out = dir.path().join(interval);
        run_ok(&[
            "--baseline",
            s(&a),
            "--treatment",
            s(&b),
            "--interval",
            interval,
            "--resamples",
            "2000",
            "--out",
            s(&out),
        ]);
        let row = &read_rows(&out.join("comparisons.csv"))[0];
        for m in ["clean", "robust_avg", "aa", "spsa", "worst_case"] {
            assert_eq!(
                (f(row, &format!("{m}_lower")), f(row, &format!("{m}_upper"))),
                (0.0, 0.0),
                "{interval} {m}"
            );
        }
        assert!(row["notes"].is_empty(), "{}", row["notes"]);
    }
}

#[test]
fn bca_is_close_to_percentile_on_a_symmetric_case_and_seeds_reproduce() {
    let dir = tempfile::tempdir().unwrap();
    let n = 1000;
    let idx: Vec<usize> = (0..n).collect();
    let (b, t) = discordant(n, 60, 60);
    let (bd, td) = (dir.path().join("b"), dir.path().join("t"));
    write_eval(&bd, &idx, &[("clean_correct", b)], "fp");
    write_eval(&td, &idx, &[("clean_correct", t)], "fp");
    let go = |interval: &str, seed: &str, name: &str| {
        let out = dir.path().join(name);
        run_ok(&[
            "--baseline",
            s(&bd),
            "--treatment",
            s(&td),
            "--interval",
            interval,
            "--seed",
            seed,
            "--out",
            s(&out),
        ]);
        let row = read_rows(&out.join("comparisons.csv")).remove(0);
        (f(&row, "clean_lower"), f(&row, "clean_upper"), out)
    };
    let (pl, pu, p_out) = go("percentile", "3", "p");
    let (bl, bu, _) = go("bca", "3", "b");
    eprintln!(
        "symmetric n10 = n01 = 60 of 1000: percentile [{pl:.4}, {pu:.4}], BCa [{bl:.4}, {bu:.4}]"
    );
    assert!((pl - bl).abs() <= 0.003 && (pu - bu).abs() <= 0.003);
    assert!((pl + pu).abs() <= 0.004, "not symmetric: [{pl}, {pu}]");
    let (pl2, pu2, p2_out) = go("percentile", "3", "p2");
    assert_eq!((pl, pu), (pl2, pu2));
    assert_eq!(
        std::fs::read(p_out.join("comparisons.csv")).unwrap(),
        std::fs::read(p2_out.join("comparisons.csv")).unwrap()
    );
    let (pl3, pu3, _) = go("percentile", "4", "p3");
    eprintln!("seed 3: [{pl:.4}, {pu:.4}], seed 4: [{pl3:.4}, {pu3:.4}]");
}

#[test]
fn average_row_uses_joint_resamples() {
    // Pair 1 gains exactly the points pair 2 loses: jointly resampled, the
    // average Δ is 0 in every resample; averaging the two rows' own
    // intervals would give about ±1.9 points.
    let dir = tempfile::tempdir().unwrap();
    let n = 1000;
    let idx: Vec<usize> = (0..n).collect();
    let (x, y) = (dir.path().join("x"), dir.path().join("y"));
    write_eval(&x, &idx, &[("clean_correct", ones(n, 100))], "fp");
    write_eval(&y, &idx, &[("clean_correct", ones(n, 0))], "fp");
    let out = dir.path().join("out");
    let printed = run_ok(&[
        "--baseline",
        s(&y),
        "--treatment",
        s(&x),
        "--label",
        "gain",
        "--baseline",
        s(&x),
        "--treatment",
        s(&y),
        "--label",
        "loss",
        "--out",
        s(&out),
    ]);
    let rows = read_rows(&out.join("comparisons.csv"));
    assert_eq!(
        rows.iter().map(|r| r["row"].as_str()).collect::<Vec<_>>(),
        ["gain", "loss", "Avg."]
    );
    assert_eq!(rows[2]["kind"], "average");
    let naive_lo = (f(&rows[0], "clean_lower") + f(&rows[1], "clean_lower")) / 2.0;
    let naive_hi = (f(&rows[0], "clean_upper") + f(&rows[1], "clean_upper")) / 2.0;
    let (lo, hi) = (f(&rows[2], "clean_lower"), f(&rows[2], "clean_upper"));
    eprintln!("joint average [{lo}, {hi}] vs average of intervals [{naive_lo:.4}, {naive_hi:.4}]");
    assert_eq!((lo, hi), (0.0, 0.0));
    assert!(naive_hi - naive_lo > 0.03);
    assert!(printed.contains("| Avg. |"), "{printed}");
    for name in [
        "comparisons.csv",
        "table2.md",
        "table2.tex",
        "table3.md",
        "table3.tex",
        "forest.svg",
    ] {
        assert!(out.join(name).is_file(), "{name} missing");
    }
    assert!(files_in(&out).iter().all(|f| !f.starts_with(".tmp-")));
}

/// A grid point of a sweep: model.json (as `train` writes it) and eval/.
fn grid_point(
    runs: &Path,
    name: &str,
    method: &str,
    awp: bool,
    lambda: f64,
    seed: u64,
    cols: &[(&str, Vec<u8>)],
) -> PathBuf {
    let n = cols[0].1.len();
    let p = runs.join(name);
    std::fs::create_dir_all(&p).unwrap();
    let side = serde_json::json!({
        "format": "taser-checkpoint/1",
        "seed": seed,
        "dataset": "digits",
        "hyperparameters": {
            "config": {"method": method, "awp": awp, "lambda": lambda, "seed": seed, "beta": null, "model": "cnn-small", "dataset": "digits", "ema_tau": null},
            "resolved": {"loss": "kl", "beta": 6.0, "method": method}
        },
        "metrics": {"train_seconds": if lambda > 0.0 { 30.0 } else { 20.0 }}
    });
    // MART's runs (without AWP) timed their steps (lib/train/timing.rs).
    let mut side = side;
    if method == "mart" && !awp {
        side["metrics"]["penalty_step_overhead"] =
            serde_json::json!(if lambda > 0.0 { 1.8 } else { 1.0 });
    }
    std::fs::write(
        p.join("model.json"),
        serde_json::to_string_pretty(&side).unwrap(),
    )
    .unwrap();
    write_eval(
        &p.join("eval"),
        &(0..n).collect::<Vec<_>>(),
        cols,
        "fp-cifar",
    );
    p
}

fn paper_cols(n: usize, clean: f64, rob: f64, seed: u64) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("clean_correct", random01(n, clean, seed)),
        ("aa", random01(n, rob, seed + 1)),
        ("spsa", random01(n, rob + 0.1, seed + 2)),
    ]
}

/// The base methods of TASER Table 2 as (method, AWP).
const PAPER_METHODS: [(&str, bool); 6] = [
    ("standard", false),
    ("pgd-at", false),
    ("trades", false),
    ("mart", false),
    ("trades", true),
    ("mart", true),
];

#[test]
fn table2_spec_rebuilds_the_papers_layout_from_a_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("sweep");
    let n = 400;
    let methods = PAPER_METHODS;
    for (k, (m, awp)) in methods.iter().enumerate() {
        let k = k as u64 * 10;
        grid_point(
            &runs,
            &format!("{m}-awp{awp}-l0"),
            m,
            *awp,
            0.0,
            0,
            &paper_cols(n, 0.7, 0.2, k),
        );
        grid_point(
            &runs,
            &format!("{m}-awp{awp}-l1"),
            m,
            *awp,
            1.0,
            0,
            &paper_cols(n, 0.68, 0.35, k + 5),
        );
    }
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("analysis/table2-end-to-end.toml");
    let out = dir.path().join("t2");
    run_ok(&[
        "--spec",
        s(&spec),
        "--runs",
        s(&runs),
        "--resamples",
        "2000",
        "--out",
        s(&out),
    ]);
    let rows = read_rows(&out.join("comparisons.csv"));
    let labels: Vec<&str> = rows.iter().map(|r| r["row"].as_str()).collect();
    assert_eq!(
        labels,
        [
            "Vanilla",
            "PGD",
            "TRADES",
            "MART",
            "TRADES + AWP",
            "MART + AWP",
            "Avg.",
            "Avg. (excl. vanilla)"
        ]
    );
    // Wall time where the runs timed no steps, and said so; the timed
    // steps' ratio where they did (MART).
    assert!((f(&rows[0], "overhead") - 1.5).abs() < 1e-12);
    assert_eq!(rows[0]["overhead_source"], "wall-time");
    assert!((f(&rows[3], "overhead") - 1.8).abs() < 1e-12);
    assert_eq!(rows[3]["overhead_source"], "timed-steps");
    // The average row's Δ is the mean of the rows' Δ.
    let mean: f64 = rows[..6]
        .iter()
        .map(|r| f(r, "robust_avg_delta"))
        .sum::<f64>()
        / 6.0;
    assert!((f(&rows[6], "robust_avg_delta") - mean).abs() < 1e-6);
    // Robust avg = mean of aa and spsa.
    let r0 = &rows[0];
    assert!(
        (f(r0, "robust_avg_treatment") - (f(r0, "aa_treatment") + f(r0, "spsa_treatment")) / 2.0)
            .abs()
            < 1e-6
    );
    let md = std::fs::read_to_string(out.join("table2.md")).unwrap();
    assert!(
        md.contains("| Avg. (excl. vanilla) |")
            && md.contains("×1.50 (wall)")
            && md.contains("×1.80 |"),
        "{md}"
    );
    assert!(
        md.contains("**+"),
        "robust gains of ~20 points should be bold: {md}"
    );
    let tex = std::fs::read_to_string(out.join("table2.tex")).unwrap();
    assert!(
        tex.contains("\\toprule")
            && tex.contains("\\textbf{")
            && tex.contains("$\\times 1.50$ (wall)")
    );
    let t3 = std::fs::read_to_string(out.join("table3.md")).unwrap();
    assert!(t3.contains("Robust (AA)") && t3.contains("Robust (SPSA)"));
    let svg = std::fs::read_to_string(out.join("forest.svg")).unwrap();
    assert!(svg.contains("MART + AWP") && !svg.contains("NaN"));
    assert!(out.join("delta_vs_lambda.svg").is_file());

    let spec3 = Path::new(env!("CARGO_MANIFEST_DIR")).join("analysis/table3-end-to-end.toml");
    let out3 = dir.path().join("t3");
    run_ok(&[
        "--spec",
        s(&spec3),
        "--runs",
        s(&runs),
        "--resamples",
        "500",
        "--out",
        s(&out3),
    ]);
    let rows3 = read_rows(&out3.join("comparisons.csv"));
    assert_eq!(
        rows3.iter().map(|r| r["row"].as_str()).collect::<Vec<_>>(),
        [
            "Vanilla",
            "PGD",
            "TRADES",
            "TRADES + AWP",
            "MART",
            "MART + AWP"
        ]
    );
}

#[test]
fn several_lambdas_and_seeds_plot_against_lambda_and_cluster_by_seed() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("sweep");
    let n = 300;
    for seed in 0..3u64 {
        for (m, base) in [("standard", 0.2), ("pgd-at", 0.4)] {
            for (j, lambda) in [0.0, 0.01, 0.1, 1.0].into_iter().enumerate() {
                let rob = base + 0.1 * j as f64;
                let cols = paper_cols(
                    n,
                    0.8 - 0.02 * j as f64,
                    rob,
                    100 * seed + 10 * j as u64 + u64::from(m == "pgd-at"),
                );
                grid_point(
                    &runs,
                    &format!("{m}/l{lambda}/s{seed}"),
                    m,
                    false,
                    lambda,
                    seed,
                    &cols,
                );
            }
        }
    }
    let spec = dir.path().join("sweep.toml");
    std::fs::write(
        &spec,
        "title = \"λ sweep\"\n[pairing]\nmatch = [\"method\"]\ncluster_by_seed = true\n[[row]]\nlabel = \"Standard\"\nwhere = { method = \"standard\" }\n[[row]]\nlabel = \"PGD\"\nwhere = { method = \"pgd-at\" }\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    run_ok(&[
        "--spec",
        s(&spec),
        "--runs",
        s(&runs),
        "--resamples",
        "1000",
        "--out",
        s(&out),
    ]);
    let rows = read_rows(&out.join("comparisons.csv"));
    assert_eq!(rows.len(), 7, "2 families × 3 λ + Avg.");
    assert_eq!(rows[0]["row"], "Standard (λ = 0.01)");
    assert!(rows.iter().all(|r| r["cluster_by_seed"] == "true"));
    assert!(rows[..6].iter().all(|r| r["seeds"] == "3"));
    let svg = std::fs::read_to_string(out.join("delta_vs_lambda.svg")).unwrap();
    assert!(svg.contains("vs λ") && svg.contains("opacity=\"0.2\""));
    // Without clustering the between-seed spread is ignored: intervals are
    // no wider on average.
    let out2 = dir.path().join("flat");
    run_ok(&[
        "--spec",
        s(&spec),
        "--runs",
        s(&runs),
        "--resamples",
        "1000",
        "--cluster-by-seed",
        "false",
        "--out",
        s(&out2),
    ]);
    let flat = read_rows(&out2.join("comparisons.csv"));
    let width = |rs: &[BTreeMap<String, String>]| {
        rs.iter()
            .map(|r| f(r, "robust_avg_upper") - f(r, "robust_avg_lower"))
            .sum::<f64>()
    };
    eprintln!(
        "summed robust-avg interval widths: clustered {:.4}, flat {:.4}",
        width(&rows),
        width(&flat)
    );
    assert!(width(&rows) >= width(&flat) * 0.9);
    // The same spec without cluster_by_seed clusters by default: every row
    // has 3 seeds; the caption says so and notes that 3 clusters are few.
    std::fs::write(
        &spec,
        std::fs::read_to_string(&spec)
            .unwrap()
            .replace("cluster_by_seed = true\n", ""),
    )
    .unwrap();
    let out3 = dir.path().join("holm");
    let printed = run_ok(&[
        "--spec",
        s(&spec),
        "--runs",
        s(&runs),
        "--resamples",
        "1000",
        "--multiplicity",
        "holm",
        "--out",
        s(&out3),
    ]);
    let holm = read_rows(&out3.join("comparisons.csv"));
    assert!(holm
        .iter()
        .all(|r| r["cluster_by_seed"] == "true" && r["multiplicity"] == "holm"));
    assert!(printed.contains("only 3 seeds"), "{printed}");
    let table = std::fs::read_to_string(out3.join("table2.md")).unwrap();
    assert!(
        table.contains("clustered by seed: 3 seeds")
            && table.contains("Holm-adjusted over the 6 comparison rows")
    );
    // Adjusted p ≥ p on every comparison row; the average row has none.
    for r in &holm[..6] {
        assert!(
            f(r, "robust_avg_p_adjusted") >= f(r, "robust_avg_p"),
            "{r:?}"
        );
    }
    assert_eq!(holm[6]["robust_avg_p_adjusted"], "");
}

fn assert_refused(args: &[&str], out: &Path, needles: &[&str]) {
    let o = run("bootstrap", args);
    assert!(!o.status.success(), "{args:?} accepted");
    assert_eq!(o.status.code(), Some(2), "bad input exits 2");
    let e = stderr(&o);
    for n in needles {
        assert!(e.contains(n), "`{n}` not in: {e}");
    }
    assert!(
        !out.exists(),
        "--out created although the input was refused"
    );
}

#[test]
fn bad_input_is_refused_with_the_file_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let n = 50;
    let idx: Vec<usize> = (0..n).collect();
    let cols = [
        ("clean_correct", random01(n, 0.7, 1)),
        ("aa", random01(n, 0.3, 2)),
    ];
    let base = dir.path().join("base");
    write_eval(&base, &idx, &cols, "fpA");

    // Different subsets (fingerprints).
    let other = dir.path().join("other");
    write_eval(&other, &idx, &cols, "fpB");
    assert_refused(
        &[
            "--baseline",
            s(&base),
            "--treatment",
            s(&other),
            "--out",
            s(&out),
        ],
        &out,
        &[
            "other/per_sample.csv",
            "different subsets",
            "same subset",
            "Fix:",
        ],
    );
    // Same fingerprint, points in another order.
    let shuffled = dir.path().join("shuffled");
    let mut idx2 = idx.clone();
    idx2.swap(3, 4);
    write_eval(&shuffled, &idx2, &cols, "fpA");
    assert_refused(
        &[
            "--baseline",
            s(&base),
            "--treatment",
            s(&shuffled),
            "--out",
            s(&out),
        ],
        &out,
        &["shuffled/per_sample.csv", "row 4 has index 4", "Fix:"],
    );
    // A missing column.
    let nocol = dir.path().join("nocol");
    write_eval(
        &nocol,
        &idx,
        &[("clean_correct", random01(n, 0.7, 1))],
        "fpA",
    );
    let text = std::fs::read_to_string(nocol.join("per_sample.csv"))
        .unwrap()
        .replace("clean_correct", "clean");
    std::fs::write(nocol.join("per_sample.csv"), text).unwrap();
    assert_refused(
        &[
            "--baseline",
            s(&base),
            "--treatment",
            s(&nocol),
            "--out",
            s(&out),
        ],
        &out,
        &[
            "nocol/per_sample.csv",
            "`clean_correct` is missing",
            "rerun `attack`",
        ],
    );
    // A value that is not 0/1.
    let bad = dir.path().join("bad");
    write_eval(&bad, &idx, &cols, "fpA");
    let text = std::fs::read_to_string(bad.join("per_sample.csv"))
        .unwrap()
        .replacen("\n0,0,", "\n0,0,0.5,", 1);
    std::fs::write(bad.join("per_sample.csv"), text).unwrap();
    let o = run(
        "bootstrap",
        &[
            "--baseline",
            s(&base),
            "--treatment",
            s(&bad),
            "--out",
            s(&out),
        ],
    );
    assert!(
        !o.status.success() && stderr(&o).contains("bad/per_sample.csv"),
        "{}",
        stderr(&o)
    );
    // A missing directory.
    assert_refused(
        &[
            "--baseline",
            s(&base),
            "--treatment",
            s(&dir.path().join("nope")),
            "--out",
            s(&out),
        ],
        &out,
        &["nope/per_sample.csv", "no such file"],
    );
    // Unequal numbers of baselines and treatments.
    assert_refused(
        &[
            "--baseline",
            s(&base),
            "--baseline",
            s(&base),
            "--treatment",
            s(&base),
            "--out",
            s(&out),
        ],
        &out,
        &["2 baselines but 1 treatments"],
    );
    assert_refused(
        &[
            "--baseline",
            s(&base),
            "--treatment",
            s(&base),
            "--level",
            "95",
            "--out",
            s(&out),
        ],
        &out,
        &["--level"],
    );

    // A treatment with no baseline under the spec's rule.
    let runs = dir.path().join("sweep");
    let pc = paper_cols(n, 0.7, 0.3, 9);
    grid_point(&runs, "std-l0", "standard", false, 0.0, 0, &pc);
    grid_point(&runs, "std-l1", "standard", false, 1.0, 0, &pc);
    let orphan = grid_point(&runs, "trades-l1", "trades", false, 1.0, 0, &pc);
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("analysis/table2-end-to-end.toml");
    assert_refused(
        &["--spec", s(&spec), "--runs", s(&runs), "--out", s(&out)],
        &out,
        &[s(&orphan), "no baseline", "method=trades", "seed=0", "Fix:"],
    );
    // A row of the spec that matches nothing.
    std::fs::remove_dir_all(&orphan).unwrap();
    assert_refused(
        &["--spec", s(&spec), "--runs", s(&runs), "--out", s(&out)],
        &out,
        &[
            "table2-end-to-end.toml",
            "row `PGD`",
            "matches no baseline/treatment pair",
        ],
    );
    // A spec with a typo.
    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "[pairing]\nmatchh = [\"method\"]\n").unwrap();
    assert_refused(
        &["--spec", s(&typo), "--runs", s(&runs), "--out", s(&out)],
        &out,
        &["typo.toml", "pairing.matchh"],
    );
}

#[test]
fn exit_codes_follow_the_policy() {
    let help = stdout(&run("bootstrap", &["--help"]));
    assert!(
        help.contains("Exit codes: 0 ok; 1 a failed computation"),
        "{help}"
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // Bad usage (clap): --out is required.
    let o = run("bootstrap", &["--baseline", "a", "--treatment", "b"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // Bad input exits 2: see `bad_input_is_refused_with_the_file_and_the_fix`.
    // A failed computation: an I/O error reading a sidecar (not UTF-8).
    let n = 20;
    let idx: Vec<usize> = (0..n).collect();
    let cols = [("clean_correct", random01(n, 0.7, 1))];
    let (base, treat) = (dir.path().join("b/eval"), dir.path().join("t/eval"));
    write_eval(&base, &idx, &cols, "fp");
    write_eval(&treat, &idx, &cols, "fp");
    std::fs::write(dir.path().join("t/model.json"), [0xff, 0xfe, 0x00]).unwrap();
    let args = [
        "--baseline",
        s(&base),
        "--treatment",
        s(&treat),
        "--out",
        s(&out),
    ];
    let o = run("bootstrap", &args);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("t/model.json"), "{}", stderr(&o));
    assert!(!out.exists());
    // And 0 once the input is sound.
    std::fs::remove_file(dir.path().join("t/model.json")).unwrap();
    run_ok(&args);
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Runs `bin` with the words of `line`, asserting exit 0.
fn ok_line(bin: &str, line: &str) {
    let o = run_line(bin, line);
    assert!(o.status.success(), "{bin} {line}: {}", stderr(&o));
}

#[test]
fn a_comparison_across_threat_models_is_refused_naming_the_property_and_both_values() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let common = "--device cpu --threads 1";
    ok_line(
        "train",
        &format!("--dataset digits --model mlp --epochs 1 {common} --out {d}/ckpt"),
    );
    let attack = |name: &str, threat: &str| {
        ok_line(
            "attack",
            &format!(
                "--checkpoint {d}/ckpt/model.safetensors --attacks pgd1 --n-eval 40 \
                 --batch-size 40 {threat} {common} --out {d}/{name}"
            ),
        );
        dir.path().join(name)
    };
    let linf_02 = attack("linf-0.2", "--eps 0.2");
    let linf_005 = attack("linf-0.05", "--eps 0.05");
    let l2_02 = attack("l2-0.2", "--norm l2 --eps 0.2");
    let out = dir.path().join("out");
    let pair = |b: &Path, t: &Path| {
        vec![
            "--baseline".to_string(),
            b.display().to_string(),
            "--treatment".to_string(),
            t.display().to_string(),
            "--out".to_string(),
            out.display().to_string(),
        ]
    };
    let eps = pair(&linf_02, &linf_005);
    assert_refused(&as_strs(&eps), &out, &["eps: 0.2 → 0.05", "--eps"]);
    let norm = pair(&linf_02, &l2_02);
    assert_refused(
        &as_strs(&norm),
        &out,
        &["norm: \"linf\" → \"l2\"", "--norm"],
    );
    // Two rows under different threat models cannot form one average row,
    // even when each pair on its own is sound.
    let mut two_rows = pair(&linf_02, &linf_02);
    two_rows.extend(pair(&linf_005, &linf_005)[..4].iter().cloned());
    let needles = ["average row `Avg.`", "eps: 0.2 → 0.05"];
    assert_refused(&as_strs(&two_rows), &out, &needles);
    // The same measurement twice is a sound (null) comparison.
    run_ok(&as_strs(&pair(&linf_005, &linf_005)));
}

/// A grid point of a fine-tune: as [`grid_point`], its sidecar recording
/// the base checkpoint it started from (as `finetune` writes it).
fn finetune_point(
    runs: &Path,
    name: &str,
    method: &str,
    awp: bool,
    lambda: f64,
    cols: &[(&str, Vec<u8>)],
) -> PathBuf {
    let p = grid_point(runs, name, method, awp, lambda, 0, cols);
    let side = p.join("model.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&side).unwrap()).unwrap();
    v["hyperparameters"]["finetuned_from"] = serde_json::json!("base/model.safetensors");
    std::fs::write(&side, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    p
}

#[test]
fn table2_specs_pair_taser_fine_tunes_with_the_base_and_with_the_control() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("sweep");
    let n = 400;
    let methods = PAPER_METHODS;
    // Per method: the base (robust 0.2), the λ = 0 fine-tune (0.3) and the
    // TASER fine-tune (0.5), as the train → finetune → attack chain leaves them.
    for (k, (m, awp)) in methods.iter().enumerate() {
        let k = k as u64 * 10;
        grid_point(
            &runs,
            &format!("{m}{awp}-base"),
            m,
            *awp,
            0.0,
            0,
            &paper_cols(n, 0.7, 0.2, k),
        );
        let control = paper_cols(n, 0.7, 0.3, k + 3);
        finetune_point(&runs, &format!("{m}{awp}-ft0"), m, *awp, 0.0, &control);
        let taser = paper_cols(n, 0.7, 0.5, k + 6);
        finetune_point(&runs, &format!("{m}{awp}-ft1"), m, *awp, 1.0, &taser);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("analysis");
    let (mut deltas, mut treated) = (Vec::new(), Vec::new());
    for spec in ["table2.toml", "table2-control.toml", "table3.toml"] {
        let out = dir.path().join(spec);
        run_ok(&[
            "--spec",
            s(&root.join(spec)),
            "--runs",
            s(&runs),
            "--resamples",
            "200",
            "--out",
            s(&out),
        ]);
        let rows = read_rows(&out.join("comparisons.csv"));
        assert_eq!(rows[0]["row"], "Vanilla", "{spec}");
        assert!(rows.len() >= 6, "{spec}: {rows:?}");
        deltas.push(f(&rows[0], "robust_avg_delta"));
        // Every comparison's treatment is the TASER fine-tune.
        treated.push(f(&rows[0], "robust_avg_treatment"));
    }
    assert!(treated.iter().all(|t| *t == treated[0]), "{treated:?}");
    // vs the base: 0.5 − 0.2; vs the control: 0.5 − 0.3 (± sampling noise).
    assert!((deltas[0] - 0.3).abs() < 0.1, "{deltas:?}");
    assert!((deltas[1] - 0.2).abs() < 0.1, "{deltas:?}");
    assert!(deltas[0] > deltas[1], "{deltas:?}");
    assert_eq!(deltas[0], deltas[2], "Table 3 pairs as Table 2");
}
