//! PyTorch interop without PyTorch: names and layouts of an export, and an import of it that
//! reproduces the run exactly. (`bench/check_torch_all.sh`, run by CI where PyTorch installs,
//! checks the exports against the PyTorch modules themselves.)

use std::collections::HashMap;

use safetensors::SafeTensors;

use crate::common::{fails, mnist_dir, ok, short_run};

#[test]
fn export_uses_pytorch_names_and_import_reproduces_the_run() {
    let (run, data, tmp) = (short_run(), mnist_dir(), tempfile::tempdir().unwrap());
    let d = data.to_str().unwrap();
    let w = tmp.path().join("w.safetensors");
    ok(&[
        "export",
        run.to_str().unwrap(),
        "--torch",
        w.to_str().unwrap(),
        "--data-dir",
        d,
    ]);
    let bytes = std::fs::read(&w).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let shapes: HashMap<String, Vec<usize>> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.shape().to_vec()))
        .collect();
    // mlp with a 16-d code: nn.Sequential(Flatten, Linear(784, 392), ReLU, Linear(392, 16), ReLU)
    // and nn.Sequential(Linear(16, 392), ReLU, Linear(392, 784), Sigmoid, Unflatten).
    let want: HashMap<String, Vec<usize>> = [
        ("encoder.1.weight", vec![392, 784]),
        ("encoder.1.bias", vec![392]),
        ("encoder.3.weight", vec![16, 392]),
        ("encoder.3.bias", vec![16]),
        ("decoder.0.weight", vec![392, 16]),
        ("decoder.0.bias", vec![392]),
        ("decoder.2.weight", vec![784, 392]),
        ("decoder.2.bias", vec![784]),
    ]
    .into_iter()
    .map(|(n, s)| (n.to_string(), s))
    .collect();
    assert_eq!(shapes, want);

    let imported = tmp.path().join("imported");
    let i = imported.to_str().unwrap();
    ok(&[
        "import",
        w.to_str().unwrap(),
        "--model",
        "mlp",
        "--latent-dim",
        "16",
        "--out",
        i,
    ]);
    let mse = |r: &str| -> String {
        let out = ok(&[
            "eval",
            r,
            "--data-dir",
            d,
            "--no-download",
            "--out",
            tmp.path().join("evals").to_str().unwrap(),
        ]);
        out.split("MSE ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(mse(run.to_str().unwrap()), mse(i));

    // Weights of another shape or preset are refused, naming the file.
    let e = fails(&[
        "import",
        w.to_str().unwrap(),
        "--model",
        "mlp",
        "--latent-dim",
        "8",
        "--out",
        tmp.path().join("x").to_str().unwrap(),
    ]);
    assert!(
        e.contains("w.safetensors") && e.contains("shape") || e.contains("F32 [8"),
        "{e}"
    );
    let e = fails(&[
        "import",
        w.to_str().unwrap(),
        "--model",
        "conv64",
        "--out",
        tmp.path().join("y").to_str().unwrap(),
    ]);
    assert!(e.contains("does not belong to the conv64 model"), "{e}");
    let e = fails(&[
        "import",
        w.to_str().unwrap(),
        "--model",
        "mlp",
        "--latent-dim",
        "16",
        "--out",
        i,
    ]);
    assert!(e.contains("already holds a model"), "{e}");
}
