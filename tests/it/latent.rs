//! `classify` and `tsne` end to end on a short real run.

use std::path::Path;

use crate::common::{fails, mnist_dir, ok, short_run, tiny_dataset};

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn classify_writes_a_scikit_learn_report_and_a_confusion_matrix() {
    let (run, data, tmp) = (short_run(), mnist_dir(), tempfile::tempdir().unwrap());
    let (r, d, o) = (
        run.to_str().unwrap(),
        data.to_str().unwrap(),
        tmp.path().to_str().unwrap(),
    );
    let out = ok(&[
        "classify",
        r,
        "--data-dir",
        d,
        "--no-download",
        "--out",
        o,
        "--classifier",
        "logistic,svm,rbf,mlp",
        "--export-codes",
    ]);
    assert!(out.contains("weighted avg"), "{out}");
    let mut accuracy = std::collections::HashMap::new();
    for kind in ["logistic", "svm", "rbf", "mlp"] {
        let dir = tmp.path().join(format!("classify-{kind}"));
        let text = std::fs::read_to_string(dir.join("classification_report.txt")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 16, "{text}");
        assert_eq!(
            lines[0],
            "              precision    recall  f1-score   support"
        );
        assert!(lines[2].starts_with("           0       "), "{text}");
        assert!(
            lines[13].starts_with("    accuracy") && lines[13].ends_with("10000"),
            "{text}"
        );
        let j = json(&dir.join("classification_report.json"));
        let acc = j["report"]["accuracy"].as_f64().unwrap();
        // A 16-d code after two short epochs still separates digits far above chance (0.1).
        assert!(acc > 0.75, "{kind} accuracy {acc}");
        accuracy.insert(kind, acc);
        let m = j["report"]["confusion"].as_array().unwrap();
        let total: u64 = m
            .iter()
            .flat_map(|r| r.as_array().unwrap())
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(total, 10_000);
        assert!(std::fs::read(dir.join("confusion_matrix.png"))
            .unwrap()
            .starts_with(b"\x89PNG"));
    }
    // A curved boundary separates the digits' codes better than a straight one.
    for curved in ["rbf", "mlp"] {
        assert!(
            accuracy[curved] > accuracy["logistic"] + 0.01,
            "{curved} {} vs logistic {}",
            accuracy[curved],
            accuracy["logistic"]
        );
    }
    let codes = std::fs::read_to_string(tmp.path().join("codes_test.csv")).unwrap();
    assert_eq!(codes.lines().count(), 10_001);
    assert!(codes.lines().nth(1).unwrap().starts_with("7,"));
    let e = fails(&[
        "classify",
        r,
        "--data-dir",
        d,
        "--classifier",
        "forest",
        "--out",
        tmp.path().to_str().unwrap(),
    ]);
    assert!(e.contains("classifier"), "{e}");
}

#[test]
fn tsne_maps_codes_and_groups_digits() {
    let (run, data, tmp) = (short_run(), mnist_dir(), tempfile::tempdir().unwrap());
    let (r, d) = (run.to_str().unwrap(), data.to_str().unwrap());
    // A 600-point map of the run's test codes into `out`, with extra arguments; its tsne.csv.
    let map = |out: &std::path::Path, extra: &[&str]| {
        let o = out.to_str().unwrap();
        let mut args = vec!["tsne", r, "--data-dir", d, "--no-download", "--out", o];
        args.extend(["--count", "600", "--epochs", "1000"]);
        args.extend(extra);
        ok(&args);
        std::fs::read_to_string(out.join("tsne.csv")).unwrap()
    };
    let csv = map(tmp.path(), &[]);
    let rows: Vec<(u8, f64, f64)> = csv
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
                f[3].parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(rows.len(), 600);
    // Neighbours in the map mostly share a digit: 1-nearest-neighbour agreement far above chance.
    let agree = rows
        .iter()
        .enumerate()
        .filter(|(i, a)| {
            let nn = rows
                .iter()
                .enumerate()
                .filter(|(j, _)| j != i)
                .min_by(|x, y| {
                    let dx = (x.1 .1 - a.1).powi(2) + (x.1 .2 - a.2).powi(2);
                    let dy = (y.1 .1 - a.1).powi(2) + (y.1 .2 - a.2).powi(2);
                    dx.total_cmp(&dy)
                })
                .unwrap();
            nn.1 .0 == a.0
        })
        .count();
    assert!(agree as f64 / 600.0 > 0.6, "1-NN agreement {agree}/600");
    assert!(std::fs::read(tmp.path().join("tsne.png"))
        .unwrap()
        .starts_with(b"\x89PNG"));
    // The same map, byte for byte, again and whatever the thread count.
    for (i, threads) in ["2", "1"].iter().enumerate() {
        let again = map(
            &tmp.path().join(format!("again{i}")),
            &["--threads", threads],
        );
        assert!(
            again == csv,
            "t-SNE with --threads {threads} gave another map"
        );
    }
    let e = fails(&[
        "tsne",
        r,
        "--data-dir",
        d,
        "--count",
        "50",
        "--out",
        tmp.path().to_str().unwrap(),
    ]);
    assert!(e.contains("too few"), "{e}");
    // A count past the test set maps the whole set, and its record says how many it mapped.
    let small = tmp.path().join("small");
    std::fs::create_dir(&small).unwrap();
    tiny_dataset(&small, 20, 40);
    let out = tmp.path().join("whole");
    let text = ok(&[
        "tsne",
        r,
        "--data-dir",
        small.to_str().unwrap(),
        "--count",
        "1000",
        "--perplexity",
        "5",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        text.contains("t-SNE of 40 test codes (all the test set holds)"),
        "{text}"
    );
    assert_eq!(json(&out.join("tsne.json"))["settings"]["count"], 40);
    let csv = std::fs::read_to_string(out.join("tsne.csv")).unwrap();
    assert_eq!(csv.lines().count(), 41);
}
