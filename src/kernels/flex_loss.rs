//! The fused loss on flex tensors: the loss of every logit against its target and its
//! gradient in one pass (sigmoid + MSE vectorised with `pulp`).

use std::borrow::Cow;
use std::mem::MaybeUninit;

use burn::backend::flex::FlexTensor;
use pulp::{Arch, Simd, WithSimd};
use rayon::prelude::*;

use super::flex::{tensor, values, BLOCK};
use super::LossKind;

/// The loss of one element and its derivative with respect to the logit.
#[inline]
fn loss_and_grad(kind: LossKind, x: f32, t: f32) -> (f32, f32) {
    match kind {
        LossKind::SigmoidMse => {
            let a = 1.0 / (1.0 + (-x).exp());
            let d = a - t;
            (d * d, 2.0 * d * a * (1.0 - a))
        }
        LossKind::TanhMse => {
            let a = x.tanh();
            let d = a - t;
            (d * d, 2.0 * d * (1.0 - a * a))
        }
        LossKind::Bce => {
            // max(x, 0) − x·t + log(1 + exp(−|x|)), which never overflows (PyTorch's form);
            // its derivative is sigmoid(x) − t.
            let e = (-x.abs()).exp();
            let l = x.max(0.0) - x * t + e.ln_1p();
            let s = if x >= 0.0 {
                1.0 / (1.0 + e)
            } else {
                e / (1.0 + e)
            };
            (l, s - t)
        }
    }
}

/// `e^x`, within about 2 ulp for |x| ≤ 87 (clamped there): Cephes' `expf` (round `x/ln 2`
/// to an integer `n`, a degree-7 polynomial for `e^r` on the remainder, `2^n` from the
/// exponent bits). Plain arithmetic without a float-to-int conversion, so that loops calling
/// it vectorise, which libm's `expf` calls do not: sigmoid's `exp` was the costliest part of
/// the loss pass.
#[inline(always)]
pub(crate) fn exp_fast(x: f32) -> f32 {
    // 1.5·2²³: adding it rounds to an integer, held in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 87.0);
    let shifted = x * std::f32::consts::LOG2_E + MAGIC;
    let n = shifted - MAGIC;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 0.166_666_65)
        * r
        + 0.5;
    let e = p * r * r + r + 1.0;
    // 2ⁿ: n + 127 in the exponent field (|n| ≤ 126 after the clamp).
    let two_n = f32::from_bits(
        shifted
            .to_bits()
            .wrapping_sub(MAGIC.to_bits())
            .wrapping_add(127)
            << 23,
    );
    e * two_n
}

/// Elements per partial sum of the loss: summed in 16 `f32` lanes, then added in `f64`.
const LANE_SUM: usize = 256;

/// One block of the sigmoid + squared-error loss pass: the sum of `(σ(x) − t)²` and, when
/// `g` is given, `g = (scale · 2(σ(x) − t)·σ(x)(1 − σ(x))) · post`. A [`WithSimd`] operation so that
/// pulp compiles it for the CPU's widest vectors (chosen at run time).
struct SigmoidMse<'a> {
    x: &'a [f32],
    t: &'a [f32],
    g: Option<&'a mut [MaybeUninit<f32>]>,
    scale: f32,
    post: f32,
    /// A bias to add to each logit first: one value per column, and the column of `x[0]`.
    bias: Option<(&'a [f32], usize)>,
}

/// The column after `col` + `step` in rows of `o` columns.
#[inline(always)]
fn next_column(col: usize, step: usize, o: usize) -> usize {
    let c = col + step;
    if c < o {
        c
    } else if c - o < o {
        c - o
    } else {
        c % o
    }
}

impl WithSimd for SigmoidMse<'_> {
    type Output = f64;

    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) -> f64 {
        #[inline(always)]
        fn one(x: f32, t: f32, scale: f32, post: f32) -> (f32, f32) {
            let a = 1.0 / (1.0 + exp_fast(-x));
            let d = a - t;
            (d * d, 2.0 * d * a * (1.0 - a) * scale * post)
        }
        let SigmoidMse {
            x,
            t,
            mut g,
            scale,
            post,
            bias,
        } = self;
        // The column of the next logit, for the bias.
        let (b, o, mut col) = match bias {
            Some((b, col)) => (b, b.len(), col),
            None => (&[][..], 1, 0),
        };
        let mut total = 0f64;
        for (i, (x, t)) in x.chunks(LANE_SUM).zip(t.chunks(LANE_SUM)).enumerate() {
            let mut lanes = [0f32; 16];
            let mut g = g
                .as_deref_mut()
                .map(|g| &mut g[i * LANE_SUM..i * LANE_SUM + x.len()]);
            let (x16, t16) = (x.chunks_exact(16), t.chunks_exact(16));
            let (xr, tr) = (x16.remainder(), t16.remainder());
            for (k, (x, t)) in x16.zip(t16).enumerate() {
                let mut x: [f32; 16] = std::array::from_fn(|l| x[l]);
                if bias.is_some() {
                    if col + 16 <= o {
                        for (x, &b) in x.iter_mut().zip(&b[col..col + 16]) {
                            *x += b;
                        }
                    } else {
                        for (l, x) in x.iter_mut().enumerate() {
                            *x += b[(col + l) % o];
                        }
                    }
                    col = next_column(col, 16, o);
                }
                let mut d = [0f32; 16];
                for l in 0..16 {
                    let (v, dl) = one(x[l], t[l], scale, post);
                    lanes[l] += v;
                    d[l] = dl;
                }
                if let Some(g) = g.as_deref_mut() {
                    for (g, d) in g[k * 16..k * 16 + 16].iter_mut().zip(d) {
                        g.write(d);
                    }
                }
            }
            let rest = x.len() - xr.len();
            for (k, (&x, &t)) in xr.iter().zip(tr).enumerate() {
                let x = match bias {
                    Some(_) => {
                        let x = x + b[col];
                        col = next_column(col, 1, o);
                        x
                    }
                    None => x,
                };
                let (v, d) = one(x, t, scale, post);
                lanes[0] += v;
                if let Some(g) = g.as_deref_mut() {
                    g[rest + k].write(d);
                }
            }
            total += lanes.iter().map(|&v| v as f64).sum::<f64>();
        }
        total
    }
}

/// The sigmoid + squared-error loss (the default loss of every sigmoid preset) over blocks
/// of [`BLOCK`] elements: each block's sum (see [`SigmoidMse`]), and `grad` written when it is
/// not empty; `bias` (one value per column) added to each logit first when given. The result
/// does not depend on the thread count.
fn sigmoid_mse_blocks(
    x: &[f32],
    t: &[f32],
    grad: &mut [MaybeUninit<f32>],
    (scale, post): (f32, f32),
    bias: Option<&[f32]>,
) -> Vec<f64> {
    let arch = Arch::new();
    let op = |i: usize, x, t, g| SigmoidMse {
        x,
        t,
        g,
        scale,
        post,
        bias: bias.map(|b| (b, (i * BLOCK) % b.len().max(1))),
    };
    if grad.is_empty() {
        x.par_chunks(BLOCK)
            .zip(t.par_chunks(BLOCK))
            .enumerate()
            .map(|(i, (x, t))| arch.dispatch(op(i, x, t, None)))
            .collect()
    } else {
        x.par_chunks(BLOCK)
            .zip(t.par_chunks(BLOCK))
            .zip(grad.par_chunks_mut(BLOCK))
            .enumerate()
            .map(|(i, ((x, t), g))| arch.dispatch(op(i, x, t, Some(g))))
            .collect()
    }
}

/// `x + bias`, `bias` one value per column and `first` the index of `x[0]` in the rows (`x`
/// itself without a bias).
fn with_bias<'x>(x: &'x [f32], bias: Option<&[f32]>, first: usize) -> Cow<'x, [f32]> {
    let Some(b) = bias else {
        return Cow::Borrowed(x);
    };
    let o = b.len().max(1);
    let mut col = first % o;
    x.iter()
        .map(|&x| {
            let v = x + b[col];
            col = next_column(col, 1, o);
            v
        })
        .collect()
}

/// `scale · Σ loss` and, when `grad_times` is given, `(scale · ∂loss/∂logit) · grad_times` per
/// element (a scalar loss's incoming gradient, applied as the graph's backward pass applies
/// it, in the same pass). Partial sums are taken per block in f64 and added in block order,
/// so the result does not depend on the thread count.
pub(super) fn recon_loss_and_grad(
    logits: &FlexTensor,
    target: &FlexTensor,
    kind: LossKind,
    scale: f32,
    grad_times: Option<f32>,
) -> (f32, Option<FlexTensor>) {
    biased_loss_and_grad((logits, None), target, kind, scale, grad_times)
}

/// [`recon_loss_and_grad`] of `logits + bias` (`bias` one value per column of the logits'
/// rows, added to each logit as it is read: what a linear layer that left its bias out gives,
/// with the bits of its output with the bias, [`super::flex::linear_logits`]).
pub(super) fn biased_loss_and_grad(
    (logits, bias): (&FlexTensor, Option<&[f32]>),
    target: &FlexTensor,
    kind: LossKind,
    scale: f32,
    grad_times: Option<f32>,
) -> (f32, Option<FlexTensor>) {
    let (with_grad, post) = (grad_times.is_some(), grad_times.unwrap_or(1.0));
    let x = values(logits);
    let t = values(target);
    assert_eq!(
        logits.layout().shape(),
        target.layout().shape(),
        "fused_recon_loss: logits and target differ in shape"
    );
    if let Some(b) = bias {
        let o = *logits.layout().shape().as_slice().last().unwrap_or(&0);
        assert_eq!(
            b.len(),
            o,
            "fused_recon_loss: bias size differs from the rows'"
        );
    }
    let biased = |i, x| with_bias(x, bias, i * BLOCK);
    // Not zero-filled first: every value is written below (a pass over 400 KB per mlp shard
    // saved).
    let mut grad: Vec<f32> = Vec::with_capacity(if with_grad { x.len() } else { 0 });
    let sums: Vec<f64> = if kind == LossKind::SigmoidMse {
        let g = &mut grad.spare_capacity_mut()[..if with_grad { x.len() } else { 0 }];
        sigmoid_mse_blocks(&x, &t, g, (scale, post), bias)
    } else if with_grad {
        x.par_chunks(BLOCK)
            .zip(t.par_chunks(BLOCK))
            .zip(grad.spare_capacity_mut()[..x.len()].par_chunks_mut(BLOCK))
            .enumerate()
            .map(|(i, ((x, t), g))| {
                let mut s = 0f64;
                for ((&x, &t), g) in biased(i, x).iter().zip(t).zip(g.iter_mut()) {
                    let (l, d) = loss_and_grad(kind, x, t);
                    s += l as f64;
                    g.write(d * scale * post);
                }
                s
            })
            .collect()
    } else {
        x.par_chunks(BLOCK)
            .zip(t.par_chunks(BLOCK))
            .enumerate()
            .map(|(i, (x, t))| {
                biased(i, x)
                    .iter()
                    .zip(t)
                    .map(|(&x, &t)| loss_and_grad(kind, x, t).0 as f64)
                    .sum::<f64>()
            })
            .collect()
    };
    let loss = (sums.iter().sum::<f64>() * scale as f64) as f32;
    if with_grad {
        // SAFETY: the passes above wrote each of the `x.len()` values: every block of
        // `BLOCK`, each `LANE_SUM` part of it in 16s and one by one after the last 16.
        unsafe { grad.set_len(x.len()) };
    }
    let grad = with_grad.then(|| tensor(grad, logits.layout().shape().clone()));
    (loss, grad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Shape;

    /// A bias left to the loss gives the loss and gradient of the logits with the bias added
    /// first, to the bit, for every kind of loss, rows of any width (shorter than a vector,
    /// not a multiple of one, or cut by blocks of the pass) and with or without a gradient.
    #[test]
    fn a_bias_left_to_the_loss_gives_the_biased_logits_loss() {
        let kinds = [LossKind::SigmoidMse, LossKind::TanhMse, LossKind::Bce];
        for (rows, o) in [(3, 5), (7, 16), (9, 37), (40, 784), (25, 1000)] {
            let n = rows * o;
            let logits: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 9.0)
                .collect();
            let target: Vec<f32> = (0..n).map(|i| (i * 13 % 17) as f32 / 16.0).collect();
            let bias: Vec<f32> = (0..o).map(|j| (j % 11) as f32 / 3.0 - 1.7).collect();
            let added: Vec<f32> = (0..n).map(|i| logits[i] + bias[i % o]).collect();
            let shape = Shape::new([rows, o]);
            let (x, xb, t) = (
                tensor(logits, shape.clone()),
                tensor(added, shape.clone()),
                tensor(target, shape),
            );
            for kind in kinds {
                for grad_times in [None, Some(0.5)] {
                    let (want, want_g) = recon_loss_and_grad(&xb, &t, kind, 0.3, grad_times);
                    let (got, got_g) =
                        biased_loss_and_grad((&x, Some(&bias)), &t, kind, 0.3, grad_times);
                    assert_eq!(got.to_bits(), want.to_bits(), "{kind:?} {rows}×{o}");
                    let bits = |g: Option<FlexTensor>| {
                        g.map(|g| values(&g).iter().map(|v| v.to_bits()).collect::<Vec<_>>())
                    };
                    assert_eq!(bits(got_g), bits(want_g), "{kind:?} {rows}×{o} gradient");
                }
            }
        }
    }

    #[test]
    fn exp_fast_is_within_a_few_ulp_of_libm() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x <= 87.0 {
            let (got, want) = (exp_fast(x) as f64, (x as f64).exp());
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        // 2⁻²³ ≈ 1.19e-7 is one ulp at the top of a binade.
        assert!(worst < 3.6e-7, "worst relative error {worst:e}");
        // Clamped outside ±87: finite, and the sigmoid built on it saturates.
        assert!(exp_fast(1e4).is_finite() && exp_fast(-1e4) > 0.0);
        assert_eq!(1.0 / (1.0 + exp_fast(-1e4)), 1.0);
    }
}
