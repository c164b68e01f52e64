//! Tables of a [`Report`]: `comparisons.csv` (one row per comparison and
//! average row, every metric's baseline, treatment, Δ and interval as
//! fractions), and the TASER paper's Table 2 (clean and robust avg with Δ
//! and interval, overhead) and Table 3 (per attack) as Markdown and LaTeX,
//! in percentage points.
use super::metrics::{AUTOATTACK, CLEAN, ROBUST_AVG, SPSA, WORST_CASE};
use super::{Multiplicity, Overhead, Report, RowResult};
use crate::csvio::write_table;
use crate::error::Result;
use crate::fsutil::write_text;
use crate::layout;
use std::fmt::Write;
use std::path::{Path, PathBuf};

fn pp(v: f64) -> String {
    format!("{:.2}", 100.0 * v)
}

fn signed_pp(v: f64) -> String {
    // "-0.00" reads oddly in a table of deltas.
    let s = format!("{:+.2}", 100.0 * v);
    if s == "-0.00" {
        "+0.00".into()
    } else {
        s
    }
}

/// Display name of a metric column.
pub fn metric_name(m: &str) -> String {
    match m {
        CLEAN => "Clean".into(),
        ROBUST_AVG => "Robust avg".into(),
        AUTOATTACK => "Robust (AA)".into(),
        SPSA => "Robust (SPSA)".into(),
        WORST_CASE => "Worst case".into(),
        other => format!("Robust ({other})"),
    }
}

/// Whether a Δ cell is bold (TASER Table 2's rule): robust metrics when Δ
/// is significant (the interval excludes 0, or the Holm-adjusted p is below
/// 1 − level), clean accuracy when it is not.
pub fn is_bold(metric: &str, row: &RowResult) -> bool {
    row.metrics
        .get(metric)
        .is_some_and(|r| r.significant != (metric == CLEAN))
}

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Markdown,
    Latex,
}

fn latex_escape(s: &str) -> String {
    let mut o = String::new();
    for c in s.chars() {
        match c {
            '&' | '%' | '$' | '#' | '_' | '{' | '}' => {
                o.push('\\');
                o.push(c);
            }
            '~' => o.push_str("\\textasciitilde{}"),
            '^' => o.push_str("\\textasciicircum{}"),
            '\\' => o.push_str("\\textbackslash{}"),
            'λ' => o.push_str("$\\lambda$"),
            'β' => o.push_str("$\\beta$"),
            'Δ' => o.push_str("$\\Delta$"),
            '×' => o.push_str("$\\times$"),
            _ => o.push(c),
        }
    }
    o
}

fn delta_cell(row: &RowResult, metric: &str, f: Format) -> String {
    let Some(r) = row.metrics.get(metric) else {
        return "–".into();
    };
    let text = format!(
        "{} [{}, {}]",
        signed_pp(r.delta),
        signed_pp(r.interval.lower),
        signed_pp(r.interval.upper)
    );
    match (is_bold(metric, row), f) {
        (true, Format::Markdown) => format!("**{text}**"),
        (true, Format::Latex) => format!("\\textbf{{{text}}}"),
        _ => text,
    }
}

fn level_cells(row: &RowResult, metric: &str) -> [String; 2] {
    match row.metrics.get(metric) {
        Some(r) => [pp(r.baseline), pp(r.treatment)],
        None => ["–".into(), "–".into()],
    }
}

fn overhead_cell(row: &RowResult, f: Format) -> String {
    let suffix = |o: &Overhead| match o {
        Overhead::WallTime(_) => " (wall)",
        Overhead::TimedSteps(_) => "",
    };
    match (row.overhead, f) {
        (Some(o), Format::Markdown) => format!("×{:.2}{}", o.ratio(), suffix(&o)),
        (Some(o), Format::Latex) => format!("$\\times {:.2}${}", o.ratio(), suffix(&o)),
        (None, _) => "–".into(),
    }
}

/// Table 2's robust column: robust avg (AutoAttack and SPSA) when every
/// row has it, else the worst case over each evaluation's attacks when
/// every row has that (rows evaluated by other attacks, e.g.
/// `apgd-ce,apgd-t`, beside rows evaluated by AutoAttack alone).
fn table2_robust(report: &Report) -> &'static str {
    let every = |m: &str| report.rows.iter().all(|r| r.metrics.contains_key(m));
    if !every(ROBUST_AVG) && every(WORST_CASE) {
        WORST_CASE
    } else {
        ROBUST_AVG
    }
}

/// Header cells and body cells of a table, shared by both formats.
fn cells(report: &Report, per_attack: bool, f: Format) -> (Vec<String>, Vec<Vec<String>>) {
    let mut header = vec!["Method".to_string()];
    let columns: Vec<String> = if per_attack {
        report.attacks.clone()
    } else {
        vec![table2_robust(report).to_string()]
    };
    let (b, t) = (&report.arms.baseline, &report.arms.treatment);
    header.extend([
        format!("Clean: {b}"),
        format!("Clean: {t}"),
        "Clean Δ".into(),
    ]);
    for m in &columns {
        let n = metric_name(m);
        header.push(format!("{n}: {b}"));
        header.push(format!("{n}: {t}"));
        header.push(format!("{n} Δ"));
    }
    header.push("Overhead".into());
    let body = report
        .rows
        .iter()
        .map(|row| {
            let mut c = vec![match f {
                Format::Markdown => row.label.replace('|', "\\|"),
                Format::Latex => latex_escape(&row.label),
            }];
            for m in std::iter::once(CLEAN).chain(columns.iter().map(String::as_str)) {
                c.extend(level_cells(row, m));
                c.push(delta_cell(row, m, f));
            }
            c.push(overhead_cell(row, f));
            c
        })
        .collect();
    (header, body)
}

fn footnote(report: &Report) -> String {
    format!(
        "Accuracies and changes in percentage points on the shared evaluation subset; Δ = {} − {} \
         with {:.0}% paired bootstrap intervals ({}, B = {}, seed = {}, {}). Robust avg = per-point mean of \
         AutoAttack (aa) and SPSA; worst case = correct under every attack run. Bold: robust Δ whose interval excludes 0; clean Δ whose interval includes 0. \
         Average rows resample the same points for every pair at once; {}. Overhead = the training step with \
         its penalty over the same step without it, timed in isolation after training, treatment ÷ baseline \
         (\"(wall)\": the training wall-time ratio, for runs without timed steps).",
        report.arms.treatment,
        report.arms.baseline,
        100.0 * report.level,
        report.interval,
        report.resamples,
        report.seed,
        seeds_phrase(report),
        multiplicity_phrase(report),
    )
}

/// The `--multiplicity` value as written.
fn multiplicity_name(m: Multiplicity) -> &'static str {
    match m {
        Multiplicity::None => "none",
        Multiplicity::Holm => "holm",
    }
}

/// How the bold marks account for the number of rows, for every caption.
fn multiplicity_phrase(report: &Report) -> String {
    let rows = report.rows.iter().filter(|r| !r.average).count();
    match report.multiplicity {
        Multiplicity::None if rows <= 1 => "one comparison row".to_string(),
        Multiplicity::None => format!(
            "no adjustment for the {rows} rows tested: with many rows some bold cells are expected by chance"
        ),
        Multiplicity::Holm => format!(
            "significance Holm-adjusted over the {rows} comparison rows of each column (bold by adjusted p < {:.2})",
            1.0 - report.level
        ),
    }
}

/// How the intervals treat seeds, for every caption.
fn seeds_phrase(report: &Report) -> String {
    let most = report.rows.iter().map(|r| r.seeds).max().unwrap_or(1);
    match (report.cluster_by_seed, most) {
        (true, n) => format!("clustered by seed: {n} seeds, resampled before points"),
        (false, 0 | 1) => "one seed per row".to_string(),
        (false, n) => format!("not clustered by seed (up to {n} seeds per row)"),
    }
}

fn notes(report: &Report) -> Vec<String> {
    let mut v: Vec<String> = report.notes.clone();
    for r in &report.rows {
        for n in &r.notes {
            v.push(format!("{}: {n}", r.label));
        }
    }
    v
}

fn markdown(report: &Report, per_attack: bool) -> String {
    let (header, body) = cells(report, per_attack, Format::Markdown);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "### {}{}\n",
        report.title,
        if per_attack { " — per attack" } else { "" }
    );
    let _ = writeln!(s, "| {} |", header.join(" | "));
    let _ = writeln!(
        s,
        "|{}|",
        header
            .iter()
            .enumerate()
            .map(|(i, _)| if i == 0 { ":---" } else { "---:" })
            .collect::<Vec<_>>()
            .join("|")
    );
    for row in body {
        let _ = writeln!(s, "| {} |", row.join(" | "));
    }
    let _ = writeln!(s, "\n{}", footnote(report));
    if !report.caption.is_empty() {
        let _ = writeln!(s, "\n{}", report.caption);
    }
    for n in notes(report) {
        let _ = writeln!(s, "- {n}");
    }
    s
}

/// Table 2 in Markdown (also what the binary prints).
pub fn table2_markdown(report: &Report) -> String {
    markdown(report, false)
}

fn latex(report: &Report, per_attack: bool) -> String {
    let (header, body) = cells(report, per_attack, Format::Latex);
    let groups = (header.len() - 2) / 3;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "% Written by `bootstrap` (taser {}). Needs \\usepackage{{booktabs}}.",
        crate::VERSION
    );
    let _ = writeln!(s, "\\begin{{table}}[t]\n\\centering\n\\small");
    let _ = writeln!(
        s,
        "\\caption{{{}{} {}}}",
        latex_escape(&report.title),
        if per_attack { " (per attack)." } else { "." },
        latex_escape(&footnote(report))
    );
    let _ = writeln!(s, "\\begin{{tabular}}{{l{}r}}", "rrr".repeat(groups));
    let _ = writeln!(s, "\\toprule");
    let mut top = vec!["".to_string()];
    let mut mid = Vec::new();
    for g in 0..groups {
        let name = header[1 + 3 * g]
            .trim_end_matches(&format!(": {}", report.arms.baseline))
            .to_string();
        top.push(format!(
            "\\multicolumn{{3}}{{c}}{{{}}}",
            latex_escape(&name)
        ));
        mid.push(format!("\\cmidrule(lr){{{}-{}}}", 2 + 3 * g, 4 + 3 * g));
    }
    top.push("".into());
    let _ = writeln!(s, "{} \\\\", top.join(" & "));
    let _ = writeln!(s, "{}", mid.join(" "));
    let mut sub = vec!["Method".to_string()];
    for _ in 0..groups {
        sub.extend([
            latex_escape(&report.arms.baseline),
            latex_escape(&report.arms.treatment),
            format!("$\\Delta$ [{:.0}\\% CI]", 100.0 * report.level),
        ]);
    }
    sub.push("Overhead".into());
    let _ = writeln!(s, "{} \\\\\n\\midrule", sub.join(" & "));
    let mut first_average = true;
    for (row, r) in body.iter().zip(&report.rows) {
        if r.average && first_average {
            let _ = writeln!(s, "\\midrule");
            first_average = false;
        }
        let _ = writeln!(s, "{} \\\\", row.join(" & "));
    }
    let _ = writeln!(s, "\\bottomrule\n\\end{{tabular}}\n\\end{{table}}");
    for n in notes(report) {
        let _ = writeln!(s, "% {}", n.replace('\n', " "));
    }
    s
}

/// comparisons.csv's header and rows.
fn comparisons(report: &Report) -> (Vec<String>, Vec<Vec<String>>) {
    let mut header: Vec<String> = [
        "row",
        "kind",
        "family",
        report.vary.as_str(),
        "seeds",
        "points",
        "overhead",
        "overhead_source",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for m in &report.metrics {
        for part in [
            "baseline",
            "treatment",
            "delta",
            "lower",
            "upper",
            "p",
            "p_adjusted",
        ] {
            header.push(format!("{m}_{part}"));
        }
    }
    header.extend(
        [
            "interval",
            "level",
            "resamples",
            "seed",
            "cluster_by_seed",
            "multiplicity",
            "notes",
        ]
        .map(String::from),
    );
    let mut rows = Vec::with_capacity(report.rows.len());
    let opt = |v: Option<f64>| v.map(|v| format!("{v}")).unwrap_or_default();
    for r in &report.rows {
        let mut rec = vec![
            r.label.clone(),
            if r.average { "average" } else { "pair" }.to_string(),
            r.family.clone(),
            opt(r.x),
            r.seeds.to_string(),
            r.points.to_string(),
            opt(r.overhead.map(|o| o.ratio())),
            r.overhead
                .map(|o| o.source().to_string())
                .unwrap_or_default(),
        ];
        for m in &report.metrics {
            match r.metrics.get(m) {
                Some(x) => {
                    rec.extend(
                        [
                            x.baseline,
                            x.treatment,
                            x.delta,
                            x.interval.lower,
                            x.interval.upper,
                            x.p_value,
                        ]
                        .map(|v| format!("{v:.6}")),
                    );
                    rec.push(opt(x.adjusted_p));
                }
                None => rec.extend(std::iter::repeat_n(String::new(), 7)),
            }
        }
        rec.extend([
            report.interval.to_string(),
            report.level.to_string(),
            report.resamples.to_string(),
            report.seed.to_string(),
            report.cluster_by_seed.to_string(),
            multiplicity_name(report.multiplicity).to_string(),
            r.notes.join("; "),
        ]);
        rows.push(rec);
    }
    (header, rows)
}

/// Writes comparisons.csv, table2.{md,tex} and table3.{md,tex} into `out`,
/// each atomically, and returns their paths.
pub fn write_all(report: &Report, out: &Path) -> Result<Vec<PathBuf>> {
    let csv = out.join(layout::COMPARISONS);
    let (header, rows) = comparisons(report);
    write_table(&csv, &header, &rows)?;
    let files = [
        (layout::TABLE2_MARKDOWN, markdown(report, false)),
        (layout::TABLE2_LATEX, latex(report, false)),
        (layout::TABLE3_MARKDOWN, markdown(report, true)),
        (layout::TABLE3_LATEX, latex(report, true)),
    ];
    let mut written = vec![csv];
    for (name, text) in files {
        let p = out.join(name);
        write_text(&p, &text)?;
        written.push(p);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::bootstrap::{Interval, IntervalKind};
    use crate::stats::MetricResult;

    fn row(label: &str, metrics: &[&str]) -> RowResult {
        let m = MetricResult {
            baseline: 0.5,
            treatment: 0.6,
            delta: 0.1,
            interval: Interval {
                lower: 0.05,
                upper: 0.15,
                note: None,
            },
            p_value: 0.001,
            adjusted_p: None,
            significant: true,
        };
        RowResult {
            label: label.into(),
            average: false,
            family: label.into(),
            x: None,
            seeds: 1,
            points: 200,
            overhead: None,
            metrics: metrics.iter().map(|k| (k.to_string(), m.clone())).collect(),
            notes: Vec::new(),
        }
    }

    fn report(rows: Vec<RowResult>) -> Report {
        Report {
            title: "t".into(),
            caption: String::new(),
            vary: "lambda".into(),
            arms: Default::default(),
            rows,
            metrics: vec![CLEAN.into(), ROBUST_AVG.into(), WORST_CASE.into()],
            attacks: Vec::new(),
            resamples: 100,
            seed: 0,
            level: 0.95,
            interval: IntervalKind::Percentile,
            cluster_by_seed: false,
            multiplicity: Multiplicity::None,
            notes: Vec::new(),
            files: Vec::new(),
        }
    }

    /// Table 2 shows robust avg when every row has it, and the worst case
    /// when some row was evaluated without AutoAttack and SPSA (e.g. by
    /// apgd-ce,apgd-t) but every row has a worst case.
    #[test]
    fn table2_shows_the_worst_case_when_a_row_has_no_robust_avg() {
        let aa = [CLEAN, ROBUST_AVG, WORST_CASE];
        let white_box = [CLEAN, WORST_CASE];
        let both = report(vec![row("a", &aa), row("b", &aa)]);
        assert_eq!(table2_robust(&both), ROBUST_AVG);
        let mixed = report(vec![row("a", &aa), row("b", &white_box)]);
        assert_eq!(table2_robust(&mixed), WORST_CASE);
        let mut mixed = mixed;
        mixed.arms = crate::stats::ArmLabels {
            baseline: "λ = 0".into(),
            treatment: "arm".into(),
        };
        let (header, body) = cells(&mixed, false, Format::Markdown);
        assert!(header.contains(&"Clean: λ = 0".to_string()), "{header:?}");
        assert!(footnote(&mixed).contains("Δ = arm − λ = 0"));
        assert!(header.iter().any(|h| h == "Worst case Δ"), "{header:?}");
        // Every row fills its robust cells (the last cell, Overhead, is "–").
        let filled = |r: &Vec<String>| r[..r.len() - 1].iter().all(|c| c != "–");
        assert!(body.iter().all(filled), "{body:?}");
    }
}
