//! The grid file's TOML: parsing each section into a [`Grid`], and the
//! cross-checks between sections. Every error names the key and its line.
use super::ranks;
use super::{
    canonical, checkpoints, short_hash, Axis, AxisValue, ExcludePattern, FlagValue, Flags, Grid,
    Param, ScoreSpec, Step,
};
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use toml_edit::{Document, Item, Key, Table, Value};

/// Flags the sweep sets itself; a grid that sets them is refused.
const RESERVED: &[&str] = &["out", "device", "checkpoint", "resume", "help", "version"];

/// Where a span starts, as a 1-based line number in `src`.
fn line_of(src: &str, span: Option<std::ops::Range<usize>>) -> usize {
    match span {
        Some(r) => src[..r.start.min(src.len())].matches('\n').count() + 1,
        None => 0,
    }
}

pub(super) struct Ctx<'a> {
    pub(super) src: &'a str,
    pub(super) path: &'a Path,
}

impl Ctx<'_> {
    pub(super) fn err(&self, key: &str, line: usize, reason: impl fmt::Display) -> Error {
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

    pub(super) fn key_line(&self, key: &Key, item: &Item) -> usize {
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

/// Refuses a NaN or infinite float (`nan`, `inf` in TOML): no flag of the
/// suite takes one, and the job would fail only when it runs.
fn check_finite(ctx: &Ctx, key: &str, line: usize, v: &Value) -> Result<()> {
    match v {
        Value::Float(f) if !f.value().is_finite() => {
            Err(ctx.err(key, line, format!("{} is not a finite number", f.value())))
        }
        _ => Ok(()),
    }
}

fn flag_value(ctx: &Ctx, key: &str, line: usize, v: &Value) -> Result<FlagValue> {
    check_finite(ctx, key, line, v)?;
    match v {
        Value::Boolean(b) => Ok(if *b.value() {
            FlagValue::Switch
        } else {
            FlagValue::Off
        }),
        Value::Array(a) => {
            let mut out = Vec::new();
            for x in a.iter() {
                check_finite(ctx, key, line, x)?;
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

const FROM_WHY: &str =
    "in the train → finetune → attack chain the sweep sets finetune's --from to \
     the base model's checkpoint; remove `from`, or use steps = [\"finetune\", \"attack\"]";
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
            Some(step) => (Some(step), f),
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
pub(super) fn entries(t: &Table) -> Vec<(String, &Key, &Item)> {
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

/// One value of axis `axis`. The keys of an inline table address the
/// model step(s), or the step its own `step.` prefix names; on an axis
/// named `step.label` (e.g. `finetune.taser`) they address that step.
fn axis_value(ctx: &Ctx, axis: &str, line: usize, v: &Value) -> Result<AxisValue> {
    let axis_step = axis
        .split_once('.')
        .and_then(|(s, _)| Step::parse(s))
        .map(|s| format!("{}.", s.name()))
        .unwrap_or_default();
    match v {
        Value::InlineTable(it) => {
            let mut out = Vec::new();
            for (k, x) in it.iter() {
                let sub: Vec<(String, &Value)> = match (Step::parse(k), x) {
                    (Some(_), Value::InlineTable(inner)) => {
                        inner.iter().map(|(a, y)| (format!("{k}.{a}"), y)).collect()
                    }
                    (Some(_), _) => vec![(k.to_string(), x)],
                    _ => vec![(format!("{axis_step}{k}"), x)],
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

impl Grid {
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
            checkpoints: Vec::new(),
            ranks_per_job: 1,
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
                "steps" => grid.steps = steps_of(&ctx, k, line, item)?,
                "scores" => grid.scores = scores_of(&ctx, k, line, item)?,
                "axes" => grid.axes = axes_of(&ctx, k, line, item)?,
                "train" | "finetune" | "attack" => {
                    let t = item
                        .as_table()
                        .ok_or_else(|| ctx.err(k, line, "expected a table of flags"))?;
                    let step = Step::parse(k).expect("matched step name");
                    grid.fixed
                        .insert(step, flags_of(&ctx, &format!("{k}."), t)?);
                }
                "exclude" => grid.excludes = excludes_of(&ctx, k, line, item)?,
                "checkpoints" => {
                    grid.checkpoints = checkpoints::parse(item).map_err(|why| ctx.err(k, line, why))?
                }
                "ranks_per_job" => {
                    grid.ranks_per_job = ranks::parse(item).map_err(|why| ctx.err(k, line, why))?
                }
                other => {
                    return Err(ctx.err(
                        other,
                        line,
                        "unknown key; a grid has name, steps, checkpoints, ranks_per_job, [scores.NAME], [axes], [train], [finetune], [attack], [[exclude]]",
                    ))
                }
            }
        }
        grid.normalise_steps();
        grid.check(&ctx, root)?;
        if let Some((key, item)) = root.get_key_value("ranks_per_job") {
            let line = ctx.key_line(key, item);
            ranks::add_data_parallel(&mut grid)
                .map_err(|why| ctx.err("ranks_per_job", line, why))?;
        }
        if let Some((key, item)) = root.get_key_value("checkpoints") {
            let line = ctx.key_line(key, item);
            (grid.check_checkpoints()).map_err(|why| ctx.err("checkpoints", line, why))?;
        }
        super::spelling::check(&grid)?;
        Ok(grid)
    }

    /// Outside the three-step chain `train.KEY` and `finetune.KEY` address
    /// the one model step, as bare keys do.
    fn normalise_steps(&mut self) {
        if self.is_chained() {
            return;
        }
        let params = self
            .axes
            .iter_mut()
            .flat_map(|a| a.values.iter_mut().flatten().map(|(p, _)| p))
            .chain(self.excludes.iter_mut().flatten().map(|(p, _, _)| p));
        for p in params {
            if p.step != Some(Step::Attack) {
                p.step = None;
            }
        }
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
        let chained = self.is_chained();
        let known: Vec<Param> = self
            .axes
            .iter()
            .flat_map(|a| a.values.iter().flatten().map(|(p, _)| p.clone()))
            .chain(self.fixed.iter().flat_map(|(s, f)| {
                f.keys().map(move |k| Param {
                    step: (*s == Step::Attack || chained).then_some(*s),
                    flag: k.clone(),
                })
            }))
            .collect();
        // A bare name and a model step's name match each other (a bare
        // `epochs` in [[exclude]] finds `[train] epochs`).
        let same = |a: &Param, b: &Param| {
            a.flag == b.flag
                && (a.step == b.step
                    || (a.step.is_none() && b.step != Some(Step::Attack))
                    || (b.step.is_none() && a.step != Some(Step::Attack)))
        };
        for pattern in &self.excludes {
            for (p, _, line) in pattern {
                if !known.iter().any(|k| same(k, p)) {
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
                    if let Some(s) = p.step.filter(|s| !self.steps.contains(s)) {
                        return Err(ctx.err(
                            &format!("axes.{}", a.name),
                            line_in("axes", &a.name),
                            format!("addresses the {} step, which steps does not run", s.name()),
                        ));
                    }
                    if chained && p.flag == "from" && p.step != Some(Step::Train) {
                        return Err(ctx.err(
                            &format!("axes.{}", a.name),
                            line_in("axes", &a.name),
                            FROM_WHY,
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
            if chained && *s == Step::Finetune && f.contains_key("from") {
                return Err(ctx.err("finetune.from", line_in("finetune", "from"), FROM_WHY));
            }
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
}

/// `steps = [...]`: one of the five chains.
fn steps_of(ctx: &Ctx, k: &str, line: usize, item: &Item) -> Result<Vec<Step>> {
    let arr = item
        .as_array()
        .ok_or_else(|| ctx.err(k, line, "expected an array of step names"))?;
    let mut steps = Vec::new();
    for v in arr.iter() {
        let s = v.as_str().and_then(Step::parse).ok_or_else(|| {
            ctx.err(
                k,
                line,
                format!("unknown step {v}; the steps are train, finetune, attack"),
            )
        })?;
        steps.push(s);
    }
    let ok = matches!(
        steps.as_slice(),
        [Step::Train]
            | [Step::Finetune]
            | [Step::Train, Step::Attack]
            | [Step::Finetune, Step::Attack]
            | [Step::Train, Step::Finetune, Step::Attack]
    );
    if !ok {
        return Err(ctx.err(
            k,
            line,
            "the chain is [\"train\"], [\"finetune\"], [\"train\", \"attack\"], [\"finetune\", \"attack\"] \
             or [\"train\", \"finetune\", \"attack\"]",
        ));
    }
    Ok(steps)
}

/// `[scores.NAME]` tables: score-precompute jobs with their ids.
fn scores_of(ctx: &Ctx, k: &str, line: usize, item: &Item) -> Result<BTreeMap<String, ScoreSpec>> {
    let t = item
        .as_table()
        .ok_or_else(|| ctx.err(k, line, "expected [scores.NAME] tables"))?;
    let mut scores = BTreeMap::new();
    for (name, sitem) in t.iter() {
        let (skey, _) = t.get_key_value(name).expect("key from iter");
        let sline = ctx.key_line(skey, sitem);
        let full = format!("scores.{name}");
        let st = sitem
            .as_table()
            .ok_or_else(|| ctx.err(&full, sline, "expected a table of score-precompute flags"))?;
        let flags = flags_of(ctx, &format!("{full}."), st)?;
        if !flags.contains_key("source") {
            return Err(ctx.err(&full, sline, "missing `source` (score-precompute --source)"));
        }
        let id = short_hash(&format!("score-precompute\n{}", canonical(&flags)));
        let spec = ScoreSpec {
            name: name.to_string(),
            flags,
            id,
        };
        scores.insert(name.to_string(), spec);
    }
    Ok(scores)
}

/// `[axes]`: each key an array of values, in the order written.
fn axes_of(ctx: &Ctx, k: &str, line: usize, item: &Item) -> Result<Vec<Axis>> {
    let t = item
        .as_table()
        .ok_or_else(|| ctx.err(k, line, "expected an [axes] table"))?;
    let mut axes = Vec::new();
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
            values.push(axis_value(ctx, &name, aline, v)?);
        }
        axes.push(Axis { name, values });
    }
    Ok(axes)
}

/// `[[exclude]]` tables: patterns of parameter values.
fn excludes_of(ctx: &Ctx, k: &str, line: usize, item: &Item) -> Result<Vec<ExcludePattern>> {
    let arr = item
        .as_array_of_tables()
        .ok_or_else(|| ctx.err(k, line, "expected [[exclude]] tables"))?;
    let mut excludes = Vec::new();
    for t in arr.iter() {
        let mut pattern = Vec::new();
        for (name, ekey, eitem) in entries(t) {
            let eline = ctx.key_line(ekey, eitem);
            let full = format!("exclude.{name}");
            let p = param_of(ctx, &name, &full, eline)?;
            let v = eitem
                .as_value()
                .ok_or_else(|| ctx.err(&full, eline, "expected a value"))?;
            pattern.push((p, flag_value(ctx, &full, eline, v)?, eline));
        }
        if pattern.is_empty() {
            return Err(ctx.err(
                k,
                line_of(ctx.src, t.span()),
                "an empty [[exclude]] would drop every point",
            ));
        }
        excludes.push(pattern);
    }
    Ok(excludes)
}
