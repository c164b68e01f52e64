//! A sweep task's status: one type for what its markers say on disk, what
//! rank 0's book holds while it schedules, and the `status` column of
//! results.csv.
//!
//! On disk a task is `ok` when its `done` marker exists, `failed` when its
//! `failed.json` does (the two are never side by side), and `pending`
//! otherwise; `running` exists only in the book of a live sweep. A worker's
//! [`Outcome`] of one attempt maps onto it by [`JobStatus::after`]: an
//! interrupted attempt leaves the task pending, to be rerun.
use super::job::{read_json, Outcome};
use crate::layout::JobDir;
use serde_json::Value as Json;
use std::path::Path;

/// Where a task stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobStatus {
    /// Not finished and not failed: it runs (again) on the next `sweep run`.
    Pending,
    /// Handed to a rank of the live sweep (never on disk).
    Running,
    /// Every step finished (`done` marker).
    Ok,
    /// A step, the sweep's I/O or a dependency failed (`failed.json`).
    Failed,
}

impl JobStatus {
    /// The spelling in results.csv and `sweep collect`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Running => "running",
            JobStatus::Ok => "ok",
            JobStatus::Failed => "failed",
        }
    }

    /// The status a task's directory records, with the marker's contents
    /// (`done` for ok, `failed.json` for failed; none when pending).
    pub fn on_disk(dir: &Path) -> (JobStatus, Option<Json>) {
        let folder = JobDir::at(dir);
        if let Some(v) = read_json(&folder.done()) {
            (JobStatus::Ok, Some(v))
        } else if let Some(v) = read_json(&folder.failed()) {
            (JobStatus::Failed, Some(v))
        } else {
            (JobStatus::Pending, None)
        }
    }

    /// The status after an attempt ended with `outcome`.
    pub fn after(outcome: Outcome) -> JobStatus {
        match outcome {
            Outcome::Ok => JobStatus::Ok,
            Outcome::Failed => JobStatus::Failed,
            Outcome::Interrupted => JobStatus::Pending,
        }
    }

    /// Whether the task's last attempt has ended (ok or failed).
    pub fn is_final(self) -> bool {
        matches!(self, JobStatus::Ok | JobStatus::Failed)
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_give_the_status_and_outcomes_map_onto_it() {
        let dir = tempfile::tempdir().unwrap();
        let folder = JobDir::at(dir.path());
        assert_eq!(JobStatus::on_disk(dir.path()).0, JobStatus::Pending);
        std::fs::write(folder.failed(), r#"{"step": "train"}"#).unwrap();
        let (s, m) = JobStatus::on_disk(dir.path());
        assert_eq!(
            (s, m.unwrap()["step"].as_str()),
            (JobStatus::Failed, Some("train"))
        );
        std::fs::write(folder.done(), r#"{"metrics": {}}"#).unwrap();
        assert_eq!(JobStatus::on_disk(dir.path()).0, JobStatus::Ok);
        assert_eq!(JobStatus::after(Outcome::Interrupted), JobStatus::Pending);
        assert_eq!(JobStatus::after(Outcome::Failed), JobStatus::Failed);
        assert_eq!(JobStatus::Ok.to_string(), "ok");
        assert!(!JobStatus::Running.is_final() && JobStatus::Failed.is_final());
    }
}
