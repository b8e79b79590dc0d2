//! `mnist-ae eval` end to end on a short real run, and its refusals.

use crate::common::{fails, mnist_dir, ok, short_run};

#[test]
fn eval_writes_metrics_and_a_picture() {
    let run = short_run();
    let tmp = tempfile::tempdir().unwrap();
    let data = mnist_dir();
    let out = ok(&[
        "eval",
        run.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--no-download",
        "--out",
        tmp.path().to_str().unwrap(),
        "--indices",
        "0,1,9999",
    ]);
    assert!(out.contains("10000 test images"), "{out}");
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("eval.json")).unwrap())
            .unwrap();
    let t = &j["test"];
    assert_eq!(t["images"], 10000);
    let (mse, psnr, ssim) = (
        t["mse"].as_f64().unwrap(),
        t["psnr_db"].as_f64().unwrap(),
        t["ssim"].as_f64().unwrap(),
    );
    // Better than the mean image (MSE ~0.067), worse than perfect.
    assert!(mse > 0.0 && mse < 0.045, "mse {mse}");
    assert!(psnr > 11.0 && psnr < 40.0, "psnr {psnr}");
    assert!(ssim > 0.0 && ssim < 1.0, "ssim {ssim}");
    assert_eq!(j["indices"], serde_json::json!([0, 1, 9999]));
    let png = std::fs::read(tmp.path().join("reconstructions.png")).unwrap();
    assert_eq!(&png[..4], b"\x89PNG");
}

#[test]
fn eval_refuses_bad_runs_and_indices() {
    let run = short_run();
    let data = mnist_dir();
    let d = data.to_str().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let e = fails(&[
        "eval",
        run.to_str().unwrap(),
        "--data-dir",
        d,
        "--indices",
        "10000",
        "--out",
        elsewhere.path().to_str().unwrap(),
    ]);
    assert!(e.contains("index 10000 is beyond the test set"), "{e}");
    let e = fails(&["eval", "/nonexistent/run", "--data-dir", d]);
    assert!(e.contains("run folder not found"), "{e}");

    // A copy of the run with a broken config, or without weights, or with a foreign checkpoint.
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    let cfg = std::fs::read_to_string(run.join("config.json")).unwrap();
    std::fs::write(
        copy.join("config.json"),
        cfg.replacen('{', "{\"colour\": 3,", 1),
    )
    .unwrap();
    let e = fails(&["eval", copy.to_str().unwrap(), "--data-dir", d]);
    assert!(
        e.contains("config.json") && e.contains("unknown field"),
        "{e}"
    );
    std::fs::write(
        copy.join("config.json"),
        cfg.replace("\"epochs\": 2", "\"epochs\": \"two\""),
    )
    .unwrap();
    let e = fails(&["eval", copy.to_str().unwrap(), "--data-dir", d]);
    assert!(
        e.contains("config.json") && e.contains("invalid type"),
        "{e}"
    );
    std::fs::write(copy.join("config.json"), &cfg).unwrap();
    let e = fails(&["eval", copy.to_str().unwrap(), "--data-dir", d]);
    assert!(
        e.contains("model.safetensors") && e.contains("missing"),
        "{e}"
    );
    // A code size that disagrees with the layers is refused when the config is read.
    std::fs::write(
        copy.join("config.json"),
        cfg.replace("\"latent_dim\": 16", "\"latent_dim\": 12"),
    )
    .unwrap();
    let e = fails(&["eval", copy.to_str().unwrap(), "--data-dir", d]);
    assert!(
        e.contains("config.json") && e.contains("latent_dim 12 disagrees with the encoder"),
        "{e}"
    );
    // Weights of another size than the config's model are refused, naming both.
    let mut c: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    c["model"] = serde_json::json!({"preset": c["model"]["preset"], "latent_dim": 12});
    std::fs::write(copy.join("config.json"), c.to_string()).unwrap();
    std::fs::copy(
        run.join("model.safetensors"),
        copy.join("model.safetensors"),
    )
    .unwrap();
    let e = fails(&["eval", copy.to_str().unwrap(), "--data-dir", d]);
    assert!(
        e.contains("does not match") && e.contains("latent_dim 12") && e.contains("latent_dim 16"),
        "{e}"
    );
}
