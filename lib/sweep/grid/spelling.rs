//! One experiment, one spelling: two points of a grid whose flags are equal
//! by value (`"0.2"` and `"0.20"`, `"8/255"` and `"0.03137254901960784"`,
//! `1` and `1.0`) would be two jobs with two ids that run the same thing
//! twice. Such a grid is refused, naming the parameter and both spellings.
//!
//! Refused rather than merged: the spellings reach the command lines and
//! results.csv as written, so merging would keep one of them silently; and
//! job ids keep hashing the values as written, so every grid without such a
//! pair keeps the ids of its existing runs (a resume finds them).
use super::{FlagValue, Grid, JobSpec};
use crate::error::{Error, Result};
use std::collections::BTreeMap;

/// The value a flag's text stands for: a number (`0.20`, `1e-1`, `2`) or a
/// fraction of two numbers (`8/255`) as the shortest text of its f64, any
/// other text as it is.
pub fn value_text(s: &str) -> String {
    let number = |t: &str| t.trim().parse::<f64>().ok().filter(|x| x.is_finite());
    let value = match s.split_once('/') {
        Some((a, b)) => number(a)
            .zip(number(b))
            .filter(|(_, b)| *b != 0.0)
            .map(|(a, b)| a / b),
        None => number(s),
    };
    match value {
        // `-0` and `0` are one value.
        Some(x) => format!("{}", if x == 0.0 { 0.0 } else { x }),
        None => s.to_string(),
    }
}

fn value_of(v: &FlagValue) -> String {
    match v {
        FlagValue::One(s) => value_text(s),
        FlagValue::Many(vs) => vs
            .iter()
            .map(|s| value_text(s))
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

/// A point's flags by value, every step's in order.
fn key(job: &JobSpec) -> String {
    let mut text = String::new();
    for (step, flags) in &job.flags {
        text.push_str(&format!("[{}]\n", step.name()));
        for (k, v) in flags {
            text.push_str(&format!("{k}={}\n", value_of(v)));
        }
    }
    text
}

/// The parameters in which two points' spellings differ, as
/// `key: "a" and "b"`.
fn differences(a: &JobSpec, b: &JobSpec) -> String {
    let mut out = Vec::new();
    for (k, va) in &a.params {
        match b.params.get(k) {
            Some(vb) if vb != va => out.push(format!("`{k}`: \"{va}\" and \"{vb}\"")),
            _ => {}
        }
    }
    out.join(", ")
}

/// Refuses a grid with two points that differ only in how a value is
/// spelt.
///
/// Errors: [`Error::CorruptInput`] naming the grid file, the parameter(s)
/// and both spellings, and the fix (write each value once).
pub fn check(grid: &Grid) -> Result<()> {
    let mut seen: BTreeMap<String, JobSpec> = BTreeMap::new();
    for job in grid.jobs() {
        let k = key(&job);
        if let Some(first) = seen.get(&k) {
            return Err(Error::CorruptInput {
                path: grid.path.clone(),
                reason: format!(
                    "grid points {} and {} are the same experiment spelt two ways ({})",
                    first.id,
                    job.id,
                    differences(first, &job)
                ),
                fix: "write each value of an axis once, in one spelling".into(),
            });
        }
        seen.insert(k, job);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_fractions_compare_by_value() {
        assert_eq!(value_text("0.20"), "0.2");
        assert_eq!(value_text("0.2"), "0.2");
        assert_eq!(value_text("1e-1"), "0.1");
        assert_eq!(value_text("8/255"), value_text(&format!("{}", 8.0 / 255.0)));
        assert_eq!(value_text("2"), value_text("2.0"));
        assert_eq!(value_text("-0"), "0");
        assert_eq!(value_text("pgd5,aa"), "pgd5,aa");
        assert_eq!(value_text("1/0"), "1/0");
        assert_ne!(value_text("0.2"), value_text("0.25"));
    }

    fn parse(axis: &str) -> Result<Grid> {
        let src = format!(
            "steps = [\"train\", \"attack\"]\n[axes]\n{axis}\n[train]\nepochs = 1\n[attack]\nattacks = \"pgd5\"\n"
        );
        Grid::parse(&src, std::path::Path::new("g.toml"))
    }

    #[test]
    fn two_spellings_of_one_value_are_refused_naming_both() {
        for (axis, a, b) in [
            ("attack.eps = [\"0.2\", \"0.20\"]", "0.2", "0.20"),
            (
                "attack.eps = [\"8/255\", \"0.03137254901960784\"]",
                "8/255",
                "0.03137254901960784",
            ),
            ("lr = [\"1\", \"1.0\"]", "1", "1.0"),
        ] {
            let err = parse(axis).unwrap_err().to_string();
            assert!(err.contains("spelt two ways"), "{axis}: {err}");
            assert!(
                err.contains(&format!("\"{a}\" and \"{b}\"")),
                "{axis}: {err}"
            );
        }
        let g = parse("attack.eps = [\"0.2\", \"8/255\"]").unwrap();
        assert_eq!(g.jobs().len(), 2);
    }
}
