//! Convolutions with one output channel at stride 1, computed from the input planes rather
//! than from a patch matrix (see [`super::direct_path`]): a model's last layer that maps
//! feature maps back to one grey image, such as `conv(1,3,s1,p1)`.
//!
//! Each input plane is copied into a zero-padded plane `(H + 2p) × (W + 2p)`, so that the
//! plane under kernel offset `(ky, kx)` starts `ky·(W + 2p) + kx` values further on: every
//! kernel offset becomes one long multiply-add over contiguous values, with the output kept
//! at the padded width too and its extra `kw − 1` columns of each row dropped at the end.
//! Forward, each output value is summed over input channels and kernel offsets in the order of
//! the patch matrix's rows, from zero.

use super::Geom;
use crate::kernels::pieces::each_chunk;

/// A geometry's planes at the padded width.
#[derive(Debug, Clone, Copy)]
struct Padded {
    /// Input (big image) height and width.
    h: usize,
    w: usize,
    /// Padding.
    p: usize,
    /// Output (grid) height and width.
    gh: usize,
    gw: usize,
    /// Kernel height and width.
    kh: usize,
    kw: usize,
    /// The padded width, `w + 2p`: the row length of every plane here.
    pw: usize,
}

impl Padded {
    fn new(g: &Geom) -> Self {
        debug_assert_eq!(g.s, 1, "the direct path is for stride 1");
        let pw = g.big[1] + 2 * g.p;
        Padded {
            h: g.big[0],
            w: g.big[1],
            p: g.p,
            gh: g.grid[0],
            gw: g.grid[1],
            kh: g.k[0],
            kw: g.k[1],
            pw,
        }
    }

    /// Kernel offsets.
    fn taps(&self) -> usize {
        self.kh * self.kw
    }

    /// Values of a padded input plane: `(h + 2p)` rows, then `kw − 1` more so that the
    /// last kernel offset's run of [`Self::out_len`] values stays inside.
    fn plane_len(&self) -> usize {
        (self.h + 2 * self.p) * self.pw + self.kw - 1
    }

    /// Values of an output plane at the padded width: `gh` rows.
    fn out_len(&self) -> usize {
        self.gh * self.pw
    }

    /// Where the run of kernel offset `kk = ky·kw + kx` starts in a padded input plane.
    fn tap(&self, kk: usize) -> usize {
        kk / self.kw * self.pw + kk % self.kw
    }

    /// Copies an input plane (`h × w`) into the inside of a padded plane, whose padding
    /// stays as it is (zero).
    fn fill(&self, src: &[f32], dst: &mut [f32]) {
        for (y, row) in src.chunks_exact(self.w).enumerate() {
            dst[(y + self.p) * self.pw + self.p..][..self.w].copy_from_slice(row);
        }
    }

    /// The inside of a padded plane back into an input plane (`h × w`).
    fn crop_plane(&self, src: &[f32], dst: &mut [f32]) {
        for (y, row) in dst.chunks_exact_mut(self.w).enumerate() {
            row.copy_from_slice(&src[(y + self.p) * self.pw + self.p..][..self.w]);
        }
    }

    /// An output plane (`gh × gw`) at the padded width, whose extra columns stay as they are
    /// (zero).
    fn widen(&self, src: &[f32], dst: &mut [f32]) {
        for (y, row) in src.chunks_exact(self.gw).enumerate() {
            dst[y * self.pw..][..self.gw].copy_from_slice(row);
        }
    }

    /// An output plane at the padded width back to `gh × gw`.
    fn narrow(&self, src: &[f32], dst: &mut [f32]) {
        for (y, row) in dst.chunks_exact_mut(self.gw).enumerate() {
            row.copy_from_slice(&src[y * self.pw..][..self.gw]);
        }
    }
}

/// The output `[b, 1, gh, gw]` (before bias and ReLU) of the convolution of `x` (`[b, c, h,
/// w]`) with `w` (`[1, c, kh, kw]`).
pub(super) fn forward(x: &[f32], w: &[f32], b: usize, g: &Geom) -> Vec<f32> {
    let pad = Padded::new(g);
    let (hw, taps) = (pad.h * pad.w, pad.taps());
    let mut y = vec![0f32; b * g.len()];
    each_chunk(&mut y, g.len(), |i, yi| {
        let mut xp = vec![0f32; pad.plane_len()];
        let mut acc = vec![0f32; pad.out_len()];
        for ci in 0..g.c {
            pad.fill(&x[(i * g.c + ci) * hw..][..hw], &mut xp);
            for (kk, &wv) in w[ci * taps..][..taps].iter().enumerate() {
                let run = &xp[pad.tap(kk)..][..acc.len()];
                for (a, &v) in acc.iter_mut().zip(run) {
                    *a += wv * v;
                }
            }
        }
        pad.narrow(&acc, yi);
    });
    y
}

/// The gradient `[1, c, kh, kw]` of the weight, for the input `x` (`[b, c, h, w]`) and the
/// output's gradient `g` (`[b, 1, gh, gw]`, already through the ReLU's mask). Images are
/// taken in order, so the sums do not depend on the threads.
pub(super) fn weight_grad(x: &[f32], g: &[f32], b: usize, geom: &Geom) -> Vec<f32> {
    /// Lanes of the running sums: four AVX-512 vectors, so that their chains of additions
    /// overlap.
    const LANES: usize = 64;
    let pad = Padded::new(geom);
    let (hw, taps, l) = (pad.h * pad.w, pad.taps(), geom.len());
    let mut sums = vec![[0f32; LANES]; geom.rows()];
    let mut xp = vec![0f32; pad.plane_len()];
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

/// The gradient `[b, c, h, w]` of the input, for the weight `w` (`[1, c, kh, kw]`) and the
/// output's gradient `g` (`[b, 1, gh, gw]`, already through the ReLU's mask): each input value
/// sums, from zero and in order of the kernel offsets, the weight times the gradient of each
/// output it reached.
pub(super) fn input_grad(w: &[f32], g: &[f32], b: usize, geom: &Geom) -> Vec<f32> {
    let pad = Padded::new(geom);
    let (hw, taps, l) = (pad.h * pad.w, pad.taps(), geom.len());
    let mut dx = vec![0f32; b * geom.big_len()];
    each_chunk(&mut dx, geom.big_len(), |i, dxi| {
        let mut gp = vec![0f32; pad.out_len()];
        pad.widen(&g[i * l..][..l], &mut gp);
        let mut acc = vec![0f32; pad.plane_len()];
        for (ci, plane) in dxi.chunks_exact_mut(hw).enumerate() {
            acc.fill(0.0);
            for (kk, &wv) in w[ci * taps..][..taps].iter().enumerate() {
                let run = &mut acc[pad.tap(kk)..][..gp.len()];
                for (a, &v) in run.iter_mut().zip(&gp) {
                    *a += wv * v;
                }
            }
            pad.crop_plane(&acc, plane);
        }
    });
    dx
}
