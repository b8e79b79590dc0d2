//! `cae32`: two stride-2 convolutions, a linear bottleneck to a 32-d code, a linear layer
//! and two transposed convolutions back; tanh output on data scaled to [-1, 1].

use burn::nn::conv::{Conv2d, ConvTranspose2d};
use burn::nn::Linear;
use burn::prelude::*;

use super::layers::{conv, convt, linear, note, traced, Tracer};

const FLAT: usize = 32 * 7 * 7;

/// The encoder: `[b, 1, 28, 28]` → `[b, latent]`.
#[derive(Module, Debug)]
pub struct Encoder {
    conv1: Conv2d,
    conv2: Conv2d,
    fc: Linear,
}

/// The decoder: `[b, latent]` → pre-tanh `[b, 1, 28, 28]`.
#[derive(Module, Debug)]
pub struct Decoder {
    fc: Linear,
    deconv1: ConvTranspose2d,
    deconv2: ConvTranspose2d,
}

/// Builds both halves; `latent` is the bottleneck width (32 by default).
pub fn init(latent: usize, device: &Device) -> (Encoder, Decoder) {
    (
        Encoder {
            conv1: conv(1, 16, 3, 2, 1, device),
            conv2: conv(16, 32, 3, 2, 1, device),
            fc: linear(FLAT, latent, device),
        },
        Decoder {
            fc: linear(latent, FLAT, device),
            deconv1: convt(32, 16, 3, 2, 1, 1, device),
            deconv2: convt(16, 1, 3, 2, 1, 1, device),
        },
    )
}

impl Encoder {
    /// Encodes images to codes.
    pub fn forward<T: Tracer>(&self, x: Tensor<4>, t: &mut T) -> Tensor<2> {
        let x = traced!(t, "encoder.conv1", self.conv1, x, relu); // [b, 16, 14, 14]
        let x = traced!(t, "encoder.conv2", self.conv2, x, relu); // [b, 32, 7, 7]
        let x = note!(t, "encoder.flatten", "Flatten", x.flatten::<2>(1, 3)); // [b, 1568]
        traced!(t, "encoder.fc", self.fc, x) // [b, L]
    }
}

impl Decoder {
    /// Decodes codes to pre-activation outputs.
    pub fn forward<T: Tracer>(&self, z: Tensor<2>, t: &mut T) -> Tensor<4> {
        let x = traced!(t, "decoder.fc", self.fc, z, relu); // [b, 1568]
        let [b, _] = x.dims();
        let x = note!(
            t,
            "decoder.unflatten",
            "Unflatten(32, 7, 7)",
            x.reshape([b, 32, 7, 7])
        );
        let x = traced!(t, "decoder.deconv1", self.deconv1, x, relu); // [b, 16, 14, 14]
        traced!(t, "decoder.deconv2", self.deconv2, x) // [b, 1, 28, 28]
    }
}
