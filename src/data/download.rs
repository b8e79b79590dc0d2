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
    /// Base URLs tried in order (none: local files only).
    pub mirrors: &'static [&'static str],
    /// Class names, in label order.
    pub classes: &'static [&'static str],
}

/// The canonical IDX file names, shared by MNIST, Fashion-MNIST and KMNIST.
const fn files(md5: [&'static str; 4]) -> [RemoteFile; 4] {
    [
        RemoteFile {
            name: "train-images-idx3-ubyte.gz",
            md5: md5[0],
        },
        RemoteFile {
            name: "train-labels-idx1-ubyte.gz",
            md5: md5[1],
        },
        RemoteFile {
            name: "t10k-images-idx3-ubyte.gz",
            md5: md5[2],
        },
        RemoteFile {
            name: "t10k-labels-idx1-ubyte.gz",
            md5: md5[3],
        },
    ]
}

const DIGITS: &[&str] = &["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

/// MNIST. File names and MD5 sums as torchvision lists them (and `shared/data/mnist/README.md`).
pub const MNIST: DatasetSpec = DatasetSpec {
    name: "mnist",
    files: files([
        "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "d53e105ee54ea40749a09fcbcd1e9432",
        "9fb629c4189551a2d022fa330f9573f3",
        "ec29112dd5afa0611ce80d1b7f02629c",
    ]),
    // The mirrors torchvision uses, in its order.
    mirrors: &[
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ],
    classes: DIGITS,
};

/// Fashion-MNIST (Xiao et al., 2017): file names, MD5 sums and mirror as torchvision lists them.
pub const FASHION_MNIST: DatasetSpec = DatasetSpec {
    name: "fashion-mnist",
    files: files([
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "25c81989df183df01b3e8a0aad5dffbe",
        "bef4ecab320f06d8554ea6380940ec79",
        "bb300cfdad3c16e7a12a480ee83cd310",
    ]),
    mirrors: &["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
    classes: &[
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],
};

/// Kuzushiji-MNIST (Clanuwat et al., 2018): as torchvision lists it.
pub const KMNIST: DatasetSpec = DatasetSpec {
    name: "kmnist",
    files: files([
        "bdb82020997e1d708af4cf47b453dcf7",
        "e144d726b3acfaa3e44228e80efcd344",
        "5c965bf0a639b31b8f53240b1b52f4d7",
        "7320c461ea6c1c855c0b718fb2a4b134",
    ]),
    mirrors: &["http://codh.rois.ac.jp/kmnist/dataset/kmnist/"],
    classes: &["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"],
};

/// Any folder with the four canonical IDX file names: read locally, never downloaded.
pub const LOCAL: DatasetSpec = DatasetSpec {
    name: "local",
    files: files(["", "", "", ""]),
    mirrors: &[],
    classes: DIGITS,
};

/// The named datasets.
pub const DATASETS: [&DatasetSpec; 3] = [&MNIST, &FASHION_MNIST, &KMNIST];

/// Where a dataset named in a config lives: a known name, or any other string taken as the
/// path of a folder of IDX files.
#[derive(Debug, Clone)]
pub enum DatasetSource {
    /// A named dataset (downloadable).
    Named(&'static DatasetSpec),
    /// A folder of IDX files with the canonical names.
    Folder(PathBuf),
}

impl DatasetSource {
    /// Reads a `--dataset` value.
    pub fn parse(name: &str) -> DatasetSource {
        match DATASETS.iter().find(|s| s.name == name) {
            Some(s) => DatasetSource::Named(s),
            None => DatasetSource::Folder(PathBuf::from(name)),
        }
    }

    /// The spec (file names, mirrors, class names).
    pub fn spec(&self) -> &'static DatasetSpec {
        match self {
            DatasetSource::Named(s) => s,
            DatasetSource::Folder(_) => &LOCAL,
        }
    }

    /// The class names.
    pub fn classes(&self) -> Vec<String> {
        self.spec().classes.iter().map(|c| c.to_string()).collect()
    }

    /// The data folder: the folder itself, or for a named dataset `flag`, else (MNIST only)
    /// `$MNIST_AE_DATA`, else the cache folder.
    pub fn dir(&self, flag: Option<&Path>) -> PathBuf {
        match self {
            DatasetSource::Folder(p) => p.clone(),
            DatasetSource::Named(s) => resolve_data_dir(flag, s),
        }
    }
}

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
    if spec.name != MNIST.name {
        return default_cache_dir(spec);
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

/// Most bytes read from a mirror for one file: every canonical file of the named datasets is
/// far smaller (MNIST's training images are under 10 MB), so a mirror that sends more is cut off here
/// instead of being read to its end before the checksum refuses it.
pub const MAX_DOWNLOAD: u64 = 64 << 20;

fn fetch(url: &str) -> std::result::Result<Vec<u8>, String> {
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(10))
        .timeout_read(Duration::from_secs(60))
        .build();
    let resp = agent.get(url).call().map_err(|e| e.to_string())?;
    let too_big = || {
        format!("sends more than {MAX_DOWNLOAD} bytes, more than any dataset file; stopped reading")
    };
    if let Some(len) = resp
        .header("Content-Length")
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        if len > MAX_DOWNLOAD {
            return Err(too_big());
        }
    }
    let mut body = Vec::new();
    resp.into_reader()
        .take(MAX_DOWNLOAD + 1)
        .read_to_end(&mut body)
        .map_err(|e| format!("reading body: {e}"))?;
    if body.len() as u64 > MAX_DOWNLOAD {
        return Err(too_big());
    }
    Ok(body)
}

/// Downloads `file` into `dir`, trying each mirror until one serves bytes with the right MD5.
/// Nothing is written unless the checksum matches, not even `dir` (so a failed download leaves no
/// empty cache folder behind); the write is atomic.
pub fn download(file: &RemoteFile, dir: &Path, mirrors: &[String]) -> Result<PathBuf> {
    let dest = dir.join(file.name);
    let mut tried = Vec::new();
    for base in mirrors {
        let url = format!("{}/{}", base.trim_end_matches('/'), file.name);
        crate::errln!("downloading {url}");
        match fetch(&url) {
            Ok(body) => {
                let got = md5_hex(&body);
                if got == file.md5 {
                    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
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
    Ok([
        ensure_file(spec, 0, dir, allow_download)?,
        ensure_file(spec, 1, dir, allow_download)?,
        ensure_file(spec, 2, dir, allow_download)?,
        ensure_file(spec, 3, dir, allow_download)?,
    ])
}

/// Like [`ensure_files`] for the test images and labels only (files 3 and 4).
pub fn ensure_test_files(
    spec: &DatasetSpec,
    dir: &Path,
    allow_download: bool,
) -> Result<[PathBuf; 2]> {
    Ok([
        ensure_file(spec, 2, dir, allow_download)?,
        ensure_file(spec, 3, dir, allow_download)?,
    ])
}

/// The path of file `i` of the dataset in `dir`, downloaded first when missing and allowed.
fn ensure_file(spec: &DatasetSpec, i: usize, dir: &Path, allow_download: bool) -> Result<PathBuf> {
    let f = &spec.files[i];
    match find_local(dir, f.name) {
        Some(p) => Ok(p),
        None if allow_download => download(f, dir, &mirrors(spec)),
        None if spec.mirrors.is_empty() => Err(Error::Data(format!(
            "{}: missing from the dataset folder {} (it needs train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte, each raw or .gz)",
            f.name,
            dir.display()
        ))),
        None => {
            // The variable names MNIST's folder only (`resolve_data_dir`).
            let point = if spec.name == MNIST.name {
                format!("--data-dir / {DATA_ENV}")
            } else {
                "--data-dir".to_string()
            };
            Err(Error::Data(format!(
                "dataset not found: {} is missing from {}. HINT: drop --no-download to fetch it, or point {point} at a folder with the IDX files",
                f.name,
                dir.display()
            )))
        }
    }
}
