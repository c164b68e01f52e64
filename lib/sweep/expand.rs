//! Expansion of a grid into the tasks a sweep runs: the shared score
//! tasks, and per grid point its chain of steps with the command line of
//! each (score references resolved to files, the sweep's own `--out`,
//! `--checkpoint` and `--from`). The `train → finetune → attack` chain adds
//! one shared base task per distinct base and one baseline evaluation per
//! base (see [`super::grid`]).
use super::grid::{to_args, FlagValue, Flags, Grid, JobSpec, Step};
use super::job::{Kind, StepRun, WorkItem};
use crate::layout::{self, JobDir, TrainRun};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The command line of one step: its flags with score references replaced
/// by the score files, and the sweep's own flags — `--out` (the model
/// folder `model` or the evaluation folder `eval`), `--checkpoint` of
/// attack (`model`'s weights) and train/finetune's `--resume` when a
/// resume state exists.
fn step_run(
    step: Step,
    flags: &Flags,
    score_path: &BTreeMap<String, PathBuf>,
    model: &TrainRun,
    eval: &Path,
) -> StepRun {
    let mut args = resolved_args(flags, score_path);
    let resume_if = match step {
        Step::Train | Step::Finetune => {
            args.push("--out".into());
            args.push(model.dir().display().to_string());
            // train/finetune write a resume state every epoch; a
            // restarted job continues it instead of starting over.
            Some((model.resume_state(), vec!["--resume".into()]))
        }
        Step::Attack => return attack_run(args, &model.weights(), eval, step.name()),
    };
    StepRun {
        label: step.name().into(),
        binary: step.name().into(),
        args,
        resume_if,
    }
}

/// The arguments of `flags` with score references replaced by the score
/// files.
fn resolved_args(flags: &Flags, score_path: &BTreeMap<String, PathBuf>) -> Vec<String> {
    let mut flags = flags.clone();
    for v in flags.values_mut() {
        if let FlagValue::One(s) = v {
            if let Some(name) = s.strip_prefix('@') {
                *v = FlagValue::One(score_path[name].display().to_string());
            }
        }
    }
    to_args(&flags)
}

/// The attack step labelled `label` with flags `args`: evaluates `weights`
/// into `eval` (attack resumes itself from its state file there).
fn attack_run(mut args: Vec<String>, weights: &Path, eval: &Path, label: &str) -> StepRun {
    args.push("--checkpoint".into());
    args.push(weights.display().to_string());
    args.push("--out".into());
    args.push(eval.display().to_string());
    StepRun {
        label: label.into(),
        binary: Step::Attack.name().into(),
        args,
        resume_if: None,
    }
}

/// The steps of a grid point outside the three-step chain: the model step,
/// then the attack of its final weights into `eval/`, or with the grid's
/// `checkpoints` one attack per checkpoint, `attack-<name>` into
/// `eval-<name>/`.
fn point_steps(
    grid: &Grid,
    job: &JobSpec,
    job_dir: &JobDir,
    score_path: &BTreeMap<String, PathBuf>,
) -> Vec<StepRun> {
    let model = grid.model_step();
    let model_dir = job_dir.train_step(model.name());
    let eval = job_dir.eval().dir().to_path_buf();
    let mut steps = Vec::new();
    for step in &grid.steps {
        if *step != Step::Attack || grid.checkpoints.is_empty() {
            steps.push(step_run(
                *step,
                &job.flags[step],
                score_path,
                &model_dir,
                &eval,
            ));
            continue;
        }
        for c in &grid.checkpoints {
            let args = resolved_args(&job.flags[step], score_path);
            let weights = c.weights(&model_dir, &job.flags[&model]);
            let eval = job_dir.checkpoint_eval(c.name());
            let label = format!("{}-{}", step.name(), c.name());
            steps.push(attack_run(args, &weights, eval.dir(), &label));
        }
    }
    steps
}

/// The score tasks: one per `[scores.NAME]`, with the path of its file.
fn score_tasks(grid: &Grid, out: &Path) -> (Vec<WorkItem>, BTreeMap<String, PathBuf>) {
    let mut tasks = Vec::new();
    let mut score_path = BTreeMap::new();
    for (name, spec) in &grid.scores {
        let dir = out
            .join(layout::SCORES_DIR)
            .join(format!("{name}-{}", spec.id));
        let file = dir.join(layout::SCORES);
        let mut args = to_args(&spec.flags);
        args.push("--out".into());
        args.push(file.display().to_string());
        args.push("--overwrite".into()); // a retry after a crash past the rename replaces the file
        score_path.insert(name.clone(), file);
        tasks.push(WorkItem {
            id: format!("score:{name}"),
            kind: Kind::Score,
            dir,
            steps: vec![StepRun {
                label: "score-precompute".into(),
                binary: "score-precompute".into(),
                args,
                resume_if: None,
            }],
            deps: Vec::new(),
            job: None,
            base_model: None,
        });
    }
    (tasks, score_path)
}

/// Every task of a grid: the score tasks first, then (three-step chain)
/// each base before the points that use it, then the grid points.
pub fn tasks(grid: &Grid, out: &Path) -> Vec<WorkItem> {
    let (mut tasks, score_path) = score_tasks(grid, out);
    if grid.is_chained() {
        chain_tasks(grid, out, &mut tasks, &score_path);
        return tasks;
    }
    for job in grid.jobs() {
        let job_dir = JobDir::at(out.join(layout::JOBS_DIR).join(&job.id));
        let steps = point_steps(grid, &job, &job_dir, &score_path);
        let deps = score_deps(grid, &job.flags, &tasks);
        tasks.push(WorkItem {
            id: job.id.clone(),
            kind: Kind::Point,
            dir: job_dir.0,
            steps,
            deps,
            job: Some(job),
            base_model: None,
        });
    }
    tasks
}

/// The tasks of the `train → finetune → attack` chain: per distinct base
/// (its resolved train flags) one base task (`train`); per distinct base
/// and attack flags one baseline point (`attack` of the base checkpoint as
/// it is, params `stage = base`); per grid point a fine-tune point
/// (`finetune --from` the base's checkpoint, then `attack`; `stage =
/// finetune`). Row indices count the points in order.
fn chain_tasks(
    grid: &Grid,
    out: &Path,
    tasks: &mut Vec<WorkItem>,
    score_path: &BTreeMap<String, PathBuf>,
) {
    let jobs_dir = out.join(layout::JOBS_DIR);
    let mut row = 0;
    for mut job in grid.jobs() {
        let base = base_task(grid, &job, &jobs_dir, tasks, score_path);
        let base_model = JobDir::at(&tasks[base].dir).train_step(Step::Train.name());
        let eval_flags = only(&job, &[Step::Train, Step::Attack]);
        let (id, needs) = grid.flags_id("stage=base\n", &eval_flags);
        if !tasks.iter().any(|t| t.id == id) {
            // The baseline: the base checkpoint evaluated as it is.
            let dir = JobDir::at(jobs_dir.join(&id));
            let mut params = job.params.clone();
            params.retain(|k, _| !k.starts_with("finetune."));
            params.insert("stage".into(), "base".into());
            let eval = dir.eval().dir().to_path_buf();
            let attack = &job.flags[&Step::Attack];
            tasks.push(WorkItem {
                id: id.clone(),
                kind: Kind::Point,
                dir: dir.0,
                steps: vec![step_run(
                    Step::Attack,
                    attack,
                    score_path,
                    &base_model,
                    &eval,
                )],
                deps: vec![base],
                job: Some(JobSpec {
                    index: row,
                    id,
                    params,
                    flags: eval_flags,
                    needs_scores: needs,
                }),
                base_model: Some(base_model.dir().to_path_buf()),
            });
            row += 1;
        }
        let dir = JobDir::at(jobs_dir.join(&job.id));
        let model = dir.train_step(Step::Finetune.name());
        let eval = dir.eval().dir().to_path_buf();
        let mut ft_flags = job.flags[&Step::Finetune].clone();
        let from = base_model.weights().display().to_string();
        ft_flags.insert("from".into(), FlagValue::One(from));
        let steps = vec![
            step_run(Step::Finetune, &ft_flags, score_path, &model, &eval),
            step_run(
                Step::Attack,
                &job.flags[&Step::Attack],
                score_path,
                &model,
                &eval,
            ),
        ];
        let mut deps = vec![base];
        deps.extend(score_deps(grid, &only(&job, &[Step::Finetune]), tasks));
        job.index = row;
        job.params.insert("stage".into(), "finetune".into());
        row += 1;
        tasks.push(WorkItem {
            id: job.id.clone(),
            kind: Kind::Point,
            dir: dir.0,
            steps,
            deps,
            job: Some(job),
            base_model: Some(base_model.dir().to_path_buf()),
        });
    }
}

/// The flags of `steps` of a grid point.
fn only(job: &JobSpec, steps: &[Step]) -> BTreeMap<Step, Flags> {
    steps.iter().map(|s| (*s, job.flags[s].clone())).collect()
}

/// Indices of the score tasks that `flags` reference.
fn score_deps(grid: &Grid, flags: &BTreeMap<Step, Flags>, tasks: &[WorkItem]) -> Vec<usize> {
    let (_, names) = grid.flags_id("", flags);
    let ids: Vec<String> = names.iter().map(|n| format!("score:{n}")).collect();
    (0..tasks.len())
        .filter(|&i| ids.contains(&tasks[i].id))
        .collect()
}

/// The index of the base task of grid point `job` (added on first use):
/// `train` with the point's train flags into `jobs/<base id>/train`, its
/// config listing the point's base parameters.
fn base_task(
    grid: &Grid,
    job: &JobSpec,
    jobs_dir: &Path,
    tasks: &mut Vec<WorkItem>,
    score_path: &BTreeMap<String, PathBuf>,
) -> usize {
    let flags = only(job, &[Step::Train]);
    let (base_id, needs) = grid.flags_id("base\n", &flags);
    let id = format!("base:{base_id}");
    if let Some(b) = tasks.iter().position(|t| t.id == id) {
        return b;
    }
    let dir = JobDir::at(jobs_dir.join(&base_id));
    let model = dir.train_step(Step::Train.name());
    let train = step_run(
        Step::Train,
        &flags[&Step::Train],
        score_path,
        &model,
        Path::new(""),
    );
    let params = job
        .params
        .iter()
        .filter(|(k, _)| !k.starts_with("finetune.") && !k.starts_with("attack."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let deps = score_deps(grid, &flags, tasks);
    tasks.push(WorkItem {
        id,
        kind: Kind::Base,
        dir: dir.0,
        steps: vec![train],
        deps,
        job: Some(JobSpec {
            index: 0,
            id: base_id,
            params,
            flags,
            needs_scores: needs,
        }),
        base_model: None,
    });
    tasks.len() - 1
}
