//! Stride-1 convolutions of a single input channel to several output channels (see
//! [`super::one_input_path`]): the first layer of a model of grey images, such as
//! `conv(16,3,s1,p1)`.
//!
//! Through the patch matrix, such a layer writes `kh·kw` values per input value, multiplies
//! them by a matrix of `o` rows, then reorders the product image by image: three passes over
//! memory for a product of depth 9. Here each image's plane is copied once into a zero-padded
//! plane ([`Planes`]), where every kernel offset is a contiguous run, and each output channel
//! is summed over the offsets on the padded grid, in a buffer that stays in the core's cache,
//! then written to its place with the bias and the ReLU. Each output value is summed as gemm
//! sums it over the patch matrix: from zero, one fused multiply-add per offset in the order
//! of the patch matrix's rows, so the values are the same as through the patch matrix.

use std::mem::MaybeUninit;

use pulp::{Arch, Simd, WithSimd};

use super::padded::Planes;
use super::Geom;
use crate::kernels::pieces::{chunks_written_into, Fill};

/// The output `[b, o, gh, gw]` of the convolution of `x` (`[b, 1, h, w]`) with `w` (`[o, 1,
/// kh, kw]`), plus `bias`, through a ReLU when `relu`, written into `dest` and returned.
pub(super) fn forward<'d>(
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    relu: bool,
    b: usize,
    g: &Geom,
    dest: &'d mut [MaybeUninit<f32>],
) -> &'d mut [f32] {
    let pad = Planes::new(g);
    let (hw, l) = (pad.h * pad.w, g.len());
    let o = bias.len();
    assert_eq!(
        dest.len(),
        b * o * l,
        "one_input::forward: an output of another size"
    );
    chunks_written_into(dest, o * l, |i, yi| {
        Arch::new().dispatch(Forward {
            x: &x[i * hw..][..hw],
            w,
            bias,
            relu,
            pad,
            y: yi,
        })
    })
}

/// [`forward`] for one image's plane `x`, into its output channels `y`.
struct Forward<'a, 'b> {
    x: &'a [f32],
    w: &'a [f32],
    bias: &'a [f32],
    relu: bool,
    pad: Planes,
    y: &'a mut Fill<'b>,
}

impl WithSimd for Forward<'_, '_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        let Forward {
            x,
            w,
            bias,
            relu,
            pad,
            y,
        } = self;
        let taps = pad.taps;
        let mut xp = vec![0f32; pad.area + pad.reach()];
        pad.fill(x, &mut xp);
        let mut acc = vec![0f32; pad.out_len()];
        for (w, &add) in w.chunks_exact(taps).zip(bias) {
            acc.fill(0.0);
            for (kk, &wv) in w.iter().enumerate() {
                let run = &xp[pad.tap(kk)..][..acc.len()];
                for (a, &v) in acc.iter_mut().zip(run) {
                    *a = wv.mul_add(v, *a);
                }
            }
            pad.narrow_into(&acc, (add, relu), y);
        }
    }
}
