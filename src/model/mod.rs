//! The model presets and the [`Autoencoder`] that wraps any of them: an encoder to a code,
//! a decoder from a code to logits (pre-activation), and the output activation.

pub mod arch;
pub mod cae32;
pub mod conv64;
pub mod conv7;
pub mod dense;
pub mod layers;
pub mod shape;
pub mod spec;
#[cfg(test)]
mod spec_tests;
pub mod stack;
pub mod summary;
pub mod vae;

use burn::prelude::*;
use burn::tensor::activation::{sigmoid, tanh};
use serde::{Deserialize, Serialize};

use crate::data::Scale;
use crate::error::{Error, Result};
use layers::{NoTrace, Tracer};

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

/// What defines a model: the preset and its code size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The architecture.
    pub preset: Preset,
    /// Size of the code.
    pub latent_dim: usize,
}

impl ModelConfig {
    /// A preset with its default code size.
    pub fn preset(preset: Preset) -> Self {
        ModelConfig {
            preset,
            latent_dim: preset.defaults().latent_dim,
        }
    }

    /// Checks the code size.
    pub fn validate(&self) -> Result<()> {
        if self.latent_dim == 0 || self.latent_dim > 4096 {
            return Err(Error::config(
                "latent-dim",
                format!("{} is not in 1..=4096", self.latent_dim),
            ));
        }
        Ok(())
    }

    /// Builds a freshly initialised model on `device` (seed the device first for
    /// reproducible weights).
    pub fn init(&self, device: &Device) -> Autoencoder {
        let l = self.latent_dim;
        let (encoder, decoder) = match self.preset {
            Preset::Conv64 => {
                let (e, d) = conv64::init(l, device);
                (Encoder::Conv64(e), Decoder::Conv64(d))
            }
            Preset::Conv7 => {
                let (e, d) = conv7::init(l, device);
                (Encoder::Conv7(e), Decoder::Conv7(d))
            }
            Preset::Linear3 => {
                let (e, d) = dense::init_linear3(l, device);
                (Encoder::Dense(e), Decoder::Dense(d))
            }
            Preset::Mlp => {
                let (e, d) = dense::init_mlp(l, device);
                (Encoder::Dense(e), Decoder::Dense(d))
            }
            Preset::Cae32 => {
                let (e, d) = cae32::init(l, device);
                (Encoder::Cae32(e), Decoder::Cae32(d))
            }
            Preset::Vae => {
                let (e, d) = vae::init(l, device);
                (Encoder::Vae(e), Decoder::Vae(d))
            }
        };
        Autoencoder { encoder, decoder }
    }
}

/// The encoder half of any preset.
// One model exists per process, so the variants' size difference costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Encoder {
    /// conv64's encoder.
    Conv64(conv64::Encoder),
    /// conv7's encoder.
    Conv7(conv7::Encoder),
    /// linear3's and mlp's encoder.
    Dense(dense::Encoder),
    /// cae32's encoder.
    Cae32(cae32::Encoder),
    /// vae's encoder.
    Vae(vae::Encoder),
}

/// The decoder half of any preset.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Decoder {
    /// conv64's decoder.
    Conv64(conv64::Decoder),
    /// conv7's decoder.
    Conv7(conv7::Decoder),
    /// linear3's and mlp's decoder.
    Dense(dense::Decoder),
    /// cae32's decoder.
    Cae32(cae32::Decoder),
    /// vae's decoder.
    Vae(vae::Decoder),
}

impl Encoder {
    /// `[b, 1, 28, 28]` → `[b, latent]`, reporting layers to `t`.
    pub fn forward_traced<T: Tracer>(&self, x: Tensor<4>, t: &mut T) -> Tensor<2> {
        match self {
            Encoder::Conv64(e) => e.forward(x, t),
            Encoder::Conv7(e) => e.forward(x, t),
            Encoder::Dense(e) => e.forward(x, t),
            Encoder::Cae32(e) => e.forward(x, t),
            Encoder::Vae(e) => e.forward(x, t),
        }
    }

    /// `[b, 1, 28, 28]` → `[b, latent]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.forward_traced(x, &mut NoTrace)
    }

    /// μ and log σ² of a variational encoder; `None` for the others.
    pub fn stats(&self, x: Tensor<4>) -> Option<(Tensor<2>, Tensor<2>)> {
        match self {
            Encoder::Vae(e) => Some(e.stats(x, &mut NoTrace)),
            _ => None,
        }
    }
}

impl Decoder {
    /// `[b, latent]` → logits `[b, 1, 28, 28]`, reporting layers to `t`.
    pub fn forward_traced<T: Tracer>(&self, z: Tensor<2>, t: &mut T) -> Tensor<4> {
        match self {
            Decoder::Conv64(d) => d.forward(z, t),
            Decoder::Conv7(d) => d.forward(z, t),
            Decoder::Dense(d) => d.forward(z, t),
            Decoder::Cae32(d) => d.forward(z, t),
            Decoder::Vae(d) => d.forward(z, t),
        }
    }

    /// `[b, latent]` → logits `[b, 1, 28, 28]`.
    pub fn forward(&self, z: Tensor<2>) -> Tensor<4> {
        self.forward_traced(z, &mut NoTrace)
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
