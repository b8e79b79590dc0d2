//! The run folder on disk, and any folder this program writes into (a sweep folder, an
//! analysis's `--out`): reading a run's config and data, and who may write the folder, when.
//!
//! - **One writer at a time.** Every command that writes into a folder first takes an exclusive
//!   OS lock (`flock`) on `.mnist-ae.lock` inside it, and keeps it until it is done. The OS drops
//!   the lock when the process ends, however it ends, so a killed run never leaves a stale lock.
//!   A second process fails at once, naming the folder and the holder's PID. Within one process
//!   the lock is shared, so nested commands (`train --report`: training, then every analysis
//!   and the report) hold the folder throughout.
//! - **Only our folders.** A folder is written only if it is empty (or new) or already ours: it
//!   holds the lock file, or a `config.json` this program can read, or (folders written before
//!   the lock file existed) nothing but the outputs of our analyses, or runs of ours in
//!   `latent-*` sub-folders (a sweep).
//!
//! On a file system without `flock` (some network mounts) the lock cannot be taken: the
//! command says so and goes on unprotected rather than refusing all work.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use crate::config::TrainConfig;
use crate::data::{self, Dataset, DatasetSource, LoadOptions, Split};
use crate::error::{Error, Result};

/// The lock file in every folder this program writes; its content is the holder's PID and
/// command, for the message the next writer sees.
pub const LOCK_FILE: &str = ".mnist-ae.lock";
/// The config file of a run (what makes a folder recognisably a run).
pub const CONFIG_FILE: &str = "config.json";

/// An exclusive hold on a folder for writing, released when the last clone is dropped; a folder
/// that taking it created, and into which nothing was written, is then removed.
#[derive(Debug, Clone)]
pub struct DirLock {
    inner: Arc<Held>,
}

#[derive(Debug)]
struct Held {
    dir: PathBuf,
    // Keeps the OS lock: closing the file releases it.
    file: Option<File>,
    /// Whether taking the lock created the folder.
    created: bool,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut held = registry().lock().unwrap_or_else(|e| e.into_inner());
        // A command that failed before writing anything leaves no folder it created behind.
        self.discard_if_unused();
        // Closed under the registry's lock, so no thread of this process can find the folder
        // unregistered while this file still holds the OS lock.
        self.file.take();
        if held.get(&self.dir).is_some_and(|w| w.strong_count() == 0) {
            held.remove(&self.dir);
        }
    }
}

/// The folders this process holds, so that nested commands share one lock: a second `flock`
/// on the same file from the same process would conflict with the first.
fn registry() -> &'static Mutex<HashMap<PathBuf, Weak<Held>>> {
    static HELD: std::sync::OnceLock<Mutex<HashMap<PathBuf, Weak<Held>>>> =
        std::sync::OnceLock::new();
    HELD.get_or_init(|| Mutex::new(HashMap::new()))
}

impl Held {
    /// Removes the folder, while still holding it, when taking the lock created it and it
    /// holds nothing but the lock file. A folder that was there before, or in which anything
    /// was written, is left.
    fn discard_if_unused(&self) {
        let dir = &self.dir;
        let only_lock = self.created
            && std::fs::read_dir(dir).is_ok_and(|entries| {
                entries
                    .map(|e| e.map(|e| e.file_name()))
                    .collect::<std::io::Result<Vec<_>>>()
                    .is_ok_and(|names| names.iter().all(|n| n == LOCK_FILE))
            });
        if only_lock {
            // Best effort: a folder left behind is only untidy.
            let _ = std::fs::remove_file(dir.join(LOCK_FILE));
            let _ = std::fs::remove_dir(dir);
        }
    }
}

impl DirLock {
    /// Creates `dir` if needed, checks that it is empty or ours, and locks it for this process;
    /// `command` (e.g. "train") is recorded for other processes' error messages.
    pub fn acquire(dir: &Path, command: &str) -> Result<DirLock> {
        let created = !dir.exists();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let key = dir.canonicalize().map_err(|e| Error::io(dir, e))?;
        let mut held = registry().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(inner) = held.get(&key).and_then(Weak::upgrade) {
            return Ok(DirLock { inner });
        }
        let lock_path = key.join(LOCK_FILE);
        if !is_ours(&key)? {
            return Err(Error::NotOurs {
                path: dir.to_path_buf(),
                msg: format!(
                    "is not empty and is not an mnist-ae folder (it holds {}); nothing was written. \
                     HINT: choose a new or empty folder",
                    listing(&key)
                ),
            });
        }
        if let Ok(meta) = std::fs::symlink_metadata(&lock_path) {
            if !meta.is_file() {
                return Err(Error::bad_file(
                    &lock_path,
                    format!("is a {}, not our lock file", kind_of(&meta)),
                ));
            }
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| Error::io(&lock_path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let who = if holder.is_empty() {
                    "another mnist-ae process".to_string()
                } else {
                    format!("another mnist-ae process (PID {holder})")
                };
                return Err(Error::Locked {
                    path: dir.to_path_buf(),
                    msg: format!(
                        "is in use by {who}; nothing was written. HINT: wait for it to finish, or write to another folder"
                    ),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                crate::errln!(
                    "warning: {}: cannot lock ({e}); going on without protection against a second writer",
                    lock_path.display()
                );
            }
        }
        // Best effort: the PID only makes another process's message more helpful.
        let _ = file.set_len(0).and_then(|()| {
            file.seek(SeekFrom::Start(0))?;
            writeln!(file, "{}, {command}", std::process::id())
        });
        let inner = Arc::new(Held {
            dir: key.clone(),
            file: Some(file),
            created,
        });
        held.insert(key, Arc::downgrade(&inner));
        Ok(DirLock { inner })
    }

    /// The locked folder (canonical path).
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }
}

/// The files our analyses, reports and sweeps write beside a run (not the run's own files:
/// a stranger's `config.json` or `metrics.jsonl` must not make a folder look like ours).
const OUTPUTS: &[&str] = &[
    "anomalies.png",
    "anomaly.json",
    "anomaly_hist.png",
    "anomaly_scores.csv",
    "denoise.json",
    "denoise.png",
    "eval.json",
    "explorer-classifier.json",
    "interpolate.json",
    "interpolate.png",
    "reconstruct.json",
    "reconstructions.png",
    "report.html",
    "samples.json",
    "samples.png",
    "sweep.csv",
    "sweep.json",
    "sweep.md",
    "sweep.png",
    "tsne.csv",
    "tsne.json",
    "tsne.png",
];

/// Whether `dir` may be written: empty, or holding our lock file or a readable `config.json`,
/// or nothing but our analyses' outputs (`classify-*` folders and `reconstruct-*.png`
/// pictures included), or runs of ours in
/// `latent-*` sub-folders (a sweep).
pub fn is_ours(dir: &Path) -> Result<bool> {
    let names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    if names.is_empty() || dir.join(LOCK_FILE).exists() || is_run(dir) {
        return Ok(true);
    }
    if names
        .iter()
        .any(|n| n.starts_with("latent-") && is_run(&dir.join(n)))
    {
        return Ok(true);
    }
    Ok(names.iter().all(|n| {
        OUTPUTS.contains(&n.as_str())
            || n.starts_with("classify-")
            || (n.starts_with("reconstruct-") && n.ends_with(".png"))
    }))
}

/// Whether `dir` holds a `config.json` that this program reads as a run's config.
pub fn is_run(dir: &Path) -> bool {
    let path = dir.join(CONFIG_FILE);
    crate::fsutil::read_to_string(&path)
        .ok()
        .is_some_and(|t| serde_json::from_str::<crate::config::TrainConfig>(&t).is_ok())
}

/// A short listing of a folder's entries for an error message.
fn listing(dir: &Path) -> String {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|it| {
            it.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let n = names.len();
    names.truncate(4);
    let mut s = names.join(", ");
    if n > 4 {
        s.push_str(&format!(" and {} more", n - 4));
    }
    s
}

/// What a non-regular file is, for messages.
pub fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "directory"
    } else if t.is_symlink() {
        "symbolic link"
    } else if t.is_file() {
        "regular file"
    } else {
        special_kind(&t)
    }
}

#[cfg(unix)]
fn special_kind(t: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_fifo() {
        "FIFO (named pipe)"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

#[cfg(not(unix))]
fn special_kind(_: &std::fs::FileType) -> &'static str {
    "special file"
}

/// Reads a run's `config.json`.
pub fn read_config(run_dir: &Path) -> Result<TrainConfig> {
    let path = run_dir.join(CONFIG_FILE);
    if !run_dir.is_dir() {
        return Err(Error::Data(format!(
            "{}: run folder not found",
            run_dir.display()
        )));
    }
    if std::fs::symlink_metadata(&path).is_err() {
        return Err(Error::Data(format!(
            "{}: not a run folder (it has no {CONFIG_FILE}); HINT: give the folder `mnist-ae train --out` wrote",
            run_dir.display()
        )));
    }
    let text = crate::fsutil::read_to_string(&path)?;
    parse_config(&path, &text)
}

/// Parses and validates the text of a `config.json`; `path` only names the file in errors.
pub fn parse_config(path: &Path, text: &str) -> Result<TrainConfig> {
    let cfg: TrainConfig =
        serde_json::from_str(text).map_err(|e| Error::bad_file(path, e.to_string()))?;
    cfg.validate()
        .map_err(|e| Error::bad_file(path, e.to_string()))?;
    Ok(cfg)
}

/// Loads the dataset a config names.
pub fn load_data(config: &TrainConfig, data_dir: &Path, allow_download: bool) -> Result<Dataset> {
    let source = DatasetSource::parse(&config.dataset);
    data::load(&load_options(config, &source, data_dir, allow_download))
}

/// Loads only a run's test images (the other files are neither read nor downloaded).
pub fn load_test_data(
    config: &TrainConfig,
    data_dir: &Path,
    allow_download: bool,
) -> Result<Split> {
    let source = DatasetSource::parse(&config.dataset);
    data::load_test(&load_options(config, &source, data_dir, allow_download))
}

fn load_options<'a>(
    config: &TrainConfig,
    source: &'a DatasetSource,
    data_dir: &'a Path,
    allow_download: bool,
) -> LoadOptions<'a> {
    let folder = match source {
        DatasetSource::Folder(p) => p.as_path(),
        DatasetSource::Named(_) => data_dir,
    };
    LoadOptions {
        spec: source.spec(),
        dir: folder,
        allow_download,
        valid_fraction: config.valid_fraction,
        seed: config.seed,
        limit_train: config.limit_train,
        limit_test: None,
    }
}
