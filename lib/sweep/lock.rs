//! WorkItem locks that die with their holder: an advisory `flock` on the task's
//! `lock` file (`std::fs::File::try_lock`), which the kernel releases when
//! the holding process ends, however it ends (SIGKILL, node reboot of a
//! local file system). The file's content names the holder (pid, host,
//! worker, since when) so that a process that waits can say whom it waits
//! for; the file itself stays (removing it would let a second process lock
//! a fresh file while a third still waits on the old one).
//!
//! Lustre and NFS: `flock` is cluster-wide only where the file system is
//! mounted with locks (`flock` on Lustre, NFSv4 locking); without them two
//! nodes may both take the lock, as with no lock at all.
use super::signal;
use crate::error::{Error, Result};
use crate::layout::TASK_LOCK;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A held task lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct WorkLock {
    _file: File,
}

/// How often a waiting process retries, and how often it says so again.
const RETRY: Duration = Duration::from_millis(200);
const REPEAT_NOTICE: Duration = Duration::from_secs(60);

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The host name, as the lock file and attempts log record it.
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default()
}

/// Who holds the lock of `dir`, as its holder wrote it ("pid=… host=…
/// worker=… since=<unix seconds>"), with the age of `since` appended.
fn holder(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let text = text.trim();
    if text.is_empty() {
        return "a process that has not yet written its name".into();
    }
    let since = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("since="))
        .and_then(|s| s.parse::<u64>().ok());
    match since {
        Some(t) => format!("{text} ({} s ago)", now_unix().saturating_sub(t)),
        None => text.to_string(),
    }
}

/// Takes the lock of task folder `dir` for `worker` (a rank or array index
/// description), waiting while another live process holds it and saying on
/// stderr whom it waits for (then once a minute). Returns None when a stop
/// was requested while waiting.
///
/// Errors: [`Error::Io`] when the lock file cannot be opened, locked or
/// written (a file system without `flock` support answers here).
pub fn acquire(dir: &Path, task: &str, worker: &str) -> Result<Option<WorkLock>> {
    let path: PathBuf = dir.join(TASK_LOCK);
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .read(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    let mut last_notice: Option<Instant> = None;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) => {
                if last_notice.is_none_or(|t| t.elapsed() >= REPEAT_NOTICE) {
                    eprintln!(
                        "{task}: waiting for {} held by {}",
                        path.display(),
                        holder(&path)
                    );
                    last_notice = Some(Instant::now());
                }
                if signal::stop_requested() {
                    return Ok(None);
                }
                std::thread::sleep(RETRY);
            }
            Err(TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
    }
    let me = format!(
        "pid={} host={} worker={} since={}\n",
        std::process::id(),
        host_name(),
        worker.replace(' ', "_"),
        now_unix()
    );
    file.set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)))
        .and_then(|_| file.write_all(me.as_bytes()))
        .map_err(|e| Error::io(&path, e))?;
    Ok(Some(WorkLock { _file: file }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_waits_and_a_dropped_lock_is_free_again() {
        let tmp = tempfile::tempdir().unwrap();
        let first = acquire(tmp.path(), "t", "rank=0/1").unwrap().unwrap();
        let text = std::fs::read_to_string(tmp.path().join(TASK_LOCK)).unwrap();
        assert!(
            text.contains(&format!("pid={}", std::process::id())),
            "{text}"
        );
        // flock locks belong to the open file: a second open in this
        // process conflicts as another process would.
        let other = File::open(tmp.path().join(TASK_LOCK)).unwrap();
        assert!(matches!(other.try_lock(), Err(TryLockError::WouldBlock)));
        drop(first);
        assert!(other.try_lock().is_ok());
        other.unlock().unwrap();
        assert!(acquire(tmp.path(), "t", "rank=0/1").unwrap().is_some());
    }
}
