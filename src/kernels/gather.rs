//! Indexed loads and sums for the convolutions' patch matrices, through tables of offsets
//! where an offset past the source's end marks a padding position.
//!
//! The plain loops are one scalar load, compare and store per element: the compiler does not
//! turn them into vector gathers (its cost model declines, even for AVX-512). Where the CPU has
//! AVX-512 with fast gathers and the rows are long enough to fill vectors, they run as masked
//! 16-lane gathers instead, with the same additions in the same order (identical results);
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
        // SAFETY: `usable` checked the CPU and `n ≤ i32::MAX`; the assert above, `n > 0` and
        // a non-empty `t`.
        return unsafe { avx512::gather_images(x, n, t, out) };
    }
    plain_gather_images(x, n, t, out);
}

/// [`gather_images`] as plain loops.
fn plain_gather_images(x: &[f32], n: usize, t: &[u32], out: &mut [f32]) {
    for (img, row) in x.chunks_exact(n).zip(out.chunks_exact_mut(t.len())) {
        for (d, &o) in row.iter_mut().zip(t) {
            *d = img.get(o as usize).copied().unwrap_or(0.0);
        }
    }
}

/// For each position `q` of `out` (`P` long) and each of the `m = t.len() / P` rows of `t`
/// (at least one): `out[q] = 0 + src[t[q]] + src[t[P + q]] + …`, in order of the rows,
/// skipping offsets `≥ src.len()`.
pub(super) fn gather_sums(src: &[f32], t: &[u32], out: &mut [f32]) {
    let p = out.len();
    assert!(
        p > 0 && !t.is_empty() && t.len().is_multiple_of(p),
        "gather_sums: the table is not whole rows of the output"
    );
    #[cfg(target_arch = "x86_64")]
    if p >= MIN_VECTOR_ROW && avx512::usable(src.len()) {
        // SAFETY: `usable` checked the CPU and `src.len() ≤ i32::MAX`; the assert above, a
        // non-empty `out` and whole rows of `t`.
        return unsafe { avx512::gather_sums(src, t, out) };
    }
    plain_gather_sums(src, t, out);
}

/// [`gather_sums`] as plain loops.
fn plain_gather_sums(src: &[f32], t: &[u32], out: &mut [f32]) {
    out.fill(0.0);
    for tr in t.chunks_exact(out.len()) {
        for (d, &o) in out.iter_mut().zip(tr) {
            if let Some(v) = src.get(o as usize) {
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

    /// Whether the AVX-512 paths apply to sources of `n` values: the CPU has AVX-512F, its
    /// gathers are not slowed by a microcode mitigation, and every offset inside the source
    /// fits the gathers' signed 32-bit lanes.
    #[inline]
    pub(super) fn usable(n: usize) -> bool {
        n <= i32::MAX as usize && std::arch::is_x86_feature_detected!("avx512f") && fast_gathers()
    }

    /// False where Linux reports the microcode mitigation of Gather Data Sampling
    /// ("Downfall", on Intel CPUs from Skylake to Ice Lake and Tiger Lake), which makes every
    /// vector gather several times slower: there the plain loops are faster. Elsewhere
    /// (unaffected CPUs, other systems) true.
    fn fast_gathers() -> bool {
        static FAST: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *FAST.get_or_init(|| {
            std::fs::read_to_string("/sys/devices/system/cpu/vulnerabilities/gather_data_sampling")
                .map_or(true, |state| !state.starts_with("Mitigation"))
        })
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

    /// [`super::gather_sums`] with masked 16-lane gathers (lanes at padding add 0, which
    /// leaves every sum as the plain loop has it: a sum that starts at +0 is never −0).
    ///
    /// # Safety
    /// The CPU has AVX-512F, `src.len() ≤ i32::MAX`, `out` is not empty and `t` is whole
    /// rows of `out.len()` offsets.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gather_sums(src: &[f32], t: &[u32], out: &mut [f32]) {
        let p = out.len();
        for j in (0..p).step_by(LANES) {
            let mut acc = _mm512_setzero_ps();
            let mut live = 0;
            for tr in t.chunks_exact(p) {
                // SAFETY: `j < tr.len()`; the caller guarantees the rest.
                let (idx, row_live, inside) = unsafe { lanes(tr, j, src.len()) };
                live = row_live;
                // SAFETY: only lanes in `inside` load, each at an offset below `src.len()`.
                let v = unsafe {
                    _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), inside, idx, src.as_ptr())
                };
                acc = _mm512_add_ps(acc, v);
            }
            // SAFETY: only `live` lanes store, at `out[j..j + min(16, p − j)]`.
            unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr().add(j), live, acc) };
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

    /// The gathers on every path this CPU has: the plain loops, and the AVX-512 ones (called
    /// directly, for short rows too) where the CPU has them.
    type Paths = Vec<(
        &'static str,
        fn(&[f32], usize, &[u32], &mut [f32]),
        fn(&[f32], &[u32], &mut [f32]),
    )>;

    fn paths() -> Paths {
        #[allow(unused_mut)]
        let mut paths: Paths = vec![("plain", plain_gather_images, plain_gather_sums)];
        #[cfg(target_arch = "x86_64")]
        if avx512::usable(1 << 20) {
            paths.push((
                "avx512",
                // SAFETY: `usable` checked the CPU; the test's sources are small and its
                // tables and outputs have the shapes the functions ask for.
                |x, n, t, out| unsafe { avx512::gather_images(x, n, t, out) },
                |src, t, out| unsafe { avx512::gather_sums(src, t, out) },
            ));
        }
        paths
    }

    /// Every row length from 1 to 40, several images, on every path, against the definitions.
    #[test]
    fn gathers_match_their_definitions() {
        let n = 41; // prime, so `j·7 + seed` is distinct below it for j < 41
        for (path, gather_images, gather_sums) in paths() {
            for l in 1..=40 {
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
                        let got = out[i * l + j];
                        assert_eq!(got, want, "{path} gather, l = {l}, image {i}, lane {j}");
                    }
                }

                // Three rows of offsets summed into each position.
                let rows: Vec<u32> = (0..3).flat_map(|r| table(l, n, 5 * r + 1)).collect();
                let src: Vec<f32> = (0..n).map(|v| 1.0 + v as f32 / 8.0).collect();
                let mut sums = vec![f32::NAN; l];
                gather_sums(&src, &rows, &mut sums);
                for (j, &got) in sums.iter().enumerate() {
                    let want = (0..3)
                        .filter_map(|r| src.get(rows[r * l + j] as usize))
                        .fold(0.0, |acc, v| acc + v);
                    assert_eq!(got, want, "{path} gather_sums, l = {l}, position {j}");
                }
            }
        }
    }
}
