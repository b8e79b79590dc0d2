//! Models as data: a [`ModelConfig`] is an architecture ([`ModelSpec`]: layer lists, output
//! activation, variational or not) and its code size; the six presets are six such specs
//! ([`Preset::spec`]). Every model is built by one generic layer stack ([`stack`]) and wrapped
//! in an [`Autoencoder`]: an encoder to a code, a decoder from a code to logits
//! (pre-activation), and the output activation.

pub mod arch;
mod config;
mod grammar;
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
pub use config::ModelConfig;
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
