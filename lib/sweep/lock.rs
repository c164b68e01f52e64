//! WorkItem locks that die with their holder: the ground floor's lock
//! ([`crate::outdir::lock`], an advisory `flock`) on the task's `lock` file,
//! which the kernel releases when the holding process ends, however it ends.
//! The file's content names the holder (pid, host, worker, since when) so
//! that a process that waits can say whom it waits for; the file itself
//! stays (the sweep's markers and logs live beside it).
use super::signal;
use crate::error::{Error, Result};
use crate::layout::TASK_LOCK;
pub use crate::outdir::lock::host_name;
use crate::outdir::lock::{try_take, FileLock, Taken};
use std::path::Path;
use std::time::{Duration, Instant};

/// A held task lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct WorkLock {
    _lock: FileLock,
}

/// How often a waiting process retries, and how often it says so again.
const RETRY: Duration = Duration::from_millis(200);
const REPEAT_NOTICE: Duration = Duration::from_secs(60);

/// Takes the lock of task folder `dir` for `worker` (a rank or array index
/// description), waiting while another live process holds it and saying on
/// stderr whom it waits for (then once a minute). Returns None when a stop
/// was requested while waiting.
///
/// Errors: [`Error::Io`] when the lock file cannot be opened, locked or
/// written (a file system without `flock` support answers here).
pub fn acquire(dir: &Path, task: &str, worker: &str) -> Result<Option<WorkLock>> {
    let path = dir.join(TASK_LOCK);
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut last_notice: Option<Instant> = None;
    loop {
        match try_take(&path, &format!("worker={worker}"))? {
            Taken::Held(lock) => return Ok(Some(WorkLock { _lock: lock })),
            Taken::Busy(holder) => {
                if last_notice.is_none_or(|t| t.elapsed() >= REPEAT_NOTICE) {
                    eprintln!("{task}: waiting for {} held by {holder}", path.display());
                    last_notice = Some(Instant::now());
                }
                if signal::stop_requested() {
                    return Ok(None);
                }
                std::thread::sleep(RETRY);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{File, TryLockError};

    #[test]
    fn a_second_holder_waits_and_a_dropped_lock_is_free_again() {
        let tmp = tempfile::tempdir().unwrap();
        let first = acquire(tmp.path(), "t", "rank=0/1").unwrap().unwrap();
        let text = std::fs::read_to_string(tmp.path().join(TASK_LOCK)).unwrap();
        assert!(
            text.contains(&format!("pid={}", std::process::id()))
                && text.contains("worker=rank=0/1"),
            "{text}"
        );
        // flock locks belong to the open file: a second open in this
        // process conflicts as another process would.
        let other = File::open(tmp.path().join(TASK_LOCK)).unwrap();
        assert!(matches!(other.try_lock(), Err(TryLockError::WouldBlock)));
        drop(first);
        assert!(
            tmp.path().join(TASK_LOCK).exists(),
            "the task's lock file stays"
        );
        assert!(other.try_lock().is_ok());
        other.unlock().unwrap();
        assert!(acquire(tmp.path(), "t", "rank=0/1").unwrap().is_some());
    }
}
