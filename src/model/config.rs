//! [`ModelConfig`]: which model a run has (its spec, code size and preset name), and its form
//! in `config.json` and in checkpoint metadata.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::arch::{Init, ModelSpec};
use super::{shape, spec, stack, Activation, Autoencoder, Preset};
use crate::error::{Error, Result};

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

    /// Whether the model has batch norm, whose statistics are the batch's: shards of a batch
    /// take them together on the CPU's kernels, and off them the batch trains whole.
    pub fn has_batch_norm(&self) -> bool {
        self.has_layer(|l| matches!(l, spec::Layer::BatchNorm))
    }

    /// Whether the model has dropout: off the CPU's kernels it trains each batch whole, as
    /// burn's dropout draws its choices in whatever order the shards run.
    pub fn has_dropout(&self) -> bool {
        self.has_layer(|l| matches!(l, spec::Layer::Dropout { .. }))
    }

    /// Whether any layer of the encoder or decoder is one `is` picks.
    /// Whether a model built from this spec trains through the CPU's fused operations
    /// (`Autoencoder::chain` gives its layers): not variational, and in each half only linear
    /// layers, convolutions, transposed convolutions and batch norms (each followed or not by
    /// a ReLU), dropout below 1, max pooling, upsampling, average pooling to one value per
    /// channel, flattens and reshapes.
    pub fn trains_fused(&self) -> bool {
        let fused = |layers: &[spec::Layer]| {
            let mut i = 0;
            while i < layers.len() {
                let with_relu = matches!(layers.get(i + 1), Some(spec::Layer::Relu));
                i += match layers[i] {
                    spec::Layer::Linear { .. }
                    | spec::Layer::Conv { .. }
                    | spec::Layer::ConvT { .. }
                    | spec::Layer::BatchNorm => 1 + usize::from(with_relu),
                    spec::Layer::Dropout { p } if p < 1.0 => 1,
                    spec::Layer::AdaptiveAvgPool { h: 1, w: 1 }
                    | spec::Layer::MaxPool { .. }
                    | spec::Layer::Upsample { .. }
                    | spec::Layer::Flatten
                    | spec::Layer::Reshape { .. } => 1,
                    _ => return false,
                };
            }
            true
        };
        !self.is_variational() && fused(&self.spec.encoder) && fused(&self.spec.decoder)
    }

    fn has_layer(&self, is: impl Fn(&spec::Layer) -> bool) -> bool {
        self.spec.encoder.iter().chain(&self.spec.decoder).any(is)
    }

    /// Builds a freshly initialised model on `device` (seed the device first for
    /// reproducible weights).
    pub fn init(&self, device: &Device) -> Result<Autoencoder> {
        let (encoder, decoder) = stack::init(&self.spec, device)?;
        Ok(Autoencoder { encoder, decoder })
    }
}
