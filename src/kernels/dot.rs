//! Matrix products `a·bᵀ` whose operands both run along the inner dimension, row by row: the
//! weight gradients of convolutions (`g·colsᵀ`: tens of rows by hundreds of columns, hundreds
//! to thousands deep) and a linear layer's input gradient (`g·wᵀ`).
//!
//! gemm multiplies from packed copies of its operands, laid out for a kernel that broadcasts
//! one operand and streams the other along the output's columns. For this form both copies are
//! transpositions, which cost these products about as much as their arithmetic (BENCHMARKS.md
//! has the measurements). Here each 6×4 block of the output is 24 dot products run side by
//! side along the inner dimension, straight from the operands' rows: six vectors of `a` and
//! four of `b` loaded for 24 multiply-adds, the sums in 24 registers, folded into the block's
//! results by a tree of shuffles at the end (4×4 blocks where six rows do not fit). That needs
//! AVX-512 (32 registers) and enough depth to pay for the fold ([`MIN_DEPTH`]); elsewhere the
//! caller keeps gemm. No crate in the build has this form of product without packing (faer and burn use
//! gemm's kernels), hence this file.
//!
//! Each output value is computed the same way wherever the work is cut: both block kernels
//! give an element the same bits, blocks are aligned on the output's own rows and columns
//! (multiples of 4 from 0), and only the last rows and columns, past the last whole 4×4 block,
//! take the edge kernel. So a product gives the same bits on one thread or many.

use super::matmul::{has_avx512, Out, Picked, View};

/// The least inner dimension for which [`product`] is used: below it the fold at the end of
/// each block costs more than gemm's packing saves (measured: BENCHMARKS.md).
pub(super) const MIN_DEPTH: usize = 64;

/// Rows of the output per piece of work (a task on the pool, or a step of the serial loop):
/// a multiple of 12, so that a whole task takes 6-row blocks (see `avx512::block`).
const TASK_ROWS: usize = 24;

/// Bytes of `b`'s rows one pass over the output's rows reads, so that they stay in the core's
/// second-level cache while every block of rows reuses them.
const PANEL_BYTES: usize = 1 << 19;

/// The least product (multiply-adds) split over threads when not in a shard.
const PARALLEL_MIN: usize = 1 << 20;

/// Whether [`product`] computes `a·btᵀ` on this CPU: AVX-512, rows of both operands
/// contiguous, the same depth of at least [`MIN_DEPTH`], and at least one whole 4×4 block
/// (with fewer rows or columns every value would take the edge kernel, one horizontal sum
/// each; gemm treats such thin products as matrix-vector ones).
pub(super) fn usable(a: &View<'_>, bt: &View<'_>) -> bool {
    a.cols() == bt.cols()
        && a.cols() >= MIN_DEPTH
        && a.rows() >= 4
        && bt.rows() >= 4
        && a.row_contiguous()
        && bt.row_contiguous()
        && has_avx512()
}

/// `dst ← (accumulate ? dst : 0) + a·btᵀ`, `dst` row-major `[a.rows, bt.rows]`, for operands
/// that are [`usable`]. Runs on the calling thread in a shard ([`super::in_task`]) or when
/// smaller than [`PARALLEL_MIN`], split over the pool's threads by blocks of rows and columns
/// otherwise. Without `accumulate` every
/// element of `dst` is written and none read.
///
/// # Safety
/// `usable(&a, &bt)` holds; `dst` is valid for writes of `a.rows · bt.rows` elements (and for
/// reads of as many, initialised, when `accumulate`), and aliases neither operand for the
/// call's duration.
pub(super) unsafe fn product(dst: *mut f32, a: View<'_>, bt: View<'_>, accumulate: bool) {
    // SAFETY: the caller's contract, with every row of `bt` picked in order.
    unsafe { product_of(dst, a, bt, None, accumulate) }
}

/// `a·bt[rows]ᵀ` into a new row-major `[a.rows, rows.len()]` buffer: the product with only
/// the rows `rows` of `bt` (each less than `bt.rows`), as [`product`] computes them. Column
/// `q` has the bits that column `rows[q]` of the whole product has when both fall in the same
/// kind of block: whole blocks of 4 columns from the first, the last partial one apart.
pub(super) fn product_picked(a: View<'_>, bt: View<'_>, rows: &[usize]) -> Vec<f32> {
    assert!(
        usable(&a, &bt) && rows.len() >= 4,
        "dot::product_picked: operands it does not take"
    );
    assert!(
        rows.iter().all(|&r| r < bt.rows()),
        "dot::product_picked: a row past the operand's"
    );
    let len = a.rows() * rows.len();
    let mut out: Vec<f32> = Vec::with_capacity(len);
    // SAFETY: `usable` holds and every picked row exists (asserted above); the buffer has
    // room for `len` elements, none of them read (no accumulation) and every one written
    // (see `product`), so `set_len` exposes only initialised values.
    unsafe {
        product_of(out.as_mut_ptr(), a, bt, Some(rows), false);
        out.set_len(len);
    }
    out
}

/// [`product`] over the rows `pick` of `bt` (all of them, in order, when `None`).
///
/// # Safety
/// As [`product`], with `bt.rows` replaced by `pick.len()` when picked; every picked row is
/// less than `bt.rows`.
unsafe fn product_of(
    dst: *mut f32,
    a: View<'_>,
    bt: View<'_>,
    pick: Option<&[usize]>,
    accumulate: bool,
) {
    assert!(usable(&a, &bt), "dot::product: operands it does not take");
    let (m, k) = (a.rows(), a.cols());
    let n = pick.map_or(bt.rows(), <[usize]>::len);
    // Columns per pass: `b`'s rows that fit [`PANEL_BYTES`], a multiple of 4 (block-aligned).
    let panel = (PANEL_BYTES / (4 * k)).max(4) / 4 * 4;
    let out = Out(dst);
    let pick = pick.map(Picked::of);
    let run = move |(r0, c0): (usize, usize)| {
        let rows = TASK_ROWS.min(m - r0);
        let cols = panel.min(n - c0);
        // SAFETY: the CPU has AVX-512F, and both views have contiguous rows and are not
        // empty, as `rows_raw` requires (`usable`). Rows `r0..r0 + rows` of `a` and the
        // `cols` rows of `bt` from the `c0`-th (picked or in order) exist, each `k` long from
        // the view's row start (`rows_raw`, the caller's contract on `pick`); the block
        // `[r0.., c0..]` of `dst` lies inside its `m × n` elements, which the caller lets us
        // write; tasks get disjoint blocks.
        unsafe {
            let (ap, lda) = a.rows_raw();
            let (bp, ldb) = bt.rows_raw();
            #[cfg(target_arch = "x86_64")]
            avx512::block(
                out.at(r0 * n + c0),
                n,
                (ap.add(r0 * lda), lda),
                avx512::Rows::new(bp, ldb, pick.map(Picked::first)).from(c0),
                (rows, cols, k),
                accumulate,
            );
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (out, ap, lda, bp, ldb, pick, rows, cols, accumulate);
        }
    };
    let tasks = || {
        (0..m)
            .step_by(TASK_ROWS)
            .flat_map(move |r| (0..n).step_by(panel).map(move |c| (r, c)))
    };
    if super::in_task() || m.saturating_mul(n).saturating_mul(k) < PARALLEL_MIN {
        // Column panels outermost: each panel of `b` is read from cache by every row block.
        let mut blocks: Vec<_> = tasks().collect();
        blocks.sort_by_key(|&(r, c)| (c, r));
        blocks.into_iter().for_each(run);
    } else {
        use rayon::prelude::*;
        tasks().collect::<Vec<_>>().into_par_iter().for_each(run);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    const LANES: usize = 16;

    /// How far ahead, in values, each row of `b` is prefetched (measured on the mlp's last
    /// layer: 64 and 128 gain the same, 256 less).
    const AHEAD: usize = 64;

    /// Rows of the right operand `b`: row `j` at `first + j·ld`, or at `first + pick[j]·ld`
    /// when picked.
    #[derive(Clone, Copy)]
    pub(super) struct Rows {
        first: *const f32,
        ld: usize,
        pick: Option<*const usize>,
    }

    impl Rows {
        /// The rows from `first` at stride `ld`, or those `pick` numbers.
        pub(super) fn new(first: *const f32, ld: usize, pick: Option<*const usize>) -> Self {
            Rows { first, ld, pick }
        }

        /// The rows from the `j`-th on.
        ///
        /// # Safety
        /// Row `j` exists (with `pick`, `pick[j]` may be read).
        pub(super) unsafe fn from(self, j: usize) -> Self {
            // SAFETY: the caller's contract.
            unsafe {
                match self.pick {
                    None => Rows {
                        first: self.first.add(j * self.ld),
                        ..self
                    },
                    Some(p) => Rows {
                        pick: Some(p.add(j)),
                        ..self
                    },
                }
            }
        }

        /// Row `j`'s first value.
        ///
        /// # Safety
        /// Row `j` exists.
        #[inline(always)]
        unsafe fn row(self, j: usize) -> *const f32 {
            // SAFETY: the caller's contract.
            unsafe {
                match self.pick {
                    None => self.first.add(j * self.ld),
                    Some(p) => self.first.add(*p.add(j) * self.ld),
                }
            }
        }

        /// The first `n` (at most 4) rows' first values; the others null.
        ///
        /// # Safety
        /// Rows `j < n` exist.
        #[inline(always)]
        unsafe fn four(self, n: usize) -> [*const f32; 4] {
            // SAFETY: the caller's contract.
            std::array::from_fn(|j| unsafe {
                if j < n {
                    self.row(j)
                } else {
                    std::ptr::null()
                }
            })
        }
    }

    /// `dst[i·ldd + j] ← (accumulate ? dst[i·ldd + j] : 0) + Σ_p a[i·lda + p] · b_j[p]` (`b_j`
    /// row `j` of `b`) for `i < rows`, `j < cols`, `p < k`: whole blocks from the top left (6×4 over the first
    /// multiple of 12 rows, 4×4 below), the edge kernel for the rows and columns past them.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `a` holds `rows` rows of `k` values at stride `lda`, `b` `cols`
    /// rows of `k` values; `dst` is writable (and readable, when `accumulate`) at every
    /// `i·ldd + j` above and aliases neither.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn block(
        dst: *mut f32,
        ldd: usize,
        (a, lda): (*const f32, usize),
        b: Rows,
        (rows, cols, k): (usize, usize, usize),
        accumulate: bool,
    ) {
        let (rows4, cols4) = (rows / 4 * 4, cols / 4 * 4);
        // SAFETY (all pointers and calls below): rows `i < rows` of `a`, `j < cols` of `b` and
        // elements `(i, j)` of `dst` are the ones this function was given; no pointer is formed
        // to a row or column past them.
        unsafe {
            // Rows of blocks six high over the first multiple of twelve rows, then four high:
            // both kernels give the same bits for an element, so where the cut falls does not
            // matter; six rows read each vector of `b` for 24 products instead of 16.
            let sixes = rows4 / 12 * 12;
            let mut i = 0;
            while i < rows4 {
                let high = if i < sixes { 6 } else { 4 };
                let ai = a.add(i * lda);
                for j in (0..cols4).step_by(4) {
                    let d = dst.add(i * ldd + j);
                    let bj = b.from(j).four(4);
                    if high == 6 {
                        six_by_four(d, ldd, (ai, lda), bj, k, accumulate);
                    } else {
                        four_by_four(d, ldd, (ai, lda), bj, k, accumulate);
                    }
                }
                if cols4 < cols {
                    let (d, bj) = (dst.add(i * ldd + cols4), b.from(cols4).four(cols - cols4));
                    if high == 6 {
                        edge_rows::<6>(cols - cols4, d, ldd, (ai, lda), bj, k, accumulate);
                    } else {
                        edge_rows::<4>(cols - cols4, d, ldd, (ai, lda), bj, k, accumulate);
                    }
                }
                i += high;
            }
            if rows4 < rows {
                let ai = a.add(rows4 * lda);
                for j in (0..cols).step_by(4) {
                    let d = dst.add(rows4 * ldd + j);
                    let nr = (cols - j).min(4);
                    let bj = b.from(j).four(nr);
                    match rows - rows4 {
                        1 => edge_rows::<1>(nr, d, ldd, (ai, lda), bj, k, accumulate),
                        2 => edge_rows::<2>(nr, d, ldd, (ai, lda), bj, k, accumulate),
                        _ => edge_rows::<3>(nr, d, ldd, (ai, lda), bj, k, accumulate),
                    }
                }
            }
        }
    }

    /// The lanes of the vector from `p` that a row of `k` values holds: all 16, or the first
    /// `k − p` for its last, partial vector.
    fn lanes(p: usize, k: usize) -> __mmask16 {
        if k - p >= LANES {
            !0
        } else {
            ((1u32 << (k - p)) - 1) as __mmask16
        }
    }

    /// Defines `$name`: the sums of a block of `$rows` rows of `a` by 4 of `b`, `sum[$rows·j +
    /// i]` row `i` of `a` times row `j` of `b` lane by lane, over whole vectors unmasked, then
    /// the partial last one. A macro rather than a function generic over the row count: the
    /// generic form (sums as `[[__m512; R]; 4]`) kept them on the stack (BENCHMARKS.md, session
    /// 31); written out per row count, they stay in registers.
    macro_rules! block_sums {
        ($name:ident, $rows:literal, $sums:literal) => {
            /// # Safety
            /// The CPU has AVX-512F; `a` holds the block's rows of `k` values at stride `lda`,
            /// each of `b`'s 4 pointers a row of `k` values.
            #[target_feature(enable = "avx512f")]
            #[inline(never)]
            unsafe fn $name(
                (a, lda): (*const f32, usize),
                b: [*const f32; 4],
                k: usize,
            ) -> [__m512; $sums] {
                /// The sums take lanes `m` of the vectors at `p`.
                ///
                /// # Safety
                /// Those lanes lie inside the rows of `a` and `b`.
                #[inline(always)]
                unsafe fn step(
                    sum: &mut [__m512; $sums],
                    (a, lda): (*const f32, usize),
                    b: &[*const f32; 4],
                    p: usize,
                    m: __mmask16,
                ) {
                    // SAFETY: the caller's contract.
                    unsafe {
                        let av: [__m512; $rows] =
                            std::array::from_fn(|i| _mm512_maskz_loadu_ps(m, a.add(i * lda + p)));
                        for (j, b) in b.iter().enumerate() {
                            // `b`'s row 4 lines ahead into the first-level cache: the
                            // block streams 4 rows of `b` from the second-level cache, faster
                            // than the CPU's own prefetchers bring them (BENCHMARKS.md). A
                            // prefetch never faults, so the lines past the row are harmless.
                            _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(p + AHEAD).cast::<i8>());
                            let bv = _mm512_maskz_loadu_ps(m, b.add(p));
                            for i in 0..$rows {
                                sum[$rows * j + i] = _mm512_fmadd_ps(av[i], bv, sum[$rows * j + i]);
                            }
                        }
                    }
                }
                let mut sum = [_mm512_setzero_ps(); $sums];
                let whole = k / LANES * LANES;
                // SAFETY: every load reads the lanes of `p..p + 16` that lie in `p..k`, of a
                // row that holds `k` values.
                unsafe {
                    for p in (0..whole).step_by(LANES) {
                        step(&mut sum, (a, lda), &b, p, !0);
                    }
                    if whole < k {
                        step(&mut sum, (a, lda), &b, whole, lanes(whole, k));
                    }
                }
                sum
            }
        };
    }

    block_sums!(four_sums, 4, 16);
    block_sums!(six_sums, 6, 24);

    /// One 4×4 block of the output: [`four_sums`], then [`fold`] makes the block's rows.
    ///
    /// # Safety
    /// As [`block`], for 4 rows and 4 columns.
    #[target_feature(enable = "avx512f")]
    unsafe fn four_by_four(
        dst: *mut f32,
        ldd: usize,
        a: (*const f32, usize),
        b: [*const f32; 4],
        k: usize,
        accumulate: bool,
    ) {
        // SAFETY: `block`'s contract, for these 4 rows and columns.
        unsafe {
            let sum = four_sums(a, b, k);
            store(dst, ldd, &fold(&sum), accumulate);
        }
    }

    /// One 6×4 block of the output: as [`four_by_four`] with six rows of `a` in registers, so
    /// that each vector of `b` loaded serves 6 products (24 sums and 6 + 1 operands: 31 of the
    /// 32 registers). Rows 0–3 fold as a 4×4 block, rows 4–5 as one whose last two rows are
    /// zero; a fold never adds two sums together, so every element has the bits
    /// [`four_by_four`] gives it.
    ///
    /// # Safety
    /// As [`block`], for 6 rows and 4 columns.
    #[target_feature(enable = "avx512f")]
    unsafe fn six_by_four(
        dst: *mut f32,
        ldd: usize,
        a: (*const f32, usize),
        b: [*const f32; 4],
        k: usize,
        accumulate: bool,
    ) {
        // SAFETY: `block`'s contract, for these 6 rows and 4 columns.
        unsafe {
            let sum = six_sums(a, b, k);
            let zero = _mm512_setzero_ps();
            let top: [__m512; 16] = std::array::from_fn(|e| sum[6 * (e / 4) + e % 4]);
            let low: [__m512; 16] = std::array::from_fn(|e| {
                if e % 4 < 2 {
                    sum[6 * (e / 4) + 4 + e % 4]
                } else {
                    zero
                }
            });
            store(dst, ldd, &fold(&top), accumulate);
            store(dst.add(4 * ldd), ldd, &fold(&low)[..2], accumulate);
        }
    }

    /// The sixteen sums of a 4×4 block (`sum[4j + i]`: row `i`, column `j`), each a vector of
    /// partial sums, folded into the block's four rows. Halves of 256 bits first (16 → 8
    /// vectors of two sums' 8 partial lanes), then quarters (each quarter of `q[r]` one sum's 4
    /// partial lanes: sums 4r..4r + 4), then pairs of lanes inside the quarters, twice. Lane
    /// 4q + e of the result is sum 4e + q, that is row q, column e of the block. Each step
    /// adds parts of one sum only.
    #[target_feature(enable = "avx512f")]
    fn fold(sum: &[__m512; 16]) -> [__m128; 4] {
        let h: [__m512; 8] = std::array::from_fn(|p| {
            let (x, y) = (sum[2 * p], sum[2 * p + 1]);
            _mm512_add_ps(
                _mm512_shuffle_f32x4::<0b01_00_01_00>(x, y),
                _mm512_shuffle_f32x4::<0b11_10_11_10>(x, y),
            )
        });
        let q: [__m512; 4] = std::array::from_fn(|r| {
            let (x, y) = (h[2 * r], h[2 * r + 1]);
            _mm512_add_ps(
                _mm512_shuffle_f32x4::<0b10_00_10_00>(x, y),
                _mm512_shuffle_f32x4::<0b11_01_11_01>(x, y),
            )
        });
        let pairs = |x: __m512, y: __m512| {
            _mm512_add_ps(
                _mm512_shuffle_ps::<0b10_00_10_00>(x, y),
                _mm512_shuffle_ps::<0b11_01_11_01>(x, y),
            )
        };
        let r = pairs(pairs(q[0], q[1]), pairs(q[2], q[3]));
        [
            _mm512_extractf32x4_ps::<0>(r),
            _mm512_extractf32x4_ps::<1>(r),
            _mm512_extractf32x4_ps::<2>(r),
            _mm512_extractf32x4_ps::<3>(r),
        ]
    }

    /// Stores (or adds, when `accumulate`) `rows` as the rows of 4 values at `dst + i·ldd`.
    ///
    /// # Safety
    /// Each of those rows is 4 writable (readable when accumulating) values.
    #[target_feature(enable = "avx512f")]
    unsafe fn store(dst: *mut f32, ldd: usize, rows: &[__m128], accumulate: bool) {
        // SAFETY: the caller's contract.
        unsafe {
            for (i, &row) in rows.iter().enumerate() {
                let d = dst.add(i * ldd);
                let v = if accumulate {
                    _mm_add_ps(_mm_loadu_ps(d), row)
                } else {
                    row
                };
                _mm_storeu_ps(d, v);
            }
        }
    }

    /// `R` rows by `cols` (1 to 4) columns, each sum folded on its own: the blocks at the
    /// output's right and bottom edges.
    ///
    /// # Safety
    /// As [`block`], for `R` rows and `cols` ≤ 4 columns.
    #[target_feature(enable = "avx512f")]
    unsafe fn edge_rows<const R: usize>(
        cols: usize,
        dst: *mut f32,
        ldd: usize,
        (a, lda): (*const f32, usize),
        b: [*const f32; 4],
        k: usize,
        accumulate: bool,
    ) {
        if cols == 0 {
            return;
        }
        // `sum[j][i]`: row `i` of `a` times row `j` of `b`.
        let mut sum = [[_mm512_setzero_ps(); R]; 4];
        // SAFETY: as in `four_by_four`, for rows `j < cols` of `b` only.
        unsafe {
            for p in (0..k).step_by(LANES) {
                let m = lanes(p, k);
                let av: [__m512; R] =
                    std::array::from_fn(|i| _mm512_maskz_loadu_ps(m, a.add(i * lda + p)));
                for (j, col) in sum.iter_mut().enumerate().take(cols) {
                    let bv = _mm512_maskz_loadu_ps(m, b[j].add(p));
                    for (s, &a) in col.iter_mut().zip(&av) {
                        *s = _mm512_fmadd_ps(a, bv, *s);
                    }
                }
            }
            for (j, col) in sum.iter().enumerate().take(cols) {
                for (i, s) in col.iter().enumerate() {
                    let d = dst.add(i * ldd + j);
                    let v = _mm512_reduce_add_ps(*s);
                    *d = if accumulate { *d + v } else { v };
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
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    /// `a·btᵀ` in f64 for views `a` `[m, k]` and `bt` `[n, k]`.
    fn reference(a: View<'_>, bt: View<'_>) -> Vec<f64> {
        let (m, n) = (a.rows(), bt.rows());
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (a.row(i).iter().zip(bt.row(j)))
                    .map(|(&x, &y)| f64::from(x) * f64::from(y))
                    .sum();
            }
        }
        out
    }

    /// Asserts `got` is `want` (plus `start` when given) within rounding of a `k`-deep sum of
    /// values in [-1, 1].
    fn assert_close(got: &[f32], want: &[f64], start: Option<&[f32]>, k: usize, what: &str) {
        assert_eq!(got.len(), want.len());
        for (e, (&g, &w)) in got.iter().zip(want).enumerate() {
            let w = w + start.map_or(0.0, |s| f64::from(s[e]));
            assert!(
                (f64::from(g) - w).abs() <= 2e-6 * k as f64,
                "{what}: element {e} is {g}, want {w}"
            );
        }
    }

    #[test]
    fn products_match_a_reference_for_every_edge_depth_stride_and_mode() {
        if !has_avx512() {
            eprintln!("skipped: this CPU has no AVX-512");
            return;
        }
        let mut checked = 0;
        for &(m, n) in &[(4, 4), (4, 7), (5, 9), (8, 16), (13, 6), (7, 5), (17, 33)] {
            for &k in &[64, 79, 96, 257] {
                // Dense rows from the buffer's start, or padded rows from an offset with the
                // last row ending at the buffer's end.
                for pad in [0, 3] {
                    let (lda, ldb) = (k + pad, k + 2 * pad);
                    let a = values(pad + (m - 1) * lda + k, 1);
                    let b = values(pad + (n - 1) * ldb + k, 2);
                    let av = View::strided(&a, pad, (m, k), (lda, 1));
                    let bv = View::strided(&b, pad, (n, k), (ldb, 1));
                    let want = reference(av, bv);
                    for accumulate in [false, true] {
                        let start = values(m * n, 3);
                        let mut got = if accumulate {
                            start.clone()
                        } else {
                            vec![f32::NAN; m * n]
                        };
                        // SAFETY: `got` holds m·n initialised values and aliases neither operand.
                        unsafe { product(got.as_mut_ptr(), av, bv, accumulate) };
                        let what = format!("{m}×{n}×{k}, pad {pad}, accumulate {accumulate}");
                        assert_close(&got, &want, accumulate.then_some(&start[..]), k, &what);
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 7 * 4 * 2 * 2);
    }

    #[test]
    fn a_product_gives_the_same_bits_however_its_work_is_cut() {
        if !has_avx512() {
            eprintln!("skipped: this CPU has no AVX-512");
            return;
        }
        // Big enough to be split over the pool (rows in several tasks, columns in several
        // panels), with edges on both sides.
        let (m, n, k) = (37, 1_030, 133);
        let (a, b) = (values(m * k, 4), values(n * k, 5));
        let (av, bv) = (View::dense(&a, m, k), View::dense(&b, n, k));
        assert!(m * n * k >= PARALLEL_MIN && n > PANEL_BYTES / (4 * k));
        let want = reference(av, bv);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        // On the pool, in tasks.
        let mut many = vec![f32::NAN; m * n];
        // SAFETY (every product here): buffers of m·n values, aliasing neither operand.
        unsafe { product(many.as_mut_ptr(), av, bv, false) };
        assert_close(&many, &want, None, k, "on the pool");
        // In a shard: one thread, panel by panel.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let mut one = vec![f32::NAN; m * n];
        pool.install(|| {
            super::super::as_task(|| unsafe { product(one.as_mut_ptr(), av, bv, false) })
        });
        assert_eq!(bits(&many), bits(&one), "one thread against the pool");
        // The whole output as one block, without tasks or panels.
        let mut whole = vec![f32::NAN; m * n];
        #[cfg(target_arch = "x86_64")]
        unsafe {
            avx512::block(
                whole.as_mut_ptr(),
                n,
                (a.as_ptr(), k),
                avx512::Rows::new(b.as_ptr(), k, None),
                (m, n, k),
                false,
            )
        };
        assert_eq!(bits(&many), bits(&whole), "one block against the pool");
        // Accumulating, on the pool.
        let start = values(m * n, 6);
        let mut acc = start.clone();
        unsafe { product(acc.as_mut_ptr(), av, bv, true) };
        assert_close(&acc, &want, Some(&start), k, "accumulated on the pool");
    }

    #[test]
    fn six_and_four_row_blocks_give_the_same_bits() {
        if !has_avx512() {
            eprintln!("skipped: this CPU has no AVX-512");
            return;
        }
        // 24 rows: one call makes them 6-row blocks, calls of 4 rows make 4-row blocks; 9
        // columns and a depth of 133 put edges on the right and in the last vector.
        let (m, n, k) = (24, 9, 133);
        let (a, b) = (values(m * k, 7), values(n * k, 8));
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for accumulate in [false, true] {
            let start = values(m * n, 9);
            let mut six = start.clone();
            let mut four = start.clone();
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `six` and `four` hold m·n values; `a` m rows and `b` n rows of k.
            unsafe {
                avx512::block(
                    six.as_mut_ptr(),
                    n,
                    (a.as_ptr(), k),
                    avx512::Rows::new(b.as_ptr(), k, None),
                    (m, n, k),
                    accumulate,
                );
                for r in (0..m).step_by(4) {
                    avx512::block(
                        four.as_mut_ptr().add(r * n),
                        n,
                        (a.as_ptr().add(r * k), k),
                        avx512::Rows::new(b.as_ptr(), k, None),
                        (4, n, k),
                        accumulate,
                    );
                }
            }
            assert_eq!(bits(&six), bits(&four), "accumulate {accumulate}");
            let want = reference(View::dense(&a, m, k), View::dense(&b, n, k));
            let start = accumulate.then_some(&start[..]);
            assert_close(&six, &want, start, k, "six-row blocks");
        }
    }

    #[test]
    fn shallow_strided_or_mismatched_operands_are_not_taken() {
        let a = values(8 * 64, 6);
        let shallow = View::dense(&a[..8 * 63], 8, 63);
        let deep = View::dense(&a, 8, 64);
        assert!(!usable(&shallow, &shallow));
        assert!(
            !usable(&deep.t(), &deep.t()),
            "columns, not rows, are contiguous"
        );
        assert!(!usable(&deep, &View::dense(&a, 4, 128)));
        assert!(
            !usable(&deep, &View::dense(&a[..3 * 64], 3, 64)),
            "a matrix-vector product"
        );
        assert_eq!(usable(&deep, &deep), has_avx512());
    }

    #[test]
    fn picked_rows_give_the_whole_products_bits_in_their_columns() {
        if !has_avx512() {
            eprintln!("skipped: this CPU has no AVX-512");
            return;
        }
        // 26 rows (6- and 4-row blocks and an edge), depth 133 (a partial last vector), 43
        // rows of `b` of which the last 3 are past the whole blocks: with 4 (or none) of the
        // first 40 left out, the kept ones still fill whole blocks and the last 3 stay past
        // them, so every picked column keeps the whole product's kind of block.
        let (m, n, k) = (26, 43, 133);
        let (a, b) = (values(m * k, 10), values(n * k, 11));
        let (av, bv) = (View::dense(&a, m, k), View::dense(&b, n, k));
        let mut whole = vec![f32::NAN; m * n];
        // SAFETY: `whole` holds m·n values and aliases neither operand.
        unsafe { product(whole.as_mut_ptr(), av, bv, false) };
        for left_out in [&[1usize, 2, 7, 30][..], &[0, 5, 6, 39], &[]] {
            let rows: Vec<usize> = (0..n).filter(|r| !left_out.contains(r)).collect();
            let got = product_picked(av, bv, &rows);
            assert_eq!(got.len(), m * rows.len());
            for i in 0..m {
                for (q, &r) in rows.iter().enumerate() {
                    let (g, w) = (got[i * rows.len() + q], whole[i * n + r]);
                    assert_eq!(
                        g.to_bits(),
                        w.to_bits(),
                        "row {i}, column {r}: {g} against {w}"
                    );
                }
            }
        }
        // In any order, on one thread in a shard: the values of the whole product, within
        // rounding (the columns may change kind of block).
        let rows = [42, 3, 3, 17, 0, 41];
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let got = pool.install(|| super::super::as_task(|| product_picked(av, bv, &rows)));
        for i in 0..m {
            for (q, &r) in rows.iter().enumerate() {
                let (g, w) = (got[i * rows.len() + q], whole[i * n + r]);
                assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "{g} against {w}");
            }
        }
    }
}
