//! Atomic file output: write under a temporary name in the target's folder,
//! then rename, so a crash or kill never leaves a half-written file at the
//! final name.
//!
//! The process keeps a record of its atomic writes: the temporary files
//! being written now and the final paths put in place
//! ([`tracked_writes`]), so that a failed run ([`crate::outdir`]) can remove
//! exactly its own partial files and name the finished ones.
//!
//! Testing hook: with the environment variable `TASER_FAIL_WRITE=N` the
//! N-th atomic write of the process (counting from 1) fails after its
//! temporary file was written and cut to half its length, as a full disk
//! would make it fail: an I/O error "no space left on device (injected by
//! TASER_FAIL_WRITE=N)". `TASER_FAIL_WRITE=N:panic` panics there instead,
//! leaving the partial temporary file to the run's clean-up. Unset (or not
//! of these forms), nothing is injected.
use crate::error::{Error, Result};
use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// The environment variable of the write-failure testing hook (module
/// documentation).
pub const FAIL_WRITE_ENV: &str = "TASER_FAIL_WRITE";

/// Atomic writes of this process so far (each path once, however often
/// it was written).
#[derive(Debug, Clone, Default)]
pub struct Writes {
    /// Temporary files being written now, or left by a write that panicked.
    pub in_flight: Vec<PathBuf>,
    /// Final paths whose write began (finished or not).
    pub started: BTreeSet<PathBuf>,
    /// Final paths put in place.
    pub finished: BTreeSet<PathBuf>,
}

static WRITES: Mutex<Writes> = Mutex::new(Writes {
    in_flight: Vec::new(),
    started: BTreeSet::new(),
    finished: BTreeSet::new(),
});
static WRITE_COUNT: AtomicUsize = AtomicUsize::new(0);

fn track(f: impl FnOnce(&mut Writes)) {
    f(&mut WRITES.lock().unwrap_or_else(|e| e.into_inner()));
}

/// This process's atomic writes so far.
pub fn tracked_writes() -> Writes {
    WRITES.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Forgets the temporary file `tmp` (after it was removed).
pub fn untrack(tmp: &Path) {
    track(|w| w.in_flight.retain(|p| p != tmp));
}

/// When the write-failure hook fails a write: its number and whether it
/// panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InjectedFailure {
    at: usize,
    panics: bool,
}

/// Reads the hook's setting (`N` or `N:panic`, N ≥ 1).
fn parse_failure(spec: &str) -> Option<InjectedFailure> {
    let (n, panics) = match spec.trim().split_once(':') {
        Some((n, "panic")) => (n, true),
        Some(_) => return None,
        None => (spec.trim(), false),
    };
    let at = n.parse::<usize>().ok().filter(|&n| n >= 1)?;
    Some(InjectedFailure { at, panics })
}

/// Fails write number `n` (to `path`, via `tmp`) when the hook says so.
fn inject(n: usize, path: &Path, tmp: &Path) -> Result<()> {
    static HOOK: OnceLock<Option<InjectedFailure>> = OnceLock::new();
    let hook = HOOK.get_or_init(|| {
        std::env::var(FAIL_WRITE_ENV)
            .ok()
            .and_then(|s| parse_failure(&s))
    });
    let Some(f) = hook.filter(|f| f.at == n) else {
        return Ok(());
    };
    if let Ok(file) = fs::OpenOptions::new().write(true).open(tmp) {
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.set_len(len / 2);
    }
    let what = format!("no space left on device (injected by {FAIL_WRITE_ENV}={n})");
    if f.panics {
        panic!("{what} while writing {}", path.display());
    }
    Err(Error::io(
        path,
        std::io::Error::new(std::io::ErrorKind::StorageFull, what),
    ))
}

/// The temporary sibling used while `path` is being written. It keeps the
/// extension (libraries such as safetensors dispatch on it).
pub fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".tmp-{}-{}", std::process::id(), name))
}

/// Writes `path` by calling `write` on a temporary sibling, then renaming.
/// On error the temporary file is removed; a panic in `write` leaves it,
/// recorded in [`tracked_writes`] for the run's clean-up.
pub fn write_atomically<F>(path: &Path, write: F) -> Result<()>
where
    F: FnOnce(&Path) -> Result<()>,
{
    let tmp = temp_sibling(path);
    let n = WRITE_COUNT.fetch_add(1, Ordering::SeqCst) + 1;
    track(|w| {
        w.in_flight.push(tmp.clone());
        w.started.insert(path.to_path_buf());
    });
    let result = write(&tmp)
        .and_then(|()| inject(n, path, &tmp))
        .and_then(|()| fs::rename(&tmp, path).map_err(|e| Error::io(path, e)));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    track(|w| {
        w.in_flight.retain(|p| p != &tmp);
        if result.is_ok() {
            w.finished.insert(path.to_path_buf());
        }
    });
    result
}

/// Writes bytes to `path` atomically (temporary name, fsync, rename).
pub fn write_bytes_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomically(path, |tmp| {
        let mut f = fs::File::create(tmp).map_err(|e| Error::io(tmp, e))?;
        f.write_all(bytes).map_err(|e| Error::io(tmp, e))?;
        f.sync_all().map_err(|e| Error::io(tmp, e))
    })
}

/// Creates the folder `path` will be written in (and its parents).
pub fn create_parent_dir(path: &Path) -> Result<()> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => fs::create_dir_all(dir).map_err(|e| Error::io(dir, e)),
        None => Ok(()),
    }
}

/// Writes a text file atomically, creating its folder first.
pub fn write_text(path: &Path, text: &str) -> Result<()> {
    create_parent_dir(path)?;
    write_bytes_atomically(path, text.as_bytes())
}

/// Creates `dir` (and parents) and checks that a file can be written in it,
/// so a run fails before doing work rather than after.
pub fn ensure_writable_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::Unwritable {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    })?;
    let probe = dir.join(format!(".write-probe-{}", std::process::id()));
    fs::write(&probe, b"").map_err(|e| Error::Unwritable {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    })?;
    let _ = fs::remove_file(&probe);
    Ok(())
}

/// What a versioned-JSON reader tells the user to do when the file is
/// missing or is not what it should be (each names a flag or a step that
/// exists).
#[derive(Debug, Clone, Copy)]
pub struct JsonFixes<'a> {
    /// Fix when the file cannot be read.
    pub missing: &'a str,
    /// Fix when it is not JSON, has another `format` tag, or lacks fields.
    pub corrupt: &'a str,
}

/// Reads a JSON file whose top-level `"format"` field must equal `format`
/// (checkpoint sidecars, DSM networks, attack and resume states), then
/// deserialises it as `T`.
///
/// Errors: [`Error::MissingInput`] when it cannot be read;
/// [`Error::CorruptInput`] when it is not JSON, its format tag differs, or
/// it does not fit `T`. Each carries the matching fix from `fixes`.
pub fn read_versioned_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    format: &str,
    fixes: JsonFixes<'_>,
) -> Result<T> {
    read_tagged_json(path, format, fixes, false)
}

/// As [`read_versioned_json`], but a file without any `format` field is
/// read as `format`: for files written before they carried a tag (a
/// different tag is still refused).
pub fn read_versioned_json_or_untagged<T: serde::de::DeserializeOwned>(
    path: &Path,
    format: &str,
    fixes: JsonFixes<'_>,
) -> Result<T> {
    read_tagged_json(path, format, fixes, true)
}

fn read_tagged_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    format: &str,
    fixes: JsonFixes<'_>,
    untagged_is_current: bool,
) -> Result<T> {
    let corrupt = |reason: String| Error::CorruptInput {
        path: path.to_path_buf(),
        reason,
        fix: fixes.corrupt.to_string(),
    };
    let text = fs::read_to_string(path).map_err(|e| Error::MissingInput {
        path: path.to_path_buf(),
        reason: e.to_string(),
        fix: fixes.missing.to_string(),
    })?;
    let mut value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| corrupt(format!("not JSON: {e}")))?;
    match value.get("format").and_then(|f| f.as_str()) {
        Some(tag) if tag == format => {}
        Some(tag) => return Err(corrupt(format!("format `{tag}` is not `{format}`"))),
        None if untagged_is_current && value.get("format").is_none() && value.is_object() => {
            value["format"] = format.into();
        }
        None => return Err(corrupt(format!("no `format` field (expected `{format}`)"))),
    }
    serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))
}

/// Writes `value` as pretty JSON to `path` atomically.
pub fn write_json_atomically<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::OutputFailed {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    write_bytes_atomically(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct Tagged {
        format: String,
        n: u32,
    }

    const FIXES: JsonFixes<'static> = JsonFixes {
        missing: "write it first",
        corrupt: "rewrite it",
    };

    #[test]
    fn a_versioned_file_is_read_and_a_wrong_tag_or_shape_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        fs::write(&path, r#"{"format": "taser-x-v1", "n": 3}"#).unwrap();
        let t: Tagged = read_versioned_json(&path, "taser-x-v1", FIXES).unwrap();
        assert_eq!(t.n, 3);
        let err = read_versioned_json::<Tagged>(&path, "taser-y-v1", FIXES).unwrap_err();
        assert!(matches!(err, Error::CorruptInput { .. }), "{err}");
        assert!(err.to_string().contains("taser-x-v1") && err.to_string().contains("rewrite it"));
        fs::write(&path, r#"{"format": "taser-x-v1"}"#).unwrap();
        let err = read_versioned_json::<Tagged>(&path, "taser-x-v1", FIXES).unwrap_err();
        assert!(err.to_string().contains("missing field `n`"), "{err}");
        let err =
            read_versioned_json::<Tagged>(&dir.path().join("none.json"), "x", FIXES).unwrap_err();
        assert!(
            matches!(err, Error::MissingInput { .. }) && err.to_string().contains("write it first")
        );
    }

    #[test]
    fn the_failure_hook_reads_a_write_number_and_an_optional_panic() {
        assert_eq!(
            parse_failure("3"),
            Some(InjectedFailure {
                at: 3,
                panics: false
            })
        );
        assert_eq!(
            parse_failure(" 2:panic"),
            Some(InjectedFailure {
                at: 2,
                panics: true
            })
        );
        for bad in ["0", "", "x", "2:boom", "-1"] {
            assert_eq!(parse_failure(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_write_is_tracked_while_in_flight_and_when_finished() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("z.txt");
        let tmp = temp_sibling(&path);
        write_atomically(&path, |t| {
            assert!(tracked_writes().in_flight.contains(&t.to_path_buf()));
            fs::write(t, b"z").map_err(|e| Error::io(t, e))
        })
        .unwrap();
        let w = tracked_writes();
        assert!(!w.in_flight.contains(&tmp) && w.finished.contains(&path));
        assert!(w.started.contains(&path));
        let err = write_atomically(&dir.path().join("w"), |t| {
            fs::write(t, b"w").map_err(|e| Error::io(t, e))?;
            Err(Error::invalid("x", 1, "fails"))
        });
        assert!(err.is_err());
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file"
        );
    }

    #[test]
    fn write_then_read_round_trips_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("y.json");
        write_json_atomically(&path, &serde_json::json!({"format": "f", "n": 7})).unwrap();
        let t: Tagged = read_versioned_json(&path, "f", FIXES).unwrap();
        assert_eq!(
            t,
            Tagged {
                format: "f".into(),
                n: 7
            }
        );
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
