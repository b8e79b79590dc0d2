//! Helpers shared by the integration tests: the real MNIST folder and the real binary.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mnist_ae::data::idx::{encode_images, encode_labels};

/// The MNIST folder: `$MNIST_AE_DATA`, else `../shared/data/mnist` beside the repository.
/// Tests that need it fail (not skip) when it is missing: CI always has it.
pub fn mnist_dir() -> PathBuf {
    let dir = std::env::var_os("MNIST_AE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/mnist"));
    assert!(
        dir.join("train-images-idx3-ubyte.gz").exists(),
        "real MNIST not found in {}; set MNIST_AE_DATA",
        dir.display()
    );
    dir
}

/// Runs the built `mnist-ae` with `args`, offline.
pub fn mnist_ae(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mnist-ae"))
        .args(args)
        .env("MNIST_AE_MIRRORS", "http://127.0.0.1:9/")
        .output()
        .expect("running mnist-ae")
}

/// Runs and asserts success, returning stdout.
pub fn ok(args: &[&str]) -> String {
    let out = mnist_ae(args);
    assert!(
        out.status.success(),
        "mnist-ae {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs and asserts a clean failure (exit 2, one `error:` line, no panic); returns stderr.
pub fn fails(args: &[&str]) -> String {
    let out = mnist_ae(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(2),
        "mnist-ae {args:?} should fail with 2:\n{err}"
    );
    assert!(!err.contains("panicked"), "panic: {err}");
    assert!(
        err.lines().any(|l| l.starts_with("error: ")),
        "no error line: {err}"
    );
    err
}

/// Held by a test from seeding burn's random generator until its model has been used (burn
/// draws a model's weights on their first use): the generator is one for all the tests
/// running at once, so two tests seeding it together would each get draws meant for the
/// other.
pub fn seed_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A short real run shared by the tests of later commands: `mlp` with a 16-d code on 3,000
/// MNIST images for 2 epochs (validation MSE about 0.03), trained once per test process.
/// Tests run at once, so commands on it write elsewhere (`--out`), even those expected to
/// fail: a command writing into a run folder holds its lock, and another test's command on
/// the folder meanwhile would be refused ("in use by another mnist-ae process").
pub fn short_run() -> PathBuf {
    static RUN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    RUN.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep().join("run");
        let data = mnist_dir();
        ok(&[
            "train",
            "--model",
            "mlp",
            "--latent-dim",
            "16",
            "--batch-size",
            "32",
            "--epochs",
            "2",
            "--limit-train",
            "3000",
            "--data-dir",
            data.to_str().unwrap(),
            "--no-download",
            "--out",
            dir.to_str().unwrap(),
            "-q",
        ]);
        dir
    })
    .clone()
}

/// Borrowed views of owned arguments, for [`ok`] and [`fails`].
pub fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A copy of the shared short run (trained once per test process) to change freely.
pub fn copy_of_short_run(to: &Path) -> PathBuf {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(short_run()).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
    to.to_path_buf()
}

/// Writes `bytes` gzip-compressed to `path`.
pub fn write_gz(path: &Path, bytes: &[u8]) {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    std::fs::write(path, enc.finish().unwrap()).unwrap();
}

/// A data folder of tiny valid IDX files (gz for images, raw for labels).
pub fn tiny_dataset(dir: &Path, n_train: usize, n_test: usize) {
    let px = |n: usize| (0..n * 784).map(|i| (i % 251) as u8).collect::<Vec<u8>>();
    let lb = |n: usize| (0..n).map(|i| (i % 10) as u8).collect::<Vec<u8>>();
    write_gz(
        &dir.join("train-images-idx3-ubyte.gz"),
        &encode_images(n_train, 28, 28, &px(n_train)),
    );
    std::fs::write(
        dir.join("train-labels-idx1-ubyte"),
        encode_labels(&lb(n_train)),
    )
    .unwrap();
    write_gz(
        &dir.join("t10k-images-idx3-ubyte.gz"),
        &encode_images(n_test, 28, 28, &px(n_test)),
    );
    std::fs::write(
        dir.join("t10k-labels-idx1-ubyte"),
        encode_labels(&lb(n_test)),
    )
    .unwrap();
}
