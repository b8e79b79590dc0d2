//! `conv64`: three stride-2 convolutions and an adaptive average pool to a 64-d code; four
//! transposed convolutions back to 28×28, sigmoid output.

use burn::nn::conv::{Conv2d, ConvTranspose2d};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig};
use burn::prelude::*;

use super::layers::{conv, convt, note, traced, Tracer};

/// The encoder: `[b, 1, 28, 28]` → `[b, latent]`.
#[derive(Module, Debug)]
pub struct Encoder {
    conv1: Conv2d,
    conv2: Conv2d,
    conv3: Conv2d,
    pool: AdaptiveAvgPool2d,
}

/// The decoder: `[b, latent]` → logits `[b, 1, 28, 28]`.
#[derive(Module, Debug)]
pub struct Decoder {
    deconv1: ConvTranspose2d,
    deconv2: ConvTranspose2d,
    deconv3: ConvTranspose2d,
    deconv4: ConvTranspose2d,
}

/// Builds both halves; `latent` is the channel count of the last convolution (64 by default).
pub fn init(latent: usize, device: &Device) -> (Encoder, Decoder) {
    (
        Encoder {
            conv1: conv(1, 16, 3, 2, 1, device),
            conv2: conv(16, 32, 3, 2, 1, device),
            conv3: conv(32, latent, 3, 2, 1, device),
            pool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
        },
        Decoder {
            deconv1: convt(latent, 32, 4, 1, 0, 0, device),
            deconv2: convt(32, 16, 3, 2, 1, 0, device),
            deconv3: convt(16, 8, 4, 2, 1, 0, device),
            deconv4: convt(8, 1, 4, 2, 1, 0, device),
        },
    )
}

impl Encoder {
    /// Encodes images to codes.
    pub fn forward<T: Tracer>(&self, x: Tensor<4>, t: &mut T) -> Tensor<2> {
        let x = traced!(t, "encoder.conv1", self.conv1, x, relu); // [b, 16, 14, 14]
        let x = traced!(t, "encoder.conv2", self.conv2, x, relu); // [b, 32, 7, 7]
        let x = traced!(t, "encoder.conv3", self.conv3, x, relu); // [b, L, 4, 4]
        let x = note!(
            t,
            "encoder.pool",
            "AdaptiveAvgPool2d(1)",
            self.pool.forward(x)
        ); // [b, L, 1, 1]
        note!(t, "encoder.flatten", "Flatten", x.flatten::<2>(1, 3)) // [b, L]
    }
}

impl Decoder {
    /// Decodes codes to logits.
    pub fn forward<T: Tracer>(&self, z: Tensor<2>, t: &mut T) -> Tensor<4> {
        let [b, l] = z.dims();
        let x = z.reshape([b, l, 1, 1]);
        let x = traced!(t, "decoder.deconv1", self.deconv1, x, relu); // [b, 32, 4, 4]
        let x = traced!(t, "decoder.deconv2", self.deconv2, x, relu); // [b, 16, 7, 7]
        let x = traced!(t, "decoder.deconv3", self.deconv3, x, relu); // [b, 8, 14, 14]
        traced!(t, "decoder.deconv4", self.deconv4, x) // [b, 1, 28, 28]
    }
}
