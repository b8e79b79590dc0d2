//! Batch normalisation in training, with the batch's own statistics, and its backward pass.
//! burn-flex composes it of a dozen tensor operations (two transposed copies, reductions,
//! broadcasts), each a pass over the activations; here the statistics take one pass and the
//! output another, split by channel over the pool, the sums of each channel taken in `f64` in
//! a fixed order (the same for any number of threads), and a ReLU that follows is fused in.

use burn::backend::flex::FlexTensor;
use burn::tensor::Shape;
use pulp::{Arch, Simd, WithSimd};

use super::flex::{tensor, values};
use super::pieces::{each_chunk, planes_written, Fill, PLANE_PIECE};

/// The layout of a batch-normalised tensor: `[b, c, rest…]` with `s` values per channel and
/// image (`h·w` for images, 1 for flat vectors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    b: usize,
    c: usize,
    s: usize,
}

impl Layout {
    fn of(shape: &Shape) -> Self {
        let d = shape.num_dims();
        let (b, c) = (shape[0], shape[1]);
        let s = (2..d).map(|i| shape[i]).product();
        Layout { b, c, s }
    }

    /// Values per channel over the batch.
    fn n(self) -> usize {
        self.b * self.s
    }

    /// The values of channel `ch` in `x`, image by image.
    fn channel<'a>(self, x: &'a [f32], ch: usize) -> impl Iterator<Item = &'a [f32]> + 'a {
        (0..self.b).map(move |i| &x[(i * self.c + ch) * self.s..][..self.s])
    }

    /// Calls `f(ch)` for each channel, collecting the results in order: on rayon's pool for
    /// a large tensor, else here.
    fn per_channel<R: Send + Default + Clone>(
        self,
        f: impl Fn(usize) -> R + Sync + Send,
    ) -> Vec<R> {
        let mut out = vec![R::default(); self.c];
        if self.b * self.c * self.s < PLANE_PIECE {
            for (ch, o) in out.iter_mut().enumerate() {
                *o = f(ch);
            }
        } else {
            each_chunk(&mut out, 1, |ch, o| o[0] = f(ch));
        }
        out
    }

    /// A new tensor's values, `f(p, ch, plane)` writing each image's plane `p` of each
    /// channel (`ch`) once ([`planes_written`]).
    fn planes(self, f: impl Fn(usize, usize, &mut Fill<'_>) + Sync + Send) -> Vec<f32> {
        planes_written(self.b * self.c * self.s, self.s, |p, plane| {
            f(p, p % self.c, plane)
        })
    }
}

/// Interleaved sums per channel: enough independent chains for the adders, in a fixed order.
const LANES: usize = 8;

/// Adds `f(v)` of each value of `xs` into `acc`, value `i` into sum `i % LANES`.
#[inline(always)]
fn add_lanes(acc: &mut [f64; LANES], xs: &[f32], f: impl Fn(f32) -> f64) {
    let mut chunks = xs.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
        *a += f(v);
    }
}

/// The sum of the interleaved sums, in order.
fn total(acc: [f64; LANES]) -> f64 {
    acc.iter().sum()
}

/// What the backward pass keeps: the input, `γ`, each channel's mean and `1/√(var + ε)`, and
/// the output when a ReLU followed.
#[derive(Debug, Clone)]
pub(super) struct NormSaved {
    x: FlexTensor,
    gamma: Vec<f32>,
    mean: Vec<f32>,
    inv_std: Vec<f32>,
    y: Option<FlexTensor>,
}

/// A batch norm's statistics over some of a batch's images (a shard of it, or all of it):
/// for each channel the mean of its `count` values and the sum of their squared deviations
/// from that mean.
#[derive(Debug, Clone)]
pub(super) struct ShardStats {
    images: usize,
    count: usize,
    mean: Vec<f64>,
    m2: Vec<f64>,
}

/// The statistics of `x` (`[b, c, …]`) for each channel, two passes over its values.
pub(super) fn shard_stats(x: &FlexTensor) -> ShardStats {
    let lay = Layout::of(x.layout().shape());
    let xs = values(x);
    let sums = lay.per_channel(|ch| {
        Arch::new().dispatch(ChannelStats {
            xs: &xs,
            lay,
            ch,
            n: lay.n().max(1) as f64,
        })
    });
    ShardStats {
        images: lay.b,
        count: lay.n(),
        mean: sums.iter().map(|&(m, _)| m).collect(),
        m2: sums.iter().map(|&(_, s)| s).collect(),
    }
}

impl ShardStats {
    /// The images they are over.
    pub(super) fn images(&self) -> usize {
        self.images
    }
}

/// The batch's mean and biased variance of each channel from the statistics of its shards,
/// combined in shard order by Chan, Golub and LeVeque's pairwise rule (a shard's mean moves
/// the batch's by its share, its squared deviations add those of its mean's distance); the
/// batch's own from one shard.
pub(super) fn batch_stats(shards: &[ShardStats]) -> (Vec<f64>, Vec<f64>) {
    let (first, rest) = shards.split_first().expect("a batch has a shard");
    let (mut count, mut mean, mut m2) = (first.count as f64, first.mean.clone(), first.m2.clone());
    for s in rest {
        let (na, nb) = (count, s.count as f64);
        let n = na + nb;
        for ch in 0..mean.len() {
            let delta = s.mean[ch] - mean[ch];
            mean[ch] += delta * nb / n;
            m2[ch] += s.m2[ch] + delta * delta * na * nb / n;
        }
        count = n;
    }
    let n = count.max(1.0);
    let var = m2.iter().map(|&s| s / n).collect();
    (mean, var)
}

/// The forward pass: `(x − mean)·γ/√(var + ε) + β` per channel (then ReLU when `relu`), with
/// the batch's mean and biased variance, which it returns as `[c]` tensors too.
pub(super) fn forward(
    x: &FlexTensor,
    gamma: &FlexTensor,
    beta: &FlexTensor,
    epsilon: f64,
    relu: bool,
) -> (FlexTensor, FlexTensor, FlexTensor, NormSaved) {
    let stats = batch_stats(&[shard_stats(x)]);
    normalise(x, (gamma, beta), epsilon, relu, stats)
}

/// [`forward`] with the batch's mean and biased variance of each channel given (those of the
/// whole batch, for a shard of it).
pub(super) fn normalise(
    x: &FlexTensor,
    (gamma, beta): (&FlexTensor, &FlexTensor),
    epsilon: f64,
    relu: bool,
    (mean, var): (Vec<f64>, Vec<f64>),
) -> (FlexTensor, FlexTensor, FlexTensor, NormSaved) {
    let shape = x.layout().shape().clone();
    let lay = Layout::of(&shape);
    let xs = values(x);
    let (g, bt) = (values(gamma), values(beta));
    // y = x·a + d with a = γ/√(var + ε), d = β − mean·a.
    let inv_std: Vec<f64> = var.iter().map(|&v| 1.0 / (v + epsilon).sqrt()).collect();
    let a: Vec<f32> = (0..lay.c)
        .map(|ch| (g[ch] as f64 * inv_std[ch]) as f32)
        .collect();
    let d: Vec<f32> = (0..lay.c)
        .map(|ch| (bt[ch] as f64 - mean[ch] * g[ch] as f64 * inv_std[ch]) as f32)
        .collect();
    let y = lay.planes(|p, ch, plane| {
        Arch::new().dispatch(Normalise {
            src: &xs[p * lay.s..][..lay.s],
            a: a[ch],
            d: d[ch],
            relu,
            plane,
        })
    });
    let y = tensor(y, shape);
    let c = Shape::new([lay.c]);
    let mean: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
    let var = var.iter().map(|&v| v as f32).collect();
    let saved = NormSaved {
        x: x.clone(),
        gamma: g.to_vec(),
        mean: mean.clone(),
        inv_std: inv_std.iter().map(|&v| v as f32).collect(),
        y: relu.then(|| y.clone()),
    };
    (y, tensor(mean, c.clone()), tensor(var, c), saved)
}

/// The gradients of [`forward`] for the output's `g`: input, `γ`, `β`. With `x̂` the
/// normalised input and sums over each channel, `∂β = Σ g`, `∂γ = Σ g·x̂`, and
/// `∂x = γ/√(var + ε) · (g − ∂β/n − x̂·∂γ/n)` (`g` masked by the ReLU first).
pub(super) fn backward(g: &FlexTensor, st: &NormSaved) -> (FlexTensor, FlexTensor, FlexTensor) {
    let sums = grad_sums(g, st);
    let dx = input_grad(g, st, &sums, st.count());
    let (dgamma, dbeta) = param_grads(&sums);
    (dx, dgamma, dbeta)
}

impl NormSaved {
    /// The values of each channel in the input.
    pub(super) fn count(&self) -> usize {
        Layout::of(self.x.layout().shape()).n()
    }
}

/// The sums over each channel of [`backward`]'s `g` (masked by the ReLU) and of its products
/// with the normalised input: `(∂β, ∂γ)` of these images.
pub(super) fn grad_sums(g: &FlexTensor, st: &NormSaved) -> Vec<(f64, f64)> {
    let lay = Layout::of(st.x.layout().shape());
    let (xs, gs) = (values(&st.x), values(g));
    let ys = st.y.as_ref().map(values);
    lay.per_channel(|ch| {
        Arch::new().dispatch(GradSums {
            xs: &xs,
            gs: &gs,
            ys: ys.as_deref(),
            lay,
            ch,
            mean: st.mean[ch],
            inv_std: st.inv_std[ch],
        })
    })
}

/// `γ`'s and `β`'s gradients from [`grad_sums`].
pub(super) fn param_grads(sums: &[(f64, f64)]) -> (FlexTensor, FlexTensor) {
    let c = Shape::new([sums.len()]);
    let dgamma = sums.iter().map(|&(_, v)| v as f32).collect();
    let dbeta = sums.iter().map(|&(v, _)| v as f32).collect();
    (tensor(dgamma, c.clone()), tensor(dbeta, c))
}

/// The input's gradient of [`backward`], from the sums of [`grad_sums`] over the `count`
/// values of each channel in the batch (of the whole batch, for a shard of it).
pub(super) fn input_grad(
    g: &FlexTensor,
    st: &NormSaved,
    sums: &[(f64, f64)],
    count: usize,
) -> FlexTensor {
    let shape = st.x.layout().shape().clone();
    let lay = Layout::of(&shape);
    let (xs, gs) = (values(&st.x), values(g));
    let ys = st.y.as_ref().map(values);
    let n = count.max(1) as f64;
    let dx = lay.planes(|p, ch, plane| {
        let at = p * lay.s;
        Arch::new().dispatch(InputGrad {
            x: &xs[at..][..lay.s],
            g: &gs[at..][..lay.s],
            y: ys.as_deref().map(|y| &y[at..][..lay.s]),
            mean: st.mean[ch],
            inv_std: st.inv_std[ch],
            scale: st.gamma[ch] * st.inv_std[ch],
            mean_g: (sums[ch].0 / n) as f32,
            mean_gx: (sums[ch].1 / n) as f32,
            plane,
        })
    });
    tensor(dx, shape)
}

// The passes below are `WithSimd` operations rather than closures: dispatched by pulp, their
// loops compile for the CPU's widest vectors (AVX-512 where present), where a closure's body
// compiles for the baseline x86-64. Each keeps the scalar order of operations: the sums of a
// channel go to lane `k % LANES` for value `k` of each plane, and products and sums stay
// separate operations (no fused multiply-add), so the results have the same bits.

/// The mean of channel `ch` of `xs`, from `n` values, and the sum of their squared
/// deviations from it.
struct ChannelStats<'a> {
    xs: &'a [f32],
    lay: Layout,
    ch: usize,
    n: f64,
}

impl WithSimd for ChannelStats<'_> {
    type Output = (f64, f64);

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) -> (f64, f64) {
        let ChannelStats { xs, lay, ch, n } = self;
        let mut acc = [0f64; LANES];
        for plane in lay.channel(xs, ch) {
            add_lanes(&mut acc, plane, |v| v as f64);
        }
        let mean = total(acc) / n;
        let mut acc = [0f64; LANES];
        for plane in lay.channel(xs, ch) {
            add_lanes(&mut acc, plane, |v| (v as f64 - mean) * (v as f64 - mean));
        }
        (mean, total(acc))
    }
}

/// One plane of the output: `src·a + d`, then ReLU when `relu`.
struct Normalise<'a, 'b> {
    src: &'a [f32],
    a: f32,
    d: f32,
    relu: bool,
    plane: &'a mut Fill<'b>,
}

impl WithSimd for Normalise<'_, '_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        let Normalise {
            src,
            a,
            d,
            relu,
            plane,
        } = self;
        if relu {
            plane.extend(src.iter().map(|&v| (v * a + d).max(0.0)));
        } else {
            plane.extend(src.iter().map(|&v| v * a + d));
        }
    }
}

/// The incoming gradient `g` masked by the ReLU's output `y` (0 where `y` is).
#[inline(always)]
fn masked(g: f32, y: f32) -> f32 {
    if y <= 0.0 {
        0.0
    } else {
        g
    }
}

/// Adds the first `lanes` of `g` into `sg` and their products with the normalised `x`
/// (`(x − mean)·inv_std`) into `sgx`, lane by lane.
#[inline(always)]
fn add_grads(
    lanes: usize,
    (sg, sgx): (&mut [f64; LANES], &mut [f64; LANES]),
    g: &[f64; LANES],
    x: &[f32],
    (m, is): (f32, f32),
) {
    for l in 0..lanes {
        sg[l] += g[l];
        sgx[l] += g[l] * ((x[l] - m) * is) as f64;
    }
}

/// Adds one plane's incoming gradient `g` (masked by the ReLU's output `y` when `MASK`; `y`
/// is not read otherwise) and its products with the normalised `x` into `sums`, value `k` into
/// lane `k % LANES`.
#[inline(always)]
fn add_plane<const MASK: bool>(
    (sg, sgx): &mut ([f64; LANES], [f64; LANES]),
    x: &[f32],
    g: &[f32],
    y: &[f32],
    at: (f32, f32),
) {
    let mut gm = [0f64; LANES];
    let (xc, gc, yc) = (
        x.chunks_exact(LANES),
        g.chunks_exact(LANES),
        y.chunks_exact(LANES),
    );
    let (xr, gr, yr) = (xc.remainder(), gc.remainder(), yc.remainder());
    let gradient = |g: f32, y: f32| if MASK { masked(g, y) } else { g } as f64;
    for ((x, g), y) in xc.zip(gc).zip(yc) {
        for l in 0..LANES {
            gm[l] = gradient(g[l], y[l]);
        }
        add_grads(LANES, (sg, sgx), &gm, x, at);
    }
    for l in 0..xr.len() {
        gm[l] = gradient(gr[l], yr[l]);
    }
    add_grads(xr.len(), (sg, sgx), &gm, xr, at);
}

/// The sums over channel `ch` of the (masked) incoming gradient and of its products with the
/// normalised input: `∂β` and `∂γ`.
struct GradSums<'a> {
    xs: &'a [f32],
    gs: &'a [f32],
    ys: Option<&'a [f32]>,
    lay: Layout,
    ch: usize,
    mean: f32,
    inv_std: f32,
}

impl WithSimd for GradSums<'_> {
    type Output = (f64, f64);

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) -> (f64, f64) {
        let GradSums {
            xs,
            gs,
            ys,
            lay,
            ch,
            mean: m,
            inv_std: is,
        } = self;
        let mut sums = ([0f64; LANES], [0f64; LANES]);
        for i in 0..lay.b {
            let at = (i * lay.c + ch) * lay.s;
            let (x, g) = (&xs[at..][..lay.s], &gs[at..][..lay.s]);
            match ys {
                Some(ys) => add_plane::<true>(&mut sums, x, g, &ys[at..][..lay.s], (m, is)),
                None => add_plane::<false>(&mut sums, x, g, g, (m, is)),
            }
        }
        let (sg, sgx) = sums;
        (total(sg), total(sgx))
    }
}

/// One plane of the input's gradient: `γ/√(var + ε) · (g − mean(g) − x̂·mean(g·x̂))`, with `g`
/// masked by the ReLU's output `y` when there is one.
struct InputGrad<'a, 'b> {
    x: &'a [f32],
    g: &'a [f32],
    y: Option<&'a [f32]>,
    mean: f32,
    inv_std: f32,
    scale: f32,
    mean_g: f32,
    mean_gx: f32,
    plane: &'a mut Fill<'b>,
}

impl WithSimd for InputGrad<'_, '_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        let InputGrad {
            x,
            g,
            y,
            mean: m,
            inv_std: is,
            scale,
            mean_g: mg,
            mean_gx: mgx,
            plane,
        } = self;
        let grad = |gv: f32, x: f32| scale * (gv - mg - (x - m) * is * mgx);
        match y {
            Some(y) => {
                plane.extend(
                    g.iter()
                        .zip(x)
                        .zip(y)
                        .map(|((&gv, &x), &y)| grad(masked(gv, y), x)),
                );
            }
            None => {
                plane.extend(g.iter().zip(x).map(|(&gv, &x)| grad(gv, x)));
            }
        }
    }
}
