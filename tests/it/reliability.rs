//! Reliability: what two processes, signals, closed pipes, copied files and hostile inputs can
//! do to a run folder or to the numbers shown. One test per class of failure.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use mnist_ae::data::idx::encode_images;

use crate::common::{
    copy_of_short_run, fails, mnist_dir, ok, short_run, strs, tiny_dataset, write_gz,
};

/// The real binary, offline (the mirror list points at a closed local port).
fn cmd(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mnist-ae"));
    c.args(args).env("MNIST_AE_MIRRORS", "http://127.0.0.1:9/");
    c
}

/// Arguments of a short mlp run on real MNIST into `out` (1 epoch unless `extra` says).
fn quick(out: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "train",
        "--model",
        "mlp",
        "--latent-dim",
        "8",
        "--limit-train",
        "1000",
        "--data-dir",
        mnist_dir().to_str().unwrap(),
        "--no-download",
        "--out",
        out.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if !extra.contains(&"--epochs") {
        v.push("--epochs=1".into());
    }
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn signal(child: &Child, sig: &str) {
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args([sig, &pid])
        .status()
        .unwrap()
        .success());
}

/// Spawns `args` with stderr piped and reads stderr until a line starting with `prefix`;
/// returns the child (still running) and the reader.
#[allow(clippy::zombie_processes)] // the running child goes back to the caller, who waits
fn spawn_until(args: &[&str], prefix: &str) -> (Child, BufReader<std::process::ChildStderr>) {
    let mut child = cmd(args).stderr(Stdio::piped()).spawn().unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap() == 0 {
            panic!("the process ended before printing `{prefix}`:\n{seen}");
        }
        seen.push_str(&line);
        if line.starts_with(prefix) {
            return (child, err);
        }
    }
}

fn sha256(path: &Path) -> String {
    mnist_ae::train::checkpoint::sha256_hex(&std::fs::read(path).unwrap())
}

/// Class 1: one writer per folder. A training run is frozen (SIGSTOP) while it holds its
/// folder, so the competing commands run while it is certainly inside training.
#[test]
fn a_folder_being_written_is_locked_against_every_other_writer() {
    let tmp = tempfile::tempdir().unwrap();
    let run = copy_of_short_run(&tmp.path().join("run"));
    let r = run.to_str().unwrap();
    let d = mnist_dir();
    let args = [
        "train",
        "--resume",
        r,
        "--epochs",
        "40",
        "--data-dir",
        d.to_str().unwrap(),
        "--no-download",
    ];
    let (mut child, err) = spawn_until(&args, "epoch 3/40");
    signal(&child, "-STOP");
    let config_before = std::fs::read(run.join("config.json")).unwrap();
    let pid = child.id();
    let attempts: [&[&str]; 5] = [
        &["train", "--out", r, "--model", "conv64", "--no-download"],
        &["train", "--resume", r, "--no-download"],
        &["eval", r, "--no-download"],
        &["sweep", "--out", r, "--latent-dims", "2", "--no-download"],
        &["report", r],
    ];
    for a in attempts {
        let e = fails(a);
        assert!(
            e.contains("is in use by another mnist-ae process")
                && e.contains(&format!("PID {pid}"))
                && e.contains(r),
            "{a:?}: {e}"
        );
    }
    assert_eq!(
        std::fs::read(run.join("config.json")).unwrap(),
        config_before
    );
    assert!(!run.join("eval.json").exists() && !run.join("report.html").exists());
    // The holder ends by a signal (no checkpoint wanted here); its lock goes with it.
    signal(&child, "-KILL");
    drop(err);
    child.wait().unwrap();
    ok(&[
        "eval",
        r,
        "--data-dir",
        d.to_str().unwrap(),
        "--no-download",
    ]);
}

/// Class 2: the resume state is bound to the weights it was saved with.
#[test]
fn a_resume_file_from_another_run_or_save_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    ok(&strs(&quick(&a, &["-q"])));
    ok(&strs(&quick(&b, &["-q", "--seed", "7"])));
    let before = std::fs::read(a.join("model.safetensors")).unwrap();
    // Same epoch, other run.
    std::fs::copy(b.join("resume.safetensors"), a.join("resume.safetensors")).unwrap();
    let e = fails(&[
        "train",
        "--resume",
        a.to_str().unwrap(),
        "--epochs",
        "2",
        "--no-download",
    ]);
    assert!(
        e.contains("resume.safetensors: does not belong to")
            && e.contains(&a.join("model.safetensors").display().to_string())
            && e.contains("SHA-256"),
        "{e}"
    );
    assert_eq!(std::fs::read(a.join("model.safetensors")).unwrap(), before);
    // Another epoch of the other run.
    let d = mnist_dir();
    ok(&[
        "train",
        "--resume",
        b.to_str().unwrap(),
        "--epochs",
        "2",
        "--data-dir",
        d.to_str().unwrap(),
        "--no-download",
        "-q",
    ]);
    std::fs::copy(b.join("resume.safetensors"), a.join("resume.safetensors")).unwrap();
    let e = fails(&[
        "train",
        "--resume",
        a.to_str().unwrap(),
        "--epochs",
        "2",
        "--no-download",
    ]);
    assert!(
        e.contains("does not belong to") && e.contains("epoch 2"),
        "{e}"
    );
}

/// Class 3: flags given with --resume are applied (more epochs) or refused, never ignored;
/// config.json never disagrees with the weights.
#[test]
fn flags_given_with_resume_are_applied_or_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let r = run.to_str().unwrap();
    ok(&strs(&quick(&run, &["-q", "--epochs", "2"])));
    let config = std::fs::read(run.join("config.json")).unwrap();
    let e = fails(&[
        "train",
        "--resume",
        r,
        "--lr",
        "0.01",
        "--model",
        "conv64",
        "--batch-size",
        "7",
    ]);
    assert!(
        e.contains("--lr 0.01 (the run has 0.001)")
            && e.contains("--model conv64 (the run has mlp)")
            && e.contains("--batch-size 7 (the run has 256)"),
        "{e}"
    );
    // Fewer epochs than done would make config.json disagree with the weights.
    let e = fails(&["train", "--resume", r, "--epochs", "1", "--no-download"]);
    assert!(e.contains("already trained 2 epochs"), "{e}");
    assert_eq!(std::fs::read(run.join("config.json")).unwrap(), config);
    // A flag equal to the run's value is no conflict; more epochs are applied and said.
    let d = mnist_dir();
    let out = cmd(&[
        "train",
        "--resume",
        r,
        "--epochs",
        "3",
        "--lr",
        "0.001",
        "--data-dir",
        d.to_str().unwrap(),
        "--no-download",
    ])
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("--epochs 3 replaces the run's 2 epochs"),
        "{err}"
    );
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["epochs"], 3);
    assert_eq!(
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count(),
        3
    );
}

/// Class 4: a sweep reuses a run only when its whole config equals the requested one.
#[test]
fn a_sweep_reuses_only_runs_with_the_same_config() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sweep");
    let o = out.to_str().unwrap();
    let d = mnist_dir();
    let sweep = |extra: &[&str]| {
        let mut a = vec![
            "sweep",
            "--model",
            "mlp",
            "--latent-dims",
            "2",
            "--epochs",
            "1",
            "--limit-train",
            "1000",
            "--data-dir",
            d.to_str().unwrap(),
            "--no-download",
            "--out",
            o,
        ];
        a.extend_from_slice(extra);
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    ok(&strs(&sweep(&["-q"])));
    let config = out.join("latent-2").join("config.json");
    let (cfg, weights) = (
        std::fs::read(&config).unwrap(),
        sha256(&out.join("latent-2").join("model.safetensors")),
    );
    let e = fails(&strs(&sweep(&["-q", "--lr", "0.05"])));
    assert!(
        e.contains("latent-2 holds a run made with other settings")
            && e.contains("lr: 0.001 → 0.05"),
        "{e}"
    );
    assert_eq!(std::fs::read(&config).unwrap(), cfg);
    // The same flags again: the run is reused as it is.
    let again = cmd(&strs(&sweep(&[]))).output().unwrap();
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("same settings: reused"));
    assert_eq!(
        sha256(&out.join("latent-2").join("model.safetensors")),
        weights
    );
}

/// Class 5: nothing that is not a regular file is replaced, and nothing is written into a
/// folder that holds someone else's files.
#[test]
fn files_and_folders_that_are_not_ours_are_left_alone() {
    use std::os::unix::fs::FileTypeExt;
    let tmp = tempfile::tempdir().unwrap();
    let run = short_run();
    let fifo = tmp.path().join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let dir = tmp.path().join("a-dir");
    std::fs::create_dir(&dir).unwrap();
    let link = tmp.path().join("a-link");
    std::os::unix::fs::symlink(&dir, &link).unwrap();
    // A character device like /dev/null, made here (as root; elsewhere mknod fails and the
    // case is left out) so that a regression cannot damage the machine's own /dev/null.
    let null = tmp.path().join("null");
    let mut targets = vec![fifo.clone(), dir.clone(), link];
    if Command::new("mknod")
        .args([null.to_str().unwrap(), "c", "1", "3"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        targets.push(null.clone());
    }
    for target in &targets {
        let t = target.to_str().unwrap();
        let e = fails(&["export", run.to_str().unwrap(), "--torch", t]);
        assert!(e.contains("refusing to replace it"), "{t}: {e}");
        let ok_path = tmp.path().join("w.safetensors");
        let e = fails(&[
            "export",
            run.to_str().unwrap(),
            "--torch",
            ok_path.to_str().unwrap(),
            "--reference",
            t,
        ]);
        assert!(e.contains("refusing to replace it"), "{t}: {e}");
        assert!(
            !ok_path.exists(),
            "nothing is written when one target is refused"
        );
    }
    if targets.contains(&null) {
        assert!(std::fs::metadata(&null)
            .unwrap()
            .file_type()
            .is_char_device());
    }
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    assert!(std::fs::symlink_metadata(tmp.path().join("a-link"))
        .unwrap()
        .file_type()
        .is_symlink());
    // Someone else's project folder.
    let theirs = tmp.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::fs::write(theirs.join("config.json"), "{\"their\": \"settings\"}\n").unwrap();
    std::fs::write(theirs.join("metrics.jsonl"), "{\"step\": 1}\n").unwrap();
    let e = fails(&strs(&quick(&theirs, &["-q"])));
    assert!(
        e.contains("is not an mnist-ae folder") && e.contains("config.json"),
        "{e}"
    );
    let e = fails(&[
        "eval",
        run.to_str().unwrap(),
        "--out",
        theirs.to_str().unwrap(),
        "--no-download",
    ]);
    assert!(e.contains("is not an mnist-ae folder"), "{e}");
    let names: Vec<_> = std::fs::read_dir(&theirs)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(
        std::fs::read_to_string(theirs.join("config.json")).unwrap(),
        "{\"their\": \"settings\"}\n"
    );
    // A folder holding nothing but our analyses' outputs (as earlier builds left them,
    // without the lock file) is ours.
    let earlier = tmp.path().join("earlier");
    std::fs::create_dir(&earlier).unwrap();
    std::fs::write(earlier.join("eval.json"), "{}").unwrap();
    std::fs::write(earlier.join("reconstructions.png"), "").unwrap();
    ok(&[
        "eval",
        run.to_str().unwrap(),
        "--out",
        earlier.to_str().unwrap(),
        "--no-download",
    ]);
}

/// Class 6 lives in `training.rs` (SIGTERM mid-epoch, labelled checkpoint, bit-exact resume).
///
/// Class 7: a closed stdout or stderr never panics; training finishes.
#[test]
fn closed_pipes_never_panic_and_training_finishes() {
    let closed = || {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        writer
    };
    let run = short_run();
    let tmp = tempfile::tempdir().unwrap();
    let o = tmp.path().join("eval");
    for args in [
        vec!["summary", "--json"],
        vec!["models"],
        vec![
            "eval",
            run.to_str().unwrap(),
            "--no-download",
            "--out",
            o.to_str().unwrap(),
        ],
    ] {
        let out = cmd(&args).stdout(closed()).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(out.status.success(), "{args:?}: {err}");
    }
    let out = tmp.path().join("run");
    let status = cmd(&strs(&quick(&out, &["--epochs", "2"])))
        .stdout(closed())
        .stderr(closed())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        std::fs::read_to_string(out.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count(),
        2
    );
}

/// Class 8: the same seed and flags give the same bytes.
#[test]
fn the_same_run_twice_gives_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    ok(&strs(&quick(&a, &["-q"])));
    ok(&strs(&quick(&b, &["-q"])));
    assert_eq!(
        sha256(&a.join("model.safetensors")),
        sha256(&b.join("model.safetensors"))
    );
}

/// Writes `value` over the first float of the first tensor of a safetensors file.
fn poison(path: &Path, value: f32) {
    let mut bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    bytes[8 + n..8 + n + 4].copy_from_slice(&value.to_le_bytes());
    std::fs::write(path, bytes).unwrap();
}

/// Class 9: non-finite weights are refused at load and import; no NaN becomes a score.
#[test]
fn non_finite_weights_are_refused_and_never_scored() {
    let tmp = tempfile::tempdir().unwrap();
    let run = copy_of_short_run(&tmp.path().join("run"));
    poison(&run.join("model.safetensors"), f32::NAN);
    for args in [
        vec!["eval", run.to_str().unwrap(), "--no-download"],
        vec!["denoise", run.to_str().unwrap(), "--no-download"],
    ] {
        let e = fails(&args);
        assert!(e.contains("holds NaN") && !e.contains("100.00 dB"), "{e}");
    }
    let torch = tmp.path().join("torch.safetensors");
    ok(&[
        "export",
        short_run().to_str().unwrap(),
        "--torch",
        torch.to_str().unwrap(),
    ]);
    poison(&torch, f32::INFINITY);
    let e = fails(&[
        "import",
        torch.to_str().unwrap(),
        "--model",
        "mlp",
        "--latent-dim",
        "16",
        "--out",
        tmp.path().join("imported").to_str().unwrap(),
    ]);
    assert!(e.contains("holds inf"), "{e}");
    assert!(!tmp
        .path()
        .join("imported")
        .join("model.safetensors")
        .exists());
    assert!(mnist_ae::eval::metrics::psnr(&[f32::NAN], &[0.0], 1.0).is_nan());
}

/// Serves one request with an HTTP response of `content_length` (if any) and then body bytes
/// until the client hangs up; returns the number of body bytes it managed to send.
fn endless_server(content_length: Option<u64>) -> (String, std::thread::JoinHandle<u64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let h = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf);
        let mut head = String::from("HTTP/1.1 200 OK\r\nConnection: close\r\n");
        if let Some(n) = content_length {
            head.push_str(&format!("Content-Length: {n}\r\n"));
        }
        head.push_str("\r\n");
        if s.write_all(head.as_bytes()).is_err() {
            return 0;
        }
        let chunk = vec![0x55u8; 1 << 20];
        let mut sent = 0u64;
        while sent < 600 << 20 {
            match s.write(&chunk) {
                Ok(k) if k > 0 => sent += k as u64,
                _ => break,
            }
        }
        sent
    });
    (url, h)
}

/// Class 10: untrusted input costs only what its own header (or the known file size) allows;
/// valid multi-member gzip is accepted.
#[test]
fn hostile_inputs_cost_only_what_their_size_allows() {
    use mnist_ae::data::download::{download, RemoteFile, MAX_DOWNLOAD};
    let tmp = tempfile::tempdir().unwrap();
    // A mirror that streams without end, with and without announcing a size.
    for length in [None, Some(600u64 << 20)] {
        let (url, server) = endless_server(length);
        let file = RemoteFile {
            name: "train-images-idx3-ubyte.gz",
            md5: "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        };
        let e = download(&file, tmp.path(), &[url]).unwrap_err().to_string();
        assert!(e.contains("more than any dataset file"), "{e}");
        let sent = server.join().unwrap();
        assert!(
            sent < MAX_DOWNLOAD + (32 << 20),
            "the server sent {sent} bytes"
        );
        assert!(!tmp.path().join(file.name).exists());
    }
    // A gzip bomb: a valid header for 20 images followed by 200 MB of zeros.
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    tiny_dataset(&data, 20, 10);
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(&encode_images(20, 28, 28, &vec![7u8; 20 * 784]))
        .unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..200 {
        enc.write_all(&zeros).unwrap();
    }
    std::fs::write(
        data.join("train-images-idx3-ubyte.gz"),
        enc.finish().unwrap(),
    )
    .unwrap();
    let train = |data: &Path, out: &Path| {
        vec![
            "train".to_string(),
            "--model".into(),
            "linear3".into(),
            "--epochs".into(),
            "1".into(),
            "--batch-size".into(),
            "8".into(),
            "--data-dir".into(),
            data.to_str().unwrap().into(),
            "--no-download".into(),
            "--out".into(),
            out.to_str().unwrap().into(),
            "-q".into(),
        ]
    };
    let e = fails(&strs(&train(&data, &tmp.path().join("r1"))));
    assert!(e.contains("longer than its header says"), "{e}");
    // A header that claims 4,000,000 images is refused before its data is read.
    std::fs::write(
        data.join("train-images-idx3-ubyte.gz"),
        encode_images(4_000_000, 28, 28, &[0u8; 784]),
    )
    .unwrap();
    let e = fails(&strs(&train(&data, &tmp.path().join("r2"))));
    assert!(e.contains("more than the 1073741824 bytes"), "{e}");
    // Two gzip members (`cat a.gz b.gz`), which gunzip reads as one file.
    let images = encode_images(20, 28, 28, &vec![9u8; 20 * 784]);
    let p = data.join("train-images-idx3-ubyte.gz");
    write_gz(&p, &images[..1000]);
    let first = std::fs::read(&p).unwrap();
    write_gz(&p, &images[1000..]);
    let second = std::fs::read(&p).unwrap();
    std::fs::write(&p, [first, second].concat()).unwrap();
    ok(&strs(&train(&data, &tmp.path().join("r3"))));
}

/// Class 11: sizes are checked against the data; big pictures wrap into rows.
#[test]
fn sizes_are_checked_against_the_data_and_pictures_wrap() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let e = fails(&strs(&quick(&out, &["--batch-size", "100000"])));
    assert!(
        e.contains("100000 is more than the 900 training images"),
        "{e}"
    );
    assert!(!out.join("config.json").exists());
    let run = copy_of_short_run(&tmp.path().join("copy"));
    let r = run.to_str().unwrap();
    let e = fails(&["eval", r, "--count", "10000", "--no-download"]);
    assert!(e.contains("at most 1024 fit"), "{e}");
    ok(&["eval", r, "--count", "100", "--no-download"]);
    let (w, h) = image::image_dimensions(run.join("reconstructions.png")).unwrap();
    assert!(w < 4000 && h > 4 * 84, "{w}x{h}");
}

/// Class 12: a FIFO (or any non-regular file) given as data or config is refused, not read.
#[test]
fn fifos_given_as_data_or_config_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    tiny_dataset(&data, 20, 10);
    std::fs::remove_file(data.join("train-labels-idx1-ubyte")).unwrap();
    assert!(Command::new("mkfifo")
        .arg(data.join("train-labels-idx1-ubyte"))
        .status()
        .unwrap()
        .success());
    let e = fails(&[
        "train",
        "--model",
        "linear3",
        "--data-dir",
        data.to_str().unwrap(),
        "--no-download",
        "--out",
        tmp.path().join("r").to_str().unwrap(),
    ]);
    assert!(
        e.contains("is a FIFO (named pipe), expected a regular file"),
        "{e}"
    );
    let run = copy_of_short_run(&tmp.path().join("run"));
    std::fs::remove_file(run.join("config.json")).unwrap();
    assert!(Command::new("mkfifo")
        .arg(run.join("config.json"))
        .status()
        .unwrap()
        .success());
    let e = fails(&["eval", run.to_str().unwrap(), "--no-download"]);
    assert!(e.contains("config.json: is a FIFO"), "{e}");
}

/// Class 13: every flag is checked before any work is done or any file written.
#[test]
fn flags_are_checked_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let run = copy_of_short_run(&tmp.path().join("run"));
    let before: Vec<_> = std::fs::read_dir(&run).unwrap().collect();
    let e = fails(&[
        "report",
        run.to_str().unwrap(),
        "--analyze",
        "--tsne-count",
        "5",
        "--no-download",
    ]);
    assert!(e.contains("too few for perplexity"), "{e}");
    let after: Vec<_> = std::fs::read_dir(&run).unwrap().collect();
    assert_eq!(before.len(), after.len(), "files were written");
    assert!(!run.join("eval.json").exists());
    let out = tmp.path().join("sweep");
    let sweep_fails = |sizes: &str| {
        fails(&[
            "sweep",
            "--model",
            "mlp",
            "--latent-dims",
            sizes,
            "--limit-train",
            "1000",
            "--epochs",
            "1",
            "--data-dir",
            mnist_dir().to_str().unwrap(),
            "--no-download",
            "--out",
            out.to_str().unwrap(),
        ])
    };
    let e = sweep_fails("2,0");
    assert!(e.contains("latent_dim 0"), "{e}");
    assert!(!out.join("latent-2").exists());
    // A size given twice would train its run, then find it in the way.
    let e = sweep_fails("2,4,2");
    assert!(e.contains("2 is listed twice"), "{e}");
    assert!(!out.join("latent-2").exists());
}

/// Class 14: a run folder alone finds its data again, from any folder; `--data-dir` still
/// overrides where it looks.
#[test]
fn a_run_finds_its_data_from_anywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let isolated = |args: &[&str], cwd: &Path| {
        cmd(args)
            .current_dir(cwd)
            .env_remove("MNIST_AE_DATA")
            .env("HOME", &home)
            .env("XDG_CACHE_HOME", home.join("cache"))
            .output()
            .unwrap()
    };
    let succeed = |args: &[&str], cwd: &Path| {
        let out = isolated(args, cwd);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // A folder dataset given by a relative path.
    let work = tmp.path().join("work");
    std::fs::create_dir_all(work.join("my-data")).unwrap();
    tiny_dataset(&work.join("my-data"), 60, 20);
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let run1 = tmp.path().join("run1");
    let r1 = run1.to_str().unwrap();
    succeed(
        &[
            "train",
            "--model",
            "linear3",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--dataset",
            "my-data",
            "--out",
            r1,
            "-q",
        ],
        &work,
    );
    succeed(&["eval", r1, "--no-download"], &elsewhere);
    // A named dataset found through --data-dir.
    let run2 = tmp.path().join("run2");
    let r2 = run2.to_str().unwrap();
    let d = mnist_dir();
    succeed(
        &[
            "train",
            "--model",
            "mlp",
            "--latent-dim",
            "4",
            "--epochs",
            "1",
            "--limit-train",
            "500",
            "--data-dir",
            d.to_str().unwrap(),
            "--no-download",
            "--out",
            r2,
            "-q",
        ],
        &work,
    );
    succeed(&["classify", r2, "--no-download"], &elsewhere);
    // Copied to a machine where the recorded folder is gone: the usual places are searched.
    let cfg_path = run2.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["data_dir"] = serde_json::json!("/nonexistent/mnist");
    std::fs::write(&cfg_path, serde_json::to_string(&cfg).unwrap()).unwrap();
    let out = cmd(&[
        "eval",
        r2,
        "--no-download",
        "--out",
        elsewhere.to_str().unwrap(),
    ])
    .env("MNIST_AE_DATA", &d)
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = isolated(
        &[
            "eval",
            r2,
            "--data-dir",
            home.to_str().unwrap(),
            "--no-download",
        ],
        &elsewhere,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(home.to_str().unwrap()));
}
