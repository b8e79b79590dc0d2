//! A training pass of a chain of layers, forward and backward, without autodiff's graph.
//!
//! For a model whose layers all run as the fused operations of [`super`] (linear layers,
//! convolutions, transposed convolutions and batch norms, each followed or not by a ReLU,
//! mean and max pooling, nearest upsampling, dropout, flattens and reshapes), the chain rule
//! is a fixed sequence:
//! each layer's backward pass takes the gradient of its output and gives those of its
//! parameters and its input. burn's autodiff records every operation of a shard in a graph,
//! registered behind one lock for the process, and walks it back; for steps of one or a few
//! milliseconds that bookkeeping, the shards' fresh leaves and the gradients' map cost a
//! noticeable part of the step, more so on two threads (BENCHMARKS.md). Here the same kernels
//! run in the same order on the same tensors, so the gradients have the same bits as the
//! graph's (tested), without the graph.

use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use burn::module::{Param, ParamId};
use burn::nn::conv::{Conv2d, ConvTranspose2d};
use burn::nn::interpolate::Interpolate2d;
use burn::nn::pool::MaxPool2d;
use burn::nn::{BatchNorm, Dropout, Linear};
use burn::optim::GradientsParams;
use burn::tensor::{Shape, Tensor};

use super::conv::{self, Parts};
use super::dropout::DropoutSaved;
use super::flex::{
    data_linear_forward, grouped_t_product, input_grad_masked, linear_forward, linear_logits,
    live_input_grad, mean_pool_backward, mean_pool_forward, product, relu_mask_and_bias_grad,
    sparse_t_product, tensor, values, weight_grad,
};
use super::flex_loss::biased_loss_and_grad;
use super::norm::{self, NormSaved};
use super::pool::{
    max_pool_backward, max_pool_forward, upsample_backward, upsample_forward, MaxPoolSaved,
};
use super::sparse::Groups;
use super::LossKind;

/// A layer of a chain, as the model's forward pass runs it (see `model::stack::run`).
#[derive(Debug, Clone, Copy)]
pub enum Link<'a> {
    /// A linear layer with its bias, followed by a ReLU (`relu`), taking a ReLU's output
    /// (`after_relu`, which lets its input gradient skip the units no image turned on).
    Linear {
        /// The layer.
        layer: &'a Linear,
        /// A ReLU follows, fused.
        relu: bool,
        /// Its input is a ReLU's output.
        after_relu: bool,
    },
    /// A convolution with its bias, followed by a ReLU when `relu`.
    Conv {
        /// The layer.
        layer: &'a Conv2d,
        /// A ReLU follows, fused.
        relu: bool,
    },
    /// A transposed convolution with its bias, followed by a ReLU when `relu`.
    ConvT {
        /// The layer.
        layer: &'a ConvTranspose2d,
        /// A ReLU follows, fused.
        relu: bool,
    },
    /// Batch normalisation with the batch's statistics (training), followed by a ReLU when
    /// `relu`; the layer's running statistics are updated after the forward pass.
    Norm {
        /// The layer.
        layer: &'a BatchNorm,
        /// A ReLU follows, fused.
        relu: bool,
    },
    /// Dropout, with the step's seeds (see [`super::dropout`]).
    Dropout(&'a Dropout),
    /// Adaptive average pooling to one value per channel.
    MeanPool,
    /// Max pooling.
    MaxPool(&'a MaxPool2d),
    /// Nearest-neighbour resizing.
    Upsample(&'a Interpolate2d),
    /// The values of each image as one row.
    Flatten,
    /// The values of each image as `[c, h, w]`.
    Reshape([usize; 3]),
}

impl Link<'_> {
    /// Whether the link has parameters (its input's gradient is then wanted after it).
    fn has_parameters(&self) -> bool {
        matches!(
            self,
            Link::Linear { .. } | Link::Conv { .. } | Link::ConvT { .. } | Link::Norm { .. }
        )
    }
}

/// What the backward pass of one link keeps from its forward pass (one per layer of a
/// shard: their sizes do not matter).
#[allow(clippy::large_enum_variant)]
enum Kept {
    Linear {
        x: FlexTensor,
        sparse: bool,
        /// `x` in groups of columns, when the forward pass built them.
        groups: Option<Groups>,
        live: Option<Vec<usize>>,
        w: FlexTensor,
        y: Option<FlexTensor>,
    },
    Conv {
        transposed: bool,
        parts: Parts,
        /// The ids of the weight and the bias.
        ids: (ParamId, ParamId),
    },
    Norm(NormSaved),
    Dropout(DropoutSaved),
    MeanPool(Shape),
    MaxPool(MaxPoolSaved),
    Upsample(Shape),
    Shape,
}

/// `t`'s flex tensor (the value of a parameter or an input on the flex device).
fn on_flex<const D: usize>(t: Tensor<D>) -> FlexTensor {
    t.inner()
        .try_into_primitive::<Flex>()
        .expect("the chain's pass runs on the flex device")
}

/// A parameter's value as a flex tensor.
fn value<const D: usize>(p: &Param<Tensor<D>>) -> FlexTensor {
    on_flex(p.val())
}

/// A gradient as the optimizer takes it.
fn grad<const D: usize>(t: FlexTensor) -> Tensor<D> {
    Tensor::from_primitive::<Flex>(t)
}

/// `t` as rows (`[n, k]`), as a linear layer takes it.
fn rows(t: FlexTensor) -> FlexTensor {
    let s = t.layout().shape();
    let n = s[0];
    let k = s.num_elements() / n.max(1);
    if s.num_dims() == 2 {
        t
    } else {
        t.reshape(Shape::new([n, k]))
    }
}

/// `t` as images (`[n, c, h, w]`); rows become `[n, k, 1, 1]`, as `model::stack` turns them.
fn images(t: FlexTensor) -> FlexTensor {
    let s = t.layout().shape();
    if s.num_dims() == 4 {
        t
    } else {
        let n = s[0];
        let k = s.num_elements() / n.max(1);
        t.reshape(Shape::new([n, k, 1, 1]))
    }
}

/// The dims of images from [`images`].
fn dims4(t: &FlexTensor) -> [usize; 4] {
    let s = t.layout().shape();
    [s[0], s[1], s[2], s[3]]
}

/// The bias of a layer of a chain.
fn bias<const D: usize>(b: &Option<Param<Tensor<D>>>) -> &Param<Tensor<D>> {
    b.as_ref().expect("the layers of a chain have biases")
}

/// A shard's pass through a chain: its loss and gradients, and its batch norms' statistics,
/// which [`finish`](Self::finish) folds into their running statistics once every shard of
/// the step has run fused (a step sent back to the graph leaves them to the graph's pass).
pub struct ShardPass<'a> {
    loss: f32,
    grads: GradientsParams,
    stats: Vec<(&'a BatchNorm, FlexTensor, FlexTensor, Vec<usize>)>,
    device: burn::tensor::Device,
}

impl ShardPass<'_> {
    /// The loss and gradients, after updating the running statistics.
    pub fn finish(self) -> (f32, GradientsParams) {
        for (layer, mean, var, dims) in self.stats {
            let batch = |t| Tensor::<1>::from_inner(Tensor::from_primitive::<Flex>(t));
            super::update_running_stats(layer, batch(mean), batch(var), &dims, &self.device);
        }
        (self.loss, self.grads)
    }
}

/// The loss of a shard for a chain of layers, and the gradients of its parameters.
///
/// `links` run in order on `x`; the last one's output (logits) is compared with `target` by
/// `kind`, summed and scaled by `scale`, then multiplied by `weight` when given (a shard's
/// share of the batch). Returns that value and the gradient of every parameter, by id (see
/// [`ShardPass`]): what `GradientsParams::from_grads(loss.backward(), model)` gives for the
/// same model run through the fused operations and [`super::recon_loss`], bit for bit, with
/// the same updates of batch norms' running statistics and the same dropout choices (inside
/// [`super::with_step_draws`], as the graph's pass runs). `None` where one of the layers
/// does not run as a fused operation for this input (burn's own operation then runs in the
/// graph's pass).
///
/// The layers with parameters must have biases, and the device must be flex
/// ([`super::fused_here`]).
pub fn chain_pass<'a>(
    links: &[Link<'a>],
    x: Tensor<4>,
    target: Tensor<4>,
    kind: LossKind,
    scale: f32,
    weight: Option<f32>,
) -> Option<ShardPass<'a>> {
    let device = x.device();
    let mut h = on_flex(x);
    let mut kept = Vec::with_capacity(links.len());
    // Each batch norm's statistics, for its running statistics ([`ShardPass::finish`]).
    let mut stats = Vec::new();
    // Whether `h` depends on a parameter: the data does not, and its gradient is not wanted.
    let mut tracked = false;
    // The link whose output the loss reads as logits, when it is a linear layer without a
    // ReLU (only reshapes after it): its bias can be left to the loss.
    let logits_link = links
        .iter()
        .rposition(|l| !matches!(l, Link::Flatten | Link::Reshape(_)))
        .filter(|&i| matches!(links[i], Link::Linear { relu: false, .. }));
    // That bias, when the layer left it out.
    let mut left_bias = None;
    for (li, link) in links.iter().enumerate() {
        let (y, k) = match *link {
            Link::Linear {
                layer, after_relu, ..
            } if Some(li) == logits_link && tracked => {
                let w = value(&layer.weight);
                let x = rows(h);
                let b = value(bias(&layer.bias));
                let (y, live, left) = linear_logits(x.clone(), w.clone(), &b, after_relu);
                left_bias = left.then_some(b);
                let k = Kept::Linear {
                    x,
                    sparse: false,
                    groups: None,
                    live,
                    w,
                    y: None,
                };
                (y, k)
            }
            Link::Linear {
                layer,
                relu,
                after_relu,
            } => {
                let w = value(&layer.weight);
                let x = rows(h);
                let b = value(bias(&layer.bias));
                // The data (untracked) may be sparse: its groups serve the weight gradient.
                let (y, sparse, groups, live) = if tracked {
                    let (y, sparse, live) =
                        linear_forward(x.clone(), w.clone(), &b, relu, (false, after_relu));
                    (y, sparse, None, live)
                } else {
                    let (y, sparse, groups) = data_linear_forward(x.clone(), w.clone(), &b, relu);
                    (y, sparse, groups, None)
                };
                let y_kept = relu.then(|| y.clone());
                let k = Kept::Linear {
                    x,
                    sparse,
                    groups,
                    live,
                    w,
                    y: y_kept,
                };
                (y, k)
            }
            Link::Conv { layer, relu } => {
                let x = images(h);
                let (s, p) = super::conv2d_args(layer, dims4(&x))?;
                let w = value(&layer.weight);
                let b = value(bias(&layer.bias));
                let (y, mut parts) = conv::conv2d_forward(&x, &w, &b, (s, p, relu), true);
                parts.keep_weight(tracked.then_some(w));
                let k = Kept::Conv {
                    transposed: false,
                    parts,
                    ids: (layer.weight.id, bias(&layer.bias).id),
                };
                (y, k)
            }
            Link::ConvT { layer, relu } => {
                let x = images(h);
                let (s, p, op) = super::conv_transpose2d_args(layer, dims4(&x))?;
                let w = value(&layer.weight);
                let b = value(bias(&layer.bias));
                let (y, mut parts) =
                    conv::conv_transpose2d_forward(&x, &w, &b, (s, p, op, relu), true);
                parts.keep_weight(tracked.then_some(w));
                let k = Kept::Conv {
                    transposed: true,
                    parts,
                    ids: (layer.weight.id, bias(&layer.bias).id),
                };
                (y, k)
            }
            Link::Norm { layer, relu } => {
                let dims: Vec<usize> = h.layout().shape().as_slice().to_vec();
                if dims.iter().product::<usize>() == 0 || !layer.training.is_enabled() {
                    return None;
                }
                let (gamma, beta) = (value(&layer.gamma), value(&layer.beta));
                let (y, mean, var, saved) = norm::forward(&h, &gamma, &beta, layer.epsilon, relu);
                stats.push((layer, mean, var, dims));
                (y, Kept::Norm(saved))
            }
            Link::Dropout(layer) => {
                let n = h.layout().num_elements();
                let active = layer.training.is_enabled() && layer.prob > 0.0 && n > 0;
                if !active {
                    (h, Kept::Shape)
                } else if layer.prob < 1.0 {
                    let rows = h.layout().shape()[0];
                    let (seed, first) = super::dropout_seed(n, rows, &device);
                    let d = DropoutSaved::new(seed, 1.0 - layer.prob, first);
                    (d.forward(h), Kept::Dropout(d))
                } else {
                    return None;
                }
            }
            Link::MeanPool => {
                let x = images(h);
                let [b, c, hh, ww] = dims4(&x);
                if b * c * hh * ww == 0 {
                    return None;
                }
                let shape = x.layout().shape().clone();
                (mean_pool_forward(&x), Kept::MeanPool(shape))
            }
            Link::MaxPool(layer) => {
                let x = images(h);
                let (k, s) = super::max_pool_args(layer, dims4(&x))?;
                let (y, saved) = max_pool_forward(&x, k, s, tracked);
                (y, Kept::MaxPool(saved))
            }
            Link::Upsample(layer) => {
                let x = images(h);
                let out = super::upsample_args(layer, dims4(&x))?;
                let shape = x.layout().shape().clone();
                (upsample_forward(&x, out), Kept::Upsample(shape))
            }
            Link::Flatten => (rows(h), Kept::Shape),
            Link::Reshape([c, hh, ww]) => {
                let n = h.layout().shape()[0];
                (h.reshape(Shape::new([n, c, hh, ww])), Kept::Shape)
            }
        };
        tracked |= link.has_parameters();
        kept.push((y.layout().shape().clone(), k));
        h = y;
    }
    let (logits, target) = (rows(h), rows(on_flex(target)));
    // A shard's weight multiplies the loss and, in the same pass, its gradient (as the
    // graph's backward pass multiplies the gradient the loss kept).
    let left_bias = left_bias.as_ref().map(values);
    let (mut loss, g) = biased_loss_and_grad(
        (&logits, left_bias.as_deref()),
        &target,
        kind,
        scale,
        Some(weight.unwrap_or(1.0)),
    );
    drop((logits, target, left_bias));
    let mut g = g.expect("the loss's gradient was asked for");
    if let Some(w) = weight {
        loss *= w;
    }
    let mut grads = GradientsParams::new();
    // Back from the last link to the first one with parameters: the data's gradient is not
    // wanted.
    let first = links.iter().position(Link::has_parameters);
    let Some(first) = first else {
        return Some(ShardPass {
            loss,
            grads,
            stats,
            device,
        });
    };
    // The bias gradient of the next link back, when the input gradient `g` it takes is
    // already masked by its ReLU ([`input_grad_masked`]).
    let mut masked_db: Option<Vec<f32>> = None;
    let mut kept = kept;
    while let Some((out_shape, k)) = kept.pop() {
        let (i, link) = (kept.len(), &links[kept.len()]);
        if i < first {
            break;
        }
        g = g.reshape(out_shape);
        g = match (k, *link) {
            (
                Kept::Linear {
                    x,
                    sparse,
                    groups,
                    live,
                    w,
                    y,
                },
                Link::Linear { layer, .. },
            ) => {
                let (masked, db) = match masked_db.take() {
                    Some(db) => (g, db),
                    None => relu_mask_and_bias_grad(g, y.as_ref()),
                };
                let o = db.len();
                let dw = match (groups, sparse) {
                    (Some(xt), _) => grouped_t_product(&xt, masked.clone()),
                    (None, true) => sparse_t_product(x, masked.clone()),
                    (None, false) => weight_grad(x, masked.clone(), live.as_deref()),
                };
                grads.register(layer.weight.id, grad::<2>(dw));
                grads.register(bias(&layer.bias).id, grad::<1>(tensor(db, Shape::new([o]))));
                if i == first {
                    break;
                }
                // A linear layer with its ReLU right before: its mask and bias gradient are
                // taken with the input gradient.
                match kept.last() {
                    Some((_, Kept::Linear { y: Some(y), .. })) => {
                        let (dx, db) = input_grad_masked(masked, w, live.as_deref(), y);
                        masked_db = Some(db);
                        dx
                    }
                    _ => match live {
                        Some(live) => live_input_grad(masked, w, &live),
                        None => product(masked, false, w, true),
                    },
                }
            }
            (
                Kept::Conv {
                    transposed,
                    parts,
                    ids: (w_id, b_id),
                },
                _,
            ) => {
                let (dx, dw, db) = match transposed {
                    false => conv::conv2d_backward(g, parts),
                    true => conv::conv_transpose2d_backward(g, parts),
                };
                grads.register(w_id, grad::<4>(dw.expect("the weight's data was kept")));
                grads.register(b_id, grad::<1>(db));
                if i == first {
                    break;
                }
                dx.expect("the weight was kept for the input's gradient")
            }
            (Kept::Norm(saved), Link::Norm { layer, .. }) => {
                let (dx, dgamma, dbeta) = norm::backward(&g, &saved);
                grads.register(layer.gamma.id, grad::<1>(dgamma));
                grads.register(layer.beta.id, grad::<1>(dbeta));
                if i == first {
                    break;
                }
                dx
            }
            (Kept::Dropout(d), _) => d.backward(g),
            (Kept::MeanPool(shape), _) => mean_pool_backward(&g, shape),
            (Kept::MaxPool(saved), _) => max_pool_backward(&g, &saved),
            (Kept::Upsample(shape), _) => upsample_backward(&g, shape),
            (Kept::Shape, _) => g,
            (Kept::Linear { .. } | Kept::Norm(_), _) => {
                unreachable!("a layer's state comes from a layer of its kind")
            }
        };
    }
    Some(ShardPass {
        loss,
        grads,
        stats,
        device,
    })
}
