//! PyTorch interop without PyTorch: names and layouts of an export, and an import of it that
//! reproduces the run exactly. (`bench/check_torch_all.sh`, run by CI where PyTorch installs,
//! checks the exports against the PyTorch modules themselves.)

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use crate::common::{copy_of_short_run, fails, mnist_dir, ok, short_run, strs};

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
        e.contains("w.safetensors")
            && e.contains("decoder.0.weight has shape [392, 16], the mlp model needs [392, 8]")
            && e.contains("HINT: the file was exported from the mlp model with --latent-dim 16"),
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
    assert!(e.contains("already holds a run"), "{e}");
}

/// `path`'s F32 tensors with `change` applied to each one's (name, shape, values), and its
/// others as they are, written to `to`.
fn rewrite(path: &Path, to: &Path, change: impl Fn(&str, &mut Vec<usize>, &mut Vec<f32>)) {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in st.tensors() {
        let mut shape = view.shape().to_vec();
        if view.dtype() != Dtype::F32 {
            tensors.push((name, view.dtype(), shape, view.data().to_vec()));
            continue;
        }
        let mut v: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        change(&name, &mut shape, &mut v);
        let data = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        tensors.push((name, Dtype::F32, shape, data));
    }
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, t, s, d)| (n.clone(), TensorView::new(*t, s.clone(), d).unwrap()))
        .collect();
    std::fs::write(to, safetensors::serialize(views, &None).unwrap()).unwrap();
}

/// `export` replaces only what an earlier export wrote and checks everything before writing;
/// `import` names a tensor of the wrong shape in PyTorch's terms and leaves no folder when it
/// fails; analyses refuse a model whose codes are not finite, and another run's folder.
#[test]
fn export_import_and_analyses_refuse_what_would_mislead_or_destroy() {
    let (data, tmp) = (mnist_dir(), tempfile::tempdir().unwrap());
    let d = data.to_str().unwrap();
    let run = copy_of_short_run(&tmp.path().join("run"));
    let r = run.to_str().unwrap();
    let at = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    let export = |extra: &[&str]| {
        let mut args = vec!["export", r, "--data-dir", d, "--no-download"];
        args.extend_from_slice(extra);
        args.into_iter().map(String::from).collect::<Vec<_>>()
    };

    // The run's own weights are not an export's to replace.
    let model = run.join("model.safetensors");
    let before = std::fs::read(&model).unwrap();
    let e = fails(&strs(&export(&["--torch", model.to_str().unwrap()])));
    assert!(
        e.contains("is not weights that `mnist-ae export` wrote"),
        "{e}"
    );
    assert_eq!(std::fs::read(&model).unwrap(), before);
    // Nor is a user's own module code beside the weights.
    std::fs::write(tmp.path().join("mine.py"), "print('mine')\n").unwrap();
    let e = fails(&strs(&export(&["--torch", &at("mine.safetensors")])));
    assert!(
        e.contains("mine.py") && e.contains("not module code"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("mine.py")).unwrap(),
        "print('mine')\n"
    );
    assert!(!tmp.path().join("mine.safetensors").exists());
    // Two roles for one file, an empty reference, and a reference without data write nothing.
    let w = at("w.safetensors");
    let e = fails(&strs(&export(&["--torch", &w, "--reference", &w])));
    assert!(e.contains("would be both"), "{e}");
    let e = fails(&strs(&export(&[
        "--torch",
        &w,
        "--reference",
        &at("r"),
        "--count",
        "0",
    ])));
    assert!(e.contains("--count 0"), "{e}");
    let e = fails(&[
        "export",
        r,
        "--torch",
        &w,
        "--reference",
        &at("r"),
        "--data-dir",
        &at("none"),
        "--no-download",
    ]);
    assert!(e.contains("not found"), "{e}");
    assert!(!Path::new(&w).exists() && !tmp.path().join("w.py").exists());
    // What an export wrote, it may write again.
    for _ in 0..2 {
        ok(&strs(&export(&[
            "--torch",
            &w,
            "--reference",
            &at("r"),
            "--count",
            "3",
        ])));
    }

    // A weight stored with another shape is named with the shape the module has.
    let flat = at("flat.safetensors");
    rewrite(Path::new(&w), Path::new(&flat), |name, shape, _| {
        if name == "decoder.0.weight" {
            *shape = vec![shape.iter().product()];
        }
    });
    let into = tmp.path().join("imported");
    let i = into.to_str().unwrap();
    let import = |file: &str, out: &str| {
        let args = [
            "import",
            file,
            "--model",
            "mlp",
            "--latent-dim",
            "16",
            "--out",
            out,
        ];
        args.map(String::from).to_vec()
    };
    let e = fails(&strs(&import(&flat, i)));
    assert!(
        e.contains("tensor decoder.0.weight has shape [6272], the mlp model needs [392, 16]"),
        "{e}"
    );
    assert!(!into.exists(), "a failed import leaves no folder");
    // A folder that holds a run (here only its config) is not imported into.
    let crashed = tmp.path().join("crashed");
    std::fs::create_dir(&crashed).unwrap();
    std::fs::copy(run.join("config.json"), crashed.join("config.json")).unwrap();
    let e = fails(&strs(&import(&w, crashed.to_str().unwrap())));
    assert!(e.contains("already holds a run (config.json)"), "{e}");
    // Neither it (no checkpoint yet) nor an imported run (no optimizer state) resumes.
    let resume = |dir: &Path| fails(&["train", "--resume", dir.to_str().unwrap(), "--data-dir", d]);
    let e = resume(&crashed);
    assert!(e.contains("holds no checkpoint to resume"), "{e}");

    // A batch norm's running variance below zero is refused.
    let bn = tmp.path().join("bn");
    let spec = [
        "--encoder",
        "flatten linear(16) bn relu linear(4)",
        "--decoder",
        "linear(784) reshape(1,28,28)",
    ];
    let mut args = vec!["train", "--epochs", "1", "--limit-train", "500", "-q"];
    args.extend(spec);
    args.extend([
        "--data-dir",
        d,
        "--no-download",
        "--out",
        bn.to_str().unwrap(),
    ]);
    ok(&args);
    let bn_w = at("bn.safetensors");
    ok(&["export", bn.to_str().unwrap(), "--torch", &bn_w]);
    let negative = at("negative.safetensors");
    rewrite(Path::new(&bn_w), Path::new(&negative), |name, _, v| {
        if name.ends_with("running_var") {
            v[0] = -1.0;
        }
    });
    let mut args = vec!["import", &negative, "--out", i];
    args.extend(spec);
    let e = fails(&args);
    assert!(e.contains("running_var holds -1"), "{e}");

    // Weights so large that every code is infinite: no analysis shows a result from them.
    let huge = at("huge.safetensors");
    rewrite(Path::new(&w), Path::new(&huge), |name, _, v| {
        if name == "encoder.3.weight" {
            v.fill(3e38);
        }
    });
    ok(&strs(&import(&huge, i)));
    let e = resume(&into);
    assert!(e.contains("has weights but no resume.safetensors"), "{e}");
    for command in ["interpolate", "classify", "sample"] {
        let e = fails(&[
            command,
            i,
            "--data-dir",
            d,
            "--no-download",
            "--out",
            &at(command),
        ]);
        assert!(
            e.contains("holds inf, not a finite number"),
            "{command}: {e}"
        );
        assert!(!tmp.path().join(command).exists(), "{command}");
    }

    // Another run's folder does not take this run's results.
    let e = fails(&["eval", r, "--data-dir", d, "--no-download", "--out", i]);
    assert!(e.contains("is another run's folder"), "{e}");
    assert!(!into.join("eval.json").exists());
}
