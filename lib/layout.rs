//! The run-folder layout: every file name a `train`, `attack` or `sweep`
//! folder holds, named once. Writers and readers (training, evaluation,
//! statistics, reports, the sweep) build paths only through these, so a
//! renamed file cannot leave one reader behind.
//!
//! ```text
//! <train --out>/   model.safetensors  model.json  metrics.csv
//!                  resume.safetensors resume.json
//! <attack --out>/  per_sample.csv  summary.csv  attack-state.json  subset.json
//! <sweep --out>/   results.csv
//!                  scores/<name>-<id>/  scores.h5, step logs and markers
//!                  jobs/<id>/  config.json  attempts.log  done | failed.json
//!                              <step>.done  <step>.stdout.log  <step>.stderr.log
//!                              <step label>/ (a train folder)  eval/ (an attack folder)
//!                              eval-<checkpoint>/ (one per checkpoint, when the grid names several)
//! <bootstrap --out>/ comparisons.csv  table2.{md,tex}  table3.{md,tex}  forest.{svg,png}
//! ```
use std::path::{Path, PathBuf};

/// Final weights of a training run (safetensors, PyTorch-loadable).
pub const MODEL_WEIGHTS: &str = "model.safetensors";
/// JSON sidecar of [`MODEL_WEIGHTS`]: model spec, hyperparameters, metrics.
pub const MODEL_SIDECAR: &str = "model.json";
/// Weights of the epoch with the best validation accuracy (`train
/// --val-size`); its sidecar is `model-best.json`.
pub const BEST_WEIGHTS: &str = "model-best.safetensors";
/// The last epoch's weights when `--select best` makes
/// [`MODEL_WEIGHTS`] the best epoch's; its sidecar is `model-last.json`.
pub const LAST_WEIGHTS: &str = "model-last.safetensors";
/// Per-epoch metrics of a training run, one row per epoch.
pub const METRICS: &str = "metrics.csv";
/// Weights, optimiser and EMA state of the last finished epoch.
pub const RESUME_WEIGHTS: &str = "resume.safetensors";
/// The configuration and counters `--resume` continues from.
pub const RESUME_STATE: &str = "resume.json";

/// One row per evaluated point: index, label, clean and per-attack flags.
pub const PER_SAMPLE: &str = "per_sample.csv";
/// One row per evaluation: accuracies per attack and their settings.
pub const SUMMARY: &str = "summary.csv";
/// Finished attacks and the evaluation's identity (for resuming).
pub const ATTACK_STATE: &str = "attack-state.json";
/// The evaluation subset's indices (drawn once from a seed).
pub const SUBSET: &str = "subset.json";

/// Marker of a finished sweep job (written last, atomically).
pub const DONE: &str = "done";
/// A failed sweep job's error tail.
pub const FAILED: &str = "failed.json";
/// A sweep job's resolved configuration.
pub const JOB_CONFIG: &str = "config.json";
/// Each attempt at a sweep job, one line each.
pub const ATTEMPTS: &str = "attempts.log";
/// A sweep task's lock file: `flock`ed by the process running the task
/// (released by the kernel when that process ends); it names the holder.
pub const TASK_LOCK: &str = "lock";
/// The lock of an output folder (`train`/`finetune`/`attack`/`bootstrap`/
/// `report` `--out`): `flock`ed by the one run writing the folder and
/// naming it; removed when that run ends (a killed run's stays and is taken
/// over by the next). [`crate::outdir`].
pub const OUT_LOCK: &str = ".taser-lock";
/// One row per sweep job.
pub const RESULTS: &str = "results.csv";
/// Scores shared by a sweep's jobs (HDF5).
pub const SCORES: &str = "scores.h5";
/// Folder of a sweep's jobs.
pub const JOBS_DIR: &str = "jobs";
/// Folder of a sweep job's evaluation (an attack folder).
pub const EVAL_DIR: &str = "eval";
/// Folder of a sweep's shared score-precompute tasks.
pub const SCORES_DIR: &str = "scores";

/// Marker of one finished step of a sweep task (`<label>.done`).
pub fn step_done(label: &str) -> String {
    format!("{label}.done")
}

/// Standard output and error logs of one step of a sweep task.
pub fn step_logs(label: &str) -> (String, String) {
    (format!("{label}.stdout.log"), format!("{label}.stderr.log"))
}

/// Every comparison and average row of a `bootstrap` run, every metric.
pub const COMPARISONS: &str = "comparisons.csv";
/// The TASER paper's Table 2 (clean and robust avg), Markdown.
pub const TABLE2_MARKDOWN: &str = "table2.md";
/// The TASER paper's Table 2, LaTeX.
pub const TABLE2_LATEX: &str = "table2.tex";
/// The TASER paper's Table 3 (per attack), Markdown.
pub const TABLE3_MARKDOWN: &str = "table3.md";
/// The TASER paper's Table 3, LaTeX.
pub const TABLE3_LATEX: &str = "table3.tex";

/// A training run's folder (`train --out` / `finetune --out`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainRun(pub PathBuf);

impl TrainRun {
    /// The folder at `dir`.
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        TrainRun(dir.into())
    }
    /// The folder itself.
    pub fn dir(&self) -> &Path {
        &self.0
    }
    /// Final weights.
    pub fn weights(&self) -> PathBuf {
        self.0.join(MODEL_WEIGHTS)
    }
    /// Sidecar of the final weights.
    pub fn sidecar(&self) -> PathBuf {
        self.0.join(MODEL_SIDECAR)
    }
    /// The best validation epoch's weights ([`BEST_WEIGHTS`]).
    pub fn best_weights(&self) -> PathBuf {
        self.0.join(BEST_WEIGHTS)
    }
    /// The last epoch's weights under `--select best` ([`LAST_WEIGHTS`]).
    pub fn last_weights(&self) -> PathBuf {
        self.0.join(LAST_WEIGHTS)
    }
    /// Per-epoch metrics.
    pub fn metrics(&self) -> PathBuf {
        self.0.join(METRICS)
    }
    /// Resume weights.
    pub fn resume_weights(&self) -> PathBuf {
        self.0.join(RESUME_WEIGHTS)
    }
    /// Resume configuration.
    pub fn resume_state(&self) -> PathBuf {
        self.0.join(RESUME_STATE)
    }
}

/// An evaluation's folder (`attack --out`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalRun(pub PathBuf);

impl EvalRun {
    /// The folder at `dir`.
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        EvalRun(dir.into())
    }
    /// The folder itself.
    pub fn dir(&self) -> &Path {
        &self.0
    }
    /// Per-sample results.
    pub fn per_sample(&self) -> PathBuf {
        self.0.join(PER_SAMPLE)
    }
    /// One-row summary.
    pub fn summary(&self) -> PathBuf {
        self.0.join(SUMMARY)
    }
    /// Resume state.
    pub fn state(&self) -> PathBuf {
        self.0.join(ATTACK_STATE)
    }
    /// Subset written when it was drawn here.
    pub fn subset(&self) -> PathBuf {
        self.0.join(SUBSET)
    }
}

/// A sweep task's folder: a job (`<sweep --out>/jobs/<id>`) or a shared
/// score set (`<sweep --out>/scores/<name>-<id>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobDir(pub PathBuf);

impl JobDir {
    /// The folder at `dir`.
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        JobDir(dir.into())
    }
    /// The folder itself.
    pub fn dir(&self) -> &Path {
        &self.0
    }
    /// Completion marker.
    pub fn done(&self) -> PathBuf {
        self.0.join(DONE)
    }
    /// Failure record.
    pub fn failed(&self) -> PathBuf {
        self.0.join(FAILED)
    }
    /// Resolved configuration.
    pub fn config(&self) -> PathBuf {
        self.0.join(JOB_CONFIG)
    }
    /// Attempt log.
    pub fn attempts(&self) -> PathBuf {
        self.0.join(ATTEMPTS)
    }
    /// The training run of the step labelled `label`.
    pub fn train_step(&self, label: &str) -> TrainRun {
        TrainRun(self.0.join(label))
    }
    /// The job's evaluation.
    pub fn eval(&self) -> EvalRun {
        EvalRun(self.0.join(EVAL_DIR))
    }
    /// The job's evaluation of its model's checkpoint `name` (`eval-<name>`,
    /// when the grid's attack step evaluates several checkpoints).
    pub fn checkpoint_eval(&self, name: &str) -> EvalRun {
        EvalRun(self.0.join(format!("{EVAL_DIR}-{name}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_folder_nests_a_train_and_an_eval_folder() {
        let job = JobDir::at("/s/jobs/abc");
        assert_eq!(
            job.eval().per_sample(),
            Path::new("/s/jobs/abc/eval/per_sample.csv")
        );
        assert_eq!(
            job.train_step("train").sidecar(),
            Path::new("/s/jobs/abc/train/model.json")
        );
        assert_eq!(job.done(), Path::new("/s/jobs/abc/done"));
    }
}
