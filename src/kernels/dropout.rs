//! Dropout in training as one pass each way. burn's `Dropout` draws a whole tensor of
//! Bernoulli floats from the backend's random generator, one call each, then multiplies twice
//! (by the draws, then by `1/keep`), each a pass with an output of its own and a backward
//! pass of its own. Here the choice for value `i` is a hash of `(seed, i)`, so it costs a few
//! integer operations, pieces of the tensor can run on any thread with the same result, and
//! the backward pass recomputes the choices instead of keeping them. The seed is drawn from
//! the backend's seeded generator for each call (see [`super::dropout`]), so a run repeats for
//! its `--seed`; a shard of a batch numbers its values from its first one's place in the whole
//! batch, so that its choices are the whole batch's.
//!
//! The arithmetic is burn's: `y = (x · r) · s` and `∂x = (g · s) · r`, with `r` 1 or 0 and
//! `s = 1/keep` rounded to `f32`.

use burn::backend::flex::FlexTensor;
use pulp::{Arch, Simd, WithSimd};
use rayon::prelude::*;

use super::flex::{owned, storage, BLOCK};

/// Draw `i` of the stream `seed`: SplitMix64's output for `(seed, i)`. Its finaliser is
/// written out here because no crate offers a counter-based generator as small: `rand`'s
/// generators are sequential.
#[inline]
pub(super) fn draw(seed: u64, i: u64) -> u64 {
    let mut z = seed.wrapping_add(i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One value's choice: kept when the top 32 bits of [`draw`]`(seed, i)` fall below
/// `threshold` (`keep · 2³²`).
#[inline]
fn kept(seed: u64, i: u64, threshold: u64) -> bool {
    (draw(seed, i) >> 32) < threshold
}

/// What the backward pass needs: the seed, the probability of keeping a value, and the
/// number of the tensor's first value (its place in the whole batch).
#[derive(Debug, Clone, Copy)]
pub(super) struct DropoutSaved {
    seed: u64,
    keep: f64,
    first: u64,
}

impl DropoutSaved {
    pub(super) fn new(seed: u64, keep: f64, first: u64) -> Self {
        DropoutSaved { seed, keep, first }
    }

    /// `32`-bit threshold and `f32` scale of [`kept`] and the output.
    fn parts(self) -> (u64, f32) {
        (
            (self.keep * 4_294_967_296.0) as u64,
            (1.0 / self.keep) as f32,
        )
    }

    /// `v[i] = (v[i] · a) · b` where `(a, b)` is `(r, s)` forward and `(s, r)` backward, `r`
    /// the choice for value `i`.
    fn apply(self, t: FlexTensor, backward: bool) -> FlexTensor {
        let (threshold, scale) = self.parts();
        let mut t = owned(t);
        storage(&mut t)
            .par_chunks_mut(BLOCK)
            .enumerate()
            .for_each(|(c, values)| {
                Arch::new().dispatch(Scale {
                    values,
                    saved: self,
                    first: c * BLOCK,
                    threshold,
                    scale,
                    backward,
                })
            });
        t
    }

    /// The output of dropout on `x`.
    pub(super) fn forward(self, x: FlexTensor) -> FlexTensor {
        self.apply(x, false)
    }

    /// The input's gradient from the output's `g`.
    pub(super) fn backward(self, g: FlexTensor) -> FlexTensor {
        self.apply(g, true)
    }

    /// How many of `n` values the seed keeps (for tests).
    #[cfg(test)]
    fn count_kept(self, n: usize) -> usize {
        let (threshold, _) = self.parts();
        (0..n as u64)
            .filter(|&i| kept(self.seed, i, threshold))
            .count()
    }
}

/// One piece of [`DropoutSaved::apply`]: the values from number `first` of the tensor. A
/// `WithSimd` operation rather than a closure: dispatched by pulp, its loop compiles for the
/// CPU's widest vectors (AVX-512's 64-bit multiplies hash eight values at once), where a
/// closure's body compiles for the baseline x86-64, which has no vector 64-bit multiply.
struct Scale<'a> {
    values: &'a mut [f32],
    saved: DropoutSaved,
    first: usize,
    threshold: u64,
    scale: f32,
    backward: bool,
}

impl WithSimd for Scale<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        let Scale {
            values,
            saved,
            first,
            threshold,
            scale,
            backward,
        } = self;
        let start = saved.first + first as u64;
        let r = |j: usize| {
            if kept(saved.seed, start + j as u64, threshold) {
                1.0f32
            } else {
                0.0
            }
        };
        if backward {
            for (j, v) in values.iter_mut().enumerate() {
                *v = (*v * scale) * r(j);
            }
        } else {
            for (j, v) in values.iter_mut().enumerate() {
                *v = (*v * r(j)) * scale;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::flex::values;
    use burn::tensor::{Shape, TensorData};

    fn tensor(v: Vec<f32>) -> FlexTensor {
        let n = v.len();
        FlexTensor::from_data(TensorData::new(v, Shape::new([n])))
    }

    /// About `keep` of the values are kept, whatever the seed, and different seeds choose
    /// differently.
    #[test]
    fn keeps_about_the_given_share_of_values() {
        let n = 200_000;
        for keep in [0.1, 0.5, 0.9] {
            let mut choices = vec![];
            for seed in [0u64, 1, 0xDEAD_BEEF] {
                let d = DropoutSaved::new(seed, keep, 0);
                let share = d.count_kept(n) as f64 / n as f64;
                // The binomial's standard deviation is below 0.0012 here: 5 of them.
                assert!(
                    (share - keep).abs() < 0.006,
                    "keep {keep}, seed {seed}: {share}"
                );
                let y = values(&d.forward(tensor(vec![1.0; 64]))).into_owned();
                choices.push(y);
            }
            assert!(
                choices[0] != choices[1] && choices[1] != choices[2],
                "keep {keep}"
            );
        }
    }

    /// Forward and backward apply the same choices, with burn's arithmetic for each value:
    /// kept values scaled by `1/keep`, the others zero (or NaN times zero).
    #[test]
    fn forward_and_backward_are_burns_arithmetic_with_the_same_choices() {
        let n = 3 * BLOCK + 17;
        let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let d = DropoutSaved::new(42, 0.7, 0);
        let s = (1.0 / 0.7f64) as f32;
        let (threshold, _) = d.parts();
        // A NaN and an infinity on a kept value and on a dropped one.
        let mut x_special = x.clone();
        let kept_at = (0..n).find(|&i| kept(42, i as u64, threshold)).unwrap();
        let dropped_at = (0..n).find(|&i| !kept(42, i as u64, threshold)).unwrap();
        for (i, v) in [(kept_at, f32::NAN), (dropped_at, f32::INFINITY)] {
            x_special[i] = v;
        }
        for (i, v) in [(kept_at + 1, f32::INFINITY), (dropped_at + 1, f32::NAN)] {
            x_special[i] = v;
        }
        let y = values(&d.forward(tensor(x_special.clone()))).into_owned();
        let g = values(&d.backward(tensor(x.clone()))).into_owned();
        assert_eq!((y.len(), g.len()), (n, n));
        for i in 0..n {
            let r = if kept(42, i as u64, threshold) {
                1.0f32
            } else {
                0.0
            };
            assert_eq!(y[i].to_bits(), ((x_special[i] * r) * s).to_bits(), "{i}");
            assert_eq!(g[i].to_bits(), ((x[i] * s) * r).to_bits(), "{i}");
        }
    }

    /// A shard numbered from its first value's place in the batch makes the batch's choices:
    /// the batch's output cut at any row is the shards' outputs, bit for bit, both ways.
    #[test]
    fn shards_numbered_from_their_place_choose_as_the_whole_batch() {
        let (rows, per_row) = (7, BLOCK / 3 + 5);
        let x: Vec<f32> = (0..rows * per_row)
            .map(|i| (i as f32 * 0.11).cos())
            .collect();
        let whole = DropoutSaved::new(9, 0.6, 0);
        let y = values(&whole.forward(tensor(x.clone()))).into_owned();
        let g = values(&whole.backward(tensor(x.clone()))).into_owned();
        for cut in [1, 3, 6] {
            let at = cut * per_row;
            let mut ys = Vec::new();
            let mut gs = Vec::new();
            for (part, first) in [(&x[..at], 0), (&x[at..], at as u64)] {
                let d = DropoutSaved::new(9, 0.6, first);
                ys.extend_from_slice(&values(&d.forward(tensor(part.to_vec()))));
                gs.extend_from_slice(&values(&d.backward(tensor(part.to_vec()))));
            }
            assert!(
                y.iter().zip(&ys).all(|(a, b)| a.to_bits() == b.to_bits()),
                "cut {cut}"
            );
            assert!(
                g.iter().zip(&gs).all(|(a, b)| a.to_bits() == b.to_bits()),
                "cut {cut}"
            );
        }
        // Numbered from elsewhere, the same values are chosen differently.
        let shifted = DropoutSaved::new(9, 0.6, 1);
        assert_ne!(y, values(&shifted.forward(tensor(x))).into_owned());
    }
}
