//! The PyTorch side of a spec: the module as Python code (an `nn.Sequential` per half, in the
//! spec's order, so layer `i` of a half is `encoder.i` / `decoder.i` in the state dict), and
//! the names and layouts of its state dict.
//!
//! A variational model's encoder `Sequential` stops before its last layer, which becomes
//! `fc_mu`, with `fc_logvar` beside it. Batch norm's `gamma`/`beta` are PyTorch's
//! `weight`/`bias`; linear weights are stored `[in, out]` by burn and `[out, in]` by PyTorch.

use crate::model::arch::{ModelSpec, LOGVAR_HEAD, MU_HEAD};
use crate::model::shape::{Shape, Traced};
use crate::model::spec::{layers_to_string, Layer};
use crate::model::{Activation, ModelConfig};

/// What one of our tensors is on the PyTorch side.
#[derive(Debug, Clone, PartialEq)]
pub struct TorchName {
    /// The state-dict key.
    pub name: String,
    /// A linear layer's weight: transposed between the two.
    pub transpose: bool,
    /// The layer is batch norm (PyTorch also keeps `num_batches_tracked` for it).
    pub batch_norm: bool,
}

/// Which layer of which half a name of ours or theirs refers to.
enum Slot {
    Encoder(usize),
    LogVar,
    Decoder(usize),
}

fn layer_of(spec: &ModelSpec, slot: &Slot) -> Option<Layer> {
    match *slot {
        Slot::Encoder(i) => spec.encoder.get(i).copied(),
        Slot::LogVar => spec.encoder.last().copied(),
        Slot::Decoder(i) => spec.decoder.get(i).copied(),
    }
}

/// Our parameter name (`encoder.layers.3.weight`) → its PyTorch key and layout.
pub fn to_torch(spec: &ModelSpec, ours: &str) -> Option<TorchName> {
    let (layer, param) = ours.rsplit_once('.')?;
    let slot = if layer == "encoder.logvar" {
        Slot::LogVar
    } else if let Some(i) = layer.strip_prefix("encoder.layers.") {
        Slot::Encoder(i.parse().ok()?)
    } else {
        Slot::Decoder(layer.strip_prefix("decoder.layers.")?.parse().ok()?)
    };
    let kind = layer_of(spec, &slot)?;
    let last = spec.encoder.len() - 1;
    let module = match slot {
        Slot::LogVar => LOGVAR_HEAD.to_string(),
        Slot::Encoder(i) if spec.variational && i == last => MU_HEAD.to_string(),
        Slot::Encoder(i) => format!("encoder.{i}"),
        Slot::Decoder(i) => format!("decoder.{i}"),
    };
    let batch_norm = kind == Layer::BatchNorm;
    let param = match (batch_norm, param) {
        (true, "gamma") => "weight",
        (true, "beta") => "bias",
        (_, p) => p,
    };
    Some(TorchName {
        name: format!("{module}.{param}"),
        transpose: matches!(kind, Layer::Linear { .. }) && param == "weight",
        batch_norm,
    })
}

/// A PyTorch key (`encoder.3.weight`) → our parameter name and layout; `None` for keys that
/// are not ours (`num_batches_tracked` is PyTorch's own).
pub fn from_torch(spec: &ModelSpec, theirs: &str) -> Option<TorchName> {
    let (module, param) = theirs.rsplit_once('.')?;
    let last = spec.encoder.len() - 1;
    let slot = match module {
        MU_HEAD if spec.variational => Slot::Encoder(last),
        LOGVAR_HEAD if spec.variational => Slot::LogVar,
        m => {
            if let Some(i) = m.strip_prefix("encoder.") {
                let i: usize = i.parse().ok()?;
                if spec.variational && i == last {
                    return None;
                }
                Slot::Encoder(i)
            } else {
                Slot::Decoder(m.strip_prefix("decoder.")?.parse().ok()?)
            }
        }
    };
    let kind = layer_of(spec, &slot)?;
    let batch_norm = kind == Layer::BatchNorm;
    let param = match (kind, param) {
        (Layer::BatchNorm, "weight") => "gamma",
        (Layer::BatchNorm, "bias") => "beta",
        (Layer::BatchNorm, p @ ("running_mean" | "running_var")) => p,
        (
            Layer::Linear { .. } | Layer::Conv { .. } | Layer::ConvT { .. },
            p @ ("weight" | "bias"),
        ) => p,
        _ => return None,
    };
    let layer = match slot {
        Slot::Encoder(i) => format!("encoder.layers.{i}"),
        Slot::LogVar => "encoder.logvar".to_string(),
        Slot::Decoder(i) => format!("decoder.layers.{i}"),
    };
    Some(TorchName {
        name: format!("{layer}.{param}"),
        transpose: matches!(kind, Layer::Linear { .. }) && param == "weight",
        batch_norm,
    })
}

/// One layer as a PyTorch module constructor, for input shape `x`.
fn module(l: &Layer, x: Shape) -> String {
    let channels = x.channels();
    match *l {
        Layer::Linear { out } => format!("nn.Linear({}, {out})", x.numel()),
        Layer::Conv { out, k, s, p } => {
            format!("nn.Conv2d({channels}, {out}, {k}, stride={s}, padding={p})")
        }
        Layer::ConvT { out, k, s, p, op } => format!(
            "nn.ConvTranspose2d({channels}, {out}, {k}, stride={s}, padding={p}, output_padding={op})"
        ),
        Layer::MaxPool { k, s } => format!("nn.MaxPool2d({k}, stride={s})"),
        Layer::AvgPool { k, s } => format!("nn.AvgPool2d({k}, stride={s})"),
        Layer::AdaptiveAvgPool { h, w } => format!("nn.AdaptiveAvgPool2d(({h}, {w}))"),
        Layer::Upsample { f } => format!("nn.Upsample(scale_factor={f}, mode=\"nearest\")"),
        Layer::BatchNorm => match x {
            Shape::Image { c, .. } => format!("nn.BatchNorm2d({c})"),
            Shape::Flat(n) => format!("nn.BatchNorm1d({n})"),
        },
        Layer::Dropout { p } => format!("nn.Dropout({p:?})"),
        Layer::Relu => "nn.ReLU()".into(),
        Layer::LeakyRelu { a } => format!("nn.LeakyReLU({a:?})"),
        Layer::Gelu => "nn.GELU()".into(),
        Layer::Tanh => "nn.Tanh()".into(),
        Layer::Sigmoid => "nn.Sigmoid()".into(),
        Layer::Flatten => "nn.Flatten()".into(),
        // `reshape` takes any input of the right size; `nn.Unflatten` only a flat one.
        Layer::Reshape { c, h, w } => match x {
            Shape::Flat(_) => format!("nn.Unflatten(1, ({c}, {h}, {w}))"),
            Shape::Image { .. } => {
                format!("nn.Sequential(nn.Flatten(), nn.Unflatten(1, ({c}, {h}, {w})))")
            }
        },
    }
}

fn sequential(layers: &[(Layer, Shape, Shape)]) -> String {
    let mut s = String::from("nn.Sequential(\n");
    for (i, (l, x, _)) in layers.iter().enumerate() {
        s.push_str(&format!("            {},  # {i}: {l}\n", module(l, *x)));
    }
    s.push_str("        )");
    s
}

/// The Python source of the PyTorch module of `model`, whose exported weights file is
/// `weights` (named in the docstring).
pub fn module_code(model: &ModelConfig, weights: &str) -> crate::error::Result<String> {
    let spec = &model.spec;
    let checked = spec.check()?;
    let enc: &Traced = &checked.encoder;
    let act = match spec.output {
        Activation::Sigmoid => "torch.sigmoid",
        Activation::Tanh => "torch.tanh",
    };
    let mut init = String::new();
    let (encode, stats) = if spec.variational {
        let (l, x, _) = enc[enc.len() - 1];
        let head = module(&l, x);
        init.push_str(&format!(
            "        self.encoder = {}\n        self.fc_mu = {head}\n        self.fc_logvar = {head}\n",
            sequential(&enc[..enc.len() - 1])
        ));
        (
            "        return self.fc_mu(self.encoder(x))\n",
            "\n    def stats(self, x):\n        \"\"\"Mean and log-variance of the code of images `x`.\"\"\"\n        h = self.encoder(x)\n        return self.fc_mu(h), self.fc_logvar(h)\n",
        )
    } else {
        init.push_str(&format!("        self.encoder = {}\n", sequential(enc)));
        ("        return self.encoder(x)\n", "")
    };
    init.push_str(&format!(
        "        self.decoder = {}\n",
        sequential(&checked.decoder)
    ));
    Ok(format!(
        r#""""The PyTorch module of an mnist-ae model ({name}), written by `mnist-ae export`.

    encoder: {encoder}
    decoder: {decoder}
    output:  {output}{variational}

Load the exported weights and run it:

    import torch
    from safetensors.torch import load_file
    model = Autoencoder()
    model.load_state_dict(load_file("{weights}"))
    model.eval()  # batch norm and dropout in inference mode, as mnist-ae evaluates
    images = torch.rand(8, 1, 28, 28)  # [batch, 1, 28, 28], scaled as the model was trained
    recon = model.reconstruct(images)
"""
import torch
from torch import nn


class Autoencoder(nn.Module):
    """Images [b, 1, 28, 28] to a code [b, {latent}] and back; `forward` gives logits."""

    def __init__(self):
        super().__init__()
{init}
    def encode(self, x):
        """The code of images `x`{mean}."""
{encode}{stats}
    def forward(self, x):
        """Logits of the reconstruction of `x`."""
        return self.decoder(self.encode(x))

    def reconstruct(self, x):
        """The reconstruction of `x`, through the output activation."""
        return {act}(self(x))
"#,
        name = model.name(),
        encoder = layers_to_string(&spec.encoder),
        decoder = layers_to_string(&spec.decoder),
        output = format!("{:?}", spec.output).to_lowercase(),
        variational = if spec.variational {
            "\n    variational (the encoder's last layer gives mean and log-variance)"
        } else {
            ""
        },
        latent = model.latent_dim,
        mean = if spec.variational { " (the mean)" } else { "" },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::arch::Init;
    use crate::model::PRESETS;
    use crate::train::checkpoint::named_tensors;
    use burn::tensor::Device;

    fn models() -> Vec<ModelConfig> {
        let mut m: Vec<_> = PRESETS.into_iter().map(ModelConfig::preset).collect();
        let spec = ModelSpec::parse(
            "flatten linear(64) bn relu dropout(0.2) linear(8)",
            "linear(64) bn relu linear(784) reshape(1,28,28)",
            Activation::Tanh,
            true,
            Init::Pytorch,
        )
        .unwrap();
        m.push(ModelConfig::custom(spec).unwrap());
        m
    }

    /// Every tensor of every preset and of a variational model with batch norm has a PyTorch
    /// name, and the name leads back to it.
    #[test]
    fn every_tensor_has_a_pytorch_name_and_back() {
        // Reading the parameters draws them from the device's generator.
        let _rng = crate::rng_lock();
        let device = Device::flex();
        for m in models() {
            let model = m.init(&device).unwrap();
            for (ours, shape, _) in named_tensors(&model) {
                let t = to_torch(&m.spec, &ours).unwrap_or_else(|| panic!("{ours}"));
                assert_eq!(t.transpose, shape.len() == 2, "{ours}");
                let back = from_torch(&m.spec, &t.name).unwrap();
                assert_eq!(back.name, ours, "{} → {}", ours, t.name);
            }
        }
    }

    /// The presets' names are the ones their PyTorch twins (`bench/torch_models.py`) use.
    #[test]
    fn preset_names_match_their_pytorch_twins() {
        let name = |p, ours: &str| to_torch(&ModelConfig::preset(p).spec, ours).unwrap().name;
        use crate::model::Preset::*;
        assert_eq!(name(Conv64, "decoder.layers.7.weight"), "decoder.7.weight");
        assert_eq!(name(Linear3, "encoder.layers.1.bias"), "encoder.1.bias");
        assert_eq!(name(Cae32, "encoder.layers.5.weight"), "encoder.5.weight");
        assert_eq!(name(Vae, "encoder.layers.5.weight"), "fc_mu.weight");
        assert_eq!(name(Vae, "encoder.logvar.bias"), "fc_logvar.bias");
        let spec = &models()[6].spec;
        assert_eq!(
            to_torch(spec, "decoder.layers.1.gamma").unwrap().name,
            "decoder.1.weight"
        );
        assert_eq!(
            to_torch(spec, "encoder.layers.2.running_var").unwrap().name,
            "encoder.2.running_var"
        );
        // Keys that are not parameters of that layer belong to no model.
        assert!(
            from_torch(spec, "encoder.3.weight").is_none(),
            "relu has no weight"
        );
        assert!(
            from_torch(spec, "encoder.5.weight").is_none(),
            "fc_mu, not encoder.5"
        );
        assert!(from_torch(spec, "decoder.9.bias").is_none());
    }

    /// The generated module names every layer in order, with the heads of a variational one.
    #[test]
    fn module_code_lists_the_layers_in_order() {
        let m = &models()[6];
        let code = module_code(m, "w.safetensors").unwrap();
        for want in [
            "nn.Flatten(),  # 0: flatten",
            "nn.Linear(784, 64),  # 1",
            "nn.BatchNorm1d(64),  # 2: bn",
            "nn.Dropout(0.2),  # 4",
            "self.fc_mu = nn.Linear(64, 8)",
            "self.fc_logvar = nn.Linear(64, 8)",
            "nn.Unflatten(1, (1, 28, 28)),  # 4",
            "return torch.tanh(self(x))",
            "load_file(\"w.safetensors\")",
        ] {
            assert!(code.contains(want), "{want} in\n{code}");
        }
        assert!(
            !code.contains("# 5: linear(8)"),
            "the mean head is not in the Sequential"
        );
    }

    /// Each layer with parameters in a summary is named as the exported module names its
    /// tensors.
    #[test]
    fn summary_names_are_the_exported_modules() {
        let _rng = crate::rng_lock();
        let device = Device::flex();
        for m in models() {
            let model = m.init(&device).unwrap();
            let torch: Vec<String> = named_tensors(&model)
                .into_iter()
                .map(|(ours, ..)| to_torch(&m.spec, &ours).unwrap().name)
                .collect();
            let summary = m.spec.summary("m").unwrap();
            for row in summary.layers.iter().filter(|r| r.params > 0) {
                let prefix = format!("{}.", row.name);
                assert!(
                    torch.iter().any(|t| t.starts_with(&prefix)),
                    "{} not in {torch:?}",
                    row.name
                );
            }
        }
    }

    /// A reshape of an image (not of a flat input) flattens it first, as mnist-ae does:
    /// PyTorch's `Unflatten` alone takes only a flat input.
    #[test]
    fn a_reshaped_image_is_flattened_first() {
        let spec = ModelSpec::parse(
            "conv(8,3,s2,p1) relu reshape(2,28,28) conv(4,3,p1) flatten linear(8)",
            "linear(784) reshape(1,28,28)",
            Activation::Sigmoid,
            false,
            Init::Pytorch,
        )
        .unwrap();
        let checked = spec.check().unwrap();
        let (l, x, _) = &checked.encoder[2];
        assert_eq!(
            module(l, *x),
            "nn.Sequential(nn.Flatten(), nn.Unflatten(1, (2, 28, 28)))"
        );
        let (l, x, _) = &checked.decoder[1];
        assert_eq!(module(l, *x), "nn.Unflatten(1, (1, 28, 28))");
    }
}
