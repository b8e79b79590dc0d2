//! Fused CPU kernels for the training hot path, registered as custom backend operations through
//! burn's backend-extension mechanism (`#[backend_extension]`).
//!
//! The profiles in BENCHMARKS.md showed burn-flex's convolution kernels taking half of a conv
//! preset's training step and, for the dense presets, most of the time outside the matrix
//! products going to burn's one-op-at-a-time element-wise kernels: bias add,
//! ReLU and its mask in the backward pass, sigmoid, the loss and its gradient, and the eight
//! tensor operations of each Adam update, each allocating and writing a full tensor. burn has
//! no fusion on its CPU backend, so these are written by hand here:
//! - [`linear`]: `x·w + b` with an optional ReLU, one pass after the matrix product; its
//!   backward masks the gradient, sums the bias gradient and does the two products;
//! - [`conv2d`], [`conv_transpose2d`]: a convolution or transposed convolution as one matrix
//!   product over the patches of the whole batch (im2col / col2im), bias and ReLU fused into the
//!   pass that reorders the product; the backward pass is two more products;
//! - [`recon_loss`]: the reconstruction loss on logits (sigmoid or tanh + squared error, or
//!   BCE with logits) in one pass that also writes the gradient the backward pass returns;
//! - [`adam::Adam`]: burn's Adam (same state record, so resume files are unchanged) as
//!   one pass over every parameter, which also sums the shards' gradients and starts on the
//!   pool's other threads while the parameters are still being taken out of the model;
//! - [`mean_pool`]: adaptive average pooling to one value per channel, as burn computes it;
//! - `dot`: the products whose two operands run along the inner dimension (weight gradients,
//!   a linear layer's input gradient) as dot products of rows, without gemm's packed copies;
//! - `sparse`: the first layer's products over the images' non-zero pixels, `skinny` and
//!   `shallow` the products with a short side or a shallow depth (a narrow code), the latter
//!   with the bias and ReLU, or the ReLU's mask and the bias gradient, in the same pass;
//!   `skinny`'s tiles also take a layer's products over the units of a ReLU's output that
//!   some image turned on, and `live` its input gradient over them.
//!
//! [`chain_pass`] trains a model whose layers all run as these operations without burn's
//! autodiff graph: each shard's forward passes, the loss, then the backward passes in reverse,
//! the same kernels in the same order, so the gradients are the graph's to the bit.
//!
//! [`drive`] runs training's loop on rayon's pool with helpers standing by, and [`as_task`]
//! marks a shard of a batch, whose kernels then stay on its thread.
//!
//! They run on burn's `flex` CPU backend (with and without autodiff); on any other device the
//! wrappers compose burn's own operations instead, so GPU builds are unaffected.

pub mod adam;
mod adam_pass;
mod autodiff;
mod chain;
mod conv;
mod dot;
mod dropout;
mod flex;
mod flex_loss;
mod gather;
pub use chain::{chain_pass, chain_shards, Link, ShardPass, ShardRun};

/// The images of a part of a batch that the convolutions run on one thread when a batch is
/// trained whole, and of a shard of a model with batch norm by default: their buffers stay a
/// few megabytes (BENCHMARKS.md).
pub const PART_IMAGES: usize = 16;
pub(crate) use flex_loss::exp_fast;

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// The cores this process may use, read once: the standard library reads the process's
/// affinity and its cgroup's quota files at every call (about twenty system calls), too
/// slow for a question asked at every training step.
pub(crate) fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

thread_local! {
    /// Whether this thread is driving a computation from inside rayon's pool (see [`drive`]).
    static DRIVING: Cell<bool> = const { Cell::new(false) };
    /// Whether this thread is a [`drive`]'s helper, standing by.
    static STANDING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` on a worker of rayon's pool, as its driver: the kernels it calls still split
/// their work over the pool, as they do when called from outside it. Training runs its loop
/// this way: each batch's first shard then starts at once on the driver's own thread.
///
/// With `helpers` > 0, up to that many of the other workers (fewer where the pool or the
/// machine has fewer) stand by while `f` runs: between pieces of work they look for the next
/// one without going to sleep, so that the shards and the optimizer's pieces start on them at
/// once, instead of every parallel pass waking sleeping workers (a futex wake and a
/// reschedule, tens to hundreds of microseconds on a virtual machine, in a step of a few
/// milliseconds). They hold their cores while `f` keeps them busy, and sleep in short naps
/// when it does not. Helpers stand by for one drive at a time in the process: a drive that
/// starts while another has helpers runs without.
pub fn drive<R: Send>(helpers: usize, f: impl FnOnce() -> R + Send) -> R {
    drive_waiting(helpers, std::time::Duration::from_millis(2), f)
}

/// [`drive`], waiting at most `wait` for the helpers to start before running `f`.
fn drive_waiting<R: Send>(
    helpers: usize,
    wait: std::time::Duration,
    f: impl FnOnce() -> R + Send,
) -> R {
    let helpers = helpers
        .min(rayon::current_num_threads().saturating_sub(1))
        .min(cores().saturating_sub(1));
    // Only one drive in the process has helpers: two drives' helpers could each end up
    // waiting on top of work the other drive waits for.
    let claimed = helpers > 0 && !HELPED.swap(true, Ordering::AcqRel);
    let helpers = if claimed { helpers } else { 0 };
    let (done, began, started) = (
        AtomicBool::new(false),
        AtomicBool::new(false),
        AtomicUsize::new(0),
    );
    rayon::scope(|s| {
        let (done, began, started) = (&done, &began, &started);
        for _ in 0..helpers {
            s.spawn(move |_| stand_by(done, began, started));
        }
        // Give the helpers a moment to start before `f` makes any work of its own; one that
        // starts later returns at once, so it can never stand by on top of that work (which
        // would wait for `f`, which would wait for that work).
        let t0 = std::time::Instant::now();
        while started.load(Ordering::Acquire) < helpers && t0.elapsed() < wait {
            std::thread::yield_now();
        }
        began.store(true, Ordering::Release);
        /// Sets `done` (and frees the process's helpers) when dropped: when `f` returns or
        /// unwinds.
        struct Finish<'a>(&'a AtomicBool, bool);
        impl Drop for Finish<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Release);
                if self.1 {
                    HELPED.store(false, Ordering::Release);
                }
            }
        }
        let _finish = Finish(done, claimed);
        with_driving(true, f)
    })
}

/// How long a helper spins without work before it naps: longer than the driver's serial work
/// between two parallel passes of a training step (a few hundred microseconds at most), so
/// that the next pass does not wait for a helper to wake from a nap, which on a busy virtual
/// machine takes longer than the nap itself (see BENCHMARKS.md).
const SPIN: std::time::Duration = std::time::Duration::from_millis(2);

/// Whether a [`drive`] in this process has helpers standing by.
static HELPED: AtomicBool = AtomicBool::new(false);

/// How many helpers have stood by in this process (for the tests).
static STOOD: AtomicUsize = AtomicUsize::new(0);

/// A [`drive`]'s helper: runs the pool's pending work until `done`, spinning between pieces
/// and napping after long idle spells. It returns at once when it starts after the drive
/// began, or on a thread already driving or standing by (should it be picked up there).
fn stand_by(done: &AtomicBool, began: &AtomicBool, started: &AtomicUsize) {
    let busy = DRIVING.with(Cell::get) || STANDING.with(Cell::get);
    let late = began.load(Ordering::Acquire);
    if !busy && !late {
        STANDING.with(|s| s.set(true));
        STOOD.fetch_add(1, Ordering::Relaxed);
    }
    // Counted either way: the driver waits until every helper has stood by or stood down.
    started.fetch_add(1, Ordering::Release);
    if busy || late {
        return;
    }
    let mut idle_since: Option<std::time::Instant> = None;
    while !done.load(Ordering::Acquire) {
        if rayon::yield_now() == Some(rayon::Yield::Executed) {
            idle_since = None;
        } else if idle_since
            .get_or_insert_with(std::time::Instant::now)
            .elapsed()
            < SPIN
        {
            std::hint::spin_loop();
        } else {
            // A long idle spell (the driver writing a checkpoint, or training on a GPU): a
            // short nap, so the core is not held for nothing.
            std::thread::sleep(std::time::Duration::from_micros(50));
        }
    }
    STANDING.with(|s| s.set(false));
}

/// Runs `f` as one task of a parallel computation (a shard of a batch): the kernels it calls
/// run on this thread, even when it is the thread of a [`drive`]. Inside a drive, a parallel
/// loop whose pieces should keep their kernels on their own threads wraps each piece in this:
/// its first piece runs on the driver's thread, and would otherwise split its kernels over the
/// pool.
pub fn as_task<R>(f: impl FnOnce() -> R) -> R {
    with_driving(false, f)
}

/// `f(0)`, …, `f(n − 1)` run as parallel tasks, their results in order. The caller runs
/// `f(0)` itself, the others go to the pool, and the caller waits for them as
/// [`with_helpers`] does.
pub fn tasks<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    if n <= 1 {
        return (0..n).map(f).collect();
    }
    let slots: Vec<std::sync::Mutex<Option<T>>> =
        (0..n).map(|_| std::sync::Mutex::new(None)).collect();
    let put = |i: usize, v: T| {
        *slots[i]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(v);
    };
    with_helpers(n - 1, |i| put(i, f(i)), || put(0, f(0)));
    slots
        .into_iter()
        .map(|s| {
            s.into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .expect("every task ran")
        })
        .collect()
}

/// `drive()` on the calling thread while `help(1)`, …, `help(n)` run as tasks on the pool;
/// returns `drive`'s result once every helper is done. When the caller is done first it runs
/// the pool's pending work (a helper's task no other thread took) and then spins (for at
/// most [`SPIN`]) until the helpers are done, instead of going to sleep in rayon's wait. A
/// worker that waits on a rayon join sleeps after a few rounds of looking for work, and the
/// last task's end then has to wake it: a futex wake and a reschedule, about 60 µs on a
/// virtual machine, at every training step whose other shard ends last (see BENCHMARKS.md).
/// Past [`SPIN`] it waits as rayon does.
pub(crate) fn with_helpers<R>(
    n: usize,
    help: impl Fn(usize) + Sync,
    drive: impl FnOnce() -> R,
) -> R {
    if n == 0 {
        return drive();
    }
    let left = AtomicUsize::new(n);
    rayon::in_place_scope(|s| {
        let (help, left) = (&help, &left);
        for i in 1..=n {
            s.spawn(move |_| {
                help(i);
                left.fetch_sub(1, Ordering::Release);
            });
        }
        let r = drive();
        let since = std::time::Instant::now();
        while left.load(Ordering::Acquire) > 0 {
            if rayon::yield_local() != Some(rayon::Yield::Executed) {
                if since.elapsed() > SPIN {
                    break;
                }
                std::hint::spin_loop();
            }
        }
        r
    })
}

/// Runs `f` with [`DRIVING`] set to `on`, restoring it afterwards (also on unwinding).
fn with_driving<R>(on: bool, f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            DRIVING.with(|d| d.set(self.0));
        }
    }
    let _restore = Restore(DRIVING.with(|d| d.replace(on)));
    f()
}

/// Whether the caller is a task on a worker of rayon's pool, not a [`drive`]r: its kernels
/// then run on its own thread, the pool's other workers having tasks of their own.
pub(crate) fn in_task() -> bool {
    rayon::current_thread_index().is_some() && !DRIVING.with(Cell::get)
}

/// `dst ← a·b`, row-major: `a` `[m, k]`, `b` `[k, n]` (`[n, k]`, used transposed, with
/// `b_transposed`), `dst` `[m, n]`; on the calling thread in a rayon task ([`in_task`]), else on
/// all.
pub(crate) fn matmul_rows(
    dst: &mut [f32],
    a: &[f32],
    (m, k): (usize, usize),
    b: &[f32],
    n: usize,
    b_transposed: bool,
) {
    let a = matmul::View::dense(a, m, k);
    let b = if b_transposed {
        matmul::View::dense(b, n, k).t()
    } else {
        matmul::View::dense(b, k, n)
    };
    matmul::matmul_into(dst, a, b, false);
}

/// `dst ← aᵀ·b`, threads as [`matmul_rows`]: `a` `[k, m]`, `b` `[k, n]`, `dst` `[m, n]`, all
/// row-major (the weight gradient of a layer: activations' gradient transposed times inputs).
pub(crate) fn matmul_at_b(dst: &mut [f32], a: &[f32], (k, m): (usize, usize), b: &[f32], n: usize) {
    let a = matmul::View::dense(a, k, m).t();
    let b = matmul::View::dense(b, k, n);
    matmul::matmul_into(dst, a, b, false);
}
mod live;
mod matmul;
mod norm;
mod phases;
mod pieces;
mod pool;
mod shallow;
mod skinny;
mod sparse;

use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Backend, DispatchDevice};
use burn::nn::conv::{Conv2d, ConvTranspose2d};
use burn::nn::interpolate::{Interpolate2d, InterpolateMode};
use burn::nn::pool::MaxPool2d;
use burn::nn::{BatchNorm, Dropout, Linear, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Distribution, Int, Tensor};

/// The custom operations, implemented for [`burn::backend::Flex`] and its autodiff wrapper.
#[backend_extension(Flex, Autodiff)]
pub trait FusedOps: Backend {
    /// `x·w + b` (`x`: `[n, i]`, `w`: `[i, o]`, `b`: `[o]`), then ReLU when `relu`.
    /// `after_relu` says that `x` is a ReLU's output, so that the gradient reaching its zeros
    /// is never used: `x`'s gradient may then skip the columns of `x` that are zero in every
    /// row, and be zero there.
    fn fused_linear(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        relu: bool,
        after_relu: bool,
    ) -> FloatTensor<Self>;

    /// Convolution of `x` (`[b, c, H, W]`) with `w` (`[o, c, kh, kw]`) and bias `b`, stride
    /// and zero padding the same in both directions, then ReLU when `relu`.
    fn fused_conv2d(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        stride: usize,
        padding: usize,
        relu: bool,
    ) -> FloatTensor<Self>;

    /// Transposed convolution of `x` (`[b, c, h, w]`) with `w` (`[c, o, kh, kw]`) and bias
    /// `b` (PyTorch's `ConvTranspose2d`), then ReLU when `relu`.
    #[allow(clippy::too_many_arguments)]
    fn fused_conv_transpose2d(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        stride: usize,
        padding: usize,
        padding_out: usize,
        relu: bool,
    ) -> FloatTensor<Self>;

    /// `scale · Σ loss(logits, target)` over every element, as a one-element tensor; `kind` is
    /// a [`LossKind`] code. The target is a constant: no gradient flows to it.
    fn fused_recon_loss(
        logits: FloatTensor<Self>,
        target: FloatTensor<Self>,
        kind: usize,
        scale: f32,
    ) -> FloatTensor<Self>;

    /// The mean of each channel of `x` (`[b, c, h, w]` → `[b, c, 1, 1]`): adaptive average
    /// pooling to one value, with its arithmetic (a plain sum over the positions in order,
    /// divided by their count).
    fn fused_mean_pool(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// Max pooling of `x` (`[b, c, h, w]`) with a `k`×`k` window and stride `s`, no padding: a
    /// window's first largest value wins, and a NaN always does, as burn and PyTorch pool.
    fn fused_max_pool(x: FloatTensor<Self>, k: usize, s: usize) -> FloatTensor<Self>;

    /// Nearest-neighbour resizing of `x` (`[b, c, h, w]`) to `[b, c, oh, ow]`, as burn's
    /// `interpolate` in nearest mode.
    fn fused_upsample(x: FloatTensor<Self>, oh: usize, ow: usize) -> FloatTensor<Self>;

    /// Dropout in training: each value of `x` kept with probability `keep` and scaled by
    /// `1/keep`, or zeroed, the choices a function of `seed` and the value's position, `x`'s
    /// first value being number `first` (its place in the whole batch, for a shard).
    fn fused_dropout(x: FloatTensor<Self>, keep: f64, seed: u64, first: u64) -> FloatTensor<Self>;

    /// Batch normalisation of `x` (`[b, c, …]`) with the batch's statistics, `γ`, `β` and
    /// `epsilon`, then ReLU when `relu`: the output, and each channel's mean and biased
    /// variance (constants: no gradient flows through them).
    fn fused_batch_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// Whether `device` (with or without autodiff) is burn's flex CPU backend, where the fused
/// kernels run.
pub fn fused_here(device: &Device) -> bool {
    matches!(
        device.clone().inner().as_dispatch(),
        DispatchDevice::Flex(_)
    )
}

/// `layer`'s output for `x`, followed by ReLU when `relu_after`: one fused operation on the
/// CPU. `after_relu`: `x` is a ReLU's output (see [`FusedOps::fused_linear`]).
pub fn linear(layer: &Linear, x: Tensor<2>, relu_after: bool, after_relu: bool) -> Tensor<2> {
    let [n, _] = x.dims();
    let o = layer.weight.dims()[1];
    match &layer.bias {
        Some(bias) if n > 0 && o > 0 && fused_here(&x.device()) => {
            let y = <burn::backend::Dispatch as FusedOps>::fused_linear(
                x.into_dispatch(),
                layer.weight.val().into_dispatch(),
                bias.val().into_dispatch(),
                relu_after,
                after_relu,
            );
            Tensor::from_dispatch(y)
        }
        _ => {
            let y = layer.forward(x);
            if relu_after {
                relu(y)
            } else {
                y
            }
        }
    }
}

/// `layer`'s output for `x`, followed by ReLU when `relu`, as one fused operation; `None`
/// where it does not apply (not the CPU, no bias, dilation, groups, uneven stride or padding,
/// or a layer too large for [`indexable`]), for the caller to use burn's convolution.
pub fn conv2d(layer: &Conv2d, x: Tensor<4>, relu_after: bool) -> Option<Tensor<4>> {
    let bias = layer.bias.as_ref()?;
    let (s, p) = conv2d_args(layer, x.dims())?;
    if !fused_here(&x.device()) {
        return None;
    }
    let y = <burn::backend::Dispatch as FusedOps>::fused_conv2d(
        x.into_dispatch(),
        layer.weight.val().into_dispatch(),
        bias.val().into_dispatch(),
        s,
        p,
        relu_after,
    );
    Some(Tensor::from_dispatch(y))
}

/// The stride and padding of [`conv2d`]'s fused convolution for an input of `dims`; `None`
/// where it does not apply.
fn conv2d_args(layer: &Conv2d, [b, c, h, w]: [usize; 4]) -> Option<(usize, usize)> {
    layer.bias.as_ref()?;
    let p = match layer.padding {
        PaddingConfig2d::Valid => 0,
        PaddingConfig2d::Explicit(a, b, c, d) if a == b && b == c && c == d => a,
        _ => return None,
    };
    let [kh, kw] = layer.kernel_size;
    let [sh, sw] = layer.stride;
    let o = layer.weight.dims()[0];
    let plain = layer.dilation == [1, 1]
        && layer.groups == 1
        && sh == sw
        && sh > 0
        && [b, o, c, h, w, kh, kw].iter().all(|&n| n > 0);
    if !plain || h + 2 * p < kh || w + 2 * p < kw {
        return None;
    }
    let grid = [(h + 2 * p - kh) / sh + 1, (w + 2 * p - kw) / sh + 1];
    indexable([c, h, w], [kh, kw], b, grid).then_some((sh, p))
}

/// Whether the fused convolutions' `u32` offset tables can index a layer: one image of the
/// big side (`c·H·W` values) and one channel's rows of the patch matrix for the whole batch
/// (`kh·kw·b·L`) are below `u32::MAX`: true for any layer whose patch matrix fits in a
/// practical amount of memory; the others take burn's own convolutions.
fn indexable(big: [usize; 3], kernel: [usize; 2], b: usize, grid: [usize; 2]) -> bool {
    let below = |dims: &[usize]| {
        dims.iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .is_some_and(|n| n < u32::MAX as usize)
    };
    below(&big) && below(&[kernel[0], kernel[1], b, grid[0], grid[1]])
}

/// `layer`'s output for `x`, followed by ReLU when `relu`, as one fused operation; `None`
/// where it does not apply (as [`conv2d`]).
pub fn conv_transpose2d(
    layer: &ConvTranspose2d,
    x: Tensor<4>,
    relu_after: bool,
) -> Option<Tensor<4>> {
    let bias = layer.bias.as_ref()?;
    let (s, p, op) = conv_transpose2d_args(layer, x.dims())?;
    if !fused_here(&x.device()) {
        return None;
    }
    let y = <burn::backend::Dispatch as FusedOps>::fused_conv_transpose2d(
        x.into_dispatch(),
        layer.weight.val().into_dispatch(),
        bias.val().into_dispatch(),
        s,
        p,
        op,
        relu_after,
    );
    Some(Tensor::from_dispatch(y))
}

/// The stride, padding and output padding of [`conv_transpose2d`]'s fused operation for an
/// input of `dims`; `None` where it does not apply.
fn conv_transpose2d_args(
    layer: &ConvTranspose2d,
    [b, _, h, w]: [usize; 4],
) -> Option<(usize, usize, usize)> {
    layer.bias.as_ref()?;
    let [kh, kw] = layer.kernel_size;
    let [s, s2] = layer.stride;
    let o = layer.weight.dims()[1];
    let [p, p2] = layer.padding;
    let [op, op2] = layer.padding_out;
    let plain = layer.dilation == [1, 1]
        && layer.groups == 1
        && s == s2
        && s > 0
        && p == p2
        && op == op2
        && h > 0
        && w > 0
        && b > 0
        && o > 0;
    let fits = plain && (h - 1) * s + kh + op > 2 * p && (w - 1) * s + kw + op > 2 * p;
    if !fits {
        return None;
    }
    let big = [
        o,
        (h - 1) * s + kh + op - 2 * p,
        (w - 1) * s + kw + op - 2 * p,
    ];
    indexable(big, [kh, kw], b, [h, w]).then_some((s, p, op))
}

/// The element-wise reconstruction losses the fused kernel knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossKind {
    /// `(sigmoid(x) − t)²`.
    SigmoidMse = 0,
    /// `(tanh(x) − t)²`.
    TanhMse = 1,
    /// `BCEWithLogits`: `max(x, 0) − x·t + log(1 + exp(−|x|))`.
    Bce = 2,
}

impl LossKind {
    fn from_code(code: usize) -> Self {
        match code {
            0 => LossKind::SigmoidMse,
            1 => LossKind::TanhMse,
            _ => LossKind::Bce,
        }
    }
}

/// Adaptive average pooling of `x` (`[b, c, h, w]`) to one value per channel, as burn's
/// `AdaptiveAvgPool2d` with output size `[1, 1]` computes it: one fused operation on the CPU
/// (burn's own splits its passes over the thread pool, which inside a shard only disturbs the
/// other shard's thread), burn's operations elsewhere.
pub fn mean_pool(x: Tensor<4>) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    if b * c * h * w > 0 && fused_here(&x.device()) {
        let y = <burn::backend::Dispatch as FusedOps>::fused_mean_pool(x.into_dispatch());
        Tensor::from_dispatch(y)
    } else {
        burn::nn::pool::AdaptiveAvgPool2dConfig::new([1, 1])
            .init()
            .forward(x)
    }
}

/// `layer`'s batch normalisation of `x` (`[b, c, …]`), followed by ReLU when `relu_after`.
///
/// In training (an autodiff device, the layer not frozen) it normalises with the batch's
/// statistics, as one operation on the CPU whose sums do not depend on the threads (so a seed
/// trains the same weights every time), and updates the running statistics as PyTorch does:
/// `(1 − momentum)·running + momentum·batch`, with the unbiased variance (`n/(n − 1)` times
/// the biased one the batch was normalised with; burn's own layer keeps the biased one).
/// Elsewhere it normalises with the running statistics.
pub fn batch_norm<const D: usize>(layer: &BatchNorm, x: Tensor<D>, relu_after: bool) -> Tensor<D> {
    let dims = x.dims();
    let train = x.device().is_autodiff() && layer.training.is_enabled();
    let relu_if = |y: Tensor<D>| if relu_after { relu(y) } else { y };
    if !train || dims.iter().product::<usize>() == 0 {
        return relu_if(layer.forward(x));
    }
    let device = x.device();
    let (y, mean, var) = if fused_here(&device) {
        let (y, mean, var) = <burn::backend::Dispatch as FusedOps>::fused_batch_norm(
            x.into_dispatch(),
            layer.gamma.val().into_dispatch(),
            layer.beta.val().into_dispatch(),
            layer.epsilon,
            relu_after,
        );
        (
            Tensor::from_dispatch(y),
            Tensor::<1>::from_dispatch(mean),
            Tensor::<1>::from_dispatch(var),
        )
    } else {
        let r = burn::tensor::module::batch_norm_train(
            x,
            layer.gamma.val(),
            layer.beta.val(),
            layer.epsilon,
        );
        (relu_if(r.output), r.mean, r.variance)
    };
    update_running_stats(layer, mean, var, &dims, &device);
    y
}

/// Folds a training batch's per-channel `mean` and biased `var` (of an input of `dims`) into
/// `layer`'s running statistics, as burn's `BatchNorm` does (the variance made unbiased).
fn update_running_stats(
    layer: &BatchNorm,
    mean: Tensor<1>,
    var: Tensor<1>,
    dims: &[usize],
    device: &Device,
) {
    let n = dims.iter().product::<usize>() / dims[1];
    let unbiased = if n > 1 {
        n as f64 / (n - 1) as f64
    } else {
        1.0
    };
    let m = layer.momentum;
    let update = |state: &burn::module::RunningState<Tensor<1>>, batch: Tensor<1>, k: f64| {
        let running = state.value_sync().to_device(device);
        let new = running
            .mul_scalar(1.0 - m)
            .add(batch.detach().mul_scalar(m * k));
        state.update(new.detach());
        // burn keeps an update per thread and averages those of different threads at the next
        // read from a thread that updated: training's steps may run on either of the pool's
        // threads, so the update is folded in at once, on the thread that made it.
        let _ = state.value_sync();
    };
    update(&layer.running_mean, mean, 1.0);
    update(&layer.running_var, var, unbiased);
}

/// `layer`'s max pooling of `x`: one operation on the CPU (burn's pools through its 3-d kernel
/// with 64-bit indices, copied twice more by the autodiff graph), burn's elsewhere and for
/// what specs never build (padding, dilation, ceiling mode, uneven windows).
pub fn max_pool(layer: &MaxPool2d, x: Tensor<4>) -> Tensor<4> {
    match max_pool_args(layer, x.dims()) {
        Some((k, s)) if fused_here(&x.device()) => {
            let y = <burn::backend::Dispatch as FusedOps>::fused_max_pool(x.into_dispatch(), k, s);
            Tensor::from_dispatch(y)
        }
        _ => layer.forward(x),
    }
}

/// The window and stride of [`max_pool`]'s own pooling for an input of `dims`; `None` where
/// burn's pools.
fn max_pool_args(layer: &MaxPool2d, [b, c, h, w]: [usize; 4]) -> Option<(usize, usize)> {
    let ([k, k2], [s, s2]) = (layer.kernel_size, layer.stride);
    let unpadded = match layer.padding {
        PaddingConfig2d::Valid => true,
        PaddingConfig2d::Explicit(a, b, c, d) => a + b + c + d == 0,
        _ => false,
    };
    let plain = unpadded
        && k == k2
        && s == s2
        && k > 0
        && s > 0
        && layer.dilation == [1, 1]
        && !layer.ceil_mode
        && b * c > 0
        && h >= k
        && w >= k
        && h.checked_mul(w).is_some_and(|n| n < u32::MAX as usize);
    plain.then_some((k, s))
}

/// `layer`'s nearest-neighbour resizing of `x`: one operation on the CPU, burn's elsewhere
/// and for other modes.
pub fn upsample(layer: &Interpolate2d, x: Tensor<4>) -> Tensor<4> {
    match upsample_args(layer, x.dims()) {
        Some([oh, ow]) if fused_here(&x.device()) => {
            let y =
                <burn::backend::Dispatch as FusedOps>::fused_upsample(x.into_dispatch(), oh, ow);
            Tensor::from_dispatch(y)
        }
        _ => layer.forward(x),
    }
}

/// The output size of [`upsample`]'s own resizing of an input of `dims`; `None` where burn's
/// resizes.
fn upsample_args(layer: &Interpolate2d, [b, c, h, w]: [usize; 4]) -> Option<[usize; 2]> {
    match layer.output_size {
        Some([oh, ow])
            if matches!(layer.mode, InterpolateMode::Nearest) && b * c * h * w * oh * ow > 0 =>
        {
            Some([oh, ow])
        }
        _ => None,
    }
}

/// `layer`'s dropout on `x`: in training on the CPU one fused operation (see `dropout.rs`),
/// burn's `Dropout` elsewhere. A training step's forward pass runs inside
/// [`with_step_draws`]: its `k`-th dropout call takes the step's `k`-th seed, and numbers `x`'s
/// values from its first row's place in the batch (`x`'s first dimension is the batch), so a
/// shard makes the whole batch's choices for its rows. Outside a step (a lone forward pass in
/// training mode), the seed is drawn from the backend's seeded generator.
pub fn dropout<const D: usize>(layer: &Dropout, x: Tensor<D>) -> Tensor<D> {
    let device = x.device();
    let active = layer.training.is_enabled() && device.is_autodiff() && layer.prob > 0.0;
    let n = x.shape().num_elements();
    if active && layer.prob < 1.0 && n > 0 && fused_here(&device) {
        let (seed, first) = dropout_seed(n, x.dims()[0], &device);
        let keep = 1.0 - layer.prob;
        let y = <burn::backend::Dispatch as FusedOps>::fused_dropout(
            x.into_dispatch(),
            keep,
            seed,
            first,
        );
        return Tensor::from_dispatch(y);
    }
    layer.forward(x)
}

/// The seed of a dropout call on `n` values in `rows` rows, and the number of its first value
/// (see [`dropout`]): the step's next seed inside [`with_step_draws`], else one drawn from the
/// backend's generator on `device`.
fn dropout_seed(n: usize, rows: usize, device: &Device) -> (u64, u64) {
    let rows = rows.max(1);
    STEP_DRAWS
        .with_borrow_mut(|s| {
            s.as_mut().map(|s| {
                let seed = s.draws.seed(s.next);
                s.next += 1;
                (seed, (s.first_row * (n / rows)) as u64)
            })
        })
        .unwrap_or_else(|| (draw_seed(device), 0))
}

/// The seeds of one training step's dropout calls: seed `k` a hash of the step's own number
/// (from the run's seed, the epoch and the batch) and `k`. A shard's `k`-th call and the whole
/// batch's take the same seed, and a resumed run the seeds of the run it continues.
#[derive(Debug, Clone, Copy)]
pub struct StepDraws(u64);

impl StepDraws {
    /// The seeds of the step whose own number is `step` (see [`crate::train::step`]).
    pub fn new(step: u64) -> Self {
        StepDraws(step)
    }

    /// Seed `k`: draw `k` of the stream numbered by the step (`dropout::draw`).
    fn seed(self, k: usize) -> u64 {
        dropout::draw(self.0, k as u64)
    }
}

/// The step's seeds and this thread's place in the batch, for [`dropout`].
#[derive(Clone)]
struct StepPlace {
    draws: StepDraws,
    first_row: usize,
    next: usize,
}

thread_local! {
    /// The training step (or shard of one) this thread is running, if any.
    static STEP_DRAWS: std::cell::RefCell<Option<StepPlace>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f` (a step's forward pass over the batch's rows from `first_row` on: 0 for a whole
/// batch, the shard's first row for a shard) with its dropout calls taking their seeds from
/// `draws` (see [`dropout`]).
pub fn with_step_draws<R>(draws: StepDraws, first_row: usize, f: impl FnOnce() -> R) -> R {
    let mut place = Some(StepPlace {
        draws,
        first_row,
        next: 0,
    });
    in_step_place(&mut place, f)
}

/// This thread's place in a training step ([`with_step_draws`]), for a pass that runs in
/// phases, each perhaps on another thread ([`in_step_place`]).
fn step_place() -> Option<StepPlace> {
    STEP_DRAWS.with_borrow(Clone::clone)
}

/// Runs `f` (a phase of a pass) in the step's place `place` from [`step_place`], which then
/// holds what `f`'s dropout calls took from it.
fn in_step_place<R>(place: &mut Option<StepPlace>, f: impl FnOnce() -> R) -> R {
    /// Swaps the thread's place and `place` back, when `f` returns or unwinds.
    struct Swap<'a>(&'a mut Option<StepPlace>);
    impl Drop for Swap<'_> {
        fn drop(&mut self) {
            STEP_DRAWS.with_borrow_mut(|s| std::mem::swap(s, self.0));
        }
    }
    STEP_DRAWS.with_borrow_mut(|s| std::mem::swap(s, place));
    let _swap = Swap(place);
    f()
}

/// 64 random bits from the backend's seeded generator on `device`.
fn draw_seed(device: &Device) -> u64 {
    let t = Tensor::<1, Int>::random([2], Distribution::Default, device);
    let v: Vec<i64> = t.into_data().iter::<i64>().collect();
    ((v[0] as u64) << 32) ^ (v[1] as u64)
}

/// `scale · Σ loss(logits, target)` as a one-element tensor; `None` where the fused kernel
/// does not run (the caller composes burn's operations instead).
pub fn recon_loss<const D: usize>(
    kind: LossKind,
    logits: Tensor<D>,
    target: Tensor<D>,
    scale: f64,
) -> Option<Tensor<1>> {
    if !fused_here(&logits.device()) {
        return None;
    }
    let l = <burn::backend::Dispatch as FusedOps>::fused_recon_loss(
        logits.into_dispatch(),
        target.into_dispatch(),
        kind as usize,
        scale as f32,
    );
    Some(Tensor::from_dispatch(l))
}

#[cfg(test)]
mod tests;
