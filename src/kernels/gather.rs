//! Indexed loads and adds for the convolutions' patch matrices, through a table `t` of offsets
//! into one image where an offset past the image's end marks a padding position.
//!
//! The plain loops are one scalar load, compare and store per element: the compiler does not
//! turn them into vector gathers (its cost model declines, even for AVX-512). They were the
//! largest cost of a conv preset's training step after the matrix products, so where the CPU
//! has AVX-512 and the rows are long enough to fill vectors they run as masked 16-lane
//! gathers and scatters, with the same additions in the same order (identical results);
//! elsewhere, as the plain loops.

/// Rows shorter than this stay on the plain loops: a vector would be mostly masked off.
const MIN_VECTOR_ROW: usize = 8;

/// For each image `i` of `x` (`n` values each): `out[i·l + j] = image[t[j]]`, or 0 where
/// `t[j] ≥ n`; `l` is `t.len()` and `out` holds one row of `l` per image.
pub(super) fn gather_images(x: &[f32], n: usize, t: &[u32], out: &mut [f32]) {
    let l = t.len();
    assert!(
        n > 0 && l > 0 && x.len() / n == out.len() / l,
        "gather_images: images and output rows differ"
    );
    #[cfg(target_arch = "x86_64")]
    if l >= MIN_VECTOR_ROW && avx512::usable(n) {
        // SAFETY: `usable` checked the CPU and `n ≤ i32::MAX`.
        return unsafe { avx512::gather_images(x, n, t, out) };
    }
    for (img, row) in x.chunks_exact(n).zip(out.chunks_exact_mut(l)) {
        for (d, &o) in row.iter_mut().zip(t) {
            *d = img.get(o as usize).copied().unwrap_or(0.0);
        }
    }
}

/// For each row `r` of `t` (rows of `l` offsets): `img[t[r·l + j]] += cols[r·stride + j]`, row
/// after row, in order of `j`, skipping offsets `≥ img.len()`. Within a row, the offsets
/// inside `img` must be distinct (in a patch matrix they are: one kernel offset never reaches
/// the same pixel from two grid positions); with repeats, the AVX-512 path would keep only
/// one of the additions.
pub(super) fn scatter_add_rows(img: &mut [f32], t: &[u32], l: usize, cols: &[f32], stride: usize) {
    assert!(
        l > 0
            && t.len().is_multiple_of(l)
            && (t.is_empty() || (t.len() / l - 1) * stride + l <= cols.len()),
        "scatter_add_rows: the table and the rows differ"
    );
    #[cfg(target_arch = "x86_64")]
    if l >= MIN_VECTOR_ROW && avx512::usable(img.len()) {
        // SAFETY: `usable` checked the CPU and `img.len() ≤ i32::MAX`.
        return unsafe { avx512::scatter_add_rows(img, t, l, cols, stride) };
    }
    for (r, tr) in t.chunks_exact(l).enumerate() {
        for (&o, &v) in tr.iter().zip(&cols[r * stride..][..l]) {
            if let Some(d) = img.get_mut(o as usize) {
                *d += v;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// Lanes per vector.
    const LANES: usize = 16;

    /// Whether the AVX-512 paths apply to images of `n` values: the CPU has AVX-512F and
    /// every offset inside an image fits the gathers' signed 32-bit lanes.
    #[inline]
    pub(super) fn usable(n: usize) -> bool {
        n <= i32::MAX as usize && std::arch::is_x86_feature_detected!("avx512f")
    }

    /// The offsets `t[j..j + 16]`, the mask of lanes inside `t` (`live`) and, among them,
    /// the mask of offsets below `n` (`inside`).
    ///
    /// # Safety
    /// The CPU has AVX-512F, `j < t.len()` and `n ≤ i32::MAX`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn lanes(t: &[u32], j: usize, n: usize) -> (__m512i, __mmask16, __mmask16) {
        let rest = t.len() - j;
        let live: __mmask16 = if rest >= LANES {
            u16::MAX
        } else {
            (1u16 << rest) - 1
        };
        // SAFETY: the live lanes read `t[j..j + min(rest, 16)]`, inside `t`; masked lanes
        // read nothing.
        let idx = unsafe { _mm512_maskz_loadu_epi32(live, t.as_ptr().add(j).cast()) };
        let inside = _mm512_mask_cmplt_epu32_mask(live, idx, _mm512_set1_epi32(n as i32));
        (idx, live, inside)
    }

    /// [`super::gather_images`] with masked 16-lane gathers.
    ///
    /// # Safety
    /// The CPU has AVX-512F, `n ≤ i32::MAX`, `n > 0`, `t` is not empty.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gather_images(x: &[f32], n: usize, t: &[u32], out: &mut [f32]) {
        for (img, row) in x.chunks_exact(n).zip(out.chunks_exact_mut(t.len())) {
            for j in (0..t.len()).step_by(LANES) {
                // SAFETY: `j < t.len()`; the caller guarantees the rest.
                let (idx, live, inside) = unsafe { lanes(t, j, n) };
                // SAFETY: only lanes in `inside` load, each at an offset below `n =
                // img.len()` (compared unsigned; `n ≤ i32::MAX` keeps it non-negative as the
                // gather's signed offset); only `live` lanes store, at `row[j..j + min(16,
                // len − j)]`, inside `row` (as long as `t`).
                unsafe {
                    let v = _mm512_mask_i32gather_ps::<4>(
                        _mm512_setzero_ps(),
                        inside,
                        idx,
                        img.as_ptr(),
                    );
                    _mm512_mask_storeu_ps(row.as_mut_ptr().add(j), live, v);
                }
            }
        }
    }

    /// [`super::scatter_add_rows`] with masked 16-lane gathers, additions and scatters.
    ///
    /// # Safety
    /// The CPU has AVX-512F, `img.len() ≤ i32::MAX`, `l > 0`, and row `r` of `t` has its
    /// values at `cols[r·stride..][..l]`, inside `cols`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn scatter_add_rows(
        img: &mut [f32],
        t: &[u32],
        l: usize,
        cols: &[f32],
        stride: usize,
    ) {
        let n = img.len();
        for (r, tr) in t.chunks_exact(l).enumerate() {
            let v = &cols[r * stride..][..l];
            for j in (0..l).step_by(LANES) {
                // SAFETY: `j < tr.len()`; the caller guarantees the rest.
                let (idx, _, inside) = unsafe { lanes(tr, j, n) };
                // SAFETY: the values load from `v[j..j + min(16, l − j)]` under `inside`, a
                // subset of the lanes inside `v` (as long as `tr`); the gather and the scatter
                // touch only lanes in `inside`, each at an offset below `img.len()`.
                unsafe {
                    let x = _mm512_maskz_loadu_ps(inside, v.as_ptr().add(j));
                    let cur = _mm512_mask_i32gather_ps::<4>(
                        _mm512_setzero_ps(),
                        inside,
                        idx,
                        img.as_ptr(),
                    );
                    let sum = _mm512_add_ps(cur, x);
                    _mm512_mask_i32scatter_ps::<4>(img.as_mut_ptr(), inside, idx, sum);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table of `l` offsets into an image of `n` values: distinct offsets in a scrambled
    /// order; every third one past the end (padding): just past it, one further, or far past.
    fn table(l: usize, n: usize, seed: u32) -> Vec<u32> {
        (0..l as u32)
            .map(|j| match j % 3 {
                2 if j % 2 == 0 => u32::MAX,
                2 => n as u32 + (j / 6) % 2,
                _ => (j * 7 + seed) % n as u32,
            })
            .collect()
    }

    /// Every row length around the vector width, several images, against the plain loops.
    #[test]
    fn gathers_and_scatters_match_the_plain_loops() {
        let n = 41; // prime, so `j·7 + seed` is distinct below it for j < 41
        for l in [1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 40] {
            let t = table(l, n, l as u32);
            let images = 3;
            let x: Vec<f32> = (0..images * n).map(|v| v as f32 * 0.5 - 7.0).collect();
            let mut out = vec![f32::NAN; images * l];
            gather_images(&x, n, &t, &mut out);
            for i in 0..images {
                for j in 0..l {
                    let want = x[i * n..(i + 1) * n]
                        .get(t[j] as usize)
                        .copied()
                        .unwrap_or(0.0);
                    assert_eq!(out[i * l + j], want, "gather, l = {l}, image {i}, lane {j}");
                }
            }

            // Three rows of the table, each with its own offsets, scattered onto one image.
            let rows: Vec<u32> = (0..3).flat_map(|r| table(l, n, 5 * r + 1)).collect();
            let stride = l + 3;
            let cols: Vec<f32> = (0..3 * stride).map(|v| 1.0 + v as f32 / 8.0).collect();
            let mut img: Vec<f32> = (0..n).map(|v| v as f32).collect();
            let mut want = img.clone();
            for (r, tr) in rows.chunks_exact(l).enumerate() {
                for (j, &o) in tr.iter().enumerate() {
                    if let Some(d) = want.get_mut(o as usize) {
                        *d += cols[r * stride + j];
                    }
                }
            }
            scatter_add_rows(&mut img, &rows, l, &cols, stride);
            assert_eq!(img, want, "scatter, l = {l}");
        }
    }
}
