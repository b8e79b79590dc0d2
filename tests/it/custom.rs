//! Models of one's own (`--encoder`/`--decoder`, `--arch`) through every command, and run
//! folders written before models were specs.

use std::path::{Path, PathBuf};

use crate::common::{fails, mnist_dir, ok};

const ENCODER: &str = "conv(16,3,s1,p1) bn relu maxpool(2) conv(32,3,s1,p1) bn relu maxpool(2) flatten dropout(0.1) linear(16)";
const DECODER: &str = "linear(1568) relu reshape(32,7,7) upsample(2) conv(16,3,s1,p1) relu upsample(2) conv(1,3,s1,p1)";

fn test_metrics(run: &Path) -> serde_json::Value {
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("eval.json")).unwrap()).unwrap();
    j["test"].clone()
}

fn as_refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn fixture(name: &str, into: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let dst = into.join(name);
    std::fs::create_dir_all(&dst).unwrap();
    for f in std::fs::read_dir(&src).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dst.join(f.file_name().unwrap())).unwrap();
    }
    dst
}

/// Run folders written by the build before models were specs (a `preset` + `latent_dim`
/// config, weights under the presets' own layer names; made with that build, see
/// tests/fixtures/README.md) evaluate to exactly the numbers that build gave, export, and
/// resume.
#[test]
fn run_folders_from_before_specs_evaluate_export_and_resume() {
    let data = mnist_dir();
    let d = data.to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for name in ["legacy-conv64", "legacy-vae"] {
        let run = fixture(name, tmp.path());
        let before = test_metrics(&run);
        ok(&[
            "eval",
            run.to_str().unwrap(),
            "--data-dir",
            d,
            "--no-download",
        ]);
        assert_eq!(
            test_metrics(&run),
            before,
            "{name}: same test metrics, bit for bit"
        );
        let w = tmp.path().join(format!("{name}.safetensors"));
        ok(&[
            "export",
            run.to_str().unwrap(),
            "--torch",
            w.to_str().unwrap(),
        ]);
        let code = std::fs::read_to_string(w.with_extension("py")).unwrap();
        assert!(code.contains("class Autoencoder(nn.Module)"), "{code}");
    }
    // The vae's two heads keep PyTorch's names.
    let bytes = std::fs::read(tmp.path().join("legacy-vae.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let names: Vec<String> = st.names().into_iter().cloned().collect();
    for n in [
        "fc_mu.weight",
        "fc_logvar.bias",
        "encoder.0.weight",
        "decoder.5.bias",
    ] {
        assert!(names.iter().any(|x| x == n), "{n} in {names:?}");
    }
    // Training goes on from the old checkpoint and its Adam state.
    let run = tmp.path().join("legacy-conv64");
    let out = ok(&[
        "train",
        "--resume",
        run.to_str().unwrap(),
        "--epochs",
        "2",
        "--data-dir",
        d,
        "--no-download",
        "-q",
    ]);
    assert!(out.contains("trained 2 epochs"), "{out}");
    let config = std::fs::read_to_string(run.join("config.json")).unwrap();
    assert!(
        config.contains("\"encoder\": \"conv(16,3,s2,p1) relu"),
        "{config}"
    );
}

/// The example model (batch norm, max-pooling, dropout, upsampling) trains, saves its
/// spec in config.json, evaluates the same way twice (batch norm and dropout in inference
/// mode), exports its weights and PyTorch code, and imports back to the same numbers.
#[test]
fn a_model_of_your_own_trains_evaluates_exports_and_imports() {
    let data = mnist_dir();
    let d = data.to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("mine");
    let r = run.to_str().unwrap();
    let model = [
        "--encoder",
        ENCODER,
        "--decoder",
        DECODER,
        "--output",
        "sigmoid",
    ];
    let train = |extra: &[&str]| {
        let mut args = vec!["train"];
        args.extend(model);
        args.extend([
            "--epochs",
            "1",
            "--limit-train",
            "600",
            "--data-dir",
            d,
            "--no-download",
            "-q",
        ]);
        args.extend(extra);
        args.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    // Each batch in four shards whose batch norms take the batch's statistics together. The
    // same seed trains the same weights and running statistics, written as the same bytes,
    // whatever the threads.
    ok(&as_refs(&train(&["--out", r, "--threads", "2"])));
    let again = tmp.path().join("again");
    ok(&as_refs(&train(&[
        "--out",
        again.to_str().unwrap(),
        "--threads",
        "1",
    ])));
    let weights = |dir: &Path| std::fs::read(dir.join("model.safetensors")).unwrap();
    assert!(
        weights(&run) == weights(&again),
        "two runs of one seed differ"
    );
    let config = std::fs::read_to_string(run.join("config.json")).unwrap();
    // Written in canonical form (defaults such as s1 left out).
    assert!(
        config.contains("conv(16,3,p1) bn relu maxpool(2)") && config.contains("\"shards\": 4"),
        "{config}"
    );

    ok(&["eval", r, "--data-dir", d]);
    let first = test_metrics(&run);
    ok(&["eval", r, "--data-dir", d]);
    assert_eq!(test_metrics(&run), first, "inference is deterministic");
    let mse = first["mse"].as_f64().unwrap();
    assert!(mse > 0.0 && mse < 0.2, "{first}");

    // Resuming with other layers is refused, naming them.
    let e = fails(&[
        "train",
        "--resume",
        r,
        "--encoder",
        "flatten linear(16)",
        "--decoder",
        "mirror",
    ]);
    assert!(
        e.contains("--encoder") && e.contains("flatten linear(16)"),
        "{e}"
    );

    let w = tmp.path().join("mine.safetensors");
    let out = ok(&["export", r, "--torch", w.to_str().unwrap()]);
    assert!(out.contains("mine.py"), "{out}");
    let code = std::fs::read_to_string(tmp.path().join("mine.py")).unwrap();
    for want in [
        "nn.Conv2d(1, 16, 3, stride=1, padding=1),  # 0",
        "nn.BatchNorm2d(16),  # 1",
        "nn.MaxPool2d(2, stride=2),  # 3",
        "nn.Dropout(0.1),  # 9",
        "nn.Linear(1568, 16),  # 10",
        "nn.Upsample(scale_factor=2, mode=\"nearest\"),  # 3",
        "nn.Unflatten(1, (32, 7, 7)),  # 2",
        "return torch.sigmoid(self(x))",
    ] {
        assert!(code.contains(want), "{want} in\n{code}");
    }
    let bytes = std::fs::read(&w).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let bn = st.tensor("encoder.1.running_var").unwrap();
    assert_eq!(bn.shape(), [16]);
    assert_eq!(
        st.tensor("encoder.1.num_batches_tracked").unwrap().dtype(),
        safetensors::Dtype::I64
    );
    assert_eq!(st.tensor("encoder.10.weight").unwrap().shape(), [16, 1568]);

    let back = tmp.path().join("back");
    let mut args = vec!["import", w.to_str().unwrap()];
    args.extend(model);
    args.extend(["--out", back.to_str().unwrap()]);
    ok(&args);
    ok(&["eval", back.to_str().unwrap(), "--data-dir", d]);
    assert_eq!(
        test_metrics(&back),
        first,
        "imported weights give the same numbers"
    );

    // Weights of another model are refused, naming what is missing in PyTorch's words.
    let e = fails(&[
        "import",
        w.to_str().unwrap(),
        "--model",
        "conv64",
        "--out",
        tmp.path().join("x").to_str().unwrap(),
    ]);
    assert!(e.contains("does not belong to the conv64 model"), "{e}");
}

/// `--arch` reads a file; `summary` shows its layers by index; a sweep resizes its code.
#[test]
fn arch_files_summaries_and_sweeps_work_on_your_own_model() {
    let data = mnist_dir();
    let d = data.to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("pooled.toml");
    std::fs::write(
        &file,
        "encoder = \"conv(8,3,s1,p1) relu maxpool(2) flatten linear(10)\"\ndecoder = \"mirror\"\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let s = ok(&["summary", "--arch", f]);
    assert!(
        s.contains("encoder.4") && s.contains("Linear(1568→10)") && s.contains("[1, 10]"),
        "{s}"
    );
    let out = tmp.path().join("sweep");
    let csv = ok(&[
        "sweep",
        "--arch",
        f,
        "--latent-dims",
        "4,12",
        "--epochs",
        "1",
        "--limit-train",
        "500",
        "--data-dir",
        d,
        "--no-download",
        "--out",
        out.to_str().unwrap(),
        "-q",
    ]);
    assert!(csv.contains("latent_dim"), "{csv}");
    for l in [4, 12] {
        let c = std::fs::read_to_string(out.join(format!("latent-{l}/config.json"))).unwrap();
        assert!(c.contains(&format!("linear({l})")), "{c}");
    }
    // A code size the layers cannot give is refused before training.
    let e = fails(&[
        "train",
        "--encoder",
        "conv(4,7) flatten",
        "--decoder",
        "mirror",
        "--latent-dim",
        "5",
    ]);
    assert!(
        e.contains("latent-dim") && e.contains("fixed by its layers"),
        "{e}"
    );
}
