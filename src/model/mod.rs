//! Models as data: a [`ModelConfig`] is an architecture ([`ModelSpec`]: layer lists, output
//! activation, variational or not) and its code size; the six presets are six such specs
//! ([`Preset::spec`]). Every model is built by one generic layer stack ([`stack`]) and wrapped
//! in an [`Autoencoder`]: an encoder to a code, a decoder from a code to logits
//! (pre-activation), and the output activation.

pub mod arch;
pub mod layers;
pub mod legacy;
pub mod shape;
pub mod spec;
#[cfg(test)]
mod spec_tests;
pub mod stack;
pub mod summary;

use burn::prelude::*;
use burn::tensor::activation::{sigmoid, tanh};
use serde::{Deserialize, Serialize};

use crate::data::Scale;
use crate::error::{Error, Result};
use arch::{Init, ModelSpec};
pub use stack::{Decoder, Encoder};

/// The named architectures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// Conv AE with a 64-d adaptive-pooled code.
    Conv64,
    /// Conv AE with a 7×7 convolution to a 64-d code.
    Conv7,
    /// The 784-128-64-12-3 linear AE.
    Linear3,
    /// The 784-392-N-392-784 MLP AE with Xavier init.
    Mlp,
    /// Conv AE with a linear 32-d bottleneck and tanh output.
    Cae32,
    /// Convolutional variational autoencoder.
    Vae,
}

/// Every preset, in listing order.
pub const PRESETS: [Preset; 6] = [
    Preset::Conv64,
    Preset::Conv7,
    Preset::Linear3,
    Preset::Mlp,
    Preset::Cae32,
    Preset::Vae,
];

/// The output activation of a model, which also fixes the data scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// Outputs in (0, 1); data scaled to [0, 1].
    Sigmoid,
    /// Outputs in (-1, 1); data scaled to [-1, 1].
    Tanh,
}

/// Training defaults of a preset, as the notebooks they come from used them.
#[derive(Debug, Clone, Copy)]
pub struct PresetDefaults {
    /// Code size.
    pub latent_dim: usize,
    /// Epochs.
    pub epochs: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Adam weight decay (L2, as PyTorch's `Adam(weight_decay=...)`).
    pub weight_decay: f64,
}

impl Preset {
    /// The preset's name on the command line and in `config.json`.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Conv64 => "conv64",
            Preset::Conv7 => "conv7",
            Preset::Linear3 => "linear3",
            Preset::Mlp => "mlp",
            Preset::Cae32 => "cae32",
            Preset::Vae => "vae",
        }
    }

    /// Whether the preset is variational (its loss adds a KL term; samples come from the prior).
    pub fn is_variational(self) -> bool {
        self == Preset::Vae
    }

    /// Parses a preset name.
    pub fn parse(s: &str) -> Result<Self> {
        PRESETS.into_iter().find(|p| p.name() == s).ok_or_else(|| {
            let names: Vec<_> = PRESETS.iter().map(|p| p.name()).collect();
            Error::config(
                "model",
                format!("unknown preset '{s}' (one of {})", names.join(", ")),
            )
        })
    }

    /// One line on what the preset is.
    pub fn description(self) -> &'static str {
        match self {
            Preset::Conv64 => "conv AE, 3 stride-2 convs + adaptive avg-pool to a 64-d code",
            Preset::Conv7 => "conv AE, 2 stride-2 convs + a 7x7 conv to a 64-d code",
            Preset::Linear3 => "linear AE 784-128-64-12-3",
            Preset::Mlp => "MLP AE 784-392-N-392-784, Xavier init",
            Preset::Cae32 => "conv AE with a linear 32-d bottleneck, tanh output, data in [-1,1]",
            Preset::Vae => {
                "conv variational AE, 2 stride-2 convs to mean and log-variance of a 16-d code"
            }
        }
    }

    /// Output activation.
    pub fn activation(self) -> Activation {
        match self {
            Preset::Cae32 => Activation::Tanh,
            _ => Activation::Sigmoid,
        }
    }

    /// Training defaults. Sources: conv64 and cae32 from the reference configs;
    /// conv7 and linear3 from the tutorial that defines them (Adam lr 1e-3, weight decay
    /// 1e-5, batch 64); mlp batch 256 as in the denoising notebook.
    pub fn defaults(self) -> PresetDefaults {
        let (latent_dim, epochs, batch_size, weight_decay) = match self {
            Preset::Conv64 => (64, 10, 32, 0.0),
            Preset::Conv7 => (64, 10, 64, 1e-5),
            Preset::Linear3 => (3, 10, 64, 1e-5),
            Preset::Mlp => (32, 10, 256, 0.0),
            Preset::Cae32 => (32, 20, 64, 0.0),
            // As in pytorch/examples/vae: batch 128, Adam 1e-3, 10 epochs.
            Preset::Vae => (16, 10, 128, 0.0),
        };
        PresetDefaults {
            latent_dim,
            epochs,
            batch_size,
            weight_decay,
        }
    }
}

impl Activation {
    /// The data scale that matches this activation.
    pub fn scale(self) -> Scale {
        match self {
            Activation::Sigmoid => Scale::ZeroOne,
            Activation::Tanh => Scale::MinusOneOne,
        }
    }

    /// Applies the activation to logits.
    pub fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Activation::Sigmoid => sigmoid(x),
            Activation::Tanh => tanh(x),
        }
    }
}

/// What defines a model: its architecture (a [`ModelSpec`]), its code size, and the preset it
/// came from, if any. In `config.json` it is written with the spec's layer strings, so a run
/// folder alone rebuilds its model; a config with only `preset` and `latent_dim` (the form of
/// runs made before specs) stands for that preset's spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ModelFile", into = "ModelFile")]
pub struct ModelConfig {
    /// The preset the spec is, or `None` for a model of the user's own.
    pub preset: Option<Preset>,
    /// Size of the code (what the spec's encoder gives).
    pub latent_dim: usize,
    /// The architecture.
    pub spec: ModelSpec,
}

/// The stored form of a [`ModelConfig`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    preset: Option<Preset>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    latent_dim: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    encoder: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    decoder: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    output: Option<Activation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    variational: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    init: Option<Init>,
}

impl TryFrom<ModelFile> for ModelConfig {
    type Error = Error;
    fn try_from(f: ModelFile) -> Result<Self> {
        match (f.encoder, f.decoder) {
            (Some(e), Some(d)) => {
                let spec = ModelSpec::parse(
                    &e,
                    &d,
                    f.output.unwrap_or(Activation::Sigmoid),
                    f.variational.unwrap_or(false),
                    f.init.unwrap_or_default(),
                )?;
                let mut m = ModelConfig::custom(spec)?;
                if let Some(l) = f.latent_dim.filter(|&l| l != m.latent_dim) {
                    return Err(Error::config(
                        "model",
                        format!(
                            "latent_dim {l} disagrees with the encoder, which gives {}",
                            m.latent_dim
                        ),
                    ));
                }
                m.preset = f.preset;
                Ok(m)
            }
            (None, None) => {
                let preset = f.preset.ok_or_else(|| {
                    Error::config("model", "names neither a preset nor an encoder and decoder")
                })?;
                let latent = f.latent_dim.unwrap_or(preset.defaults().latent_dim);
                let m = ModelConfig::of_preset(preset, latent);
                m.validate()?;
                Ok(m)
            }
            _ => Err(Error::config(
                "model",
                "needs both an encoder and a decoder",
            )),
        }
    }
}

impl From<ModelConfig> for ModelFile {
    fn from(m: ModelConfig) -> Self {
        ModelFile {
            preset: m.preset,
            latent_dim: Some(m.latent_dim),
            encoder: Some(spec::layers_to_string(&m.spec.encoder)),
            decoder: Some(spec::layers_to_string(&m.spec.decoder)),
            output: Some(m.spec.output),
            variational: Some(m.spec.variational),
            init: Some(m.spec.init),
        }
    }
}

impl ModelConfig {
    /// A preset with its default code size.
    pub fn preset(preset: Preset) -> Self {
        Self::of_preset(preset, preset.defaults().latent_dim)
    }

    /// A preset with a code of `latent` values (check it with [`ModelConfig::validate`]).
    pub fn of_preset(preset: Preset, latent: usize) -> Self {
        ModelConfig {
            preset: Some(preset),
            latent_dim: latent,
            spec: preset.spec(latent),
        }
    }

    /// A model of the user's own; its code size comes from the checked spec.
    pub fn custom(spec: ModelSpec) -> Result<Self> {
        let latent_dim = spec.check()?.latent_dim;
        Ok(ModelConfig {
            preset: None,
            latent_dim,
            spec,
        })
    }

    /// The preset's name, or `custom`.
    pub fn name(&self) -> &'static str {
        self.preset.map_or("custom", Preset::name)
    }

    /// One line on what the model is.
    pub fn description(&self) -> String {
        match self.preset {
            Some(p) => p.description().to_string(),
            None => format!(
                "{} | {}",
                spec::layers_to_string(&self.spec.encoder),
                spec::layers_to_string(&self.spec.decoder)
            ),
        }
    }

    /// Whether the model is variational (its loss adds a KL term; samples come from the prior).
    pub fn is_variational(&self) -> bool {
        self.spec.variational
    }

    /// Output activation.
    pub fn activation(&self) -> Activation {
        self.spec.output
    }

    /// The same architecture with a code of `latent` values: a preset's spec at that size, or
    /// a custom spec whose encoder's last linear layer (or last convolution, on a 1×1 output)
    /// is resized, with a decoder that starts from `reshape(L,1,1)` following it.
    pub fn with_latent(&self, latent: usize) -> Result<Self> {
        if let Some(p) = self.preset {
            let m = Self::of_preset(p, latent);
            m.validate()?;
            return Ok(m);
        }
        let mut spec = self.spec.clone();
        let old = self.latent_dim;
        // The last layer with an output size sets the code's size.
        if let Some(
            spec::Layer::Linear { out }
            | spec::Layer::Conv { out, .. }
            | spec::Layer::ConvT { out, .. },
        ) = spec.encoder.iter_mut().rev().find(|l| {
            matches!(
                l,
                spec::Layer::Linear { .. } | spec::Layer::Conv { .. } | spec::Layer::ConvT { .. }
            )
        }) {
            *out = latent;
        }
        if let Some(spec::Layer::Reshape { c, h: 1, w: 1 }) = spec.decoder.first_mut() {
            if *c == old {
                *c = latent;
            }
        }
        let given = shape::check_encoder(&spec.encoder, spec.variational).map(|(_, l)| l);
        if given.as_ref().ok() != Some(&latent) {
            return Err(Error::config(
                "latent-dim",
                format!(
                    "{latent}: this model's code size is fixed by its layers ({old} values); change the encoder's last layer instead"
                ),
            ));
        }
        Self::custom(spec)
    }

    /// Checks the code size and the layers.
    pub fn validate(&self) -> Result<()> {
        if self.latent_dim == 0 || self.latent_dim > 4096 {
            return Err(Error::config(
                "latent-dim",
                format!("{} is not in 1..=4096", self.latent_dim),
            ));
        }
        let checked = self.spec.check()?;
        if checked.latent_dim != self.latent_dim {
            return Err(Error::config(
                "model",
                format!(
                    "latent_dim {} disagrees with the encoder, which gives {}",
                    self.latent_dim, checked.latent_dim
                ),
            ));
        }
        Ok(())
    }

    /// Whether training must run the whole batch as one (batch norm's statistics are over the
    /// batch, and dropout's draws must come in one order for a seed to repeat).
    pub fn needs_whole_batches(&self) -> bool {
        self.spec
            .encoder
            .iter()
            .chain(&self.spec.decoder)
            .any(|l| matches!(l, spec::Layer::BatchNorm | spec::Layer::Dropout { .. }))
    }

    /// Builds a freshly initialised model on `device` (seed the device first for
    /// reproducible weights).
    pub fn init(&self, device: &Device) -> Result<Autoencoder> {
        let (encoder, decoder) = stack::init(&self.spec, device)?;
        Ok(Autoencoder { encoder, decoder })
    }
}

/// An autoencoder: encoder and decoder, saved under the `encoder.` and `decoder.` prefixes so
/// either half loads alone.
#[derive(Module, Debug)]
pub struct Autoencoder {
    /// Images to codes.
    pub encoder: Encoder,
    /// Codes to logits.
    pub decoder: Decoder,
}

impl Autoencoder {
    /// Logits (pre-activation) of the reconstruction of `x` (from μ for a VAE).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.decoder.forward(self.encoder.forward(x))
    }

    /// A VAE's training pass: logits of the decoding of z = μ + exp(½ log σ²)·`eps`, with μ and
    /// log σ²; `None` for a plain autoencoder.
    pub fn forward_variational(
        &self,
        x: Tensor<4>,
        eps: Tensor<2>,
    ) -> Option<(Tensor<4>, Tensor<2>, Tensor<2>)> {
        let (mu, logvar) = self.encoder.stats(x)?;
        let z = mu.clone() + logvar.clone().mul_scalar(0.5).exp() * eps;
        Some((self.decoder.forward(z), mu, logvar))
    }
}
