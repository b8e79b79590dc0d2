//! The backward passes of the fused operations, for burn's autodiff wrapper of flex.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, Flex};
use burn::tensor::Shape;

use super::conv::{self, Parts};
use super::dropout::DropoutSaved;
use super::flex::{
    linear_forward, live_input_grad, mean_pool_backward, mean_pool_forward, product,
    relu_mask_and_bias_grad, scale_by, sparse_t_product, tensor,
};
use super::flex_loss::recon_loss_and_grad;
use super::norm::{self, NormSaved};
use super::pool::{
    max_pool_backward, max_pool_forward, upsample_backward, upsample_forward, MaxPoolSaved,
};
use super::{FusedOps, LossKind};

/// Backward of `y = act(x·w + b)`: with `g` the incoming gradient masked by the ReLU,
/// `∂x = g·wᵀ`, `∂w = xᵀ·g`, `∂b = Σ_rows g`.
#[derive(Debug)]
struct LinearBackward;

/// The input as the backward pass needs it for `∂w = xᵀ·g`, and whether the forward pass
/// found it mostly zeros.
#[derive(Debug, Clone)]
enum Input {
    Dense(FlexTensor),
    Sparse(FlexTensor),
}

/// The weights as the backward pass needs them for `∂x = g·wᵀ`, with the input's live
/// columns when `∂x` is wanted there only (see [`super::live`]).
#[derive(Debug, Clone)]
struct Weights {
    w: FlexTensor,
    live: Option<Vec<usize>>,
}

/// What the backward pass keeps: `x` when `w` needs a gradient, `w` when `x` does, and the
/// output when a ReLU followed.
type LinearState = (Option<Input>, Option<Weights>, Option<FlexTensor>);

impl Backward<Flex, 3> for LinearBackward {
    type State = LinearState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, w, y) = ops.state;
        let [node_x, node_w, node_b] = ops.parents;
        let g = grads.consume::<Flex>(&ops.node);
        let (g, db) = relu_mask_and_bias_grad(g, y.as_ref());
        if let Some(node) = node_b {
            let n = db.len();
            grads.register::<Flex>(node.id, tensor(db, Shape::new([n])));
        }
        if let (Some(node), Some(x)) = (node_w, x) {
            let dw = match x {
                Input::Dense(x) => product(x, true, g.clone(), false),
                Input::Sparse(x) => sparse_t_product(x, g.clone()),
            };
            grads.register::<Flex>(node.id, dw);
        }
        if let (Some(node), Some(Weights { w, live })) = (node_x, w) {
            let dx = match live {
                Some(live) => live_input_grad(g, w, &live),
                None => product(g, false, w, true),
            };
            grads.register::<Flex>(node.id, dx);
        }
    }
}

/// The backward pass of an operation with one input: the incoming gradient and the saved
/// state through `f`, registered for the input when it is tracked.
fn one_input<S>(
    ops: Ops<S, 1>,
    grads: &mut Gradients,
    f: impl FnOnce(FlexTensor, S) -> FlexTensor,
) {
    let [node] = ops.parents;
    let g = grads.consume::<Flex>(&ops.node);
    if let Some(node) = node {
        grads.register::<Flex>(node.id, f(g, ops.state));
    }
}

/// Backward of a scalar reconstruction loss: the gradient computed in the forward pass,
/// times the incoming gradient.
#[derive(Debug)]
struct LossBackward;

impl Backward<Flex, 1> for LossBackward {
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        one_input(ops, grads, |s, state| scale_by(state, &s));
    }
}

/// Backward of the mean pooling: the incoming gradient spread over each channel.
#[derive(Debug)]
struct MeanPoolBackward;

impl Backward<Flex, 1> for MeanPoolBackward {
    /// The input's shape.
    type State = Shape;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        one_input(ops, grads, |g, state| mean_pool_backward(&g, state));
    }
}

/// Backward of the max pooling: each output's gradient to its window's winner.
#[derive(Debug)]
struct MaxPoolBackward;

impl Backward<Flex, 1> for MaxPoolBackward {
    type State = MaxPoolSaved;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        one_input(ops, grads, |g, state| max_pool_backward(&g, &state));
    }
}

/// Backward of the nearest-neighbour resizing: each output's gradient back to its source.
#[derive(Debug)]
struct UpsampleBackward;

impl Backward<Flex, 1> for UpsampleBackward {
    /// The input's shape.
    type State = Shape;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        one_input(ops, grads, |g, state| upsample_backward(&g, state));
    }
}

/// Backward of dropout: the same choices, recomputed from the seed.
#[derive(Debug)]
struct DropoutBackward;

impl Backward<Flex, 1> for DropoutBackward {
    type State = DropoutSaved;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        one_input(ops, grads, |g, state| state.backward(g));
    }
}

/// Backward of the batch normalisation in training.
#[derive(Debug)]
struct NormBackward;

impl Backward<Flex, 3> for NormBackward {
    type State = NormSaved;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_g, node_b] = ops.parents;
        let g = grads.consume::<Flex>(&ops.node);
        let (dx, dgamma, dbeta) = norm::backward(&g, &ops.state);
        for (node, grad) in [(node_x, dx), (node_g, dgamma), (node_b, dbeta)] {
            if let Some(node) = node {
                grads.register::<Flex>(node.id, grad);
            }
        }
    }
}

/// Backward of a fused convolution (`transposed` or not) with bias and optional ReLU.
#[derive(Debug)]
struct ConvBackward {
    transposed: bool,
}

impl Backward<Flex, 3> for ConvBackward {
    type State = Parts;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w, node_b] = ops.parents;
        let g = grads.consume::<Flex>(&ops.node);
        let (dx, dw, db) = if self.transposed {
            conv::conv_transpose2d_backward(g, ops.state)
        } else {
            conv::conv2d_backward(g, ops.state)
        };
        for (node, grad) in [(node_x, dx), (node_w, dw), (node_b, Some(db))] {
            if let (Some(node), Some(grad)) = (node, grad) {
                grads.register::<Flex>(node.id, grad);
            }
        }
    }
}

/// Runs a fused convolution's forward pass (`forward(keep_data)` gives the output and the
/// saved state) and records its backward pass when any input is tracked.
fn conv_op<C: CheckpointStrategy>(
    transposed: bool,
    x: FloatTensor<Autodiff<Flex, C>>,
    w: FloatTensor<Autodiff<Flex, C>>,
    b: FloatTensor<Autodiff<Flex, C>>,
    forward: impl FnOnce(&FlexTensor, &FlexTensor, &FlexTensor, bool) -> (FlexTensor, Parts),
) -> FloatTensor<Autodiff<Flex, C>> {
    let (x_tracked, w_tracked) = (x.is_tracked(), w.is_tracked());
    let nodes = [x.node(), w.node(), b.node()];
    let (x, w, b) = (x.into_primitive(), w.into_primitive(), b.into_primitive());
    let op = ConvBackward { transposed };
    match op.prepare::<C>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            // Each part keeps its images of the output when a ReLU followed.
            let (y, mut saved) = forward(&x, &w, &b, w_tracked);
            saved.keep_weight(x_tracked.then_some(w));
            prep.finish(saved, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(&x, &w, &b, false).0),
    }
}

impl<C: CheckpointStrategy> FusedOps for Autodiff<Flex, C> {
    fn fused_conv2d(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        stride: usize,
        padding: usize,
        relu: bool,
    ) -> FloatTensor<Self> {
        conv_op::<C>(false, x, w, b, |x, w, b, keep| {
            conv::conv2d_forward(x, w, b, (stride, padding, relu), keep)
        })
    }

    fn fused_conv_transpose2d(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        stride: usize,
        padding: usize,
        padding_out: usize,
        relu: bool,
    ) -> FloatTensor<Self> {
        conv_op::<C>(true, x, w, b, |x, w, b, keep| {
            conv::conv_transpose2d_forward(x, w, b, (stride, padding, padding_out, relu), keep)
        })
    }

    fn fused_linear(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        relu: bool,
        after_relu: bool,
    ) -> FloatTensor<Self> {
        let (x_tracked, w_tracked) = (x.is_tracked(), w.is_tracked());
        let nodes = [x.node(), w.node(), b.node()];
        let (x, w, b) = (x.into_primitive(), w.into_primitive(), b.into_primitive());
        // Only an untracked input (the data) is checked for sparsity: hidden activations are
        // about half zeros, too dense for the sparse product to win.
        let sparse_x = !x_tracked;
        match LinearBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let kept_x = w_tracked.then(|| x.clone());
                let kept_w = x_tracked.then(|| w.clone());
                let live_x = x_tracked && after_relu;
                let (y, sparse, live) = linear_forward(x, w, &b, relu, (sparse_x, live_x));
                let keep_x = kept_x.map(|x| match sparse {
                    true => Input::Sparse(x),
                    false => Input::Dense(x),
                });
                let keep_w = kept_w.map(|w| Weights { w, live });
                let keep_y = relu.then(|| y.clone());
                prep.finish((keep_x, keep_w, keep_y), y)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(linear_forward(x, w, &b, relu, (sparse_x, false)).0)
            }
        }
    }

    fn fused_mean_pool(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let nodes = [x.node()];
        let x = x.into_primitive();
        match MeanPoolBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let shape = x.layout().shape().clone();
                prep.finish(shape, mean_pool_forward(&x))
            }
            OpsKind::UnTracked(prep) => prep.finish(mean_pool_forward(&x)),
        }
    }

    fn fused_max_pool(x: FloatTensor<Self>, k: usize, s: usize) -> FloatTensor<Self> {
        let nodes = [x.node()];
        let x = x.into_primitive();
        match MaxPoolBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (y, saved) = max_pool_forward(&x, k, s, true);
                prep.finish(saved, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(max_pool_forward(&x, k, s, false).0),
        }
    }

    fn fused_upsample(x: FloatTensor<Self>, oh: usize, ow: usize) -> FloatTensor<Self> {
        let nodes = [x.node()];
        let x = x.into_primitive();
        match UpsampleBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let shape = x.layout().shape().clone();
                prep.finish(shape, upsample_forward(&x, [oh, ow]))
            }
            OpsKind::UnTracked(prep) => prep.finish(upsample_forward(&x, [oh, ow])),
        }
    }

    fn fused_dropout(x: FloatTensor<Self>, keep: f64, seed: u64, first: u64) -> FloatTensor<Self> {
        let nodes = [x.node()];
        let x = x.into_primitive();
        let d = DropoutSaved::new(seed, keep, first);
        match DropoutBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(d, d.forward(x)),
            OpsKind::UnTracked(prep) => prep.finish(d.forward(x)),
        }
    }

    fn fused_batch_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let nodes = [x.node(), gamma.node(), beta.node()];
        let (x, gamma, beta) = (
            x.into_primitive(),
            gamma.into_primitive(),
            beta.into_primitive(),
        );
        let (y, mean, var, saved) = norm::forward(&x, &gamma, &beta, epsilon, relu);
        let y = match NormBackward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(saved, y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        };
        (y, Self::from_inner(mean), Self::from_inner(var))
    }

    fn fused_recon_loss(
        logits: FloatTensor<Self>,
        target: FloatTensor<Self>,
        kind: usize,
        scale: f32,
    ) -> FloatTensor<Self> {
        let kind = LossKind::from_code(kind);
        let nodes = [logits.node()];
        let (logits, target) = (logits.into_primitive(), target.into_primitive());
        match LossBackward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (l, g) = recon_loss_and_grad(&logits, &target, kind, scale, Some(1.0));
                let g = g.unwrap_or_else(|| tensor(Vec::new(), Shape::new([0])));
                prep.finish(g, tensor(vec![l], Shape::new([1])))
            }
            OpsKind::UnTracked(prep) => {
                let (l, _) = recon_loss_and_grad(&logits, &target, kind, scale, None);
                prep.finish(tensor(vec![l], Shape::new([1])))
            }
        }
    }
}
