//! The fully connected presets: `linear3` (784-128-64-12-L) and `mlp` (784-392-L, Xavier
//! init). Both take flattened images and end in a sigmoid.

use burn::nn::Linear;
use burn::prelude::*;

use super::layers::{linear, linear_xavier, note, Describe, LayerRow, Tracer};
use crate::data::PIXELS;
use crate::kernels;

/// A stack of linear layers with ReLU between them (and optionally after the last).
#[derive(Module, Debug)]
pub struct Stack {
    layers: Vec<Linear>,
    relu_last: bool,
}

impl Stack {
    fn new(dims: &[usize], relu_last: bool, xavier: bool, device: &Device) -> Self {
        let layers = dims
            .windows(2)
            .map(|w| {
                if xavier {
                    linear_xavier(w[0], w[1], device)
                } else {
                    linear(w[0], w[1], device)
                }
            })
            .collect();
        Stack { layers, relu_last }
    }

    /// Applies the stack, naming rows `{prefix}.{i}`.
    pub fn forward<T: Tracer>(&self, mut x: Tensor<2>, prefix: &str, t: &mut T) -> Tensor<2> {
        let n = self.layers.len();
        for (i, layer) in self.layers.iter().enumerate() {
            x = kernels::linear(layer, x, i + 1 < n || self.relu_last);
            if t.on() {
                t.row(LayerRow {
                    name: format!("{prefix}.{i}"),
                    layer: layer.describe(),
                    output: x.dims().to_vec(),
                    params: layer.num_params(),
                });
            }
        }
        x
    }
}

/// Encoder of a dense preset: flattens, then its stack.
#[derive(Module, Debug)]
pub struct Encoder {
    stack: Stack,
}

/// Decoder of a dense preset: its stack, then unflattens to logits.
#[derive(Module, Debug)]
pub struct Decoder {
    stack: Stack,
}

/// `linear3`: 784-128-64-12-L, ReLU between layers, no activation on the code.
pub fn init_linear3(latent: usize, device: &Device) -> (Encoder, Decoder) {
    let enc = [PIXELS, 128, 64, 12, latent];
    let dec = [latent, 12, 64, 128, PIXELS];
    (
        Encoder {
            stack: Stack::new(&enc, false, false, device),
        },
        Decoder {
            stack: Stack::new(&dec, false, false, device),
        },
    )
}

/// `mlp`: 784-392-L with ReLU on the code too, Xavier-uniform weights, zero biases.
pub fn init_mlp(latent: usize, device: &Device) -> (Encoder, Decoder) {
    (
        Encoder {
            stack: Stack::new(&[PIXELS, 392, latent], true, true, device),
        },
        Decoder {
            stack: Stack::new(&[latent, 392, PIXELS], false, true, device),
        },
    )
}

impl Encoder {
    /// Encodes images to codes.
    pub fn forward<T: Tracer>(&self, x: Tensor<4>, t: &mut T) -> Tensor<2> {
        let x = note!(t, "encoder.flatten", "Flatten", x.flatten::<2>(1, 3)); // [b, 784]
        self.stack.forward(x, "encoder", t) // [b, L]
    }
}

impl Decoder {
    /// Decodes codes to logits.
    pub fn forward<T: Tracer>(&self, z: Tensor<2>, t: &mut T) -> Tensor<4> {
        let x = self.stack.forward(z, "decoder", t); // [b, 784]
        let [b, _] = x.dims();
        note!(
            t,
            "decoder.unflatten",
            "Unflatten(1, 28, 28)",
            x.reshape([b, 1, 28, 28])
        )
    }
}
