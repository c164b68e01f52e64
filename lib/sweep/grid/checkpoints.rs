//! `checkpoints = ["best", "last"]`: which weights of a grid point's model
//! step the attack step evaluates. Without the key the attack step runs
//! once, on `model.safetensors`, into `eval/` (as it always has); with it,
//! once per named checkpoint, labelled `attack-<name>`, into
//! `eval-<name>/`, and results.csv gets `attack_<name>_<column>` and
//! `per_sample_<name>` per checkpoint.
//!
//! - `best`: the best validation epoch's weights (`model-best.safetensors`),
//!   which `train` writes only with `--val-size N > 0`: every grid point's
//!   model step must set `val-size` above 0.
//! - `last`: the last epoch's weights: `model.safetensors`, or
//!   `model-last.safetensors` where the model step sets `select = "best"`
//!   (then `model.safetensors` is a copy of the best epoch's).
use super::{FlagValue, Flags, Grid, Step};
use crate::layout::TrainRun;
use std::path::PathBuf;
use toml_edit::Item;

/// One checkpoint of a training folder that the attack step can evaluate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Checkpoint {
    /// The best validation epoch's weights.
    Best,
    /// The last epoch's weights.
    Last,
}

impl Checkpoint {
    /// The name in the grid file, step labels, folder and column names.
    pub fn name(self) -> &'static str {
        match self {
            Checkpoint::Best => "best",
            Checkpoint::Last => "last",
        }
    }

    fn parse(s: &str) -> Option<Checkpoint> {
        match s {
            "best" => Some(Checkpoint::Best),
            "last" => Some(Checkpoint::Last),
            _ => None,
        }
    }

    /// The weights file of this checkpoint in `run`, the training folder of
    /// a model step with flags `flags`.
    pub fn weights(self, run: &TrainRun, flags: &Flags) -> PathBuf {
        let select_best = flags.get("select") == Some(&FlagValue::One("best".into()));
        match self {
            Checkpoint::Best => run.best_weights(),
            Checkpoint::Last if select_best => run.last_weights(),
            Checkpoint::Last => run.weights(),
        }
    }
}

/// Parses the `checkpoints` value: a non-empty array of distinct names.
/// Errors are the reason alone (the caller adds the key and line).
pub(super) fn parse(item: &Item) -> std::result::Result<Vec<Checkpoint>, String> {
    let why = "expected a non-empty array of distinct checkpoint names: \"best\", \"last\"";
    let arr = item.as_array().ok_or(why)?;
    let mut out = Vec::new();
    for v in arr.iter() {
        let c = v
            .as_str()
            .and_then(Checkpoint::parse)
            .ok_or_else(|| format!("unknown checkpoint {v}; {why}"))?;
        if out.contains(&c) {
            return Err(format!("{} is named twice; {why}", c.name()));
        }
        out.push(c);
    }
    if out.is_empty() {
        return Err(why.into());
    }
    Ok(out)
}

impl Grid {
    /// The text that a grid point's id hashes besides its flags: empty
    /// without `checkpoints` (so grids without the key keep their ids),
    /// else the names, so evaluating other checkpoints gives new jobs.
    pub(super) fn checkpoints_tag(&self) -> String {
        if self.checkpoints.is_empty() {
            return String::new();
        }
        let names: Vec<&str> = self.checkpoints.iter().map(|c| c.name()).collect();
        format!("checkpoints={}\n", names.join(","))
    }

    /// Checks `checkpoints` against the chain and the points: it needs a
    /// `train → attack` or `finetune → attack` chain, and `best` needs
    /// `val-size` above 0 in every point's model step. Errors are the
    /// reason alone.
    pub(super) fn check_checkpoints(&self) -> std::result::Result<(), String> {
        if self.checkpoints.is_empty() {
            return Ok(());
        }
        if self.steps.len() != 2 || self.steps[1] != Step::Attack {
            return Err(
                "needs steps = [\"train\", \"attack\"] or [\"finetune\", \"attack\"]".into(),
            );
        }
        if !self.checkpoints.contains(&Checkpoint::Best) {
            return Ok(());
        }
        let model = self.model_step();
        for job in self.jobs() {
            let val = job.flags[&model].get("val-size");
            let carved =
                matches!(val, Some(FlagValue::One(n)) if n.parse::<u64>().is_ok_and(|n| n > 0));
            if !carved {
                let params: Vec<String> =
                    job.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
                return Err(format!(
                    "`best` needs a validation split, but the point {} sets no val-size above 0; \
                     set val-size in [{}] (train writes model-best.safetensors only with --val-size N)",
                    params.join(" "),
                    model.name()
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const GRID: &str = r#"
steps = ["train", "attack"]
[axes]
seed = [0, 1]
[train]
val-size = 100
[attack]
attacks = "pgd20"
"#;

    fn parse(s: &str) -> crate::error::Result<Grid> {
        Grid::parse(s, Path::new("g.toml"))
    }

    #[test]
    fn the_key_keeps_ids_without_it_and_gives_new_ids_with_it() {
        let plain = parse(GRID).unwrap().jobs();
        let with = parse(&format!("checkpoints = [\"best\", \"last\"]\n{GRID}")).unwrap();
        assert_eq!(with.checkpoints, [Checkpoint::Best, Checkpoint::Last]);
        let other = parse(&format!("checkpoints = [\"last\"]\n{GRID}")).unwrap();
        for ((a, b), c) in plain.iter().zip(with.jobs()).zip(other.jobs()) {
            assert_ne!(a.id, b.id);
            assert_ne!(b.id, c.id);
        }
        // Without the key the id hashes the flags alone, as before.
        let g = parse(GRID).unwrap();
        let (id, _) = g.flags_id("", &plain[0].flags);
        assert_eq!(plain[0].id, id);
    }

    #[test]
    fn last_is_model_last_under_select_best() {
        let run = TrainRun::at("/r");
        let mut flags = Flags::new();
        assert_eq!(Checkpoint::Best.weights(&run, &flags), run.best_weights());
        assert_eq!(Checkpoint::Last.weights(&run, &flags), run.weights());
        flags.insert("select".into(), FlagValue::One("best".into()));
        assert_eq!(Checkpoint::Last.weights(&run, &flags), run.last_weights());
    }

    #[test]
    fn bad_values_and_chains_are_refused_at_the_key() {
        for (text, why) in [
            ("checkpoints = [\"final\"]\n", "unknown checkpoint"),
            ("checkpoints = []\n", "non-empty"),
            ("checkpoints = [\"best\", \"best\"]\n", "named twice"),
            ("checkpoints = \"best\"\n", "array"),
        ] {
            let e = parse(&format!("{text}{GRID}")).unwrap_err().to_string();
            assert!(
                e.contains("line 1") && e.contains("checkpoints") && e.contains(why),
                "{e}"
            );
        }
        let e = parse(&format!(
            "checkpoints = [\"best\"]\n{}",
            GRID.replace("val-size = 100", "")
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("val-size") && e.contains("seed=0"), "{e}");
        let train_only = GRID
            .replace("\"train\", \"attack\"", "\"train\"")
            .replace("[attack]\nattacks = \"pgd20\"\n", "");
        let e = parse(&format!("checkpoints = [\"last\"]\n{train_only}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs steps"), "{e}");
    }
}
