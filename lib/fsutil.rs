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
