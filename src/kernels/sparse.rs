//! Matrix products whose left operand is mostly zeros: the first dense layer of a model fed
//! MNIST pixels, where about 81% of the inputs are exactly 0 (blank background).
//!
//! `gemm` multiplies every zero. Here the left operand is compressed to its non-zero entries
//! (compressed sparse rows) and each output row is the sum of the right operand's rows those
//! entries select, scaled: `out[r, :] += Σ a[r, c] · b[c, :]`. That is the forward product of
//! the layer (`x·w`, `x` sparse) and its weight gradient (`xᵀ·g`, `xᵀ` sparse). No crate does
//! this for dense right operands at gemm-like speed (sparse crates such as sprs multiply
//! scalar by scalar), hence this file; the SIMD goes through `pulp` (already in the build
//! through `gemm`), which picks AVX-512, AVX2+FMA or plain code at run time, safely.

use pulp::{Arch, Simd, WithSimd};
use rayon::prelude::*;

use super::matmul::View;

/// The largest fraction of non-zero entries for which the sparse product is used. Measured on
/// one core for 128 images × 784 → 392 (BENCHMARKS.md, session 6): compressing plus the sparse
/// product beat gemm (735 µs) up to about 30% non-zeros for the forward product and 40% for
/// the weight gradient; MNIST inputs have 19%.
pub(super) const MAX_DENSITY: f64 = 0.3;

/// Output rows per rayon task when the product is split over threads (outside shards).
const ROWS_PER_TASK: usize = 16;

/// Rows of a tall right operand per panel (see [`matmul_acc`]): 64 rows of a block 8 vectors
/// wide are 32 KiB, which stays in a 48 KiB L1 cache beside the output rows passing through.
const PANEL: usize = 64;

/// A matrix in compressed sparse row form: row `r`'s entries are `idx[ptr[r]..ptr[r + 1]]`
/// (column indices, increasing) and the matching `val`.
#[derive(Debug, Clone)]
pub(super) struct Csr {
    rows: usize,
    cols: usize,
    ptr: Vec<usize>,
    idx: Vec<u32>,
    val: Vec<f32>,
}

impl Csr {
    /// The non-zero entries of `a`, or `None` when more than [`MAX_DENSITY`] of them are
    /// non-zero, or when `a`'s rows are not contiguous (then the caller uses the dense
    /// product).
    pub(super) fn sparse(a: View<'_>) -> Option<Csr> {
        let (rows, cols) = (a.rows(), a.cols());
        if rows == 0 || cols == 0 || u32::try_from(cols.max(rows)).is_err() || !a.row_contiguous() {
            return None;
        }
        Self::from_rows(a, ((rows * cols) as f64 * MAX_DENSITY) as usize)
    }

    /// Compresses a view whose rows are contiguous; `None` past `max_nnz` non-zeros.
    fn from_rows(a: View<'_>, max_nnz: usize) -> Option<Csr> {
        let cols = a.cols();
        // Room for one more row past the limit, checked after each row.
        let cap = max_nnz + cols;
        let mut ptr = Vec::with_capacity(a.rows() + 1);
        let mut idx = vec![0u32; cap];
        let mut val = vec![0f32; cap];
        let compress = row_compressor();
        let mut n = 0;
        ptr.push(0);
        for r in 0..a.rows() {
            n += compress(a.row(r), &mut idx[n..n + cols], &mut val[n..n + cols]);
            if n > max_nnz {
                return None;
            }
            ptr.push(n);
        }
        idx.truncate(n);
        val.truncate(n);
        Some(Csr {
            rows: a.rows(),
            cols,
            ptr,
            idx,
            val,
        })
    }

    /// The transpose, by a counting sort on the column index (keeps indices increasing).
    pub(super) fn transpose(&self) -> Csr {
        let mut ptr = vec![0usize; self.cols + 1];
        for &c in &self.idx {
            ptr[c as usize + 1] += 1;
        }
        for c in 0..self.cols {
            ptr[c + 1] += ptr[c];
        }
        let mut next = ptr.clone();
        let mut idx = vec![0u32; self.idx.len()];
        let mut val = vec![0f32; self.val.len()];
        for r in 0..self.rows {
            for k in self.ptr[r]..self.ptr[r + 1] {
                let c = self.idx[k] as usize;
                idx[next[c]] = r as u32;
                val[next[c]] = self.val[k];
                next[c] += 1;
            }
        }
        Csr {
            rows: self.cols,
            cols: self.rows,
            ptr,
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

    /// Row `r`'s column indices and values.
    fn row(&self, r: usize) -> (&[u32], &[f32]) {
        let span = self.ptr[r]..self.ptr[r + 1];
        (&self.idx[span.clone()], &self.val[span])
    }
}

/// The fastest [`compress_row`] this CPU has: AVX-512's compressing stores, or the plain loop.
fn row_compressor() -> fn(&[f32], &mut [u32], &mut [f32]) -> usize {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F, checked on the line above.
        return |row, idx, val| unsafe { avx512::compress_row(row, idx, val) };
    }
    compress_row
}

/// Writes the non-zero entries of `row` (NaNs count as non-zero, −0 as zero) to the front of
/// `val`, and their positions in `row` to the front of `idx`, in order; returns how many.
/// `idx` and `val` are at least as long as `row`; their first `row.len()` entries past the
/// count may be overwritten too. Written without a branch per entry (each
/// entry is stored, and the count moves on only past a non-zero), as a fifth of MNIST's
/// pixels are non-zero in no predictable pattern.
fn compress_row(row: &[f32], idx: &mut [u32], val: &mut [f32]) -> usize {
    let (idx, val) = (&mut idx[..row.len()], &mut val[..row.len()]);
    let mut k = 0;
    for (c, &v) in row.iter().enumerate() {
        idx[k] = c as u32;
        val[k] = v;
        k += usize::from(v != 0.0);
    }
    k
}

/// [`compress_row`] with AVX-512's compress instructions, 16 entries at a time, where the
/// plain loop stores every entry. `std::arch`, as no portable SIMD crate in the build offers
/// compression. The entries are compressed in registers and stored whole: a compressing
/// store straight to memory is microcoded, and slow, on some AVX-512 CPUs (AMD Zen 4).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    const LANES: usize = 16;

    /// [`super::compress_row`].
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn compress_row(row: &[f32], idx: &mut [u32], val: &mut [f32]) -> usize {
        assert!(
            idx.len() >= row.len() && val.len() >= row.len() && row.len() <= i32::MAX as usize,
            "compress_row: outputs shorter than the row"
        );
        let step = _mm512_set1_epi32(LANES as i32);
        let mut cols = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let mut k = 0;
        let whole = row.len() / LANES * LANES;
        for c in (0..whole).step_by(LANES) {
            // SAFETY: `c + 16 ≤ whole ≤ row.len()`: the load reads inside `row`. The stores
            // write 16 lanes from `k`, and `k` counts at most the `c` entries before this
            // vector, so they end by `c + 16 ≤ row.len() ≤` either output's length (lanes past
            // the count hold zeros, overwritten later or past what the caller keeps).
            unsafe {
                let v = _mm512_loadu_ps(row.as_ptr().add(c));
                let live = _mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(v, _mm512_setzero_ps());
                _mm512_storeu_ps(val.as_mut_ptr().add(k), _mm512_maskz_compress_ps(live, v));
                _mm512_storeu_si512(
                    idx.as_mut_ptr().add(k).cast(),
                    _mm512_maskz_compress_epi32(live, cols),
                );
                k += live.count_ones() as usize;
            }
            cols = _mm512_add_epi32(cols, step);
        }
        for (c, &v) in row.iter().enumerate().skip(whole) {
            if v != 0.0 {
                idx[k] = c as u32;
                val[k] = v;
                k += 1;
            }
        }
        k
    }
}

/// `out ← out + a·b` with `a` sparse `[R, C]`, `b` a `[C, o]` view with contiguous rows and
/// `out` row-major `[R, o]`. Runs on the calling thread in a rayon task (a shard: see
/// [`super::in_task`]), split over rows of `out` otherwise; sums run in increasing column
/// order of `a` whatever the thread count.
///
/// Each block of an output row's columns is summed in registers over the rows of `b` that
/// `a`'s row selects; the block loop is outside the row loop so the block's columns of `b` stay
/// in cache. Blocks are 8 vectors wide when `b` is tall (the forward product: `b` is a
/// 784-row weight) and 4 when it is short (the weight gradient: `b` is the batch's gradient,
/// whose 4-vector column block fits L1). A tall `b`'s block does not fit L1 (784 rows × 512
/// bytes), so it is taken in panels of [`PANEL`] rows, each read by every output row before
/// the next: an output row's registers are stored after each panel and reloaded for the next,
/// the sums still running in the same order. The widths and the panel height are the fastest
/// measured on one core for 128 MNIST images, 784×392 (BENCHMARKS.md, sessions 6 and 14).
pub(super) fn matmul_acc(out: &mut [f32], a: &Csr, b: View<'_>) {
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
    let task = |row0: usize, out: &mut [f32]| {
        if b.rows() > 256 {
            arch.dispatch(Rows::<8, PANEL> { out, a, row0, b })
        } else {
            arch.dispatch(Rows::<4, { usize::MAX }> { out, a, row0, b })
        }
    };
    if super::in_task() {
        task(0, out);
    } else {
        out.par_chunks_mut(ROWS_PER_TASK * o)
            .enumerate()
            .for_each(|(i, out)| task(i * ROWS_PER_TASK, out));
    }
}

/// The output rows `row0..` held in `out`, in column blocks of `V` vectors, each block of `b`
/// in panels of `P` rows (see [`matmul_acc`]).
struct Rows<'a, const V: usize, const P: usize> {
    out: &'a mut [f32],
    a: &'a Csr,
    row0: usize,
    b: View<'a>,
}

impl<const V: usize, const P: usize> WithSimd for Rows<'_, V, P> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Rows { out, a, row0, b } = self;
        let o = b.cols();
        let lanes = S::F32_LANES;
        if o < lanes {
            // Narrower than one vector: plain code.
            for (r, dst) in out.chunks_exact_mut(o).enumerate() {
                let (cols, vals) = a.row(row0 + r);
                for (&c, &v) in cols.iter().zip(vals) {
                    for (d, &w) in dst.iter_mut().zip(b.row(c as usize)) {
                        *d += v * w;
                    }
                }
            }
            return;
        }
        let block = V * lanes;
        let wide = o / block * block;
        let whole = o / lanes * lanes;
        // Where each output row's entries of each panel start, found once for all blocks by
        // one walk along each row: `bounds[r · (panels + 1) + p]` is the first entry of row
        // `r` whose column is at least `p · P`.
        let rows = if wide > 0 { out.len() / o } else { 0 };
        let panels = b.rows().div_ceil(P).max(1);
        let mut bounds = vec![0usize; rows * (panels + 1)];
        for (r, bounds) in bounds.chunks_exact_mut(panels + 1).enumerate() {
            let (start, end) = (a.ptr[row0 + r], a.ptr[row0 + r + 1]);
            let mut k = start;
            for (p, bound) in bounds.iter_mut().enumerate() {
                let first = p.saturating_mul(P);
                while k < end && (a.idx[k] as usize) < first {
                    k += 1;
                }
                *bound = k;
            }
            bounds[panels] = end;
        }
        for j in (0..wide).step_by(block) {
            for p in 0..panels {
                for (r, dst) in out.chunks_exact_mut(o).enumerate() {
                    let at = r * (panels + 1) + p;
                    let (start, stop) = (bounds[at], bounds[at + 1]);
                    if stop == start {
                        continue;
                    }
                    let (acc, _) = S::as_mut_simd_f32s(&mut dst[j..j + block]);
                    let mut s: [S::f32s; V] = std::array::from_fn(|t| acc[t]);
                    for (&c, &v) in a.idx[start..stop].iter().zip(&a.val[start..stop]) {
                        let (src, _) = S::as_simd_f32s(&b.row(c as usize)[j..j + block]);
                        let v = simd.splat_f32s(v);
                        for (s, &w) in s.iter_mut().zip(src) {
                            *s = simd.mul_add_e_f32s(v, w, *s);
                        }
                    }
                    acc.copy_from_slice(&s);
                }
            }
        }
        for j in (wide..whole).step_by(lanes) {
            for (r, dst) in out.chunks_exact_mut(o).enumerate() {
                let (cols, vals) = a.row(row0 + r);
                let (acc, _) = S::as_mut_simd_f32s(&mut dst[j..j + lanes]);
                let mut s = acc[0];
                for (&c, &v) in cols.iter().zip(vals) {
                    let (src, _) = S::as_simd_f32s(&b.row(c as usize)[j..j + lanes]);
                    s = simd.mul_add_e_f32s(simd.splat_f32s(v), src[0], s);
                }
                acc[0] = s;
            }
        }
        if whole < o {
            // The last `o − whole` columns: a whole vector ending at column `o` (overlapping
            // the previous one) summed from zero, of which only the new lanes are added.
            // Cheaper than a masked load per entry.
            let (j, fresh) = (o - lanes, o - whole);
            let mut lanes_out = vec![0f32; lanes];
            for (r, dst) in out.chunks_exact_mut(o).enumerate() {
                let (cols, vals) = a.row(row0 + r);
                let mut s = simd.splat_f32s(0.0);
                for (&c, &v) in cols.iter().zip(vals) {
                    let (src, _) = S::as_simd_f32s(&b.row(c as usize)[j..o]);
                    s = simd.mul_add_e_f32s(simd.splat_f32s(v), src[0], s);
                }
                S::as_mut_simd_f32s(&mut lanes_out).0[0] = s;
                for (d, &v) in dst[whole..].iter_mut().zip(&lanes_out[lanes - fresh..]) {
                    *d += v;
                }
            }
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

    #[test]
    fn sparse_product_matches_the_dense_one_for_every_column_tail() {
        // Widths around the vector and block sizes of AVX-512 (16, 64), AVX2 (8, 32) and
        // scalar code: full blocks, single vectors and partial vectors all get exercised, in
        // both loop orders (`b` with more rows than the output, and with fewer).
        for &(m, k) in &[(37, 50), (60, 20), (9, 300)] {
            for &n in &[1, 7, 8, 15, 16, 17, 33, 64, 65, 100, 392] {
                let a = matrix(m, k, 0.2, 1 + n as u64);
                let b = matrix(k, n, 1.0, 99);
                let csr = Csr::sparse(View::dense(&a, m, k)).expect("20% non-zeros is sparse");
                assert_eq!(csr.val.len(), a.iter().filter(|&&v| v != 0.0).count());
                let mut out: Vec<f32> = (0..m * n).map(|i| i as f32 * 0.001).collect();
                let start = out.clone();
                matmul_acc(&mut out, &csr, View::dense(&b, k, n));
                let want = reference(&a, &b, m, k, n);
                for i in 0..m * n {
                    let w = want[i] + start[i] as f64;
                    assert!(
                        (out[i] as f64 - w).abs() < 1e-5,
                        "{m}x{k}x{n} [{i}]: {} vs {w}",
                        out[i]
                    );
                }
            }
        }
    }

    #[test]
    fn every_row_compressor_keeps_the_non_zeros_in_order() {
        // Every row length from 1 to 40, with zeros, −0, NaN and infinities among the values.
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
        for len in 1..=40 {
            let row: Vec<f32> = (0..len)
                .map(|i| specials[(i * 5 + len) % specials.len()])
                .collect();
            let want: Vec<(u32, u32)> = row
                .iter()
                .enumerate()
                .filter(|(_, v)| **v != 0.0)
                .map(|(c, v)| (c as u32, v.to_bits()))
                .collect();
            for (name, f) in [
                (
                    "plain",
                    compress_row as fn(&[f32], &mut [u32], &mut [f32]) -> usize,
                ),
                ("fastest", row_compressor()),
            ] {
                let (mut idx, mut val) = (vec![u32::MAX; len], vec![7.0f32; len]);
                let k = f(&row, &mut idx, &mut val);
                let got: Vec<(u32, u32)> = idx[..k]
                    .iter()
                    .zip(&val[..k])
                    .map(|(&c, v)| (c, v.to_bits()))
                    .collect();
                assert_eq!(got, want, "{name}, row length {len}");
            }
        }
    }

    #[test]
    fn panels_give_the_sums_of_one_pass_bit_for_bit() {
        // A tall right operand taken in panels sums each output in the same order as one
        // pass over all its rows; rows with no entries in a panel are skipped.
        let (m, k) = (13, 300);
        for &n in &[16, 100, 128, 392] {
            let mut a = matrix(m, k, 0.2, 3 + n as u64);
            // A row without entries, and rows whose entries lie in one panel (the first, a
            // middle one, the last, shorter one), besides rows with entries in every panel.
            a[..k].fill(0.0);
            for (r, panel) in [(1, 0..64), (2, 128..192), (3, 256..300)] {
                for (c, v) in a[r * k..(r + 1) * k].iter_mut().enumerate() {
                    *v = if panel.contains(&c) {
                        1.0 + c as f32
                    } else {
                        0.0
                    };
                }
            }
            let b = matrix(k, n, 1.0, 17);
            let csr = Csr::sparse(View::dense(&a, m, k)).expect("sparse");
            let start: Vec<f32> = (0..m * n).map(|i| (i % 7) as f32 * 0.25).collect();
            let (mut one, mut panels) = (start.clone(), start.clone());
            let bv = View::dense(&b, k, n);
            Arch::new().dispatch(Rows::<8, { usize::MAX }> {
                out: &mut one,
                a: &csr,
                row0: 0,
                b: bv,
            });
            Arch::new().dispatch(Rows::<8, PANEL> {
                out: &mut panels,
                a: &csr,
                row0: 0,
                b: bv,
            });
            assert!(
                one.iter()
                    .zip(&panels)
                    .all(|(x, y)| x.to_bits() == y.to_bits()),
                "n = {n}"
            );
            assert_ne!(one, start, "the product added something");
        }
    }

    #[test]
    fn the_transpose_multiplies_as_the_transposed_matrix() {
        // The weight gradient's form: `xᵀ·g` through the transpose of `x`'s compression.
        let (m, k, n) = (20, 30, 24);
        let a = matrix(m, k, 0.25, 7); // stored [m, k]; used as aᵀ: [k, m]
        let b = matrix(m, n, 1.0, 8);
        let csr = Csr::sparse(View::dense(&a, m, k))
            .expect("sparse")
            .transpose();
        assert_eq!((csr.rows(), csr.cols()), (k, m));
        let mut dense_t = vec![0f32; k * m];
        for i in 0..m {
            for j in 0..k {
                dense_t[j * m + i] = a[i * k + j];
            }
        }
        let mut out = vec![0f32; k * n];
        matmul_acc(&mut out, &csr, View::dense(&b, m, n));
        let want = reference(&dense_t, &b, k, m, n);
        for (o, w) in out.iter().zip(&want) {
            assert!((*o as f64 - w).abs() < 1e-5);
        }
    }

    #[test]
    fn dense_operands_are_left_to_gemm() {
        let a = matrix(10, 10, 0.9, 3);
        assert!(Csr::sparse(View::dense(&a, 10, 10)).is_none());
        let a = matrix(10, 10, 0.1, 3);
        assert!(Csr::sparse(View::dense(&a, 10, 10)).is_some());
        // A view whose rows are not contiguous is left to gemm too.
        assert!(Csr::sparse(View::dense(&a, 10, 10).t()).is_none());
        // An all-zero matrix is as sparse as it gets: the product adds nothing.
        let z = vec![0f32; 12];
        let csr = Csr::sparse(View::dense(&z, 3, 4)).expect("sparse");
        let b = matrix(4, 5, 1.0, 4);
        let mut out = vec![1f32; 15];
        matmul_acc(&mut out, &csr, View::dense(&b, 4, 5));
        assert!(out.iter().all(|&v| v == 1.0));
    }
}
