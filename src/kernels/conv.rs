//! Convolutions and transposed convolutions as one matrix product over gathered patches
//! (im2col / col2im), with the bias and ReLU fused into the pass that reorders the product.
//!
//! burn-flex's convolution kernels were 53% of conv64's training profile (BENCHMARKS.md):
//! per image and per operation they gather, multiply and copy, and their backward passes run
//! the weight gradient as another convolution. Here a layer is one `gemm` for a shard of a
//! batch, or for each part of a batch trained whole ([`cut`]), in each direction: the patches
//! of all its images sit side by side (`[c·k·k, b·L]`), so the products are wide enough to run
//! at full speed even for 16 images. Stride-1 convolutions skip the patches, whose `k·k`-fold
//! copy of the input would be most of their work: to one channel they are computed straight
//! from zero-padded input planes ([`direct`]), to several as one product per kernel offset
//! over those planes ([`shifted`]); both lay the planes out by [`padded`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::rc::Rc;

use burn::backend::flex::FlexTensor;
use burn::tensor::Shape;

use super::flex::{owned, relu_mask, tensor, values};
use super::gather::{gather_images, gather_sums};
use super::matmul::{matmul_into, View};
use super::phases::Phases;
use super::pieces::{chunks_written_into, each_chunk, fresh, written_by_parts, Scratch};
use pulp::{Arch, Simd, WithSimd};
use rayon::prelude::*;

mod direct;
mod one_input;
mod padded;
mod shifted;

/// The geometry shared by a convolution and its transpose: a "big" image (the convolution's
/// input, the transposed convolution's output) and the "grid" of kernel positions on it
/// (the convolution's output, the transposed convolution's input).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Geom {
    /// Channels of the big image.
    c: usize,
    /// Height and width of the big image.
    big: [usize; 2],
    /// Kernel height and width.
    k: [usize; 2],
    /// Stride (both directions).
    s: usize,
    /// Zero padding of the big image (both directions).
    p: usize,
    /// Height and width of the grid.
    grid: [usize; 2],
}

impl Geom {
    /// Rows of the patch matrix: `c·kh·kw`.
    fn rows(&self) -> usize {
        self.c * self.k[0] * self.k[1]
    }

    /// Grid positions per image.
    fn len(&self) -> usize {
        self.grid[0] * self.grid[1]
    }

    /// Values per big image.
    fn big_len(&self) -> usize {
        self.c * self.big[0] * self.big[1]
    }

    /// The split of the big image into its `s²` phases as a geometry: an `s × s` kernel at
    /// stride `s`, no padding, on the same grid (see [`Phases`]). Its patch matrix holds the
    /// phase planes, and its `col2im` interleaves them back.
    fn phase_split(&self) -> Geom {
        Geom {
            k: [self.s, self.s],
            p: 0,
            ..*self
        }
    }

    /// The big-image coordinate under grid coordinate `g` and kernel offset `k`, if inside.
    #[inline]
    fn at(&self, g: usize, k: usize, size: usize) -> Option<usize> {
        (g * self.s + k).checked_sub(self.p).filter(|&v| v < size)
    }
}

/// For each patch-matrix entry `(r, l)` of one image, `r = (ci, ky, kx)`, `l = (gy, gx)`: the
/// offset inside the big image of the value it holds (channel `ci`, row `gy·s + ky − p`,
/// column `gx·s + kx − p`), or `u32::MAX` where that falls in the padding (the wrappers in
/// `kernels` keep images below `u32::MAX` values). It makes each row of the patch matrix one
/// flat gather instead of one short loop per image row (grids here are 1 to 14 wide).
fn offsets(g: &Geom) -> Vec<u32> {
    let [kh, kw] = g.k;
    let [bh, bw] = g.big;
    let [gh, gw] = g.grid;
    let mut t = vec![u32::MAX; g.rows() * g.len()];
    for (r, row) in t.chunks_exact_mut(g.len()).enumerate() {
        let (ci, ky, kx) = (r / (kh * kw), (r / kw) % kh, r % kw);
        for gy in 0..gh {
            let Some(iy) = g.at(gy, ky, bh) else { continue };
            for gx in 0..gw {
                if let Some(ix) = g.at(gx, kx, bw) {
                    row[gy * gw + gx] = ((ci * bh + iy) * bw + ix) as u32;
                }
            }
        }
    }
    t
}

/// The tables a geometry's gathers use: [`offsets`] (`batch: None`) and [`sum_offsets`]
/// (which depend on the batch), built once per thread and kept, since a model has a few
/// geometries, each met on every step. At most [`TABLES_KEPT`] are kept; past that the cache
/// starts again.
fn table(g: &Geom, batch: Option<usize>) -> Rc<[u32]> {
    thread_local! {
        static TABLES: RefCell<Tables> = RefCell::new(HashMap::new());
    }
    TABLES.with_borrow_mut(|tables| {
        if let Some(t) = tables.get(&(*g, batch)) {
            return Rc::clone(t);
        }
        if tables.len() >= TABLES_KEPT {
            tables.clear();
        }
        let t: Rc<[u32]> = match batch {
            None => offsets(g),
            Some(b) => sum_offsets(g, b),
        }
        .into();
        tables.insert((*g, batch), Rc::clone(&t));
        t
    })
}

/// [`table`]'s cache: by geometry and batch.
type Tables = HashMap<(Geom, Option<usize>), Rc<[u32]>>;

/// How many tables [`table`] keeps per thread.
const TABLES_KEPT: usize = 64;

/// The patch matrix `[c·kh·kw, b·L]`: entry `((ci, ky, kx), i·L + (gy, gx))` is image `i`'s
/// value at channel `ci`, row `gy·s + ky − p`, column `gx·s + kx − p` (0 outside).
/// Written into `cols` (`c·kh·kw·b·L` long): through the phases of the big image where
/// [`phases`] has them, else by [`offsets`].
fn im2col(x: &[f32], b: usize, g: &Geom, cols: &mut [f32]) {
    let bl = b * g.len();
    assert_eq!(cols.len(), g.rows() * bl, "im2col: wrong output size");
    match phases(g, b) {
        Some(ph) => im2col_by_phases(x, b, g, &ph, cols),
        None => im2col_by_table(x, b, g, &table(g, None), cols),
    }
}

/// [`im2col`] through the phases `ph` of `g`'s big image.
fn im2col_by_phases(x: &[f32], b: usize, g: &Geom, ph: &Phases, cols: &mut [f32]) {
    let (bl, split) = (b * g.len(), g.phase_split());
    let mut planes = Scratch::new(split.rows() * bl);
    if ph.permutes() {
        ph.split(&x[..b * g.big_len()], g.c, &mut planes);
    } else {
        im2col_by_table(x, b, &split, &table(&split, None), &mut planes);
    }
    let (taps, per_channel) = (ph.taps(), ph.phases() * bl);
    each_chunk(cols, bl, |r, row| {
        ph.spread(
            r % taps,
            &planes[r / taps * per_channel..][..per_channel],
            row,
        )
    });
}

/// [`im2col`] by gathers through `t`, [`offsets`] of `g`.
fn im2col_by_table(x: &[f32], b: usize, g: &Geom, t: &[u32], cols: &mut [f32]) {
    let (l, bl, n) = (g.len(), b * g.len(), g.big_len());
    each_chunk(cols, bl, |r, row| {
        gather_images(&x[..b * n], n, &t[r * l..(r + 1) * l], row)
    });
}

/// The phase decomposition of `g` for batches of `b` ([`Phases`]), where the CPU has the
/// vector instructions that make it pay, the stride is at most the kernel (so that the `s²`
/// phases are not more than the taps) and the geometry allows it; kept per thread like
/// [`table`] (at most [`TABLES_KEPT`]).
fn phases(g: &Geom, b: usize) -> Option<Rc<Phases>> {
    thread_local! {
        static PLANS: RefCell<Plans> = RefCell::new(HashMap::new());
    }
    // Elsewhere than on AVX-512 the shifted passes are plain loops, slower than the gathers.
    if !super::phases::vector() {
        return None;
    }
    PLANS.with_borrow_mut(|plans| {
        if let Some(p) = plans.get(&(*g, b)) {
            return p.clone();
        }
        if plans.len() >= TABLES_KEPT {
            plans.clear();
        }
        // The phases pay where they are fewer than the taps (the stride at most the kernel,
        // not a single tap); the split's tables address `s²·b·L` values in `u32` (see
        // `sum_offsets`).
        let pays = g.s <= g.k[0] && g.s <= g.k[1] && g.k[0] * g.k[1] > 1;
        let small = (g.s.checked_mul(g.s))
            .and_then(|ss| ss.checked_mul(b * g.len()))
            .is_some_and(|n| n < u32::MAX as usize);
        let p = (pays && small)
            .then(|| Phases::new(g.big, g.k, g.s, g.p, g.grid, b))
            .flatten()
            .map(Rc::new);
        plans.insert((*g, b), p.clone());
        p
    })
}

/// [`phases`]' cache: by geometry and batch, `None` where there are none.
type Plans = HashMap<(Geom, usize), Option<Rc<Phases>>>;

/// For [`col2im`], the patch-matrix entries that land on each position `q = (iy, ix)` of one
/// channel of the big image, as offsets `kk·bl + l` from that channel's first row at image 0
/// (`kk = (ky, kx)`, `l = (gy, gx)`, `bl = b·L`), in order of `kk`: `m` rows of `H·W`
/// offsets, `m` the most entries any position has, `u32::MAX` where a position has fewer.
/// (The wrappers in `kernels` keep `kh·kw·b·L` below `u32::MAX`.)
fn sum_offsets(g: &Geom, b: usize) -> Vec<u32> {
    let [kh, kw] = g.k;
    let [bh, bw] = g.big;
    let [gh, gw] = g.grid;
    let (plane, bl) = (bh * bw, b * g.len());
    // Each (kernel offset, grid position) pair with the position it lands on, in order of
    // the kernel offset.
    let hits = (0..kh * kw).flat_map(|kk| {
        let (ky, kx) = (kk / kw, kk % kw);
        (0..gh * gw).filter_map(move |l| {
            let (iy, ix) = (g.at(l / gw, ky, bh)?, g.at(l % gw, kx, bw)?);
            Some((iy * bw + ix, (kk * bl + l) as u32))
        })
    });
    let mut count = vec![0usize; plane];
    for (q, _) in hits.clone() {
        count[q] += 1;
    }
    let m = count.iter().copied().max().unwrap_or(0).max(1);
    let mut t = vec![u32::MAX; m * plane];
    count.fill(0);
    for (q, o) in hits {
        t[count[q] * plane + q] = o;
        count[q] += 1;
    }
    t
}

/// The big images `[b, c, H, W]` from a patch matrix `[c·kh·kw, b·L]` (the adjoint of
/// [`im2col`]: sums where patches overlap, in order of the patch-matrix rows), then
/// `finish(channel, values)` on each channel of each image: through the phases of the big
/// image where [`phases`] has them, else by [`sum_offsets`].
fn col2im<'d>(
    cols: &[f32],
    b: usize,
    g: &Geom,
    finish: impl Fn(usize, &mut [f32]) + Sync + Send,
    dest: &'d mut [MaybeUninit<f32>],
) -> &'d mut [f32] {
    let bl = b * g.len();
    assert!(
        cols.len() == g.rows() * bl && dest.len() == b * g.big_len(),
        "col2im: wrong sizes"
    );
    match phases(g, b) {
        Some(ph) => col2im_by_phases(cols, b, g, &ph, finish, dest),
        None => col2im_by_table(cols, b, g, &table(g, Some(b)), finish, dest),
    }
}

/// [`col2im`] through the phases `ph` of `g`'s big image.
fn col2im_by_phases<'d>(
    cols: &[f32],
    b: usize,
    g: &Geom,
    ph: &Phases,
    finish: impl Fn(usize, &mut [f32]) + Sync + Send,
    dest: &'d mut [MaybeUninit<f32>],
) -> &'d mut [f32] {
    let (bl, split) = (b * g.len(), g.phase_split());
    let mut planes = Scratch::new(split.rows() * bl);
    let (phases, per_channel) = (ph.phases(), ph.taps() * bl);
    each_chunk(&mut planes, bl, |r, plane| {
        ph.collect(
            r % phases,
            &cols[r / phases * per_channel..][..per_channel],
            plane,
        )
    });
    // Either way each plane value goes through unchanged: `interleave` copies it, the table
    // gathers add it to +0, which leaves it as it is (a sum that starts at +0, as `collect`'s
    // do, is never −0).
    if ph.permutes() {
        return ph.interleave(&planes, g.c, finish, dest);
    }
    col2im_by_table(&planes, b, &split, &table(&split, Some(b)), finish, dest)
}

/// [`col2im`] by gathers through `t`, [`sum_offsets`] of `g`, each image's values summed
/// from zero.
fn col2im_by_table<'d>(
    cols: &[f32],
    b: usize,
    g: &Geom,
    t: &[u32],
    finish: impl Fn(usize, &mut [f32]) + Sync + Send,
    dest: &'d mut [MaybeUninit<f32>],
) -> &'d mut [f32] {
    let (l, bl, taps) = (g.len(), b * g.len(), g.k[0] * g.k[1]);
    let plane = g.big[0] * g.big[1];
    chunks_written_into(dest, g.big_len(), |i, fill| {
        let img = fill.zeros(g.big_len());
        for (ci, ch) in img.chunks_exact_mut(plane).enumerate() {
            // Channel `ci`'s rows of the patch matrix, from image `i`'s first column: every
            // offset in `t` is below `taps·bl`, and the padding marker past this slice's end.
            let rows = &cols[ci * taps * bl..(ci + 1) * taps * bl];
            gather_sums(&rows[i * l..], t, ch);
            finish(ci, ch);
        }
    })
}

/// `[b, c, L]` → `[c, b·L]`, in a scratch buffer.
fn to_channel_major(x: &[f32], b: usize, c: usize, l: usize) -> Scratch {
    let mut out = Scratch::new(x.len());
    each_chunk(&mut out, b * l, |ci, row| {
        for i in 0..b {
            row[i * l..(i + 1) * l].copy_from_slice(&x[(i * c + ci) * l..][..l]);
        }
    });
    out
}

/// `[c, b·L]` → `[b, c, L]`, adding `bias[ci]` and applying ReLU when asked, written into
/// `dest` (every value once, so it is not zero-filled first), whose values it returns.
fn to_batch_major_into<'d>(
    xt: &[f32],
    (b, c, l): (usize, usize, usize),
    (bias, relu): (Option<&[f32]>, bool),
    dest: &'d mut [MaybeUninit<f32>],
) -> &'d mut [f32] {
    let n = xt.len();
    assert!(
        n == b * c * l && dest.len() == n,
        "to_batch_major_into: wrong sizes"
    );
    if n == 0 {
        return &mut [];
    }
    each_chunk(dest, c * l, |i, img| {
        Arch::new().dispatch(ImageFromChannels {
            xt,
            at: i * l,
            b,
            l,
            bias,
            relu,
            img,
        })
    });
    // SAFETY: `each_chunk` passes each of the `b` chunks of `c·l` values of `dest` once, and
    // the loop above writes all `c·l` values of its chunk (`n = b·c·l`, asserted).
    unsafe { dest.assume_init_mut() }
}

/// One image of [`to_batch_major_into`]: its `c` channels of `l` values from `xt`, each from
/// value `at` of its channel's row (of `b·l`). A [`WithSimd`] rather than a closure, so that
/// pulp compiles the loops for the CPU's widest vectors (a closure's body is compiled for
/// the baseline CPU, whatever pulp dispatches to).
struct ImageFromChannels<'a> {
    xt: &'a [f32],
    at: usize,
    b: usize,
    l: usize,
    bias: Option<&'a [f32]>,
    relu: bool,
    img: &'a mut [MaybeUninit<f32>],
}

impl WithSimd for ImageFromChannels<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        let ImageFromChannels {
            xt,
            at,
            b,
            l,
            bias,
            relu,
            img,
        } = self;
        for (ci, dst) in img.chunks_exact_mut(l).enumerate() {
            let src = &xt[ci * b * l + at..][..l];
            let add = bias.map_or(0.0, |bias| bias[ci]);
            if relu {
                for (d, &v) in dst.iter_mut().zip(src) {
                    d.write((v + add).max(0.0));
                }
            } else {
                for (d, &v) in dst.iter_mut().zip(src) {
                    d.write(v + add);
                }
            }
        }
    }
}

/// The incoming gradient `g` (`[b, c, L]`) masked by the ReLU's output `y` when there is one,
/// laid out channel-major (`[c, b·L]`) in a scratch buffer, and its sums per channel (the
/// bias gradient).
fn masked_channel_major(
    g: &[f32],
    y: Option<&[f32]>,
    b: usize,
    c: usize,
    l: usize,
) -> (Scratch, Vec<f32>) {
    let mut out = Scratch::new(g.len());
    each_chunk(&mut out, b * l, |ci, row| {
        Arch::new().dispatch(ChannelFromImages {
            g,
            y,
            ci,
            c,
            l,
            row,
        })
    });
    let db = row_sums(&out, b * l, 0.0);
    (out, db)
}

/// One channel's row of [`masked_channel_major`] (`ci`, of `c`): its `l` values of every
/// image, masked by `y`. A [`WithSimd`] for the reason [`ImageFromChannels`] is.
struct ChannelFromImages<'a> {
    g: &'a [f32],
    y: Option<&'a [f32]>,
    ci: usize,
    c: usize,
    l: usize,
    row: &'a mut [f32],
}

impl WithSimd for ChannelFromImages<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        let ChannelFromImages {
            g,
            y,
            ci,
            c,
            l,
            row,
        } = self;
        for (i, dst) in row.chunks_exact_mut(l).enumerate() {
            let at = (i * c + ci) * l;
            let src = &g[at..at + l];
            match y {
                Some(y) => {
                    for ((d, &v), &y) in dst.iter_mut().zip(src).zip(&y[at..at + l]) {
                        *d = if y > 0.0 { v } else { 0.0 };
                    }
                }
                None => dst.copy_from_slice(src),
            }
        }
    }
}

/// The sum of each `n`-long row of `rows`, each added up from `start` (0 or −0) in order:
/// several rows at a time, so that their chains of additions overlap (one row's additions
/// depend on each other; a loop over one row waits on each in turn).
fn row_sums(rows: &[f32], n: usize, start: f32) -> Vec<f32> {
    /// Rows summed together: enough independent chains to keep the adders busy.
    const GROUP: usize = 8;
    let mut sums = Vec::with_capacity(rows.len() / n.max(1));
    for group in rows.chunks(GROUP * n.max(1)) {
        let mut acc = [start; GROUP];
        let rows: Vec<&[f32]> = group.chunks_exact(n.max(1)).collect();
        if let [r0, r1, r2, r3, r4, r5, r6, r7] = rows[..] {
            for j in 0..n {
                acc[0] += r0[j];
                acc[1] += r1[j];
                acc[2] += r2[j];
                acc[3] += r3[j];
                acc[4] += r4[j];
                acc[5] += r5[j];
                acc[6] += r6[j];
                acc[7] += r7[j];
            }
        } else {
            for (a, r) in acc.iter_mut().zip(&rows) {
                *a = r.iter().fold(start, |s, &v| s + v);
            }
        }
        sums.extend_from_slice(&acc[..rows.len()]);
    }
    sums
}

/// The dims of a 4-D tensor.
fn dims4(t: &FlexTensor) -> [usize; 4] {
    let s = t.layout().shape();
    [s[0], s[1], s[2], s[3]]
}

/// What a convolution's backward pass needs, besides the incoming gradient.
#[derive(Debug, Clone)]
pub(super) struct ConvSaved {
    geom: Geom,
    batch: usize,
    /// Channels on the grid side: the convolution's output, the transposed convolution's input.
    grid_c: usize,
    /// What the weight gradient reads, kept when the weight needs one: the patch matrix (a
    /// convolution through patches), the padded input planes (one through [`shifted`]) or the
    /// channel-major input (a transposed convolution); a scratch buffer, which goes back to
    /// the pool of the thread that runs the part's backward pass. Which it is follows from the
    /// geometry and `grid_c`, as the forward pass chose.
    data: Option<Scratch>,
    /// The weight, kept when the input needs a gradient.
    pub(super) w: Option<FlexTensor>,
    /// The output, kept when a ReLU followed: a view of the part's images in the batch's.
    y: Option<FlexTensor>,
    /// The input, kept instead of the patch matrix by a convolution on the direct path
    /// ([`direct`]) or of one input channel ([`one_input`]) when the weight needs a gradient.
    x: Option<FlexTensor>,
}

/// Images per part of a batch that a convolution cuts (see [`cut`]).
const PART: usize = super::PART_IMAGES;

/// The parts `(first image, images)` a convolution cuts a batch of `b` into: one, the whole
/// batch, inside a task (a shard of a batch has its thread); else parts of at most [`PART`]
/// images, whose sizes differ by at most one, run in parallel, each on one thread as a
/// shard's would: a batch trained whole and evaluation's large
/// batches then use every core the way shards do, and their patch matrices stay a few
/// megabytes. The cut depends on `b` only, never on the threads, so neither do the results.
fn cut(b: usize) -> Vec<(usize, usize)> {
    if super::in_task() || b <= PART {
        return vec![(0, b)];
    }
    let n = b.div_ceil(PART);
    (0..n)
        .map(|i| (i * b / n, (i + 1) * b / n - i * b / n))
        .collect()
}

/// What a convolution's backward pass needs: the saved state of each part of the batch.
#[derive(Debug, Clone)]
pub(super) struct Parts(Vec<ConvSaved>);

impl Parts {
    /// Keeps the weight (for the input's gradient) in every part.
    pub(super) fn keep_weight(&mut self, w: Option<FlexTensor>) {
        for p in &mut self.0 {
            p.w = w.clone();
        }
    }
}

/// `forward` on each part of `x`'s batch ([`cut`]), each writing its output (`[o, oh, ow]`
/// an image) into its place in the batch's: the values it was given, which it returns. The
/// parts keep their outputs with `keep_y` (for a ReLU's mask).
fn forward_by_parts(
    x: &FlexTensor,
    [o, oh, ow]: [usize; 3],
    keep_y: bool,
    forward: impl for<'d> Fn(&FlexTensor, &'d mut [MaybeUninit<f32>]) -> (&'d mut [f32], ConvSaved)
        + Sync
        + Send,
) -> (FlexTensor, Parts) {
    let [b, ..] = dims4(x);
    let per = o * oh * ow;
    let parts = cut(b);
    let (y, mut saved) = if let [_] = parts[..] {
        let mut saved = Vec::with_capacity(1);
        let y = fresh(b * per, |dest| {
            let (y, s) = forward(x, dest);
            saved.push(s);
            y
        });
        (y, saved)
    } else {
        let lens: Vec<usize> = parts.iter().map(|&(_, n)| n * per).collect();
        written_by_parts(&lens, |i, place| {
            let (at, n) = parts[i];
            super::as_task(|| forward(&x.narrow(0, at, n), place))
        })
    };
    let y = tensor(y, Shape::new([b, o, oh, ow]));
    if keep_y {
        for (s, &(at, n)) in saved.iter_mut().zip(&parts) {
            s.y = Some(y.narrow(0, at, n));
        }
    }
    (y, Parts(saved))
}

/// `backward` on each part of the incoming gradient `g`, with that part's saved state: the
/// input gradients (`[c, h, w]` an image) side by side, each part's written into its place
/// in the batch's (given when the parts kept their weight, and returned written), the weight
/// and bias gradients summed over the parts in order.
fn backward_by_parts(
    g: FlexTensor,
    st: Parts,
    [c, h, w]: [usize; 3],
    backward: impl for<'d> Fn(
            FlexTensor,
            &ConvSaved,
            Option<&'d mut [MaybeUninit<f32>]>,
        ) -> (Option<&'d mut [f32]>, Option<FlexTensor>, FlexTensor)
        + Sync
        + Send,
) -> (Option<FlexTensor>, Option<FlexTensor>, FlexTensor) {
    let b: usize = st.0.iter().map(|p| p.batch).sum();
    let per = c * h * w;
    let shape = Shape::new([b, c, h, w]);
    let wanted = st.0.iter().all(|p| p.w.is_some());
    if let [one] = &st.0[..] {
        if !wanted {
            let (_, dw, db) = backward(g, one, None);
            return (None, dw, db);
        }
        let mut rest = None;
        let dx = fresh(b * per, |dest| {
            let (dx, dw, db) = backward(g, one, Some(dest));
            rest = Some((dw, db));
            dx.expect("backward_by_parts: no input gradient in the place given")
        });
        let (dw, db) = rest.expect("the part ran");
        return (Some(tensor(dx, shape)), dw, db);
    }
    let starts: Vec<usize> =
        st.0.iter()
            .scan(0, |at, p| {
                let first = *at;
                *at += p.batch;
                Some(first)
            })
            .collect();
    // Part `i`'s incoming gradient.
    let g_of = |i: usize| g.narrow(0, starts[i], st.0[i].batch);
    let (dx, done): (_, Vec<_>) = if wanted {
        let lens: Vec<usize> = st.0.iter().map(|p| p.batch * per).collect();
        let (dx, done) = written_by_parts(&lens, |i, place| {
            match super::as_task(|| backward(g_of(i), &st.0[i], Some(place))) {
                (Some(dx), dw, db) => (dx, (dw, db)),
                _ => unreachable!("a part that kept its weight gives its input's gradient"),
            }
        });
        (Some(tensor(dx, shape)), done)
    } else {
        let done = (0..st.0.len())
            .into_par_iter()
            .map(|i| {
                let (_, dw, db) = super::as_task(|| backward(g_of(i), &st.0[i], None));
                (dw, db)
            })
            .collect();
        (None, done)
    };
    let dw = done
        .iter()
        .map(|(dw, _)| dw.as_ref())
        .collect::<Option<Vec<_>>>()
        .map(|dw| add_up(&dw));
    let db = add_up(&done.iter().map(|(_, db)| db).collect::<Vec<_>>());
    (dx, dw, db)
}

/// The sum of same-shaped tensors, added in order.
fn add_up(parts: &[&FlexTensor]) -> FlexTensor {
    let mut sum = values(parts[0]).into_owned();
    for t in &parts[1..] {
        for (s, &v) in sum.iter_mut().zip(values(t).iter()) {
            *s += v;
        }
    }
    tensor(sum, parts[0].layout().shape().clone())
}

/// Convolution `x` (`[b, c, H, W]`) with `w` (`[o, c, kh, kw]`), bias, stride `s`, zero
/// padding `p`, then ReLU when `relu`, by parts of the batch ([`cut`]). Returns the output
/// and the saved state (what the weight gradient reads kept when `keep_for_dw`).
pub(super) fn conv2d_forward(
    x: &FlexTensor,
    w: &FlexTensor,
    bias: &FlexTensor,
    spr: (usize, usize, bool),
    keep_for_dw: bool,
) -> (FlexTensor, Parts) {
    let geom = conv2d_geom(dims4(x), dims4(w), (spr.0, spr.1));
    let out = [dims4(w)[0], geom.grid[0], geom.grid[1]];
    forward_by_parts(x, out, spr.2, |x, dest| {
        conv2d_forward_part(x, (w, bias), spr, keep_for_dw, dest)
    })
}

/// The gradients of [`conv2d_forward`]: (input, weight, bias), the first two when their saved
/// tensors are there.
pub(super) fn conv2d_backward(
    g: FlexTensor,
    st: Parts,
) -> (Option<FlexTensor>, Option<FlexTensor>, FlexTensor) {
    let ge = &st.0[0].geom;
    let dx = [ge.c, ge.big[0], ge.big[1]];
    backward_by_parts(g, st, dx, conv2d_backward_part)
}

/// Transposed convolution of `x` (`[b, c, h, w]`) with `w` (`[c, o, kh, kw]`), bias, stride
/// `s`, padding `p`, output padding `op`, then ReLU when `relu`, by parts of the batch
/// ([`cut`]). Returns the output and the saved state (inputs kept when `keep_input`).
pub(super) fn conv_transpose2d_forward(
    x: &FlexTensor,
    w: &FlexTensor,
    bias: &FlexTensor,
    spor: (usize, usize, usize, bool),
    keep_input: bool,
) -> (FlexTensor, Parts) {
    let (s, p, op, relu) = spor;
    let geom = conv_transpose2d_geom(dims4(x), dims4(w), (s, p, op));
    let out = [dims4(w)[1], geom.big[0], geom.big[1]];
    forward_by_parts(x, out, relu, |x, dest| {
        conv_transpose2d_forward_part(x, (w, bias), spor, keep_input, dest)
    })
}

/// The gradients of [`conv_transpose2d_forward`]: (input, weight, bias).
pub(super) fn conv_transpose2d_backward(
    g: FlexTensor,
    st: Parts,
) -> (Option<FlexTensor>, Option<FlexTensor>, FlexTensor) {
    let (c, ge) = (st.0[0].grid_c, &st.0[0].geom);
    let dx = [c, ge.grid[0], ge.grid[1]];
    backward_by_parts(g, st, dx, conv_transpose2d_backward_part)
}

/// The geometry of a convolution of `x` (dims `[b, c, H, W]`) with `w` (`[o, c, kh, kw]`),
/// stride `s` and zero padding `p`.
fn conv2d_geom(
    [b, c, h, wd]: [usize; 4],
    [o, c2, kh, kw]: [usize; 4],
    (s, p): (usize, usize),
) -> Geom {
    assert_eq!(
        c, c2,
        "fused_conv2d: input has {c} channels, the weight {c2}"
    );
    assert!(
        b > 0 && o > 0 && s > 0 && h + 2 * p >= kh && wd + 2 * p >= kw,
        "fused_conv2d: unsupported geometry (the wrapper `kernels::conv2d` checks it)"
    );
    Geom {
        c,
        big: [h, wd],
        k: [kh, kw],
        s,
        p,
        grid: [(h + 2 * p - kh) / s + 1, (wd + 2 * p - kw) / s + 1],
    }
}

/// Convolution `x` (`[b, c, H, W]`) with `w` (`[o, c, kh, kw]`), bias, stride `s`, zero
/// padding `p`, then ReLU when `relu`, written into `dest`. Returns the output's values and
/// the saved state (what the weight gradient reads kept when `keep_for_dw`; not the output).
fn conv2d_forward_part<'d>(
    x: &FlexTensor,
    (w, bias): (&FlexTensor, &FlexTensor),
    (s, p, relu): (usize, usize, bool),
    keep_for_dw: bool,
    dest: &'d mut [MaybeUninit<f32>],
) -> (&'d mut [f32], ConvSaved) {
    let [b, c, ..] = dims4(x);
    let o = dims4(w)[0];
    let geom = conv2d_geom(dims4(x), dims4(w), (s, p));
    let (l, bl) = (geom.len(), b * geom.len());
    let bias = values(bias);
    // The output values, and what the weight gradient reads: the patch matrix or the padded
    // planes (`data`), or the input itself (`x`, on the direct path).
    let (y, data, kept_x) = if direct_path(o, &geom) {
        let yt = direct::forward(&values(x), &values(w), b, &geom);
        let y = to_batch_major_into(&yt, (b, 1, l), (Some(&bias), relu), dest);
        (y, None, keep_for_dw.then(|| x.clone()))
    } else if one_input_path(&geom) {
        let y = one_input::forward(&values(x), &values(w), &bias, relu, b, &geom, dest);
        (y, None, keep_for_dw.then(|| x.clone()))
    } else if shifted_path(o, &geom) {
        let lay = shifted::Layout::new(&geom, b);
        let xp = shifted::pad_input(&values(x), c, &lay);
        let yp = shifted::forward(&xp, &values(w), o, c, &lay);
        let y = shifted::crop_output(&yp, (o, &bias, relu), &lay, dest);
        (y, keep_for_dw.then_some(xp), None)
    } else {
        let rows = geom.rows();
        let mut cols = Scratch::new(rows * bl);
        im2col(&values(x), b, &geom, &mut cols);
        let ws = values(w);
        let mut yt = Scratch::new(o * bl);
        matmul_into(
            &mut yt,
            View::dense(&ws, o, rows),
            View::dense(&cols, rows, bl),
            false,
        );
        let y = to_batch_major_into(&yt, (b, o, l), (Some(&bias), relu), dest);
        (y, keep_for_dw.then_some(cols), None)
    };
    let saved = ConvSaved {
        geom,
        batch: b,
        grid_c: o,
        data,
        w: None,
        y: None,
        x: kept_x,
    };
    (y, saved)
}

/// Whether a convolution to `o` channels over `g` takes the direct path ([`direct`]): one
/// output channel at stride 1. Its patch matrix would hold `c·kh·kw` values for each output
/// value, to be multiplied by a single row of weights forward and by a single row of gradients
/// backward: reading that matrix, not multiplying, would be the work.
fn direct_path(o: usize, g: &Geom) -> bool {
    o == 1 && g.s == 1
}

/// Whether a convolution over `g` to several channels (one takes [`direct`]) takes the path
/// of [`one_input`]: one input channel at stride 1.
fn one_input_path(g: &Geom) -> bool {
    g.c == 1 && g.s == 1
}

/// Input channels from which a stride-1 convolution takes the shifted products
/// ([`shifted`]): each of its `kh·kw` products is `c` deep, too shallow below this for gemm to
/// beat one product over the patch matrix.
const SHIFTED_MIN_CHANNELS: usize = 8;

/// Whether a convolution to `o` channels over `g` takes the shifted products ([`shifted`]):
/// stride 1, several output channels (one takes [`direct`]), enough input channels, and most
/// of the padded image real output.
fn shifted_path(o: usize, g: &Geom) -> bool {
    g.s == 1 && o > 1 && g.c >= SHIFTED_MIN_CHANNELS && shifted::worth_it(g)
}

/// The gradients of [`conv2d_forward`] for incoming gradient `g`: (input, weight, bias), the
/// first two when their saved tensors are there, the input's written into `dest` (where it
/// is given and the weight was kept) and returned.
fn conv2d_backward_part<'d>(
    g: FlexTensor,
    st: &ConvSaved,
    dest: Option<&'d mut [MaybeUninit<f32>]>,
) -> (Option<&'d mut [f32]>, Option<FlexTensor>, FlexTensor) {
    let geom = &st.geom;
    let (b, o, l) = (st.batch, st.grid_c, geom.len());
    let bl = b * l;
    let ys = st.y.as_ref().map(values);
    let (gm, db) = masked_channel_major(&values(&g), ys.as_deref(), b, o, l);
    if direct_path(o, geom) {
        let shape = Shape::new([1, geom.c, geom.k[0], geom.k[1]]);
        let dw =
            (st.x.as_ref()).map(|x| tensor(direct::weight_grad(&values(x), &gm, b, geom), shape));
        let dx = (st.w.as_ref().zip(dest))
            .map(|(w, dest)| direct::input_grad(&values(w), &gm, (b, geom), dest));
        return (dx, dw, tensor(db, Shape::new([1])));
    }
    if shifted_path(o, geom) {
        let lay = shifted::Layout::new(geom, b);
        let gp = shifted::pad_grad(&gm, o, &lay);
        let shape = Shape::new([o, geom.c, geom.k[0], geom.k[1]]);
        let dw = (st.data.as_ref())
            .map(|xp| tensor(shifted::weight_grad(&gp, xp, o, geom.c, &lay), shape));
        let dx = (st.w.as_ref().zip(dest))
            .map(|(w, dest)| shifted::input_grad((&gp, &values(w)), (o, geom.c), &lay, dest));
        return (dx, dw, tensor(db, Shape::new([o])));
    }
    // A convolution of one input channel kept its input instead of the patch matrix.
    let built = (st.x.as_ref()).map(|x| {
        let mut cols = Scratch::new(geom.rows() * bl);
        im2col(&values(x), b, geom, &mut cols);
        cols
    });
    let dw = st.data.as_ref().or(built.as_ref()).map(|cols| {
        let mut dw = vec![0f32; o * geom.rows()];
        matmul_into(
            &mut dw,
            View::dense(&gm, o, bl),
            View::dense(cols, geom.rows(), bl).t(),
            false,
        );
        tensor(dw, Shape::new([o, geom.c, geom.k[0], geom.k[1]]))
    });
    let dx = st.w.as_ref().zip(dest).map(|(w, dest)| {
        let ws = values(w);
        let mut dcols = Scratch::new(geom.rows() * bl);
        matmul_into(
            &mut dcols,
            View::dense(&ws, o, geom.rows()).t(),
            View::dense(&gm, o, bl),
            false,
        );
        col2im(&dcols, b, geom, |_, _| {}, dest)
    });
    (dx, dw, tensor(db, Shape::new([o])))
}

/// The geometry of a transposed convolution of `x` (dims `[b, c, h, w]`) with `w` (`[c, o,
/// kh, kw]`), stride `s`, padding `p` and output padding `op`: its output is the big side.
fn conv_transpose2d_geom(
    [b, c, h, wd]: [usize; 4],
    [c2, o, kh, kw]: [usize; 4],
    (s, p, op): (usize, usize, usize),
) -> Geom {
    assert_eq!(
        c, c2,
        "fused_conv_transpose2d: input has {c} channels, the weight {c2}"
    );
    let fits = |n: usize, k: usize| n > 0 && (n - 1) * s + k + op > 2 * p;
    assert!(
        b > 0 && o > 0 && s > 0 && fits(h, kh) && fits(wd, kw),
        "fused_conv_transpose2d: unsupported geometry (the wrapper checks it)"
    );
    Geom {
        c: o,
        big: [
            (h - 1) * s + kh + op - 2 * p,
            (wd - 1) * s + kw + op - 2 * p,
        ],
        k: [kh, kw],
        s,
        p,
        grid: [h, wd],
    }
}

/// Transposed convolution of `x` (`[b, c, h, w]`) with `w` (`[c, o, kh, kw]`), bias, stride
/// `s`, padding `p`, output padding `op`, then ReLU when `relu`, written into `dest`. Returns
/// the output's values and the saved state (channel-major input kept when `keep_input`; not
/// the output).
fn conv_transpose2d_forward_part<'d>(
    x: &FlexTensor,
    (w, bias): (&FlexTensor, &FlexTensor),
    (s, p, op, relu): (usize, usize, usize, bool),
    keep_input: bool,
    dest: &'d mut [MaybeUninit<f32>],
) -> (&'d mut [f32], ConvSaved) {
    let [b, c, ..] = dims4(x);
    let geom = conv_transpose2d_geom(dims4(x), dims4(w), (s, p, op));
    let (l, bl) = (geom.len(), b * geom.len());
    let xt = to_channel_major(&values(x), b, c, l);
    let ws = values(w);
    let mut cols = Scratch::new(geom.rows() * bl);
    matmul_into(
        &mut cols,
        View::dense(&ws, c, geom.rows()).t(),
        View::dense(&xt, c, bl),
        false,
    );
    let bias = values(bias);
    let finish = |oc: usize, ch: &mut [f32]| {
        for v in ch {
            let z = *v + bias[oc];
            *v = if relu { z.max(0.0) } else { z };
        }
    };
    let saved = ConvSaved {
        geom,
        batch: b,
        grid_c: c,
        data: keep_input.then_some(xt),
        w: None,
        y: None,
        x: None,
    };
    (col2im(&cols, b, &geom, finish, dest), saved)
}

/// The gradients of [`conv_transpose2d_forward`]: (input, weight, bias), the input's written
/// into `dest` (where it is given and the weight was kept) and returned.
fn conv_transpose2d_backward_part<'d>(
    g: FlexTensor,
    st: &ConvSaved,
    dest: Option<&'d mut [MaybeUninit<f32>]>,
) -> (Option<&'d mut [f32]>, Option<FlexTensor>, FlexTensor) {
    let geom = &st.geom;
    let (b, c, l) = (st.batch, st.grid_c, geom.len());
    let (o, plane) = (geom.c, geom.big[0] * geom.big[1]);
    let bl = b * l;
    // Mask by the ReLU in place and sum per output channel.
    let mut g = owned(g);
    let gs = g.storage_mut::<f32>();
    if let Some(y) = st.y.as_ref() {
        relu_mask(gs, &values(y));
    }
    // Each image's sum per channel (as `Iterator::sum`, from −0), then their sum.
    let sums = row_sums(gs, plane, -0.0);
    let db: Vec<f32> = (0..o)
        .map(|oc| (0..b).map(|i| sums[i * o + oc]).sum())
        .collect();
    let mut gcols = Scratch::new(geom.rows() * bl);
    im2col(gs, b, geom, &mut gcols);
    let dw = st.data.as_ref().map(|xt| {
        let mut dw = vec![0f32; c * geom.rows()];
        matmul_into(
            &mut dw,
            View::dense(xt, c, bl),
            View::dense(&gcols, geom.rows(), bl).t(),
            false,
        );
        tensor(dw, Shape::new([c, o, geom.k[0], geom.k[1]]))
    });
    let dx = st.w.as_ref().zip(dest).map(|(w, dest)| {
        let ws = values(w);
        let mut dxt = Scratch::new(c * bl);
        matmul_into(
            &mut dxt,
            View::dense(&ws, c, geom.rows()),
            View::dense(&gcols, geom.rows(), bl),
            false,
        );
        to_batch_major_into(&dxt, (b, c, l), (None, false), dest)
    });
    (dx, dw, tensor(db, Shape::new([o])))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values with a sign and a spread of magnitudes, some exactly 0, from `seed`.
    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n as u32)
            .map(|i| {
                let h = (i ^ seed).wrapping_mul(2_654_435_761) >> 8;
                if h.is_multiple_of(7) {
                    0.0
                } else {
                    (h % 2001) as f32 / 97.0 - 10.0
                }
            })
            .collect()
    }

    /// A batch is cut by its size alone (parts of at most 16, within one of each other), and
    /// not at all inside a task.
    #[test]
    fn batches_are_cut_by_their_size_alone_and_whole_in_a_task() {
        let sizes = |b| cut(b).iter().map(|&(_, n)| n).collect::<Vec<_>>();
        assert_eq!(sizes(16), [16]);
        assert_eq!(sizes(64), [16, 16, 16, 16]);
        assert_eq!(sizes(37), [12, 12, 13]);
        assert_eq!(
            cut(37).iter().map(|&(at, _)| at).collect::<Vec<_>>(),
            [0, 12, 24]
        );
        let in_a_task = crate::device::on_one_thread(|| sizes(64));
        assert_eq!(in_a_task, [64]);
    }

    /// Row sums are each row's sum from 0 in order, for every count of rows around a group.
    #[test]
    fn row_sums_add_each_row_in_order() {
        for rows in [1, 7, 8, 9, 17] {
            for n in [1, 5, 33] {
                let v = values(rows * n, 3);
                let want: Vec<u32> = v
                    .chunks(n)
                    .map(|r| r.iter().fold(0f32, |s, &x| s + x).to_bits())
                    .collect();
                let got: Vec<u32> = row_sums(&v, n, 0.0).iter().map(|s| s.to_bits()).collect();
                assert_eq!(got, want, "{rows} rows of {n}");
                // From −0, as `Iterator::sum`: rows of −0 stay −0.
                let z = vec![-0f32; rows * n];
                let want: Vec<u32> = z
                    .chunks(n)
                    .map(|r| r.iter().sum::<f32>().to_bits())
                    .collect();
                let got: Vec<u32> = row_sums(&z, n, -0.0).iter().map(|s| s.to_bits()).collect();
                assert_eq!(got, want, "{rows} rows of {n} of −0");
            }
        }
    }

    /// im2col and col2im through the phases give the table gathers' values to the bit, on
    /// the vector path where the CPU has it and on the plain one, for strides 1 to 3,
    /// paddings 0 to 2, odd and even sizes, kernels smaller and larger than the stride,
    /// batches of 1 and 5, and conv64's layers. On a one-thread pool, so that the passes run
    /// on the thread that picks the path.
    #[test]
    fn phases_give_the_table_gathers_values() {
        // (big, kernel, stride, padding, grid or None for the convolution's own, whether the
        // phase planes fit on the grid: not where the convolution leaves the last rows or
        // columns of the big image unread, nor for an empty image).
        type Case = (
            [usize; 2],
            [usize; 2],
            usize,
            usize,
            Option<[usize; 2]>,
            bool,
        );
        let cases: &[Case] = &[
            ([28, 28], [3, 3], 2, 1, None, true),
            ([14, 14], [3, 3], 2, 1, None, true),
            ([7, 7], [3, 3], 2, 1, None, true),
            ([14, 14], [4, 4], 2, 1, None, true),
            ([28, 28], [4, 4], 2, 1, None, true),
            ([14, 14], [3, 3], 2, 1, Some([7, 7]), true),
            ([8, 8], [3, 3], 2, 2, None, true),
            ([9, 23], [3, 3], 2, 1, None, true),
            ([9, 11], [5, 3], 3, 2, None, true),
            ([10, 10], [3, 3], 1, 1, None, true),
            ([7, 7], [1, 1], 2, 0, None, true),
            ([6, 7], [2, 2], 2, 0, None, false),
            ([5, 8], [3, 4], 2, 0, None, false),
            ([4, 4], [4, 4], 1, 0, Some([1, 1]), false),
            ([0, 4], [2, 2], 2, 2, Some([2, 4]), false),
        ];
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("a one-thread pool");
        pool.install(|| {
            for b in [1, 5] {
                for &(big, k, s, p, grid, fits) in cases {
                    phases_match_tables(3, b, big, k, s, p, grid, fits);
                }
            }
        });
    }

    /// One case of [`phases_give_the_table_gathers_values`].
    #[allow(clippy::too_many_arguments)]
    fn phases_match_tables(
        c: usize,
        b: usize,
        big: [usize; 2],
        k: [usize; 2],
        s: usize,
        p: usize,
        grid: Option<[usize; 2]>,
        fits: bool,
    ) {
        let grid = grid.unwrap_or([0, 1].map(|d| (big[d] + 2 * p - k[d]) / s + 1));
        let g = Geom {
            c,
            big,
            k,
            s,
            p,
            grid,
        };
        let ph = Phases::new(big, k, s, p, grid, b);
        assert_eq!(ph.is_some(), fits, "phases of {g:?}");
        let Some(ph) = ph else { return };
        let bl = b * g.len();
        let x = values(b * g.big_len(), 1);
        let cols = values(g.rows() * bl, 2);
        let finish = |ci: usize, ch: &mut [f32]| ch.iter_mut().for_each(|v| *v += ci as f32);
        let mut want = vec![f32::NAN; g.rows() * bl];
        im2col_by_table(&x, b, &g, &table(&g, None), &mut want);
        let n = b * g.big_len();
        let want_big = fresh(n, |d| {
            col2im_by_table(&cols, b, &g, &table(&g, Some(b)), finish, d)
        })
        .to_vec();
        let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        for plain in [false, true] {
            super::super::phases::PLAIN.set(plain);
            let mut got = vec![f32::NAN; g.rows() * bl];
            im2col_by_phases(&x, b, &g, &ph, &mut got);
            assert_eq!(
                bits(&got),
                bits(&want),
                "im2col of {g:?}, b {b}, plain {plain}"
            );
            let got_big = fresh(n, |d| col2im_by_phases(&cols, b, &g, &ph, finish, d));
            assert_eq!(
                bits(&got_big),
                bits(&want_big),
                "col2im of {g:?}, b {b}, plain {plain}"
            );
        }
        super::super::phases::PLAIN.set(false);
    }
}
