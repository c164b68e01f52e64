//! Grid files: the TOML that declares a sweep, and its expansion into jobs.
//!
//! ```toml
//! name = "digits-demo"
//! steps = ["train", "attack"]          # or ["finetune", "attack"], or ["train"]
//!
//! [scores.dsm]                         # score-precompute flags; run once, before
//! dataset = "digits"                   # the jobs whose flags say scores = "@dsm"
//! source = "dsm"
//!
//! [axes]                               # the cartesian product of these lists
//! method = ["standard", "pgd-at"]      # bare keys: flags of the model step
//! taser = [{ lambda = 0 },             # an inline table sets several flags together
//!          { lambda = 0.1, scores = "@dsm", lambda-warmup-steps = 450 }]
//! attack.eps = ["0.1", "0.2"]          # `attack.` addresses the attack step
//!
//! [train]                              # fixed flags of each step
//! epochs = 30
//! [attack]
//! attacks = "aa,pgd20"
//!
//! [[exclude]]                          # points whose parameters all match are dropped
//! method = "standard"
//! lambda = 0.1
//! ```
//!
//! Values become command-line flags: `key = v` gives `--key v`, `true` gives
//! a bare `--key`, `false` leaves it out, an array gives `--key v1 v2`.
//! Errors name the key and the line it is on.
use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use toml_edit::{Document, Item, Key, Table, Value};

/// One step of a job's chain: which binary it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    /// `train`: a model from scratch.
    Train,
    /// `finetune`: a model from a checkpoint (`from = …` in `[finetune]`).
    Finetune,
    /// `attack`: evaluation of the model step's checkpoint.
    Attack,
}

impl Step {
    /// The binary (and grid section) name.
    pub fn name(self) -> &'static str {
        match self {
            Step::Train => "train",
            Step::Finetune => "finetune",
            Step::Attack => "attack",
        }
    }

    fn parse(s: &str) -> Option<Step> {
        match s {
            "train" => Some(Step::Train),
            "finetune" => Some(Step::Finetune),
            "attack" => Some(Step::Attack),
            _ => None,
        }
    }
}

/// A flag value as written in the grid, kept in its canonical text form so
/// that ids, command lines and results.csv agree.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FlagValue {
    /// `--key value`.
    One(String),
    /// `--key v1 v2 …` (e.g. `--adam-betas 0.9 0.99`).
    Many(Vec<String>),
    /// A bare `--key` (TOML `true`).
    Switch,
    /// Left out (TOML `false`), but kept so an axis can turn a switch off.
    Off,
}

impl fmt::Display for FlagValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlagValue::One(s) => write!(f, "{s}"),
            FlagValue::Many(v) => write!(f, "{}", v.join(" ")),
            FlagValue::Switch => write!(f, "true"),
            FlagValue::Off => write!(f, "false"),
        }
    }
}

/// Flags of one binary, sorted by name.
pub type Flags = BTreeMap<String, FlagValue>;

/// A parameter name: the step it addresses and the flag.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Param {
    /// `None`: the model step (train or finetune); `Some(Attack)`: attack.
    pub step: Option<Step>,
    /// Flag name without the leading dashes.
    pub flag: String,
}

impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.step {
            None => write!(f, "{}", self.flag),
            Some(s) => write!(f, "{}.{}", s.name(), self.flag),
        }
    }
}

/// One value of an axis: the parameters it sets.
pub type AxisValue = Vec<(Param, FlagValue)>;

/// An axis: a name and its values.
#[derive(Clone, Debug)]
pub struct Axis {
    /// Name as written (a flag name, or a label for table-valued axes).
    pub name: String,
    /// Values in the order written.
    pub values: Vec<AxisValue>,
}

/// A score-precompute job shared by the grid points that reference it.
#[derive(Clone, Debug)]
pub struct ScoreSpec {
    /// The name after `scores.`; jobs reference it as `"@name"`.
    pub name: String,
    /// score-precompute flags (without --out and --device, which the sweep sets).
    pub flags: Flags,
    /// Stable id from the flags.
    pub id: String,
}

/// A parsed grid file.
#[derive(Clone, Debug)]
pub struct Grid {
    /// The file it was read from.
    pub path: PathBuf,
    /// Name for logs (default: the file stem).
    pub name: String,
    /// The chain every point runs.
    pub steps: Vec<Step>,
    /// Shared score jobs by name.
    pub scores: BTreeMap<String, ScoreSpec>,
    /// The axes in the order written.
    pub axes: Vec<Axis>,
    /// Fixed flags per step.
    pub fixed: BTreeMap<Step, Flags>,
    /// Exclusion patterns: a point matching every entry of one is dropped
    /// (each entry with its line in the file, for error messages).
    pub excludes: Vec<Vec<(Param, FlagValue, usize)>>,
}

/// One grid point: what each step runs with.
#[derive(Clone, Debug)]
pub struct JobSpec {
    /// Position in the plan (the order of the axes' product).
    pub index: usize,
    /// Stable id: a hash of the sorted resolved flags of every step.
    pub id: String,
    /// The axes' parameters of this point (results.csv's parameter columns).
    pub params: BTreeMap<String, String>,
    /// Resolved flags per step (scores still as `@name`).
    pub flags: BTreeMap<Step, Flags>,
    /// Names of the score jobs this point needs first.
    pub needs_scores: Vec<String>,
}

/// Flags the sweep sets itself; a grid that sets them is refused.
const RESERVED: &[&str] = &["out", "device", "checkpoint", "resume", "help", "version"];

/// Where a span starts, as a 1-based line number in `src`.
fn line_of(src: &str, span: Option<std::ops::Range<usize>>) -> usize {
    match span {
        Some(r) => src[..r.start.min(src.len())].matches('\n').count() + 1,
        None => 0,
    }
}

struct Ctx<'a> {
    src: &'a str,
    path: &'a Path,
}

impl Ctx<'_> {
    fn err(&self, key: &str, line: usize, reason: impl fmt::Display) -> Error {
        let at = if line > 0 {
            format!("line {line}, key `{key}`")
        } else {
            format!("key `{key}`")
        };
        Error::CorruptInput {
            path: self.path.to_path_buf(),
            reason: format!("{at}: {reason}"),
            fix: "correct the grid file (format: see `sweep --help` and the README)".into(),
        }
    }

    fn key_line(&self, key: &Key, item: &Item) -> usize {
        let l = line_of(self.src, key.span());
        if l > 0 {
            l
        } else {
            line_of(self.src, item.span())
        }
    }
}

/// Canonical text of a scalar: floats through Rust's shortest round-trip
/// form, so `0.10` and `1e-1` give the same id and command line.
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.value().clone()),
        Value::Integer(i) => Some(i.value().to_string()),
        Value::Float(f) => Some(format!("{}", f.value())),
        _ => None,
    }
}

fn flag_value(ctx: &Ctx, key: &str, line: usize, v: &Value) -> Result<FlagValue> {
    match v {
        Value::Boolean(b) => Ok(if *b.value() {
            FlagValue::Switch
        } else {
            FlagValue::Off
        }),
        Value::Array(a) => {
            let mut out = Vec::new();
            for x in a.iter() {
                out.push(scalar_text(x).ok_or_else(|| {
                    ctx.err(
                        key,
                        line,
                        "array values of a flag must be strings or numbers",
                    )
                })?);
            }
            if out.is_empty() {
                return Err(ctx.err(key, line, "an empty array gives no flag value"));
            }
            Ok(FlagValue::Many(out))
        }
        other => scalar_text(other)
            .map(FlagValue::One)
            .ok_or_else(|| ctx.err(key, line, "expected a string, number, boolean or array")),
    }
}

const RESERVED_WHY: &str =
    "this flag is set by the sweep itself (each job's --out, --device, --checkpoint, --resume)";
const BAD_NAME_WHY: &str = "a flag name is letters, digits, '-' and '_' without leading dashes";

fn valid_flag_name(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with('-')
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Flags of a plain table (`[train]`, `[attack]`, `[scores.NAME]`).
fn flags_of(ctx: &Ctx, prefix: &str, t: &Table) -> Result<Flags> {
    let mut flags = Flags::new();
    for (k, item) in t.iter() {
        let (key, _) = t.get_key_value(k).expect("key from iter");
        let line = ctx.key_line(key, item);
        let full = format!("{prefix}{k}");
        if RESERVED.contains(&k) {
            return Err(ctx.err(&full, line, RESERVED_WHY));
        }
        if !valid_flag_name(k) {
            return Err(ctx.err(&full, line, BAD_NAME_WHY));
        }
        let v = item
            .as_value()
            .ok_or_else(|| ctx.err(&full, line, "expected a value, found a table"))?;
        flags.insert(k.to_string(), flag_value(ctx, &full, line, v)?);
    }
    Ok(flags)
}

/// Splits `attack.eps` style names; bare names address the model step.
/// `shown` is the name errors give (with its section, e.g. `axes.method`).
fn param_of(ctx: &Ctx, name: &str, shown: &str, line: usize) -> Result<Param> {
    let (step, flag) = match name.split_once('.') {
        Some((s, f)) => match Step::parse(s) {
            Some(Step::Attack) => (Some(Step::Attack), f),
            Some(_) => (None, f),
            None => {
                return Err(ctx.err(
                    shown,
                    line,
                    "a dotted name must start with train., finetune. or attack.",
                ))
            }
        },
        None => (None, name),
    };
    if RESERVED.contains(&flag) {
        return Err(ctx.err(shown, line, RESERVED_WHY));
    }
    if !valid_flag_name(flag) {
        return Err(ctx.err(shown, line, BAD_NAME_WHY));
    }
    Ok(Param {
        step,
        flag: flag.to_string(),
    })
}

/// Visits `(dotted name, key, item)` of a table, descending into `attack.`
/// style sub-tables (TOML turns `attack.eps = …` into a nested table).
fn entries(t: &Table) -> Vec<(String, &Key, &Item)> {
    let mut out = Vec::new();
    for (k, item) in t.iter() {
        let (key, _) = t.get_key_value(k).expect("key from iter");
        let sub = match item {
            Item::Table(st) if Step::parse(k).is_some() => Some(st.iter().collect::<Vec<_>>()),
            Item::Value(Value::InlineTable(it)) if Step::parse(k).is_some() => {
                Some(it.iter().map(|(a, _)| (a, &t[k][a])).collect::<Vec<_>>())
            }
            _ => None,
        };
        match sub {
            Some(children) => {
                for (ck, citem) in children {
                    let ckey = match item {
                        Item::Table(st) => st.key(ck),
                        Item::Value(Value::InlineTable(it)) => it.key(ck),
                        _ => None,
                    }
                    .unwrap_or(key);
                    out.push((format!("{k}.{ck}"), ckey, citem));
                }
            }
            None => out.push((k.to_string(), key, item)),
        }
    }
    out
}

fn axis_value(ctx: &Ctx, axis: &str, line: usize, v: &Value) -> Result<AxisValue> {
    match v {
        Value::InlineTable(it) => {
            let mut out = Vec::new();
            for (k, x) in it.iter() {
                let sub: Vec<(String, &Value)> = match (Step::parse(k), x) {
                    (Some(_), Value::InlineTable(inner)) => {
                        inner.iter().map(|(a, y)| (format!("{k}.{a}"), y)).collect()
                    }
                    _ => vec![(k.to_string(), x)],
                };
                for (name, y) in sub {
                    let full = format!("axes.{axis}.{name}");
                    let p = param_of(ctx, &name, &full, line)?;
                    out.push((p, flag_value(ctx, &full, line, y)?));
                }
            }
            if out.is_empty() {
                return Err(ctx.err(&format!("axes.{axis}"), line, "an empty table sets nothing"));
            }
            Ok(out)
        }
        other => {
            let full = format!("axes.{axis}");
            let p = param_of(ctx, axis, &full, line)?;
            Ok(vec![(p, flag_value(ctx, &full, line, other)?)])
        }
    }
}

/// Short stable id: the first 12 hex digits of SHA-256 of `text`.
pub fn short_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

fn canonical(flags: &Flags) -> String {
    flags
        .iter()
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect::<String>()
}

impl Grid {
    /// Reads and checks a grid file.
    pub fn load(path: &Path) -> Result<Grid> {
        let src = std::fs::read_to_string(path).map_err(|e| Error::MissingInput {
            path: path.to_path_buf(),
            reason: e.to_string(),
            fix: "give the path of a grid file (e.g. sweeps/digits-demo.toml)".into(),
        })?;
        Grid::parse(&src, path)
    }

    /// Parses grid text; `path` names it in errors.
    pub fn parse(src: &str, path: &Path) -> Result<Grid> {
        let ctx = Ctx { src, path };
        let doc = Document::parse(src).map_err(|e| {
            let line = line_of(src, e.span());
            Error::CorruptInput {
                path: path.to_path_buf(),
                reason: format!(
                    "line {line}: TOML syntax: {}",
                    e.message().trim().replace('\n', " ")
                ),
                fix: "correct the grid file's TOML syntax".into(),
            }
        })?;
        let root = doc.as_table();
        let mut grid = Grid {
            path: path.to_path_buf(),
            name: path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "sweep".into()),
            steps: vec![Step::Train, Step::Attack],
            scores: BTreeMap::new(),
            axes: Vec::new(),
            fixed: BTreeMap::new(),
            excludes: Vec::new(),
        };
        for (k, item) in root.iter() {
            let (key, _) = root.get_key_value(k).expect("key from iter");
            let line = ctx.key_line(key, item);
            match k {
                "name" => {
                    grid.name = item
                        .as_str()
                        .ok_or_else(|| ctx.err(k, line, "expected a string"))?
                        .to_string();
                }
                "steps" => {
                    let arr = item
                        .as_array()
                        .ok_or_else(|| ctx.err(k, line, "expected an array of step names"))?;
                    let mut steps = Vec::new();
                    for v in arr.iter() {
                        let s = v.as_str().and_then(Step::parse).ok_or_else(|| {
                            ctx.err(k, line, format!("unknown step {v}; the steps are train, finetune, attack"))
                        })?;
                        steps.push(s);
                    }
                    let ok = matches!(
                        steps.as_slice(),
                        [Step::Train] | [Step::Finetune] | [Step::Train, Step::Attack] | [Step::Finetune, Step::Attack]
                    );
                    if !ok {
                        return Err(ctx.err(
                            k,
                            line,
                            "the chain is [\"train\"], [\"finetune\"], [\"train\", \"attack\"] or [\"finetune\", \"attack\"]",
                        ));
                    }
                    grid.steps = steps;
                }
                "scores" => {
                    let t = item
                        .as_table()
                        .ok_or_else(|| ctx.err(k, line, "expected [scores.NAME] tables"))?;
                    for (name, sitem) in t.iter() {
                        let (skey, _) = t.get_key_value(name).expect("key from iter");
                        let sline = ctx.key_line(skey, sitem);
                        let full = format!("scores.{name}");
                        let st = sitem.as_table().ok_or_else(|| {
                            ctx.err(&full, sline, "expected a table of score-precompute flags")
                        })?;
                        let flags = flags_of(&ctx, &format!("{full}."), st)?;
                        if !flags.contains_key("source") {
                            return Err(ctx.err(&full, sline, "missing `source` (score-precompute --source)"));
                        }
                        let id = short_hash(&format!("score-precompute\n{}", canonical(&flags)));
                        grid.scores.insert(
                            name.to_string(),
                            ScoreSpec {
                                name: name.to_string(),
                                flags,
                                id,
                            },
                        );
                    }
                }
                "axes" => {
                    let t = item
                        .as_table()
                        .ok_or_else(|| ctx.err(k, line, "expected an [axes] table"))?;
                    for (name, akey, aitem) in entries(t) {
                        let aline = ctx.key_line(akey, aitem);
                        let full = format!("axes.{name}");
                        let arr = aitem
                            .as_array()
                            .ok_or_else(|| ctx.err(&full, aline, "an axis is an array of values"))?;
                        if arr.is_empty() {
                            return Err(ctx.err(&full, aline, "an axis needs at least one value"));
                        }
                        let mut values = Vec::new();
                        for v in arr.iter() {
                            values.push(axis_value(&ctx, &name, aline, v)?);
                        }
                        grid.axes.push(Axis { name, values });
                    }
                }
                "train" | "finetune" | "attack" => {
                    let t = item
                        .as_table()
                        .ok_or_else(|| ctx.err(k, line, "expected a table of flags"))?;
                    let step = Step::parse(k).expect("matched step name");
                    grid.fixed
                        .insert(step, flags_of(&ctx, &format!("{k}."), t)?);
                }
                "exclude" => {
                    let arr = item
                        .as_array_of_tables()
                        .ok_or_else(|| ctx.err(k, line, "expected [[exclude]] tables"))?;
                    for t in arr.iter() {
                        let mut pattern = Vec::new();
                        for (name, ekey, eitem) in entries(t) {
                            let eline = ctx.key_line(ekey, eitem);
                            let full = format!("exclude.{name}");
                            let p = param_of(&ctx, &name, &full, eline)?;
                            let v = eitem
                                .as_value()
                                .ok_or_else(|| ctx.err(&full, eline, "expected a value"))?;
                            pattern.push((p, flag_value(&ctx, &full, eline, v)?, eline));
                        }
                        if pattern.is_empty() {
                            return Err(ctx.err(
                                k,
                                line_of(src, t.span()),
                                "an empty [[exclude]] would drop every point",
                            ));
                        }
                        grid.excludes.push(pattern);
                    }
                }
                other => {
                    return Err(ctx.err(
                        other,
                        line,
                        "unknown key; a grid has name, steps, [scores.NAME], [axes], [train], [finetune], [attack], [[exclude]]",
                    ))
                }
            }
        }
        grid.check(&ctx, root)?;
        Ok(grid)
    }

    /// Cross-checks: sections match the chain, excluded names exist, score
    /// references resolve.
    fn check(&self, ctx: &Ctx, root: &Table) -> Result<()> {
        let line_of_key = |k: &str| {
            root.get_key_value(k)
                .map(|(key, item)| ctx.key_line(key, item))
                .unwrap_or(0)
        };
        // The line of `name` inside section `section` (falls back to the
        // section's own line).
        let line_in = |section: &str, name: &str| {
            root.get(section)
                .and_then(|i| i.as_table())
                .and_then(|t| {
                    entries(t)
                        .into_iter()
                        .find(|(n, _, _)| n == name)
                        .map(|(_, k, i)| ctx.key_line(k, i))
                })
                .unwrap_or_else(|| line_of_key(section))
        };
        for step in self.fixed.keys() {
            if !self.steps.contains(step) {
                return Err(ctx.err(
                    step.name(),
                    line_of_key(step.name()),
                    format!("[{}] is given but steps does not run it", step.name()),
                ));
            }
        }
        let known: Vec<Param> = self
            .axes
            .iter()
            .flat_map(|a| a.values.iter().flatten().map(|(p, _)| p.clone()))
            .chain(self.fixed.iter().flat_map(|(s, f)| {
                f.keys().map(move |k| Param {
                    step: (*s == Step::Attack).then_some(Step::Attack),
                    flag: k.clone(),
                })
            }))
            .collect();
        for pattern in &self.excludes {
            for (p, _, line) in pattern {
                if !known.contains(p) {
                    return Err(ctx.err(
                        &format!("exclude.{p}"),
                        *line,
                        "names no axis or fixed setting of the grid",
                    ));
                }
            }
        }
        let mut refs = Vec::new();
        for a in &self.axes {
            for v in &a.values {
                for (p, fv) in v {
                    if p.step.is_some() && !self.steps.contains(&Step::Attack) {
                        return Err(ctx.err(
                            &format!("axes.{}", a.name),
                            line_in("axes", &a.name),
                            "addresses the attack step, which steps does not run",
                        ));
                    }
                    refs.push((
                        format!("axes.{}", a.name),
                        line_in("axes", &a.name),
                        fv.clone(),
                    ));
                }
            }
        }
        for (s, f) in &self.fixed {
            for (k, v) in f {
                refs.push((format!("{}.{k}", s.name()), line_in(s.name(), k), v.clone()));
            }
        }
        for (name, line, v) in refs {
            if let FlagValue::One(s) = &v {
                if let Some(r) = s.strip_prefix('@') {
                    if !self.scores.contains_key(r) {
                        return Err(ctx.err(
                            &name,
                            line,
                            format!("refers to score set @{r}, but there is no [scores.{r}]"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The model step of the chain (train or finetune).
    pub fn model_step(&self) -> Step {
        self.steps[0]
    }

    /// Expands the axes into jobs, dropping excluded points. Points that
    /// resolve to the same flags (e.g. two axis values that coincide) are
    /// kept once.
    pub fn jobs(&self) -> Vec<JobSpec> {
        let mut points: Vec<Vec<&AxisValue>> = vec![Vec::new()];
        for axis in &self.axes {
            let mut next = Vec::with_capacity(points.len() * axis.values.len());
            for p in &points {
                for v in &axis.values {
                    let mut q = p.clone();
                    q.push(v);
                    next.push(q);
                }
            }
            points = next;
        }
        let model = self.model_step();
        let mut jobs: Vec<JobSpec> = Vec::new();
        for point in points {
            let mut flags: BTreeMap<Step, Flags> = self
                .steps
                .iter()
                .map(|s| (*s, self.fixed.get(s).cloned().unwrap_or_default()))
                .collect();
            let mut params = BTreeMap::new();
            for (p, v) in point.iter().flat_map(|v| v.iter()) {
                let step = p.step.unwrap_or(model);
                flags
                    .get_mut(&step)
                    .expect("step of the chain")
                    .insert(p.flag.clone(), v.clone());
                params.insert(p.to_string(), v.to_string());
            }
            let value_of = |p: &Param| flags[&p.step.unwrap_or(model)].get(&p.flag);
            if self
                .excludes
                .iter()
                .any(|pat| pat.iter().all(|(p, v, _)| value_of(p) == Some(v)))
            {
                continue;
            }
            let mut needs = Vec::new();
            let mut text = String::new();
            for (s, f) in &flags {
                text.push_str(&format!("[{}]\n", s.name()));
                for (k, v) in f {
                    // A score reference hashes as the score job's id, so a
                    // change of its score-precompute flags gives new jobs.
                    let shown = match v {
                        FlagValue::One(x) if x.starts_with('@') => {
                            let spec = &self.scores[&x[1..]];
                            if !needs.contains(&spec.name) {
                                needs.push(spec.name.clone());
                            }
                            format!("@{}", spec.id)
                        }
                        other => other.to_string(),
                    };
                    text.push_str(&format!("{k}={shown}\n"));
                }
            }
            let id = short_hash(&text);
            if jobs.iter().any(|j| j.id == id) {
                continue;
            }
            jobs.push(JobSpec {
                index: jobs.len(),
                id,
                params,
                flags,
                needs_scores: needs,
            });
        }
        jobs
    }
}

/// Command-line arguments of a flag map, in sorted flag order.
pub fn to_args(flags: &Flags) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in flags {
        match v {
            FlagValue::One(s) => {
                out.push(format!("--{k}"));
                out.push(s.clone());
            }
            FlagValue::Many(vs) => {
                out.push(format!("--{k}"));
                out.extend(vs.iter().cloned());
            }
            FlagValue::Switch => out.push(format!("--{k}")),
            FlagValue::Off => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Grid> {
        Grid::parse(s, Path::new("g.toml"))
    }

    const GRID: &str = r#"
steps = ["train", "attack"]
[scores.dsm]
source = "dsm"
[axes]
method = ["standard", "pgd-at"]
taser = [{ lambda = 0 }, { lambda = 0.1, scores = "@dsm" }]
attack.eps = ["0.1", "0.2"]
[train]
epochs = 1
[attack]
attacks = "pgd20"
[[exclude]]
method = "standard"
attack.eps = "0.2"
"#;

    #[test]
    fn expands_product_minus_exclusions() {
        let g = parse(GRID).unwrap();
        let jobs = g.jobs();
        assert_eq!(jobs.len(), 8 - 2);
        let ids: std::collections::HashSet<_> = jobs.iter().map(|j| j.id.clone()).collect();
        assert_eq!(ids.len(), jobs.len());
        let with_scores = jobs.iter().filter(|j| !j.needs_scores.is_empty()).count();
        assert_eq!(with_scores, 3);
        assert_eq!(
            jobs[0].flags[&Step::Attack]["eps"],
            FlagValue::One("0.1".into())
        );
    }

    #[test]
    fn ids_are_stable_under_reordering_and_number_spelling() {
        let a = parse(GRID).unwrap().jobs();
        let b = parse(
            &GRID
                .replace("lambda = 0.1", "lambda = 1e-1")
                .replace("[train]\nepochs = 1", "[train]\nepochs = 1\n"),
        )
        .unwrap()
        .jobs();
        let ia: Vec<_> = a.iter().map(|j| &j.id).collect();
        let ib: Vec<_> = b.iter().map(|j| &j.id).collect();
        assert_eq!(ia, ib);
    }

    #[test]
    fn errors_name_key_and_line() {
        let e = parse("[axes]\nmethod = \"standard\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("axes.method"), "{e}");
        let e = parse("[train]\nepochs = 1\nout = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3") && e.contains("train.out"), "{e}");
        let e = parse("[axes]\nmethod = [\"a\"\n").unwrap_err().to_string();
        assert!(e.contains("line"), "{e}");
        let e = parse("\n\nbogus = 1\n").unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("bogus"), "{e}");
        let e = parse("[train]\nscores = \"@nope\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("@nope"), "{e}");
    }

    #[test]
    fn args_of_flags() {
        let mut f = Flags::new();
        f.insert(
            "adam-betas".into(),
            FlagValue::Many(vec!["0.9".into(), "0.99".into()]),
        );
        f.insert("nesterov".into(), FlagValue::Switch);
        f.insert("awp".into(), FlagValue::Off);
        f.insert("lr".into(), FlagValue::One("0.001".into()));
        assert_eq!(
            to_args(&f),
            ["--adam-betas", "0.9", "0.99", "--lr", "0.001", "--nesterov"]
        );
    }
}
