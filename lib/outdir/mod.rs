//! An output owned by one run: a binary's `--out` folder (or, for
//! `score-precompute`, its one output file) is claimed before anything is
//! written and given back when the run ends.
//!
//! Claiming creates the folder and its missing parents (remembering which
//! it created) and takes an OS lock ([`lock`]) on the folder's lock file
//! ([`crate::layout::OUT_LOCK`]), which names the holder (pid, host, binary,
//! since when). A second run on the same output is refused at once with
//! [`Error::OutputInUse`] naming the holder, rather than overwriting or
//! mixing its results.
//!
//! When the run fails (an error or a panic), only what the run itself left
//! unfinished is removed: its temporary files of
//! [`crate::fsutil::write_atomically`] (recorded in
//! [`crate::fsutil::tracked_writes`]) and, when they are then empty, the
//! folders the claim created (`rmdir`, never a recursive removal: a parent
//! that another run wrote into stays). Every finished file stays, and the
//! error gains a note ([`Error::AfterWrites`]) naming the files this run
//! finished and kept and how to continue (the binary's own words, from
//! `hint`). A run that failed before any write gets no note and leaves no
//! folder it created.
pub mod lock;

use crate::error::{Error, Result};
use crate::fsutil::{temp_sibling, tracked_writes, untrack};
use crate::layout::OUT_LOCK;
use lock::{FileLock, Taken};
use std::fs;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// A claimed output: the folder, which of its parents the claim created
/// (outermost first), the lock, and for a one-file output that file.
#[derive(Debug)]
struct Claim {
    dir: PathBuf,
    file: Option<PathBuf>,
    created: Vec<PathBuf>,
    lock: FileLock,
}

/// Runs `work` (the writing into the folder `dir`) holding the claim of
/// `dir`; on failure cleans up as the module documentation says, and
/// `hint` (called after the clean-up) tells how to continue.
///
/// Errors: [`Error::Unwritable`] when `dir` cannot be created or its lock
/// file written; [`Error::OutputInUse`] when another live run holds it;
/// `work`'s own error, with [`Error::AfterWrites`]'s note when it had begun
/// writing.
pub fn run_in<T>(
    dir: &Path,
    hint: impl FnOnce() -> String,
    work: impl FnOnce() -> Result<T>,
) -> Result<T> {
    Claim::take(dir, None)?.run(hint, work)
}

/// As [`run_in`] for a run whose output is the one file `file` (its folder
/// is created, and the lock is `.<file name><OUT_LOCK>` beside it, so runs
/// writing other files of that folder are not refused).
pub fn run_for_file<T>(
    file: &Path,
    hint: impl FnOnce() -> String,
    work: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let dir = match file.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d.to_path_buf(),
        None => PathBuf::from("."),
    };
    Claim::take(&dir, Some(file.to_path_buf()))?.run(hint, work)
}

/// The running binary's name (its file name), as the lock names it.
fn binary_name() -> String {
    std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default()
}

/// Creates the missing folders of `dir`, outermost first; returns those it
/// created. A parent removed meanwhile (another run's clean-up) is created
/// again.
fn create_missing(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut created = Vec::new();
    for _ in 0..4 {
        let mut missing: Vec<&Path> = dir
            .ancestors()
            .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
            .collect();
        missing.reverse();
        let mut gone = false;
        for d in missing {
            match fs::create_dir(d) {
                Ok(()) => created.push(d.to_path_buf()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && d.is_dir() => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    gone = true;
                    break;
                }
                Err(e) => {
                    remove_empty(&created);
                    return Err(e);
                }
            }
        }
        if !gone {
            return Ok(created);
        }
    }
    remove_empty(&created);
    Err(std::io::Error::other(
        "its parent folder kept disappearing while it was created",
    ))
}

/// Removes the folders of `created` (outermost first) that are empty,
/// innermost first; a folder that is not empty stays.
fn remove_empty(created: &[PathBuf]) {
    for d in created.iter().rev() {
        let _ = fs::remove_dir(d);
    }
}

/// `path` with its folder made canonical (None when the folder is gone).
fn canonical(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?;
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    let parent = parent.unwrap_or(Path::new(".")).canonicalize().ok()?;
    Some(parent.join(name))
}

impl Claim {
    fn take(dir: &Path, file: Option<PathBuf>) -> Result<Claim> {
        let unwritable = |reason: String| Error::Unwritable {
            path: dir.to_path_buf(),
            reason,
        };
        let created = create_missing(dir).map_err(|e| unwritable(e.to_string()))?;
        let lock_name = match &file {
            Some(f) => format!(
                ".{}{OUT_LOCK}",
                f.file_name().unwrap_or_default().to_string_lossy()
            ),
            None => OUT_LOCK.to_string(),
        };
        let lock_path = dir.join(lock_name);
        let taken = lock::try_take(&lock_path, &format!("binary={}", binary_name()));
        let lock = match taken {
            Ok(Taken::Held(lock)) => lock,
            Ok(Taken::Busy(holder)) => {
                remove_empty(&created);
                return Err(Error::OutputInUse {
                    path: file.unwrap_or_else(|| dir.to_path_buf()),
                    holder,
                });
            }
            Err(e) => {
                remove_empty(&created);
                return Err(unwritable(e.to_string()));
            }
        };
        Ok(Claim {
            dir: dir.to_path_buf(),
            file,
            created,
            lock,
        })
    }

    fn run<T>(self, hint: impl FnOnce() -> String, work: impl FnOnce() -> Result<T>) -> Result<T> {
        match catch_unwind(AssertUnwindSafe(work)) {
            Ok(Ok(value)) => {
                let _ = self.lock.remove();
                Ok(value)
            }
            Ok(Err(error)) => match self.give_up(hint) {
                Some(note) => Err(Error::AfterWrites {
                    error: Box::new(error),
                    note,
                }),
                None => Err(error),
            },
            Err(panic) => {
                if let Some(note) = self.give_up(hint) {
                    eprintln!("{note}");
                }
                resume_unwind(panic)
            }
        }
    }

    /// Whether `path` (made canonical) is one of this claim's outputs
    /// (`root` is the claimed folder, canonical).
    fn owns(&self, root: &Path, path: &Path) -> bool {
        match &self.file {
            Some(f) => [f.clone(), temp_sibling(f)]
                .iter()
                .any(|p| canonical(p).is_some_and(|c| c == path)),
            None => path.starts_with(root),
        }
    }

    /// After a failure: removes this run's unfinished files, the lock and
    /// the folders it created that are empty; returns the note naming what
    /// was kept, or None when the run began no write here.
    fn give_up(self, hint: impl FnOnce() -> String) -> Option<String> {
        let writes = tracked_writes();
        let mut kept: Vec<String> = Vec::new();
        let mut began = false;
        if let Ok(root) = self.dir.canonicalize() {
            for tmp in &writes.in_flight {
                if canonical(tmp).is_some_and(|c| self.owns(&root, &c)) {
                    let _ = fs::remove_file(tmp);
                    untrack(tmp);
                }
            }
            let mine = |p: &PathBuf| canonical(p).filter(|c| self.owns(&root, c));
            began = writes.started.iter().any(|p| mine(p).is_some());
            for c in writes.finished.iter().filter_map(mine) {
                let name = c.strip_prefix(&root).unwrap_or(&c).display().to_string();
                if c.is_file() && !kept.contains(&name) {
                    kept.push(name);
                }
            }
        }
        let _ = self.lock.remove();
        remove_empty(&self.created);
        began.then(|| note(&self.dir, self.file.as_deref(), &kept, hint))
    }
}

/// The note of a failed run: what it kept in `dir` (or of `file`), and how
/// to continue.
fn note(dir: &Path, file: Option<&Path>, kept: &[String], hint: impl FnOnce() -> String) -> String {
    let place = file.unwrap_or(dir).display();
    let what = if kept.is_empty() {
        format!("Nothing this run wrote to {place} was kept")
    } else {
        format!("Kept in {}: {} (finished)", dir.display(), kept.join(", "))
    };
    format!("{what}; no partial file is left. To continue: {}", hint())
}

#[cfg(test)]
mod tests;
