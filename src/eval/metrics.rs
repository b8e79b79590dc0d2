//! Image-quality metrics on single images, as pure functions: MSE, BCE, PSNR and SSIM.
//! SSIM follows scikit-image's `structural_similarity(..., gaussian_weights=True, sigma=1.5,
//! use_sample_covariance=False, data_range=R)`, the setting of Wang et al. (2004): an 11×11
//! Gaussian window (radius `int(3.5 * 1.5 + 0.5) = 5`), K1 = 0.01, K2 = 0.03, scipy's
//! `reflect` borders, and the mean over the image minus a 5-pixel border.
//! Written by hand: no maintained Rust crate computes SSIM with exactly these conventions.

use pulp::{Simd, WithSimd};

/// PSNR reported for identical images (where the formula gives infinity).
pub const PSNR_CAP_DB: f64 = 100.0;

/// Mean squared error.
pub fn mse(a: &[f32], b: &[f32]) -> f64 {
    debug_assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = x as f64 - y as f64;
            d * d
        })
        .sum::<f64>()
        / a.len().max(1) as f64
}

/// Binary cross-entropy of predictions `p` in [0, 1] against targets `t` in [0, 1], with
/// logs clamped at -100 as PyTorch's `nn.BCELoss` does.
pub fn bce(p: &[f32], t: &[f32]) -> f64 {
    p.iter()
        .zip(t)
        .map(|(&p, &t)| {
            let (p, t) = (p as f64, t as f64);
            -(t * p.ln().max(-100.0) + (1.0 - t) * (1.0 - p).ln().max(-100.0))
        })
        .sum::<f64>()
        / p.len().max(1) as f64
}

/// Peak signal-to-noise ratio in dB for values spanning `data_range`, capped at
/// [`PSNR_CAP_DB`].
pub fn psnr(a: &[f32], b: &[f32], data_range: f64) -> f64 {
    let m = mse(a, b);
    if !m.is_finite() {
        // Not a score: `f64::min` would turn NaN into the cap, a perfect-looking 100 dB.
        return f64::NAN;
    }
    if m <= 0.0 {
        return PSNR_CAP_DB;
    }
    (10.0 * (data_range * data_range / m).log10()).min(PSNR_CAP_DB)
}

const SIGMA: f64 = 1.5;
const RADIUS: usize = 5;

fn gaussian_kernel() -> [f64; 2 * RADIUS + 1] {
    let mut k = [0.0; 2 * RADIUS + 1];
    for (i, w) in k.iter_mut().enumerate() {
        let x = i as f64 - RADIUS as f64;
        *w = (-0.5 * x * x / (SIGMA * SIGMA)).exp();
    }
    let s: f64 = k.iter().sum();
    k.iter_mut().for_each(|w| *w /= s);
    k
}

/// scipy.ndimage's `reflect` mode: `d c b a | a b c d | d c b a`.
fn reflect(i: isize, n: usize) -> usize {
    let n = n as isize;
    let mut i = i;
    loop {
        if i < 0 {
            i = -i - 1;
        } else if i >= n {
            i = 2 * n - i - 1;
        } else {
            return i as usize;
        }
    }
}

/// The separable Gaussian filter of `h`×`w` images (scipy's `reflect` borders), with its
/// reflections worked out once for the five images one SSIM filters.
struct Blur {
    k: [f64; 2 * RADIUS + 1],
    h: usize,
    w: usize,
    /// The source column of each position of a row padded by RADIUS on both sides.
    cols: Vec<usize>,
    /// The source rows of each output row's taps, `2·RADIUS + 1` per row.
    rows: Vec<usize>,
}

impl Blur {
    fn new(h: usize, w: usize) -> Self {
        let r = RADIUS as isize;
        Blur {
            k: gaussian_kernel(),
            h,
            w,
            cols: (-r..w as isize + r).map(|x| reflect(x, w)).collect(),
            rows: (0..h as isize)
                .flat_map(|y| (-r..=r).map(move |d| reflect(y + d, h)))
                .collect(),
        }
    }

    /// `img` filtered. Each output is `Σ_j k[j]·v[j]` summed in order of the taps `j`, as a
    /// plain sum over the taps would; the loops run tap by tap over whole rows so that they
    /// vectorise across the row.
    fn apply(&self, img: &[f64]) -> Vec<f64> {
        let (h, w) = (self.h, self.w);
        if h == 0 || w == 0 {
            return Vec::new();
        }
        let mut tmp = vec![0.0; h * w];
        let mut out = vec![0.0; h * w];
        pulp::Arch::new().dispatch(Filter {
            blur: self,
            img,
            tmp: &mut tmp,
            out: &mut out,
        });
        out
    }
}

/// [`Blur::apply`]'s passes over one image: along its rows into `tmp`, then along its
/// columns into `out`. A `WithSimd` operation rather than a closure: dispatched by pulp, its
/// loops compile for the CPU's widest vectors (eight `f64` with AVX-512), where a closure's
/// body compiles for the baseline x86-64 (two). Each multiply and add stays two operations,
/// so the values are the same on every CPU.
struct Filter<'a> {
    blur: &'a Blur,
    img: &'a [f64],
    tmp: &'a mut [f64],
    out: &'a mut [f64],
}

impl WithSimd for Filter<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        let Filter {
            blur,
            img,
            tmp,
            out,
        } = self;
        let (w, k) = (blur.w, &blur.k);
        let mut padded = vec![0.0; blur.cols.len()];
        for (row, t) in img.chunks_exact(w).zip(tmp.chunks_exact_mut(w)) {
            for (p, &c) in padded.iter_mut().zip(&blur.cols) {
                *p = row[c];
            }
            weighted_sum(t, k, |j| &padded[j..j + w]);
        }
        for (o, src) in out.chunks_exact_mut(w).zip(blur.rows.chunks_exact(k.len())) {
            weighted_sum(o, k, |j| &tmp[src[j] * w..(src[j] + 1) * w]);
        }
    }
}

/// `out = k[0]·tap(0) + k[1]·tap(1) + …`, element by element, added in order of the taps.
#[inline(always)]
fn weighted_sum<'a>(out: &mut [f64], k: &[f64], tap: impl Fn(usize) -> &'a [f64]) {
    for (j, &kw) in k.iter().enumerate() {
        let terms = out.iter_mut().zip(tap(j));
        if j == 0 {
            terms.for_each(|(o, &v)| *o = kw * v);
        } else {
            terms.for_each(|(o, &v)| *o += kw * v);
        }
    }
}

/// Mean SSIM of two `h`×`w` images whose values span `data_range`.
pub fn ssim(a: &[f32], b: &[f32], h: usize, w: usize, data_range: f64) -> f64 {
    let blur = Blur::new(h, w);
    let x: Vec<f64> = a.iter().map(|&v| v as f64).collect();
    let y: Vec<f64> = b.iter().map(|&v| v as f64).collect();
    let xx: Vec<f64> = x.iter().map(|v| v * v).collect();
    let yy: Vec<f64> = y.iter().map(|v| v * v).collect();
    let xy: Vec<f64> = x.iter().zip(&y).map(|(p, q)| p * q).collect();
    let (ux, uy) = (blur.apply(&x), blur.apply(&y));
    let (uxx, uyy, uxy) = (blur.apply(&xx), blur.apply(&yy), blur.apply(&xy));
    let c1 = (0.01 * data_range).powi(2);
    let c2 = (0.03 * data_range).powi(2);
    let mut sum = 0.0;
    let mut n = 0usize;
    for r in RADIUS..h.saturating_sub(RADIUS) {
        for c in RADIUS..w.saturating_sub(RADIUS) {
            let i = r * w + c;
            let (mx, my) = (ux[i], uy[i]);
            let vx = uxx[i] - mx * mx;
            let vy = uyy[i] - my * my;
            let vxy = uxy[i] - mx * my;
            let s = ((2.0 * mx * my + c1) * (2.0 * vxy + c2))
                / ((mx * mx + my * my + c1) * (vx + vy + c2));
            sum += s;
            n += 1;
        }
    }
    sum / n.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two fixed 28×28 test images: a smooth ramp with a square, and a noisy version of it.
    fn images() -> (Vec<f32>, Vec<f32>) {
        let mut a = vec![0f32; 784];
        let mut b = vec![0f32; 784];
        for r in 0..28 {
            for c in 0..28 {
                let mut v = (r * 28 + c) as f32 / 783.0 * 0.5;
                if (8..20).contains(&r) && (10..18).contains(&c) {
                    v += 0.4;
                }
                a[r * 28 + c] = v;
                // A deterministic perturbation: ((r*7 + c*13) % 11 - 5) / 50.
                let d = (((r * 7 + c * 13) % 11) as f32 - 5.0) / 50.0;
                b[r * 28 + c] = (v + d).clamp(0.0, 1.0);
            }
        }
        (a, b)
    }

    #[test]
    fn identities_and_ranges() {
        let (a, b) = images();
        assert_eq!(mse(&a, &a), 0.0);
        assert_eq!(psnr(&a, &a, 1.0), PSNR_CAP_DB);
        assert!((ssim(&a, &a, 28, 28, 1.0) - 1.0).abs() < 1e-12);
        let s = ssim(&a, &b, 28, 28, 1.0);
        assert!((s - ssim(&b, &a, 28, 28, 1.0)).abs() < 1e-12, "symmetric");
        assert!(s < 1.0 && s > 0.0);
        assert!(bce(&a, &a) >= 0.0);
    }

    /// Reference values from scikit-image 0.26.0 / numpy (the same images built in Python):
    ///
    /// ```python
    /// import numpy as np
    /// from skimage.metrics import structural_similarity, peak_signal_noise_ratio
    /// r, c = np.mgrid[0:28, 0:28]
    /// a = ((r * 28 + c) / 783.0 * 0.5).astype(np.float32)
    /// a[8:20, 10:18] += np.float32(0.4)
    /// d = (((r * 7 + c * 13) % 11) - 5) / 50.0
    /// b = np.clip(a + d.astype(np.float32), 0, 1).astype(np.float32)
    /// a64, b64 = a.astype(np.float64), b.astype(np.float64)
    /// print(((a64 - b64) ** 2).mean())
    /// print(peak_signal_noise_ratio(a64, b64, data_range=1.0))
    /// print(structural_similarity(a64, b64, data_range=1.0, gaussian_weights=True,
    ///                             sigma=1.5, use_sample_covariance=False))
    /// ```
    #[test]
    fn matches_scikit_image() {
        let (a, b) = images();
        let (m, p, s) = (mse(&a, &b), psnr(&a, &b, 1.0), ssim(&a, &b, 28, 28, 1.0));
        let (rm, rp, rs) = REFERENCE;
        assert!((m - rm).abs() < 1e-7, "mse {m} vs {rm}");
        assert!((p - rp).abs() < 1e-4, "psnr {p} vs {rp}");
        assert!((s - rs).abs() < 1e-5, "ssim {s} vs {rs}");
    }

    const REFERENCE: (f64, f64, f64) = (
        0.0037819873142887154,
        24.222799322185438,
        0.7576986550605413,
    );
}
