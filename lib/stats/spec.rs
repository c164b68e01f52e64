//! Comparison specs (`analysis/*.toml` or `.json`): how to pair the grid
//! points of a sweep directory by rule, which rows and average rows the
//! tables have, and where each grid point keeps its evaluation.
//!
//! ```toml
//! title = "Table 2"
//! [layout]
//! eval_dir = "eval"        # <runs>/<point>/eval/per_sample.csv
//! sidecar = "model.json"   # <runs>/<point>/model.json
//! [pairing]
//! match = ["method", "loss", "beta", "awp"]  # equal within a pair
//! seed = "seed"            # several seeds of one row (averaged, or clustered)
//! vary = "lambda"          # baseline where vary = baseline, treatments elsewhere
//! baseline = 0
//! cluster_by_seed = true  # default: true when every row has the same ≥ 2 seeds
//! [[row]]
//! label = "PGD"
//! where = { method = "pgd-at", awp = false }
//! [[average]]
//! label = "Avg."
//! exclude = []
//! [tables]
//! attacks = ["aa", "spsa"]
//! baseline = "no TASER"     # the arms' names in headers and captions (defaults)
//! treatment = "+TASER"
//! ```
use crate::error::{Error, Result};
use crate::layout;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One table row: a label and the attribute values a treatment must have.
#[derive(Debug, Clone)]
pub struct RowSpec {
    pub label: String,
    pub filter: BTreeMap<String, Value>,
}

/// One average row: the mean over the included rows (all, or `include`),
/// minus `exclude`, computed from joint resamples.
#[derive(Debug, Clone)]
pub struct AverageSpec {
    pub label: String,
    pub include: Option<Vec<String>>,
    pub exclude: Vec<String>,
}

/// A parsed comparison spec.
#[derive(Debug, Clone)]
pub struct Spec {
    pub path: PathBuf,
    pub title: String,
    pub caption: String,
    pub eval_dir: String,
    pub sidecar: String,
    pub match_keys: Vec<String>,
    pub seed_key: String,
    pub vary: String,
    pub baseline: Value,
    pub treatments: Option<Vec<Value>>,
    /// `None` (absent): clustered when every row has the same number ≥ 2
    /// of seeds ([`crate::stats::clustering`]).
    pub cluster_by_seed: Option<bool>,
    pub rows: Vec<RowSpec>,
    /// `None` when the spec has no `average` key: one "Avg." row over all
    /// rows is added when there are several; `average = []` turns it off.
    pub averages: Option<Vec<AverageSpec>>,
    /// Attack columns of the per-attack table (empty: every attack common to
    /// all rows).
    pub attacks: Vec<String>,
    /// What the tables call the baseline and the treatment arm (`[tables]
    /// baseline`, `treatment`; "no TASER" and "+TASER" by default).
    pub arms: ArmLabels,
}

/// The names of a comparison's two arms in table headers and captions.
#[derive(Debug, Clone, PartialEq)]
pub struct ArmLabels {
    pub baseline: String,
    pub treatment: String,
}

impl Default for ArmLabels {
    fn default() -> ArmLabels {
        ArmLabels {
            baseline: "no TASER".into(),
            treatment: "+TASER".into(),
        }
    }
}

/// The key path `at.key` (or `key` at the top).
fn key_at(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_string()
    } else {
        format!("{at}.{key}")
    }
}

/// A TOML value as JSON; `at` names its key in errors. A NaN or infinite
/// float is refused (JSON has none, and it would match nothing or
/// everything).
fn toml_value(v: &toml_edit::Value, at: &str) -> Parsed<Value> {
    use toml_edit::Value as T;
    Ok(match v {
        T::String(s) => Value::String(s.value().clone()),
        T::Integer(i) => Value::from(*i.value()),
        T::Float(f) => match serde_json::Number::from_f64(*f.value()) {
            Some(n) => Value::Number(n),
            None => return Err(format!("`{at}` = {} is not a finite number", f.value())),
        },
        T::Boolean(b) => Value::Bool(*b.value()),
        T::Datetime(d) => Value::String(d.value().to_string()),
        T::Array(a) => Value::Array(
            a.iter()
                .enumerate()
                .map(|(i, x)| toml_value(x, &format!("{at}[{i}]")))
                .collect::<Parsed<_>>()?,
        ),
        T::InlineTable(t) => Value::Object(
            t.iter()
                .map(|(k, v)| Ok((k.to_string(), toml_value(v, &key_at(at, k))?)))
                .collect::<Parsed<_>>()?,
        ),
    })
}

fn toml_table(t: &toml_edit::Table, at: &str) -> Parsed<Value> {
    Ok(Value::Object(
        t.iter()
            .map(|(k, v)| Ok((k.to_string(), toml_item(v, &key_at(at, k))?)))
            .collect::<Parsed<_>>()?,
    ))
}

fn toml_item(item: &toml_edit::Item, at: &str) -> Parsed<Value> {
    use toml_edit::Item;
    Ok(match item {
        Item::None => Value::Null,
        Item::Value(v) => toml_value(v, at)?,
        Item::Table(t) => toml_table(t, at)?,
        Item::ArrayOfTables(a) => Value::Array(
            a.iter()
                .enumerate()
                .map(|(i, t)| toml_table(t, &format!("{at}[{i}]")))
                .collect::<Parsed<_>>()?,
        ),
    })
}

/// Equality of attribute values: numbers by value (1 = 1.0), JSON null
/// equal to a missing key, everything else structurally.
pub fn same_value(a: Option<&Value>, b: Option<&Value>) -> bool {
    let a = a.unwrap_or(&Value::Null);
    let b = b.unwrap_or(&Value::Null);
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-12 * x.abs().max(y.abs()).max(1.0),
        _ => a == b,
    }
}

/// Short text of a value for labels and messages.
pub fn show(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "none".into(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}

type Parsed<T> = std::result::Result<T, String>;
type Table = serde_json::Map<String, Value>;

/// The table `name` of the spec (empty when absent), refusing keys not in
/// `keys`.
fn table(obj: &Table, name: &str, keys: &[&str]) -> Parsed<Table> {
    match obj.get(name) {
        None => Ok(Default::default()),
        Some(Value::Object(m)) => {
            if let Some(k) = m.keys().find(|k| !keys.contains(&k.as_str())) {
                return Err(format!(
                    "unknown key `{name}.{k}` (known: {})",
                    keys.join(", ")
                ));
            }
            Ok(m.clone())
        }
        Some(_) => Err(format!("`{name}` must be a table")),
    }
}

/// The string `k` of a table, `default` when absent.
fn string(m: &Table, k: &str, default: &str) -> Parsed<String> {
    match m.get(k) {
        None => Ok(default.to_string()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("`{k}` must be a string")),
    }
}

/// A list of strings (empty when absent); `what` names it in errors.
fn strings(v: Option<&Value>, what: &str) -> Parsed<Vec<String>> {
    match v {
        None => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or(format!("`{what}` must list strings"))
            })
            .collect(),
        Some(_) => Err(format!("`{what}` must be a list of strings")),
    }
}

/// The `[[row]]` entries: `label` and an optional `where` table.
fn parse_rows(obj: &Table) -> Parsed<Vec<RowSpec>> {
    let mut rows = Vec::new();
    for (i, r) in obj
        .get("row")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        if let Some(k) = r
            .as_object()
            .and_then(|o| o.keys().find(|k| !["label", "where"].contains(&k.as_str())))
        {
            return Err(format!(
                "row {}: unknown key `{k}` (known: label, where)",
                i + 1
            ));
        }
        let label = r
            .get("label")
            .and_then(Value::as_str)
            .ok_or(format!("row {} needs a `label`", i + 1))?
            .to_string();
        let filter = match r.get("where") {
            None => BTreeMap::new(),
            Some(Value::Object(m)) => m.clone().into_iter().collect(),
            Some(_) => return Err(format!("row `{label}`: `where` must be a table")),
        };
        rows.push(RowSpec { label, filter });
    }
    Ok(rows)
}

/// The `[[average]]` entries; `None` when the spec has no `average` key.
fn parse_averages(obj: &Table) -> Parsed<Option<Vec<AverageSpec>>> {
    let list = match obj.get("average") {
        None => return Ok(None),
        Some(Value::Array(a)) => a,
        Some(_) => return Err("`average` must be a list of tables ([[average]])".into()),
    };
    let mut averages = Vec::new();
    for a in list {
        let label = a
            .get("label")
            .and_then(Value::as_str)
            .ok_or("every [[average]] needs a `label`")?
            .to_string();
        let include = match a.get("include") {
            None => None,
            v => Some(strings(v, "average.include")?),
        };
        averages.push(AverageSpec {
            label,
            include,
            exclude: strings(a.get("exclude"), "average.exclude")?,
        });
    }
    Ok(Some(averages))
}

impl Spec {
    /// Reads a spec from TOML (any extension but `.json`) or JSON.
    ///
    /// Errors: [`Error::MissingInput`] when it cannot be read;
    /// [`Error::CorruptInput`] as [`Spec::parse`].
    pub fn load(path: &Path) -> Result<Spec> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::MissingInput {
            path: path.to_path_buf(),
            reason: e.to_string(),
            fix: "give a comparison spec such as analysis/table2.toml".into(),
        })?;
        Spec::parse(path, &text)
    }

    /// Parses the text of the spec at `path` (JSON when `path` ends in
    /// `.json`, else TOML).
    ///
    /// Errors: [`Error::CorruptInput`] for text that is not TOML/JSON, an
    /// unknown key, or a value of the wrong type.
    pub fn parse(path: &Path, text: &str) -> Result<Spec> {
        let bad = |reason: String| Error::CorruptInput {
            path: path.to_path_buf(),
            reason,
            fix: "see analysis/table2.toml for the format".into(),
        };
        let root = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str::<Value>(text).map_err(|e| bad(format!("not JSON: {e}")))?
        } else {
            let doc = text
                .parse::<toml_edit::DocumentMut>()
                .map_err(|e| bad(format!("not TOML: {e}")))?;
            toml_item(doc.as_item(), "").map_err(bad)?
        };
        Spec::from_value(path, &root).map_err(bad)
    }

    fn from_value(path: &Path, root: &Value) -> Parsed<Spec> {
        let obj = root.as_object().ok_or("the spec must be a table")?;
        let allowed = [
            "title", "caption", "layout", "pairing", "row", "average", "tables",
        ];
        if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(format!("unknown key `{k}` (known: {})", allowed.join(", ")));
        }
        let layout_table = table(obj, "layout", &["eval_dir", "sidecar"])?;
        let pairing = table(
            obj,
            "pairing",
            &[
                "match",
                "seed",
                "vary",
                "baseline",
                "treatments",
                "cluster_by_seed",
            ],
        )?;
        let tables = table(obj, "tables", &["attacks", "baseline", "treatment"])?;
        let defaults = ArmLabels::default();
        let rows = parse_rows(obj)?;
        let averages = parse_averages(obj)?;
        let treatments = match pairing.get("treatments") {
            None => None,
            Some(Value::Array(a)) => Some(a.clone()),
            Some(_) => return Err("`pairing.treatments` must be a list".into()),
        };
        let match_keys = strings(pairing.get("match"), "pairing.match")?;
        Ok(Spec {
            path: path.to_path_buf(),
            title: string(obj, "title", "Comparison")?,
            caption: string(obj, "caption", "")?,
            eval_dir: string(&layout_table, "eval_dir", layout::EVAL_DIR)?,
            sidecar: string(&layout_table, "sidecar", layout::MODEL_SIDECAR)?,
            match_keys,
            seed_key: string(&pairing, "seed", "seed")?,
            vary: string(&pairing, "vary", "lambda")?,
            baseline: pairing.get("baseline").cloned().unwrap_or(Value::from(0)),
            treatments,
            cluster_by_seed: pairing
                .get("cluster_by_seed")
                .map(|v| {
                    v.as_bool()
                        .ok_or("`pairing.cluster_by_seed` must be true or false")
                })
                .transpose()?,
            rows,
            averages,
            attacks: strings(tables.get("attacks"), "tables.attacks")?,
            arms: ArmLabels {
                baseline: string(&tables, "baseline", &defaults.baseline)?,
                treatment: string(&tables, "treatment", &defaults.treatment)?,
            },
        })
    }
}

/// Grid points of a sweep directory: every folder at most four levels deep
/// that holds `<eval_dir>/per_sample.csv`, sorted by path.
pub fn grid_points(runs: &Path, eval_dir: &str) -> Result<Vec<PathBuf>> {
    if !runs.is_dir() {
        return Err(Error::MissingInput {
            path: runs.to_path_buf(),
            reason: "not a directory".into(),
            fix: "give --runs the sweep's output directory (one subdirectory per grid point)"
                .into(),
        });
    }
    let mut found = Vec::new();
    let mut stack = vec![(runs.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        if dir.join(eval_dir).join(layout::PER_SAMPLE).is_file() {
            found.push(dir.clone());
        }
        if depth >= 4 {
            continue;
        }
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() && p.file_name() != Some(std::ffi::OsStr::new(eval_dir)) {
                stack.push((p, depth + 1));
            }
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_finite_number_in_a_spec_is_refused_naming_its_key_and_value() {
        let path = Path::new("cmp.toml");
        let spec = Spec::parse(path, "[pairing]\nbaseline = 0.0\n").unwrap();
        assert_eq!(spec.baseline, serde_json::json!(0.0));
        for (text, want) in [
            ("[pairing]\nbaseline = nan\n", "`pairing.baseline` = NaN"),
            (
                "[pairing]\ntreatments = [0.1, inf]\n",
                "`pairing.treatments[1]` = inf",
            ),
            (
                "[[row]]\nlabel = \"PGD\"\nwhere = { lambda = -inf }\n",
                "`row[0].where.lambda` = -inf",
            ),
        ] {
            let err = Spec::parse(path, text).unwrap_err().to_string();
            assert!(
                err.contains(want)
                    && err.contains("cmp.toml")
                    && err.contains("not a finite number"),
                "{want}: {err}"
            );
        }
    }
}
