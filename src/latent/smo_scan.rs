//! The passes of each iteration of the RBF SVM's solver ([`super::kernel_svm`]) over every
//! sample of a binary problem: the choice of the working set's two samples (Fan, Chen & Lin's
//! second-order rule, as libsvm) and the gradient's update after the step.
//!
//! The choices are arg-max and arg-min scans whose running best decides each comparison, so
//! compilers leave them as one scalar loop with branches; with AVX-512 they run here on eight
//! samples at a time: eight running choices, sample `t` in choice `t % 8`, combined at the end
//! into the choice the plain loop over `t` in order makes (the greatest, or least, value, and
//! among equal values the last sample, since the plain loop takes a sample whose value equals
//! the best so far). Every value is computed with the plain loop's operations in its order, so
//! both forms choose the same sample, with the same value (tested); the greatest `y G` of
//! [`pick_low`], a maximum, may differ only in the sign of a zero, which the solver's stopping
//! test does not see. No crate offers these scans: libsvm's are plain loops too.

use pulp::{Arch, Simd, WithSimd};

/// libsvm's `TAU`: the smallest curvature used for a pair of samples.
pub(super) const TAU: f64 = 1e-12;

/// K(x, x): 1 for the RBF kernel.
pub(super) const DIAG: f64 = 1.0;

/// Running choices of the scans (one AVX-512 vector of `f64`).
const LANES: usize = 8;

/// The state of a binary problem that the scans read: labels (±1), the dual's gradient and
/// coefficients, and the box constraint.
#[derive(Clone, Copy)]
pub(super) struct Problem<'a> {
    pub(super) y: &'a [f64],
    pub(super) grad: &'a [f64],
    pub(super) alpha: &'a [f64],
    pub(super) c: f64,
}

impl Problem<'_> {
    /// Panics unless the gradient and the coefficients hold a value per label.
    fn check(&self) {
        assert!(
            self.grad.len() == self.y.len() && self.alpha.len() == self.y.len(),
            "smo_scan: a problem whose slices differ in length"
        );
    }
}

/// Whether sample `t` may move up (libsvm's `I_up`).
#[inline(always)]
fn in_up(p: &Problem<'_>, t: usize) -> bool {
    (p.y[t] > 0.0 && p.alpha[t] < p.c) || (p.y[t] < 0.0 && p.alpha[t] > 0.0)
}

/// Whether sample `t` may move down (libsvm's `I_low`).
#[inline(always)]
fn in_low(p: &Problem<'_>, t: usize) -> bool {
    (p.y[t] > 0.0 && p.alpha[t] > 0.0) || (p.y[t] < 0.0 && p.alpha[t] < p.c)
}

/// The working set's first sample: the last of `I_up` with the greatest `−y G`, and that
/// value; `usize::MAX` (and −∞) when `I_up` is empty.
pub(super) fn pick_up(p: Problem<'_>) -> (f64, usize) {
    p.check();
    #[cfg(target_arch = "x86_64")]
    if avx512::usable() {
        // SAFETY: the CPU has AVX-512F (checked just above), and every slice of the problem
        // holds a value per sample (checked above that).
        return unsafe { avx512::pick_up(p) };
    }
    let mut choice = Choices::new(true);
    for t in 0..p.y.len() {
        up_step(&p, t, &mut choice.lane[0]);
    }
    choice.best()
}

/// The working set's second sample for the first one's kernel row `ki` and value `gmax`: the
/// last of `I_low` with `b = gmax + y G > 0` and the least gain `−b² / a`, `a` the pair's
/// curvature; with the greatest `y G` over `I_low` (−∞ when it is empty).
pub(super) fn pick_low(p: Problem<'_>, ki: &[f32], gmax: f64) -> (f64, usize) {
    p.check();
    assert!(
        ki.len() >= p.y.len(),
        "pick_low: a kernel row shorter than the problem"
    );
    #[cfg(target_arch = "x86_64")]
    if avx512::usable() {
        // SAFETY: the CPU has AVX-512F (checked just above); every slice of the problem holds
        // a value per sample, and so does `ki` (checked above that).
        return unsafe { avx512::pick_low(p, ki, gmax) };
    }
    let mut choice = Choices::new(false);
    let mut top = f64::NEG_INFINITY;
    for t in 0..p.y.len() {
        low_step(&p, (ki, gmax), t, (&mut top, &mut choice.lane[0]));
    }
    (top, choice.best().1)
}

/// One sample of [`pick_up`]'s scan into a running choice.
#[inline(always)]
fn up_step(p: &Problem<'_>, t: usize, (best, at): &mut (f64, usize)) {
    let v = -p.y[t] * p.grad[t];
    if in_up(p, t) && v >= *best {
        (*best, *at) = (v, t);
    }
}

/// One sample of [`pick_low`]'s scan into the greatest `y G` and a running choice.
#[inline(always)]
fn low_step(
    p: &Problem<'_>,
    (ki, gmax): (&[f32], f64),
    t: usize,
    (top, (best, at)): (&mut f64, &mut (f64, usize)),
) {
    if !in_low(p, t) {
        return;
    }
    let yg = p.y[t] * p.grad[t];
    *top = top.max(yg);
    let b = gmax + yg;
    if b > 0.0 {
        let a = (DIAG + DIAG - 2.0 * ki[t] as f64).max(TAU);
        let gain = -(b * b) / a;
        if gain <= *best {
            (*best, *at) = (gain, t);
        }
    }
}

/// Running choices `(value, sample)`, of the greatest values or of the least.
struct Choices {
    lane: [(f64, usize); LANES],
    greatest: bool,
}

impl Choices {
    fn new(greatest: bool) -> Self {
        let start = if greatest {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        };
        Choices {
            lane: [(start, usize::MAX); LANES],
            greatest,
        }
    }

    /// The choice of a plain scan in order over the samples of every lane: the best value,
    /// and among equal values the last sample.
    fn best(&self) -> (f64, usize) {
        let mut out = self.lane[0];
        for &(v, t) in &self.lane[1..] {
            if t == usize::MAX {
                continue;
            }
            let better = if self.greatest { v > out.0 } else { v < out.0 };
            if out.1 == usize::MAX || better || (v == out.0 && t > out.1) {
                out = (v, t);
            }
        }
        out
    }
}

/// The gradient's update after a step along the pair `(i, j)` of kernel rows `ki`, `kj`:
/// `G_t += y_t · step · (K_ti − K_tj)`. A pulp `WithSimd` operation, so that its loop
/// compiles for the CPU's widest vectors (a plain function compiles for the baseline x86-64);
/// each multiply and add stays its own operation.
pub(super) fn move_grad(grad: &mut [f64], y: &[f64], step: f64, (ki, kj): (&[f32], &[f32])) {
    assert!(
        y.len() == grad.len() && ki.len() >= grad.len() && kj.len() >= grad.len(),
        "move_grad: rows shorter than the gradient"
    );
    Arch::new().dispatch(MoveGrad {
        grad,
        y,
        step,
        ki,
        kj,
    });
}

struct MoveGrad<'a> {
    grad: &'a mut [f64],
    y: &'a [f64],
    step: f64,
    ki: &'a [f32],
    kj: &'a [f32],
}

impl WithSimd for MoveGrad<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        let MoveGrad {
            grad,
            y,
            step,
            ki,
            kj,
        } = self;
        for (((g, &yt), &a), &b) in grad.iter_mut().zip(y).zip(ki).zip(kj) {
            *g += yt * step * (a as f64 - b as f64);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{low_step, up_step, Choices, Problem, DIAG, LANES, TAU};

    /// Whether the CPU runs these scans (AVX-512F).
    pub(super) fn usable() -> bool {
        #[cfg(test)]
        if super::tests::PLAIN.get() {
            return false;
        }
        std::arch::is_x86_feature_detected!("avx512f")
    }

    /// The vectors of samples `t..t + 8`: labels, gradient, coefficients.
    ///
    /// # Safety
    /// AVX-512F; `t + 8` values in each of the problem's slices.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load(p: &Problem<'_>, t: usize) -> (__m512d, __m512d, __m512d) {
        // SAFETY: the caller's contract: eight values from `t` in each slice.
        unsafe {
            (
                _mm512_loadu_pd(p.y.as_ptr().add(t)),
                _mm512_loadu_pd(p.grad.as_ptr().add(t)),
                _mm512_loadu_pd(p.alpha.as_ptr().add(t)),
            )
        }
    }

    /// The lanes that may move up and down: [`super::in_up`] and [`super::in_low`].
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn sets(y: __m512d, a: __m512d, c: __m512d) -> (__mmask8, __mmask8) {
        let zero = _mm512_setzero_pd();
        let pos = _mm512_cmp_pd_mask::<_CMP_GT_OQ>(y, zero);
        let neg = _mm512_cmp_pd_mask::<_CMP_LT_OQ>(y, zero);
        let below_c = _mm512_cmp_pd_mask::<_CMP_LT_OQ>(a, c);
        let above_0 = _mm512_cmp_pd_mask::<_CMP_GT_OQ>(a, zero);
        (
            (pos & below_c) | (neg & above_0),
            (pos & above_0) | (neg & below_c),
        )
    }

    /// `−x`, exactly: `x` with its sign bit flipped by `sign` (only the sign bit set). As
    /// integers, since the `f64` form of the exclusive or needs AVX-512DQ.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn negated(x: __m512d, sign: __m512i) -> __m512d {
        _mm512_castsi512_pd(_mm512_xor_si512(_mm512_castpd_si512(x), sign))
    }

    /// The sample numbers `t..t + 8`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn numbers(t: usize) -> __m512i {
        _mm512_add_epi64(
            _mm512_set1_epi64(t as i64),
            _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0),
        )
    }

    /// The vectors' running choices as [`Choices`], for the samples past the last whole
    /// vector and the combination.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn choices(best: __m512d, at: __m512i, greatest: bool) -> Choices {
        let (mut v, mut t) = ([0f64; LANES], [0u64; LANES]);
        // SAFETY: eight values each, written into arrays of eight.
        unsafe {
            _mm512_storeu_pd(v.as_mut_ptr(), best);
            _mm512_storeu_si512(t.as_mut_ptr().cast(), at);
        }
        let mut out = Choices::new(greatest);
        for (lane, (&v, &t)) in out.lane.iter_mut().zip(v.iter().zip(&t)) {
            *lane = (v, t as usize);
        }
        out
    }

    /// [`super::pick_up`] eight samples at a time.
    ///
    /// # Safety
    /// AVX-512F; the problem's slices of one length.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn pick_up(p: Problem<'_>) -> (f64, usize) {
        let n = p.y.len();
        let c = _mm512_set1_pd(p.c);
        let sign = _mm512_set1_epi64(i64::MIN);
        let mut best = _mm512_set1_pd(f64::NEG_INFINITY);
        let mut at = _mm512_set1_epi64(usize::MAX as i64);
        let whole = n / LANES * LANES;
        for t in (0..whole).step_by(LANES) {
            // SAFETY: `t + 8 <= whole <= n`, the length of every slice of the problem.
            let (y, g, a) = unsafe { load(&p, t) };
            let (up, _) = sets(y, a, c);
            // −y · G, as the plain loop: the negation is exact.
            let v = _mm512_mul_pd(negated(y, sign), g);
            let take = up & _mm512_cmp_pd_mask::<_CMP_GE_OQ>(v, best);
            best = _mm512_mask_mov_pd(best, take, v);
            at = _mm512_mask_mov_epi64(at, take, numbers(t));
        }
        let mut choice = choices(best, at, true);
        for t in whole..n {
            up_step(&p, t, &mut choice.lane[t % LANES]);
        }
        choice.best()
    }

    /// [`super::pick_low`] eight samples at a time.
    ///
    /// # Safety
    /// AVX-512F; the problem's slices of one length, and `ki` at least as long.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn pick_low(p: Problem<'_>, ki: &[f32], gmax: f64) -> (f64, usize) {
        let n = p.y.len();
        let c = _mm512_set1_pd(p.c);
        let sign = _mm512_set1_epi64(i64::MIN);
        let zero = _mm512_setzero_pd();
        let (gm, two, diag2, tau) = (
            _mm512_set1_pd(gmax),
            _mm512_set1_pd(2.0),
            _mm512_set1_pd(DIAG + DIAG),
            _mm512_set1_pd(TAU),
        );
        let mut top = _mm512_set1_pd(f64::NEG_INFINITY);
        let mut best = _mm512_set1_pd(f64::INFINITY);
        let mut at = _mm512_set1_epi64(usize::MAX as i64);
        let whole = n / LANES * LANES;
        for t in (0..whole).step_by(LANES) {
            // SAFETY: `t + 8 <= whole <= n`, the length of every slice of the problem, and
            // `n <= ki.len()`.
            let ((y, g, a), k) = unsafe {
                (
                    load(&p, t),
                    _mm512_cvtps_pd(_mm256_loadu_ps(ki.as_ptr().add(t))),
                )
            };
            let (_, low) = sets(y, a, c);
            let yg = _mm512_mul_pd(y, g);
            // The running greatest second: where `yg` is NaN, `vmaxpd` gives its second
            // operand, so `top` stays as it was, as with `f64::max`.
            top = _mm512_mask_max_pd(top, low, yg, top);
            let b = _mm512_add_pd(gm, yg);
            // (K_ii + K_tt − 2 K_it) kept from falling below τ, then −b² / a.
            let curve = _mm512_max_pd(_mm512_sub_pd(diag2, _mm512_mul_pd(two, k)), tau);
            let gain = _mm512_div_pd(negated(_mm512_mul_pd(b, b), sign), curve);
            let take = low
                & _mm512_cmp_pd_mask::<_CMP_GT_OQ>(b, zero)
                & _mm512_cmp_pd_mask::<_CMP_LE_OQ>(gain, best);
            best = _mm512_mask_mov_pd(best, take, gain);
            at = _mm512_mask_mov_epi64(at, take, numbers(t));
        }
        let mut choice = choices(best, at, false);
        let mut tops = [0f64; LANES];
        // SAFETY: eight values written into an array of eight.
        unsafe { _mm512_storeu_pd(tops.as_mut_ptr(), top) };
        for t in whole..n {
            low_step(
                &p,
                (ki, gmax),
                t,
                (&mut tops[t % LANES], &mut choice.lane[t % LANES]),
            );
        }
        let top = tops.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
        (top, choice.best().1)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    thread_local! {
        /// Set to run the plain scans on a CPU that has AVX-512.
        pub(super) static PLAIN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// A problem of `n` samples part-way through a solve: coefficients at 0, at C and between,
    /// gradients with many repeated values (ties), and a kernel row with repeats.
    fn problem(n: usize, seed: u64) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f32>) {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let y = (0..n)
            .map(|_| if next() % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        let alpha = (0..n)
            .map(|_| match next() % 3 {
                0 => 0.0,
                1 => 1.0,
                _ => (next() % 1000) as f64 / 1000.0,
            })
            .collect();
        let grad = (0..n).map(|_| (next() % 9) as f64 / 4.0 - 1.0).collect();
        // 1.0 among them: the curvature 2 − 2K then falls to τ.
        let ki = (0..n).map(|_| (next() % 6) as f32 / 5.0).collect();
        (y, grad, alpha, ki)
    }

    /// A NaN gradient after a lane's greatest `y G` leaves it the greatest.
    #[test]
    fn a_nan_gradient_does_not_hide_the_greatest_value() {
        let n = 16;
        let (y, alpha, ki) = (vec![1.0; n], vec![0.5; n], vec![0.0f32; n]);
        let mut grad = vec![0.0; n];
        grad[0] = 5.0;
        grad[8] = f64::NAN;
        let p = Problem {
            y: &y,
            grad: &grad,
            alpha: &alpha,
            c: 1.0,
        };
        let (v, s) = both(|| pick_low(p, &ki, 1.0).0);
        assert_eq!((v, s), (5.0, 5.0));
    }

    fn both<T: PartialEq + std::fmt::Debug>(f: impl Fn() -> T) -> (T, T) {
        let vector = f();
        PLAIN.set(true);
        let plain = f();
        PLAIN.set(false);
        (vector, plain)
    }

    /// The eight-at-a-time scans choose the plain loops' samples, with the same values, for
    /// every length (whole vectors and tails), ties included, and with a NaN gradient (a code
    /// that is not a number makes one), which neither takes.
    #[test]
    fn the_scans_choose_the_plain_loops_samples() {
        for n in [0, 1, 7, 8, 9, 16, 31, 100, 1003] {
            for seed in 0..20 {
                let (y, mut grad, alpha, ki) = problem(n, seed);
                if seed % 4 == 3 && n > 0 {
                    grad[n / 2] = f64::NAN;
                }
                let p = Problem {
                    y: &y,
                    grad: &grad,
                    alpha: &alpha,
                    c: 1.0,
                };
                let (v, s) = both(|| {
                    let (gmax, i) = pick_up(p);
                    (gmax.to_bits(), i)
                });
                assert_eq!(v, s, "pick_up, n {n} seed {seed}");
                // The plain loop written out: the last of I_up with the greatest −y G.
                let want = (0..n)
                    .filter(|&t| in_up(&p, t))
                    .map(|t| (-y[t] * grad[t], t))
                    .filter(|(v, _)| !v.is_nan())
                    .fold(None, |b: Option<(f64, usize)>, (v, t)| match b {
                        Some((bv, _)) if v < bv => b,
                        _ => Some((v, t)),
                    });
                assert_eq!(want.map(|w| w.1).unwrap_or(usize::MAX), s.1, "n {n}");
                for gmax in [-0.5, 0.0, 0.75, f64::from_bits(v.0)] {
                    // The greatest y G as a number: a zero's sign may differ.
                    let (v, s) = both(|| pick_low(p, &ki, gmax));
                    assert_eq!(v.1, s.1, "pick_low, n {n} seed {seed} gmax {gmax}");
                    assert!(v.0 == s.0, "pick_low's y G, n {n} seed {seed}: {v:?} {s:?}");
                }
            }
        }
    }
}
