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
//! forward product keeps every column: gemm would need the weights' live rows copied, which
//! costs about what leaving them out saves.

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
