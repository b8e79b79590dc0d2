//! The zero-padded plane layout that stride-1 convolutions compute on without patches
//! ([`super::direct`], [`super::shifted`]).
//!
//! An input plane `h × w` sits inside a plane `(h + 2p) × (w + 2p)` whose border is zero. Rows
//! are `pw = w + 2p` long, so the input under kernel offset `(ky, kx)` of output position `(gy,
//! gx)` is at `(gy·pw + gx) + ky·pw + kx`: for every output position at once, the same run of
//! values shifted by [`Planes::tap`]. Outputs are laid out at the padded width too, `gh` rows of
//! `pw` (the last `kw − 1` values of each row are not real outputs).

use super::Geom;
use crate::kernels::pieces::Fill;

/// A stride-1 geometry's padded planes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Planes {
    /// Input height and width.
    pub(super) h: usize,
    pub(super) w: usize,
    /// Padding.
    p: usize,
    /// Output height and width.
    pub(super) gh: usize,
    pub(super) gw: usize,
    /// Kernel width.
    kw: usize,
    /// Kernel offsets.
    pub(super) taps: usize,
    /// Padded width, the length of every row here.
    pw: usize,
    /// Padded area, `(h + 2p)·pw`.
    pub(super) area: usize,
}

impl Planes {
    pub(super) fn new(g: &Geom) -> Self {
        debug_assert_eq!(g.s, 1, "padded planes are for stride 1");
        let pw = g.big[1] + 2 * g.p;
        Planes {
            h: g.big[0],
            w: g.big[1],
            p: g.p,
            gh: g.grid[0],
            gw: g.grid[1],
            kw: g.k[1],
            taps: g.k[0] * g.k[1],
            pw,
            area: (g.big[0] + 2 * g.p) * pw,
        }
    }

    /// How far the input under kernel offset `kk = ky·kw + kx` is from the output position.
    pub(super) fn tap(&self, kk: usize) -> usize {
        kk / self.kw * self.pw + kk % self.kw
    }

    /// The largest shift, [`Self::tap`] of the last kernel offset.
    pub(super) fn reach(&self) -> usize {
        self.tap(self.taps - 1)
    }

    /// Values of an output plane at the padded width: `gh` rows of `pw`.
    pub(super) fn out_len(&self) -> usize {
        self.gh * self.pw
    }

    /// Copies an input plane (`h × w`) into the inside of a padded plane, whose border is left
    /// as it is.
    pub(super) fn fill(&self, src: &[f32], dst: &mut [f32]) {
        for (y, row) in src.chunks_exact(self.w).enumerate() {
            dst[(y + self.p) * self.pw + self.p..][..self.w].copy_from_slice(row);
        }
    }

    /// An output plane (`gh × gw`) at the padded width; the values past each row's real
    /// outputs are left as they are.
    pub(super) fn widen(&self, src: &[f32], dst: &mut [f32]) {
        for (y, row) in src.chunks_exact(self.gw).enumerate() {
            dst[y * self.pw..][..self.gw].copy_from_slice(row);
        }
    }

    /// The real outputs of an output plane at the padded width (`gh × gw`), plus `add`, then
    /// through a ReLU when `relu`, appended to `out`.
    #[inline(always)]
    pub(super) fn narrow_into(&self, src: &[f32], (add, relu): (f32, bool), out: &mut Fill<'_>) {
        for row in src[..self.out_len()].chunks_exact(self.pw) {
            let row = &row[..self.gw];
            if relu {
                out.extend(row.iter().map(|&v| (v + add).max(0.0)));
            } else {
                out.extend(row.iter().map(|&v| v + add));
            }
        }
    }

    /// The inside of a padded plane, as an input plane (`h × w`), appended to `out`.
    #[inline(always)]
    pub(super) fn crop_into(&self, src: &[f32], out: &mut Fill<'_>) {
        let (pw, p, w) = (self.pw, self.p, self.w);
        for row in src[p * pw..][..self.h * pw].chunks_exact(pw) {
            out.copy(&row[p..][..w]);
        }
    }

    /// `src`, an input plane (`h × w`), as a whole padded plane into `dst` (`area` values):
    /// [`Self::fill`] with the border written as zeros too, for a buffer that holds stale values.
    pub(super) fn fill_whole(&self, src: &[f32], dst: &mut [f32]) {
        let (pw, p, w) = (self.pw, self.p, self.w);
        let (top, rest) = dst[..self.area].split_at_mut(p * pw);
        top.fill(0.0);
        let (inside, bottom) = rest.split_at_mut(self.h * pw);
        bottom.fill(0.0);
        for (row, s) in inside.chunks_exact_mut(pw).zip(src.chunks_exact(w)) {
            let (left, right) = row.split_at_mut(p);
            left.fill(0.0);
            right[..w].copy_from_slice(s);
            right[w..].fill(0.0);
        }
    }

    /// `src`, an output plane (`gh × gw`), at the padded width into `dst` (`area` values):
    /// [`Self::widen`] with all the other values written as zeros, for a buffer that holds
    /// stale values.
    pub(super) fn widen_whole(&self, src: &[f32], dst: &mut [f32]) {
        let (pw, gw) = (self.pw, self.gw);
        let (rows, rest) = dst[..self.area].split_at_mut(self.out_len());
        for (row, s) in rows.chunks_exact_mut(pw).zip(src.chunks_exact(gw)) {
            row[..gw].copy_from_slice(s);
            row[gw..].fill(0.0);
        }
        rest.fill(0.0);
    }

    /// The real outputs of an output plane at the padded width (`gh × gw`).
    pub(super) fn narrow(&self, src: &[f32], dst: &mut [f32]) {
        for (y, row) in dst.chunks_exact_mut(self.gw).enumerate() {
            row.copy_from_slice(&src[y * self.pw..][..self.gw]);
        }
    }
}
