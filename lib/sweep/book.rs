//! Rank 0's book of an MPI `sweep run`: every task's [`JobStatus`], which
//! task is ready (its dependencies finished), what a failure does to its
//! dependants, and the results.csv and summary written from it.
use super::grid::Grid;
use super::job::{self, Kind, Outcome, WorkItem};
use super::status::JobStatus;
use super::{results, RunConfig, RunSummary};
use crate::error::Result;
use std::path::Path;

/// Rank 0's book of tasks.
pub(super) struct Book {
    pub(super) tasks: Vec<WorkItem>,
    pub(super) state: Vec<JobStatus>,
}

impl Book {
    pub(super) fn next_ready(&self) -> Option<usize> {
        (0..self.tasks.len()).find(|&i| {
            self.state[i] == JobStatus::Pending
                && self.tasks[i]
                    .deps
                    .iter()
                    .all(|&d| self.state[d] == JobStatus::Ok)
        })
    }

    pub(super) fn has_pending(&self) -> bool {
        self.state.contains(&JobStatus::Pending)
    }

    /// Records an outcome; a failed score or base task fails its
    /// dependants (they cannot run), recorded as not run with the reason.
    pub(super) fn record(&mut self, i: usize, outcome: Outcome) {
        self.state[i] = JobStatus::after(outcome);
        if outcome == Outcome::Failed {
            let failed_id = self.tasks[i].id.clone();
            let why = job::failure_reason(&self.tasks[i].dir)
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            for j in 0..self.tasks.len() {
                if self.state[j] == JobStatus::Pending && self.tasks[j].deps.contains(&i) {
                    self.state[j] = JobStatus::Failed;
                    let _ = self.tasks[j].record_failure(
                        "dependency",
                        None,
                        &format!(
                            "not run: {failed_id} failed{why}; see {}",
                            self.tasks[i].folder().failed().display()
                        ),
                    );
                    self.record(j, Outcome::Failed);
                }
            }
        }
    }
}

/// Prepares the plan on rank 0: expands the grid, writes every task's
/// config.json, and marks finished tasks (and, without retry, failed ones).
pub(super) fn open_book(grid: &Grid, cfg: &RunConfig) -> Result<Book> {
    let tasks = job::tasks(grid, &cfg.out);
    let mut state = Vec::with_capacity(tasks.len());
    for t in &tasks {
        t.write_config(grid)?;
        let s = match JobStatus::on_disk(&t.dir).0 {
            JobStatus::Failed if cfg.retry_failed => JobStatus::Pending,
            s => s,
        };
        state.push(s);
    }
    Ok(Book { tasks, state })
}

/// Rewrites results.csv with a row per grid point of the book (from its
/// folder, or pending with its planned parameters when the folder is
/// gone): after every outcome (so a run killed hard, as mpirun does after
/// forwarding SIGTERM, leaves the table of what finished) and at the end.
pub(super) fn write_results(book: &Book, out: &Path) -> Result<Vec<results::Row>> {
    let rows = results::plan_rows(&book.tasks);
    results::write(&out.join(crate::layout::RESULTS), &rows)?;
    Ok(rows)
}

/// The run's verdict from the book — the outcomes this run printed — with
/// each failed point's reason from its failed.json.
pub(super) fn summary(book: &Book, rows: &[results::Row], out: &Path) -> RunSummary {
    let jobs: Vec<usize> = (0..book.tasks.len())
        .filter(|&i| book.tasks[i].kind == Kind::Point)
        .collect();
    // A failed score or base task counts too, even when no job of this run
    // needed it any more: the run printed it as FAILED.
    let failed_shared = (0..book.tasks.len())
        .filter(|&i| book.tasks[i].kind != Kind::Point && book.state[i] == JobStatus::Failed)
        .map(|i| {
            let task = &book.tasks[i];
            let record = task.folder().failed();
            let why = job::failure_reason(&task.dir).unwrap_or_else(|| no_record(task));
            (task.id.clone(), format!("{why}; see {}", record.display()))
        });
    let failed = jobs
        .iter()
        .filter(|&&i| book.state[i] == JobStatus::Failed)
        .map(|&i| {
            let id = &book.tasks[i].id;
            let row = rows.iter().find(|r| &r.id == id);
            let Some((step, code, err)) = row.and_then(|r| r.failure.clone()) else {
                return (id.clone(), no_record(&book.tasks[i]));
            };
            // The first `error:` line says why; else the last line of the tail.
            let last = err
                .lines()
                .find(|l| l.starts_with("error"))
                .or_else(|| err.lines().last())
                .unwrap_or("")
                .to_string();
            let code = if code.is_empty() { "none".into() } else { code };
            (id.clone(), format!("step {step}, exit code {code}: {last}"))
        })
        .chain(failed_shared)
        .collect();
    RunSummary {
        jobs: jobs.len(),
        ok: jobs
            .iter()
            .filter(|&&i| book.state[i] == JobStatus::Ok)
            .count(),
        failed,
        interrupted: book.has_pending(),
        results: out.join(crate::layout::RESULTS),
    }
}

/// What a failed task's line says when its failure record cannot be read.
fn no_record(task: &WorkItem) -> String {
    let record = task.folder().failed();
    if task.dir.is_dir() {
        format!(
            "no failure record: {} is missing or unreadable",
            record.display()
        )
    } else {
        format!(
            "no failure record: the job folder {} was removed",
            task.dir.display()
        )
    }
}

/// Prints an outcome and brings results.csv up to date with it.
pub(super) fn report(book: &Book, i: usize, outcome: Outcome, rank: i32, out: &Path) {
    let t = &book.tasks[i];
    let done = book.state.iter().filter(|s| s.is_final()).count();
    let what = match outcome {
        Outcome::Ok => "ok",
        Outcome::Failed => "FAILED",
        Outcome::Interrupted => "interrupted (will rerun)",
    };
    eprintln!(
        "[{done}/{}] {} {what} (rank {rank})",
        book.tasks.len(),
        t.id
    );
    if let Err(e) = write_results(book, out) {
        eprintln!("warning: results.csv not updated: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(dir: &Path) -> WorkItem {
        WorkItem {
            id: "p0".into(),
            kind: Kind::Point,
            dir: dir.to_path_buf(),
            steps: Vec::new(),
            deps: Vec::new(),
            job: None,
            base_model: None,
        }
    }

    #[test]
    fn a_failed_point_without_its_record_says_so_instead_of_empty_fields() {
        let tmp = tempfile::tempdir().unwrap();
        let gone = tmp.path().join("jobs").join("p0");
        let book = Book {
            tasks: vec![point(&gone)],
            state: vec![JobStatus::Failed],
        };
        let rows = results::plan_rows(&book.tasks);
        assert_eq!(rows.len(), 1, "a planned point keeps its row");
        assert_eq!(rows[0].status, JobStatus::Pending);
        let s = summary(&book, &rows, tmp.path());
        assert_eq!(s.failed.len(), 1);
        let (id, why) = &s.failed[0];
        assert_eq!(id, "p0");
        assert!(
            why.contains("job folder") && why.contains("was removed"),
            "{why}"
        );
        // The folder is back but failed.json is not.
        std::fs::create_dir_all(&gone).unwrap();
        let s = summary(&book, &rows, tmp.path());
        assert!(
            s.failed[0]
                .1
                .contains("failed.json is missing or unreadable"),
            "{}",
            s.failed[0].1
        );
    }
}
