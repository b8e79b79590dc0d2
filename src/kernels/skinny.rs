//! Matrix products with a short side: a linear layer into a narrow code (`[n, 392]·[392, 8]`
//! in the mlp), or the weight gradient of a layer into or out of one (`[8, n]·[n, 392]`,
//! `[392, n]·[n, 8]`).
//!
//! gemm runs these through kernels that fill 64 × 6 tiles of the output, packing operands for
//! them, so with 8 rows or 8 columns most of each tile is padding: 1.7 to 3 times the time of
//! the kernels here on the mlp's shapes, timed in training (BENCHMARKS.md). Here a tile of `R` rows by `V` vectors
//! of the output holds its sums in registers over the whole depth: for each step of the depth,
//! `V` vectors of the right operand's row are loaded and each of the `R` values of the left
//! operand's column broadcast. A product with few columns and a left operand stored by
//! columns (a weight gradient `xᵀ·g`) is computed transposed, so that its long side runs along
//! the vectors, then written back transposed.
//!
//! Every output is summed from zero over the whole depth in order, by fused multiply-adds,
//! and added to the destination once when accumulating: what gemm does for depths within one
//! of its blocks (at least 512 deep), so the results are gemm's there to the bit.
//! No crate in the build has kernels for these shapes (faer and burn use gemm's), hence this
//! file.

use super::matmul::{has_avx512, View};

/// The most rows (or columns) of a product's short side.
const SHORT: usize = 16;

/// The least depth: below it gemm's kernels are as fast (measured on the mlp's 8-deep
/// products: BENCHMARKS.md).
const MIN_DEPTH: usize = 17;

/// The greatest depth: gemm sums deeper products in blocks of depth, each added to the
/// output, which these kernels do not reproduce; such products stay with gemm, so that every
/// model trains to the same values as before these kernels.
const MAX_DEPTH: usize = super::matmul::ONE_PASS_DEPTH;

/// The least product (multiply-adds) split over threads when not in a shard.
const PARALLEL_MIN: usize = 1 << 20;

/// How a product is cut into tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    /// At most [`SHORT`] rows (a wide output): tiles of 8 rows by 3 vectors of columns.
    Wide,
    /// At most [`SHORT`] columns, computed transposed (the left operand's columns are
    /// contiguous): `(a·b)ᵀ = bᵀ·aᵀ` has few rows.
    Transposed,
    /// At most [`SHORT`] columns (a narrow output): tiles of 8 rows by one vector.
    Narrow,
}

/// The way [`product`] computes `a·b`, or `None` where gemm should: without AVX-512, a depth
/// outside [`MIN_DEPTH`]`..=`[`MAX_DEPTH`], no short side, an output of at most 16 × 16
/// (gemm's own small-product kernels), or an operand laid out otherwise than the tiles read
/// it.
pub(super) fn shape(a: &View<'_>, b: &View<'_>) -> Option<Shape> {
    let (m, k, n) = (a.rows(), a.cols(), b.cols());
    if !(MIN_DEPTH..=MAX_DEPTH).contains(&k) || m < 2 || n < 2 || m * n <= 256 || !has_avx512() {
        return None;
    }
    if m <= SHORT && b.row_contiguous() {
        Some(Shape::Wide)
    } else if n <= SHORT && a.t().row_contiguous() {
        Some(Shape::Transposed)
    } else if n <= SHORT && b.row_contiguous() {
        Some(Shape::Narrow)
    } else {
        None
    }
}

/// `dst ← (accumulate ? dst : 0) + a·b`, `dst` row-major `[a.rows, b.cols]`, cut as `how`
/// (from [`shape`]). On the calling thread in a shard ([`super::in_task`]) or when smaller
/// than [`PARALLEL_MIN`], over the pool's threads otherwise; each output has the same bits
/// either way. Without `accumulate` every element of `dst` is written and none read.
///
/// # Safety
/// `how` is `shape(&a, &b)`; `dst` is valid for writes of `a.rows · b.cols` elements (and for
/// reads of as many, initialised, when `accumulate`), and aliases neither operand for the
/// call's duration.
pub(super) unsafe fn product(
    dst: *mut f32,
    a: View<'_>,
    b: View<'_>,
    how: Shape,
    accumulate: bool,
) {
    assert_eq!(
        shape(&a, &b),
        Some(how),
        "skinny::product: operands it does not take"
    );
    #[cfg(target_arch = "x86_64")]
    match how {
        // SAFETY (all three): `shape` holds, so the CPU has AVX-512F and the operands are laid
        // out as each form reads them; `dst` is the caller's.
        Shape::Wide | Shape::Narrow => unsafe { avx512::tiles(dst, a, b, accumulate) },
        Shape::Transposed => {
            let (m, n) = (a.rows(), b.cols());
            // `bᵀ·aᵀ`, `[n, m]`, then each of its values added (or stored) at its place.
            let mut t: Vec<f32> = Vec::with_capacity(m * n);
            // SAFETY: `bᵀ` has `n ≤ SHORT` rows and `aᵀ` contiguous rows (`shape`); the
            // buffer has room for its `n · m` values, every one written (no accumulation),
            // so `set_len` exposes only initialised values.
            unsafe {
                avx512::tiles(t.as_mut_ptr(), b.t(), a.t(), false);
                t.set_len(m * n);
            }
            for (c, row) in t.chunks_exact(m).enumerate() {
                for (i, &v) in row.iter().enumerate() {
                    // SAFETY: `i < m`, `c < n`: inside the caller's `m · n` elements.
                    unsafe {
                        let d = dst.add(i * n + c);
                        *d = if accumulate { *d + v } else { v };
                    }
                }
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (dst, accumulate);
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::super::matmul::Out;
    use super::{View, PARALLEL_MIN, SHORT};

    const LANES: usize = 16;
    /// Rows per tile.
    const R: usize = 8;

    /// `dst ← (accumulate ? dst : 0) + a·b` in tiles of [`R`] rows by up to three vectors
    /// (one when `b` has at most [`SHORT`] columns).
    ///
    /// # Safety
    /// The CPU has AVX-512F; `b` has contiguous rows; `dst` is valid for writes of
    /// `a.rows · b.cols` elements (and reads of as many, initialised, when `accumulate`) and
    /// aliases neither operand.
    pub(super) unsafe fn tiles(dst: *mut f32, a: View<'_>, b: View<'_>, accumulate: bool) {
        let (m, k, n) = (a.rows(), a.cols(), b.cols());
        assert!(k == b.rows() && m > 0 && k > 0 && n > 0 && b.row_contiguous());
        let width = if n <= SHORT { LANES } else { 3 * LANES };
        let out = Out(dst);
        let run = move |(i, j): (usize, usize)| {
            let (ap, ars, aks) = a.raw();
            let (bp, ldb) = b.rows_raw();
            let rows = (m - i).min(R);
            let w = (n - j).min(width);
            let vectors = w.div_ceil(LANES);
            let mask = ((1u32 << (w - (vectors - 1) * LANES)) - 1) as u16;
            // SAFETY: rows `i..i + rows` and columns `j..j + w` lie inside the output, `a`'s
            // rows `i..` and `b`'s columns `j..` inside the operands (`raw`, `rows_raw`); the
            // CPU has AVX-512F (this function's contract).
            unsafe {
                let d = out.at(i * n + j);
                let (a, b) = (ap.add(i * ars), bp.add(j));
                let args = (d, n, (a, ars, aks), (b, ldb), k, rows, mask, accumulate);
                match vectors {
                    1 => tile::<1>(args),
                    2 => tile::<2>(args),
                    _ => tile::<3>(args),
                }
            }
        };
        let tasks = (0..n)
            .step_by(width)
            .flat_map(|j| (0..m).step_by(R).map(move |i| (i, j)));
        if super::super::in_task() || m * n * k < PARALLEL_MIN {
            tasks.for_each(run);
        } else {
            use rayon::prelude::*;
            tasks.collect::<Vec<_>>().into_par_iter().for_each(run);
        }
    }

    /// A tile's arguments: its first output, the output's row stride, the left operand's
    /// first element of the tile's rows with its row and depth strides, the right operand's
    /// first element of the tile's columns with its row stride, the depth, the tile's rows
    /// (at most [`R`]), the lanes of its last vector, and whether to accumulate.
    type Tile = (
        *mut f32,
        usize,
        (*const f32, usize, usize),
        (*const f32, usize),
        usize,
        usize,
        u16,
        bool,
    );

    /// One tile of `rows` rows by `V` vectors (the last one's lanes `mask`): each sum from
    /// zero over the depth in order, then stored, or added to the output once.
    ///
    /// # Safety
    /// The CPU has AVX-512F; the tile's rows of the left operand (`rows` rows, `k` deep) and
    /// the right operand's `k` rows of the tile's columns lie inside them, and the tile inside
    /// the output.
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const V: usize>(
        (dst, ldd, (a, ars, aks), (b, ldb), k, rows, mask, accumulate): Tile,
    ) {
        let lanes = |t: usize| if t + 1 == V { mask } else { !0 };
        // Rows past the tile's repeat its last one: their sums are computed and never stored.
        let row: [usize; R] = std::array::from_fn(|r| r.min(rows - 1) * ars);
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        for p in 0..k {
            // SAFETY: `p < k`: a row of `b` and a column of the tile's rows of `a`, all inside
            // them (this function's contract); masked lanes are not read.
            unsafe {
                let bp = b.add(p * ldb);
                let bv: [__m512; V] =
                    std::array::from_fn(|t| _mm512_maskz_loadu_ps(lanes(t), bp.add(t * LANES)));
                let ap = a.add(p * aks);
                for (acc, &r) in acc.iter_mut().zip(&row) {
                    let x = _mm512_set1_ps(*ap.add(r));
                    for (s, &w) in acc.iter_mut().zip(&bv) {
                        *s = _mm512_fmadd_ps(x, w, *s);
                    }
                }
            }
        }
        for (r, acc) in acc.iter().enumerate().take(rows) {
            for (t, &s) in acc.iter().enumerate() {
                // SAFETY: row `r < rows` of the tile, lanes inside it (this function's
                // contract).
                unsafe {
                    let d = dst.add(r * ldd + t * LANES);
                    let v = if accumulate {
                        _mm512_add_ps(_mm512_maskz_loadu_ps(lanes(t), d), s)
                    } else {
                        s
                    };
                    _mm512_mask_storeu_ps(d, lanes(t), v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 + seed * 104_729) % 10_007) as f32 / 10_007.0 - 0.5)
            .collect()
    }

    /// `(accumulate ? dst : 0) + a·b` with each sum from zero over the depth in order by
    /// fused multiply-adds, then one addition: the order the kernels promise.
    fn ordered(dst: &[f32], a: View<'_>, b: View<'_>, accumulate: bool) -> Vec<f32> {
        let (m, k, n) = (a.rows(), a.cols(), b.cols());
        let at = |v: &View<'_>, r: usize, c: usize| {
            let (p, rs, cs) = v.raw();
            // SAFETY: `r`, `c` inside the view.
            unsafe { *p.add(r * rs + c * cs) }
        };
        let mut out = dst.to_vec();
        for i in 0..m {
            for j in 0..n {
                let s = (0..k).fold(0f32, |s, p| at(&a, i, p).mul_add(at(&b, p, j), s));
                out[i * n + j] = if accumulate { dst[i * n + j] + s } else { s };
            }
        }
        out
    }

    #[test]
    fn short_products_sum_every_output_in_order_for_every_shape() {
        if !has_avx512() {
            return;
        }
        // (m, k, n, a stored transposed, b stored transposed, the form expected)
        let cases = [
            (128, 392, 8, false, false, Some(Shape::Narrow)),
            (392, 128, 8, true, false, Some(Shape::Transposed)),
            (8, 128, 392, true, false, Some(Shape::Wide)),
            (13, 70, 37, false, false, Some(Shape::Wide)),
            (16, 17, 100, true, false, Some(Shape::Wide)),
            (45, 33, 16, false, false, Some(Shape::Narrow)),
            (61, 19, 5, true, false, Some(Shape::Transposed)),
            (600, 300, 9, true, false, Some(Shape::Transposed)),
            (700, 400, 12, false, false, Some(Shape::Narrow)),
            (12, 512, 900, false, false, Some(Shape::Wide)),
            // Not taken: too shallow, too small, no short side, or laid out otherwise.
            (128, 8, 392, false, false, None),
            (12, 513, 900, false, false, None),
            (16, 64, 16, false, false, None),
            (64, 64, 64, false, false, None),
            (8, 128, 392, false, true, None),
        ];
        for (m, k, n, ta, tb, want) in cases {
            let (ad, bd) = (values(m * k, 1), values(k * n, 2));
            let a = if ta {
                View::dense(&ad, k, m).t()
            } else {
                View::dense(&ad, m, k)
            };
            let b = if tb {
                View::dense(&bd, n, k).t()
            } else {
                View::dense(&bd, k, n)
            };
            let how = shape(&a, &b);
            assert_eq!(how, want, "{m}×{k}×{n} {ta} {tb}");
            let Some(how) = how else { continue };
            let start = values(m * n, 3);
            for accumulate in [false, true] {
                let want = ordered(&start, a, b, accumulate);
                let mut got = if accumulate {
                    start.clone()
                } else {
                    vec![f32::NAN; m * n]
                };
                // SAFETY: `how` is `shape(&a, &b)`, `got` holds `m · n` values.
                unsafe { product(got.as_mut_ptr(), a, b, how, accumulate) };
                let same = got
                    .iter()
                    .zip(&want)
                    .all(|(g, w)| g.to_bits() == w.to_bits());
                assert!(same, "{m}×{k}×{n} {ta} {tb} accumulate {accumulate}");
            }
        }
    }
}
