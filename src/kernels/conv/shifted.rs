//! Stride-1 convolutions with several input and output channels as one matrix product per
//! kernel offset, over zero-padded input planes instead of a patch matrix (see
//! [`super::shifted_path`]).
//!
//! Each channel's images are copied, zero-padded to `(H + 2p) × (W + 2p)`, one after the
//! other into one row of a matrix `Xp` (`[c, b·A]`, `A` the padded area). On that layout the
//! input under kernel offset `(ky, kx)` of every output position is the same row shifted by
//! `ky·(W + 2p) + kx`: a view of `Xp` with no copy. The output, computed at every position of
//! the padded grid (the positions past the real output are dropped), is then the sum over
//! kernel offsets of `W_kk · shift_kk(Xp)`, `W_kk` the `[o, c]` weights of that offset: `kh·kw`
//! products of depth `c` that gemm runs at full speed, reading `Xp` (about the input's size)
//! rather than a patch matrix `kh·kw` times larger. Backward, the weight gradient of each
//! offset is `G · shift_kk(Xp)ᵀ` and the input gradient `Σ W_kkᵀ · shift_−kk(G)`, `G` the output
//! gradient laid out on the same padded grid, zero wherever no real output is.

use std::mem::MaybeUninit;

use super::padded::Planes;
use super::Geom;
use crate::kernels::matmul::{matmul_into, matmul_new, View};
use crate::kernels::pieces::{chunks_written_into, each_chunk, Scratch};

/// A stride-1 geometry's padded planes for a batch of `b` images.
#[derive(Debug, Clone, Copy)]
pub(super) struct Layout {
    b: usize,
    planes: Planes,
}

impl Layout {
    pub(super) fn new(g: &Geom, b: usize) -> Self {
        Layout {
            b,
            planes: Planes::new(g),
        }
    }

    /// Positions of the padded grid over all images: the columns of every product.
    fn n(&self) -> usize {
        self.b * self.planes.area
    }

    /// Length of a row of `Xp`: the positions, then room for the largest shift.
    fn x_row(&self) -> usize {
        self.n() + self.planes.reach()
    }

    /// Length of a row of `G`: room for the largest shift before the positions (the input
    /// gradient reads `G` shifted back), then the positions.
    fn g_row(&self) -> usize {
        self.planes.reach() + self.n()
    }
}

/// Whether at least half the padded grid's positions are real outputs: below that the shifted
/// products would compute mostly positions that are thrown away (a 7×7 kernel on a 7×7 image
/// has one real output in 49).
pub(super) fn worth_it(g: &Geom) -> bool {
    let padded = (g.big[0] + 2 * g.p) * (g.big[1] + 2 * g.p);
    2 * g.len() >= padded
}

/// `Xp` for `x` (`[b, c, h, w]`): channel `ci`'s padded planes side by side in row `ci`.
pub(super) fn pad_input(x: &[f32], c: usize, lay: &Layout) -> Scratch {
    let (row, pl) = (lay.x_row(), &lay.planes);
    let mut xp = Scratch::new(c * row);
    let hw = pl.h * pl.w;
    // Every value written once (the buffer holds stale values): each plane whole, then the
    // room after the last.
    each_chunk(&mut xp[..], row, |ci, dst| {
        let (planes, after) = dst.split_at_mut(lay.n());
        for (i, plane) in planes.chunks_exact_mut(pl.area).enumerate() {
            pl.fill_whole(&x[(i * c + ci) * hw..][..hw], plane);
        }
        after.fill(0.0);
    });
    xp
}

/// `W_kk`, the `[o, c]` weights of kernel offset `kk` in `w` (`[o, c, kh, kw]`).
fn weights_at<'a>(w: &'a [f32], o: usize, c: usize, lay: &Layout, kk: usize) -> View<'a> {
    let taps = lay.planes.taps;
    View::strided(w, kk, (o, c), (c * taps, taps))
}

/// The output `[o, b·A]` on the padded grid: `Σ_kk W_kk · shift_kk(Xp)`.
pub(super) fn forward(xp: &[f32], w: &[f32], o: usize, c: usize, lay: &Layout) -> Vec<f32> {
    let (n, row) = (lay.n(), lay.x_row());
    let shifted = |kk: usize| View::strided(xp, lay.planes.tap(kk), (c, n), (row, 1));
    let mut y = matmul_new(weights_at(w, o, c, lay, 0), shifted(0));
    for kk in 1..lay.planes.taps {
        matmul_into(&mut y, weights_at(w, o, c, lay, kk), shifted(kk), true);
    }
    y
}

/// The real outputs of `y` (`[o, b·A]`, the padded grid) as `[b, o, gh, gw]`, plus `bias`,
/// through ReLU when `relu`, written into `dest` and returned.
pub(super) fn crop_output<'d>(
    y: &[f32],
    (o, bias, relu): (usize, &[f32], bool),
    lay: &Layout,
    dest: &'d mut [MaybeUninit<f32>],
) -> &'d mut [f32] {
    let pl = &lay.planes;
    let l = pl.gh * pl.gw;
    assert_eq!(
        dest.len(),
        lay.b * o * l,
        "crop_output: an output of another size"
    );
    chunks_written_into(dest, o * l, |i, img| {
        for (oc, &add) in bias[..o].iter().enumerate() {
            pl.narrow_into(
                &y[oc * lay.n() + i * pl.area..][..pl.area],
                (add, relu),
                img,
            );
        }
    })
}

/// `G`: the output gradient `gm` (`[o, b·L]`, channel-major, through the ReLU's mask) on the
/// padded grid, after room for the largest shift; zero everywhere else.
pub(super) fn pad_grad(gm: &[f32], o: usize, lay: &Layout) -> Scratch {
    let (row, pl) = (lay.g_row(), &lay.planes);
    let l = pl.gh * pl.gw;
    let mut gp = Scratch::new(o * row);
    // Every value written once (the buffer holds stale values).
    each_chunk(&mut gp[..], row, |oc, dst| {
        let (before, planes) = dst.split_at_mut(pl.reach());
        before.fill(0.0);
        for (i, plane) in planes.chunks_exact_mut(pl.area).enumerate() {
            pl.widen_whole(&gm[(oc * lay.b + i) * l..][..l], plane);
        }
    });
    gp
}

/// The weight gradient `[o, c, kh, kw]`: for each kernel offset, `G · shift_kk(Xp)ᵀ`.
pub(super) fn weight_grad(gp: &[f32], xp: &[f32], o: usize, c: usize, lay: &Layout) -> Vec<f32> {
    let (n, pl) = (lay.n(), &lay.planes);
    let g = View::strided(gp, pl.reach(), (o, n), (lay.g_row(), 1));
    let mut dw = vec![0f32; o * c * pl.taps];
    for kk in 0..pl.taps {
        let x = View::strided(xp, pl.tap(kk), (c, n), (lay.x_row(), 1));
        let d = matmul_new(g, x.t());
        for (at, v) in d.into_iter().enumerate() {
            dw[at * pl.taps + kk] = v;
        }
    }
    dw
}

/// The input gradient `[b, c, h, w]`: on the padded grid `Σ_kk W_kkᵀ · G` shifted back by the
/// offset, then the inside of each padded plane, written into `dest` and returned.
pub(super) fn input_grad<'d>(
    (gp, w): (&[f32], &[f32]),
    (o, c): (usize, usize),
    lay: &Layout,
    dest: &'d mut [MaybeUninit<f32>],
) -> &'d mut [f32] {
    let (n, row, pl) = (lay.n(), lay.g_row(), &lay.planes);
    let back = |kk: usize| View::strided(gp, pl.reach() - pl.tap(kk), (o, n), (row, 1));
    let mut dxp = matmul_new(weights_at(w, o, c, lay, 0).t(), back(0));
    for kk in 1..pl.taps {
        matmul_into(&mut dxp, weights_at(w, o, c, lay, kk).t(), back(kk), true);
    }
    let hw = pl.h * pl.w;
    assert_eq!(
        dest.len(),
        lay.b * c * hw,
        "input_grad: a gradient of another size"
    );
    chunks_written_into(dest, c * hw, |i, img| {
        for ci in 0..c {
            pl.crop_into(&dxp[ci * n + i * pl.area..][..pl.area], img);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// `Xp` and `G` are written whole: taken from a pool of buffers that hold NaNs (as reused
    /// scratch memory holds stale values), they equal the layouts written onto zeros, borders,
    /// gaps and the room for the shifts included; square and oblong kernels, no padding too.
    #[test]
    fn padded_layouts_are_written_whole_over_stale_buffers() {
        for (c, o, big, k, p) in [
            (8, 4, [7, 5], [3, 3], 1),
            (3, 2, [6, 6], [5, 5], 2),
            (2, 5, [4, 9], [3, 3], 0),
            (4, 3, [6, 8], [3, 5], 1),
        ] {
            let grid = [big[0] + 2 * p + 1 - k[0], big[1] + 2 * p + 1 - k[1]];
            let g = Geom {
                c,
                big,
                k,
                s: 1,
                p,
                grid,
            };
            let b = 3;
            let lay = Layout::new(&g, b);
            let pl = lay.planes;
            let (hw, l) = (big[0] * big[1], grid[0] * grid[1]);
            // Pooled buffers of NaNs, the next scratch buffer of `len` values taken from them.
            let stale = |len: usize| {
                let held: Vec<Scratch> = (0..4)
                    .map(|_| {
                        let mut s = Scratch::new(len + 64);
                        s.fill(f32::NAN);
                        s
                    })
                    .collect();
                let at: Vec<*const f32> = held.iter().map(|s| s.as_ptr()).collect();
                drop(held);
                at
            };

            let x: Vec<f32> = (0..b * c * hw).map(|i| i as f32 + 1.0).collect();
            let nans = stale(c * lay.x_row());
            let xp = pad_input(&x, c, &lay);
            assert!(nans.contains(&xp.as_ptr()), "Xp took a buffer of NaNs");
            let mut want = vec![0f32; c * lay.x_row()];
            for ci in 0..c {
                for i in 0..b {
                    let at = ci * lay.x_row() + i * pl.area;
                    pl.fill(&x[(i * c + ci) * hw..][..hw], &mut want[at..][..pl.area]);
                }
            }
            assert_eq!(
                bits(&xp),
                bits(&want),
                "Xp, {c} channels, {big:?}, k{k:?} p{p}"
            );

            let gm: Vec<f32> = (0..o * b * l).map(|i| -(i as f32) - 1.0).collect();
            let nans = stale(o * lay.g_row());
            let gp = pad_grad(&gm, o, &lay);
            assert!(nans.contains(&gp.as_ptr()), "G took a buffer of NaNs");
            let mut want = vec![0f32; o * lay.g_row()];
            for oc in 0..o {
                for i in 0..b {
                    let at = oc * lay.g_row() + pl.reach() + i * pl.area;
                    pl.widen(&gm[(oc * b + i) * l..][..l], &mut want[at..][..pl.area]);
                }
            }
            assert_eq!(
                bits(&gp),
                bits(&want),
                "G, {o} channels, {big:?}, k{k:?} p{p}"
            );
        }
    }
}
