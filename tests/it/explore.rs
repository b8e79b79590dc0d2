//! The exploration commands end to end on a short real run.

use std::path::Path;

use crate::common::{fails, mnist_dir, ok, short_run};

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn is_png(path: &Path) -> bool {
    std::fs::read(path)
        .map(|b| b.starts_with(b"\x89PNG"))
        .unwrap_or(false)
}

fn on_run<'a>(
    cmd: &'a str,
    run: &'a str,
    data: &'a str,
    out: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut v = vec![cmd, run, "--data-dir", data, "--no-download", "--out", out];
    v.extend_from_slice(extra);
    v
}

#[test]
fn denoise_improves_on_the_noisy_input() {
    let (run, data, tmp) = (short_run(), mnist_dir(), tempfile::tempdir().unwrap());
    let (r, d, o) = (
        run.to_str().unwrap(),
        data.to_str().unwrap(),
        tmp.path().to_str().unwrap(),
    );
    ok(&on_run(
        "denoise",
        r,
        d,
        o,
        &["--noise-std", "0.4", "--indices", "3,4"],
    ));
    let j = json(&tmp.path().join("denoise.json"));
    let (noisy, den) = (
        j["noisy"]["psnr_db"].as_f64().unwrap(),
        j["denoised"]["psnr_db"].as_f64().unwrap(),
    );
    // At σ 0.4 the input is at ~9 dB; even a briefly trained AE removes much of the noise.
    assert!(den > noisy + 2.0, "noisy {noisy} denoised {den}");
    assert!(is_png(&tmp.path().join("denoise.png")));
    // Same seed, same numbers.
    ok(&on_run(
        "denoise",
        r,
        d,
        o,
        &["--noise-std", "0.4", "--indices", "3,4"],
    ));
    assert_eq!(json(&tmp.path().join("denoise.json")), j);
    let e = fails(&on_run("denoise", r, d, o, &["--noise-std", "NaN"]));
    assert!(e.contains("noise-std"), "{e}");
}

#[test]
fn interpolate_sample_and_anomaly_write_their_outputs() {
    let (run, data, tmp) = (short_run(), mnist_dir(), tempfile::tempdir().unwrap());
    let (r, d, o) = (
        run.to_str().unwrap(),
        data.to_str().unwrap(),
        tmp.path().to_str().unwrap(),
    );
    let out = ok(&on_run(
        "interpolate",
        r,
        d,
        o,
        &["--from", "12", "--to", "3456", "--steps", "6"],
    ));
    assert!(out.contains("#12 (9) → #3456 (3)"), "{out}");
    let j = json(&tmp.path().join("interpolate.json"));
    assert_eq!(j["t"].as_array().unwrap().len(), 6);
    assert!(is_png(&tmp.path().join("interpolate.png")));
    let e = fails(&on_run("interpolate", r, d, o, &["--from", "10000"]));
    assert!(e.contains("index 10000 is beyond the test set"), "{e}");

    ok(&on_run(
        "sample",
        r,
        d,
        o,
        &["--count", "16", "--seed", "3"],
    ));
    let j = json(&tmp.path().join("samples.json"));
    assert_eq!(j["fitted_on"], 2700);
    assert_eq!(j["mean"].as_array().unwrap().len(), 16);
    assert!(is_png(&tmp.path().join("samples.png")));

    ok(&on_run("anomaly", r, d, o, &["--top", "8"]));
    let j = json(&tmp.path().join("anomaly.json"));
    let worst = j["worst"].as_array().unwrap();
    assert_eq!(worst.len(), 8);
    let csv = std::fs::read_to_string(tmp.path().join("anomaly_scores.csv")).unwrap();
    assert_eq!(csv.lines().count(), 10_001);
    // The worst score in the JSON is the largest in the CSV.
    let max = csv
        .lines()
        .skip(1)
        .map(|l| l.rsplit(',').next().unwrap().parse::<f64>().unwrap())
        .fold(0.0, f64::max);
    assert!((worst[0][2].as_f64().unwrap() - max).abs() < 1e-6);
    assert!(
        is_png(&tmp.path().join("anomalies.png")) && is_png(&tmp.path().join("anomaly_hist.png"))
    );
}

#[test]
fn sweep_trains_one_run_per_size_and_tabulates() {
    let (data, tmp) = (mnist_dir(), tempfile::tempdir().unwrap());
    let out = tmp.path().join("sweep");
    let (d, o) = (data.to_str().unwrap(), out.to_str().unwrap());
    let args = [
        "sweep",
        "--model",
        "mlp",
        "--latent-dims",
        "2,32",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--limit-train",
        "2000",
        "--data-dir",
        d,
        "--no-download",
        "--out",
        o,
        "-q",
    ];
    ok(&args);
    let csv = std::fs::read_to_string(out.join("sweep.csv")).unwrap();
    let rows: Vec<Vec<f64>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(|x| x.parse().unwrap()).collect())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0][0], rows[1][0]), (2.0, 32.0));
    // A 32-d code reconstructs better than a 2-d one.
    assert!(rows[1][2] > rows[0][2], "psnr_clean {rows:?}");
    for f in [
        "sweep.md",
        "sweep.json",
        "latent-2/model.safetensors",
        "latent-32/config.json",
    ] {
        assert!(out.join(f).exists(), "{f}");
    }
    assert!(is_png(&out.join("sweep.png")));
    // Rerunning reuses the finished runs.
    ok(&args);
    assert_eq!(std::fs::read_to_string(out.join("sweep.csv")).unwrap(), csv);
}
