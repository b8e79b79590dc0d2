//! Max pooling and nearest-neighbour upsampling of whole images, plane by plane, with their
//! backward passes: the same numbers as burn-flex's (`max_pool2d_with_indices`,
//! `interpolate` in nearest mode, and their backward passes), without their costs on the CPU.
//! burn pools through its 3-d kernel with `i64` indices that the autodiff graph then reshapes
//! (a full copy each way); here a window's winner is a `u32` offset in its plane, and the
//! passes split planes over the pool as the convolutions' passes do.

use burn::backend::flex::FlexTensor;
use burn::tensor::Shape;
use pulp::{Arch, Simd, WithSimd};
use rayon::prelude::*;

use super::flex::{tensor, values};
use super::pieces::{each_chunk, planes_from_zero, planes_per_piece, stay_on_this_thread};

/// What a max pooling's backward pass keeps: the geometry, the input's shape and the winners.
#[derive(Debug, Clone)]
pub(super) struct MaxPoolSaved {
    pool: MaxPool,
    shape: Shape,
    at: Vec<u32>,
}

/// `x` (`[b, c, h, w]`) max-pooled with window `k` and stride `s`, and what the backward pass
/// needs (its winners only with `keep`).
pub(super) fn max_pool_forward(
    x: &FlexTensor,
    k: usize,
    s: usize,
    keep: bool,
) -> (FlexTensor, MaxPoolSaved) {
    let shape = x.layout().shape().clone();
    let (planes, h, w) = (shape[0] * shape[1], shape[2], shape[3]);
    let pool = MaxPool { h, w, k, s };
    let [oh, ow] = pool.out();
    let (y, at) = pool.forward(&values(x), planes, keep);
    let y = tensor(y, Shape::new([shape[0], shape[1], oh, ow]));
    (y, MaxPoolSaved { pool, shape, at })
}

/// The input's gradient of a max pooling from the output's `g`.
pub(super) fn max_pool_backward(g: &FlexTensor, saved: &MaxPoolSaved) -> FlexTensor {
    let planes = saved.shape[0] * saved.shape[1];
    let dx = saved.pool.backward(&values(g), &saved.at, planes);
    tensor(dx, saved.shape.clone())
}

/// `x` (`[b, c, h, w]`) resized to `[b, c, oh, ow]` by nearest neighbour.
pub(super) fn upsample_forward(x: &FlexTensor, out: [usize; 2]) -> FlexTensor {
    let s = x.layout().shape();
    let n = Nearest::new([s[2], s[3]], out);
    let y = n.forward(&values(x), s[0] * s[1]);
    tensor(y, Shape::new([s[0], s[1], out[0], out[1]]))
}

/// The input's gradient (`shape`) of [`upsample_forward`] from the output's `g`.
pub(super) fn upsample_backward(g: &FlexTensor, shape: Shape) -> FlexTensor {
    let gs = g.layout().shape();
    let n = Nearest::new([shape[2], shape[3]], [gs[2], gs[3]]);
    let dx = n.backward(&values(g), shape[0] * shape[1]);
    tensor(dx, shape)
}

/// Calls `f(first_plane, a_chunk, b_chunk)` on matching chunks of `a` (`na` values a plane)
/// and `b` (`nb` a plane), `per` planes a chunk, on rayon's pool unless
/// [`stay_on_this_thread`].
fn each_plane_pair<A: Send, B: Send>(
    (a, na): (&mut [A], usize),
    (b, nb): (&mut [B], usize),
    per: usize,
    f: impl Fn(usize, &mut [A], &mut [B]) + Sync + Send,
) {
    if na == 0 || nb == 0 {
        return;
    }
    if stay_on_this_thread() {
        for (i, (a, b)) in a
            .chunks_mut(na * per)
            .zip(b.chunks_mut(nb * per))
            .enumerate()
        {
            f(i * per, a, b);
        }
    } else {
        a.par_chunks_mut(na * per)
            .zip(b.par_chunks_mut(nb * per))
            .enumerate()
            .for_each(|(i, (a, b))| f(i * per, a, b));
    }
}

/// The geometry of a max pooling: input planes `h`×`w`, square window `k`, stride `s`, no
/// padding (the spec's `maxpool(k,s)`); output `oh`×`ow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct MaxPool {
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub s: usize,
}

impl MaxPool {
    /// Output height and width (PyTorch's floor mode).
    pub fn out(self) -> [usize; 2] {
        let n = |x: usize| {
            if x < self.k {
                0
            } else {
                (x - self.k) / self.s + 1
            }
        };
        [n(self.h), n(self.w)]
    }

    /// Pools `planes` planes of `x`: the maxima and, with `keep`, each window's winner as an
    /// offset in its input plane. A window's first largest value (row by row) wins, a NaN
    /// always does (so it propagates, and the last NaN wins), as burn and PyTorch pool.
    pub fn forward(self, x: &[f32], planes: usize, keep: bool) -> (Vec<f32>, Vec<u32>) {
        let [oh, ow] = self.out();
        let (inp, outp) = (self.h * self.w, oh * ow);
        debug_assert_eq!(x.len(), planes * inp);
        let mut y = vec![0.0f32; planes * outp];
        let mut at = vec![0u32; if keep { planes * outp } else { 0 }];
        if outp == 0 {
            return (y, at);
        }
        let per = planes_per_piece(outp);
        let one = |p0: usize, y: &mut [f32], at: &mut [u32]| {
            for (j, y) in y.chunks_exact_mut(outp).enumerate() {
                let plane = &x[(p0 + j) * inp..][..inp];
                let mut at = at.get_mut(j * outp..(j + 1) * outp);
                if self.k == 2 && self.s == 2 {
                    for oy in 0..oh {
                        let top = 2 * oy * self.w;
                        let rows = (&plane[top..][..self.w], &plane[top + self.w..][..self.w]);
                        let at = at.as_deref_mut().map(|a| &mut a[oy * ow..][..ow]);
                        pool_2x2(rows, top, &mut y[oy * ow..][..ow], at);
                    }
                    continue;
                }
                for oy in 0..oh {
                    for ox in 0..ow {
                        let (mut best, mut arg) = (f32::NEG_INFINITY, usize::MAX);
                        for ky in 0..self.k {
                            let row = (oy * self.s + ky) * self.w + ox * self.s;
                            for (kx, &v) in plane[row..row + self.k].iter().enumerate() {
                                if arg == usize::MAX || v > best || v.is_nan() {
                                    (best, arg) = (v, row + kx);
                                }
                            }
                        }
                        y[oy * ow + ox] = best;
                        if let Some(at) = at.as_deref_mut() {
                            // Below u32::MAX: the caller checks the plane's size.
                            at[oy * ow + ox] = arg as u32;
                        }
                    }
                }
            }
        };
        if keep {
            each_plane_pair((&mut y, outp), (&mut at, outp), per, one);
        } else {
            each_chunk(&mut y, outp * per, |i, y| one(i * per, y, &mut []));
        }
        (y, at)
    }

    /// The gradient of the input from the output's `g` and the winners `at` of
    /// [`Self::forward`]: each output's gradient added to its winner's, in the order of the
    /// outputs, from zero (burn's order, so the same sums where windows overlap).
    pub fn backward(self, g: &[f32], at: &[u32], planes: usize) -> Vec<f32> {
        let [oh, ow] = self.out();
        let (inp, outp) = (self.h * self.w, oh * ow);
        debug_assert_eq!((g.len(), at.len()), (planes * outp, planes * outp));
        if outp == 0 || inp == 0 {
            return vec![0.0f32; planes * inp];
        }
        planes_from_zero(planes * inp, inp, |p, dx| {
            let from = p * outp;
            for (&gv, &a) in g[from..from + outp].iter().zip(&at[from..from + outp]) {
                dx[a as usize] += gv;
            }
        })
    }
}

/// One output row of a 2×2 max pooling at stride 2 (the common `maxpool(2)`): the windows
/// over input rows `top` and `bottom` (starting at offset `at0` in the plane), with the rule
/// of [`MaxPool::forward`], unrolled.
#[inline]
fn pool_2x2((top, bottom): (&[f32], &[f32]), at0: usize, y: &mut [f32], at: Option<&mut [u32]>) {
    let w = top.len();
    assert!(
        bottom.len() == w && 2 * y.len() <= w && at.as_ref().is_none_or(|a| a.len() == y.len()),
        "pool_2x2: rows of {w} and {} values for {} windows",
        bottom.len(),
        y.len()
    );
    #[cfg(target_arch = "x86_64")]
    if super::phases::vector() {
        // SAFETY: the CPU has AVX-512F (`vector`); both rows hold `w ≥ 2·y.len()` values, and
        // `at`, when given, is as long as `y` (both checked above).
        unsafe { avx512::pool_2x2(top, bottom, at0, y, at) };
        return;
    }
    let pick = |(best, arg): (f32, usize), v: f32, i: usize| {
        if v > best || v.is_nan() {
            (v, i)
        } else {
            (best, arg)
        }
    };
    let window = |ox: usize| {
        let (c0, c1) = (2 * ox, 2 * ox + 1);
        let m = (top[c0], at0 + c0);
        let m = pick(m, top[c1], at0 + c1);
        let m = pick(m, bottom[c0], at0 + w + c0);
        pick(m, bottom[c1], at0 + w + c1)
    };
    match at {
        Some(at) => {
            for (ox, (y, a)) in y.iter_mut().zip(at.iter_mut()).enumerate() {
                let (v, i) = window(ox);
                *y = v;
                // Below u32::MAX: the caller checks the plane's size.
                *a = i as u32;
            }
        }
        None => {
            for (ox, y) in y.iter_mut().enumerate() {
                *y = window(ox).0;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// The mask of the first `n` of 16 lanes.
    #[inline]
    fn first(n: usize) -> __mmask16 {
        if n >= 16 {
            u16::MAX
        } else {
            (1u16 << n) - 1
        }
    }

    /// [`super::pool_2x2`], 16 windows at a time: each row's 32 values deinterleaved into the
    /// windows' left and right columns, then the same comparisons in the same order, lane by
    /// lane (a larger value or a NaN takes the window).
    ///
    /// # Safety
    /// The CPU has AVX-512F; `top` and `bottom` have the same length, at least `2·y.len()`;
    /// `at`, when given, has `y.len()` entries. The offsets are computed in 32-bit lanes whose
    /// bits are stored as `u32`: right for planes below `u32::MAX` values, as the caller checks.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn pool_2x2(
        top: &[f32],
        bottom: &[f32],
        at0: usize,
        y: &mut [f32],
        mut at: Option<&mut [u32]>,
    ) {
        let (w, ow) = (top.len(), y.len());
        let twice = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
        let (left, right) = (twice, _mm512_add_epi32(twice, _mm512_set1_epi32(1)));
        for ox in (0..ow).step_by(16) {
            let live = first(ow - ox);
            let c = 2 * ox;
            let (lo, hi) = (
                first(2 * (ow - ox)),
                first((2 * (ow - ox)).saturating_sub(16)),
            );
            let columns = |row: &[f32]| {
                // SAFETY: the masked loads read only lanes below `2·ow ≤ w` columns of `row`;
                // `wrapping_add` because the second one's first lane may lie past its end
                // when no lane of it is read.
                let (a, b) = unsafe {
                    (
                        _mm512_maskz_loadu_ps(lo, row.as_ptr().add(c)),
                        _mm512_maskz_loadu_ps(hi, row.as_ptr().wrapping_add(c + 16)),
                    )
                };
                (
                    _mm512_permutex2var_ps(a, left, b),
                    _mm512_permutex2var_ps(a, right, b),
                )
            };
            let ((t0, t1), (b0, b1)) = (columns(top), columns(bottom));
            let base = _mm512_add_epi32(_mm512_set1_epi32((at0 + c) as i32), twice);
            let (mut best, mut arg) = (t0, base);
            for (v, off) in [(t1, 1), (b0, w), (b1, w + 1)] {
                let takes = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, best)
                    | _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
                best = _mm512_mask_mov_ps(best, takes, v);
                let i = _mm512_add_epi32(base, _mm512_set1_epi32(off as i32));
                arg = _mm512_mask_mov_epi32(arg, takes, i);
            }
            // SAFETY: the stores write only the live lanes, `ox..min(ox + 16, ow)`, of `y` and
            // of `at` (as long as `y`).
            unsafe {
                _mm512_mask_storeu_ps(y.as_mut_ptr().add(ox), live, best);
                if let Some(at) = at.as_deref_mut() {
                    _mm512_mask_storeu_epi32(at.as_mut_ptr().add(ox).cast(), live, arg);
                }
            }
        }
    }
}

/// Nearest-neighbour resizing of `h`×`w` planes to `oh`×`ow`: output row `i` reads input row
/// `⌊i·h/oh⌋` (in `f64`, as burn maps them), and the same for columns.
#[derive(Debug, Clone)]
pub(super) struct Nearest {
    pub h: usize,
    pub w: usize,
    rows: Vec<usize>,
    cols: Vec<usize>,
}

/// burn's nearest index map from `out` positions to `n` inputs.
fn index_map(n: usize, out: usize) -> Vec<usize> {
    let ratio = n as f64 / out as f64;
    (0..out)
        .map(|o| ((o as f64 * ratio).floor() as usize).min(n.saturating_sub(1)))
        .collect()
}

impl Nearest {
    /// The resizing of `[h, w]` planes to `[oh, ow]`.
    pub fn new([h, w]: [usize; 2], [oh, ow]: [usize; 2]) -> Self {
        Nearest {
            h,
            w,
            rows: index_map(h, oh),
            cols: index_map(w, ow),
        }
    }

    fn out_len(&self) -> usize {
        self.rows.len() * self.cols.len()
    }

    /// Whether each input value goes to a 2 × 2 block of outputs (twice the height and
    /// width), the case [`Double`] and [`DoubleGrad`] run without the index maps.
    fn twice(&self) -> bool {
        let halves = |map: &[usize]| map.iter().enumerate().all(|(i, &r)| r == i / 2);
        self.rows.len() == 2 * self.h
            && self.cols.len() == 2 * self.w
            && halves(&self.rows)
            && halves(&self.cols)
    }

    /// Resizes `planes` planes of `x`.
    pub fn forward(&self, x: &[f32], planes: usize) -> Vec<f32> {
        let (inp, outp, ow) = (self.h * self.w, self.out_len(), self.cols.len());
        debug_assert_eq!(x.len(), planes * inp);
        if outp == 0 || inp == 0 {
            return vec![0.0f32; planes * outp];
        }
        let twice = self.twice();
        planes_from_zero(planes * outp, outp, |p, y| {
            let plane = &x[p * inp..][..inp];
            if twice {
                return Arch::new().dispatch(Double {
                    w: self.w,
                    x: plane,
                    y,
                });
            }
            for (y, &r) in y.chunks_exact_mut(ow).zip(&self.rows) {
                let row = &plane[r * self.w..][..self.w];
                for (y, &c) in y.iter_mut().zip(&self.cols) {
                    *y = row[c];
                }
            }
        })
    }

    /// The gradient of the input from the output's `g`: each output's gradient added to its
    /// source, in the order of the outputs, from zero (burn's order).
    pub fn backward(&self, g: &[f32], planes: usize) -> Vec<f32> {
        let (inp, outp, ow) = (self.h * self.w, self.out_len(), self.cols.len());
        debug_assert_eq!(g.len(), planes * outp);
        if outp == 0 || inp == 0 {
            return vec![0.0f32; planes * inp];
        }
        let twice = self.twice();
        planes_from_zero(planes * inp, inp, |p, dx| {
            let g = &g[p * outp..][..outp];
            if twice {
                return Arch::new().dispatch(DoubleGrad { w: self.w, g, dx });
            }
            for (g, &r) in g.chunks_exact(ow).zip(&self.rows) {
                let row = &mut dx[r * self.w..][..self.w];
                for (&gv, &c) in g.iter().zip(&self.cols) {
                    row[c] += gv;
                }
            }
        })
    }
}

/// One plane `x` (`w` wide) upsampled twice in each direction into `y`: [`Nearest::forward`]
/// where [`Nearest::twice`]. A pulp [`WithSimd`] operation, so that its loops compile for the
/// CPU's widest vectors.
struct Double<'a> {
    w: usize,
    x: &'a [f32],
    y: &'a mut [f32],
}

impl WithSimd for Double<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        let Double { w, x, y } = self;
        for (row, out) in x.chunks_exact(w).zip(y.chunks_exact_mut(4 * w)) {
            let (top, bottom) = out.split_at_mut(2 * w);
            for (pair, &v) in top.chunks_exact_mut(2).zip(row) {
                pair[0] = v;
                pair[1] = v;
            }
            bottom.copy_from_slice(top);
        }
    }
}

/// [`Nearest::backward`] where [`Nearest::twice`], for one plane: each input's gradient sums
/// its 2 × 2 block of `g` (`2w` wide) onto the zero in `dx`, in the order of the outputs.
struct DoubleGrad<'a> {
    w: usize,
    g: &'a [f32],
    dx: &'a mut [f32],
}

impl WithSimd for DoubleGrad<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        let DoubleGrad { w, g, dx } = self;
        for (d, rows) in dx.chunks_exact_mut(w).zip(g.chunks_exact(4 * w)) {
            let (top, bottom) = rows.split_at(2 * w);
            for ((d, t), b) in d
                .iter_mut()
                .zip(top.chunks_exact(2))
                .zip(bottom.chunks_exact(2))
            {
                *d = (((*d + t[0]) + t[1]) + b[0]) + b[1];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Max pooling by its definition, with burn's rule for ties and NaNs.
    fn pool_by_definition(m: MaxPool, x: &[f32], planes: usize) -> (Vec<f32>, Vec<u32>) {
        let [oh, ow] = m.out();
        let (mut y, mut at) = (vec![], vec![]);
        for p in 0..planes {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut best: Option<(f32, usize)> = None;
                    for ky in 0..m.k {
                        for kx in 0..m.k {
                            let i = (oy * m.s + ky) * m.w + ox * m.s + kx;
                            let v = x[p * m.h * m.w + i];
                            if best.is_none_or(|(b, _)| v > b || v.is_nan()) {
                                best = Some((v, i));
                            }
                        }
                    }
                    let (b, i) = best.unwrap();
                    y.push(b);
                    at.push(i as u32);
                }
            }
        }
        (y, at)
    }

    /// Small values with ties (quarters), a NaN and infinities.
    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                match i % 97 {
                    13 => f32::NAN,
                    41 => f32::NEG_INFINITY,
                    _ => (s % 9) as f32 * 0.25 - 1.0,
                }
            })
            .collect()
    }

    #[test]
    fn max_pool_matches_its_definition_and_routes_gradients_to_winners() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        for (h, w, k, s) in [
            (28, 28, 2, 2),
            (14, 14, 2, 2),
            (7, 9, 2, 2),
            (7, 9, 3, 2),
            (5, 5, 3, 1),
            (4, 6, 1, 1),
            (3, 3, 4, 4),
        ] {
            let m = MaxPool { h, w, k, s };
            for planes in [1, 3, 70] {
                let x = values(planes * h * w, (h * 31 + k * 7 + planes) as u32);
                let (want_y, want_at) = pool_by_definition(m, &x, planes);
                let (y, at) = pool.install(|| m.forward(&x, planes, true));
                assert_eq!(
                    y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    want_y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "{h}x{w} k{k} s{s}, {planes} planes"
                );
                assert_eq!(at, want_at);
                let (y2, none) = m.forward(&x, planes, false);
                assert_eq!(y2.len(), y.len());
                assert!(none.is_empty());
                // Each input's gradient: the sum, in output order, of the outputs it won.
                let g = values(y.len(), 99);
                let dx = pool.install(|| m.backward(&g, &at, planes));
                let mut want = vec![0.0f32; planes * h * w];
                let [oh, ow] = m.out();
                for (o, (&gv, &a)) in g.iter().zip(&at).enumerate() {
                    want[o / (oh * ow) * h * w + a as usize] += gv;
                }
                assert_eq!(
                    dx.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                );
            }
        }
    }

    /// The 2×2 windows of one row pair, AVX-512 against the plain loop and the definition, bit
    /// for bit: widths under, at and over one vector of windows, odd widths (a last column no
    /// window covers), then every placement of NaNs, infinities and ties in a window's four
    /// values, each window in every lane.
    #[test]
    fn vector_2x2_pooling_matches_the_plain_loop() {
        if !super::super::phases::vector() {
            eprintln!("no AVX-512 on this CPU: the vector pooling is not used, nor tested");
            return;
        }
        let mut cases: Vec<(usize, Vec<f32>)> = [2, 3, 9, 14, 28, 31, 32, 33, 64, 70]
            .iter()
            .flat_map(|&w| (0..6).map(move |seed| (w, values(2 * w, seed * 101 + w as u32))))
            .collect();
        let special = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1.0, 1.0, 0.5];
        let windows: Vec<[f32; 4]> = (0..special.len().pow(4))
            .map(|i| std::array::from_fn(|k| special[i / special.len().pow(k as u32) % 6]))
            .collect();
        // One window more than a multiple of 16, so the windows land in every lane.
        for shift in 0..2 {
            let n = windows.len() - shift;
            let (mut top, mut bottom) = (vec![], vec![]);
            for win in &windows[shift..] {
                top.extend([win[0], win[1]]);
                bottom.extend([win[2], win[3]]);
            }
            top.extend(&bottom);
            cases.push((2 * n, top));
        }
        for (w, rows) in &cases {
            let (w, ow) = (*w, w / 2);
            let (top, bottom) = rows.split_at(w);
            let at0 = 3 * w;
            let m = MaxPool {
                h: 2,
                w,
                k: 2,
                s: 2,
            };
            let (want_y, want_at) = pool_by_definition(m, rows, 1);
            {
                let run = |plain: bool| {
                    super::super::phases::PLAIN.set(plain);
                    let (mut y, mut at) = (vec![7.0f32; ow], vec![7u32; ow]);
                    pool_2x2((top, bottom), at0, &mut y, Some(&mut at));
                    let mut y_only = vec![7.0f32; ow];
                    pool_2x2((top, bottom), at0, &mut y_only, None);
                    super::super::phases::PLAIN.set(false);
                    let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&y), bits(&y_only));
                    (bits(&y), at)
                };
                let vector = run(false);
                assert_eq!(vector, run(true), "width {w}");
                let want_bits: Vec<u32> = want_y.iter().map(|v| v.to_bits()).collect();
                let want_at: Vec<u32> = want_at.iter().map(|&a| a + at0 as u32).collect();
                assert_eq!(vector, (want_bits, want_at), "width {w}");
            }
        }
    }

    #[test]
    fn nearest_resizing_copies_sources_and_sums_gradients_back() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        for ((h, w), (oh, ow)) in [
            ((7, 7), (14, 14)),
            ((14, 14), (28, 28)),
            ((3, 5), (7, 11)),
            ((6, 6), (4, 3)),
        ] {
            let n = Nearest::new([h, w], [oh, ow]);
            for planes in [1, 40] {
                let x = values(planes * h * w, (h + oh) as u32);
                let y = pool.install(|| n.forward(&x, planes));
                let g = values(y.len(), 5);
                let dx = pool.install(|| n.backward(&g, planes));
                let mut want = vec![0.0f32; dx.len()];
                for p in 0..planes {
                    for i in 0..oh {
                        for j in 0..ow {
                            let (r, c) = (i * h / oh, j * w / ow);
                            let src = p * h * w + r * w + c;
                            let o = p * oh * ow + i * ow + j;
                            assert_eq!(y[o].to_bits(), x[src].to_bits());
                            want[src] += g[o];
                        }
                    }
                }
                assert_eq!(
                    dx.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                );
            }
        }
    }
}
