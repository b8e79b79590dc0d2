//! The layer grammar, shape inference and presets as specs.

use super::arch::{Init, ModelSpec};
use super::shape::{mirror, Shape};
use super::spec::{layers_to_string, parse_layer, parse_layers, Layer};
use super::{Activation, ModelConfig, PRESETS};
use burn::module::Module;
use burn::tensor::Device;

fn err(encoder: &str, decoder: &str) -> String {
    ModelSpec::parse(encoder, decoder, Activation::Sigmoid, false, Init::Pytorch)
        .unwrap_err()
        .to_string()
}

/// Every layer parses, with PyTorch's defaults, and is written back in a form that parses to
/// the same layer.
#[test]
fn every_layer_parses_and_round_trips() {
    let cases = [
        ("linear(16)", Layer::Linear { out: 16 }),
        (
            "conv(16,3)",
            Layer::Conv {
                out: 16,
                k: 3,
                s: 1,
                p: 0,
            },
        ),
        (
            "conv(16,3,s2,p1)",
            Layer::Conv {
                out: 16,
                k: 3,
                s: 2,
                p: 1,
            },
        ),
        (
            "convt(8,4,s2,p1,op1)",
            Layer::ConvT {
                out: 8,
                k: 4,
                s: 2,
                p: 1,
                op: 1,
            },
        ),
        (
            "convt(8, 4, p1)",
            Layer::ConvT {
                out: 8,
                k: 4,
                s: 1,
                p: 1,
                op: 0,
            },
        ),
        ("maxpool(2)", Layer::MaxPool { k: 2, s: 2 }),
        ("maxpool(3,2)", Layer::MaxPool { k: 3, s: 2 }),
        // Names in any case: a capitalised max pool is still a max pool.
        ("MaxPool(2)", Layer::MaxPool { k: 2, s: 2 }),
        ("AVGPOOL(2)", Layer::AvgPool { k: 2, s: 2 }),
        ("avgpool(2,s1)", Layer::AvgPool { k: 2, s: 1 }),
        (
            "adaptive_avgpool(1,1)",
            Layer::AdaptiveAvgPool { h: 1, w: 1 },
        ),
        ("upsample(2)", Layer::Upsample { f: 2 }),
        ("bn", Layer::BatchNorm),
        ("dropout(0.1)", Layer::Dropout { p: 0.1 }),
        ("relu", Layer::Relu),
        ("leaky_relu", Layer::LeakyRelu { a: 0.01 }),
        ("leaky_relu(0.2)", Layer::LeakyRelu { a: 0.2 }),
        ("gelu", Layer::Gelu),
        ("tanh", Layer::Tanh),
        ("sigmoid", Layer::Sigmoid),
        ("flatten", Layer::Flatten),
        ("reshape(32,7,7)", Layer::Reshape { c: 32, h: 7, w: 7 }),
    ];
    for (text, want) in cases {
        let got = parse_layer(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(got, want, "{text}");
        assert_eq!(parse_layer(&got.to_string()).unwrap(), want, "{got}");
    }
    let list = parse_layers(
        "encoder",
        "  conv(16,3,s1,p1)  bn relu\tmaxpool(2) flatten ",
    )
    .unwrap();
    assert_eq!(list.len(), 5);
    assert_eq!(
        layers_to_string(&list),
        "conv(16,3,p1) bn relu maxpool(2) flatten"
    );
}

/// Each class of error names the half, the layer's number and text, and what is wrong.
#[test]
fn parse_errors_name_the_layer_and_the_problem() {
    let cases = [
        (
            "flatten lineer(3)",
            "layer 2 `lineer(3)`: unknown layer `lineer`",
        ),
        ("flatten linear(x)", "out `x` is not a whole number"),
        (
            "flatten linear()",
            "takes 1 positional argument, got 0 (linear(out))",
        ),
        ("conv(16,3,3)", "takes 2 positional arguments, got 3"),
        ("conv(16,3,s2,s1)", "`s` given twice"),
        ("conv(16,s2,3)", "`3` after a named argument"),
        ("conv(0,3)", "out 0 is out of range"),
        ("flatten dropout(1.5)", "p 1.5 is not in [0, 1)"),
        ("relu(2)", "takes no arguments (relu)"),
        ("conv(16,3", "unclosed `(`"),
        ("conv(16,3))", "unbalanced `)`"),
        ("", "no layers given"),
    ];
    for (encoder, want) in cases {
        let e = err(encoder, "mirror");
        assert!(
            e.contains("invalid encoder") && e.contains(want),
            "{encoder}: {e}"
        );
    }
}

/// Shapes are inferred layer by layer; a model that does not fit says where and why.
#[test]
fn shape_errors_name_the_layer_and_the_shapes() {
    let dec = "linear(1568) relu reshape(32,7,7)";
    let cases = [
        // The issue's example: 14×14 → 27×27 with output padding 0.
        (
            "conv(16,3,s2,p1) relu conv(32,3,s2,p1) relu flatten linear(16)",
            format!("{dec} convt(16,3,s2,p1,op1) relu convt(1,3,s2,p1)"),
            "invalid decoder: layer 6 `convt(1,3,s2,p1)`: gives 1×27×27, the model must end at 1×28×28 (try op1)",
        ),
        ("conv(16,3) linear(8)", dec.to_string(), "layer 2 `linear(8)`: needs a flat input, got 16×26×26; add `flatten` before it"),
        ("conv(16,30)", dec.to_string(), "layer 1 `conv(16,30)`: a 30×30 kernel does not fit the 1×28×28 input"),
        ("conv(16,3,s2,p1)", dec.to_string(), "encoder: ends at 16×14×14, but a code is flat"),
        ("flatten linear(16)", "linear(784) reshape(2,14,14)".into(), "needs 392 values, got 784"),
        ("flatten linear(16)", "linear(784)".into(), "end with `reshape(1,28,28)`"),
        ("flatten linear(16)", "reshape(16,1,1) convt(8,4,s2,p1,op2)".into(), "output padding 2 must be smaller than the stride 2"),
        ("flatten linear(5000)", "linear(784) reshape(1,28,28)".into(), "gives a code of 5000 values"),
        ("maxpool(2) flatten linear(8)", "linear(196) reshape(1,14,14) upsample(2) conv(3,3,p1)".into(), "gives 3×28×28, the model must end at 1×28×28 (its last layer must give 1 channel)"),
    ];
    for (encoder, decoder, want) in cases {
        let e = err(encoder, &decoder);
        assert!(e.contains(want), "{encoder} / {decoder}: {e}");
    }
    let e = ModelSpec::parse(
        "flatten linear(16) relu",
        "linear(784) reshape(1,28,28)",
        Activation::Sigmoid,
        true,
        Init::Pytorch,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("must end with `linear(L)`"), "{e}");
}

/// The issue's worked example and a mirrored decoder check out.
#[test]
fn the_issue_example_and_mirrors_check_out() {
    let spec = ModelSpec::parse(
        "conv(16,3,s1,p1) bn relu maxpool(2) conv(32,3,s1,p1) bn relu maxpool(2) flatten dropout(0.1) linear(16)",
        "linear(1568) relu reshape(32,7,7) upsample(2) conv(16,3,s1,p1) relu upsample(2) conv(1,3,s1,p1)",
        Activation::Sigmoid,
        false,
        Init::Pytorch,
    )
    .unwrap();
    let c = spec.check().unwrap();
    assert_eq!(c.latent_dim, 16);
    assert_eq!(
        c.encoder[3].2,
        Shape::Image {
            c: 16,
            h: 14,
            w: 14
        }
    );
    let s = spec.summary("mine").unwrap();
    // conv 1·16·9+16, bn 32, conv 16·32·9+32, bn 64, linear 1568·16+16; decoder linear
    // 16·1568+1568, conv 32·16·9+16, conv 16·9+1.
    assert_eq!(s.encoder_params, 160 + 32 + 4640 + 64 + 25104);
    assert_eq!(s.decoder_params, 26656 + 4624 + 145);

    // The mirror of conv64's encoder: transposed convolutions with the right output padding.
    let enc = parse_layers("encoder", "conv(16,3,s2,p1) relu conv(32,3,s2,p1) relu conv(64,3,s2,p1) relu adaptive_avgpool(1,1) flatten").unwrap();
    assert_eq!(
        layers_to_string(&mirror(&enc).unwrap()),
        "reshape(64,1,1) upsample(4) relu convt(32,3,s2,p1) relu convt(16,3,s2,p1,op1) relu convt(1,3,s2,p1,op1)"
    );
    let mlp = PRESETS[3].spec(32);
    assert_eq!(mirror(&mlp.encoder).unwrap(), mlp.decoder);
    assert!(
        err("conv(16,3,s2,p1) relu convt(8,3) flatten", "mirror").contains("mirror: cannot invert")
    );
}

/// Every preset's spec has its code size, builds a model with the parameters its summary
/// counts, and survives the trip through its TOML form.
#[test]
fn presets_as_specs_round_trip_and_count_their_parameters() {
    // Reading the parameters draws them from the device's generator.
    let _rng = crate::rng_lock();
    let device = Device::flex();
    for p in PRESETS {
        for latent in [p.defaults().latent_dim, 5] {
            let spec = p.spec(latent);
            let s = spec
                .summary(p.name())
                .unwrap_or_else(|e| panic!("{}: {e}", p.name()));
            assert_eq!(s.latent_dim, latent, "{}", p.name());
            let model = ModelConfig::of_preset(p, latent).init(&device).unwrap();
            assert_eq!(s.encoder_params, model.encoder.num_params(), "{}", p.name());
            assert_eq!(s.decoder_params, model.decoder.num_params(), "{}", p.name());
            let back =
                ModelSpec::from_toml(std::path::Path::new("x.toml"), &spec.to_toml()).unwrap();
            assert_eq!(back, spec, "{}", p.name());
        }
    }
}

mod stack {
    use super::super::arch::{Init, ModelSpec};
    use super::super::stack::{init, Decoder, Encoder};
    use super::super::Activation;
    use burn::module::Module;
    use burn::tensor::{Device, Distribution, Tensor, TensorData};

    fn built(spec: &ModelSpec, device: &Device) -> (Encoder, Decoder) {
        init(spec, device).unwrap()
    }

    /// Batch norm and dropout train on an autodiff device and run in inference mode elsewhere:
    /// there dropout is the identity and batch norm uses its running statistics.
    #[test]
    fn batch_norm_and_dropout_switch_to_inference_behaviour() {
        let _rng = crate::rng_lock();
        let spec = ModelSpec::parse(
            "flatten bn dropout(0.5) linear(8)",
            "linear(784) reshape(1,28,28)",
            Activation::Sigmoid,
            false,
            Init::Pytorch,
        )
        .unwrap();
        let device = Device::flex();
        device.seed(3);
        let (enc, _) = built(&spec, &device);
        let x = Tensor::<4>::random([16, 1, 28, 28], Distribution::Normal(2.0, 3.0), &device);
        // Inference: running mean 0 and variance 1, so the first two layers pass x through.
        let a = enc.forward(x.clone());
        let b = enc.forward(x.clone());
        assert_eq!(a.to_data(), b.to_data(), "inference is deterministic");
        let train_device = device.clone().autodiff();
        let enc_t = enc.fork(&train_device);
        let x_t = Tensor::<4>::from_data(x.to_data(), &train_device);
        let plain = |t: Tensor<2>| -> TensorData { t.into_data() };
        let c = plain(enc_t.forward(x_t.clone()));
        let d = plain(enc_t.forward(x_t));
        assert_ne!(c, d, "training draws a new dropout mask each time");
        assert_ne!(a.to_data(), c, "training normalises with batch statistics");
    }
}

/// A model's code size can be changed where the layers allow it (sweeps, `--latent-dim`).
#[test]
fn code_sizes_change_where_the_layers_allow() {
    let spec = ModelSpec::parse(
        "conv(8,3,s2,p1) relu flatten linear(10) relu",
        "linear(1568) reshape(8,14,14) convt(1,3,s2,p1,op1)",
        Activation::Sigmoid,
        false,
        Init::Pytorch,
    )
    .unwrap();
    let m = ModelConfig::custom(spec).unwrap();
    assert_eq!(m.latent_dim, 10);
    let m4 = m.with_latent(4).unwrap();
    assert_eq!(m4.latent_dim, 4);
    assert_eq!(m4.spec.encoder[3], Layer::Linear { out: 4 });
    // conv64's code comes from a convolution and a reshape(L,1,1) starts its decoder.
    let c = ModelConfig::custom(PRESETS[0].spec(64))
        .unwrap()
        .with_latent(20)
        .unwrap();
    assert_eq!(c.spec, PRESETS[0].spec(20));
    // A code that is a whole feature map cannot be resized to any number.
    let fixed = ModelConfig::custom(
        ModelSpec::parse(
            "conv(4,7) flatten",
            "mirror",
            Activation::Sigmoid,
            false,
            Init::Pytorch,
        )
        .unwrap(),
    )
    .unwrap();
    let e = fixed.with_latent(5).unwrap_err().to_string();
    assert!(e.contains("fixed by its layers"), "{e}");
    // Presets keep their name through a resize, and JSON keeps everything.
    let p = ModelConfig::preset(PRESETS[5]).with_latent(3).unwrap();
    assert_eq!(p.name(), "vae");
    let back: ModelConfig = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
    assert_eq!(back, p);
    // The form of runs made before specs: a preset and a code size.
    let old: ModelConfig = serde_json::from_str(r#"{"preset": "cae32", "latent_dim": 7}"#).unwrap();
    assert_eq!(old, ModelConfig::of_preset(PRESETS[4], 7));
}
