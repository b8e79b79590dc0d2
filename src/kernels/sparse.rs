//! Matrix products whose left operand is mostly zeros: the first dense layer of a model fed
//! MNIST pixels, where about 81% of the inputs are exactly 0 (blank background).
//!
//! `gemm` multiplies every zero. Here the left operand is cut into groups of [`R`] consecutive
//! rows, and each group keeps only the columns where at least one of its rows is non-zero,
//! with every row's value there (zero where that row has none). Each output row is then the
//! sum of the right operand's rows those columns select, scaled: `out[r, :] += Σ a[r, c] ·
//! b[c, :]`. A group's rows share each loaded row of `b`, so the loop does four
//! multiply-adds per value loaded, and runs at the CPU's multiply-add rate; the price is the
//! zeros of a row inside its group's columns (for 128 MNIST images, 18% of the entries are
//! non-zero and their groups of 4 keep 38% of the columns). That is the forward product of the
//! layer (`x·w`, `x` sparse, rows grouped) and its weight gradient (`xᵀ·g`: groups of 4
//! adjacent pixels, whose columns are the batch's images, where neighbouring pixels are
//! mostly non-zero together: 27% of the columns kept). A training step's forward product takes
//! those groups of columns too ([`linear_by_columns`]: each group's rows of the right operand
//! held in registers, added to the output rows it keeps), so that both products share them.
//! No crate does this for dense right
//! operands at gemm-like speed (sparse crates such as sprs multiply scalar by scalar), hence
//! this file; the SIMD goes through `pulp` (already in the build through `gemm`), which picks
//! AVX-512, AVX2+FMA or plain code at run time, safely.

use pulp::{Arch, Simd, WithSimd};
use rayon::prelude::*;

use super::matmul::View;

/// Rows per group: four rows times five vectors of sums are 20 of AVX-512's 32 registers.
const R: usize = 4;

/// The largest fraction of non-zero entries for which the sparse product is used. Its time is
/// proportional to the columns its groups keep: for 128 MNIST images × 784 → 392 (18%
/// non-zeros, 38% of the columns kept) it is about half of gemm's on one core (BENCHMARKS.md,
/// session 21); at 30% non-zeros in no pattern its groups keep up to 76%, about gemm's time.
pub(super) const MAX_DENSITY: f64 = 0.3;

/// Groups per rayon task when the product is split over threads (outside shards).
const GROUPS_PER_TASK: usize = 4;

/// A matrix `[rows, cols]` in groups of [`R`] consecutive rows (the last group padded with
/// zero rows): group `g` keeps `len[g]` columns, `idx[g·cols ..]` (increasing), and row `i` of
/// the group has its value in column `idx[g·cols + q]` at `val[(g·R + i)·cols + q]`.
#[derive(Debug, Clone)]
pub(super) struct Groups {
    rows: usize,
    cols: usize,
    len: Vec<usize>,
    idx: Vec<u32>,
    val: Vec<f32>,
}

impl Groups {
    /// `a` in groups of rows, or `None` when more than [`MAX_DENSITY`] of its entries are
    /// non-zero, or when its rows are not contiguous (the caller then uses the dense product).
    pub(super) fn of_rows(a: View<'_>) -> Option<Groups> {
        Self::rows_within(a, MAX_DENSITY)
    }

    /// [`of_rows`](Self::of_rows) with `max_density` in place of [`MAX_DENSITY`].
    fn rows_within(a: View<'_>, max_density: f64) -> Option<Groups> {
        let (mut m, limit) = Self::room_for(a, false, max_density)?;
        let (rows, cols) = (a.rows(), a.cols());
        let zeros = vec![0f32; cols];
        let gather = row_gatherer();
        let mut nnz = 0;
        for (g, ((len, idx), val)) in m
            .len
            .iter_mut()
            .zip(m.idx.chunks_exact_mut(cols))
            .zip(m.val.chunks_exact_mut(R * cols))
            .enumerate()
        {
            let group: [&[f32]; R] = std::array::from_fn(|i| {
                if g * R + i < rows {
                    a.row(g * R + i)
                } else {
                    &zeros
                }
            });
            let (kept, non_zeros) = gather(group, idx, val);
            *len = kept;
            nnz += non_zeros;
            if nnz as f64 > limit {
                return None;
            }
        }
        Some(m)
    }

    /// `aᵀ` in groups of rows, that is `a` in groups of [`R`] adjacent columns, each group
    /// keeping the rows of `a` where one of its columns is non-zero; `None` as for
    /// [`of_rows`](Self::of_rows).
    pub(super) fn of_columns(a: View<'_>) -> Option<Groups> {
        Self::columns_within(a, MAX_DENSITY)
    }

    /// [`of_columns`](Self::of_columns) with `max_density` in place of [`MAX_DENSITY`].
    fn columns_within(a: View<'_>, max_density: f64) -> Option<Groups> {
        let (mut m, limit) = Self::room_for(a, true, max_density)?;
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked on the line above.
            let nnz = unsafe { avx512::fill_by_columns(&mut m, a) };
            return (nnz as f64 <= limit).then_some(m);
        }
        let mut nnz = 0;
        for r in 0..a.rows() {
            nnz += m.push_row(r, a.row(r));
            if nnz as f64 > limit {
                return None;
            }
        }
        Some(m)
    }

    /// Appends entry `r` to every group of columns of `row` (a row of the matrix whose
    /// transpose `self` is) where one of the group's values is non-zero; returns how many
    /// non-zero values it had.
    fn push_row(&mut self, r: usize, row: &[f32]) -> usize {
        let mut pushed = 0;
        for (g, vals) in row.chunks(R).enumerate() {
            // `!= 0` keeps NaNs, drops −0.
            let live = vals.iter().filter(|&&v| v != 0.0).count();
            if live > 0 {
                self.push(g, r, vals);
                pushed += live;
            }
        }
        pushed
    }

    /// Appends entry `r`, with `vals` (one per row of the group, fewer in a last group cut
    /// short, the rest zero), to group `g`.
    fn push(&mut self, g: usize, r: usize, vals: &[f32]) {
        let n = self.cols;
        let q = self.len[g];
        self.idx[g * n + q] = r as u32;
        for i in 0..R {
            self.val[(g * R + i) * n + q] = vals.get(i).copied().unwrap_or(0.0);
        }
        self.len[g] = q + 1;
    }

    /// Room for `a` grouped by rows (or, `transposed`, for `aᵀ`), with the most non-zeros
    /// `max_density` allows; `None` for an empty `a`, one whose rows are not contiguous, or
    /// one whose indices do not fit `u32`.
    fn room_for(a: View<'_>, transposed: bool, max_density: f64) -> Option<(Groups, f64)> {
        let (rows, cols) = (a.rows(), a.cols());
        let (grouped, indexed) = if transposed {
            (cols, rows)
        } else {
            (rows, cols)
        };
        if rows == 0 || cols == 0 || u32::try_from(indexed).is_err() || !a.row_contiguous() {
            return None;
        }
        let limit = (rows * cols) as f64 * max_density;
        Some((Groups::empty(grouped, indexed), limit))
    }

    /// Room for a `[rows, cols]` matrix, every group empty. The entries come from the last
    /// [`Groups`] dropped on this thread when there is one ([`SPARE`]): they need no zeroing,
    /// as only the first `len[g]` entries of a group are read, and whoever adds an entry
    /// writes it for every row of the group.
    fn empty(rows: usize, cols: usize) -> Groups {
        let groups = rows.div_ceil(R);
        let (mut idx, mut val) = SPARE.with_borrow_mut(Vec::pop).unwrap_or_default();
        fit(&mut idx, groups * cols);
        fit(&mut val, groups * R * cols);
        Groups {
            rows,
            cols,
            len: vec![0; groups],
            idx,
            val,
        }
    }

    /// Rows.
    pub(super) fn rows(&self) -> usize {
        self.rows
    }

    /// Columns.
    pub(super) fn cols(&self) -> usize {
        self.cols
    }

    /// Whether every column of groups `g0 .. g0 + groups` is below `limit` (a row of the
    /// other operand): checked once per product, so that the kernels' loops over columns
    /// need no check of their own.
    fn columns_below(&self, g0: usize, groups: usize, limit: usize) -> bool {
        (g0..g0 + groups).all(|g| self.group(g).0.iter().all(|&c| (c as usize) < limit))
    }

    /// Group `g`'s columns, and each of its rows' values there.
    fn group(&self, g: usize) -> (&[u32], [&[f32]; R]) {
        let n = self.len[g];
        let c = self.cols;
        let idx = &self.idx[g * c..g * c + n];
        let val = std::array::from_fn(|i| &self.val[(g * R + i) * c..(g * R + i) * c + n]);
        (idx, val)
    }
}

impl Drop for Groups {
    /// Hands the entries' buffers to the next [`Groups`] built on this thread.
    fn drop(&mut self) {
        let buffers = (std::mem::take(&mut self.idx), std::mem::take(&mut self.val));
        SPARE.with_borrow_mut(|spare| {
            if spare.len() < SPARE_KEPT {
                spare.push(buffers);
            }
        });
    }
}

/// Buffers of [`Groups`] kept per thread for reuse: a step builds one or two (the input in
/// groups of columns for both products, or in groups of rows then of columns), each dropped
/// before the next step's.
const SPARE_KEPT: usize = 2;

thread_local! {
    /// The entries' buffers of [`Groups`] dropped on this thread, for [`Groups::empty`]: a
    /// zeroed allocation per product took about 1% of an mlp step (BENCHMARKS.md).
    static SPARE: std::cell::RefCell<Vec<(Vec<u32>, Vec<f32>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// `v` made `n` long, keeping what it holds (zeros where it grows).
fn fit<T: Copy + Default>(v: &mut Vec<T>, n: usize) {
    if v.len() >= n {
        v.truncate(n);
    } else {
        v.resize(n, T::default());
    }
}

/// [`gather_rows`]'s signature.
type Gather = fn([&[f32]; R], &mut [u32], &mut [f32]) -> (usize, usize);

/// The fastest [`gather_rows`] this CPU has: AVX-512's compress instructions, or the plain
/// loop.
fn row_gatherer() -> Gather {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F, checked on the line above.
        return |rows, idx, val| unsafe { avx512::gather_rows(rows, idx, val) };
    }
    gather_rows
}

/// One group of `R` rows (of equal length `n`): writes the columns where any row is non-zero
/// (NaNs count as non-zero, −0 as zero) to the front of `idx`, and row `i`'s values there to
/// the front of `val[i·n ..]`, in order; returns how many, and how many values were
/// non-zero. `idx` holds `n` entries and `val` `R·n`.
fn gather_rows(rows: [&[f32]; R], idx: &mut [u32], val: &mut [f32]) -> (usize, usize) {
    gather_rows_from(0, (0, 0), rows, idx, val)
}

/// [`gather_rows`] for the columns from `c0` on, `(k, nnz)` entries and non-zeros found
/// before them.
fn gather_rows_from(
    c0: usize,
    (mut k, mut nnz): (usize, usize),
    rows: [&[f32]; R],
    idx: &mut [u32],
    val: &mut [f32],
) -> (usize, usize) {
    let n = rows[0].len();
    assert!(
        rows.iter().all(|r| r.len() == n) && idx.len() >= n && val.len() >= R * n,
        "gather_rows: rows or outputs of the wrong length"
    );
    for c in c0..n {
        let live = rows.iter().filter(|r| r[c] != 0.0).count();
        if live > 0 {
            idx[k] = c as u32;
            for (i, r) in rows.iter().enumerate() {
                val[i * n + k] = r[c];
            }
            k += 1;
            nnz += live;
        }
    }
    (k, nnz)
}

/// [`gather_rows`] with AVX-512's compress instructions, 16 columns at a time. `std::arch`, as
/// no portable SIMD crate in the build offers compression. The entries are compressed in
/// registers and stored whole: a compressing store straight to memory is microcoded, and slow,
/// on some AVX-512 CPUs (AMD Zen 4).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Groups, View, R};
    use std::arch::x86_64::*;

    const LANES: usize = 16;

    /// How many columns ahead of its sums a group's product asks for the row of `b` it will
    /// read (measured on the mlp's first layer: 2 gains less, 8 no more; BENCHMARKS.md).
    const AHEAD: usize = 4;

    /// [`super::gather_rows`].
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gather_rows(
        rows: [&[f32]; R],
        idx: &mut [u32],
        val: &mut [f32],
    ) -> (usize, usize) {
        let n = rows[0].len();
        assert!(
            rows.iter().all(|r| r.len() == n)
                && idx.len() >= n
                && val.len() >= R * n
                && n <= i32::MAX as usize,
            "gather_rows: rows or outputs of the wrong length"
        );
        let step = _mm512_set1_epi32(LANES as i32);
        let mut cols = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let (mut k, mut nnz) = (0, 0);
        let whole = n / LANES * LANES;
        for c in (0..whole).step_by(LANES) {
            // SAFETY: `c + 16 ≤ whole ≤ n`: the loads read inside each row. The stores write 16
            // lanes from `k` (in `idx`) and from `i·n + k` (in `val`), and `k` counts at most the
            // `c` columns before these, so they end by `c + 16 ≤ n` past their start: inside
            // `idx` (≥ n long) and inside row `i`'s `n` entries of `val` (lanes past the count
            // hold zeros, overwritten later or past what the caller keeps).
            unsafe {
                let v: [__m512; R] =
                    std::array::from_fn(|i| _mm512_loadu_ps(rows[i].as_ptr().add(c)));
                let masks = v.map(|v| _mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(v, _mm512_setzero_ps()));
                let live = masks.iter().fold(0, |any, &m| any | m);
                nnz += masks.iter().map(|m| m.count_ones() as usize).sum::<usize>();
                for (i, &v) in v.iter().enumerate() {
                    _mm512_storeu_ps(
                        val.as_mut_ptr().add(i * n + k),
                        _mm512_maskz_compress_ps(live, v),
                    );
                }
                _mm512_storeu_si512(
                    idx.as_mut_ptr().add(k).cast(),
                    _mm512_maskz_compress_epi32(live, cols),
                );
                k += live.count_ones() as usize;
            }
            cols = _mm512_add_epi32(cols, step);
        }
        super::gather_rows_from(whole, (k, nnz), rows, idx, val)
    }

    /// A 16 × 16 block transposed in registers: lane `i` of vector `j` of the result is lane
    /// `j` of `r[i]`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn transpose(r: [__m512; 16]) -> [__m512; 16] {
        // Pairs of rows interleaved by 32-bit values, then by 64-bit pairs, inside each 128-bit
        // lane; then 128-bit lanes exchanged between rows 4 apart, then 8 apart.
        let t: [__m512; 16] = std::array::from_fn(|i| {
            let (a, b) = (r[i & !1], r[i | 1]);
            if i % 2 == 0 {
                _mm512_unpacklo_ps(a, b)
            } else {
                _mm512_unpackhi_ps(a, b)
            }
        });
        let u: [__m512; 16] = std::array::from_fn(|i| {
            // Within each four: (t0, t2) low and high, (t1, t3) low and high.
            let base = i & !3;
            let (a, b) = (t[base + (i >> 1 & 1)], t[base + (i >> 1 & 1) + 2]);
            let (a, b) = (_mm512_castps_pd(a), _mm512_castps_pd(b));
            _mm512_castpd_ps(if i % 2 == 0 {
                _mm512_unpacklo_pd(a, b)
            } else {
                _mm512_unpackhi_pd(a, b)
            })
        });
        let v: [__m512; 16] = std::array::from_fn(|i| {
            let base = i & !7;
            let (a, b) = (u[base + (i & 3)], u[base + (i & 3) + 4]);
            if i & 4 == 0 {
                _mm512_shuffle_f32x4::<0x88>(a, b)
            } else {
                _mm512_shuffle_f32x4::<0xdd>(a, b)
            }
        });
        std::array::from_fn(|i| {
            let (a, b) = (v[i & 7], v[(i & 7) + 8]);
            if i & 8 == 0 {
                _mm512_shuffle_f32x4::<0x88>(a, b)
            } else {
                _mm512_shuffle_f32x4::<0xdd>(a, b)
            }
        })
    }

    /// [`Groups::columns_within`]'s filling of `m` (empty, room for `aᵀ`): blocks of 16
    /// rows by 16 columns of `a` transposed in registers, so that each group of `R` columns
    /// keeps the block's rows where one of its columns is non-zero with one compressing move
    /// per column, where [`Groups::push_row`] writes each kept row into `R` rows of `m` one
    /// value at a time. The same entries in the same order (rows increasing). Returns how many
    /// values of `a` are non-zero (NaNs included, −0 not).
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn fill_by_columns(m: &mut Groups, a: View<'_>) -> usize {
        let (rows, cols) = (a.rows(), a.cols());
        assert!(
            m.rows == cols
                && m.cols == rows
                && m.len.iter().all(|&l| l == 0)
                && rows <= i32::MAX as usize,
            "sparse groups: room of another shape"
        );
        let groups = cols.div_ceil(R);
        let n = rows;
        let mut nnz = 0;
        for i0 in (0..rows).step_by(LANES) {
            let here = (rows - i0).min(LANES);
            let valid = ((1u32 << here) - 1) as u16;
            let index = _mm512_add_epi32(
                _mm512_set1_epi32(i0 as i32),
                _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            );
            for c0 in (0..cols).step_by(LANES) {
                let lanes = ((1u32 << (cols - c0).min(LANES)) - 1) as u16;
                let block: [__m512; 16] = std::array::from_fn(|i| {
                    if i < here {
                        // SAFETY: row `i0 + i < rows`, columns `c0 ..` masked to those
                        // before `cols`.
                        unsafe { _mm512_maskz_loadu_ps(lanes, a.row(i0 + i).as_ptr().add(c0)) }
                    } else {
                        _mm512_setzero_ps()
                    }
                });
                let col = transpose(block);
                for q in 0..LANES / R {
                    let g = c0 / R + q;
                    if g >= groups {
                        break;
                    }
                    let masks: [u16; R] = std::array::from_fn(|j| {
                        _mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(col[q * R + j], _mm512_setzero_ps())
                            & valid
                    });
                    let live = masks.iter().fold(0, |any, &k| any | k);
                    nnz += masks.iter().map(|k| k.count_ones() as usize).sum::<usize>();
                    if live == 0 {
                        continue;
                    }
                    let at = m.len[g];
                    let kept = live.count_ones() as usize;
                    let store = ((1u32 << kept) - 1) as u16;
                    // SAFETY: group `g` holds `at ≤ i0` entries (one per row before this
                    // block at most), so the `kept ≤ here` lanes stored from `at` end by
                    // `i0 + here ≤ n`: inside the group's `n` entries of `idx` and of each
                    // of its `R` rows of `val`.
                    unsafe {
                        _mm512_mask_storeu_epi32(
                            m.idx.as_mut_ptr().add(g * n + at).cast(),
                            store,
                            _mm512_maskz_compress_epi32(live, index),
                        );
                        for j in 0..R {
                            _mm512_mask_storeu_ps(
                                m.val.as_mut_ptr().add((g * R + j) * n + at),
                                store,
                                _mm512_maskz_compress_ps(live, col[q * R + j]),
                            );
                        }
                    }
                    m.len[g] = at + kept;
                }
            }
        }
        nnz
    }

    /// Vector `t` of a row's block that starts at `p`: all 16 lanes unless `MASKED`, then
    /// those of `mask` (the address beyond them is never dereferenced).
    ///
    /// # Safety
    /// The CPU has AVX-512F; the lanes read lie inside the row.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn load_part<const MASKED: bool>(p: *const f32, t: usize, mask: u16) -> __m512 {
        // SAFETY: this function's contract.
        unsafe {
            if MASKED {
                _mm512_maskz_loadu_ps(mask, p.wrapping_add(t * LANES))
            } else {
                _mm512_loadu_ps(p.add(t * LANES))
            }
        }
    }

    /// [`load_part`]'s lanes written with `v`.
    ///
    /// # Safety
    /// As [`load_part`], for writes.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn store_part<const MASKED: bool>(p: *mut f32, t: usize, mask: u16, v: __m512) {
        // SAFETY: this function's contract.
        unsafe {
            if MASKED {
                _mm512_mask_storeu_ps(p.wrapping_add(t * LANES), mask, v);
            } else {
                _mm512_storeu_ps(p.add(t * LANES), v);
            }
        }
    }

    /// [`super::linear_by_columns`]'s work for the output rows `rows` (at most
    /// [`super::SCATTER_ROWS`]) and its blocks of `V` vectors of columns `blocks`: each block
    /// of those rows is set to the bias, then for every group of `R` rows of `b` (adjacent
    /// columns of `a`), each kept row of the output has the group's `R` products added to it
    /// in order (read, `R` multiply-adds per vector, written back), then the ReLU when
    /// `relu`. The block's rows stay in the first-level cache while every group adds to them.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `out` is valid for writes of `at.cols() · b.cols()` values and
    /// aliases no operand; `at.rows() == b.rows()`, `bias` has `b.cols()` values, `rows` lies
    /// within `0..at.cols()`, `starts[g]..ends[g]` are the entries of group `g` whose rows lie
    /// in `rows`, and every entry is a row of the output (checked by the caller).
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn scatter<const V: usize>(
        out: *mut f32,
        at: &Groups,
        b: View<'_>,
        bias: &[f32],
        relu: bool,
        rows: std::ops::Range<usize>,
        (starts, ends): (&[usize], &[usize]),
        blocks: std::ops::Range<usize>,
    ) {
        let o = b.cols();
        let k = b.rows();
        let groups = at.len.len();
        assert!(
            at.rows == k
                && bias.len() == o
                && rows.end <= at.cols
                && starts.len() == groups
                && ends.len() == groups
                && blocks.end <= o.div_ceil(V * LANES),
            "sparse scatter: operands of other shapes"
        );
        let (first, stride) = b.rows_raw();
        for blk in blocks {
            let j = blk * V * LANES;
            let masks: [u16; V] = std::array::from_fn(|t| {
                let start = (j + t * LANES).min(o);
                let n = (o - start).min(LANES);
                ((1u32 << n) - 1) as u16
            });
            // SAFETY (the bias's loads): the mask's lanes stop at column `o`.
            let bias_v: [__m512; V] = std::array::from_fn(|t| unsafe {
                _mm512_maskz_loadu_ps(masks[t], bias.as_ptr().wrapping_add(j + t * LANES))
            });
            for i in rows.clone() {
                let p = out.wrapping_add(i * o + j);
                for (t, &v) in bias_v.iter().enumerate() {
                    // SAFETY: row `i` of the output, lanes before column `o`.
                    unsafe { _mm512_mask_storeu_ps(p.wrapping_add(t * LANES), masks[t], v) };
                }
            }
            let whole = j + V * LANES <= o;
            for g in 0..groups {
                let (s, e) = (starts[g], ends[g]);
                if s >= e {
                    continue;
                }
                let p0 = g * R;
                let w = first.wrapping_add(p0 * stride + j);
                let n = at.cols;
                let idx = at.idx.as_ptr().wrapping_add(g * n);
                let val = at.val.as_ptr().wrapping_add(g * R * n);
                let group = GroupBlock {
                    out,
                    o,
                    j,
                    masks,
                    w,
                    stride,
                    idx,
                    val,
                    n,
                };
                // SAFETY: the group's rows of `b` from `p0` (fewer than `R` in a last group
                // cut short) and its entries `s..e`, rows of the output (this function's
                // contract).
                unsafe {
                    match ((k - p0).min(R), whole) {
                        (R, true) => scatter_group::<false, V, R>(group, s..e),
                        (R, false) => scatter_group::<true, V, R>(group, s..e),
                        (3, _) => scatter_group::<true, V, 3>(group, s..e),
                        (2, _) => scatter_group::<true, V, 2>(group, s..e),
                        (_, _) => scatter_group::<true, V, 1>(group, s..e),
                    }
                }
            }
            if relu {
                for i in rows.clone() {
                    let p = out.wrapping_add(i * o + j);
                    for (t, &mask) in masks.iter().enumerate() {
                        // SAFETY: the lanes set above, of row `i`.
                        unsafe {
                            let q = p.wrapping_add(t * LANES);
                            let v = _mm512_maskz_loadu_ps(mask, q);
                            _mm512_mask_storeu_ps(q, mask, _mm512_max_ps(v, _mm512_setzero_ps()));
                        }
                    }
                }
            }
        }
    }

    /// Where [`scatter_group`] adds a group's products: the output (`o` values a row) and its
    /// block of `V` vectors from column `j` (`masks`: the lanes inside the output), the
    /// group's rows of `b` from `w` at `stride`, and its entries `idx[q]` with values
    /// `val[r·n + q]`.
    #[derive(Clone, Copy)]
    struct GroupBlock<const V: usize> {
        out: *mut f32,
        o: usize,
        j: usize,
        masks: [u16; V],
        w: *const f32,
        stride: usize,
        idx: *const u32,
        val: *const f32,
        n: usize,
    }

    /// One group's products added to its kept rows `entries` of the output, over the block
    /// `at` describes: `P` rows of `b`, held in registers.
    ///
    /// # Safety
    /// As [`scatter`]; `MASKED` unless the block lies inside the output's columns, `P` the
    /// group's rows of `b`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn scatter_group<const MASKED: bool, const V: usize, const P: usize>(
        at: GroupBlock<V>,
        entries: std::ops::Range<usize>,
    ) {
        let GroupBlock {
            out,
            o,
            j,
            masks,
            w,
            stride,
            idx,
            val,
            n,
        } = at;
        // SAFETY: `p` is a row's block from column `j`: unmasked, the whole block lies
        // inside the row; masked, only the lanes before column `o` are read.
        let load = |p: *const f32, t: usize| unsafe { load_part::<MASKED>(p, t, masks[t]) };
        let wv: [[__m512; V]; P] =
            std::array::from_fn(|r| std::array::from_fn(|t| load(w.wrapping_add(r * stride), t)));
        for q in entries {
            // SAFETY: `q` is an entry of the group, whose row is a row of the output.
            let (i, x) = unsafe {
                let x: [f32; P] = std::array::from_fn(|r| *val.add(r * n + q));
                (*idx.add(q) as usize, x)
            };
            let p = out.wrapping_add(i * o + j);
            let mut acc: [__m512; V] = std::array::from_fn(|t| load(p, t));
            for (r, &x) in x.iter().enumerate() {
                let x = _mm512_set1_ps(x);
                for (s, &w) in acc.iter_mut().zip(&wv[r]) {
                    *s = _mm512_fmadd_ps(x, w, *s);
                }
            }
            for (t, &s) in acc.iter().enumerate() {
                // SAFETY: the lanes loaded above.
                unsafe { store_part::<MASKED>(p, t, masks[t], s) };
            }
        }
    }

    /// [`super::matmul_acc`]'s work for the groups from `g0` on, whose output rows `out`
    /// holds: [`super::Product`] in AVX-512 code, five vectors by four rows of sums in
    /// registers (`std::arch`: pulp's generic code kept these arrays of vectors in memory, and
    /// called a function for each partial load, which made it 40% slower here).
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn product(out: &mut [f32], a: &Groups, g0: usize, b: View<'_>) {
        // SAFETY: `out` is initialised and borrowed mutably for the call; the CPU has
        // AVX-512F (this function's contract).
        unsafe { product_raw::<false>(out.as_mut_ptr(), out.len(), a, g0, b) }
    }

    /// [`product`] into `len` values at `out` that need not be initialised: each output value
    /// is stored, never read (the groups' sums start from zero, and a group without columns
    /// stores zeros), with the bits [`product`] gives on a zero-filled output.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `out` is valid for writes of `len` values and aliases neither
    /// operand for the call.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn product_fresh(
        out: *mut f32,
        len: usize,
        a: &Groups,
        g0: usize,
        b: View<'_>,
    ) {
        // SAFETY: this function's contract.
        unsafe { product_raw::<true>(out, len, a, g0, b) }
    }

    /// [`product`] (`FRESH` false: `out` is initialised, the sums start from its values)
    /// and [`product_fresh`] (`FRESH`: they start from zero, `out` is only written).
    ///
    /// # Safety
    /// The CPU has AVX-512F; `out` is valid for writes (and, unless `FRESH`, reads of
    /// initialised values) of `len` values, and aliases neither operand for the call.
    #[target_feature(enable = "avx512f")]
    unsafe fn product_raw<const FRESH: bool>(
        out: *mut f32,
        len: usize,
        a: &Groups,
        g0: usize,
        b: View<'_>,
    ) {
        let o = b.cols();
        assert!(
            o > 0 && len.is_multiple_of(o) && g0 + (len / o).div_ceil(R) <= a.len.len(),
            "sparse product: output rows outside the matrix"
        );
        assert!(
            a.columns_below(g0, (len / o).div_ceil(R), b.rows()),
            "sparse product: a column outside the right operand"
        );
        let rows = len / o;
        const V: usize = 5;
        for j in (0..o).step_by(V * LANES) {
            // Lanes of each vector of the block inside the output: all, some, or none.
            let masks: [u16; V] = std::array::from_fn(|t| {
                let start = (j + t * LANES).min(o);
                let n = (o - start).min(LANES);
                ((1u32 << n) - 1) as u16
            });
            let whole = j + V * LANES <= o;
            for g in 0..rows.div_ceil(R) {
                let (cols, vals) = a.group(g0 + g);
                let group_rows = (rows - g * R).min(R);
                // SAFETY: group `g`'s rows start at row `g·R < rows` of `out`.
                let out = unsafe { out.add(g * R * o) };
                if cols.is_empty() {
                    if FRESH {
                        for r in 0..group_rows {
                            for (t, &mask) in masks.iter().enumerate() {
                                // SAFETY: row `r` of the group lies inside `out`, and the
                                // mask's lanes stop at its column `o`.
                                unsafe {
                                    _mm512_mask_storeu_ps(
                                        out.wrapping_add(r * o + j + t * LANES),
                                        mask,
                                        _mm512_setzero_ps(),
                                    )
                                };
                            }
                        }
                    }
                    continue;
                }
                // SAFETY: the CPU has AVX-512F (this function's contract), the group's
                // `group_rows` rows of `o` values lie inside `out`, and its columns are rows
                // of `b` (checked above).
                unsafe {
                    if whole {
                        group_block::<false, FRESH>(out, group_rows, o, j, masks, cols, vals, b);
                    } else {
                        group_block::<true, FRESH>(out, group_rows, o, j, masks, cols, vals, b);
                    }
                }
            }
        }
    }

    /// One group's sums over columns `j ..` of the output (see [`product`]), whose `rows`
    /// rows of `o` values start at `out`; `MASKED` when the block ends past the output's last
    /// column, so that vectors are loaded and stored in part (`masks`: the lanes inside);
    /// `FRESH` when the sums start from zero rather than from the output's values.
    ///
    /// The sums must stay in registers across the loop over the group's columns: every loop
    /// here has constant bounds and the loop over columns has no bounds check (the column
    /// indices are checked once per product, by the caller), so that the compiler keeps the
    /// `R × V` vectors in registers whatever it inlines around this function. With loops of
    /// run-time length it may keep them in memory instead, storing each after every
    /// multiply-add, which makes the product much slower (see BENCHMARKS.md).
    ///
    /// # Safety
    /// The CPU has AVX-512F, every entry of `cols` is a row of `b`, and `out` is valid for
    /// writes (and, unless `FRESH`, reads of initialised values) of `rows · o` values.
    #[target_feature(enable = "avx512f")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn group_block<const MASKED: bool, const FRESH: bool>(
        out: *mut f32,
        rows: usize,
        o: usize,
        j: usize,
        masks: [u16; 5],
        cols: &[u32],
        vals: [&[f32]; R],
        b: View<'_>,
    ) {
        const V: usize = 5;
        let n = cols.len();
        assert!(
            (1..=R).contains(&rows) && j < o && o == b.cols() && vals.iter().all(|v| v.len() == n),
            "sparse product: a group outside its operands"
        );
        let (first, stride) = b.rows_raw();
        let val: [*const f32; R] = std::array::from_fn(|r| vals[r].as_ptr());
        let col = cols.as_ptr();
        // The lanes of vector `t` of a row's block from column `j`: all 16 unless `MASKED`,
        // then those of `masks[t]`, which stop at column `o`.
        // SAFETY: `p` is a row of `o` values from column `j`. Unmasked, the block's
        // `j + 80 ≤ o`, so all lanes lie inside the row; masked, only lanes before column `o`
        // are read.
        let load = |p: *const f32, t: usize| unsafe { load_part::<MASKED>(p, t, masks[t]) };
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        for (r, acc) in acc.iter_mut().enumerate() {
            // Fresh, the sums start from zero: the bits of a zero-filled output's.
            if r < rows && !FRESH {
                // SAFETY: row `r < rows` of `out` holds `o` values, `j < o`.
                let p = unsafe { out.add(r * o + j) };
                for (t, s) in acc.iter_mut().enumerate() {
                    *s = load(p, t);
                }
            }
        }
        for q in 0..n {
            // The block of `b`'s row that this group reads `AHEAD` columns later, asked into
            // the first-level cache now: a group's columns pick rows scattered over `b`, which
            // the CPU's own prefetchers cannot foresee. A prefetch reads nothing and never
            // faults, so the addresses past the block (its lines cover at most 6 of them) are
            // harmless.
            // SAFETY: `min(q + AHEAD, n − 1) < n`, the length of `cols`.
            let ahead = unsafe { *col.add((q + AHEAD).min(n - 1)) } as usize;
            let pf = first.wrapping_add(ahead * stride + j).cast::<i8>();
            for line in 0..6 {
                _mm_prefetch::<_MM_HINT_T0>(pf.wrapping_add(line * 64));
            }
            // SAFETY: `q < n`, the length of `cols`; the column `c` is a row of `b` (this
            // function's contract), whose `o` values start at `first + c·stride`
            // (`rows_raw`), and `j < o`.
            let p = unsafe { first.add(*col.add(q) as usize * stride + j) };
            let mut w = [_mm512_setzero_ps(); V];
            for (t, w) in w.iter_mut().enumerate() {
                *w = load(p, t);
            }
            for (acc, &v) in acc.iter_mut().zip(&val) {
                // SAFETY: `q < n`, the length of every row's values (checked above).
                let x = _mm512_set1_ps(unsafe { *v.add(q) });
                for (s, &w) in acc.iter_mut().zip(&w) {
                    *s = _mm512_fmadd_ps(x, w, *s);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            if r < rows {
                // SAFETY: as for the loads: row `r < rows` of `out`, from column `j < o`.
                let p = unsafe { out.add(r * o + j) };
                for (t, &s) in acc.iter().enumerate() {
                    // SAFETY: the lanes the loads read, of the same row.
                    unsafe { store_part::<MASKED>(p, t, masks[t], s) };
                }
            }
        }
    }
}

/// `out ← out + a·b` with `a` grouped `[rows, C]`, `b` a `[C, o]` view with contiguous rows
/// and `out` row-major `[rows, o]`. Runs on the calling thread in a rayon task (a shard: see
/// [`super::in_task`]), split over groups of rows otherwise. Each output's sum runs from its
/// value in `out` through its group's columns in increasing order, whatever the thread count
/// (a column where the row itself is zero adds `0·b`: exactly nothing for finite `b`).
///
/// For each block of `V` vectors of columns (the outer loop, so the block's columns of `b`
/// stay in cache for all groups), a group's `R × V` sums are held in registers over its
/// columns: per column, `V` vectors of `b` loaded and `R·V` multiply-adds.
pub(super) fn matmul_acc(out: &mut [f32], a: &Groups, b: View<'_>) {
    let o = b.cols();
    assert_eq!(a.cols(), b.rows(), "sparse matmul: inner dimensions differ");
    assert_eq!(
        out.len(),
        a.rows() * o,
        "sparse matmul: output has the wrong size"
    );
    assert!(
        b.row_contiguous(),
        "sparse matmul: right operand rows not contiguous"
    );
    if o == 0 || a.rows() == 0 {
        return;
    }
    let arch = Arch::new();
    let task = |g0: usize, out: &mut [f32]| {
        #[cfg(target_arch = "x86_64")]
        if o >= 16 && std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked on the line above.
            return unsafe { avx512::product(out, a, g0, b) };
        }
        arch.dispatch(Product { out, a, g0, b })
    };
    by_groups(out, o, task);
}

/// Output rows per pass of [`linear_by_columns`]: a block of their columns (128 rows by
/// [`SCATTER_V`] vectors, 40 KB) stays in the first-level cache while every group adds to it.
const SCATTER_ROWS: usize = 128;

/// Vectors of columns per block of [`linear_by_columns`]: the block of `b`'s `R` rows that a
/// group adds is `R × SCATTER_V` registers.
const SCATTER_V: usize = 5;

/// Whether [`linear_by_columns`] runs on this CPU for an output `o` columns wide: AVX-512, and
/// at least one vector of columns.
pub(super) fn scatters(o: usize) -> bool {
    o >= 16 && super::matmul::has_avx512()
}

/// `max(bias + a·b, 0)` (without the ReLU unless `relu`) in a new row-major `[rows, o]`
/// buffer, `at` being `a` in groups of columns ([`Groups::of_columns`]: `[C, rows]`), `b` a
/// `[C, o]` view with contiguous rows, `bias` one value per column; where [`scatters`]`(o)`.
///
/// [`matmul_acc`] holds a group of rows' sums in registers and reads, for each column the
/// group keeps, a row of `b` (38% of the columns for groups of 4 MNIST images, half of them
/// zero for a given image). Here a group is `R` adjacent columns of `a` (pixels, mostly
/// non-zero together), whose `R` rows of `b` are held in registers, and each output row the
/// group keeps (27% of them) has the `R` products added to it, read from and written back to
/// the first-level cache. Each output's sum runs from its bias through its non-zero columns
/// in increasing order, adding exact zeros where the row itself is zero, as in
/// [`matmul_acc`] onto the bias: the same bits (`0·b` adds nothing for finite `b`), but for
/// the sign of a sum that stays at a bias of exactly −0 (its row adds only zeros), where the
/// other kernel may add a `+0` (the ReLU then makes both +0). The
/// groups are those the weight gradient (`aᵀ·g`) takes, so the forward pass builds them once
/// for both. Runs on the calling thread in a rayon task (a shard: see [`super::in_task`]),
/// split over blocks of rows and columns otherwise.
pub(super) fn linear_by_columns(at: &Groups, b: View<'_>, bias: &[f32], relu: bool) -> Vec<f32> {
    let (m, o) = (at.cols(), b.cols());
    assert!(
        scatters(o) && at.rows() == b.rows() && bias.len() == o && b.row_contiguous(),
        "sparse linear: operands it does not take"
    );
    let groups = at.len.len();
    assert!(
        at.columns_below(0, groups, m),
        "sparse linear: an entry outside the output"
    );
    let len = m
        .checked_mul(o)
        .expect("sparse linear: output size overflows");
    let mut out: Vec<f32> = Vec::with_capacity(len);
    if len == 0 {
        return out;
    }
    let blocks = o.div_ceil(SCATTER_V * 16);
    // Each pass's rows, and the range of every group's entries within them (entries are in
    // increasing row order).
    let passes: Vec<(std::ops::Range<usize>, Vec<usize>, Vec<usize>)> = (0..m)
        .step_by(SCATTER_ROWS)
        .map(|r0| {
            let rows = r0..(r0 + SCATTER_ROWS).min(m);
            let (starts, ends) = (0..groups)
                .map(|g| {
                    let (idx, _) = at.group(g);
                    let at_row = |r: usize| idx.partition_point(|&i| (i as usize) < r);
                    (at_row(rows.start), at_row(rows.end))
                })
                .unzip();
            (rows, starts, ends)
        })
        .collect();
    let dst = super::matmul::Out(out.as_mut_ptr());
    let task = |pass: usize, blocks: std::ops::Range<usize>| {
        let (rows, starts, ends) = &passes[pass];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `scatters(o)` holds (checked above), so the CPU has AVX-512F; the buffer has
        // room for the `m · o` values, each task writes the blocks `blocks` of its pass's rows
        // (disjoint from every other task's), `at.rows() == b.rows()`, `bias` has `o` values,
        // and the ranges of entries and the entries themselves were found and checked above.
        unsafe {
            avx512::scatter::<SCATTER_V>(
                dst.at(0),
                at,
                b,
                bias,
                relu,
                rows.clone(),
                (starts, ends),
                blocks,
            )
        };
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (rows, starts, ends, blocks, dst, relu);
    };
    if super::in_task() {
        for pass in 0..passes.len() {
            task(pass, 0..blocks);
        }
    } else {
        (0..passes.len() * blocks)
            .into_par_iter()
            .for_each(|t| task(t / blocks, t % blocks..t % blocks + 1));
    }
    // SAFETY: the tasks set every block of every pass's rows, that is all `m · o` values
    // (`scatter` writes the bias into each before adding to it).
    unsafe { out.set_len(len) };
    out
}

/// Runs `task(g0, rows)` over `out`'s rows (of `o` values) in parts of whole groups, `g0` the
/// first group of each part: the whole on the calling thread in a rayon task (a shard: see
/// [`super::in_task`]), parts of [`GROUPS_PER_TASK`] groups over the pool otherwise.
fn by_groups<T: Send>(out: &mut [T], o: usize, task: impl Fn(usize, &mut [T]) + Sync) {
    if super::in_task() {
        task(0, out);
    } else {
        out.par_chunks_mut(GROUPS_PER_TASK * R * o)
            .enumerate()
            .for_each(|(i, out)| task(i * GROUPS_PER_TASK, out));
    }
}

/// `a·b` in a new row-major `[rows, o]` buffer: [`matmul_acc`] onto zeros, with the same
/// bits. Where the AVX-512 kernel runs, the buffer is not zero-filled first: the kernel stores
/// every value without reading it (for the mlp's first layer, a 1.2 MB weight gradient per
/// shard, the fill was a pass over memory of its own: BENCHMARKS.md).
pub(super) fn matmul_new(a: &Groups, b: View<'_>) -> Vec<f32> {
    let o = b.cols();
    assert_eq!(a.cols(), b.rows(), "sparse matmul: inner dimensions differ");
    assert!(
        b.row_contiguous(),
        "sparse matmul: right operand rows not contiguous"
    );
    let len = a
        .rows()
        .checked_mul(o)
        .expect("sparse matmul: output size overflows");
    #[cfg(target_arch = "x86_64")]
    if o >= 16 && a.rows() > 0 && std::arch::is_x86_feature_detected!("avx512f") {
        let mut out: Vec<f32> = Vec::with_capacity(len);
        let task = |g0: usize, out: &mut [std::mem::MaybeUninit<f32>]| {
            // SAFETY: the CPU has AVX-512F (checked above); `out` is a part of the buffer
            // borrowed mutably for the call, holding the rows of the groups from `g0` on.
            unsafe { avx512::product_fresh(out.as_mut_ptr().cast(), out.len(), a, g0, b) }
        };
        by_groups(&mut out.spare_capacity_mut()[..len], o, task);
        // SAFETY: `product_fresh` stored every one of the `len` values (each group's rows,
        // columns `0..o` block by block, zeros for a group without columns).
        unsafe { out.set_len(len) };
        return out;
    }
    let mut out = vec![0f32; len];
    matmul_acc(&mut out, a, b);
    out
}

/// The output rows of the groups from `g0` on, held in `out` (see [`matmul_acc`]).
struct Product<'a> {
    out: &'a mut [f32],
    a: &'a Groups,
    g0: usize,
    b: View<'a>,
}

impl WithSimd for Product<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        if self.b.cols() < S::F32_LANES {
            return self.narrow();
        }
        let vectors = self.b.cols().div_ceil(S::F32_LANES);
        // Vectors per block: as many sums as the registers hold (R·V of 32 with AVX-512, of
        // 16 with AVX2), the fewer unused vectors in the last block the better.
        let waste = |v: usize| vectors.div_ceil(v) * v - vectors;
        if S::F32_LANES >= 16 {
            if waste(4) < waste(5) {
                self.blocks::<S, 4>(simd)
            } else {
                self.blocks::<S, 5>(simd)
            }
        } else {
            self.blocks::<S, 2>(simd)
        }
    }
}

impl Product<'_> {
    /// Outputs narrower than one vector: plain code, each row's non-zero values only (a
    /// multiplication and an addition each, as gemm's plain code for such widths).
    fn narrow(self) {
        let Product { out, a, g0, b } = self;
        let o = b.cols();
        for (g, out) in out.chunks_mut(R * o).enumerate() {
            let (cols, vals) = a.group(g0 + g);
            for (dst, vals) in out.chunks_exact_mut(o).zip(vals) {
                for (&c, &v) in cols.iter().zip(vals) {
                    if v != 0.0 {
                        for (d, &w) in dst.iter_mut().zip(b.row(c as usize)) {
                            *d += v * w;
                        }
                    }
                }
            }
        }
    }

    #[inline(always)]
    fn blocks<S: Simd, const V: usize>(self, simd: S) {
        let Product { out, a, g0, b } = self;
        let o = b.cols();
        assert!(
            a.columns_below(g0, (out.len() / o).div_ceil(R), b.rows()),
            "sparse product: a column outside the right operand"
        );
        let lanes = S::F32_LANES;
        let block = V * lanes;
        let full = o / block * block;
        for j in (0..o).step_by(block) {
            for (g, out) in out.chunks_mut(R * o).enumerate() {
                let (cols, vals) = a.group(g0 + g);
                if cols.is_empty() {
                    continue;
                }
                if j < full {
                    // SAFETY: the group's columns are rows of `b` (checked above).
                    unsafe { whole_block::<S, V>(simd, out, j, cols, vals, b) };
                } else {
                    edge_block::<S, V>(simd, out, j, cols, vals, b);
                }
            }
        }
    }
}

/// The sums of columns `j .. j + V·lanes` (all inside the output) of a group's rows, held in
/// `out` (`R` rows, or fewer in the last group).
///
/// As in the AVX-512 kernel, the loops over the sums have constant bounds and the loop over
/// columns has no checks (the caller checks the columns once per product), so that the
/// compiler can keep the `R × V` sums in registers whatever it inlines around them.
///
/// # Safety
/// Every entry of `cols` is a row of `b`.
#[inline(always)]
unsafe fn whole_block<S: Simd, const V: usize>(
    simd: S,
    out: &mut [f32],
    j: usize,
    cols: &[u32],
    vals: [&[f32]; R],
    b: View<'_>,
) {
    let lanes = S::F32_LANES;
    let o = b.cols();
    let n = cols.len();
    let rows = out.len() / o.max(1);
    assert!(
        (1..=R).contains(&rows)
            && out.len() == rows * o
            && j + V * lanes <= o
            && vals.iter().all(|v| v.len() == n),
        "sparse product: a group outside its operands"
    );
    let (first, stride) = b.rows_raw();
    let val: [*const f32; R] = std::array::from_fn(|r| vals[r].as_ptr());
    let col = cols.as_ptr();
    let out = out.as_mut_ptr();
    // Vector `t` of the block of a row of `o` values starting at `p` (column `j`): inside the
    // row, as `j + V·lanes ≤ o` (checked above).
    let load = |p: *const f32, t: usize| {
        // SAFETY: the lanes `p + t·lanes ..` lie inside the row (see above); `S::f32s` is
        // plain `f32` lanes, read unaligned.
        unsafe { p.add(t * lanes).cast::<S::f32s>().read_unaligned() }
    };
    let zero = simd.splat_f32s(0.0);
    let mut acc = [[zero; V]; R];
    for (r, acc) in acc.iter_mut().enumerate() {
        if r < rows {
            // SAFETY: row `r < rows` of `out` holds `o` values, its block from `j` inside.
            let p = unsafe { out.add(r * o + j) };
            for (t, s) in acc.iter_mut().enumerate() {
                *s = load(p, t);
            }
        }
    }
    for q in 0..n {
        // SAFETY: `q < n`, the length of `cols`; the column is a row of `b` (this function's
        // contract), whose `o` values start at `first + c·stride` (`rows_raw`).
        let p = unsafe { first.add(*col.add(q) as usize * stride + j) };
        let mut w = [zero; V];
        for (t, w) in w.iter_mut().enumerate() {
            *w = load(p, t);
        }
        for (acc, &v) in acc.iter_mut().zip(&val) {
            // SAFETY: `q < n`, the length of every row's values (checked above).
            let x = simd.splat_f32s(unsafe { *v.add(q) });
            for (s, &w) in acc.iter_mut().zip(&w) {
                *s = simd.mul_add_e_f32s(x, w, *s);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        if r < rows {
            // SAFETY: as for the loads: the same lanes of row `r < rows` of `out`.
            unsafe {
                let p = out.add(r * o + j);
                for (t, &s) in acc.iter().enumerate() {
                    p.add(t * lanes).cast::<S::f32s>().write_unaligned(s);
                }
            }
        }
    }
}

/// [`whole_block`] for the last block, which ends past the output's last column: vectors
/// loaded and stored in part, or not at all.
#[inline(always)]
fn edge_block<S: Simd, const V: usize>(
    simd: S,
    out: &mut [f32],
    j: usize,
    cols: &[u32],
    vals: [&[f32]; R],
    b: View<'_>,
) {
    let lanes = S::F32_LANES;
    let o = b.cols();
    let span = |t: usize| (j + t * lanes).min(o)..(j + (t + 1) * lanes).min(o);
    let zero = simd.splat_f32s(0.0);
    let mut acc = [[zero; V]; R];
    for (acc, row) in acc.iter_mut().zip(out.chunks_exact(o)) {
        *acc = std::array::from_fn(|t| simd.partial_load_f32s(&row[span(t)]));
    }
    for (q, &c) in cols.iter().enumerate() {
        let src = b.row(c as usize);
        let w: [S::f32s; V] = std::array::from_fn(|t| simd.partial_load_f32s(&src[span(t)]));
        for (acc, vals) in acc.iter_mut().zip(&vals) {
            let x = simd.splat_f32s(vals[q]);
            for (s, &w) in acc.iter_mut().zip(&w) {
                *s = simd.mul_add_e_f32s(x, w, *s);
            }
        }
    }
    for (acc, row) in acc.iter().zip(out.chunks_exact_mut(o)) {
        for (t, &s) in acc.iter().enumerate() {
            simd.partial_store_f32s(&mut row[span(t)], s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic matrix with about `density` non-zeros.
    fn matrix(rows: usize, cols: usize, density: f64, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..rows * cols)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (s >> 11) as f64 / (1u64 << 53) as f64;
                if u < density {
                    (u / density * 2.0 - 1.0) as f32
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// `a·b` in f64, plainly.
    fn reference(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f64> {
        let mut out = vec![0f64; m * n];
        for i in 0..m {
            for p in 0..k {
                for j in 0..n {
                    out[i * n + j] += a[i * k + p] as f64 * b[p * n + j] as f64;
                }
            }
        }
        out
    }

    /// `[rows, cols]` stored transposed.
    fn transposed(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
        let mut t = vec![0f32; rows * cols];
        for i in 0..rows {
            for j in 0..cols {
                t[j * rows + i] = a[i * cols + j];
            }
        }
        t
    }

    /// `out + a·b` through [`matmul_acc`] (AVX-512 code where the CPU has it) and through
    /// the generic code, which must agree bit for bit (the same sums in the same order).
    fn both(out: &[f32], a: &Groups, b: View<'_>) -> Vec<f32> {
        let mut fast = out.to_vec();
        matmul_acc(&mut fast, a, b);
        let mut generic = out.to_vec();
        Arch::new().dispatch(Product {
            out: &mut generic,
            a,
            g0: 0,
            b,
        });
        assert!(
            fast.iter()
                .zip(&generic)
                .all(|(x, y)| x.to_bits() == y.to_bits()),
            "{}x{}x{}: the fastest code and the generic code differ",
            a.rows(),
            a.cols(),
            b.cols()
        );
        // The generic code on AVX2 as well, where this CPU has it (as on CPUs without
        // AVX-512): vectors of 8 lanes, two to a block. The same multiply-adds in the same
        // order as the AVX-512 code, so the same bits, except for outputs of 8 to 15 columns,
        // which AVX-512 leaves to the plain code (separate multiplications and additions).
        #[cfg(target_arch = "x86_64")]
        if let Some(v3) = pulp::x86::V3::try_new() {
            let mut avx2 = out.to_vec();
            let op = Product {
                out: &mut avx2,
                a,
                g0: 0,
                b,
            };
            <pulp::x86::V3 as pulp::Simd>::vectorize(v3, op);
            let plain_on_avx512 = b.cols() < 16;
            assert!(
                fast.iter().zip(&avx2).all(|(x, y)| match plain_on_avx512 {
                    false => x.to_bits() == y.to_bits(),
                    true => (x - y).abs() <= 1e-6 * (1.0 + x.abs()),
                }),
                "{}x{}x{}: the fastest code and the AVX2 code differ",
                a.rows(),
                a.cols(),
                b.cols()
            );
        }
        fast
    }

    #[test]
    fn the_product_by_groups_of_columns_gives_the_bits_of_the_one_by_groups_of_rows() {
        if !scatters(16) {
            return;
        }
        let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        // Rows over one pass (128) and a last pass cut short; inner sizes that leave the last
        // group of columns with 1 to 3 of them; widths inside one block (80), at its edge, and
        // past it with a last block cut inside a vector; with and without the ReLU.
        for &(m, k) in &[(5, 7), (130, 50), (300, 33), (128, 784)] {
            for &n in &[16, 17, 80, 81, 100, 392] {
                let mut a = matrix(m, k, 0.15, 3 + n as u64);
                // A row without any non-zero: its outputs are the bias, −0 included.
                a[..k].fill(0.0);
                let b = matrix(k, n, 1.0, 11);
                let mut bias = matrix(1, n, 1.0, 5);
                bias[0] = -0.0;
                let bv = View::dense(&b, k, n);
                let rows = Groups::of_rows(View::dense(&a, m, k)).expect("15% is sparse");
                let cols = Groups::of_columns(View::dense(&a, m, k)).expect("15% is sparse");
                for relu in [false, true] {
                    let mut want = Vec::with_capacity(m * n);
                    for _ in 0..m {
                        want.extend_from_slice(&bias);
                    }
                    matmul_acc(&mut want, &rows, bv);
                    if relu {
                        for v in &mut want {
                            *v = v.max(0.0);
                        }
                    }
                    // On the pool (split by passes and blocks) and on one thread, as in a shard.
                    let pooled = linear_by_columns(&cols, bv, &bias, relu);
                    let alone = rayon::ThreadPoolBuilder::new()
                        .num_threads(1)
                        .build()
                        .unwrap()
                        .install(|| linear_by_columns(&cols, bv, &bias, relu));
                    // The one difference: a sum that stays at a −0 bias (its row adds only
                    // zeros) keeps its sign here, where the groups of rows may add `+0`. The
                    // ReLU makes both +0.
                    let signless = |v: &[f32]| {
                        v.iter()
                            .map(|&v| if v == 0.0 && !relu { 0 } else { v.to_bits() })
                            .collect::<Vec<_>>()
                    };
                    assert_eq!(
                        signless(&pooled),
                        signless(&want),
                        "{m}x{k}x{n} relu {relu}"
                    );
                    assert_eq!(
                        bits(&alone),
                        bits(&pooled),
                        "{m}x{k}x{n} relu {relu}, one thread"
                    );
                    assert!(pooled[0].to_bits() == (-0f32).to_bits() || relu);
                }
            }
        }
    }

    #[test]
    fn sparse_products_match_the_dense_ones_for_every_shape() {
        // Row counts that leave the last group short; widths around the vector and block
        // sizes of AVX-512 (16, 64, 80), AVX2 (8, 16) and scalar code: whole blocks, a last
        // block cut inside a vector, and outputs narrower than one vector. The forward form
        // (`a` by rows) and the weight gradient's (`aᵀ` by columns of `a`).
        for &(m, k) in &[(37, 50), (60, 20), (9, 300), (4, 7)] {
            for &n in &[1, 7, 8, 15, 16, 17, 33, 64, 65, 80, 100, 392] {
                let a = matrix(m, k, 0.08, 1 + n as u64);
                let b = matrix(k, n, 1.0, 99);
                let start: Vec<f32> = (0..m * n).map(|i| i as f32 * 0.001).collect();
                let rows = Groups::of_rows(View::dense(&a, m, k)).expect("8% is sparse");
                assert_eq!((rows.rows(), rows.cols()), (m, k));
                let got = both(&start, &rows, View::dense(&b, k, n));
                let onto_zeros = both(&vec![0.0; m * n], &rows, View::dense(&b, k, n));
                let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                let fresh = matmul_new(&rows, View::dense(&b, k, n));
                assert_eq!(bits(&fresh), bits(&onto_zeros), "{m}x{k}x{n}, a new output");
                let want = reference(&a, &b, m, k, n);
                for i in 0..m * n {
                    let w = want[i] + start[i] as f64;
                    assert!(
                        (got[i] as f64 - w).abs() < 1e-5,
                        "{m}x{k}x{n} [{i}]: {} vs {w}",
                        got[i]
                    );
                }
                // `aᵀ·c` with `c` `[m, n]`: the weight gradient.
                let c = matrix(m, n, 1.0, 7);
                let cols = Groups::of_columns(View::dense(&a, m, k)).expect("sparse");
                assert_eq!((cols.rows(), cols.cols()), (k, m));
                let got = both(&vec![0.0; k * n], &cols, View::dense(&c, m, n));
                // A new output, not zero-filled first (groups without columns among them:
                // 8% non-zeros in 4 to 60 rows), on the pool and on one thread as in a shard.
                let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                let fresh = matmul_new(&cols, View::dense(&c, m, n));
                let serial = super::super::as_task(|| matmul_new(&cols, View::dense(&c, m, n)));
                assert_eq!(bits(&fresh), bits(&got), "{m}x{k}x{n}ᵀ, a new output");
                assert_eq!(
                    bits(&serial),
                    bits(&got),
                    "{m}x{k}x{n}ᵀ, a new output, one thread"
                );
                // Stored whole: over NaNs, none is left (a new buffer may hold zeros anyway).
                #[cfg(target_arch = "x86_64")]
                if n >= 16 && std::arch::is_x86_feature_detected!("avx512f") {
                    let mut poisoned = vec![f32::NAN; k * n];
                    // SAFETY: the CPU has AVX-512F; `poisoned` holds the `k·n` values of all
                    // the groups' rows and is borrowed mutably for the call.
                    unsafe {
                        avx512::product_fresh(
                            poisoned.as_mut_ptr(),
                            k * n,
                            &cols,
                            0,
                            View::dense(&c, m, n),
                        )
                    };
                    assert_eq!(bits(&poisoned), bits(&got), "{m}x{k}x{n}ᵀ, over NaNs");
                }
                let want = reference(&transposed(&a, m, k), &c, k, m, n);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (*g as f64 - w).abs() < 1e-5,
                        "{m}x{k}x{n}ᵀ [{i}]: {g} vs {w}"
                    );
                }
            }
        }
    }

    #[test]
    fn groups_keep_exactly_the_columns_where_a_row_is_non_zero() {
        // Zeros, −0 (zero), NaN and infinities (non-zero) in every placement, row lengths 1
        // to 40 around the 16-column vectors, 1 to 6 rows (a group short of 4, one full, one
        // and a part).
        let specials = [
            0.0,
            -0.0,
            f32::NAN,
            1.5,
            0.0,
            f32::INFINITY,
            -2.0,
            0.0,
            1e-30,
        ];
        for rows in 1..=6 {
            for len in 1..=40 {
                let a: Vec<f32> = (0..rows * len)
                    .map(|i| specials[(i * 5 + len + rows) % specials.len()])
                    .collect();
                let live = |v: f32| v != 0.0;
                let by_rows = Groups::rows_within(View::dense(&a, rows, len), 1.0);
                let by_cols = Groups::columns_within(View::dense(&a, rows, len), 1.0);
                // Plain loops for both forms: group `g` keeps position `p` (a column of `a`,
                // or a row of `a` for the columns form) where one of its members is live.
                let check = |m: &Groups,
                             members: usize,
                             positions: usize,
                             at: &dyn Fn(usize, usize) -> f32| {
                    for g in 0..members.div_ceil(R) {
                        let (idx, vals) = m.group(g);
                        let want: Vec<u32> = (0..positions)
                            .filter(|&p| {
                                (0..R).any(|i| g * R + i < members && live(at(g * R + i, p)))
                            })
                            .map(|p| p as u32)
                            .collect();
                        assert_eq!(idx, &want[..], "{rows}x{len}, group {g}");
                        for (q, &p) in idx.iter().enumerate() {
                            for (i, v) in vals.iter().enumerate() {
                                let want = if g * R + i < members {
                                    at(g * R + i, p as usize)
                                } else {
                                    0.0
                                };
                                assert_eq!(
                                    v[q].to_bits(),
                                    want.to_bits(),
                                    "{rows}x{len}, group {g}"
                                );
                            }
                        }
                    }
                };
                let by_rows = by_rows.expect("no density limit");
                let by_cols = by_cols.expect("no density limit");
                check(&by_rows, rows, len, &|r, c| a[r * len + c]);
                check(&by_cols, len, rows, &|c, r| a[r * len + c]);
                // The limit on the fraction of non-zeros: `None` past it.
                let live = a.iter().filter(|v| **v != 0.0).count() as f64 / a.len() as f64;
                for within in [Groups::rows_within, Groups::columns_within] {
                    assert!(within(View::dense(&a, rows, len), live + 1e-9).is_some());
                    assert!(within(View::dense(&a, rows, len), live - 1e-9).is_none());
                }
                // (The columns form's fastest code against the plain loop: the next test.)
                let group: [&[f32]; R] =
                    std::array::from_fn(|i| &a[(i % rows) * len..(i % rows + 1) * len]);
                let (mut idx, mut val) = (vec![7u32; len], vec![7f32; R * len]);
                let (mut idx2, mut val2) = (vec![9u32; len], vec![9f32; R * len]);
                let (k, nnz) = gather_rows(group, &mut idx, &mut val);
                assert_eq!(
                    (k, nnz),
                    row_gatherer()(group, &mut idx2, &mut val2),
                    "{rows}x{len}"
                );
                let live = group.iter().flat_map(|r| r.iter()).filter(|v| **v != 0.0);
                assert_eq!(nnz, live.count());
                assert_eq!(idx[..k], idx2[..k]);
                for i in 0..R {
                    let (x, y) = (&val[i * len..i * len + k], &val2[i * len..i * len + k]);
                    assert!(x.iter().zip(y).all(|(x, y)| x.to_bits() == y.to_bits()));
                }
            }
        }
    }

    #[test]
    fn groups_of_columns_match_the_plain_loop_for_every_shape() {
        // Row counts around the 16-row blocks the AVX-512 code transposes (one short block,
        // one whole, one and a part, several), widths around its 16-column blocks and the
        // groups of 4 (a last group cut short), with zeros, −0, NaN and infinities.
        let specials = [
            0.0,
            -0.0,
            f32::NAN,
            1.5,
            0.0,
            f32::INFINITY,
            -2.0,
            0.0,
            1e-30,
            0.0,
        ];
        for rows in [1, 15, 16, 17, 40, 130] {
            for cols in [1, 3, 4, 15, 16, 17, 33, 100] {
                let a: Vec<f32> = (0..rows * cols)
                    .map(|i| specials[(i * 7 + i / 13 + cols) % specials.len()])
                    .collect();
                let got = Groups::columns_within(View::dense(&a, rows, cols), 1.0)
                    .expect("no density limit");
                let mut want = Groups::empty(cols, rows);
                let mut nnz = 0;
                for r in 0..rows {
                    nnz += want.push_row(r, &a[r * cols..(r + 1) * cols]);
                }
                assert_eq!(got.len, want.len, "{rows}x{cols}: group lengths");
                for g in 0..want.len.len() {
                    let ((gi, gv), (wi, wv)) = (got.group(g), want.group(g));
                    assert_eq!(gi, wi, "{rows}x{cols}: group {g}'s rows");
                    for (x, y) in gv.iter().zip(wv) {
                        assert!(
                            x.iter().zip(y).all(|(x, y)| x.to_bits() == y.to_bits()),
                            "{rows}x{cols}: group {g}'s values"
                        );
                    }
                }
                // The density limit counts the same non-zeros.
                let dense = nnz as f64 / (rows * cols) as f64;
                assert!(
                    Groups::columns_within(View::dense(&a, rows, cols), dense + 1e-9).is_some()
                );
                if nnz > 0 {
                    assert!(
                        Groups::columns_within(View::dense(&a, rows, cols), dense - 1e-9).is_none()
                    );
                }
            }
        }
    }

    #[test]
    fn dense_operands_are_left_to_gemm() {
        let a = matrix(10, 10, 0.9, 3);
        assert!(Groups::of_rows(View::dense(&a, 10, 10)).is_none());
        assert!(Groups::of_columns(View::dense(&a, 10, 10)).is_none());
        let a = matrix(10, 10, 0.1, 3);
        assert!(Groups::of_rows(View::dense(&a, 10, 10)).is_some());
        // A view whose rows are not contiguous is left to gemm too.
        assert!(Groups::of_rows(View::dense(&a, 10, 10).t()).is_none());
        assert!(Groups::of_columns(View::dense(&a, 10, 10).t()).is_none());
        // An all-zero matrix is as sparse as it gets: the product adds nothing.
        let z = vec![0f32; 12];
        let groups = Groups::of_rows(View::dense(&z, 3, 4)).expect("sparse");
        let b = matrix(4, 20, 1.0, 4);
        let out = both(&[1f32; 60], &groups, View::dense(&b, 4, 20));
        assert!(out.iter().all(|&v| v == 1.0));
    }
}
