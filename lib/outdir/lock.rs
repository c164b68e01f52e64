//! Locks that die with their holder: an advisory `flock` on a lock file
//! (`std::fs::File::try_lock`), which the kernel releases when the holding
//! process ends, however it ends (SIGKILL, a node's reboot of a local file
//! system). The file's content names the holder (pid, host, what it is,
//! since when) so that a process that is refused or waits can say whom it
//! met.
//!
//! A holder may remove its lock file when it is done ([`FileLock::remove`]):
//! a process that opened the old file just before it went away and then
//! locked it finds, after locking, that the path no longer leads to the file
//! it holds, and opens the path again — so two processes never both hold
//! "the" lock of one path.
//!
//! Lustre and NFS: `flock` is cluster-wide only where the file system is
//! mounted with locks (`flock` on Lustre, NFSv4 locking); without them two
//! nodes may both take the lock, as with no lock at all.
use crate::error::{Error, Result};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct FileLock {
    /// The open, `flock`ed file: closing it releases the lock.
    _file: File,
    path: PathBuf,
}

/// What [`try_take`] found.
#[derive(Debug)]
pub enum Taken {
    /// The lock is now held by this process.
    Held(FileLock),
    /// Another live process holds it; its description ([`holder`]).
    Busy(String),
}

impl FileLock {
    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the lock file while still holding it, then releases the
    /// lock. A file that is already gone is no error.
    pub fn remove(self) -> Result<()> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&self.path, e)),
        }
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The host name, as lock files and the sweep's attempts log record it.
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

/// Who holds the lock file at `path`, as its holder wrote it ("pid=…
/// host=… <what> since=<unix seconds>"), with the age of `since` appended.
pub fn holder(path: &Path) -> String {
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

/// Whether `file` is still the file at `path` (not removed or replaced
/// since it was opened).
fn still_at(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Tries once to take the lock file at `path` (created if missing; its
/// folder must exist) for this process, described by `what` (e.g.
/// `binary=attack`, `worker=rank=0/2`; spaces become `_`). On success the
/// file holds "pid=… host=… <what> since=…".
///
/// Errors: [`Error::Io`] when the file cannot be opened, locked or written
/// (a file system without `flock` support answers here).
pub fn try_take(path: &Path, what: &str) -> Result<Taken> {
    // A holder that removes the file between our open and our lock makes
    // us lock a file no longer at `path`: open again (a few times at most).
    for _ in 0..16 {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .read(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Ok(Taken::Busy(holder(path))),
            Err(TryLockError::Error(e)) => return Err(Error::io(path, e)),
        }
        if !still_at(&file, path) {
            continue;
        }
        let me = format!(
            "pid={} host={} {} since={}\n",
            std::process::id(),
            host_name(),
            what.replace(' ', "_"),
            now_unix()
        );
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(me.as_bytes()))
            .map_err(|e| Error::io(path, e))?;
        return Ok(Taken::Held(FileLock {
            _file: file,
            path: path.to_path_buf(),
        }));
    }
    Err(Error::io(
        path,
        std::io::Error::other("the lock file was removed and recreated while it was being locked"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_taker_is_told_the_holder_and_a_removed_lock_is_free_again() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("l");
        let Taken::Held(first) = try_take(&path, "binary=x").unwrap() else {
            panic!("a fresh lock is free");
        };
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains(&format!("pid={}", std::process::id())) && text.contains("binary=x"),
            "{text}"
        );
        // flock locks belong to the open file: a second open in this
        // process conflicts as another process would.
        match try_take(&path, "binary=y").unwrap() {
            Taken::Busy(h) => assert!(h.contains("binary=x") && h.contains(" s ago)"), "{h}"),
            Taken::Held(_) => panic!("a held lock was taken twice"),
        }
        // A file opened before the holder removed it is not "the" lock.
        let stale = File::open(&path).unwrap();
        first.remove().unwrap();
        assert!(!path.exists());
        assert!(stale.try_lock().is_ok(), "the old file is free");
        assert!(!still_at(&stale, &path));
        assert!(matches!(
            try_take(&path, "binary=y").unwrap(),
            Taken::Held(_)
        ));
    }
}
