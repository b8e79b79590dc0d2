//! The generic layer stack: a [`ModelSpec`]'s encoder and decoder built as burn modules, one
//! [`Block`] per layer, in the order of the spec (so parameter names are
//! `encoder.layers.<i>.weight`, the index of `nn.Sequential`). A linear layer, convolution,
//! transposed convolution or batch norm followed by `relu` runs as one fused operation on the
//! CPU (see [`super::layers::Apply`] and [`crate::kernels::batch_norm`]), as do max pooling
//! and upsampling. Batch norm and dropout train on an autodiff device and run in inference mode
//! everywhere else.

use burn::module::{ParamId, RunningState};
use burn::nn::conv::{Conv2d, ConvTranspose2d};
use burn::nn::interpolate::{Interpolate2d, Interpolate2dConfig, InterpolateMode};
use burn::nn::pool::{
    AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, AvgPool2d, AvgPool2dConfig, MaxPool2d,
    MaxPool2dConfig,
};
use burn::nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear};
use burn::prelude::*;
use burn::tensor::activation::{gelu, leaky_relu, relu, sigmoid, tanh};
use sha2::{Digest, Sha256};

use super::arch::{Init, ModelSpec};
use super::layers::{conv, convt, Apply};
use super::shape::{Shape, Traced};
use super::spec::Layer;
use crate::kernels::Link;

// A parameter-free layer is its own module: it holds no tensors.
use burn::empty;
empty!(Layer);

/// One built layer.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Block {
    /// `linear(out)`.
    Linear(Linear),
    /// `conv(…)`.
    Conv(Conv2d),
    /// `convt(…)`.
    ConvT(ConvTranspose2d),
    /// `bn`.
    Norm(BatchNorm),
    /// `dropout(p)`.
    Dropout(Dropout),
    /// `maxpool(k,s)`.
    MaxPool(MaxPool2d),
    /// `avgpool(k,s)` (PyTorch's `AvgPool2d` defaults: no padding, so nothing to count).
    AvgPool(AvgPool2d),
    /// `adaptive_avgpool(h,w)`.
    Adaptive(AdaptiveAvgPool2d),
    /// `upsample(f)`, nearest neighbour, to the size the spec's shape check gave.
    Upsample(Interpolate2d),
    /// Activations, flatten and reshape.
    Op(Layer),
}

/// A tensor between layers: images or flat vectors.
pub enum Flow {
    /// `[b, c, h, w]`.
    Image(Tensor<4>),
    /// `[b, n]`.
    Flat(Tensor<2>),
}

impl Flow {
    /// The images, for layers that take them (the spec's shape check guarantees it).
    fn image(self) -> Tensor<4> {
        match self {
            Flow::Image(x) => x,
            Flow::Flat(x) => {
                let [b, n] = x.dims();
                x.reshape([b, n, 1, 1])
            }
        }
    }

    /// The flat vectors, for layers that take them.
    pub fn flat(self) -> Tensor<2> {
        match self {
            Flow::Flat(x) => x,
            Flow::Image(x) => x.flatten::<2>(1, 3),
        }
    }
}

fn linear(i: usize, o: usize, init: Init, device: &Device) -> Linear {
    match init {
        Init::Pytorch => super::layers::linear(i, o, device),
        Init::Xavier => super::layers::linear_xavier(i, o, device),
    }
}

/// The id of the parameter or buffer named `name` (`encoder.layers.1.running_mean`): the first
/// eight bytes of the SHA-256 of the name. burn's own ids are random; a weights file records
/// the ids (Adam's state is keyed by them), and two runs of one seed must write the same bytes.
pub fn stable_id(name: &str) -> ParamId {
    let digest = Sha256::digest(name.as_bytes());
    ParamId::from(u64::from_le_bytes(digest[..8].try_into().unwrap_or([0; 8])))
}

/// A batch norm over `channels`, its running statistics with the stable ids of their names
/// under `name` (their module keeps the id it was built with, whatever a mapper gives it).
fn batch_norm(channels: usize, name: &str, device: &Device) -> BatchNorm {
    let mut n = BatchNormConfig::new(channels).init(device);
    n.running_mean = RunningState::with_id(
        stable_id(&format!("{name}.running_mean")),
        n.running_mean.value(),
    );
    n.running_var = RunningState::with_id(
        stable_id(&format!("{name}.running_var")),
        n.running_var.value(),
    );
    n
}

/// Builds the blocks of one half (`half`: `encoder` or `decoder`) from its checked layers (with
/// their input shapes).
fn build(half: &str, traced: &Traced, init: Init, device: &Device) -> Vec<Block> {
    traced
        .iter()
        .enumerate()
        .map(|(i, &(layer, x, y))| {
            let channels = x.channels();
            match layer {
                Layer::Linear { out } => Block::Linear(linear(x.numel(), out, init, device)),
                Layer::Conv { out, k, s, p } => Block::Conv(conv(channels, out, k, s, p, device)),
                Layer::ConvT { out, k, s, p, op } => {
                    Block::ConvT(convt(channels, out, k, s, p, op, device))
                }
                // PyTorch's defaults: eps 1e-5, momentum 0.1.
                Layer::BatchNorm => {
                    Block::Norm(batch_norm(channels, &format!("{half}.layers.{i}"), device))
                }
                Layer::Dropout { p } => Block::Dropout(DropoutConfig::new(p).init()),
                Layer::MaxPool { k, s } => {
                    Block::MaxPool(MaxPool2dConfig::new([k, k]).with_strides([s, s]).init())
                }
                Layer::AvgPool { k, s } => {
                    Block::AvgPool(AvgPool2dConfig::new([k, k]).with_strides([s, s]).init())
                }
                Layer::AdaptiveAvgPool { h, w } => {
                    Block::Adaptive(AdaptiveAvgPool2dConfig::new([h, w]).init())
                }
                Layer::Upsample { .. } => {
                    let Shape::Image { h, w, .. } = y else {
                        unreachable!("upsampling gives images (checked)")
                    };
                    Block::Upsample(
                        Interpolate2dConfig::new()
                            .with_output_size(Some([h, w]))
                            .with_mode(InterpolateMode::Nearest)
                            .init(),
                    )
                }
                op => Block::Op(op),
            }
        })
        .collect()
}

/// Runs `blocks` on `x`; a block followed by `relu` takes it fused. A linear layer right
/// after a ReLU is told so, for its input gradient to skip the units no image turned on
/// (see [`crate::kernels::linear`]).
pub fn run(blocks: &[Block], mut x: Flow) -> Flow {
    let mut i = 0;
    let mut after_relu = false;
    while i < blocks.len() {
        let fuse = matches!(blocks.get(i + 1), Some(Block::Op(Layer::Relu)));
        x = match &blocks[i] {
            Block::Linear(l) => {
                let x = x.flat();
                Flow::Flat(crate::kernels::linear(l, x, fuse, after_relu))
            }
            Block::Conv(c) => {
                let x = x.image();
                Flow::Image(if fuse { c.apply_relu(x) } else { c.apply(x) })
            }
            Block::ConvT(c) => {
                let x = x.image();
                Flow::Image(if fuse { c.apply_relu(x) } else { c.apply(x) })
            }
            Block::Norm(n) => match x {
                Flow::Image(x) => Flow::Image(crate::kernels::batch_norm(n, x, fuse)),
                Flow::Flat(x) => Flow::Flat(crate::kernels::batch_norm(n, x, fuse)),
            },
            Block::Dropout(d) => match x {
                Flow::Image(x) => Flow::Image(crate::kernels::dropout(d, x)),
                Flow::Flat(x) => Flow::Flat(crate::kernels::dropout(d, x)),
            },
            Block::MaxPool(m) => Flow::Image(crate::kernels::max_pool(m, x.image())),
            Block::AvgPool(m) => Flow::Image(m.forward(x.image())),
            Block::Adaptive(m) => Flow::Image(adaptive_pool(m, x.image())),
            Block::Upsample(m) => Flow::Image(crate::kernels::upsample(m, x.image())),
            Block::Op(op) => apply_op(op, x),
        };
        let fused = matches!(
            blocks[i],
            Block::Linear(_) | Block::Conv(_) | Block::ConvT(_) | Block::Norm(_)
        ) && fuse;
        after_relu = fused || matches!(blocks[i], Block::Op(Layer::Relu));
        i += if fused { 2 } else { 1 };
    }
    x
}

/// Appends the layers of `blocks` to `out` as [`run`] runs them (a `relu` after a linear
/// layer or a convolution fused, `after_relu` from the layer before, from `false` at the
/// start of `blocks`), for [`crate::kernels::chain_pass`]. `false` when `blocks` hold
/// anything else: average pooling other than to one value per channel, an activation other
/// than a `relu` right after a layer with parameters, a batch norm not in training mode, or
/// a layer without a bias. Every parameter is trained, whether autodiff tracks it or not
/// (steps through the chain keep them untracked).
pub fn chain<'a>(blocks: &'a [Block], out: &mut Vec<Link<'a>>) -> bool {
    let mut i = 0;
    let mut after_relu = false;
    while i < blocks.len() {
        let relu = matches!(blocks.get(i + 1), Some(Block::Op(Layer::Relu)));
        let link = match &blocks[i] {
            Block::Linear(l) if l.bias.is_some() => Link::Linear {
                layer: l,
                relu,
                after_relu,
            },
            Block::Conv(c) if c.bias.is_some() => Link::Conv { layer: c, relu },
            Block::ConvT(c) if c.bias.is_some() => Link::ConvT { layer: c, relu },
            Block::Norm(n) if n.training.is_enabled() => Link::Norm { layer: n, relu },
            Block::Dropout(d) if d.prob < 1.0 => Link::Dropout(d),
            Block::Adaptive(m) if m.output_size == [1, 1] => Link::MeanPool,
            Block::MaxPool(m) => Link::MaxPool(m),
            Block::Upsample(m) => Link::Upsample(m),
            Block::Op(Layer::Flatten) => Link::Flatten,
            Block::Op(Layer::Reshape { c, h, w }) => Link::Reshape([*c, *h, *w]),
            _ => return false,
        };
        let fused = relu
            && matches!(
                link,
                Link::Linear { .. } | Link::Conv { .. } | Link::ConvT { .. } | Link::Norm { .. }
            );
        out.push(link);
        after_relu = fused;
        i += if fused { 2 } else { 1 };
    }
    true
}

/// An element-wise function on either kind of tensor.
fn each(x: Flow, f4: impl Fn(Tensor<4>) -> Tensor<4>, f2: impl Fn(Tensor<2>) -> Tensor<2>) -> Flow {
    match x {
        Flow::Image(x) => Flow::Image(f4(x)),
        Flow::Flat(x) => Flow::Flat(f2(x)),
    }
}

fn apply_op(op: &Layer, x: Flow) -> Flow {
    match *op {
        Layer::Relu => each(x, relu, relu),
        Layer::LeakyRelu { a } => each(x, |t| leaky_relu(t, a), |t| leaky_relu(t, a)),
        Layer::Gelu => each(x, gelu, gelu),
        Layer::Tanh => each(x, tanh, tanh),
        Layer::Sigmoid => each(x, sigmoid, sigmoid),
        Layer::Flatten => Flow::Flat(x.flat()),
        Layer::Reshape { c, h, w } => {
            let x = x.flat();
            let [b, _] = x.dims();
            Flow::Image(x.reshape([b, c, h, w]))
        }
        // Layers built as their own blocks never reach here.
        _ => x,
    }
}

/// The encoder of a spec: its blocks, and for a variational model the second copy of its last
/// `linear(L)`, giving the log-variance (the last block gives the mean).
#[derive(Module, Debug)]
pub struct Encoder {
    /// The layers, in the spec's order.
    pub layers: Vec<Block>,
    /// The log-variance head of a variational model.
    pub logvar: Option<Linear>,
}

/// The decoder of a spec.
#[derive(Module, Debug)]
pub struct Decoder {
    /// The layers, in the spec's order.
    pub layers: Vec<Block>,
}

/// Builds both halves of a (checked) spec.
pub fn init(spec: &ModelSpec, device: &Device) -> crate::error::Result<(Encoder, Decoder)> {
    let c = spec.check()?;
    // Built in the spec's order, the log-variance head right after the mean head (the last
    // encoder layer), as the vae preset builds fc_mu then fc_logvar: the same seed then draws
    // the same initial weights.
    let layers = build("encoder", &c.encoder, spec.init, device);
    let logvar = if spec.variational {
        let (_, x, y) = c.encoder[c.encoder.len() - 1];
        Some(linear(x.numel(), y.numel(), spec.init, device))
    } else {
        None
    };
    let decoder = build("decoder", &c.decoder, spec.init, device);
    Ok((Encoder { layers, logvar }, Decoder { layers: decoder }))
}

impl Encoder {
    /// `[b, 1, 28, 28]` → the code `[b, L]` (the mean, for a variational model).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        run(&self.layers, Flow::Image(x)).flat()
    }

    /// μ and log σ² of a variational encoder; `None` for the others.
    pub fn stats(&self, x: Tensor<4>) -> Option<(Tensor<2>, Tensor<2>)> {
        let logvar = self.logvar.as_ref()?;
        let n = self.layers.len();
        let h = run(&self.layers[..n - 1], Flow::Image(x)).flat();
        let Block::Linear(mu) = &self.layers[n - 1] else {
            return None;
        };
        Some((mu.apply(h.clone()), logvar.apply(h)))
    }
}

impl Decoder {
    /// `[b, L]` → logits `[b, 1, 28, 28]`.
    pub fn forward(&self, z: Tensor<2>) -> Tensor<4> {
        run(&self.layers, Flow::Flat(z)).image()
    }
}

/// `m`'s adaptive average pooling of `x`; to one value per channel (conv64's code) as
/// [`crate::kernels::mean_pool`], the same numbers as one fused operation on the CPU.
fn adaptive_pool(m: &AdaptiveAvgPool2d, x: Tensor<4>) -> Tensor<4> {
    if m.output_size == [1, 1] {
        crate::kernels::mean_pool(x)
    } else {
        m.forward(x)
    }
}
