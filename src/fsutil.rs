//! Files in and out, safely.
//! - Writes are atomic: every file the program writes goes to a temporary sibling first and is
//!   renamed over the target, so a crash mid-write never leaves a half-written file behind. A
//!   target that exists but is not a regular file (a device such as `/dev/null`, a FIFO, a
//!   directory, a symbolic link) is never replaced.
//! - Reads accept regular files only (symbolic links to them included): a FIFO or a device
//!   would block forever or never end.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

fn tmp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Refuses to replace `path` when it exists and is not a regular file.
pub fn check_replaceable(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.is_file() => Err(Error::bad_file(
            path,
            format!(
                "is a {}, not a regular file; refusing to replace it",
                crate::rundir::kind_of(&meta)
            ),
        )),
        _ => Ok(()),
    }
}

/// Whether two paths name the same file or folder however spelled: the same place when both
/// exist, else the same name in the same folder (for a file not yet written).
pub fn same_path(a: &Path, b: &Path) -> bool {
    if a == b {
        return true;
    }
    if let (Ok(a), Ok(b)) = (a.canonicalize(), b.canonicalize()) {
        return a == b;
    }
    let resolve = |p: &Path| {
        let parent = p
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::canonicalize(parent)
            .map(|d| d.join(p.file_name().unwrap_or_default()))
            .unwrap_or_else(|_| p.to_path_buf())
    };
    resolve(a) == resolve(b)
}

/// Checks that `path` is a regular file (following symbolic links) before it is read.
pub fn check_readable(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_file() {
        Ok(())
    } else {
        Err(Error::bad_file(
            path,
            format!(
                "is a {}, expected a regular file",
                crate::rundir::kind_of(&meta)
            ),
        ))
    }
}

/// Reads a whole regular file.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    check_readable(path)?;
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// Reads a whole regular file as UTF-8 text.
pub fn read_to_string(path: &Path) -> Result<String> {
    check_readable(path)?;
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

/// Writes `bytes` to a synced temporary sibling of `path` and returns its path; on error
/// nothing is left behind.
fn write_tmp(path: &Path, bytes: &[u8]) -> Result<PathBuf> {
    check_replaceable(path)?;
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
    }
    let tmp = tmp_path(path);
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    match res {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(Error::io(path, e))
        }
    }
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = write_tmp(path, bytes)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Writes two files so that each is replaced atomically and the two renames happen back to
/// back, after both contents are on disk.
pub fn write_atomic_pair(files: [(&Path, &[u8]); 2]) -> Result<()> {
    let first = write_tmp(files[0].0, files[0].1)?;
    let second = write_tmp(files[1].0, files[1].1).inspect_err(|_| {
        let _ = std::fs::remove_file(&first);
    })?;
    std::fs::rename(&first, files[0].0).map_err(|e| Error::io(files[0].0, e))?;
    std::fs::rename(&second, files[1].0).map_err(|e| Error::io(files[1].0, e))
}

/// Writes a value as pretty JSON, atomically.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut s = serde_json::to_string_pretty(value)
        .map_err(|e| Error::bad_file(path, format!("serialising JSON: {e}")))?;
    s.push('\n');
    write_atomic(path, s.as_bytes())
}

/// Runs `draw` on a temporary path with the same extension as `path`, then renames it over
/// `path`: for writers (plotters, image) that insist on opening the file themselves.
pub fn with_atomic_path<F>(path: &Path, draw: F) -> Result<()>
where
    F: FnOnce(&Path) -> Result<()>,
{
    check_replaceable(path)?;
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = tmp_path(path).with_extension(format!("tmp.{ext}"));
    if let Err(e) = draw(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}
