//! Atomic file output: write under a temporary name in the target's folder,
//! then rename, so a crash or kill never leaves a half-written file at the
//! final name.
use crate::error::{Error, Result};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

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
/// On error the temporary file is removed.
pub fn write_atomically<F>(path: &Path, write: F) -> Result<()>
where
    F: FnOnce(&Path) -> Result<()>,
{
    let tmp = temp_sibling(path);
    match write(&tmp) {
        Ok(()) => fs::rename(&tmp, path).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            Error::io(path, e)
        }),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
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

/// Runs `work`, which may create the folder `dir`; when it fails and `dir`
/// did not exist before, removes what the run created — `dir`, or its
/// highest ancestor that did not exist either — so a run that refuses its
/// input or fails leaves no empty or half-filled output folder. A folder
/// that existed before is never removed.
pub fn remove_if_created<T>(dir: &Path, work: impl FnOnce() -> Result<T>) -> Result<T> {
    let created = dir
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
        .last()
        .map(Path::to_path_buf);
    // A panic (tch's methods panic on a libtorch error) is a failure too:
    // the folder goes, then the panic goes on to the binary's handler.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
    let failed = !matches!(result, Ok(Ok(_)));
    if let (true, Some(root)) = (failed, created) {
        if root.is_dir() {
            if let Err(e) = fs::remove_dir_all(&root) {
                eprintln!(
                    "warning: could not remove {} after the failure: {e}",
                    root.display()
                );
            }
        }
    }
    result.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
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
