//! `vae`: a convolutional variational autoencoder (Kingma & Welling, 2014). The encoder gives
//! the mean and log-variance of q(z|x); training decodes z = μ + σ·ε (the reparameterisation
//! trick, ε supplied by the caller so runs stay seeded); every other command uses μ as the code.

use burn::nn::conv::{Conv2d, ConvTranspose2d};
use burn::nn::Linear;
use burn::prelude::*;

use super::layers::{conv, convt, linear, note, traced, Tracer};

const FLAT: usize = 64 * 7 * 7;

/// The encoder: `[b, 1, 28, 28]` → (μ, log σ²), each `[b, latent]`.
#[derive(Module, Debug)]
pub struct Encoder {
    conv1: Conv2d,
    conv2: Conv2d,
    fc_mu: Linear,
    fc_logvar: Linear,
}

/// The decoder: `[b, latent]` → logits `[b, 1, 28, 28]`.
#[derive(Module, Debug)]
pub struct Decoder {
    fc: Linear,
    deconv1: ConvTranspose2d,
    deconv2: ConvTranspose2d,
}

/// Builds both halves; `latent` is the size of z (16 by default).
pub fn init(latent: usize, device: &Device) -> (Encoder, Decoder) {
    (
        Encoder {
            conv1: conv(1, 32, 4, 2, 1, device),
            conv2: conv(32, 64, 4, 2, 1, device),
            fc_mu: linear(FLAT, latent, device),
            fc_logvar: linear(FLAT, latent, device),
        },
        Decoder {
            fc: linear(latent, FLAT, device),
            deconv1: convt(64, 32, 4, 2, 1, 0, device),
            deconv2: convt(32, 1, 4, 2, 1, 0, device),
        },
    )
}

impl Encoder {
    /// μ and log σ² of q(z|x).
    pub fn stats<T: Tracer>(&self, x: Tensor<4>, t: &mut T) -> (Tensor<2>, Tensor<2>) {
        let x = traced!(t, "encoder.conv1", self.conv1, x, relu); // [b, 32, 14, 14]
        let x = traced!(t, "encoder.conv2", self.conv2, x, relu); // [b, 64, 7, 7]
        let x = note!(t, "encoder.flatten", "Flatten", x.flatten::<2>(1, 3)); // [b, 3136]
        let mu = traced!(t, "encoder.fc_mu", self.fc_mu, x.clone()); // [b, L]
        let logvar = traced!(t, "encoder.fc_logvar", self.fc_logvar, x); // [b, L]
        (mu, logvar)
    }

    /// The code of an image: μ.
    pub fn forward<T: Tracer>(&self, x: Tensor<4>, t: &mut T) -> Tensor<2> {
        self.stats(x, t).0
    }
}

impl Decoder {
    /// Decodes codes to logits.
    pub fn forward<T: Tracer>(&self, z: Tensor<2>, t: &mut T) -> Tensor<4> {
        let x = traced!(t, "decoder.fc", self.fc, z, relu); // [b, 3136]
        let [b, _] = x.dims();
        let x = note!(
            t,
            "decoder.unflatten",
            "Unflatten(64, 7, 7)",
            x.reshape([b, 64, 7, 7])
        );
        let x = traced!(t, "decoder.deconv1", self.deconv1, x, relu); // [b, 32, 14, 14]
        traced!(t, "decoder.deconv2", self.deconv2, x) // [b, 1, 28, 28]
    }
}
