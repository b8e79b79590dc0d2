//! The input gradient of a linear layer whose input is a ReLU's output, over the input's
//! live columns only: those not zero in every row of the batch (the units of the layer
//! before that some image turned on).
//!
//! The input gradient `g·wᵀ` in a dead column is never used: the ReLU's backward pass zeroes
//! it wherever its output was zero. In an mlp's decoder a sixth of the hidden units are off
//! for a whole shard of images early in training, fewer later (BENCHMARKS.md, session 35),
//! and the input gradient of the layer after them is a third of the step's arithmetic. It is
//! computed for the live columns by products of rows by rows (`super::dot`) reading the
//! weights' rows for them in place, and spread with zeros into the input's width.
//!
//! Each live column is computed by the same kernel, on the same values, as in the whole
//! product (see [`live_columns`]), so it has the same bits; the dead columns are zero. The
//! layer's forward product and weight gradient leave the dead units out too, through the
//! tiles of `super::skinny::picked`, which read the weights' live rows in place.

use super::matmul::View;

/// The least share of dead columns (1 in this many) for which the input gradient skips them:
/// below it the spread costs about what the skipped arithmetic saves.
const MIN_DEAD: usize = 10;

/// The columns of the row-major `x` (`[n, k]`) that the input gradient must keep, in order,
/// or `None` when fewer than `k / MIN_DEAD` may be left out.
///
/// A column is kept when one of its values is not zero (a NaN is kept). The last `k mod 4`
/// columns are always kept, and a few dead ones before them where needed so that the kept
/// columns before them are a multiple of 4: products of rows by rows (`super::dot`) compute
/// whole blocks of 4 columns with one kernel and the last, partial block with another, and
/// this way every kept column falls in the same kind of block as in the whole product.
pub(super) fn live_columns(x: View<'_>) -> Option<Vec<usize>> {
    let (n, k) = (x.rows(), x.cols());
    if n == 0 || k < 4 * MIN_DEAD || !x.row_contiguous() {
        return None;
    }
    // The bits of each column's values but the sign, ORed over the rows: zero exactly for a
    // column of zeros (±0). A plain loop that the compiler vectorises.
    let mut bits = vec![0u32; k];
    for r in 0..n {
        for (b, v) in bits.iter_mut().zip(x.row(r)) {
            *b |= v.to_bits() << 1;
        }
    }
    let whole = k / 4 * 4;
    let dead = bits[..whole].iter().filter(|&&b| b == 0).count();
    // Dead columns put back so that the kept ones before `whole` fill blocks of 4.
    let mut back = (whole - dead) % 4;
    back = if back == 0 { 0 } else { 4 - back };
    if (dead - back) * MIN_DEAD < k {
        return None;
    }
    let mut cols = Vec::with_capacity(k - dead + back);
    for (c, &b) in bits.iter().enumerate() {
        if b != 0 || c >= whole {
            cols.push(c);
        } else if back > 0 {
            cols.push(c);
            back -= 1;
        }
    }
    Some(cols)
}

/// The row-major `[n, k]` matrix whose columns `cols` are those of `part` (`[n, cols.len()]`)
/// and whose other columns are zero.
pub(super) fn spread_columns(part: &[f32], cols: &[usize], k: usize) -> Vec<f32> {
    let kl = cols.len();
    let n = part.len().checked_div(kl).unwrap_or(0);
    let mut out = vec![0f32; n * k];
    for (row, src) in out.chunks_exact_mut(k).zip(part.chunks_exact(kl)) {
        for (&c, &v) in cols.iter().zip(src) {
            row[c] = v;
        }
    }
    out
}

/// Rows of the first half of `rows`, as the bias gradient sums them
/// (`flex::relu_mask_and_bias_grad`: the rows in two halves, each summed from zero, then the
/// halves added to zero in order).
pub(super) fn first_half(rows: usize) -> usize {
    rows.div_ceil(2).max(1)
}

/// [`spread_columns`], then the ReLU's backward pass from its output `y` (`[n, k]`: a value
/// is kept where `y` is not ≤ 0, NaN included, zero elsewhere) and the result's column sums
/// (the bias gradient of the layer whose output `y` is): both as
/// `flex::relu_mask_and_bias_grad` computes them from the spread matrix, in one pass that
/// writes each row once. Returns the masked matrix and the sums.
pub(super) fn spread_masked(
    part: &[f32],
    cols: &[usize],
    k: usize,
    y: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let kl = cols.len();
    let n = part.len().checked_div(kl).unwrap_or(0);
    assert!(
        y.len() == n * k && part.len() == n * kl && cols.iter().all(|&c| c < k),
        "spread_masked: operands of other shapes"
    );
    #[cfg(target_arch = "x86_64")]
    if super::matmul::has_avx512() && cols.windows(2).all(|w| w[0] < w[1]) {
        // SAFETY: the CPU has AVX-512F; the shapes were checked above and `cols` increases.
        return unsafe { avx512::spread_masked(part, cols, (n, k), y) };
    }
    let mut out = spread_columns(part, cols, k);
    for (g, &y) in out.iter_mut().zip(y) {
        if y <= 0.0 {
            *g = 0.0;
        }
    }
    let mut halves = [vec![0f32; k], vec![0f32; k]];
    for (r, row) in out.chunks_exact(k).enumerate() {
        let acc = &mut halves[usize::from(r >= first_half(n))];
        for (a, &v) in acc.iter_mut().zip(row) {
            *a += v;
        }
    }
    let db = add_halves(halves, n);
    (out, db)
}

/// The column sums from the two halves' sums of `rows` rows, added to zero in order (the
/// second only where there are two halves).
pub(super) fn add_halves([first, second]: [Vec<f32>; 2], rows: usize) -> Vec<f32> {
    let mut db = vec![0f32; first.len()];
    let halves = if rows > first_half(rows) { 2 } else { 1 };
    for s in [first, second].iter().take(halves) {
        for (d, v) in db.iter_mut().zip(s) {
            *d += v;
        }
    }
    db
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    const LANES: usize = 16;

    /// [`super::spread_masked`] 16 columns at a time: each block's live values loaded from
    /// the row of `part` and expanded into their lanes, masked by `y`, stored and added to
    /// the half's sums.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `part` is `[n, cols.len()]`, `y` `[n, k]`, and `cols` increases
    /// with every entry below `k`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn spread_masked(
        part: &[f32],
        cols: &[usize],
        (n, k): (usize, usize),
        y: &[f32],
    ) -> (Vec<f32>, Vec<f32>) {
        let kl = cols.len();
        let blocks = k.div_ceil(LANES);
        // Each block's live lanes, and the lanes inside the row.
        let mut live = vec![0u16; blocks];
        for &c in cols {
            live[c / LANES] |= 1 << (c % LANES);
        }
        let inside = |b: usize| ((1u32 << (k - b * LANES).min(LANES)) - 1) as u16;
        let mut out: Vec<f32> = Vec::with_capacity(n * k);
        let mut halves = [vec![0f32; k], vec![0f32; k]];
        let dst = out.as_mut_ptr();
        for r in 0..n {
            let acc = halves[usize::from(r >= super::first_half(n))].as_mut_ptr();
            let mut src = part.as_ptr().wrapping_add(r * kl);
            let yr = y.as_ptr().wrapping_add(r * k);
            let dr = dst.wrapping_add(r * k);
            for (b, &m) in live.iter().enumerate() {
                let lanes = inside(b);
                let at = b * LANES;
                let count = m.count_ones();
                // SAFETY: the block's `count` live values are the next ones of the row of
                // `part` (its columns in increasing order); `y`'s and the output's lanes
                // before column `k` lie inside row `r`; the sums hold `k` values.
                unsafe {
                    let packed = _mm512_maskz_loadu_ps(((1u32 << count) - 1) as u16, src);
                    src = src.add(count as usize);
                    let v = _mm512_maskz_expand_ps(m, packed);
                    let yv = _mm512_maskz_loadu_ps(lanes, yr.add(at));
                    // Kept where `y` is not ≤ 0 (a NaN is kept), as the ReLU's mask.
                    let keep =
                        _mm512_mask_cmp_ps_mask::<_CMP_NLE_UQ>(lanes, yv, _mm512_setzero_ps());
                    let v = _mm512_maskz_mov_ps(keep, v);
                    _mm512_mask_storeu_ps(dr.add(at), lanes, v);
                    let a = _mm512_maskz_loadu_ps(lanes, acc.add(at));
                    _mm512_mask_storeu_ps(acc.add(at), lanes, _mm512_add_ps(a, v));
                }
            }
        }
        // SAFETY: every row's blocks stored all `k` of its values.
        unsafe { out.set_len(n * k) };
        let db = super::add_halves(halves, n);
        (out, db)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_columns_fill_blocks_of_four_before_the_tail() {
        // 50 columns: 48 in whole blocks, 2 in the tail. Columns 3, 7, 11, … (every fourth)
        // and the tail hold values; the rest are ±0.
        let (n, k) = (3, 50);
        let mut x = vec![0f32; n * k];
        for r in 0..n {
            x[r * k + 1] = -0.0;
            for c in (3..48).step_by(4) {
                x[r * k + c] = if r == 1 { 1.5 } else { 0.0 };
            }
        }
        x[2 * k + 48] = 0.0;
        let cols = live_columns(View::dense(&x, n, k)).expect("36 of 48 columns are dead");
        // 12 live columns in the blocks: a multiple of 4, none put back; the tail kept.
        let mut want: Vec<usize> = (3..48).step_by(4).collect();
        want.extend([48, 49]);
        assert_eq!(cols, want);
        // 13 live ones: 3 dead ones put back, the first ones.
        x[5] = f32::NAN;
        let cols = live_columns(View::dense(&x, n, k)).unwrap();
        assert_eq!(cols.len(), 16 + 2);
        assert_eq!(&cols[..6], &[0, 1, 2, 3, 5, 7]);
        // Too few dead columns to skip.
        let dense = vec![1f32; n * k];
        assert_eq!(live_columns(View::dense(&dense, n, k)), None);
    }

    #[test]
    fn the_masked_spread_gives_the_bits_of_the_spread_then_the_mask_and_sums() {
        use burn::tensor::Shape;
        let values = |n: usize, seed: u32| -> Vec<f32> {
            let mut s = seed;
            (0..n)
                .map(|i| {
                    s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    match i % 13 {
                        2 => 0.0,
                        5 => -0.0,
                        9 => f32::NAN,
                        _ => (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0,
                    }
                })
                .collect()
        };
        // Rows: one, two (one per half), odd, a shard's; widths with a last block cut short.
        for &(n, k) in &[(1, 40), (2, 41), (5, 64), (128, 392)] {
            let cols: Vec<usize> = (0..k).filter(|c| c % 7 != 3).collect();
            let part: Vec<f32> = values(n * cols.len(), 1)
                .into_iter()
                .map(|v| if v.is_nan() { 0.5 } else { v })
                .collect();
            let y = values(n * k, 2);
            let spread =
                super::super::flex::tensor(spread_columns(&part, &cols, k), Shape::new([n, k]));
            let y_t = super::super::flex::tensor(y.clone(), Shape::new([n, k]));
            let (want, want_db) = super::super::flex::relu_mask_and_bias_grad(spread, Some(&y_t));
            let (got, got_db) = spread_masked(&part, &cols, k, &y);
            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&got),
                bits(&super::super::flex::values(&want)),
                "{n}×{k}"
            );
            assert_eq!(bits(&got_db), bits(&want_db), "{n}×{k}, sums");
        }
    }

    #[test]
    fn spread_columns_fill_the_rest_with_zeros() {
        let (n, k) = (4, 9);
        let cols = [1, 4, 8];
        let part: Vec<f32> = (0..n * cols.len()).map(|i| i as f32 + 1.0).collect();
        let back = spread_columns(&part, &cols, k);
        for r in 0..n {
            for c in 0..k {
                let want = match cols.iter().position(|&q| q == c) {
                    Some(q) => part[r * cols.len() + q],
                    None => 0.0,
                };
                assert_eq!(back[r * k + c], want);
            }
        }
    }
}
