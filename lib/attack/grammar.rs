//! The attack-name grammar of `attack --attacks` (docs/METHOD.md, "Attacks
//! and their budgets"): each name, what it stands for, and the parsed list.
//! Running a parsed attack on a batch is [`super::run`]'s.
//!
//! ```text
//! name   := "aa" | component | "spsa" | "pgd" K | "cw-pgd" K      (K ≥ 1)
//! component := "apgd-ce" | "apgd-t" | "fab-t" | "square"
//! list   := name ("," name)*                                  (no name twice)
//! ```
//!
//! A parsed name prints back as itself; that text names the attack's
//! column in per_sample.csv, its `acc_`/`seconds_` columns in summary.csv
//! and its entry in the resume state.
use super::autoattack::Component;
use crate::error::{Error, Result};
use std::fmt;
use std::str::FromStr;

/// One attack of the `--attacks` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttackKind {
    /// AutoAttack `standard`.
    AutoAttack,
    /// One AutoAttack component alone (on every clean-correct point).
    Component(Component),
    /// SPSA (docs/METHOD.md, "Attacks and their budgets" settings).
    Spsa,
    /// PGD-K with cross-entropy, step 2.5ε/K, uniform start.
    Pgd(usize),
    /// PGD-K with the margin (CW) loss, step 2.5ε/K, uniform start.
    CwPgd(usize),
}

const ATTACK_HELP: &str = "expected aa, apgd-ce, apgd-t, fab-t, square, spsa, pgdK or cw-pgdK \
                           (K ≥ 1 steps, e.g. pgd20, cw-pgd100)";

impl FromStr for AttackKind {
    type Err = Error;

    /// Parses one name (surrounding blanks ignored).
    ///
    /// Errors: [`Error::InvalidArgument`] naming `--attacks` and the grammar.
    fn from_str(s: &str) -> Result<AttackKind> {
        let bad = || Error::invalid("--attacks", s, ATTACK_HELP);
        let steps = |k: &str| -> Result<usize> {
            match k.parse::<usize>() {
                Ok(k) if k >= 1 => Ok(k),
                _ => Err(bad()),
            }
        };
        Ok(match s.trim() {
            "aa" => AttackKind::AutoAttack,
            "apgd-ce" => AttackKind::Component(Component::ApgdCe),
            "apgd-t" => AttackKind::Component(Component::ApgdT),
            "fab-t" => AttackKind::Component(Component::FabT),
            "square" => AttackKind::Component(Component::Square),
            "spsa" => AttackKind::Spsa,
            t => {
                if let Some(k) = t.strip_prefix("cw-pgd") {
                    AttackKind::CwPgd(steps(k)?)
                } else if let Some(k) = t.strip_prefix("pgd") {
                    AttackKind::Pgd(steps(k)?)
                } else {
                    return Err(bad());
                }
            }
        })
    }
}

impl fmt::Display for AttackKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttackKind::AutoAttack => f.write_str("aa"),
            AttackKind::Component(c) => f.write_str(c.name()),
            AttackKind::Spsa => f.write_str("spsa"),
            AttackKind::Pgd(k) => write!(f, "pgd{k}"),
            AttackKind::CwPgd(k) => write!(f, "cw-pgd{k}"),
        }
    }
}

impl AttackKind {
    /// Whether the attack runs Square (alone or inside AutoAttack).
    pub fn runs_square(self) -> bool {
        matches!(
            self,
            AttackKind::AutoAttack | AttackKind::Component(Component::Square)
        )
    }

    /// Whether the attack uses the model's gradients.
    pub fn white_box(self) -> bool {
        match self {
            AttackKind::Component(c) => c.white_box(),
            AttackKind::Spsa => false,
            _ => true,
        }
    }
}

/// Parses and checks an `--attacks` list (blank entries skipped).
///
/// Errors: [`Error::InvalidArgument`] for an unknown name, a name listed
/// twice, or an empty list.
pub fn parse_attacks(list: &[String]) -> Result<Vec<AttackKind>> {
    let mut out: Vec<AttackKind> = Vec::new();
    for s in list.iter().filter(|s| !s.trim().is_empty()) {
        let a: AttackKind = s.parse()?;
        if out.contains(&a) {
            return Err(Error::invalid("--attacks", s, "is listed twice"));
        }
        out.push(a);
    }
    if out.is_empty() {
        return Err(Error::invalid("--attacks", "", ATTACK_HELP));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attack_names_parse_and_print() {
        for s in [
            "aa",
            "apgd-ce",
            "apgd-t",
            "fab-t",
            "square",
            "spsa",
            "pgd20",
            "cw-pgd100",
        ] {
            assert_eq!(s.parse::<AttackKind>().unwrap().to_string(), s);
        }
        for bad in ["pgd", "pgd0", "cw-pgdx", "fgsm", ""] {
            let e = bad.parse::<AttackKind>().unwrap_err().to_string();
            assert!(e.contains("--attacks") && e.contains("pgdK"), "{e}");
        }
        let dup = parse_attacks(&["aa".into(), "aa".into()])
            .unwrap_err()
            .to_string();
        assert!(dup.contains("twice"), "{dup}");
    }
}
