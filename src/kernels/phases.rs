//! Patch matrices of strided convolutions through the phases of the big image.
//!
//! With stride `s`, the big-image rows `s·y + a` (and columns `s·x + b`) for `a, b < s` form
//! `s²` phases, each a plane indexed like the grid. Kernel tap `(ky, kx)` only ever reads (or,
//! in a transposed convolution, writes) one phase, shifted by a constant: big row
//! `s·gy + ky − p = s·(gy + dy) + a` with `a = (ky − p) mod s` and `dy = (ky − p − a) / s`.
//! Laid out like the patch matrix (`[b·L]` per channel and phase, every image's plane side
//! by side), the patch-matrix row of a tap is then the phase plane read at a fixed offset
//! `σ = dy·gw + dx` from each position, with the positions whose source falls off the grid
//! set to 0 (im2col); and a transposed convolution's phase plane is the sum of its taps' rows
//! read at `−σ` (col2im). Both are long runs of contiguous, masked vector loads over the
//! whole batch, where the gathers through tables of offsets (`gather`) cost about as much
//! per value as a scalar loop on CPUs with slow vector gathers (AMD Zen 4). Splitting the
//! image into phases and interleaving them back move each value once: at stride 2 with rows
//! of at most 32 values (conv64's layers), one image row at a time through two-vector
//! permutes ([`Phases::split`], [`Phases::interleave`]); otherwise they are patch matrices
//! themselves (an `s × s` kernel at stride `s`, no padding) for the table gathers, `s²` rows
//! per channel instead of `kh·kw`.
//!
//! Every pass has an AVX-512 form (masked loads and stores, 16 positions at a time) and a
//! plain one with the same values: copies, or sums in the order of the taps.

use std::mem::MaybeUninit;

use super::pieces::each_chunk;

/// Lanes per mask (one AVX-512 vector of `f32`).
const LANES: usize = 16;

#[cfg(test)]
thread_local! {
    /// Tests set it to run the plain loops on a CPU that has the vector path.
    pub(super) static PLAIN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the passes run as AVX-512 code (the CPU has AVX-512F; tests may turn it off).
#[inline]
pub(super) fn vector() -> bool {
    #[cfg(test)]
    if PLAIN.get() {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        avx512::usable()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// One kernel tap: the phase it reads or writes, and its offset in the phase plane.
#[derive(Debug, Clone, Copy)]
struct Tap {
    phase: usize,
    shift: isize,
}

/// The phase decomposition of one geometry at one batch size.
#[derive(Debug)]
pub(super) struct Phases {
    /// Per kernel tap `(ky, kx)`, in that order.
    taps: Vec<Tap>,
    /// Per phase, the taps on it (that read it in im2col, write it in col2im), in order.
    by_phase: Vec<Vec<usize>>,
    /// Positions `b·L` of a row.
    len: usize,
    /// Stride, big image and grid.
    s: usize,
    big: [usize; 2],
    grid: [usize; 2],
    /// Masks per tap, 16 positions each (`len.div_ceil(16)` per tap, no bits past `len`): for
    /// [`Phases::spread`], the positions whose source `(gy + dy, gx + dx)` is on the grid.
    masks_spread: Vec<u16>,
    /// The same for [`Phases::collect`]: positions whose source `(y − dy, x − dx)` is on the grid.
    masks_collect: Vec<u16>,
}

impl Phases {
    /// The decomposition for a big image `big`, kernel `k`, stride `s`, padding `p`, grid
    /// `grid` and `b` images, where every phase's plane fits on the grid (each phase of the
    /// big image has at most as many rows and columns as the grid), so that the phase planes
    /// hold every big-image value; `None` otherwise, and for a zero stride or an empty
    /// image, kernel, grid or batch.
    pub(super) fn new(
        big: [usize; 2],
        k: [usize; 2],
        s: usize,
        p: usize,
        grid: [usize; 2],
        b: usize,
    ) -> Option<Phases> {
        let [gh, gw] = grid;
        let l = gh.checked_mul(gw)?;
        let len = b.checked_mul(l)?;
        if s == 0 || len == 0 || k.contains(&0) || big.contains(&0) {
            return None;
        }
        // Rows of phase `a` in a big dimension of `n`: `s·y + a < n`.
        let fits = |n: usize, g: usize| (0..s).all(|a| n.saturating_sub(a).div_ceil(s) <= g);
        if !fits(big[0], gh) || !fits(big[1], gw) {
            return None;
        }
        // Phase and shift of a kernel offset along one dimension.
        let split = |kk: usize| {
            let d = kk as isize - p as isize;
            let a = d.rem_euclid(s as isize);
            (a as usize, (d - a) / s as isize)
        };
        let (gh, gw) = (gh as isize, gw as isize);
        let chunks = len.div_ceil(LANES);
        let (mut taps, mut masks_spread, mut masks_collect) = (Vec::new(), Vec::new(), Vec::new());
        for ky in 0..k[0] {
            for kx in 0..k[1] {
                let ((a, dy), (bx, dx)) = (split(ky), split(kx));
                taps.push(Tap {
                    phase: a * s + bx,
                    shift: dy * gw + dx,
                });
                for (masks, sign) in [(&mut masks_spread, 1), (&mut masks_collect, -1)] {
                    let start = masks.len();
                    masks.resize(start + chunks, 0u16);
                    // The grid positions whose source is on the grid, the same in every image.
                    let on: Vec<usize> = (0..l)
                        .filter(|&q| {
                            let q = q as isize;
                            let (y, x) = (q / gw + sign * dy, q % gw + sign * dx);
                            (0..gh).contains(&y) && (0..gw).contains(&x)
                        })
                        .collect();
                    for i in 0..b {
                        for &q in &on {
                            let j = i * l + q;
                            masks[start + j / LANES] |= 1 << (j % LANES);
                        }
                    }
                }
            }
        }
        let mut by_phase = vec![Vec::new(); s * s];
        for (t, tap) in taps.iter().enumerate() {
            by_phase[tap.phase].push(t);
        }
        Some(Phases {
            taps,
            by_phase,
            len,
            s,
            big,
            grid: [gh as usize, gw as usize],
            masks_spread,
            masks_collect,
        })
    }

    /// Phases per channel (`s²`).
    pub(super) fn phases(&self) -> usize {
        self.by_phase.len()
    }

    /// Kernel taps (`kh·kw`).
    pub(super) fn taps(&self) -> usize {
        self.taps.len()
    }

    /// The masks of tap `t` in `masks`.
    fn masks<'a>(&self, masks: &'a [u16], t: usize) -> &'a [u16] {
        let chunks = self.len.div_ceil(LANES);
        &masks[t * chunks..(t + 1) * chunks]
    }

    /// The patch-matrix row of tap `t` of one channel from that channel's plane of the tap's
    /// phase: `row[j] = plane[j + σ]`, 0 where the source is off the grid.
    pub(super) fn spread(&self, t: usize, planes: &[f32], row: &mut [f32]) {
        let tap = self.taps[t];
        let plane = &planes[tap.phase * self.len..(tap.phase + 1) * self.len];
        assert_eq!(row.len(), self.len, "phases: wrong row length");
        let masks = self.masks(&self.masks_spread, t);
        #[cfg(target_arch = "x86_64")]
        if vector() {
            // SAFETY: `vector` checked the CPU; `plane` and `row` are `len` long and `masks`
            // is the tap's, built by `new` for this `len` and shift.
            return unsafe { avx512::spread(plane, tap.shift, masks, row) };
        }
        for (j, d) in row.iter_mut().enumerate() {
            *d = if masks[j / LANES] >> (j % LANES) & 1 == 1 {
                plane[j.wrapping_add_signed(tap.shift)]
            } else {
                0.0
            };
        }
    }

    /// Phase `ph`'s plane of one channel from that channel's patch-matrix rows (`kh·kw` rows
    /// of `len`, in the order of the taps): `plane[j] = 0 + Σ rows[t][j − σ_t]` over the
    /// phase's taps, in their order, skipping sources off the grid.
    pub(super) fn collect(&self, ph: usize, rows: &[f32], plane: &mut [f32]) {
        assert!(
            rows.len() == self.taps() * self.len && plane.len() == self.len,
            "phases: wrong patch-matrix or plane size"
        );
        let taps = &self.by_phase[ph];
        #[cfg(target_arch = "x86_64")]
        if vector() {
            let sources: Vec<(&[f32], isize, &[u16])> = taps
                .iter()
                .map(|&t| {
                    let row = &rows[t * self.len..(t + 1) * self.len];
                    (row, -self.taps[t].shift, self.masks(&self.masks_collect, t))
                })
                .collect();
            // SAFETY: `vector` checked the CPU; every source row and `plane` are `len` long,
            // with the tap's masks built by `new` for this `len` and the negated shift.
            return unsafe { avx512::collect(&sources, plane) };
        }
        plane.fill(0.0);
        for &t in taps {
            let (row, masks) = (&rows[t * self.len..], self.masks(&self.masks_collect, t));
            let shift = -self.taps[t].shift;
            for (j, d) in plane.iter_mut().enumerate() {
                if masks[j / LANES] >> (j % LANES) & 1 == 1 {
                    *d += row[j.wrapping_add_signed(shift)];
                }
            }
        }
    }

    /// Whether [`Phases::split`] and [`Phases::interleave`] apply: stride 2, big-image rows
    /// of at most 32 values (two vectors) and grid rows of at most 16 (one).
    pub(super) fn permutes(&self) -> bool {
        self.s == 2 && self.big[1] <= 2 * LANES && self.grid[1] <= LANES
    }

    /// The phase planes `[c·s², b·L]` of images `x` (`[b, c, H, W]`): plane `(ci, a, bx)`
    /// holds at `i·L + y·gw + x` image `i`'s value at channel `ci`, row `s·y + a`, column
    /// `s·x + bx`, and 0 past the image's edge. Only where [`Phases::permutes`].
    pub(super) fn split(&self, x: &[f32], c: usize, planes: &mut [f32]) {
        let ([h, w], [gh, gw], s) = (self.big, self.grid, self.s);
        let (l, len) = (gh * gw, self.len);
        let b = len / l;
        assert!(
            self.permutes() && x.len() == b * c * h * w && planes.len() == c * s * s * len,
            "phases: wrong split"
        );
        each_chunk(planes, s * s * len, |ci, planes| {
            #[cfg(target_arch = "x86_64")]
            if vector() {
                // SAFETY: `vector` checked the CPU; the assert above gives the sizes, and
                // `permutes` (stride 2, `w ≤ 32`, `gw ≤ 16`) and `new` (`ceil(h / 2) ≤ gh`,
                // `ceil(w / 2) ≤ gw`) the geometry `split_channel` asks for.
                return unsafe { avx512::split_channel(x, c, ci, self.big, self.grid, planes) };
            }
            for i in 0..b {
                let img = &x[(i * c + ci) * h * w..][..h * w];
                for a in 0..s {
                    for y in 0..gh {
                        let row = (s * y + a < h).then(|| &img[(s * y + a) * w..][..w]);
                        for bx in 0..s {
                            let dst = &mut planes[(a * s + bx) * len + i * l + y * gw..][..gw];
                            for (xx, d) in dst.iter_mut().enumerate() {
                                *d = row.and_then(|r| r.get(s * xx + bx)).copied().unwrap_or(0.0);
                            }
                        }
                    }
                }
            }
        });
    }

    /// The images `[b, c, H, W]` from their phase planes (the inverse of [`Phases::split`]),
    /// then `finish(channel, values)` on each channel of each image, written into `dest` and
    /// returned. Only where [`Phases::permutes`].
    pub(super) fn interleave<'d>(
        &self,
        planes: &[f32],
        c: usize,
        finish: impl Fn(usize, &mut [f32]) + Sync + Send,
        dest: &'d mut [MaybeUninit<f32>],
    ) -> &'d mut [f32] {
        let ([h, w], [gh, gw], s) = (self.big, self.grid, self.s);
        let (l, len) = (gh * gw, self.len);
        let b = len / l;
        let n = b * c * h * w;
        assert!(
            self.permutes() && planes.len() == c * s * s * len && dest.len() == n,
            "phases: wrong interleave"
        );
        // Every value is written once (by the vector code, or after a zero-fill by the
        // loop), so the output is not zero-filled first.
        if n == 0 {
            return &mut [];
        }
        each_chunk(dest, c * h * w, |i, img| {
            #[cfg(target_arch = "x86_64")]
            if vector() {
                // SAFETY: as in `split`: the assert above gives the planes' size, `img` is
                // one image of `c·h·w`, and `permutes` and `new` the geometry.
                unsafe { avx512::interleave_image(planes, i, self.big, self.grid, b, img) };
                // SAFETY: `interleave_image` wrote every value of `img`.
                let img = unsafe { img.assume_init_mut() };
                for (ci, ch) in img.chunks_exact_mut(h * w).enumerate() {
                    finish(ci, ch);
                }
                return;
            }
            img.fill(MaybeUninit::new(0.0));
            // SAFETY: every value of `img` was written just above.
            let img = unsafe { img.assume_init_mut() };
            for (ci, ch) in img.chunks_exact_mut(h * w).enumerate() {
                let planes = &planes[ci * s * s * len..][..s * s * len];
                for (iy, row) in ch.chunks_exact_mut(w).enumerate() {
                    let (a, y) = (iy % s, iy / s);
                    let src = |bx: usize| &planes[(a * s + bx) * len + i * l + y * gw..][..gw];
                    for (ix, d) in row.iter_mut().enumerate() {
                        *d = src(ix % s)[ix / s];
                    }
                }
                finish(ci, ch);
            }
        });
        // SAFETY: `each_chunk` passes each of the `b` images of `c·h·w` values of `dest` once
        // (`n` is `b·c·h·w`, asserted), and every value of each was written above.
        unsafe { dest.assume_init_mut() }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::LANES;

    /// Whether the CPU has AVX-512F.
    #[inline]
    pub(super) fn usable() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
    }

    /// The mask of the live lanes of the chunk at `j` of a row of `len`.
    #[inline]
    fn live(j: usize, len: usize) -> __mmask16 {
        let rest = len - j;
        if rest >= LANES {
            u16::MAX
        } else {
            (1u16 << rest) - 1
        }
    }

    /// [`super::Phases::spread`].
    ///
    /// # Safety
    /// The CPU has AVX-512F; `plane` and `row` have the same length `len`; `masks` has
    /// `len.div_ceil(16)` entries whose set bits mark positions `j < len` with `j + shift`
    /// inside `0..len`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn spread(plane: &[f32], shift: isize, masks: &[u16], row: &mut [f32]) {
        let len = row.len();
        for (c, &m) in masks.iter().enumerate() {
            let j = c * LANES;
            // `wrapping_offset`: the address of lane 0 may lie outside `plane`; only the
            // lanes set in `m` are read, each at `j + lane + shift` inside `plane` (the
            // caller's guarantee).
            let src = plane.as_ptr().wrapping_offset(j as isize + shift);
            // SAFETY: the masked load reads only the lanes set in `m`, all inside `plane`;
            // the store writes only the live lanes, `row[j..min(j + 16, len)]`.
            unsafe {
                let v = _mm512_maskz_loadu_ps(m, src);
                _mm512_mask_storeu_ps(row.as_mut_ptr().add(j), live(j, len), v);
            }
        }
    }

    /// [`super::Phases::collect`], from `(row, shift, masks)` per tap of the phase.
    ///
    /// # Safety
    /// The CPU has AVX-512F; every row is as long as `plane` (`len`); each `masks` has
    /// `len.div_ceil(16)` entries whose set bits mark positions `j < len` with `j + shift`
    /// inside `0..len`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn collect(sources: &[(&[f32], isize, &[u16])], plane: &mut [f32]) {
        let len = plane.len();
        for j in (0..len).step_by(LANES) {
            let mut acc = _mm512_setzero_ps();
            for &(row, shift, masks) in sources {
                // As in `spread`: only the lanes set in the mask are read, inside `row`.
                let src = row.as_ptr().wrapping_offset(j as isize + shift);
                // SAFETY: the masked load reads only lanes inside `row` (the caller's
                // guarantee); masked-off lanes add +0, which leaves a sum that started at +0
                // as the plain loop has it.
                acc = _mm512_add_ps(acc, unsafe { _mm512_maskz_loadu_ps(masks[j / LANES], src) });
            }
            // SAFETY: only the live lanes, `plane[j..min(j + 16, len)]`, are written.
            unsafe { _mm512_mask_storeu_ps(plane.as_mut_ptr().add(j), live(j, len), acc) };
        }
    }

    /// [`super::Phases::split`] of channel `ci` at stride 2, into that channel's four planes
    /// (`planes`, `4·b·gh·gw`).
    ///
    /// # Safety
    /// The CPU has AVX-512F; `x` holds `b·c` images of `h × w` with `w ≤ 32`, `gw ≤ 16`,
    /// `ceil(h / 2) ≤ gh`, `ceil(w / 2) ≤ gw`, `ci < c`, and `planes` is `4·b·gh·gw` long.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn split_channel(
        x: &[f32],
        c: usize,
        ci: usize,
        [h, w]: [usize; 2],
        [gh, gw]: [usize; 2],
        planes: &mut [f32],
    ) {
        let (l, len) = (gh * gw, planes.len() / 4);
        let b = len / l;
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let idx = [even, _mm512_add_epi32(even, _mm512_set1_epi32(1))];
        // Lanes `x` whose source column `2x + bx` is in the row.
        let inside = [live(0, w.div_ceil(2)), live(0, w / 2)];
        let (lo, hi, keep) = (
            live(0, w.min(LANES)),
            live(0, w.saturating_sub(LANES)),
            live(0, gw),
        );
        let out = planes.as_mut_ptr();
        for i in 0..b {
            let img = x.as_ptr().wrapping_add((i * c + ci) * h * w);
            for iy in 0..h {
                let row = img.wrapping_add(iy * w);
                // SAFETY: the masked loads read `row[0..min(w, 16)]` and `row[16..w]`, inside
                // image `i`'s channel `ci` in `x`.
                let (v0, v1) = unsafe {
                    (
                        _mm512_maskz_loadu_ps(lo, row),
                        _mm512_maskz_loadu_ps(hi, row.wrapping_add(LANES)),
                    )
                };
                let at = i * l + (iy / 2) * gw;
                for bx in 0..2 {
                    let v = _mm512_maskz_permutex2var_ps(inside[bx], v0, idx[bx], v1);
                    // SAFETY: `gw` values at row `iy / 2 < gh` of image `i` in plane
                    // `(iy mod 2, bx)`, inside `planes`.
                    unsafe {
                        _mm512_mask_storeu_ps(out.add(((iy % 2) * 2 + bx) * len + at), keep, v)
                    };
                }
            }
            // The plane rows below the image (phase 1 of an odd height, and rows past it).
            for a in 0..2 {
                for y in h.saturating_sub(a).div_ceil(2)..gh {
                    for bx in 0..2 {
                        // SAFETY: as above, rows `y < gh`.
                        unsafe {
                            _mm512_mask_storeu_ps(
                                out.add((a * 2 + bx) * len + i * l + y * gw),
                                keep,
                                _mm512_setzero_ps(),
                            )
                        };
                    }
                }
            }
        }
    }

    /// [`super::Phases::interleave`] of image `i` at stride 2 into `img` (`c·h·w`), from the
    /// planes of all `b` images (`4·c·b·gh·gw`), without the finishing pass; every value of
    /// `img` is written.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `w ≤ 32`, `gw ≤ 16`, `ceil(h / 2) ≤ gh`, `ceil(w / 2) ≤ gw`,
    /// `i < b`, `img.len()` is a multiple `c` of `h·w` and `planes` is `4·c·b·gh·gw` long.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn interleave_image(
        planes: &[f32],
        i: usize,
        [h, w]: [usize; 2],
        [gh, gw]: [usize; 2],
        b: usize,
        img: &mut [super::MaybeUninit<f32>],
    ) {
        let (l, len) = (gh * gw, b * gh * gw);
        // Lane `ix` takes `ix / 2` of phase 0 (even `ix`) or of phase 1 (odd: index + 16).
        let first = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
        let second = _mm512_add_epi32(first, _mm512_set1_epi32(8));
        let (lo, hi, keep) = (
            live(0, w.min(LANES)),
            live(0, w.saturating_sub(LANES)),
            live(0, gw),
        );
        let (src, dst) = (planes.as_ptr(), img.as_mut_ptr().cast::<f32>());
        for ci in 0..img.len() / (h * w) {
            for iy in 0..h {
                let at = (ci * 4 + (iy % 2) * 2) * len + i * l + (iy / 2) * gw;
                let row = dst.wrapping_add((ci * h + iy) * w);
                // SAFETY: the loads read `gw` values of row `iy / 2 < gh` of image `i` in the
                // planes `(ci, iy mod 2, 0)` and `(ci, iy mod 2, 1)`; the stores write
                // `row[0..min(w, 16)]` and `row[16..w]`, inside `img`.
                unsafe {
                    let p0 = _mm512_maskz_loadu_ps(keep, src.add(at));
                    let p1 = _mm512_maskz_loadu_ps(keep, src.add(at + len));
                    _mm512_mask_storeu_ps(row, lo, _mm512_permutex2var_ps(p0, first, p1));
                    _mm512_mask_storeu_ps(
                        row.wrapping_add(LANES),
                        hi,
                        _mm512_permutex2var_ps(p0, second, p1),
                    );
                }
            }
        }
    }
}
