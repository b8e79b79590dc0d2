//! The command line itself: help that lists values and limits, negative numbers, `--threads`,
//! early stopping with the best weights kept, and what `train` prints.

use std::path::Path;

use safetensors::SafeTensors;

use crate::common::{fails, mnist_ae, mnist_dir, ok};

fn help(command: &str) -> String {
    ok(&[command, "--help"])
}

/// The flag names a help text lists, as `--name` (the first word of a line, or the second
/// after a short form such as `-q,`).
fn flags(help: &str) -> Vec<String> {
    help.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            match words.next()? {
                w if w.starts_with("--") => Some(w.to_string()),
                w if w.starts_with('-') && w.ends_with(',') => words.next().map(str::to_string),
                _ => None,
            }
        })
        .collect()
}

#[test]
fn help_lists_every_choice_and_limit() {
    let train = help("train");
    for needle in [
        "- conv64:",
        "- vae:",
        "- cpu:",
        "- wgpu:",
        "- cuda:",
        "- plateau:",
        "- best:",
        "1 to 4096",
        "in [0, 1)",
        "one per core",
        "--early-stop <PATIENCE>",
        "--threads <N>",
    ] {
        assert!(train.contains(needle), "train --help lacks {needle:?}");
    }
    let classify = help("classify");
    for k in ["- logistic:", "- svm:", "- rbf:", "- mlp:"] {
        assert!(classify.contains(k), "classify --help lacks {k}");
    }
    assert!(help("sample").contains("1 to 1024"));
    assert!(help("sample").contains("--judge-classifier"));
    assert!(help("sample").contains("- mlp:"));
    assert!(help("interpolate").contains("2 to 64"));
    assert!(help("anomaly").contains("1 to 100"));
    assert!(help("tsne").contains("3 × perplexity + 1"));
    assert!(help("eval").contains("1 to 1024"));
    assert!(help("summary").contains("- linear3:"));
    assert!(help("models").contains("- mlp:"));

    // No listed flag that does nothing.
    let sweep = flags(&help("sweep"));
    for gone in ["--latent-dim", "--resume", "--report"] {
        assert!(!sweep.contains(&gone.to_string()), "sweep lists {gone}");
    }
    assert!(sweep.contains(&"--latent-dims".to_string()));
    assert!(help("sweep").contains("[default: runs/sweep-<model>]"));
    assert!(!flags(&help("export")).contains(&"--out".to_string()));
    assert!(!flags(&help("report")).contains(&"--out".to_string()));

    // A bad choice fails while parsing, listing the values.
    let e = fails(&["classify", "runs/x", "--classifier", "knn"]);
    assert!(
        e.contains("[possible values: logistic, svm, rbf, mlp]"),
        "{e}"
    );
    let e = fails(&["sample", "runs/x", "--judge-classifier", "knn"]);
    assert!(
        e.contains("[possible values: logistic, svm, rbf, mlp]"),
        "{e}"
    );
    let e = fails(&["train", "--dataset", "mnist2"]);
    assert!(e.contains("(mnist, fashion-mnist, kmnist)"), "{e}");
    let e = fails(&["eval", "runs/x", "--device", "gpu"]);
    assert!(e.contains("[possible values: cpu, wgpu, cuda]"), "{e}");
}

#[test]
fn messages_say_what_is_wrong_once() {
    let e = fails(&["summary", "--arch", "/nonexistent/model.toml"]);
    assert_eq!(
        e.matches("No such file or directory").count(),
        1,
        "said once: {e}"
    );
    let run = crate::common::short_run();
    let r = run.to_str().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let o = elsewhere.path().to_str().unwrap();
    let e = fails(&["eval", r, "--count", "1000000", "--out", o]);
    assert!(e.contains("invalid count: 1000000"), "{e}");
    assert!(!e.contains("index"), "{e}");
    let e = fails(&["eval", r, "--count", "0", "--out", o]);
    assert!(e.contains("invalid count"), "{e}");
}

#[test]
fn download_fetches_or_checks_a_dataset() {
    let d = mnist_dir();
    let out = ok(&[
        "download",
        "--data-dir",
        d.to_str().unwrap(),
        "--no-download",
    ]);
    assert_eq!(
        out.trim(),
        format!(
            "mnist: 60,000 training and 10,000 test images in {}",
            d.display()
        )
    );
    let tmp = tempfile::tempdir().unwrap();
    let e = fails(&[
        "download",
        "--dataset",
        "kmnist",
        "--data-dir",
        tmp.path().join("cache/kmnist").to_str().unwrap(),
    ]);
    // The tests' mirror (127.0.0.1:9) refuses: the error names the file and leaves nothing, not
    // even the folder it would have downloaded into.
    assert!(
        e.contains("train-images-idx3-ubyte.gz from every mirror failed"),
        "{e}"
    );
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

fn losses(run: &Path) -> Vec<(f64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["train_loss"].as_f64().unwrap(),
                v["valid_loss"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// The bytes of a run's model.
fn model(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("model.safetensors")).unwrap()
}

/// Asserts that the runs in `others`, trained on other thread counts, have `first`'s losses
/// and its model's bytes.
fn same_run_whatever_the_threads(first: &Path, others: &[&std::path::PathBuf]) {
    for other in others {
        assert_eq!(
            losses(first),
            losses(other),
            "the thread count changed the result"
        );
        assert!(
            model(first) == model(other.as_path()),
            "the thread count changed the weights"
        );
    }
}

/// `train` on 300 MNIST images with `extra` flags, into `out`; returns stderr (and stdout,
/// through [`small_train_out`]).
fn small_train(out: &Path, extra: &[&str]) -> String {
    small_train_out(out, extra).1
}

fn small_train_out(out: &Path, extra: &[&str]) -> (String, String) {
    let data = mnist_dir();
    let mut args = vec![
        "train",
        "--model",
        "mlp",
        "--latent-dim",
        "8",
        "--limit-train",
        "300",
        "--batch-size",
        "16",
        "--data-dir",
        data.to_str().unwrap(),
        "--no-download",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = mnist_ae(&args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{args:?}: {err}");
    (String::from_utf8_lossy(&o.stdout).into_owned(), err)
}

#[test]
fn negative_seeds_count_from_two_to_the_64() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let (said, _) = small_train_out(&a, &["--epochs", "1", "--seed", "-1", "-q"]);
    assert!(said.starts_with("trained 1 epoch: "), "{said}");
    small_train(
        &b,
        &["--epochs", "1", "--seed", "18446744073709551615", "-q"],
    );
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["seed"].as_u64(), Some(u64::MAX));
    assert_eq!(losses(&a), losses(&b));
}

#[test]
fn threads_change_the_pool_but_not_the_result() {
    let tmp = tempfile::tempdir().unwrap();
    let (one, all, more) = (
        tmp.path().join("one"),
        tmp.path().join("all"),
        tmp.path().join("more"),
    );
    let err = small_train(&one, &["--epochs", "2", "--threads", "1"]);
    assert!(err.contains("\ndevice      cpu\nthreads     1 ("), "{err}");
    small_train(&all, &["--epochs", "2", "--threads", "2"]);
    // More threads than shards: the steps run on a pool of one worker per shard.
    let said = small_train(&more, &["--epochs", "2", "--threads", "5"]);
    assert!(
        said.contains("\nthreads     5 (") && said.contains("2 shards, one thread each"),
        "{said}"
    );
    same_run_whatever_the_threads(&one, &[&all, &more]);
    // The block is printed once the folder exists, and in words, not JSON.
    let block: Vec<&str> = err.lines().take(6).collect();
    assert!(block[0].starts_with("run folder  "), "{err}");
    assert!(block[0].ends_with("(new run)"), "{err}");
    assert!(block[3].contains("2 epochs of batch 16"), "{err}");
    assert!(!err.contains("{\""), "JSON in the output: {err}");
    // The progress lines end with the time left.
    assert!(
        err.lines()
            .any(|l| l.starts_with("epoch 1/2 ") && l.contains(" ETA ")),
        "{err}"
    );
}

fn epoch_of(weights: &Path) -> u64 {
    let bytes = std::fs::read(weights).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    meta.metadata().as_ref().unwrap()["epoch"].parse().unwrap()
}

#[test]
fn early_stopping_stops_at_patience_and_keeps_the_best_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let (full, stopped, three) = (
        tmp.path().join("full"),
        tmp.path().join("stopped"),
        tmp.path().join("three"),
    );
    // lr 0.03 on 270 images: the validation loss stalls after a few epochs.
    let common = ["--lr", "0.03", "-q"];
    small_train(&full, &[&common[..], &["--epochs", "12"]].concat());
    let all = losses(&full);
    // Where patience 2 must stop: the first epoch two epochs after the best so far.
    let patience = 2;
    let mut best = 0;
    let mut stop = all.len();
    for (i, &(_, v)) in all.iter().enumerate() {
        if v < all[best].1 || i == 0 {
            best = i;
        }
        if i + 1 >= best + 1 + patience {
            stop = i + 1;
            break;
        }
    }
    assert!(stop < all.len(), "the full run never stalled: {all:?}");
    let (out, _) = small_train_out(
        &stopped,
        &[
            &common[..],
            &["--epochs", "12", "--early-stop", "2", "--keep", "best"],
        ]
        .concat(),
    );
    assert!(
        out.contains(&format!("trained {stop} epochs (stopped early)")),
        "{out}"
    );
    assert_eq!(losses(&stopped), all[..stop].to_vec());
    assert_eq!(epoch_of(&stopped.join("best.safetensors")), best as u64 + 1);
    assert_eq!(epoch_of(&stopped.join("model.safetensors")), stop as u64);

    // best.safetensors holds the best epoch's weights: those of a run trained that long.
    small_train(
        &three,
        &[&common[..], &["--epochs", &(best + 1).to_string()]].concat(),
    );
    let eval = |r: &Path| {
        let o = ok(&["eval", r.to_str().unwrap(), "--count", "4"]);
        let json = std::fs::read_to_string(r.join("eval.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        (o, v["test"].clone())
    };
    let (kept, ours) = eval(&stopped);
    assert!(kept.contains("(best validation loss)"), "{kept}");
    assert_eq!(ours, eval(&three).1);
    // The report says which weights it shows.
    ok(&["report", stopped.to_str().unwrap()]);
    let html = std::fs::read_to_string(stopped.join("report.html")).unwrap();
    assert!(
        html.contains("best.safetensors, the epoch with the lowest validation loss")
            && html.contains("(stopped early)"),
        "the report does not say which weights it shows"
    );
}

/// A model with dropout trains in shards (the default on the CPU), each shard making the whole
/// batch's dropout choices for its images: the same weights on 1, 2 and 5 threads and after a
/// resume, and the losses of one shard up to float rounding.
#[test]
fn dropout_in_shards_makes_the_whole_batchs_choices() {
    let data = mnist_dir();
    let tmp = tempfile::tempdir().unwrap();
    let train = |name: &str, extra: &[&str]| {
        let out = tmp.path().join(name);
        let mut args = vec![
            "train",
            "--encoder",
            "flatten linear(64) relu dropout(0.3) linear(8)",
            "--decoder",
            "linear(64) relu dropout(0.3) linear(784) reshape(1,28,28)",
            "--output",
            "sigmoid",
            "--limit-train",
            "300",
            "--batch-size",
            "16",
            "--epochs",
            "2",
            "--data-dir",
            data.to_str().unwrap(),
            "--no-download",
            "-q",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let o = mnist_ae(&args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        out
    };
    let one = train("one", &["--threads", "1"]);
    let two = train("two", &["--threads", "2"]);
    let five = train("five", &["--threads", "5"]);
    let whole = train("whole", &["--threads", "2", "--shards", "1"]);
    let config = std::fs::read_to_string(one.join("config.json")).unwrap();
    assert!(config.contains("\"shards\": 2"), "{config}");
    same_run_whatever_the_threads(&one, &[&two, &five]);
    // Other dropout choices would move the losses by far more than rounding does.
    for ((t, v), (tw, vw)) in losses(&one).into_iter().zip(losses(&whole)) {
        for (a, b) in [(t, tw), (v, vw)] {
            assert!(
                (a - b).abs() <= 1e-5 * b.abs(),
                "sharded {a} against whole {b}"
            );
        }
    }
    // Stopped after one epoch and resumed: the same choices, so the same weights.
    let part = train("part", &["--threads", "2", "--stop-after", "1"]);
    let o = mnist_ae(&[
        "train",
        "--resume",
        part.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--no-download",
        "-q",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(losses(&part), losses(&two), "resumed");
    assert!(
        model(&part) == model(&two),
        "the resumed run's weights differ"
    );
}
