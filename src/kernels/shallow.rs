//! Products with a shallow depth (at most [`MAX_DEPTH`]), with what follows them done as each
//! output is stored: a linear layer out of a narrow code (`[n, 8]·[8, 392]` in the mlp's
//! decoder) with its bias and ReLU, and a linear layer's input gradient into a narrow code
//! (`[n, 8]·[8, 392]` in its encoder) with the ReLU's mask and the bias gradient of the layer
//! before.
//!
//! gemm runs such a product at its full cost per output, and the bias and ReLU (or the mask
//! and the column sums) then take a pass of their own over an output 49 times the size of
//! the input: the mlp's 8 → 392 layer took 27 µs per shard of 128 images that way
//! (BENCHMARKS.md). Here a block of `w`'s columns (`k` rows by up to 4 vectors) is held in
//! registers and every row summed over it, from the row's `k` values broadcast, then stored
//! once with what follows. Every output is summed from zero over the depth in order by fused
//! multiply-adds: what gemm does for depths of 3 to 512, so the results are gemm's product
//! followed by the separate pass, to the bit. No crate in the build fuses these into a
//! product (faer and burn use gemm's kernels), hence this file.

use rayon::prelude::*;

use super::matmul::{has_avx512, View};

/// The greatest depth taken: deeper products stay with gemm and its own kernels.
const MAX_DEPTH: usize = 16;

/// The least depth taken: gemm's kernels for depths of 1 and 2 fold their outputs in another
/// order (`matmul::adds_once`).
const MIN_DEPTH: usize = 3;

/// Rows per task when the product is split over threads (outside shards).
const TASK_ROWS: usize = 64;

/// Whether [`linear`] computes `x·w`: AVX-512, a depth from [`MIN_DEPTH`] to [`MAX_DEPTH`],
/// two rows or more (gemm's one-row kernel folds the bias in otherwise), at least one vector
/// of outputs, more than 16 × 16 of them (gemm sums smaller ones by dot products, in another
/// order, for some layouts), and rows of both operands contiguous.
pub(super) fn fits(x: &View<'_>, w: &View<'_>) -> bool {
    let k = x.cols();
    (MIN_DEPTH..=MAX_DEPTH).contains(&k)
        && w.rows() == k
        && x.rows() >= 2
        && w.cols() >= 16
        && x.rows() * w.cols() > 256
        && x.row_contiguous()
        && w.row_contiguous()
        && has_avx512()
}

/// `x·w`, plus `bias` (one value per column) when given, then `max(·, 0)` when `relu`, in a
/// new row-major `[x.rows, w.cols]` buffer; the operands must [`fit`](fits). On the calling
/// thread in a shard ([`super::in_task`]), split over the pool by rows otherwise; the bits do
/// not depend on the split.
pub(super) fn linear(x: View<'_>, w: View<'_>, bias: Option<&[f32]>, relu: bool) -> Vec<f32> {
    assert!(fits(&x, &w), "shallow::linear: operands it does not take");
    let (m, o) = (x.rows(), w.cols());
    assert!(
        bias.is_none_or(|b| b.len() == o),
        "shallow::linear: bias size differs from the output width"
    );
    let len = m.checked_mul(o).expect("shallow::linear: output too large");
    let mut out: Vec<f32> = Vec::with_capacity(len);
    let task = |r0: usize, rows: &mut [std::mem::MaybeUninit<f32>]| {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `fits` holds (checked above): the CPU has AVX-512F, both operands have
        // contiguous rows and `w` has `x.cols` rows; `rows` holds whole output rows from row
        // `r0`, inside `x`'s rows; `bias` has `o` values.
        unsafe {
            avx512::rows(
                rows.as_mut_ptr().cast(),
                rows.len() / o,
                r0,
                x,
                w,
                avx512::Then::Bias(bias, relu),
            )
        };
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (r0, rows, relu);
    };
    let spare = &mut out.spare_capacity_mut()[..len];
    if super::in_task() || m <= TASK_ROWS {
        task(0, spare);
    } else {
        spare
            .par_chunks_mut(TASK_ROWS * o)
            .enumerate()
            .for_each(|(i, rows)| task(i * TASK_ROWS, rows));
    }
    // SAFETY: the tasks wrote every output row (`avx512::rows` stores each value of its rows).
    unsafe { out.set_len(len) };
    out
}

/// `x·wᵀ` (`w` given as `[o, k]`, in any layout) followed by the ReLU's backward pass from
/// its output `y` (`[x.rows, o]`: a value kept where `y` is not ≤ 0, NaN included, zero
/// elsewhere) and the result's column sums in two halves of the rows: the bits of gemm's
/// product then `flex::relu_mask_and_bias_grad`. `None` where the operands do not
/// [`fit`](fits) (with `w` transposed) or `y` has another size. On the calling thread.
pub(super) fn masked(x: View<'_>, w: View<'_>, y: &[f32]) -> Option<(Vec<f32>, Vec<f32>)> {
    let (m, k, o) = (x.rows(), x.cols(), w.rows());
    if w.cols() != k
        || y.len() != m * o
        || !(MIN_DEPTH..=MAX_DEPTH).contains(&k)
        || !w.row_contiguous()
    {
        return None;
    }
    // `wᵀ` made contiguous: `k · o` values (3,136 for the mlp's 392 → 8 layer).
    let mut wt = vec![0f32; k * o];
    for c in 0..o {
        for (p, &v) in w.row(c).iter().enumerate() {
            wt[p * o + c] = v;
        }
    }
    let wt = View::dense(&wt, k, o);
    if !fits(&x, &wt) {
        return None;
    }
    let mut out: Vec<f32> = Vec::with_capacity(m * o);
    let mut halves = [vec![0f32; o], vec![0f32; o]];
    let half = super::live::first_half(m);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `fits` holds (checked above): the CPU has AVX-512F, both operands have
    // contiguous rows and `wt` has `k` rows; the buffer has room for the `m · o` values; `y`
    // has `m · o` values and each half's sums `o`.
    unsafe {
        let [first, second] = &mut halves;
        avx512::rows(
            out.as_mut_ptr(),
            m,
            0,
            x,
            wt,
            avx512::Then::Mask {
                y,
                sums: [first.as_mut_ptr(), second.as_mut_ptr()],
                half,
            },
        );
    }
    // SAFETY: `rows` stored every value of the `m` rows.
    unsafe { out.set_len(m * o) };
    Some((out, super::live::add_halves(halves, m)))
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::View;

    const LANES: usize = 16;

    /// What follows the product as each value is stored.
    #[derive(Clone, Copy)]
    pub(super) enum Then<'a> {
        /// The bias added when given, then the ReLU when asked.
        Bias(Option<&'a [f32]>, bool),
        /// The ReLU's backward pass from its output `y` (the product's shape), the values
        /// then added to the column sums of their half of the rows: `sums[0]` for the rows
        /// before `half`, `sums[1]` after.
        Mask {
            y: &'a [f32],
            sums: [*mut f32; 2],
            half: usize,
        },
    }

    /// Output rows `r0 .. r0 + rows` of [`super::linear`] or [`super::masked`], stored (never
    /// read) at `out`.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `x` and `w` have contiguous rows, `w` has `x.cols()` rows and at
    /// least one; `r0 + rows ≤ x.rows()`; a bias has `w.cols()` values, a mask's `y` holds the
    /// rows from `r0` of `w.cols()` values and `sums` point to `w.cols()` values each; `out`
    /// is valid for writes of `rows · w.cols()` values.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn rows(
        out: *mut f32,
        rows: usize,
        r0: usize,
        x: View<'_>,
        w: View<'_>,
        then: Then<'_>,
    ) {
        let (k, o) = (x.cols(), w.cols());
        assert!(
            w.rows() == k
                && r0 + rows <= x.rows()
                && match then {
                    Then::Bias(bias, _) => bias.is_none_or(|b| b.len() == o),
                    Then::Mask { y, .. } => y.len() >= (r0 + rows) * o,
                },
            "shallow: a block outside its operands"
        );
        let (xf, ldx) = x.rows_raw();
        let (wf, ldw) = w.rows_raw();
        // The depth as a constant, so that the block of `w` stays in registers: `K` rows by
        // `V` vectors, `V` sums and one broadcast within AVX-512's 32 registers.
        macro_rules! by_depth {
            ($($k:literal => $v:literal),*) => {
                match k {
                    // SAFETY (each arm): this function's contract, with `K == k`.
                    $($k => unsafe { block::<$k, $v>(out, rows, r0, (xf, ldx), (wf, ldw), o, then) },)*
                    _ => unreachable!("shallow: a depth outside 3..=16"),
                }
            };
        }
        by_depth!(3 => 4, 4 => 4, 5 => 4, 6 => 3, 7 => 3, 8 => 3, 9 => 3, 10 => 2, 11 => 2,
            12 => 2, 13 => 2, 14 => 2, 15 => 1, 16 => 1);
    }

    /// [`rows`] for a depth of `K`, `V` vectors of columns at a time: each block of `w`'s
    /// columns loaded once into registers, then every row summed over it, row by row.
    ///
    /// # Safety
    /// As [`rows`]; `x`'s rows (from `xf`, `ldx` apart) hold `K` values, `w`'s (from `wf`)
    /// `o`, and `w` has `K` rows.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn block<const K: usize, const V: usize>(
        out: *mut f32,
        rows: usize,
        r0: usize,
        (xf, ldx): (*const f32, usize),
        (wf, ldw): (*const f32, usize),
        o: usize,
        then: Then<'_>,
    ) {
        let zero = _mm512_setzero_ps();
        for j in (0..o).step_by(V * LANES) {
            let masks: [u16; V] = std::array::from_fn(|t| {
                let start = (j + t * LANES).min(o);
                ((1u32 << (o - start).min(LANES)) - 1) as u16
            });
            // SAFETY (the loads of `w`, the bias and the sums): rows of `o` values, of which
            // the masks' lanes (before column `o`).
            let load = |p: *const f32, t: usize| unsafe {
                _mm512_maskz_loadu_ps(masks[t], p.wrapping_add(j + t * LANES))
            };
            let wv: [[__m512; V]; K] =
                std::array::from_fn(|p| std::array::from_fn(|t| load(wf.wrapping_add(p * ldw), t)));
            let bias: [__m512; V] = match then {
                Then::Bias(Some(b), _) => std::array::from_fn(|t| load(b.as_ptr(), t)),
                _ => [zero; V],
            };
            // The column sums of the rows' half, in registers (a mask's).
            let half_of = |r: usize| match then {
                Then::Mask { sums, half, .. } => Some(sums[usize::from(r >= half)]),
                Then::Bias(..) => None,
            };
            let mut sum_at = half_of(r0);
            let mut sum: [__m512; V] = match sum_at {
                Some(p) => std::array::from_fn(|t| load(p, t)),
                None => [zero; V],
            };
            for i in 0..rows {
                let r = r0 + i;
                let here = half_of(r);
                if here != sum_at {
                    if let Some(p) = sum_at {
                        for (t, &s) in sum.iter().enumerate() {
                            // SAFETY: the half's sums, the lanes loaded.
                            unsafe {
                                _mm512_mask_storeu_ps(p.wrapping_add(j + t * LANES), masks[t], s)
                            };
                        }
                    }
                    sum_at = here;
                    if let Some(p) = sum_at {
                        sum = std::array::from_fn(|t| load(p, t));
                    }
                }
                // SAFETY: row `r < x.rows()`, whose `K` values start there.
                let xr = unsafe { xf.add(r * ldx) };
                let mut acc = [zero; V];
                for (p, wv) in wv.iter().enumerate() {
                    // SAFETY: `p < K`, inside the row.
                    let a = _mm512_set1_ps(unsafe { *xr.add(p) });
                    for (s, &w) in acc.iter_mut().zip(wv) {
                        *s = _mm512_fmadd_ps(a, w, *s);
                    }
                }
                let dst = out.wrapping_add(i * o);
                for (t, &s) in acc.iter().enumerate() {
                    let v = match then {
                        Then::Bias(b, relu) => {
                            let v = if b.is_some() {
                                _mm512_add_ps(s, bias[t])
                            } else {
                                s
                            };
                            // `max(v, 0)`: 0 for a NaN or either zero, as `f32::max(v, 0.0)`.
                            if relu {
                                _mm512_max_ps(v, zero)
                            } else {
                                v
                            }
                        }
                        Then::Mask { y, .. } => {
                            let yv = load(y.as_ptr().wrapping_add(r * o), t);
                            // Kept where `y` is not ≤ 0 (a NaN is kept), as the mask.
                            let keep = _mm512_mask_cmp_ps_mask::<_CMP_NLE_UQ>(masks[t], yv, zero);
                            let v = _mm512_maskz_mov_ps(keep, s);
                            sum[t] = _mm512_add_ps(sum[t], v);
                            v
                        }
                    };
                    // SAFETY: output row `i < rows`, lanes before column `o`.
                    unsafe { _mm512_mask_storeu_ps(dst.wrapping_add(j + t * LANES), masks[t], v) };
                }
            }
            if let Some(p) = sum_at {
                for (t, &s) in sum.iter().enumerate() {
                    // SAFETY: the half's sums, the lanes loaded.
                    unsafe { _mm512_mask_storeu_ps(p.wrapping_add(j + t * LANES), masks[t], s) };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|i| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                match i % 11 {
                    // Zeros of both signs among the inputs.
                    3 => 0.0,
                    7 => -0.0,
                    _ => (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0,
                }
            })
            .collect()
    }

    #[test]
    fn masked_products_give_the_bits_of_gemm_then_the_mask_and_sums() {
        use burn::tensor::Shape;
        if !has_avx512() {
            return;
        }
        use super::super::flex::{relu_mask_and_bias_grad, tensor, values as of};
        for &(m, k, o) in &[
            (1, 3, 16),
            (2, 8, 17),
            (7, 8, 40),
            (5, 8, 40),
            (128, 8, 392),
            (9, 16, 65),
        ] {
            let x = values(m * k, 4 + k as u32);
            // `w` stored `[o, k]`, as a linear layer's weight into the narrow side.
            let w = values(o * k, 5 + o as u32);
            let mut y = values(m * o, 6);
            y[1] = f32::NAN;
            let (xv, wv) = (View::dense(&x, m, k), View::dense(&w, o, k).t());
            let product = super::super::matmul::matmul_new(xv, wv);
            let (want, want_db) = relu_mask_and_bias_grad(
                tensor(product, Shape::new([m, o])),
                Some(&tensor(y.clone(), Shape::new([m, o]))),
            );
            let Some((got, db)) = masked(xv, View::dense(&w, o, k), &y) else {
                // Small products are left to gemm, whose kernels for them sum in other orders.
                assert!(m * o <= 256, "{m}×{k}×{o} not taken");
                continue;
            };
            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&of(&want)), "{m}×{k}×{o}");
            assert_eq!(bits(&db), bits(&want_db), "{m}×{k}×{o}, sums");
        }
    }

    #[test]
    fn shallow_products_give_the_bits_of_gemm_and_the_bias_pass() {
        if !has_avx512() {
            return;
        }
        // Depths across the range, widths around one and four vectors and past them, rows
        // over one task (64) on the pool and on one thread as in a shard.
        for &(m, k, o) in &[
            (2, 3, 160),
            (17, 8, 17),
            (130, 8, 392),
            (70, 16, 64),
            (9, 5, 65),
        ] {
            let x = values(m * k, 1 + k as u32);
            let w = values(k * o, 2 + o as u32);
            let mut bias = values(o, 3);
            bias[0] = -0.0;
            let (xv, wv) = (View::dense(&x, m, k), View::dense(&w, k, o));
            // gemm alone (the products of this file are not in `matmul`'s dispatch).
            let product = super::super::matmul::matmul_new(xv, wv);
            for relu in [false, true] {
                for with_bias in [false, true] {
                    let want: Vec<u32> = product
                        .chunks_exact(o)
                        .flat_map(|row| row.iter().zip(&bias))
                        .map(|(&s, &b)| {
                            let s = if with_bias { s + b } else { s };
                            (if relu { s.max(0.0) } else { s }).to_bits()
                        })
                        .collect();
                    let b = with_bias.then_some(&bias[..]);
                    let pooled = linear(xv, wv, b, relu);
                    let alone = rayon::ThreadPoolBuilder::new()
                        .num_threads(1)
                        .build()
                        .unwrap()
                        .install(|| linear(xv, wv, b, relu));
                    for got in [&pooled, &alone] {
                        let got: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
                        assert_eq!(got, want, "{m}×{k}×{o} bias {with_bias} relu {relu}");
                    }
                }
            }
        }
    }
}
