//! results.csv: one row per grid point, rebuilt from the job directories
//! alone (their config.json and markers), so `sweep collect` after any
//! crash gives the same table as the end of a run. With the plan (the
//! grid's tasks) every grid point has a row: a point whose folder is
//! missing is `pending` with its parameters from the plan.
use super::grid::Grid;
use super::job::{Kind, WorkItem};
use super::status::JobStatus;
use crate::csvio::write_table;
use crate::error::{Error, Result};
use crate::layout::{JOBS_DIR, JOB_CONFIG};
use serde_json::Value as Json;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// One row of results.csv before it is laid out.
#[derive(Clone, Debug)]
pub struct Row {
    /// Position in the plan.
    pub index: i64,
    /// Job id.
    pub id: String,
    /// Ok, failed or pending, from the job's markers.
    pub status: JobStatus,
    /// Grid parameters.
    pub params: BTreeMap<String, String>,
    /// Metrics of the finished steps.
    pub metrics: BTreeMap<String, String>,
    /// Seconds per step.
    pub seconds: BTreeMap<String, f64>,
    /// Failed step, exit code and error tail.
    pub failure: Option<(String, String, String)>,
    /// The job's directory.
    pub dir: PathBuf,
}

fn text(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        Json::Null => String::new(),
        other => other.to_string(),
    }
}

/// Reads the row of one job directory (None if it has no config.json of a
/// grid point).
pub fn read_row(dir: &Path) -> Option<Row> {
    let config: Json =
        serde_json::from_str(&fs::read_to_string(dir.join(JOB_CONFIG)).ok()?).ok()?;
    if config["kind"] != "job" {
        return None;
    }
    let params = config["params"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), text(v))).collect())
        .unwrap_or_default();
    let (status, marker) = JobStatus::on_disk(dir);
    let mut row = Row {
        index: config["index"].as_i64().unwrap_or(-1),
        id: text(&config["id"]),
        status,
        params,
        metrics: BTreeMap::new(),
        seconds: BTreeMap::new(),
        failure: None,
        dir: dir.to_path_buf(),
    };
    match (status, marker) {
        (JobStatus::Ok, Some(m)) => {
            if let Some(o) = m["metrics"].as_object() {
                row.metrics = o.iter().map(|(k, v)| (k.clone(), text(v))).collect();
            }
            if let Some(o) = m["seconds"].as_object() {
                row.seconds = o
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_f64().unwrap_or(0.0)))
                    .collect();
            }
        }
        (JobStatus::Failed, Some(m)) => {
            row.failure = Some((text(&m["step"]), text(&m["exit_code"]), text(&m["error"])));
        }
        _ => {}
    }
    Some(row)
}

/// Rows of every grid-point directory under `out/jobs`, in plan order.
pub fn scan(out: &Path) -> Result<Vec<Row>> {
    let jobs = out.join(JOBS_DIR);
    let entries = fs::read_dir(&jobs).map_err(|e| Error::MissingInput {
        path: jobs.clone(),
        reason: e.to_string(),
        fix: "give the --out directory of a `sweep run`".into(),
    })?;
    let mut rows: Vec<Row> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| read_row(&e.path()))
        .collect();
    rows.sort_by(|a, b| a.index.cmp(&b.index).then(a.id.cmp(&b.id)));
    Ok(rows)
}

impl Row {
    /// The row of a planned grid point that has no readable folder: status
    /// pending, its parameters and index from the plan.
    pub fn planned(task: &WorkItem) -> Row {
        let job = task.job.as_ref();
        Row {
            index: job.map(|j| j.index as i64).unwrap_or(-1),
            id: task.id.clone(),
            status: JobStatus::Pending,
            params: job.map(|j| j.params.clone()).unwrap_or_default(),
            metrics: BTreeMap::new(),
            seconds: BTreeMap::new(),
            failure: None,
            dir: task.dir.clone(),
        }
    }
}

/// One row per grid point of the plan `tasks`, in plan order: read from
/// the point's folder, or [`Row::planned`] when the folder (or its
/// config.json) is gone.
pub fn plan_rows(tasks: &[WorkItem]) -> Vec<Row> {
    tasks
        .iter()
        .filter(|t| t.kind == Kind::Point)
        .map(|t| read_row(&t.dir).unwrap_or_else(|| Row::planned(t)))
        .collect()
}

/// The rows `sweep collect` writes for the --out directory `out`: with the
/// grid (`grid`, else the grid file named by the first job folder's
/// config.json, when it still exists) one row per planned grid point;
/// without one, the rows of the folders on disk, and the second value says
/// that points whose folder is missing cannot be listed.
///
/// Errors: [`Error::MissingInput`] when `out/jobs` cannot be read and no
/// grid is known; the grid's load errors when `grid` is given.
pub fn collect(out: &Path, grid: Option<&Path>) -> Result<(Vec<Row>, Option<String>)> {
    let named = match grid {
        Some(g) => Some(Grid::load(g)?),
        None => grid_of_folders(out).and_then(|g| Grid::load(&g).ok()),
    };
    match named {
        Some(g) => Ok((plan_rows(&super::job::tasks(&g, out)), None)),
        None => {
            let note = "no grid file known (give `sweep collect DIR --grid GRID`): \
                        grid points whose folder is missing are not listed";
            Ok((scan(out)?, Some(note.into())))
        }
    }
}

/// The grid file recorded in the config.json of a job folder under
/// `out/jobs`, if one names a file that exists.
fn grid_of_folders(out: &Path) -> Option<PathBuf> {
    let entries = fs::read_dir(out.join(JOBS_DIR)).ok()?;
    entries.filter_map(|e| e.ok()).find_map(|e| {
        let text = fs::read_to_string(e.path().join(JOB_CONFIG)).ok()?;
        let config: Json = serde_json::from_str(&text).ok()?;
        let path = PathBuf::from(config["grid"].as_str()?);
        path.is_file().then_some(path)
    })
}

/// Writes results.csv: id, index, status, the parameters, the metrics, the
/// seconds per step and in total, the failure (step, exit code, error tail)
/// and the job directory.
pub fn write(path: &Path, rows: &[Row]) -> Result<()> {
    let params: BTreeSet<&String> = rows.iter().flat_map(|r| r.params.keys()).collect();
    let metrics: BTreeSet<&String> = rows.iter().flat_map(|r| r.metrics.keys()).collect();
    let steps: BTreeSet<&String> = rows.iter().flat_map(|r| r.seconds.keys()).collect();
    let mut header: Vec<String> = vec!["id".into(), "index".into(), "status".into()];
    header.extend(params.iter().map(|s| s.to_string()));
    header.extend(metrics.iter().map(|s| s.to_string()));
    header.extend(steps.iter().map(|s| format!("seconds_{s}")));
    header.extend(
        ["seconds_total", "failed_step", "exit_code", "error", "dir"]
            .iter()
            .map(|s| s.to_string()),
    );
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let mut line = vec![r.id.clone(), r.index.to_string(), r.status.to_string()];
        line.extend(
            params
                .iter()
                .map(|k| r.params.get(*k).cloned().unwrap_or_default()),
        );
        line.extend(
            metrics
                .iter()
                .map(|k| r.metrics.get(*k).cloned().unwrap_or_default()),
        );
        line.extend(steps.iter().map(|k| {
            r.seconds
                .get(*k)
                .map(|s| format!("{s:.3}"))
                .unwrap_or_default()
        }));
        line.push(if r.seconds.is_empty() {
            String::new()
        } else {
            format!("{:.3}", r.seconds.values().sum::<f64>())
        });
        let (step, code, err) = r.failure.clone().unwrap_or_default();
        line.extend([step, code, err, r.dir.display().to_string()]);
        out.push(line);
    }
    write_table(path, &header, &out)
}
