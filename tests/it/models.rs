//! Models: each preset's shapes, the summary, and checkpoints of whole models and halves.

use burn::prelude::*;
use mnist_ae::model::summary::summarize;
use mnist_ae::model::{ModelConfig, Preset, PRESETS};
use mnist_ae::train::checkpoint::{load_decoder, load_encoder, load_model, save_model};

use crate::common::ok;

#[test]
fn every_preset_maps_images_to_codes_and_back() {
    let device = Device::flex();
    for p in PRESETS {
        for latent in [p.defaults().latent_dim, 5] {
            let cfg = ModelConfig::of_preset(p, latent);
            let m = cfg.init(&device).unwrap();
            let x = Tensor::<4>::ones([3, 1, 28, 28], &device);
            let z = m.encoder.forward(x.clone());
            assert_eq!(z.dims(), [3, latent], "{p:?}");
            assert_eq!(m.decoder.forward(z).dims(), [3, 1, 28, 28], "{p:?}");
        }
    }
}

#[test]
fn summaries_count_parameters_like_pytorch() {
    // Totals from `sum(p.numel() for p in model.parameters())` of the same PyTorch modules,
    // worked out by hand from the layer shapes (weights + biases).
    let expect = [
        (Preset::Conv64, 62_905),
        (Preset::Conv7, 210_369),
        (Preset::Linear3, 219_891),
        (Preset::Mlp, 641_344),
        (Preset::Cae32, 111_521),
        (Preset::Vae, 220_385),
    ];
    for (p, n) in expect {
        let cfg = ModelConfig::preset(p);
        let s = summarize(&cfg).unwrap();
        assert_eq!(s.total_params, n, "{p:?}");
        assert_eq!(s.layers.last().unwrap().output, vec![1, 1, 28, 28]);
        let rows: usize = s.layers.iter().map(|r| r.params).sum();
        assert_eq!(rows, n, "{p:?} rows add up");
    }
    // conv64: 1*16*9+16 = 160 in the first conv.
    let out = ok(&["summary", "--model", "conv64"]);
    assert!(
        out.contains("encoder.0") && out.contains("160") && out.contains("[1, 64]"),
        "{out}"
    );
}

#[test]
fn checkpoints_round_trip_and_halves_load_alone() {
    let device = Device::flex();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("model.safetensors");
    let cfg = ModelConfig::preset(Preset::Cae32);
    device.seed(1);
    let m = cfg.init(&device).unwrap();
    save_model(&path, &m, &cfg, 3).unwrap();
    let x = Tensor::<4>::random([2, 1, 28, 28], burn::tensor::Distribution::Default, &device);
    let (loaded, info) = load_model(&path, &cfg, &device).unwrap();
    assert_eq!(info.epoch, 3);
    let a = m.forward(x.clone()).into_data();
    let b = loaded.forward(x.clone()).into_data();
    assert_eq!(a, b);
    let enc = load_encoder(&path, &cfg, &device).unwrap();
    let dec = load_decoder(&path, &cfg, &device).unwrap();
    assert_eq!(dec.forward(enc.forward(x)).into_data(), a);

    // A checkpoint of another size or model is refused with a clear message.
    let other = ModelConfig::of_preset(Preset::Cae32, 8);
    let e = load_model(&path, &other, &device).unwrap_err().to_string();
    assert!(
        e.contains("latent_dim 32") && e.contains("latent_dim 8"),
        "{e}"
    );
    // Truncated.
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 3]).unwrap();
    let e = load_model(&path, &cfg, &device).unwrap_err().to_string();
    assert!(e.contains("model.safetensors"), "{e}");
}

/// `models --show` prints a preset as a spec file that `summary --arch` reads back to the
/// same model; a spec that does not fit fails with the layer, its shape and a hint.
#[test]
fn preset_specs_round_trip_through_files_and_bad_specs_are_explained() {
    let tmp = tempfile::tempdir().unwrap();
    for p in PRESETS {
        let file = tmp.path().join(format!("{}.toml", p.name()));
        std::fs::write(&file, ok(&["models", "--show", p.name()])).unwrap();
        let from_file: serde_json::Value = serde_json::from_str(&ok(&[
            "summary",
            "--arch",
            file.to_str().unwrap(),
            "--json",
        ]))
        .unwrap();
        let preset: serde_json::Value =
            serde_json::from_str(&ok(&["summary", "--model", p.name(), "--json"])).unwrap();
        for key in [
            "latent_dim",
            "encoder_params",
            "decoder_params",
            "total_params",
        ] {
            assert_eq!(from_file[key], preset[key], "{} {key}", p.name());
        }
    }
    let e = crate::common::fails(&[
        "summary",
        "--encoder",
        "conv(16,3,s2,p1) relu conv(32,3,s2,p1) relu flatten linear(16)",
        "--decoder",
        "linear(1568) relu reshape(32,7,7) convt(16,3,s2,p1,op1) relu convt(1,3,s2,p1)",
    ]);
    assert!(
        e.contains("decoder: layer 6 `convt(1,3,s2,p1)`: gives 1×27×27, the model must end at 1×28×28 (try op1)"),
        "{e}"
    );
    let bad = tmp.path().join("bad.toml");
    std::fs::write(
        &bad,
        "encoder = \"flatten linear(8)\"\ndecoder = \"mirror\"\nlayers = 3\n",
    )
    .unwrap();
    let e = crate::common::fails(&["summary", "--arch", bad.to_str().unwrap()]);
    assert!(e.contains("bad.toml") && e.contains("layers"), "{e}");
}
