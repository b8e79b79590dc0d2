//! The kernels on burn's flex CPU tensors: plain loops over `f32` slices, split over rayon
//! threads in blocks large enough that each costs more than a task switch.

use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use burn::tensor::{DType, Shape, TensorData};
use pulp::Arch;
use rayon::prelude::*;

use super::conv;
use super::flex_loss::recon_loss_and_grad;
use super::matmul::{adds_once, matmul_into, matmul_new, View};
use super::sparse::{self, Groups};
use super::{FusedOps, LossKind};

/// Elements per rayon task of the element-wise passes: about 10–40 µs of work each.
///
/// The element-wise loops run inside `pulp`'s `Arch::dispatch`, which compiles them for the
/// CPU's widest vectors (AVX-512 or AVX2, chosen at run time; the default target only has
/// SSE2), with the same operations in the same order.
pub(super) const BLOCK: usize = 1 << 14;

/// The `f32` values of `t` in row-major order, borrowed when `t` is contiguous.
pub(super) fn values(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    assert_eq!(
        t.dtype(),
        DType::F32,
        "fused kernels: only f32 tensors are supported"
    );
    match t.as_slice::<f32>() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => {
            std::borrow::Cow::Owned(t.to_contiguous().as_slice::<f32>().unwrap_or(&[]).to_vec())
        }
    }
}

/// A new contiguous tensor holding `v` with `shape`.
pub(super) fn tensor(v: Vec<f32>, shape: Shape) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(v, shape))
}

/// `t` as a uniquely owned, contiguous tensor starting at offset 0 whose storage can be
/// written in place (copied only when it is shared or strided).
pub(super) fn owned(t: FlexTensor) -> FlexTensor {
    let l = t.layout();
    let dense = l.is_contiguous()
        && l.start_offset() == 0
        && t.bytes().len() == l.num_elements() * std::mem::size_of::<f32>();
    if dense && t.is_unique() {
        t
    } else {
        let shape = l.shape().clone();
        tensor(values(&t).into_owned(), shape)
    }
}

/// The mutable `f32` storage of a tensor from [`owned`].
pub(super) fn storage(t: &mut FlexTensor) -> &mut [f32] {
    t.storage_mut::<f32>()
}

/// `g ← g ⊙ [y > 0]`: the ReLU's backward pass, from its output `y`.
pub(super) fn relu_mask(g: &mut [f32], y: &[f32]) {
    g.par_chunks_mut(BLOCK)
        .zip(y.par_chunks(BLOCK))
        .for_each(|(g, y)| {
            Arch::new().dispatch(|| {
                for (g, &y) in g.iter_mut().zip(y) {
                    if y <= 0.0 {
                        *g = 0.0;
                    }
                }
            })
        });
}

/// `t` itself when it can be read as a matrix view (2-D, non-negative strides: every tensor
/// the models pass), else a contiguous copy.
fn viewable(t: FlexTensor) -> FlexTensor {
    if View::of(&t).is_some() {
        t
    } else {
        owned(t)
    }
}

/// The matrix view of a tensor from [`viewable`].
fn view(t: &FlexTensor) -> View<'_> {
    View::of(t).expect("fused kernels: matrix operands are 2-D")
}

/// `a·b`, with `a` and/or `b` transposed first (views, no copies).
pub(super) fn product(a: FlexTensor, ta: bool, b: FlexTensor, tb: bool) -> FlexTensor {
    let (a, b) = (viewable(a), viewable(b));
    let av = if ta { view(&a).t() } else { view(&a) };
    let bv = if tb { view(&b).t() } else { view(&b) };
    let out = matmul_new(av, bv);
    tensor(out, Shape::new([av.rows(), bv.cols()]))
}

/// A linear layer's weight gradient `xᵀ·g`, over the columns `live` of `x` when given (the
/// others zero in every row: their rows of the gradient are zeros), with the bits of the
/// whole product either way for a finite `g` (`skinny::picked`).
pub(super) fn weight_grad(x: FlexTensor, g: FlexTensor, live: Option<&[usize]>) -> FlexTensor {
    let (x, g) = (viewable(x), viewable(g));
    let (xt, gv) = (view(&x).t(), view(&g));
    match live.and_then(|l| super::skinny::picked(xt, gv, (Some(l), None))) {
        Some(dw) => tensor(dw, Shape::new([xt.rows(), gv.cols()])),
        None => product(x, true, g, false),
    }
}

/// `xᵀ·g` for an `x` the forward pass found sparse and a dense `g`: the sparse product over
/// `x`'s groups of adjacent columns, or gemm's where those are too dense.
pub(super) fn sparse_t_product(x: FlexTensor, g: FlexTensor) -> FlexTensor {
    let x = viewable(x);
    let Some(xt) = Groups::of_columns(view(&x)) else {
        return product(x, true, g, false);
    };
    grouped_t_product(&xt, g)
}

/// `xᵀ·g` for `x` in groups of columns (`xt`, from [`data_linear_forward`]).
pub(super) fn grouped_t_product(xt: &Groups, g: FlexTensor) -> FlexTensor {
    // Read in place: the caller still holds `g` for `∂x`, so `owned` would copy it.
    let g = viewable(g);
    let g = if view(&g).row_contiguous() {
        g
    } else {
        owned(g)
    };
    let gv = view(&g);
    let out = sparse::matmul_new(xt, gv);
    tensor(out, Shape::new([xt.rows(), gv.cols()]))
}

/// [`linear_forward`] for a layer fed the data (`x` may be mostly zeros) whose weight
/// gradient is wanted. Where the sparse product runs by groups of `x`'s columns
/// ([`sparse::linear_by_columns`]), those groups are returned for the weight gradient
/// ([`grouped_t_product`]), which takes the same groups; the flag says whether `x` was taken
/// as sparse. Same bits as [`linear_forward`].
pub(super) fn data_linear_forward(
    x: FlexTensor,
    w: FlexTensor,
    b: &FlexTensor,
    relu: bool,
) -> (FlexTensor, bool, Option<Groups>) {
    let (x, w) = (viewable(x), viewable(w));
    let (xv, wv) = (view(&x), view(&w));
    let (n, o) = (xv.rows(), wv.cols());
    let bias = values(b);
    if wv.row_contiguous() && bias.len() == o && sparse::scatters(o) {
        let Some(xt) = Groups::of_columns(xv) else {
            // Too dense for either grouping (they count the same non-zeros).
            let (y, ..) = linear_parts(x, w, b, relu, (false, false), false);
            return (y, false, None);
        };
        let y = sparse::linear_by_columns(&xt, wv, &bias, relu);
        return (tensor(y, Shape::new([n, o])), true, Some(xt));
    }
    let (y, sparse, _) = linear_forward(x, w, b, relu, (true, false));
    (y, sparse, None)
}

/// [`FusedOps::fused_linear`]: `x·w + b`, then the ReLU in place when `relu`. When `sparse_x`
/// (`x` may be mostly zeros: a model's input) and `x` is, the product takes the sparse kernel,
/// summing onto the bias written first; the flag returned says so, for the backward pass. A
/// dense product that gemm adds to its output once ([`adds_once`]) is computed on its own and
/// the bias added after, with the ReLU, in one pass over the output: the bits of
/// accumulating onto the bias, without first writing the bias into every row. Others
/// accumulate onto the bias. When `live_x` (`x` is a ReLU's output whose
/// gradient is wanted), its live columns are returned too, when few enough for `∂x` to skip
/// the others ([`super::live`]).
pub(super) fn linear_forward(
    x: FlexTensor,
    w: FlexTensor,
    b: &FlexTensor,
    relu: bool,
    (sparse_x, live_x): (bool, bool),
) -> (FlexTensor, bool, Option<Vec<usize>>) {
    let (y, sparse, live, _) = linear_parts(x, w, b, relu, (sparse_x, live_x), false);
    (y, sparse, live)
}

/// The logits of a model's last linear layer (no ReLU after it), for the loss: as
/// [`linear_forward`], except that where the bias would be added after the product, it is
/// left for the loss to add as it reads each logit ([`super::flex_loss`]), with the same
/// bits, saving a pass over the output. The flag returned says whether the bias was left out.
pub(super) fn linear_logits(
    x: FlexTensor,
    w: FlexTensor,
    b: &FlexTensor,
    live_x: bool,
) -> (FlexTensor, Option<Vec<usize>>, bool) {
    let (y, _, live, left) = linear_parts(x, w, b, false, (false, live_x), true);
    (y, live, left)
}

/// [`linear_forward`], leaving out the bias where it would be added after the product when
/// `leave_bias` (the last flag returned says so).
fn linear_parts(
    x: FlexTensor,
    w: FlexTensor,
    b: &FlexTensor,
    relu: bool,
    (sparse_x, live_x): (bool, bool),
    leave_bias: bool,
) -> (FlexTensor, bool, Option<Vec<usize>>, bool) {
    let bias = values(b);
    let (x, w) = (viewable(x), viewable(w));
    let (xv, wv) = (view(&x), view(&w));
    let (n, o) = (xv.rows(), wv.cols());
    assert_eq!(
        bias.len(),
        o,
        "fused_linear: bias size differs from the output width"
    );
    let groups = (sparse_x && wv.row_contiguous())
        .then(|| Groups::of_rows(xv))
        .flatten();
    // Only where `∂x` takes products of rows by rows (deep enough, see `live_input_grad`).
    let live = (live_x && o >= super::dot::MIN_DEPTH)
        .then(|| super::live::live_columns(xv))
        .flatten();
    if groups.is_none() && super::shallow::fits(&xv, &wv) {
        let y = super::shallow::linear(xv, wv, (!leave_bias).then_some(&bias[..]), relu);
        return (tensor(y, Shape::new([n, o])), false, live, leave_bias);
    }
    if groups.is_none() && adds_once(n, xv.cols()) {
        // Over the input's live columns only, where it has them: same bits (finite weights).
        let mut y = live
            .as_deref()
            .and_then(|l| super::skinny::picked(xv, wv, (None, Some(l))))
            .unwrap_or_else(|| matmul_new(xv, wv));
        if !leave_bias {
            add_bias(&mut y, &bias, relu);
        }
        return (tensor(y, Shape::new([n, o])), false, live, leave_bias);
    }
    let mut y = Vec::with_capacity(n * o);
    for _ in 0..n {
        y.extend_from_slice(&bias);
    }
    match &groups {
        Some(x) => sparse::matmul_acc(&mut y, x, wv),
        None => matmul_into(&mut y, xv, wv, true),
    }
    if relu {
        y.par_chunks_mut(BLOCK).for_each(|c| {
            Arch::new().dispatch(|| {
                for v in c {
                    *v = v.max(0.0);
                }
            })
        });
    }
    (tensor(y, Shape::new([n, o])), groups.is_some(), live, false)
}

/// `y ← y + b` row by row (`b` one value per column), then `max(·, 0)` when `relu`.
fn add_bias(y: &mut [f32], b: &[f32], relu: bool) {
    let o = b.len().max(1);
    y.par_chunks_mut((BLOCK / o).max(1) * o).for_each(|rows| {
        Arch::new().dispatch(|| {
            for row in rows.chunks_exact_mut(o) {
                for (v, &b) in row.iter_mut().zip(b) {
                    let s = *v + b;
                    *v = if relu { s.max(0.0) } else { s };
                }
            }
        })
    });
}

/// `∂x = g·wᵀ` (`w`: `[k, o]`) in the columns `live` of `x` only, zero in the others: the
/// products of rows by rows with the rows `live` of `w`, spread into `x`'s width. The whole
/// product where that kernel does not apply.
pub(super) fn live_input_grad(g: FlexTensor, w: FlexTensor, live: &[usize]) -> FlexTensor {
    let (g, w) = (viewable(g), viewable(w));
    let (gv, wv) = (view(&g), view(&w));
    if live.len() < 4 || !super::dot::usable(&gv, &wv) {
        return product(g, false, w, true);
    }
    let part = super::dot::product_picked(gv, wv, live);
    let (n, k) = (gv.rows(), wv.rows());
    tensor(
        super::live::spread_columns(&part, live, k),
        Shape::new([n, k]),
    )
}

/// The input gradient of a linear layer (`g·wᵀ`, over the columns `live` when given, as
/// [`live_input_grad`] and [`product`]) followed by the ReLU's backward pass from that
/// input, `y` (the layer before's output), and the column sums of the result (that layer's
/// bias gradient): [`relu_mask_and_bias_grad`] of the input gradient, with the same bits,
/// the mask and the sums taken as the live columns are spread where that kernel runs.
pub(super) fn input_grad_masked(
    g: FlexTensor,
    w: FlexTensor,
    live: Option<&[usize]>,
    y: &FlexTensor,
) -> (FlexTensor, Vec<f32>) {
    let (g, w) = (viewable(g), viewable(w));
    let (gv, wv) = (view(&g), view(&w));
    let (n, k) = (gv.rows(), wv.rows());
    match live {
        Some(live)
            if live.len() >= 4
                && super::dot::usable(&gv, &wv)
                && y.layout().num_elements() == n * k =>
        {
            let part = super::dot::product_picked(gv, wv, live);
            let (dx, db) = super::live::spread_masked(&part, live, k, &values(y));
            (tensor(dx, Shape::new([n, k])), db)
        }
        Some(live) => relu_mask_and_bias_grad(live_input_grad(g, w, live), Some(y)),
        None => match super::shallow::masked(gv, wv, &values(y)) {
            Some((dx, db)) => (tensor(dx, Shape::new([n, k])), db),
            None => relu_mask_and_bias_grad(product(g, false, w, true), Some(y)),
        },
    }
}

/// `g ← g ⊙ [y > 0]` (the ReLU's backward from its output) and the column sums of the result
/// (the bias gradient). Returns the masked gradient and the sums.
pub(super) fn relu_mask_and_bias_grad(
    g: FlexTensor,
    y: Option<&FlexTensor>,
) -> (FlexTensor, Vec<f32>) {
    let mut g = owned(g);
    let o = *g.layout().shape().as_slice().last().unwrap_or(&1);
    let gs = storage(&mut g);
    if let Some(y) = y {
        relu_mask(gs, &values(y));
    }
    // Column sums in f32, row by row (the summation order of a plain loop, vectorised along
    // the row); rows are split over two halves (`live::first_half`, as the fused forms split
    // them) summed separately then added.
    let rows = gs.len() / o.max(1);
    let half = super::live::first_half(rows) * o;
    let sums: Vec<Vec<f32>> = gs
        .par_chunks(half.max(1))
        .map(|part| {
            let mut acc = vec![0f32; o];
            Arch::new().dispatch(|| {
                for row in part.chunks_exact(o) {
                    for (a, &v) in acc.iter_mut().zip(row) {
                        *a += v;
                    }
                }
            });
            acc
        })
        .collect();
    let mut db = vec![0f32; o];
    for s in &sums {
        for (d, v) in db.iter_mut().zip(s) {
            *d += v;
        }
    }
    (g, db)
}

/// `g · s` for a one-element tensor `s` (the incoming gradient of a scalar loss); `g` itself
/// when `s` is 1.
pub(super) fn scale_by(g: FlexTensor, s: &FlexTensor) -> FlexTensor {
    let s = values(s).first().copied().unwrap_or(1.0);
    if s == 1.0 {
        return g;
    }
    let mut g = owned(g);
    storage(&mut g).par_chunks_mut(BLOCK).for_each(|c| {
        for v in c {
            *v *= s;
        }
    });
    g
}

impl FusedOps for Flex {
    fn fused_conv2d(
        x: FlexTensor,
        w: FlexTensor,
        b: FlexTensor,
        stride: usize,
        padding: usize,
        relu: bool,
    ) -> FlexTensor {
        conv::conv2d_forward(&x, &w, &b, (stride, padding, relu), false).0
    }

    fn fused_conv_transpose2d(
        x: FlexTensor,
        w: FlexTensor,
        b: FlexTensor,
        stride: usize,
        padding: usize,
        padding_out: usize,
        relu: bool,
    ) -> FlexTensor {
        conv::conv_transpose2d_forward(&x, &w, &b, (stride, padding, padding_out, relu), false).0
    }

    fn fused_linear(
        x: FlexTensor,
        w: FlexTensor,
        b: FlexTensor,
        relu: bool,
        _after_relu: bool,
    ) -> FlexTensor {
        // Without autodiff (evaluation) any layer's input may be sparse; the check stops
        // early on dense ones.
        linear_forward(x, w, &b, relu, (true, false)).0
    }

    fn fused_recon_loss(
        logits: FlexTensor,
        target: FlexTensor,
        kind: usize,
        scale: f32,
    ) -> FlexTensor {
        let (l, _) = recon_loss_and_grad(&logits, &target, LossKind::from_code(kind), scale, None);
        tensor(vec![l], Shape::new([1]))
    }

    fn fused_mean_pool(x: FlexTensor) -> FlexTensor {
        mean_pool_forward(&x)
    }

    fn fused_max_pool(x: FlexTensor, k: usize, s: usize) -> FlexTensor {
        super::pool::max_pool_forward(&x, k, s, false).0
    }

    fn fused_upsample(x: FlexTensor, oh: usize, ow: usize) -> FlexTensor {
        super::pool::upsample_forward(&x, [oh, ow])
    }

    fn fused_dropout(x: FlexTensor, keep: f64, seed: u64, first: u64) -> FlexTensor {
        super::dropout::DropoutSaved::new(seed, keep, first).forward(x)
    }

    fn fused_batch_norm(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        epsilon: f64,
        relu: bool,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let (y, mean, var, _) = super::norm::forward(&x, &gamma, &beta, epsilon, relu);
        (y, mean, var)
    }
}

/// [`FusedOps::fused_mean_pool`]: each channel's values summed in order from 0, divided by
/// their count (burn's adaptive average pooling to `[1, 1]`, to the bit).
pub(super) fn mean_pool_forward(x: &FlexTensor) -> FlexTensor {
    let s = x.layout().shape();
    let (b, c, plane) = (s[0], s[1], s[2] * s[3]);
    let means = if plane == 0 {
        // No positions: burn's pooling gives 0 / 1.
        vec![0.0; b * c]
    } else {
        let n = plane as f32;
        values(x)
            .chunks_exact(plane)
            .map(|ch| ch.iter().fold(0.0f32, |sum, &v| sum + v) / n)
            .collect()
    };
    tensor(means, Shape::new([b, c, 1, 1]))
}

/// The backward pass of [`mean_pool_forward`] for an input of `shape`: each incoming gradient
/// divided by the channel's count, at every position of the channel (`0 + g/n`, as burn's
/// adaptive pooling adds it).
pub(super) fn mean_pool_backward(g: &FlexTensor, shape: Shape) -> FlexTensor {
    let plane = shape[2] * shape[3];
    let n = plane.max(1) as f32;
    let mut out = Vec::with_capacity(shape.num_elements());
    for &v in values(g).iter() {
        let d = 0.0f32 + v / n;
        out.extend(std::iter::repeat_n(d, plane));
    }
    tensor(out, shape)
}
