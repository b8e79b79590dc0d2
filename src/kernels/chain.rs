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
/// ([`super::fused_here`]). Its batch norms take the statistics of `x` alone: for shards of
/// one batch normalised together, see [`chain_shards`].
pub fn chain_pass<'a>(
    links: &[Link<'a>],
    x: Tensor<4>,
    target: Tensor<4>,
    kind: LossKind,
    scale: f32,
    weight: Option<f32>,
) -> Option<ShardPass<'a>> {
    ShardRun::new(links, (x, target), (kind, scale, weight), None).alone()
}

/// The passes of the shards of one batch through a chain, in parallel, their batch norms
/// normalising with the whole batch's statistics: shard `i`'s pass is the one
/// [`ShardRun::new`] gives for it in `start(i)` (called on the thread that runs it, as a task
/// for more than one shard). Each shard runs up to its next batch norm; the shards'
/// statistics there are combined, in shard order, into the batch's (as the backward pass's
/// sums are at each batch norm on its way back), and every shard goes on with those. The
/// batch's gradient is then the sum of the shards' (with their losses weighted by their
/// shares of the batch) up to float rounding, as for a chain without batch norm; the first
/// shard's pass carries the batch's statistics for the running ones. One shard (`k` = 1)
/// runs on the calling thread, and its pass must be the whole batch's (`shard` `None` in
/// [`ShardRun::new`]). `None` where one of the layers does not run as a fused operation.
pub fn chain_shards<'a: 'l, 'l>(
    k: usize,
    start: impl Fn(usize) -> ShardRun<'a, 'l> + Sync,
) -> Option<Vec<ShardPass<'a>>> {
    if k <= 1 {
        return start(0).alone().map(|pass| vec![pass]);
    }
    // Each shard's pass, started by its first phase.
    let runs: Vec<std::sync::Mutex<Option<ShardRun<'a, 'l>>>> =
        (0..k).map(|_| std::sync::Mutex::new(None)).collect();
    let mut answer: Option<Answer> = None;
    loop {
        let pauses = super::tasks(k, |i| {
            let mut run = runs[i]
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            super::as_task(|| run.get_or_insert_with(|| start(i)).advance(answer.as_ref()))
        });
        let pauses: Vec<Pause> = pauses.into_iter().collect::<Option<_>>()?;
        answer = match &pauses[0] {
            Pause::Done => {
                assert!(
                    pauses.iter().all(|p| matches!(p, Pause::Done)),
                    "the shards end together"
                );
                break;
            }
            Pause::Stats(_) => {
                let stats: Vec<norm::ShardStats> = pauses
                    .into_iter()
                    .map(|p| match p {
                        Pause::Stats(s) => s,
                        _ => unreachable!("the shards pause at the same batch norm"),
                    })
                    .collect();
                Some(Answer::Stats(
                    norm::batch_stats(&stats),
                    stats.iter().map(norm::ShardStats::images).sum(),
                ))
            }
            Pause::Sums(_) => {
                let mut shards = pauses.into_iter().map(|p| match p {
                    Pause::Sums(sums) => sums,
                    _ => unreachable!("the shards pause at the same batch norm"),
                });
                let (mut total, mut count) = shards.next().expect("a batch has a shard");
                for (sums, c) in shards {
                    for (t, s) in total.iter_mut().zip(&sums) {
                        t.0 += s.0;
                        t.1 += s.1;
                    }
                    count += c;
                }
                Some(Answer::Sums((total, count)))
            }
        };
    }
    Some(
        runs.into_iter()
            .map(|r| {
                r.into_inner()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .expect("every shard ran")
                    .finish()
            })
            .collect(),
    )
}

/// Where a shard's pass stopped in [`ShardRun::advance`].
enum Pause {
    /// At a batch norm on the way forward, with the shard's statistics.
    Stats(norm::ShardStats),
    /// At a batch norm on the way back, with the sums of its gradients over the shard and the
    /// values per channel they are over.
    Sums((Vec<(f64, f64)>, usize)),
    /// At the end.
    Done,
}

/// The whole batch's numbers at the batch norm where the shards paused.
enum Answer {
    /// The mean and biased variance of each channel, and the batch's images.
    Stats((Vec<f64>, Vec<f64>), usize),
    /// The sums of the gradients, and the values per channel they are over.
    Sums((Vec<(f64, f64)>, usize)),
}

/// One shard's pass through a chain (see [`chain_pass`]), run in phases by [`chain_shards`]
/// when its batch norms are to take the whole batch's statistics.
pub struct ShardRun<'a: 'l, 'l> {
    links: &'l [Link<'a>],
    device: burn::tensor::Device,
    /// The loss's kind, scale and weight.
    loss_by: (LossKind, f32, Option<f32>),
    /// Whether batch norms pause for the batch's numbers, and whether this shard keeps the
    /// batch's statistics for the running ones (the first shard does).
    shard: Option<bool>,
    /// The step's dropout seeds, and this pass's place among them.
    place: Option<super::StepPlace>,
    /// The value going forward, until the loss takes it.
    h: Option<FlexTensor>,
    /// The target, until the loss takes it.
    target: Option<FlexTensor>,
    /// The next link forward.
    at: usize,
    kept: Vec<(Shape, Kept)>,
    // Each batch norm's statistics, for its running statistics ([`ShardPass::finish`]).
    stats: Vec<(&'a BatchNorm, FlexTensor, FlexTensor, Vec<usize>)>,
    // Whether `h` depends on a parameter: the data does not, and its gradient is not wanted.
    tracked: bool,
    /// The link whose output the loss reads as logits, when it is a linear layer without a
    /// ReLU (only reshapes after it): its bias can be left to the loss.
    logits_link: Option<usize>,
    /// That bias, when the layer left it out.
    left_bias: Option<FlexTensor>,
    /// The loss, and the gradient going back, once the forward pass is done.
    loss: f32,
    g: Option<FlexTensor>,
    grads: GradientsParams,
    /// The bias gradient of the next link back, when the input gradient `g` it takes is
    /// already masked by its ReLU ([`input_grad_masked`]).
    masked_db: Option<Vec<f32>>,
    /// The sums of the gradients over this shard at the batch norm it paused at on its way
    /// back.
    own_sums: Option<Vec<(f64, f64)>>,
    done: bool,
}

impl<'a: 'l, 'l> ShardRun<'a, 'l> {
    /// A pass of `links` on `x` for the loss against `target` of `kind`, scaled and weighted
    /// as in [`chain_pass`], with the dropout seeds of the step this thread runs in
    /// ([`super::with_step_draws`]). `shard`: `Some(first)` for one of several shards of a
    /// batch whose batch norms take the batch's statistics (`first` for the first shard).
    pub fn new(
        links: &'l [Link<'a>],
        (x, target): (Tensor<4>, Tensor<4>),
        loss_by: (LossKind, f32, Option<f32>),
        shard: Option<bool>,
    ) -> Self {
        let device = x.device();
        let logits_link = links
            .iter()
            .rposition(|l| !matches!(l, Link::Flatten | Link::Reshape(_)))
            .filter(|&i| matches!(links[i], Link::Linear { relu: false, .. }));
        ShardRun {
            links,
            device,
            loss_by,
            shard,
            place: super::step_place(),
            h: Some(on_flex(x)),
            target: Some(on_flex(target)),
            at: 0,
            kept: Vec::with_capacity(links.len()),
            stats: Vec::new(),
            tracked: false,
            logits_link,
            left_bias: None,
            loss: 0.0,
            g: None,
            grads: GradientsParams::new(),
            masked_db: None,
            own_sums: None,
            done: false,
        }
    }

    /// The whole pass of a batch trained whole, which never pauses.
    fn alone(mut self) -> Option<ShardPass<'a>> {
        match self.advance(None)? {
            Pause::Done => Some(self.finish()),
            Pause::Stats(_) | Pause::Sums(_) => unreachable!("a lone pass does not pause"),
        }
    }

    /// The pass, finished.
    fn finish(self) -> ShardPass<'a> {
        debug_assert!(self.done, "a pass is finished once done");
        ShardPass {
            loss: self.loss,
            grads: self.grads,
            stats: self.stats,
            device: self.device,
        }
    }

    /// Runs the pass on from where it stopped, the batch norm it stopped at taking
    /// `answer`, to the next batch norm of a shard or to its end; `None` where a layer does
    /// not run fused.
    fn advance(&mut self, answer: Option<&Answer>) -> Option<Pause> {
        let mut place = self.place.take();
        let pause = super::in_step_place(&mut place, || {
            if self.g.is_none() {
                if let Some(p) = self.forward(answer)? {
                    return Some(p);
                }
                self.loss();
                self.backward(None)
            } else {
                self.backward(answer)
            }
        });
        self.place = place;
        pause
    }

    /// The forward pass from link `at`: `Some(pause)` at a shard's batch norm, `Some(None)` at
    /// the end.
    fn forward(&mut self, mut answer: Option<&Answer>) -> Option<Option<Pause>> {
        let links = self.links;
        let device = self.device.clone();
        while self.at < links.len() {
            let (li, link) = (self.at, &links[self.at]);
            let h = self.h.take().expect("the value going forward");
            let (y, k) = match *link {
                Link::Linear {
                    layer, after_relu, ..
                } if Some(li) == self.logits_link && self.tracked => {
                    let w = value(&layer.weight);
                    let x = rows(h);
                    let b = value(bias(&layer.bias));
                    let (y, live, left) = linear_logits(x.clone(), w.clone(), &b, after_relu);
                    self.left_bias = left.then_some(b);
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
                    let (y, sparse, groups, live) = if self.tracked {
                        let (y, sparse, live) =
                            linear_forward(x.clone(), w.clone(), &b, relu, (false, after_relu));
                        (y, sparse, None, live)
                    } else {
                        let (y, sparse, groups) =
                            data_linear_forward(x.clone(), w.clone(), &b, relu);
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
                    parts.keep_weight(self.tracked.then_some(w));
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
                    parts.keep_weight(self.tracked.then_some(w));
                    let k = Kept::Conv {
                        transposed: true,
                        parts,
                        ids: (layer.weight.id, bias(&layer.bias).id),
                    };
                    (y, k)
                }
                Link::Norm { layer, relu } => {
                    let mut dims: Vec<usize> = h.layout().shape().as_slice().to_vec();
                    if dims.iter().product::<usize>() == 0 || !layer.training.is_enabled() {
                        return None;
                    }
                    let (batch, keep_stats) = match (self.shard, answer.take()) {
                        (None, _) => (norm::batch_stats(&[norm::shard_stats(&h)]), true),
                        (Some(first), Some(Answer::Stats(stats, images))) => {
                            dims[0] = *images;
                            (stats.clone(), first)
                        }
                        (Some(_), _) => {
                            let stats = norm::shard_stats(&h);
                            self.h = Some(h);
                            return Some(Some(Pause::Stats(stats)));
                        }
                    };
                    let (gamma, beta) = (value(&layer.gamma), value(&layer.beta));
                    let (y, mean, var, saved) =
                        norm::normalise(&h, (&gamma, &beta), layer.epsilon, relu, batch);
                    if keep_stats {
                        self.stats.push((layer, mean, var, dims));
                    }
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
                    let (y, saved) = max_pool_forward(&x, k, s, self.tracked);
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
            self.tracked |= link.has_parameters();
            self.kept.push((y.layout().shape().clone(), k));
            self.h = Some(y);
            self.at += 1;
        }
        Some(None)
    }

    /// The loss of the forward pass's output, and its gradient, to go back with.
    fn loss(&mut self) {
        let (kind, scale, weight) = self.loss_by;
        let h = self.h.take().expect("the forward pass's output");
        let target = self.target.take().expect("the target");
        let (logits, target) = (rows(h), rows(target));
        // A shard's weight multiplies the loss and, in the same pass, its gradient (as the
        // graph's backward pass multiplies the gradient the loss kept).
        let left_bias = self.left_bias.take();
        let left_bias = left_bias.as_ref().map(values);
        let (mut loss, g) = biased_loss_and_grad(
            (&logits, left_bias.as_deref()),
            &target,
            kind,
            scale,
            Some(weight.unwrap_or(1.0)),
        );
        drop((logits, target, left_bias));
        if let Some(w) = weight {
            loss *= w;
        }
        self.loss = loss;
        self.g = Some(g.expect("the loss's gradient was asked for"));
    }

    /// The backward pass from the last link not yet gone back through to the first one with
    /// parameters (the data's gradient is not wanted): `Some(pause)` at a shard's batch norm,
    /// `Some(Done)` at the end.
    fn backward(&mut self, mut answer: Option<&Answer>) -> Option<Pause> {
        let links = self.links;
        let Some(first) = links.iter().position(Link::has_parameters) else {
            self.done = true;
            return Some(Pause::Done);
        };
        while let Some((out_shape, _)) = self.kept.last() {
            let (i, link) = (self.kept.len() - 1, &links[self.kept.len() - 1]);
            if i < first {
                break;
            }
            let g = self
                .g
                .take()
                .expect("the gradient going back")
                .reshape(out_shape.clone());
            // A shard's batch norm needs the sums of the whole batch's gradients.
            let sums = match (&self.kept.last(), self.shard, answer.take()) {
                (Some((_, Kept::Norm(saved))), Some(_), None) if i > first => {
                    let own = norm::grad_sums(&g, saved);
                    self.own_sums = Some(own.clone());
                    self.g = Some(g);
                    return Some(Pause::Sums((own, saved.count())));
                }
                (_, _, Some(Answer::Sums(sums))) => Some(sums),
                _ => None,
            };
            let (_, k) = self.kept.pop().expect("a link to go back through");
            let grads = &mut self.grads;
            self.g = Some(match (k, *link) {
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
                    let (masked, db) = match self.masked_db.take() {
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
                    // A linear layer with its ReLU right before: its mask and bias gradient
                    // are taken with the input gradient.
                    match self.kept.last() {
                        Some((_, Kept::Linear { y: Some(y), .. })) => {
                            let (dx, db) = input_grad_masked(masked, w, live.as_deref(), y);
                            self.masked_db = Some(db);
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
                    // A shard's own sums give its part of `γ`'s and `β`'s gradients; the
                    // batch's give its input's.
                    let own = match self.own_sums.take() {
                        Some(own) => own,
                        None => norm::grad_sums(&g, &saved),
                    };
                    let (dgamma, dbeta) = norm::param_grads(&own);
                    grads.register(layer.gamma.id, grad::<1>(dgamma));
                    grads.register(layer.beta.id, grad::<1>(dbeta));
                    if i == first {
                        break;
                    }
                    match sums {
                        Some((sums, count)) => norm::input_grad(&g, &saved, sums, *count),
                        None => norm::input_grad(&g, &saved, &own, saved.count()),
                    }
                }
                (Kept::Dropout(d), _) => d.backward(g),
                (Kept::MeanPool(shape), _) => mean_pool_backward(&g, shape),
                (Kept::MaxPool(saved), _) => max_pool_backward(&g, &saved),
                (Kept::Upsample(shape), _) => upsample_backward(&g, shape),
                (Kept::Shape, _) => g,
                (Kept::Linear { .. } | Kept::Norm(_), _) => {
                    unreachable!("a layer's state comes from a layer of its kind")
                }
            });
        }
        self.done = true;
        Some(Pause::Done)
    }
}
