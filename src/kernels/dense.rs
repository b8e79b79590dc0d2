//! A training pass of a stack of linear layers, forward and backward, without autodiff's graph.
//!
//! For a model that is nothing but linear layers with biases, each followed or not by a ReLU,
//! the chain rule is a fixed sequence: each layer's backward pass takes the gradient of its
//! output and gives those of its weights, its bias and its input. burn's autodiff records
//! every operation of a shard in a graph, behind one lock for the process, and walks it back;
//! for the mlp's small steps (a few milliseconds) that bookkeeping, the shards' fresh leaves
//! and the gradients' map cost a few percent of the step (BENCHMARKS.md). Here the same
//! kernels run in the same order on the same tensors, so the gradients have the same bits as
//! the graph's (tested), without the graph.

use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use burn::module::Param;
use burn::nn::Linear;
use burn::optim::GradientsParams;
use burn::tensor::{Shape, Tensor};

use super::flex::{
    linear_forward, live_input_grad, product, relu_mask_and_bias_grad, scale_by, sparse_t_product,
    tensor,
};
use super::flex_loss::recon_loss_and_grad;
use super::LossKind;

/// A linear layer of a dense stack, as [`super::linear`] would run it: followed by a ReLU
/// (`relu`), and taking a ReLU's output (`after_relu`, which lets its input gradient skip
/// the units no image turned on).
#[derive(Debug, Clone, Copy)]
pub struct DenseLayer<'a> {
    /// The layer, with its bias.
    pub linear: &'a Linear,
    /// A ReLU follows, fused.
    pub relu: bool,
    /// Its input is a ReLU's output.
    pub after_relu: bool,
}

/// What the backward pass of one layer keeps from its forward pass.
struct Kept {
    /// The input, and whether the forward product found it sparse.
    x: FlexTensor,
    sparse: bool,
    /// The input's live columns, where the input gradient may skip the others.
    live: Option<Vec<usize>>,
    /// The output, when a ReLU followed.
    y: Option<FlexTensor>,
}

/// `t`'s flex tensor (the value of a parameter or an input on the flex device).
fn on_flex<const D: usize>(t: Tensor<D>) -> FlexTensor {
    t.inner()
        .try_into_primitive::<Flex>()
        .expect("the dense pass runs on the flex device")
}

/// A parameter's value as a flex tensor.
fn value<const D: usize>(p: &Param<Tensor<D>>) -> FlexTensor {
    on_flex(p.val())
}

/// The loss of a shard of a dense stack and the gradients of its parameters.
///
/// `layers` run in order on `x` (`[n, …]`, flattened to `[n, k]`); the last one's output
/// (logits) is compared with `target` by `kind`, summed and scaled by `scale`, then multiplied
/// by `weight` when given (a shard's share of the batch). Returns that value and the
/// gradients of every weight and bias, by parameter id: what
/// `GradientsParams::from_grads(loss.backward(), model)` gives for the same model run through
/// [`super::linear`] and [`super::recon_loss`], bit for bit.
///
/// The layers must have biases and the device must be flex ([`super::fused_here`]).
pub fn dense_pass(
    layers: &[DenseLayer<'_>],
    x: Tensor<4>,
    target: Tensor<4>,
    kind: LossKind,
    scale: f32,
    weight: Option<f32>,
) -> (f32, GradientsParams) {
    let n = x.dims()[0];
    let flat = |t: FlexTensor| {
        let k = t.layout().num_elements() / n.max(1);
        t.reshape(Shape::new([n, k]))
    };
    let mut h = flat(on_flex(x));
    let target = flat(on_flex(target));
    let mut kept = Vec::with_capacity(layers.len());
    let mut weights = Vec::with_capacity(layers.len());
    for (i, layer) in layers.iter().enumerate() {
        let w = value(&layer.linear.weight);
        let b = value(
            layer
                .linear
                .bias
                .as_ref()
                .expect("dense layers have biases"),
        );
        // The data is checked for sparsity, as the graph's pass checks its untracked input;
        // every later input is tracked, and its gradient wanted.
        let (input, tracked) = (h.clone(), i > 0);
        let (y, sparse, live) = linear_forward(
            h,
            w.clone(),
            &b,
            layer.relu,
            (!tracked, tracked && layer.after_relu),
        );
        kept.push(Kept {
            x: input,
            sparse,
            live,
            y: layer.relu.then(|| y.clone()),
        });
        weights.push(w);
        h = y;
    }
    let (mut loss, g) = recon_loss_and_grad(&h, &target, kind, scale, true);
    drop((h, target));
    let mut g = g.expect("the loss's gradient was asked for");
    if let Some(w) = weight {
        loss *= w;
        g = scale_by(g, &tensor(vec![w], Shape::new([1])));
    }
    let mut grads = GradientsParams::new();
    for (i, (layer, (k, w))) in layers
        .iter()
        .zip(kept.into_iter().zip(weights))
        .enumerate()
        .rev()
    {
        let (masked, db) = relu_mask_and_bias_grad(g, k.y.as_ref());
        let o = db.len();
        let dw = match k.sparse {
            true => sparse_t_product(k.x, masked.clone()),
            false => product(k.x, true, masked.clone(), false),
        };
        grads.register(layer.linear.weight.id, grad::<2>(dw));
        let bias = layer
            .linear
            .bias
            .as_ref()
            .expect("dense layers have biases");
        grads.register(bias.id, grad::<1>(tensor(db, Shape::new([o]))));
        if i == 0 {
            break;
        }
        g = match k.live {
            Some(live) => live_input_grad(masked, w, &live),
            None => product(masked, false, w, true),
        };
    }
    (loss, grads)
}

/// A gradient as the optimizer takes it.
fn grad<const D: usize>(t: FlexTensor) -> Tensor<D> {
    Tensor::from_primitive::<Flex>(t)
}
