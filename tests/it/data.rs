//! Data: the real MNIST files, broken IDX files, and the downloader against a local server.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;

use mnist_ae::data::download::{download, md5_hex, RemoteFile};
use mnist_ae::data::idx::{encode_images, encode_labels};
use mnist_ae::data::{load, load_test, DatasetSpec, LoadOptions, MNIST};

use crate::common::{fails, mnist_dir, tiny_dataset, write_gz};

#[test]
fn real_mnist_loads_with_known_facts() {
    let d = load(&LoadOptions {
        spec: &MNIST,
        dir: &mnist_dir(),
        allow_download: false,
        valid_fraction: 0.1,
        seed: 42,
        limit_train: None,
        limit_test: None,
    })
    .unwrap();
    assert_eq!(d.train.len() + d.valid.len(), 60_000);
    assert_eq!(d.valid.len(), 6_000);
    assert_eq!(d.test.len(), 10_000);
    assert_eq!(d.test.labels[0], 7);
    let all: Vec<u8> = [d.train.images.clone(), d.valid.images.clone()].concat();
    let mean = all.iter().map(|&p| p as f64).sum::<f64>() / all.len() as f64 / 255.0;
    assert!((mean - 0.13066).abs() < 1e-4, "train pixel mean {mean}");
    // The first training image (label 5) lands in train or valid, never both.
    let full = mnist_ae::data::dataset::load_split(
        &mnist_dir().join("train-images-idx3-ubyte.gz"),
        &mnist_dir().join("train-labels-idx1-ubyte.gz"),
    )
    .unwrap();
    assert_eq!(full.labels[0], 5);
}

fn train_on(dir: &Path, out: &Path) -> String {
    fails(&[
        "train",
        "--model",
        "linear3",
        "--epochs",
        "1",
        "--data-dir",
        dir.to_str().unwrap(),
        "--no-download",
        "--out",
        out.to_str().unwrap(),
        "-q",
    ])
}

#[test]
fn broken_idx_files_give_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let out = d.join("run");
    // Missing files, no download allowed.
    let e = train_on(d, &out);
    assert!(
        e.contains("dataset not found") && e.contains("train-images-idx3-ubyte.gz"),
        "{e}"
    );

    tiny_dataset(d, 20, 10);
    // Truncated gzip.
    let p = d.join("train-images-idx3-ubyte.gz");
    let good = std::fs::read(&p).unwrap();
    std::fs::write(&p, &good[..good.len() / 2]).unwrap();
    let e = train_on(d, &out);
    assert!(
        e.contains("train-images-idx3-ubyte.gz") && e.contains("gzip"),
        "{e}"
    );

    // Wrong magic: a label file where images belong.
    write_gz(&p, &encode_labels(&[1, 2, 3]));
    let e = train_on(d, &out);
    assert!(e.contains("wrong magic number 2049"), "{e}");

    // Wrong dimensions.
    write_gz(&p, &encode_images(20, 32, 32, &vec![0u8; 20 * 32 * 32]));
    let e = train_on(d, &out);
    assert!(e.contains("32x32, expected 28x28"), "{e}");

    // Count disagrees with the file size.
    let mut b = encode_images(20, 28, 28, &vec![0u8; 20 * 784]);
    b.truncate(b.len() - 100);
    write_gz(&p, &b);
    let e = train_on(d, &out);
    assert!(e.contains("does not match its header"), "{e}");

    // Images and labels of different lengths.
    write_gz(&p, &encode_images(21, 28, 28, &vec![0u8; 21 * 784]));
    let e = train_on(d, &out);
    assert!(e.contains("20 labels") && e.contains("21 images"), "{e}");

    // Label out of range.
    write_gz(&p, &encode_images(20, 28, 28, &vec![0u8; 20 * 784]));
    let mut labels = vec![0u8; 20];
    labels[7] = 12;
    std::fs::write(d.join("train-labels-idx1-ubyte"), encode_labels(&labels)).unwrap();
    let e = train_on(d, &out);
    assert!(e.contains("label 12 at index 7"), "{e}");

    // Empty file.
    std::fs::write(d.join("train-labels-idx1-ubyte"), b"").unwrap();
    let e = train_on(d, &out);
    assert!(e.contains("empty file"), "{e}");

    // A directory in place of a file.
    std::fs::remove_file(d.join("train-labels-idx1-ubyte")).unwrap();
    std::fs::create_dir(d.join("train-labels-idx1-ubyte")).unwrap();
    let e = train_on(d, &out);
    assert!(e.contains("is a directory"), "{e}");
    assert!(!out.join("model.safetensors").exists());
}

/// Serves each request from `routes` (path → body), then stops after `max` requests.
fn serve(routes: Vec<(String, Vec<u8>)>, max: usize) -> (String, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        for stream in listener.incoming().take(max) {
            let mut s = stream.unwrap();
            let mut buf = [0u8; 2048];
            let n = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
            match routes.iter().find(|(p, _)| *p == path) {
                Some((_, body)) => {
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = s.write_all(body);
                }
                None => {
                    let _ = write!(
                        s,
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                }
            }
        }
    });
    (format!("http://{addr}"), h)
}

#[test]
fn downloader_checks_md5_and_falls_back_to_the_next_mirror() {
    let real = std::fs::read(mnist_dir().join("t10k-labels-idx1-ubyte.gz")).unwrap();
    let name = "t10k-labels-idx1-ubyte.gz";
    let file = RemoteFile {
        name,
        md5: Box::leak(md5_hex(&real).into_boxed_str()),
    };
    let mut broken = real.clone();
    broken[100] ^= 0xff;
    let (base, h) = serve(
        vec![
            (format!("/bad/{name}"), broken),
            (format!("/good/{name}"), real.clone()),
        ],
        3,
    );
    let tmp = tempfile::tempdir().unwrap();
    let mirrors = vec![
        format!("{base}/missing/"),
        format!("{base}/bad/"),
        format!("{base}/good/"),
    ];
    let path = download(&file, tmp.path(), &mirrors).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), real);
    h.join().unwrap();

    // Every mirror bad: an error naming each, and no file written.
    let (base, h) = serve(vec![(format!("/bad/{name}"), b"garbage".to_vec())], 2);
    let tmp = tempfile::tempdir().unwrap();
    let err = download(
        &file,
        tmp.path(),
        &[format!("{base}/bad/"), format!("{base}/nope/")],
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("does not match the expected") && msg.contains("404"),
        "{msg}"
    );
    assert!(!tmp.path().join(name).exists());
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "no partial files left"
    );
    h.join().unwrap();
}

#[test]
fn canonical_md5_table_matches_the_shared_readme() {
    let readme = std::fs::read_to_string(mnist_dir().join("README.md")).unwrap();
    for f in MNIST.files {
        assert!(
            readme.contains(f.md5),
            "{} md5 {} not in README",
            f.name,
            f.md5
        );
    }
}

/// A generated 10-class dataset: class k is a bright bar at rows 2k+4..2k+6 with a seeded
/// speckle, so a model can learn it and a classifier can tell the classes apart.
fn bars_dataset(dir: &Path, n_train: usize, n_test: usize) {
    let mut state = 12345u64;
    let mut make = |n: usize| {
        let mut px = Vec::with_capacity(n * 784);
        let mut lb = Vec::with_capacity(n);
        for i in 0..n {
            let k = i % 10;
            for r in 0..28 {
                for _c in 0..28 {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let speckle = ((state >> 33) % 40) as u8;
                    px.push(if (2 * k + 4..2 * k + 6).contains(&r) {
                        215 + speckle
                    } else {
                        speckle
                    });
                }
            }
            lb.push(k as u8);
        }
        (px, lb)
    };
    let (p, l) = make(n_train);
    write_gz(
        &dir.join("train-images-idx3-ubyte.gz"),
        &encode_images(n_train, 28, 28, &p),
    );
    write_gz(&dir.join("train-labels-idx1-ubyte.gz"), &encode_labels(&l));
    let (p, l) = make(n_test);
    std::fs::write(
        dir.join("t10k-images-idx3-ubyte"),
        encode_images(n_test, 28, 28, &p),
    )
    .unwrap();
    std::fs::write(dir.join("t10k-labels-idx1-ubyte"), encode_labels(&l)).unwrap();
}

#[test]
fn any_folder_of_idx_files_is_a_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("bars");
    std::fs::create_dir(&data).unwrap();
    bars_dataset(&data, 1000, 200);
    let run = tmp.path().join("run");
    let (d, r) = (data.to_str().unwrap(), run.to_str().unwrap());
    crate::common::ok(&[
        "train",
        "--dataset",
        d,
        "--model",
        "mlp",
        "--latent-dim",
        "8",
        "--batch-size",
        "32",
        "--epochs",
        "3",
        "--out",
        r,
        "-q",
    ]);
    let cfg = std::fs::read_to_string(run.join("config.json")).unwrap();
    assert!(cfg.contains(d), "{cfg}");
    let out = crate::common::ok(&["eval", r, "--indices", "0,199"]);
    assert!(out.contains("200 test images"), "{out}");
    let out = crate::common::ok(&["classify", r]);
    assert!(
        out.contains("test accuracy 1.0000") || out.contains("test accuracy 0.99"),
        "{out}"
    );
    // A missing folder is named.
    let e = fails(&[
        "train",
        "--dataset",
        "/nonexistent/bars",
        "--out",
        tmp.path().join("x").to_str().unwrap(),
    ]);
    assert!(
        e.contains("'/nonexistent/bars' is neither a dataset name (mnist, fashion-mnist, kmnist) nor a folder"),
        "{e}"
    );
}

#[test]
fn named_datasets_carry_their_class_names_and_checksums() {
    use mnist_ae::data::{DatasetSource, FASHION_MNIST, KMNIST};
    let f = DatasetSource::parse("fashion-mnist");
    assert_eq!(f.classes()[0], "T-shirt/top");
    assert_eq!(f.classes()[9], "Ankle boot");
    assert_eq!(DatasetSource::parse("kmnist").classes()[3], "tsu");
    assert_eq!(
        FASHION_MNIST.files[0].md5,
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d"
    );
    assert_eq!(KMNIST.files[3].md5, "7320c461ea6c1c855c0b718fb2a4b134");
    // Only MNIST reads MNIST_AE_DATA; the others default to their own cache folders.
    let dir = f.dir(None);
    assert!(dir.ends_with("mnist-ae/fashion-mnist"), "{}", dir.display());
    assert!(matches!(
        DatasetSource::parse("./some/folder"),
        DatasetSource::Folder(_)
    ));
}

#[test]
fn test_only_loading_downloads_only_the_test_files() {
    let real = mnist_dir();
    let bytes = |n: &str| std::fs::read(real.join(n)).unwrap();
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    // MNIST's file names, with the checksums of the files served here.
    let mut files = MNIST.files;
    for f in files.iter_mut() {
        f.md5 = leak(md5_hex(&bytes(f.name)));
    }
    let routes = files[2..]
        .iter()
        .map(|f| (format!("/m/{}", f.name), bytes(f.name)))
        .collect();
    // Two requests, then the server is gone: asking for a training file would fail.
    let (base, h) = serve(routes, 2);
    let spec = DatasetSpec {
        name: "served",
        files,
        mirrors: Box::leak(vec![leak(format!("{base}/m/"))].into_boxed_slice()),
        classes: MNIST.classes,
    };
    let cache = tempfile::tempdir().unwrap();
    let test = load_test(&LoadOptions {
        spec: &spec,
        dir: cache.path(),
        allow_download: true,
        valid_fraction: 0.1,
        seed: 0,
        limit_train: None,
        limit_test: None,
    })
    .unwrap();
    h.join().unwrap();
    assert_eq!(test.len(), 10_000);
    let mut got: Vec<String> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    got.sort();
    assert_eq!(
        got,
        ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    );
}

#[test]
fn eval_reads_only_the_test_files() {
    let run = crate::common::short_run();
    let only_test = tempfile::tempdir().unwrap();
    for n in ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"] {
        std::os::unix::fs::symlink(mnist_dir().join(n), only_test.path().join(n)).unwrap();
    }
    let d = only_test.path().to_str().unwrap();
    let r = run.to_str().unwrap();
    // Outputs elsewhere: the shared run stays as trained.
    let o = only_test.path().join("out");
    let out = crate::common::ok(&[
        "eval",
        r,
        "--count",
        "2",
        "--data-dir",
        d,
        "--no-download",
        "--out",
        o.to_str().unwrap(),
    ]);
    assert!(out.contains("on 10000 test images"), "{out}");
    // A command that needs the training images says which file is missing.
    let o2 = only_test.path().join("classify");
    let e = fails(&[
        "classify",
        r,
        "--data-dir",
        d,
        "--no-download",
        "--out",
        o2.to_str().unwrap(),
    ]);
    assert!(e.contains("train-images-idx3-ubyte.gz is missing"), "{e}");
}
