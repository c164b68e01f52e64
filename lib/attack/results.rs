//! The results an evaluation writes in `--out`, and their one reader
//! (statistics and the sweep read them through here, so the format lives in
//! one place):
//!
//! - `per_sample.csv` ([`crate::layout::PER_SAMPLE`]): one row per
//!   evaluated point, `index,label,clean_correct,<attack>…,worst_case`;
//!   `index` is the point's index into the test split, every other column
//!   but `label` is 1 = correct / robust, 0 = not. `worst_case` is 1 where
//!   the point is correct and every attack left it robust.
//! - `summary.csv` ([`crate::layout::SUMMARY`]): one header and one row:
//!   `checkpoint,dataset,norm,eps,n_eval,subset_fingerprint,seed,
//!   [square_window_range,]device,libtorch_threads,tf32,deterministic,
//!   device_name,compute_capability,driver,cuda,cudnn,torch,clean_acc`
//!   (`square_window_range`, reference or full, only when an attack runs
//!   Square; `tf32`/`deterministic` 1 or 0 as libtorch reported them, then
//!   the device's name — the GPU's or the CPU's model — and versions, see
//!   [`crate::runtime::RuntimeRecord::columns`]), then `acc_<attack>` (and `acc_<attack>_<component>` for
//!   AutoAttack's cumulative components), `acc_worst_case`, then
//!   `seconds_<attack>` (and `seconds_<attack>_<component>`). Accuracies
//!   have 6 decimals, seconds 3.
//!
//! Both are written and read through [`crate::csvio`] (atomically; fields
//! trimmed on reading).
use super::state::{accuracy, AttackResult, EvalIdentity};
use super::Norm;
use crate::csvio::{read_table, write_table, Fixes};
use crate::error::{Error, Result};
use crate::layout::EvalRun;
use crate::runtime::RuntimeRecord;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// summary.csv: Square's window-offset range (`reference` or `full`), present
/// when an attack ran Square.
pub const SQUARE_WINDOW_RANGE: &str = "square_window_range";
/// per_sample.csv: the test-split index of the point.
pub const INDEX: &str = "index";
/// per_sample.csv: the point's class label.
pub const LABEL: &str = "label";
/// per_sample.csv: 1 when the clean prediction is correct.
pub const CLEAN_CORRECT: &str = "clean_correct";
/// per_sample.csv: 1 when correct and robust to every attack.
pub const WORST_CASE: &str = "worst_case";
/// The per_sample.csv columns that are not attacks.
pub const NON_ATTACK: [&str; 4] = [INDEX, LABEL, CLEAN_CORRECT, WORST_CASE];
/// summary.csv: the checkpoint path as given to `attack`.
pub const CHECKPOINT: &str = "checkpoint";
/// summary.csv: number of evaluated points (= per_sample.csv's rows).
pub const N_EVAL: &str = "n_eval";
/// summary.csv: fingerprint of the evaluated subset (equal fingerprints:
/// the same points, so two evaluations can be paired).
pub const SUBSET_FINGERPRINT: &str = "subset_fingerprint";

/// What per_sample.csv holds, for the writer: one entry per evaluated
/// point in every slice.
#[derive(Debug, Clone, Copy)]
pub struct PerSampleRows<'a> {
    /// Test-split index of each point.
    pub index: &'a [usize],
    /// Class label of each point.
    pub label: &'a [i64],
    pub clean_correct: &'a [bool],
    /// Finished attacks, in the order of `--attacks` (one column each).
    pub attacks: &'a [&'a AttackResult],
    pub worst_case: &'a [bool],
}

/// per_sample.csv as read back: the `index` column as text (pairing
/// compares it verbatim), the 0/1 columns as flags. `label` is not read.
#[derive(Debug, Clone, PartialEq)]
pub struct PerSampleTable {
    /// The file it was read from (named in errors).
    pub path: PathBuf,
    pub index: Vec<String>,
    pub clean_correct: Vec<bool>,
    /// Attack columns in file order: name and flags.
    pub attacks: Vec<(String, Vec<bool>)>,
    /// `None` when the file has no worst_case column.
    pub worst_case: Option<Vec<bool>>,
}

/// summary.csv as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryRow {
    /// The file it was read from.
    pub path: PathBuf,
    /// Column → value of its one data row.
    pub values: BTreeMap<String, String>,
    /// The [`SUBSET_FINGERPRINT`] column (never empty).
    pub subset_fingerprint: String,
}

/// Writes per_sample.csv to `path` (see the module documentation).
///
/// Errors: [`Error::OutputFailed`] / [`Error::Io`] when it cannot be written.
pub fn write_per_sample(path: &Path, rows: &PerSampleRows<'_>) -> Result<()> {
    let mut header: Vec<String> = vec![INDEX.into(), LABEL.into(), CLEAN_CORRECT.into()];
    header.extend(rows.attacks.iter().map(|r| r.name.clone()));
    header.push(WORST_CASE.into());
    let b = |v: bool| if v { "1" } else { "0" }.to_string();
    let lines: Vec<Vec<String>> = (0..rows.index.len())
        .map(|i| {
            let mut row = vec![
                rows.index[i].to_string(),
                rows.label[i].to_string(),
                b(rows.clean_correct[i]),
            ];
            row.extend(rows.attacks.iter().map(|r| b(r.robust[i])));
            row.push(b(rows.worst_case[i]));
            row
        })
        .collect();
    write_table(path, &header, &lines)
}

/// Writes summary.csv to `path` (see the module documentation): the
/// evaluation's `identity`, the `checkpoint` path as given, the `device`
/// name, what it ran on (`record`: numerical mode and device), and the accuracies of `clean_correct`, of each of `attacks` (in
/// the order of `--attacks`) and of `worst_case`, with their seconds.
///
/// Errors: [`Error::OutputFailed`] / [`Error::Io`] when it cannot be written.
pub fn write_summary(
    path: &Path,
    identity: &EvalIdentity,
    checkpoint: &Path,
    device: &str,
    record: &RuntimeRecord,
    rows: &PerSampleRows<'_>,
) -> Result<()> {
    let norm = match identity.norm {
        Norm::Linf => "linf",
        Norm::L2 => "l2",
    };
    let mut columns: Vec<(String, String)> = vec![
        (CHECKPOINT.into(), checkpoint.display().to_string()),
        ("dataset".into(), identity.dataset.clone()),
        ("norm".into(), norm.into()),
        ("eps".into(), format!("{}", identity.eps)),
        (N_EVAL.into(), identity.n_points.to_string()),
        (
            SUBSET_FINGERPRINT.into(),
            identity.subset_fingerprint.clone(),
        ),
        ("seed".into(), identity.seed.to_string()),
    ];
    if let Some(range) = identity.square_window_range {
        columns.push((SQUARE_WINDOW_RANGE.into(), range.to_string()));
    }
    columns.extend([
        ("device".into(), device.into()),
        (
            "libtorch_threads".into(),
            tch::get_num_threads().to_string(),
        ),
    ]);
    columns.extend(
        record
            .columns()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v)),
    );
    columns.extend([(
        "clean_acc".into(),
        format!("{:.6}", accuracy(rows.clean_correct)),
    )]);
    let each = |r: &AttackResult, kind: &str, value: &dyn Fn(&AttackResult) -> String| {
        let mut out = vec![(format!("{kind}_{}", r.name), value(r))];
        for c in &r.components {
            out.push((format!("{kind}_{}_{}", r.name, c.name), value(c)));
        }
        out
    };
    for r in rows.attacks {
        columns.extend(each(r, "acc", &|r| format!("{:.6}", accuracy(&r.robust))));
    }
    columns.push((
        "acc_worst_case".into(),
        format!("{:.6}", accuracy(rows.worst_case)),
    ));
    for r in rows.attacks {
        columns.extend(each(r, "seconds", &|r| format!("{:.3}", r.seconds)));
    }
    let (header, row): (Vec<String>, Vec<String>) = columns.into_iter().unzip();
    write_table(path, &header, &[row])
}

/// The fix for a results file that is not what `attack` writes.
const RERUN: &str = "rerun `attack` on this checkpoint with --out pointing at this directory";

fn corrupt(path: &Path, reason: impl Into<String>) -> Error {
    Error::CorruptInput {
        path: path.to_path_buf(),
        reason: reason.into(),
        fix: RERUN.into(),
    }
}

/// Reads a results CSV: its header and rows, every field trimmed.
fn read_csv(path: &Path) -> Result<(Vec<String>, Vec<Vec<String>>)> {
    let fixes = Fixes {
        missing: "give a directory written by `attack` (it holds per_sample.csv and summary.csv)",
        corrupt: RERUN,
    };
    let table = read_table(path, fixes)?;
    Ok((table.header, table.rows))
}

/// Reads per_sample.csv at `path`. It needs the `index` and
/// `clean_correct` columns and at least one row; `index` must be unique
/// and every column but `index` and `label` 0 or 1.
///
/// Errors: [`Error::MissingInput`] when the file is absent;
/// [`Error::CorruptInput`] naming the column or line otherwise.
pub fn read_per_sample(path: &Path) -> Result<PerSampleTable> {
    let (headers, rows) = read_csv(path)?;
    for need in [INDEX, CLEAN_CORRECT] {
        if !headers.iter().any(|h| h == need) {
            return Err(corrupt(
                path,
                format!("column `{need}` is missing (header: {})", headers.join(",")),
            ));
        }
    }
    if rows.is_empty() {
        return Err(corrupt(path, "no data rows"));
    }
    let col = |name: &str| headers.iter().position(|h| h == name);
    let index: Vec<String> = rows
        .iter()
        .map(|r| r[col(INDEX).unwrap()].clone())
        .collect();
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = index.iter().find(|i| !seen.insert(i.as_str())) {
        return Err(corrupt(path, format!("index {dup} appears twice")));
    }
    let flags = |c: usize| -> Result<Vec<bool>> {
        rows.iter()
            .enumerate()
            .map(|(line, r)| match r[c].as_str() {
                "0" => Ok(false),
                "1" => Ok(true),
                other => Err(corrupt(
                    path,
                    format!(
                        "line {}: column `{}` is `{other}`, expected 0 or 1",
                        line + 2,
                        headers[c]
                    ),
                )),
            })
            .collect()
    };
    let clean_correct = flags(col(CLEAN_CORRECT).unwrap())?;
    let mut attacks = Vec::new();
    for (c, h) in headers.iter().enumerate() {
        if !NON_ATTACK.contains(&h.as_str()) {
            attacks.push((h.clone(), flags(c)?));
        }
    }
    let worst_case = col(WORST_CASE).map(flags).transpose()?;
    Ok(PerSampleTable {
        path: path.to_path_buf(),
        index,
        clean_correct,
        attacks,
        worst_case,
    })
}

/// Reads summary.csv at `path`: exactly one data row with a non-empty
/// `subset_fingerprint`.
///
/// Errors: [`Error::MissingInput`] when the file is absent;
/// [`Error::CorruptInput`] otherwise.
pub fn read_summary(path: &Path) -> Result<SummaryRow> {
    let (header, rows) = read_csv(path)?;
    if rows.len() != 1 {
        return Err(corrupt(
            path,
            format!("expected one data row, found {}", rows.len()),
        ));
    }
    let values: BTreeMap<String, String> = header.into_iter().zip(rows[0].clone()).collect();
    let subset_fingerprint = values
        .get(SUBSET_FINGERPRINT)
        .filter(|f| !f.is_empty())
        .cloned()
        .ok_or_else(|| {
            corrupt(
                path,
                format!("column `{SUBSET_FINGERPRINT}` is missing or empty"),
            )
        })?;
    Ok(SummaryRow {
        path: path.to_path_buf(),
        values,
        subset_fingerprint,
    })
}

/// Reads both results of the evaluation folder `run`, and checks that the
/// summary's `n_eval` (when present) counts per_sample.csv's rows.
///
/// Errors: those of [`read_per_sample`] and [`read_summary`];
/// [`Error::CorruptInput`] when the counts disagree.
pub fn read_results(run: &EvalRun) -> Result<(PerSampleTable, SummaryRow)> {
    let per_sample = read_per_sample(&run.per_sample())?;
    let summary = read_summary(&run.summary())?;
    if let Some(n) = summary
        .values
        .get(N_EVAL)
        .and_then(|s| s.parse::<usize>().ok())
    {
        if n != per_sample.index.len() {
            return Err(corrupt(
                &per_sample.path,
                format!(
                    "{} rows but {} says {N_EVAL} = {n}",
                    per_sample.index.len(),
                    crate::layout::SUMMARY
                ),
            ));
        }
    }
    Ok((per_sample, summary))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(name: &str, robust: &[bool]) -> AttackResult {
        AttackResult {
            name: name.into(),
            robust: robust.to_vec(),
            seconds: 2.0,
            components: vec![],
        }
    }

    #[test]
    fn per_sample_and_summary_read_back_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let run = EvalRun::at(dir.path());
        let (t, f) = (true, false);
        let (pgd, spsa) = (result("pgd20", &[t, f, f]), result("spsa", &[t, t, f]));
        let rows = PerSampleRows {
            index: &[4, 17, 230],
            label: &[3, 0, 9],
            clean_correct: &[t, t, f],
            attacks: &[&pgd, &spsa],
            worst_case: &[t, f, f],
        };
        write_per_sample(&run.per_sample(), &rows).unwrap();
        let identity = EvalIdentity {
            checkpoint_sha256: "00".into(),
            dataset: "digits".into(),
            norm: Norm::Linf,
            eps: 0.25,
            attacks: vec!["pgd20".into(), "spsa".into()],
            seed: 0,
            subset_fingerprint: "c0458f01bb219926".into(),
            n_points: 3,
            batch_size: 2,
            square_window_range: None,
            model: None,
        };
        write_summary(
            &run.summary(),
            &identity,
            Path::new("m.safetensors"),
            "cpu",
            &crate::runtime::RuntimeRecord {
                numerics: Some(crate::device::numerics::read_back()),
                ..Default::default()
            },
            &rows,
        )
        .unwrap();
        let text = std::fs::read_to_string(run.per_sample()).unwrap();
        assert_eq!(
            text,
            "index,label,clean_correct,pgd20,spsa,worst_case\n\
             4,3,1,1,1,1\n17,0,1,0,1,0\n230,9,0,0,0,0\n"
        );
        let (table, summary) = read_results(&run).unwrap();
        assert_eq!(table.index, ["4", "17", "230"]);
        assert_eq!(table.clean_correct, rows.clean_correct);
        assert_eq!(
            table.attacks,
            vec![
                ("pgd20".to_string(), pgd.robust.clone()),
                ("spsa".to_string(), spsa.robust.clone())
            ]
        );
        assert_eq!(table.worst_case.as_deref(), Some(rows.worst_case));
        assert_eq!(summary.subset_fingerprint, "c0458f01bb219926");
        assert_eq!(summary.values["acc_spsa"], "0.666667");
        assert_eq!(summary.values["seconds_pgd20"], "2.000");
        assert_eq!(summary.values[N_EVAL], "3");
        assert_eq!(summary.values["eps"], "0.25");
        assert_eq!(summary.values["tf32"], "0");
        assert!(summary.values.contains_key("torch"));
    }

    #[test]
    fn a_row_count_other_than_n_eval_and_a_non_flag_value_are_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let run = EvalRun::at(dir.path());
        std::fs::write(run.per_sample(), "index,clean_correct\n1,1\n2,0\n").unwrap();
        std::fs::write(run.summary(), "n_eval,subset_fingerprint\n3,ab\n").unwrap();
        let err = read_results(&run).unwrap_err().to_string();
        assert!(
            err.contains("2 rows but summary.csv says n_eval = 3"),
            "{err}"
        );
        std::fs::write(run.per_sample(), "index,clean_correct,aa\n1,1,1\n2,0,x\n").unwrap();
        let err = read_per_sample(&run.per_sample()).unwrap_err().to_string();
        assert!(err.contains("line 3: column `aa` is `x`"), "{err}");
    }
}
