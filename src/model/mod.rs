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
mod presets;
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
pub use config::ModelConfig;
pub use presets::{Preset, PresetDefaults, PRESETS};
pub use stack::{Decoder, Encoder};

/// The output activation of a model, which also fixes the data scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// Outputs in (0, 1); data scaled to [0, 1].
    Sigmoid,
    /// Outputs in (-1, 1); data scaled to [-1, 1].
    Tanh,
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

    /// The layers of a model whose every layer runs as one of the CPU's fused operations
    /// ([`stack::chain`]; not variational), every parameter trained: what
    /// [`crate::kernels::chain_pass`] trains without autodiff's graph. `None` for any other.
    pub fn chain(&self) -> Option<Vec<crate::kernels::Link<'_>>> {
        if self.encoder.logvar.is_some() {
            return None;
        }
        let mut out = Vec::new();
        (stack::chain(&self.encoder.layers, &mut out)
            && stack::chain(&self.decoder.layers, &mut out))
        .then_some(out)
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
