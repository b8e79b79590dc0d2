//! Finding the dataset files: a local directory first, then the canonical files from a list
//! of mirrors, each checked against its MD5 before it is written (atomically) into the cache.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use md5::{Digest, Md5};

use crate::error::{Error, Result};
use crate::fsutil::write_atomic;

/// One file of a dataset: its canonical name and the MD5 of the canonical `.gz` archive.
#[derive(Debug, Clone, Copy)]
pub struct RemoteFile {
    /// Canonical file name, e.g. `train-images-idx3-ubyte.gz`.
    pub name: &'static str,
    /// Lower-case hex MD5 of the archive as the mirrors serve it.
    pub md5: &'static str,
}

/// A downloadable IDX dataset: its four files and where to find them.
#[derive(Debug, Clone, Copy)]
pub struct DatasetSpec {
    /// Short name, also the cache sub-folder.
    pub name: &'static str,
    /// Training images, training labels, test images, test labels.
    pub files: [RemoteFile; 4],
    /// Base URLs tried in order.
    pub mirrors: &'static [&'static str],
}

/// MNIST. File names and MD5 sums as torchvision lists them (and `shared/data/mnist/README.md`).
pub const MNIST: DatasetSpec = DatasetSpec {
    name: "mnist",
    files: [
        RemoteFile {
            name: "train-images-idx3-ubyte.gz",
            md5: "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        },
        RemoteFile {
            name: "train-labels-idx1-ubyte.gz",
            md5: "d53e105ee54ea40749a09fcbcd1e9432",
        },
        RemoteFile {
            name: "t10k-images-idx3-ubyte.gz",
            md5: "9fb629c4189551a2d022fa330f9573f3",
        },
        RemoteFile {
            name: "t10k-labels-idx1-ubyte.gz",
            md5: "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ],
    // The mirrors torchvision uses, in its order.
    mirrors: &[
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ],
};

/// Environment variable naming the data directory.
pub const DATA_ENV: &str = "MNIST_AE_DATA";
/// Environment variable overriding the mirror list (comma-separated base URLs).
pub const MIRRORS_ENV: &str = "MNIST_AE_MIRRORS";

/// The default cache folder: `$XDG_CACHE_HOME/mnist-ae/<name>` or `~/.cache/mnist-ae/<name>`.
pub fn default_cache_dir(spec: &DatasetSpec) -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("mnist-ae").join(spec.name)
}

/// The data directory: the flag, else `MNIST_AE_DATA`, else the cache folder.
pub fn resolve_data_dir(flag: Option<&Path>, spec: &DatasetSpec) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    match std::env::var_os(DATA_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => default_cache_dir(spec),
    }
}

/// The local path of a dataset file: `name` (gzip) or the same name without `.gz` (raw).
pub fn find_local(dir: &Path, name: &str) -> Option<PathBuf> {
    let gz = dir.join(name);
    if gz.exists() {
        return Some(gz);
    }
    let raw = dir.join(name.trim_end_matches(".gz"));
    raw.exists().then_some(raw)
}

/// The mirrors to try: `MNIST_AE_MIRRORS` when set, else the spec's list.
pub fn mirrors(spec: &DatasetSpec) -> Vec<String> {
    match std::env::var(MIRRORS_ENV) {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        _ => spec.mirrors.iter().map(|s| s.to_string()).collect(),
    }
}

/// Lower-case hex MD5 of `bytes`.
pub fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn fetch(url: &str) -> std::result::Result<Vec<u8>, String> {
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(10))
        .timeout_read(Duration::from_secs(60))
        .build();
    let resp = agent.get(url).call().map_err(|e| e.to_string())?;
    let mut body = Vec::new();
    resp.into_reader()
        .take(1 << 30)
        .read_to_end(&mut body)
        .map_err(|e| format!("reading body: {e}"))?;
    Ok(body)
}

/// Downloads `file` into `dir`, trying each mirror until one serves bytes with the right MD5.
/// Nothing is written unless the checksum matches; the write is atomic.
pub fn download(file: &RemoteFile, dir: &Path, mirrors: &[String]) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let dest = dir.join(file.name);
    let mut tried = Vec::new();
    for base in mirrors {
        let url = format!("{}/{}", base.trim_end_matches('/'), file.name);
        eprintln!("downloading {url}");
        match fetch(&url) {
            Ok(body) => {
                let got = md5_hex(&body);
                if got == file.md5 {
                    write_atomic(&dest, &body)?;
                    return Ok(dest);
                }
                tried.push(format!(
                    "{url}: MD5 {got} does not match the expected {}",
                    file.md5
                ));
            }
            Err(e) => tried.push(format!("{url}: {e}")),
        }
    }
    Err(Error::Download(format!(
        "{} from every mirror failed ({}). HINT: copy the four IDX files into {} or point --data-dir / {DATA_ENV} at them",
        file.name,
        tried.join("; "),
        dir.display()
    )))
}

/// Paths of the dataset's four files in `dir`, downloading the missing ones when allowed.
pub fn ensure_files(spec: &DatasetSpec, dir: &Path, allow_download: bool) -> Result<[PathBuf; 4]> {
    let mut out: Vec<PathBuf> = Vec::with_capacity(4);
    for f in &spec.files {
        match find_local(dir, f.name) {
            Some(p) => out.push(p),
            None if allow_download => out.push(download(f, dir, &mirrors(spec))?),
            None => {
                return Err(Error::Data(format!(
                    "dataset not found: {} is missing from {}. HINT: drop --no-download to fetch it, or point --data-dir / {DATA_ENV} at a folder with the IDX files",
                    f.name,
                    dir.display()
                )))
            }
        }
    }
    Ok([
        out[0].clone(),
        out[1].clone(),
        out[2].clone(),
        out[3].clone(),
    ])
}
