//! Architectures as data: the layer-list grammar of `--encoder` / `--decoder` (and of the
//! `encoder` / `decoder` strings of an `--arch` file), parsed into [`Layer`]s and written back
//! in the same form.
//!
//! A list is layers separated by spaces; a layer is a name with its arguments in parentheses,
//! positional first, then named ones written as a prefix and a number (`s2` for stride 2),
//! PyTorch's defaults filling what is left out:
//!
//! | layer | PyTorch | defaults |
//! | --- | --- | --- |
//! | `linear(out)` | `nn.Linear(in, out)` | |
//! | `conv(out,k,sS,pP)` | `nn.Conv2d(in, out, k, stride=S, padding=P)` | s1, p0 |
//! | `convt(out,k,sS,pP,opO)` | `nn.ConvTranspose2d(in, out, k, stride=S, padding=P, output_padding=O)` | s1, p0, op0 |
//! | `maxpool(k[,s])`, `avgpool(k[,s])` | `nn.MaxPool2d(k, s)`, `nn.AvgPool2d(k, s)` | s = k |
//! | `adaptive_avgpool(h,w)` | `nn.AdaptiveAvgPool2d((h, w))` | |
//! | `upsample(f)` | `nn.Upsample(scale_factor=f)` (nearest) | |
//! | `bn` | `nn.BatchNorm1d` / `nn.BatchNorm2d`, from the input's shape | |
//! | `dropout(p)` | `nn.Dropout(p)` | |
//! | `relu`, `leaky_relu(a)`, `gelu`, `tanh`, `sigmoid` | the activations | a = 0.01 |
//! | `flatten`, `reshape(c,h,w)` | `nn.Flatten()`, `nn.Unflatten(1, (c, h, w))` (flattened first when the input is an image) | |
//!
//! Input channels and sizes are never written: they follow from the layers before
//! (see [`super::shape`]).

use std::fmt;

pub use super::grammar::{parse_layer, parse_layers};

/// One layer of an encoder or decoder.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Layer {
    /// Fully connected, to `out` features.
    Linear {
        /// Output features.
        out: usize,
    },
    /// 2-d convolution.
    Conv {
        /// Output channels.
        out: usize,
        /// Kernel size.
        k: usize,
        /// Stride.
        s: usize,
        /// Zero padding on every side.
        p: usize,
    },
    /// 2-d transposed convolution.
    ConvT {
        /// Output channels.
        out: usize,
        /// Kernel size.
        k: usize,
        /// Stride.
        s: usize,
        /// Padding.
        p: usize,
        /// Output padding (added to one side of the output).
        op: usize,
    },
    /// Max pooling.
    MaxPool {
        /// Window.
        k: usize,
        /// Stride.
        s: usize,
    },
    /// Average pooling.
    AvgPool {
        /// Window.
        k: usize,
        /// Stride.
        s: usize,
    },
    /// Adaptive average pooling to a fixed size.
    AdaptiveAvgPool {
        /// Output height.
        h: usize,
        /// Output width.
        w: usize,
    },
    /// Nearest-neighbour upsampling by a whole factor.
    Upsample {
        /// Factor.
        f: usize,
    },
    /// Batch normalisation (1-d on flat inputs, 2-d on images).
    BatchNorm,
    /// Dropout with probability `p` (training only).
    Dropout {
        /// Probability of zeroing a value.
        p: f64,
    },
    /// ReLU.
    Relu,
    /// Leaky ReLU with negative slope `a`.
    LeakyRelu {
        /// Negative slope.
        a: f64,
    },
    /// GELU (exact, erf form: PyTorch's default).
    Gelu,
    /// tanh.
    Tanh,
    /// Logistic sigmoid.
    Sigmoid,
    /// Images to flat vectors.
    Flatten,
    /// Flat vectors to `c`×`h`×`w` images.
    Reshape {
        /// Channels.
        c: usize,
        /// Height.
        h: usize,
        /// Width.
        w: usize,
    },
}

impl Layer {
    /// Whether the layer only maps values one by one or normalises them (keeps the shape and
    /// follows a layer that changes it, as its activation).
    pub fn is_elementwise(&self) -> bool {
        matches!(
            self,
            Layer::BatchNorm
                | Layer::Dropout { .. }
                | Layer::Relu
                | Layer::LeakyRelu { .. }
                | Layer::Gelu
                | Layer::Tanh
                | Layer::Sigmoid
        )
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Layer::Linear { out } => write!(f, "linear({out})"),
            // Defaults (stride 1, padding 0, output padding 0) are left out, as a user may.
            Layer::Conv { out, k, s, p } => {
                write!(f, "conv({out},{k}")?;
                named(f, &[("s", s, 1), ("p", p, 0)])
            }
            Layer::ConvT { out, k, s, p, op } => {
                write!(f, "convt({out},{k}")?;
                named(f, &[("s", s, 1), ("p", p, 0), ("op", op, 0)])
            }
            Layer::MaxPool { k, s } if s == k => write!(f, "maxpool({k})"),
            Layer::MaxPool { k, s } => write!(f, "maxpool({k},{s})"),
            Layer::AvgPool { k, s } if s == k => write!(f, "avgpool({k})"),
            Layer::AvgPool { k, s } => write!(f, "avgpool({k},{s})"),
            Layer::AdaptiveAvgPool { h, w } => write!(f, "adaptive_avgpool({h},{w})"),
            Layer::Upsample { f: factor } => write!(f, "upsample({factor})"),
            Layer::BatchNorm => write!(f, "bn"),
            Layer::Dropout { p } => write!(f, "dropout({p})"),
            Layer::Relu => write!(f, "relu"),
            Layer::LeakyRelu { a } => write!(f, "leaky_relu({a})"),
            Layer::Gelu => write!(f, "gelu"),
            Layer::Tanh => write!(f, "tanh"),
            Layer::Sigmoid => write!(f, "sigmoid"),
            Layer::Flatten => write!(f, "flatten"),
            Layer::Reshape { c, h, w } => write!(f, "reshape({c},{h},{w})"),
        }
    }
}

/// Writes the named arguments that differ from their defaults, then the closing parenthesis.
fn named(f: &mut fmt::Formatter<'_>, args: &[(&str, usize, usize)]) -> fmt::Result {
    for &(prefix, v, default) in args {
        if v != default {
            write!(f, ",{prefix}{v}")?;
        }
    }
    write!(f, ")")
}

/// A list of layers in the grammar's own form (what [`parse_layers`] reads back).
pub fn layers_to_string(layers: &[Layer]) -> String {
    layers
        .iter()
        .map(Layer::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}
