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
//! The same tiles compute a linear layer's forward product and weight gradient over the
//! units of its input that some image turned on ([`picked`]): steps of the depth, or rows of
//! a transposed input, picked from a list, which gemm's packed kernels cannot skip.
//!
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

/// `a·b` (`[m, k]·[k, n]`, a new row-major `[m, n]`) over the rows `pick.0` of `a` (the other
/// rows of the output zero) and the steps `pick.1` of the depth (the others left out), in
/// the tiles of [`product`], each picked output summed from zero over the picked steps in
/// order by fused multiply-adds. `None` where these tiles do not take the operands: without
/// AVX-512, a depth outside [`MIN_DEPTH`]`..=`[`MAX_DEPTH`] (gemm's single block, whose
/// order this is), fewer than 2 rows or columns or an output of at most 16 × 16 (gemm's own
/// kernels for those), or `b` without contiguous rows.
///
/// Each list must be strictly increasing (the order of a sum's terms; no row written by two
/// tiles) and below its bound.
///
/// Used for a linear layer fed a ReLU's output, over its live units (`super::live`): a step
/// or row left out is one whose terms are all products of zero, which, with finite operands,
/// leave a sum's bits as they are (but for a sum that underflowed to −0), so the results are
/// gemm's over the whole product. (With a non-finite weight, gemm's `0·∞` would be NaN where
/// this skips it; training stops on weights that are not finite after every epoch.)
pub(super) fn picked(
    a: View<'_>,
    b: View<'_>,
    pick: (Option<&[usize]>, Option<&[usize]>),
) -> Option<Vec<f32>> {
    let (m, k, n) = (a.rows(), a.cols(), b.cols());
    let ok = (MIN_DEPTH..=MAX_DEPTH).contains(&k)
        && m >= 2
        && n >= 2
        && m * n > 256
        && k == b.rows()
        && b.row_contiguous()
        && has_avx512()
        && pick.0.is_none_or(|p| increasing_below(p, m))
        && pick.1.is_none_or(|p| increasing_below(p, k));
    if !ok {
        return None;
    }
    let len = m * n;
    let mut out: Vec<f32> = Vec::with_capacity(len);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU has AVX-512F, `b` has contiguous rows, and every picked row and step
    // lies inside `a` (checked above); the buffer has room for the `m · n` outputs, the
    // picked rows all written and none read (no accumulation).
    unsafe {
        avx512::picked_tiles(out.as_mut_ptr(), a, b, pick, 3 * avx512::LANES, false);
    }
    if let Some(rows) = pick.0 {
        let mut kept = vec![false; m];
        for &r in rows {
            kept[r] = true;
        }
        for (r, _) in kept.iter().enumerate().filter(|(_, &on)| !on) {
            // SAFETY: row `r < m` lies inside the buffer's `m · n` values.
            unsafe { std::ptr::write_bytes(out.as_mut_ptr().add(r * n), 0, n) };
        }
    }
    // SAFETY: every row was written: the picked ones by the tiles, the others with zeros.
    unsafe { out.set_len(len) };
    Some(out)
}

/// Whether `list` is not empty, strictly increasing, and below `bound`.
fn increasing_below(list: &[usize], bound: usize) -> bool {
    list.last().is_some_and(|&l| l < bound) && list.windows(2).all(|w| w[0] < w[1])
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::super::matmul::{Out, Picked};
    use super::{View, PARALLEL_MIN, SHORT};

    pub(super) const LANES: usize = 16;
    /// Rows per tile.
    const R: usize = 8;
    /// How many steps of a picked depth ahead the right operand's row is prefetched.
    const AHEAD: usize = 4;

    /// `dst ← (accumulate ? dst : 0) + a·b` in tiles of [`R`] rows by up to three vectors
    /// (one when `b` has at most [`SHORT`] columns).
    ///
    /// # Safety
    /// The CPU has AVX-512F; `b` has contiguous rows; `dst` is valid for writes of
    /// `a.rows · b.cols` elements (and reads of as many, initialised, when `accumulate`) and
    /// aliases neither operand.
    pub(super) unsafe fn tiles(dst: *mut f32, a: View<'_>, b: View<'_>, accumulate: bool) {
        let width = if b.cols() <= SHORT { LANES } else { 3 * LANES };
        // SAFETY: the caller's contract, with every row and every step of the depth taken.
        unsafe { picked_tiles(dst, a, b, (None, None), width, accumulate) };
    }

    /// [`tiles`] over the rows `pick.0` of `a` (all, in order, when `None`), each written to
    /// its own row of `dst` (`[a.rows, b.cols]`), and over the steps `pick.1` of the depth
    /// (all, in order, when `None`), in tiles `width` columns wide (a multiple of 16, at most
    /// 48). Each output takes its sums in the order of the steps given.
    ///
    /// # Safety
    /// As [`tiles`]; the picked rows are distinct (no two tasks write one row) and less than
    /// `a.rows`, every picked step less than `a.cols`; `dst`'s rows not picked are neither
    /// read nor written.
    pub(super) unsafe fn picked_tiles(
        dst: *mut f32,
        a: View<'_>,
        b: View<'_>,
        pick: (Option<&[usize]>, Option<&[usize]>),
        width: usize,
        accumulate: bool,
    ) {
        let (k, n) = (a.cols(), b.cols());
        let m = pick.0.map_or(a.rows(), <[usize]>::len);
        let steps = pick.1.map_or(k, <[usize]>::len);
        assert!(k == b.rows() && m > 0 && steps > 0 && n > 0 && b.row_contiguous());
        assert!(width.is_multiple_of(LANES) && (LANES..=3 * LANES).contains(&width));
        let (rows_pick, depth_pick) = (pick.0.map(Picked::of), pick.1.map(Picked::of));
        let out = Out(dst);
        let run = move |(i, j): (usize, usize)| {
            let (ap, ars, aks) = a.raw();
            let (bp, ldb) = b.rows_raw();
            let rows = (m - i).min(R);
            let w = (n - j).min(width);
            let vectors = w.div_ceil(LANES);
            let mask = ((1u32 << (w - (vectors - 1) * LANES)) - 1) as u16;
            // Rows past the tile's repeat its last one: their sums are computed and never
            // stored.
            // SAFETY: `i + r < m`: a picked row's number, inside the caller's list.
            let row: [usize; R] = std::array::from_fn(|r| {
                let r = i + r.min(rows - 1);
                rows_pick.map_or(r, |p| unsafe { p.at(r) })
            });
            // SAFETY: every row number is less than `a.rows` (the caller's contract on
            // `pick`), columns `j..j + w` lie inside the output and `b`'s columns `j..` inside
            // `b` (`raw`, `rows_raw`); the CPU has AVX-512F (this function's contract).
            unsafe {
                let d = out.at(j);
                let a = (ap, row.map(|r| r * ars), aks);
                let args = (d, n, row, a, (bp.add(j), ldb), rows, mask, accumulate);
                match (vectors, depth_pick) {
                    (1, None) => tile::<1, _>(args, Whole(k)),
                    (2, None) => tile::<2, _>(args, Whole(k)),
                    (_, None) => tile::<3, _>(args, Whole(k)),
                    (1, Some(p)) => tile::<1, _>(args, Steps(p, steps)),
                    (2, Some(p)) => tile::<2, _>(args, Steps(p, steps)),
                    (_, Some(p)) => tile::<3, _>(args, Steps(p, steps)),
                }
            }
        };
        let tasks = (0..n)
            .step_by(width)
            .flat_map(|j| (0..m).step_by(R).map(move |i| (i, j)));
        if super::super::in_task() || m * n * steps < PARALLEL_MIN {
            tasks.for_each(run);
        } else {
            use rayon::prelude::*;
            tasks.collect::<Vec<_>>().into_par_iter().for_each(run);
        }
    }

    /// The steps of a tile's depth: the operands' depth index at each.
    trait Depth: Copy {
        /// Whether the steps skip irregularly (rows of `b` then need prefetching).
        const IRREGULAR: bool;
        /// How many steps.
        fn len(self) -> usize;
        /// The depth index of step `s`.
        ///
        /// # Safety
        /// `s < self.len()`.
        unsafe fn at(self, s: usize) -> usize;
    }

    /// Every index of a depth of this many, in order.
    #[derive(Clone, Copy)]
    struct Whole(usize);

    impl Depth for Whole {
        const IRREGULAR: bool = false;
        #[inline(always)]
        fn len(self) -> usize {
            self.0
        }
        #[inline(always)]
        unsafe fn at(self, s: usize) -> usize {
            s
        }
    }

    /// The indices of a list of this many.
    #[derive(Clone, Copy)]
    struct Steps(Picked, usize);

    impl Depth for Steps {
        const IRREGULAR: bool = true;
        #[inline(always)]
        fn len(self) -> usize {
            self.1
        }
        #[inline(always)]
        unsafe fn at(self, s: usize) -> usize {
            // SAFETY: the caller's contract: the list holds `self.1 > s` numbers.
            unsafe { self.0.at(s) }
        }
    }

    /// A tile's arguments: the output's first element of the tile's columns (row 0) and its
    /// row stride, the output rows of the tile's [`R`] rows, the left operand's first element
    /// with the offsets of those rows and its depth stride, the right operand's first element
    /// of the tile's columns with its row stride, the tile's rows (at most [`R`]), the lanes
    /// of its last vector, and whether to accumulate.
    type Tile = (
        *mut f32,
        usize,
        [usize; R],
        (*const f32, [usize; R], usize),
        (*const f32, usize),
        usize,
        u16,
        bool,
    );

    /// One tile of `rows` rows by `V` vectors (the last one's lanes `mask`): each sum from
    /// zero over the steps of `depth` in order, then stored, or added to the output once.
    ///
    /// # Safety
    /// The CPU has AVX-512F; the tile's rows of the left operand at every step of `depth`,
    /// the right operand's rows of those steps in the tile's columns, and the tile's rows of
    /// the output lie inside them.
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const V: usize, D: Depth>(
        (dst, ldd, out_rows, (a, row, aks), (b, ldb), rows, mask, accumulate): Tile,
        depth: D,
    ) {
        let lanes = |t: usize| if t + 1 == V { mask } else { !0 };
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        for s in 0..depth.len() {
            // SAFETY: `s < depth.len()`: a row of `b` and a column of the tile's rows of `a`,
            // all inside them (this function's contract); masked lanes are not read.
            unsafe {
                let p = depth.at(s);
                let bp = b.add(p * ldb);
                if D::IRREGULAR {
                    // The row `AHEAD` steps on into the first-level cache (the lines of its
                    // tile's columns, and one more for where they straddle): the CPU's prefetchers
                    // do not follow the irregular strides of picked steps. A prefetch never
                    // faults.
                    let ahead = depth.at((s + AHEAD).min(depth.len() - 1));
                    let ahead = b.wrapping_add(ahead * ldb);
                    for t in 0..=V {
                        _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(t * LANES).cast::<i8>());
                    }
                }
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
        for (acc, &r) in acc.iter().zip(&out_rows).take(rows) {
            for (t, &s) in acc.iter().enumerate() {
                // SAFETY: row `r` of the output, lanes inside the tile (this function's
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
    use super::super::matmul::matmul_new;
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

    /// A `[rows, cols]` matrix of `values` whose columns `dead` are zeros (of both signs).
    fn with_dead(rows: usize, cols: usize, dead: &[usize], seed: usize) -> Vec<f32> {
        let mut x = values(rows * cols, seed);
        for (i, v) in x.iter_mut().enumerate() {
            if dead.contains(&(i % cols)) {
                *v = if i % 3 == 0 { -0.0 } else { 0.0 };
            }
        }
        x
    }

    #[test]
    fn products_over_live_units_have_the_whole_products_bits() {
        if !has_avx512() {
            return;
        }
        // (images, units, outputs): the mlp's last layer in a shard, the vae-sized one, an
        // odd one with partial tiles everywhere.
        for (n, k, o) in [(128, 392, 784), (64, 400, 784), (37, 101, 53)] {
            let dead: Vec<usize> = (0..k).filter(|u| u % 7 == 3 || u % 11 == 0).collect();
            let live: Vec<usize> = (0..k).filter(|u| !dead.contains(u)).collect();
            let x = with_dead(n, k, &dead, 1);
            let (w, g) = (values(k * o, 2), values(n * o, 3));
            let (xv, wv, gv) = (
                View::dense(&x, n, k),
                View::dense(&w, k, o),
                View::dense(&g, n, o),
            );
            let same = |got: &[f32], want: &[f32]| {
                got.len() == want.len()
                    && got
                        .iter()
                        .zip(want)
                        .all(|(a, b)| a.to_bits() == b.to_bits())
            };
            // The forward product over the live steps of the depth.
            let got = picked(xv, wv, (None, Some(&live))).expect("taken");
            assert!(same(&got, &matmul_new(xv, wv)), "forward {n}×{k}×{o}");
            // The weight gradient over the live rows, the dead rows zero.
            let got = picked(xv.t(), gv, (Some(&live), None)).expect("taken");
            let want = matmul_new(xv.t(), gv);
            assert!(same(&got, &want), "weight gradient {n}×{k}×{o}");
            assert!(dead
                .iter()
                .all(|&u| got[u * o..(u + 1) * o].iter().all(|v| v.to_bits() == 0)));
        }
        // Not taken: a depth past gemm's one block, a single row, a picked row past the rows.
        let (a, b) = (values(4 * 513, 1), values(513 * 80, 2));
        assert!(picked(
            View::dense(&a, 4, 513),
            View::dense(&b, 513, 80),
            (None, None)
        )
        .is_none());
        let (a, b) = (values(100, 1), values(100 * 80, 2));
        assert!(picked(
            View::dense(&a, 1, 100),
            View::dense(&b, 100, 80),
            (None, None)
        )
        .is_none());
        let (a, b) = (values(40 * 100, 1), values(100 * 80, 2));
        let (av, bv) = (View::dense(&a, 40, 100), View::dense(&b, 100, 80));
        assert!(picked(av, bv, (Some(&[3, 40]), None)).is_none());
        assert!(picked(av, bv, (None, Some(&[100]))).is_none());
        // Lists out of order, repeated or empty: another order of the sums, or a row written
        // twice.
        assert!(picked(av, bv, (Some(&[5, 3]), None)).is_none());
        assert!(picked(av, bv, (Some(&[3, 3]), None)).is_none());
        assert!(picked(av, bv, (None, Some(&[7, 2]))).is_none());
        assert!(picked(av, bv, (None, Some(&[]))).is_none());
        assert!(picked(av, bv, (Some(&[0, 3]), Some(&[1, 2]))).is_some());
    }
}
