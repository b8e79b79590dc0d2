//! The library's error type: one enum, every variant a complete one-line message.

use std::path::PathBuf;

/// Everything that can go wrong in the library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation on a named file failed.
    #[error("{path}: {cause}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error: part of this message, so not a `source` (which would print
        /// it a second time in a chain of causes).
        cause: std::io::Error,
    },
    /// A file's content is not what it must be (bad magic, truncated, wrong size...).
    #[error("{path}: {msg}")]
    BadFile {
        /// The file involved.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// A configuration value or flag is invalid.
    #[error("invalid {name}: {msg}")]
    InvalidConfig {
        /// The flag or key.
        name: String,
        /// Why it is invalid.
        msg: String,
    },
    /// The dataset could not be found or fetched.
    #[error("{0}")]
    Data(String),
    /// A download failed on every mirror.
    #[error("download failed: {0}")]
    Download(String),
    /// A checkpoint does not match the model it is loaded into.
    #[error("{path}: checkpoint does not match the model: {msg}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What does not match.
        msg: String,
    },
    /// Another process is writing the folder.
    #[error("{path}: {msg}")]
    Locked {
        /// The folder.
        path: PathBuf,
        /// Who holds it, and what to do.
        msg: String,
    },
    /// A folder holds files that are not ours, so nothing is written into it.
    #[error("{path}: {msg}")]
    NotOurs {
        /// The folder.
        path: PathBuf,
        /// What it holds, and what to do.
        msg: String,
    },
    /// The requested compute device is unavailable.
    #[error("{0}")]
    Device(String),
    /// Training diverged.
    #[error("{0}")]
    Diverged(String),
    /// Drawing a picture or plot failed.
    #[error("drawing {path}: {msg}")]
    Plot {
        /// The output file.
        path: PathBuf,
        /// The drawing backend's message.
        msg: String,
    },
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            cause: source,
        }
    }

    /// A bad-content error on `path`.
    pub fn bad_file(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::BadFile {
            path: path.into(),
            msg: msg.into(),
        }
    }

    /// An invalid configuration value.
    pub fn config(name: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::InvalidConfig {
            name: name.into(),
            msg: msg.into(),
        }
    }
}
