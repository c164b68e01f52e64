//! The flags of every step checked by the step's own binary before any job
//! starts: each binary's `main` parses through [`crate::exit::parse_args`],
//! which in argument-check mode (`TASER_CHECK_ARGS=1`) parses and exits 0
//! without work, so clap itself — with its "a similar argument exists"
//! tip — judges the grid's flags, and there is no second list of flags to
//! keep in step with the binaries. A refusal names the grid key and line.
use super::grid::Grid;
use super::job::{Kind, WorkItem};
use crate::error::{Error, Result};
use crate::exit::CHECK_ARGS_ENV;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

/// The grid section that sets a step's flags: `scores.NAME` for a score
/// task, else the step's binary (`attack` for `attack-<checkpoint>`).
fn section(task: &WorkItem, label: &str) -> String {
    match task.id.strip_prefix("score:") {
        Some(name) if task.kind == Kind::Score => format!("scores.{name}"),
        _ => label.to_string(),
    }
}

/// The flag a clap error is about: the first `'--name` in its error line.
fn flag_in(error_line: &str) -> Option<String> {
    let start = error_line.find("'--")? + 3;
    let rest = &error_line[start..];
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .unwrap_or(rest.len());
    Some(rest[..end].to_string())
}

/// Runs `binary` in argument-check mode on each distinct shape (step and
/// set of flag names) of the tasks' argument lists — the real list a
/// worker would run, with its --out/--checkpoint/score paths and
/// `--device cpu` — and refuses the grid at the first list clap rejects.
///
/// Errors: [`Error::CorruptInput`] naming the grid key, its line, clap's
/// error and its suggestion; [`Error::MissingInput`] when a step's binary
/// cannot be started from `bin_dir`; [`Error::InvalidArgument`] when the
/// grid's `ranks_per_job` > 1 and no `mpirun` is on PATH
/// ([`super::slot::preflight`]).
pub fn check_args(grid: &Grid, tasks: &[WorkItem], bin_dir: &Path) -> Result<()> {
    super::slot::preflight(grid.ranks_per_job, None)?;
    let mut seen = BTreeSet::new();
    for task in tasks {
        for step in &task.steps {
            let names: Vec<&String> = step.args.iter().filter(|a| a.starts_with("--")).collect();
            if !seen.insert((step.binary.clone(), format!("{names:?}"))) {
                continue;
            }
            let bin = bin_dir.join(&step.binary);
            let out = Command::new(&bin)
                .args(&step.args)
                .args(["--device", "cpu"])
                .env(CHECK_ARGS_ENV, "1")
                .stdin(Stdio::null())
                .output()
                .map_err(|e| Error::MissingInput {
                    path: bin.clone(),
                    reason: e.to_string(),
                    fix: "build the suite's binaries (make setup) or give --bin-dir".into(),
                })?;
            if !out.status.success() {
                let err = String::from_utf8_lossy(&out.stderr);
                return Err(refusal(
                    grid,
                    &section(task, &step.binary),
                    &step.binary,
                    &err,
                ));
            }
        }
    }
    Ok(())
}

/// The error of a rejected argument list: clap's error line and tip, at
/// the grid key that set the flag.
fn refusal(grid: &Grid, section: &str, binary: &str, clap_err: &str) -> Error {
    let lines: Vec<&str> = clap_err.lines().map(str::trim).collect();
    let error = lines
        .iter()
        .find(|l| l.starts_with("error:"))
        .copied()
        .unwrap_or_else(|| lines.first().copied().unwrap_or("rejected"));
    let tip = lines
        .iter()
        .find(|l| l.starts_with("tip:"))
        .map(|t| format!("; {t}"))
        .unwrap_or_else(|| format!("; `{binary} --help` lists its flags"));
    let flag = flag_in(error);
    // A top-level key written inside a step's table reaches its binary.
    let tip = match flag.as_deref() {
        Some("ranks_per_job" | "ranks-per-job") => "; ranks_per_job is a top-level key of the \
            grid: put it before the first [table]"
            .to_string(),
        _ => tip,
    };
    let at = flag.and_then(|f| grid.flag_origin(section, &f));
    let at = match at {
        Some((key, line)) => format!("line {line}, key `{key}`: "),
        None => format!("section [{section}]: "),
    };
    Error::CorruptInput {
        path: grid.path.clone(),
        reason: format!(
            "{at}{binary} refuses its flags: {}{tip}",
            error.trim_start_matches("error: ")
        ),
        fix: "correct the grid file (a key is a flag of the step's binary without its dashes)"
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_of_a_clap_error_line() {
        assert_eq!(
            flag_in("error: unexpected argument '--n_eval' found").as_deref(),
            Some("n_eval")
        );
        assert_eq!(
            flag_in("error: invalid value 'x' for '--optimizer <OPTIMIZER>'").as_deref(),
            Some("optimizer")
        );
        assert_eq!(flag_in("error: something else"), None);
        let grid = Grid::parse("[train]\nranks_per_job = 2\n", Path::new("g.toml")).unwrap();
        let e = refusal(
            &grid,
            "train",
            "train",
            "error: unexpected argument '--ranks_per_job' found\n",
        )
        .to_string();
        assert!(e.contains("top-level key") && e.contains("[train]"), "{e}");
    }
}
