//! Convolutions with one output channel at stride 1, computed from the input planes rather
//! than from a patch matrix (see [`super::direct_path`]): a model's last layer that maps
//! feature maps back to one grey image, such as `conv(1,3,s1,p1)`.
//!
//! Each input plane is copied into a zero-padded plane ([`Planes`]), where every kernel offset
//! becomes one long multiply-add over contiguous values. Forward, each output value is summed
//! over input channels and kernel offsets in the order of the patch matrix's rows, from zero.
//! A padded plane is followed by room for the last offset's run ([`Planes::reach`] values).
//!
//! The passes are pulp [`WithSimd`] operations, so that their loops compile for the CPU's
//! widest vectors (a closure's body compiles for the baseline x86-64); each multiply and add
//! stays two operations, as written.

use std::mem::MaybeUninit;

use pulp::{Arch, Simd, WithSimd};

use super::padded::Planes;
use super::Geom;
use crate::kernels::pieces::{chunks_written_into, each_chunk, Fill};

/// The output `[b, 1, gh, gw]` (before bias and ReLU) of the convolution of `x` (`[b, c, h,
/// w]`) with `w` (`[1, c, kh, kw]`).
pub(super) fn forward(x: &[f32], w: &[f32], b: usize, g: &Geom) -> Vec<f32> {
    let pad = Planes::new(g);
    let hw = pad.h * pad.w;
    let mut y = vec![0f32; b * g.len()];
    each_chunk(&mut y, g.len(), |i, yi| {
        Arch::new().dispatch(Forward {
            x: &x[i * g.c * hw..][..g.c * hw],
            w,
            pad,
            y: yi,
        })
    });
    y
}

/// [`forward`] for one image's channels `x`, into its output `y`.
struct Forward<'a> {
    x: &'a [f32],
    w: &'a [f32],
    pad: Planes,
    y: &'a mut [f32],
}

impl WithSimd for Forward<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        let Forward { x, w, pad, y } = self;
        let (hw, taps) = (pad.h * pad.w, pad.taps);
        let mut xp = vec![0f32; pad.area + pad.reach()];
        let mut acc = vec![0f32; pad.out_len()];
        for (ci, plane) in x.chunks_exact(hw).enumerate() {
            pad.fill(plane, &mut xp);
            for (kk, &wv) in w[ci * taps..][..taps].iter().enumerate() {
                let run = &xp[pad.tap(kk)..][..acc.len()];
                for (a, &v) in acc.iter_mut().zip(run) {
                    *a += wv * v;
                }
            }
        }
        pad.narrow(&acc, y);
    }
}

/// The gradient `[1, c, kh, kw]` of the weight, for the input `x` (`[b, c, h, w]`) and the
/// output's gradient `g` (`[b, 1, gh, gw]`, already through the ReLU's mask). Images are
/// taken in order, so the sums do not depend on the threads.
pub(super) fn weight_grad(x: &[f32], g: &[f32], b: usize, geom: &Geom) -> Vec<f32> {
    Arch::new().dispatch(WeightGrad { x, g, b, geom })
}

/// [`weight_grad`]'s pass.
struct WeightGrad<'a> {
    x: &'a [f32],
    g: &'a [f32],
    b: usize,
    geom: &'a Geom,
}

impl WithSimd for WeightGrad<'_> {
    type Output = Vec<f32>;

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) -> Vec<f32> {
        /// Lanes of the running sums: four AVX-512 vectors, so that their chains of additions
        /// overlap.
        const LANES: usize = 64;
        let WeightGrad { x, g, b, geom } = self;
        let pad = Planes::new(geom);
        let (hw, taps, l) = (pad.h * pad.w, pad.taps, geom.len());
        let mut sums = vec![[0f32; LANES]; geom.rows()];
        let mut xp = vec![0f32; pad.area + pad.reach()];
        let mut gp = vec![0f32; pad.out_len()];
        for i in 0..b {
            pad.widen(&g[i * l..][..l], &mut gp);
            for ci in 0..geom.c {
                pad.fill(&x[(i * geom.c + ci) * hw..][..hw], &mut xp);
                for (kk, sum) in sums[ci * taps..][..taps].iter_mut().enumerate() {
                    let run = &xp[pad.tap(kk)..][..gp.len()];
                    let (gs, rest_g) = gp.as_chunks::<LANES>();
                    let (xs, rest_x) = run.as_chunks::<LANES>();
                    for (gc, xc) in gs.iter().zip(xs) {
                        for t in 0..LANES {
                            sum[t] += gc[t] * xc[t];
                        }
                    }
                    for (t, (&gv, &xv)) in rest_g.iter().zip(rest_x).enumerate() {
                        sum[t] += gv * xv;
                    }
                }
            }
        }
        sums.iter().map(|s| s.iter().sum()).collect()
    }
}

/// The gradient `[b, c, h, w]` of the input, for the weight `w` (`[1, c, kh, kw]`) and the
/// output's gradient `g` (`[b, 1, gh, gw]`, already through the ReLU's mask): each input value
/// sums, from zero and in order of the kernel offsets, the weight times the gradient of each
/// output it reached. Written into `dest` and returned.
pub(super) fn input_grad<'d>(
    w: &[f32],
    g: &[f32],
    (b, geom): (usize, &Geom),
    dest: &'d mut [MaybeUninit<f32>],
) -> &'d mut [f32] {
    let pad = Planes::new(geom);
    let l = geom.len();
    assert_eq!(
        dest.len(),
        b * geom.big_len(),
        "input_grad: a gradient of another size"
    );
    chunks_written_into(dest, geom.big_len(), |i, dxi| {
        Arch::new().dispatch(InputGrad {
            w,
            g: &g[i * l..][..l],
            pad,
            dx: dxi,
        })
    })
}

/// [`input_grad`] for one image's output gradient `g`, into its input's gradient `dx`.
struct InputGrad<'a, 'b> {
    w: &'a [f32],
    g: &'a [f32],
    pad: Planes,
    dx: &'a mut Fill<'b>,
}

impl WithSimd for InputGrad<'_, '_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        let InputGrad { w, g, pad, dx } = self;
        let taps = pad.taps;
        let mut gp = vec![0f32; pad.out_len()];
        pad.widen(g, &mut gp);
        let mut acc = vec![0f32; pad.area + pad.reach()];
        for w in w.chunks_exact(taps) {
            acc.fill(0.0);
            for (kk, &wv) in w.iter().enumerate() {
                let run = &mut acc[pad.tap(kk)..][..gp.len()];
                for (a, &v) in run.iter_mut().zip(&gp) {
                    *a += wv * v;
                }
            }
            pad.crop_into(&acc, dx);
        }
    }
}
