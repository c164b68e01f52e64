//! The grid's `ranks_per_job = G` key: every train/finetune step of every
//! job trains as G data-parallel ranks, one device each (`--data-parallel`
//! is added to the model steps' fixed flags; `sweep::slot` starts the
//! ranks). A job of G > 1 ranks has an id of its own ([`Grid::flags_id`]).
use super::{FlagValue, Grid, Step};
use toml_edit::Item;

/// The value of `ranks_per_job`. Errors: the reason, for anything but a
/// whole number ≥ 1.
pub(super) fn parse(item: &Item) -> Result<usize, String> {
    item.as_integer()
        .filter(|&g| (1..=MAX_RANKS_PER_JOB as i64).contains(&g))
        .map(|g| g as usize)
        .ok_or_else(|| {
            format!(
                "expected a whole number from 1 to {MAX_RANKS_PER_JOB}: the data-parallel ranks \
                 (one GPU each, on one node) of every train/finetune step"
            )
        })
}

/// The most ranks of one job: they share one node.
pub const MAX_RANKS_PER_JOB: usize = 1024;

/// With `ranks_per_job` > 1, adds `data-parallel` to every model step's
/// fixed flags. Errors: the reason, when the grid turns it off (`false`).
pub(super) fn add_data_parallel(grid: &mut Grid) -> Result<(), String> {
    if grid.ranks_per_job == 1 {
        return Ok(());
    }
    let steps: Vec<Step> = grid
        .steps
        .iter()
        .copied()
        .filter(|s| *s != Step::Attack)
        .collect();
    for step in steps {
        let flags = grid.fixed.entry(step).or_default();
        if flags.get("data-parallel") == Some(&FlagValue::Off) {
            return Err(format!(
                "the model steps run data-parallel with ranks_per_job = {}, but [{}] sets \
                 data-parallel = false: remove one of the two",
                grid.ranks_per_job,
                step.name()
            ));
        }
        flags.insert("data-parallel".into(), FlagValue::Switch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const GRID: &str = "steps = [\"train\", \"finetune\", \"attack\"]\n[axes]\nseed = [0, 1]\n";

    fn parse(s: &str) -> crate::error::Result<Grid> {
        Grid::parse(s, Path::new("g.toml"))
    }

    #[test]
    fn ranks_per_job_adds_data_parallel_to_the_model_steps_and_changes_the_ids() {
        let two = parse(&format!("ranks_per_job = 2\n{GRID}")).unwrap();
        let one = parse(GRID).unwrap();
        assert_eq!((two.ranks_per_job, one.ranks_per_job), (2, 1));
        for step in [Step::Train, Step::Finetune] {
            assert_eq!(two.fixed[&step]["data-parallel"], FlagValue::Switch);
        }
        assert!(!two.fixed.contains_key(&Step::Attack));
        let ids = |g: &Grid| g.jobs().into_iter().map(|j| j.id).collect::<Vec<_>>();
        assert!(ids(&two).iter().all(|i| !ids(&one).contains(i)));
        let three = parse(&format!("ranks_per_job = 3\n{GRID}")).unwrap();
        assert_ne!(ids(&two), ids(&three));
    }

    #[test]
    fn ranks_per_job_must_be_a_whole_number_and_not_fight_the_grid() {
        for bad in ["0", "-1", "1.5", "\"2\"", "1025"] {
            let e = parse(&format!("ranks_per_job = {bad}\n{GRID}"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("line 1") && e.contains("from 1 to 1024"),
                "{bad}: {e}"
            );
        }
        let e = parse(&format!(
            "ranks_per_job = 2\n{GRID}[train]\ndata-parallel = false\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("data-parallel = false") && e.contains("[train]"),
            "{e}"
        );
    }
}
