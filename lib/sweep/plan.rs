//! `sweep plan`: what a grid will run (score tasks, shared bases, grid
//! points with their ids and flags) and the launch lines for a cluster.
use super::grid::Grid;
use super::job::{self, Kind, WorkItem};
use super::launch::{launch_text, Launch};
use std::path::Path;

/// `sweep plan`'s text: the score tasks and grid points with their ids and
/// parameters, and the launch lines of `launch` ([`launch_text`]).
pub fn plan_text(grid: &Grid, out: &Path, launch: &Launch) -> String {
    let tasks = job::tasks(grid, out);
    let mut s = format!(
        "grid {} ({}): chain {}\n",
        grid.name,
        grid.path.display(),
        grid.steps
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(" → ")
            + &grid
                .checkpoints
                .iter()
                .map(|c| format!(" [{}]", c.name()))
                .collect::<String>()
    );
    let count = |k: Kind| tasks.iter().filter(|t| t.kind == k).count();
    let (nscore, njobs) = (count(Kind::Score), count(Kind::Point));
    if grid.is_chained() {
        let steps = |label: &str| {
            tasks
                .iter()
                .flat_map(|t| &t.steps)
                .filter(|st| st.label == label)
                .count()
        };
        s.push_str(&format!(
            "{nscore} score task(s), {} base model(s) (train, each run once and shared), \
             {njobs} job(s): {} baseline evaluation(s) + {} fine-tune(s); {} attack(s) in all\n",
            count(Kind::Base),
            njobs - steps("finetune"),
            steps("finetune"),
            steps("attack"),
        ));
    } else {
        s.push_str(&format!("{nscore} score task(s), {njobs} job(s)\n"));
    }
    for t in &tasks {
        s.push_str(&plan_line(&tasks, t));
    }
    s.push_str(&launch_text(launch, &grid.path, out, &tasks));
    s
}

/// One task's line of the plan: a score task's command, or a base's or a
/// point's id, parameters, steps and what it runs after.
fn plan_line(tasks: &[WorkItem], t: &WorkItem) -> String {
    let Some(j) = &t.job else {
        return format!(
            "  {:<20} score-precompute {}\n",
            t.id,
            t.steps[0].args.join(" ")
        );
    };
    let params: Vec<String> = j.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let after: Vec<&str> = t.deps.iter().map(|&d| tasks[d].id.as_str()).collect();
    let after = if after.is_empty() {
        String::new()
    } else {
        format!("  (after {})", after.join(", "))
    };
    match t.kind {
        Kind::Base => {
            let users = tasks
                .iter()
                .filter(|u| u.deps.iter().any(|&d| tasks[d].id == t.id))
                .count();
            // Its index among the bases: `sweep run-one --kind base --index`.
            let index = tasks
                .iter()
                .filter(|u| u.kind == Kind::Base)
                .position(|u| u.id == t.id)
                .unwrap_or(0);
            format!(
                "  {index:>3} {}  train  {}{after}  (shared by {users} job(s))\n",
                t.id,
                params.join(" ")
            )
        }
        _ => {
            let steps: Vec<&str> = t.steps.iter().map(|st| st.label.as_str()).collect();
            let steps = if tasks.iter().any(|u| u.kind == Kind::Base) {
                format!("{}  ", steps.join(" → "))
            } else {
                String::new()
            };
            format!(
                "  {:>3} {}  {steps}{}{after}\n",
                j.index,
                j.id,
                params.join(" ")
            )
        }
    }
}
