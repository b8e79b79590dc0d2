//! Shuffling and noise: the seeded streams that make a run reproducible and resumable.
//! Each epoch's order and each batch's noise derive from (seed, epoch, batch) alone, so a
//! resumed run sees exactly what an uninterrupted one would.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use super::dataset::Scale;

/// A generator for stream `stream` of `seed` (ChaCha's stream id keeps streams apart).
pub fn rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(stream);
    r
}

/// The order of `n` training images in `epoch` (0-based).
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut rng(seed, 1 + epoch as u64));
    idx
}

/// Adds Gaussian noise of standard deviation `std` to `values` and clips to the scale's range.
/// `std` is in units of the [0, 1] pixel scale; for [-1, 1] data it is doubled to match.
pub fn add_noise(values: &mut [f32], std: f32, scale: Scale, r: &mut ChaCha8Rng) {
    let (lo, hi) = scale.range();
    let sd = std * (hi - lo);
    // Callers validate `std` (finite, >= 0); anything else adds no noise rather than panic.
    let Ok(normal) = Normal::new(0.0f32, sd) else {
        return;
    };
    if !(sd.is_finite() && sd > 0.0) {
        return;
    }
    for v in values.iter_mut() {
        *v = (*v + normal.sample(r)).clamp(lo, hi);
    }
}

/// The noise stream of batch `batch` of `epoch` (training) — distinct from shuffles.
pub fn noise_rng(seed: u64, epoch: usize, batch: usize) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed.wrapping_add(0x9E37_79B9_7F4A_7C15));
    r.set_stream(((epoch as u64) << 32) | batch as u64);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_are_seeded_permutations() {
        let a = epoch_order(100, 7, 0);
        assert_eq!(a, epoch_order(100, 7, 0));
        assert_ne!(a, epoch_order(100, 7, 1));
        assert_ne!(a, epoch_order(100, 8, 0));
        let mut s = a.clone();
        s.sort_unstable();
        assert_eq!(s, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn noise_is_clipped_and_has_the_right_spread() {
        let mut v = vec![0.5f32; 20_000];
        add_noise(&mut v, 0.1, Scale::ZeroOne, &mut noise_rng(1, 0, 0));
        assert!(v.iter().all(|x| (0.0..=1.0).contains(x)));
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / v.len() as f32;
        assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
        assert!((var.sqrt() - 0.1).abs() < 0.01, "std {}", var.sqrt());
    }
}
