//! The dataset in memory: u8 images and labels for train/valid/test, the seeded validation
//! split, pixel scaling, and batches as tensors.

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::download::{ensure_files, ensure_test_files, DatasetSpec};
use super::idx::{read_images, read_labels};
use crate::error::{Error, Result};

/// Side length of the images every model here takes.
pub const SIDE: usize = 28;
/// Pixels per image.
pub const PIXELS: usize = SIDE * SIDE;
/// Number of classes in the supported datasets.
pub const CLASSES: u8 = 10;

/// How pixels map from u8 to floats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scale {
    /// `x / 255`, for sigmoid outputs.
    ZeroOne,
    /// `x / 127.5 - 1`, for tanh outputs (torchvision's `Normalize((0.5,), (0.5,))`).
    MinusOneOne,
}

impl Scale {
    /// The float value of a u8 pixel.
    #[inline]
    pub fn apply(self, p: u8) -> f32 {
        match self {
            Scale::ZeroOne => p as f32 / 255.0,
            Scale::MinusOneOne => p as f32 / 127.5 - 1.0,
        }
    }

    /// [`apply`](Self::apply) for each of the 256 pixel values, computed once: a batch is
    /// converted at every training step, and a vector division costs more than the rest of
    /// the conversion (a table of the divisions' results has their bits by construction).
    fn table(self) -> &'static [f32; 256] {
        static TABLES: [std::sync::OnceLock<[f32; 256]>; 2] =
            [std::sync::OnceLock::new(), std::sync::OnceLock::new()];
        let slot = match self {
            Scale::ZeroOne => 0,
            Scale::MinusOneOne => 1,
        };
        TABLES[slot].get_or_init(|| std::array::from_fn(|p| self.apply(p as u8)))
    }

    /// The (low, high) range of scaled values.
    pub fn range(self) -> (f32, f32) {
        match self {
            Scale::ZeroOne => (0.0, 1.0),
            Scale::MinusOneOne => (-1.0, 1.0),
        }
    }
}

/// A labelled set of 28×28 u8 images.
#[derive(Debug, Clone, Default)]
pub struct Split {
    /// `len * 784` pixels.
    pub images: Vec<u8>,
    /// One label per image.
    pub labels: Vec<u8>,
}

impl Split {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the split is empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * PIXELS..(i + 1) * PIXELS]
    }

    /// The images at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Split {
        let mut images = Vec::with_capacity(indices.len() * PIXELS);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            images.extend_from_slice(self.image(i));
            labels.push(self.labels[i]);
        }
        Split { images, labels }
    }

    /// The first `n` images (or all).
    pub fn head(&self, n: usize) -> Split {
        let n = n.min(self.len());
        Split {
            images: self.images[..n * PIXELS].to_vec(),
            labels: self.labels[..n].to_vec(),
        }
    }

    /// Scaled pixels of the images at `indices`, as a flat vector.
    pub fn scaled(&self, indices: &[usize], scale: Scale) -> Vec<f32> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked on the line above.
            return unsafe { avx512::scaled(self, indices, scale) };
        }
        let mut out = Vec::with_capacity(indices.len() * PIXELS);
        let table = scale.table();
        // Compiled for the CPU's widest vectors by pulp (chosen at run time): a batch is
        // converted at every training step.
        pulp::Arch::new().dispatch(|| {
            for (k, &i) in indices.iter().enumerate() {
                // A shuffled batch's images lie scattered over the training set, mostly
                // outside the caches: the image two ahead is fetched while this one converts,
                // which halves the time per batch on MNIST (see BENCHMARKS.md).
                if let Some(&ahead) = indices.get(k + 2) {
                    self.prefetch(ahead);
                }
                out.extend(self.image(i).iter().map(|&p| table[p as usize]));
            }
        });
        out
    }

    /// Asks the CPU to bring image `i` into its caches (a hint, with no effect on results).
    #[inline]
    fn prefetch(&self, i: usize) {
        #[cfg(target_arch = "x86_64")]
        for line in self.image(i).chunks(64) {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            // SAFETY: a prefetch only hints the cache; `line` is a live slice of our images.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast()) };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = i;
    }

    /// A `[n, 1, 28, 28]` tensor of the images at `indices`.
    pub fn batch(&self, indices: &[usize], scale: Scale, device: &Device) -> Tensor<4> {
        to_tensor(self.scaled(indices, scale), indices.len(), device)
    }
}

/// Builds a `[n, 1, 28, 28]` tensor from `n * 784` floats.
pub fn to_tensor(values: Vec<f32>, n: usize, device: &Device) -> Tensor<4> {
    Tensor::from_data(TensorData::new(values, [n, 1, SIDE, SIDE]), device)
}

/// Train, validation and test splits of a dataset.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Training images (the part not held out).
    pub train: Split,
    /// Validation images held out from the training file.
    pub valid: Split,
    /// Test images, used only for evaluation.
    pub test: Split,
}

/// Reads one images/labels pair and checks they agree.
pub fn load_split(images: &Path, labels: &Path) -> Result<Split> {
    let im = read_images(images)?;
    if im.rows != SIDE || im.cols != SIDE {
        return Err(Error::bad_file(
            images,
            format!("images are {}x{}, expected {SIDE}x{SIDE}", im.rows, im.cols),
        ));
    }
    let lb = read_labels(labels, CLASSES)?;
    if lb.len() != im.count {
        return Err(Error::bad_file(
            labels,
            format!(
                "{} labels but {} has {} images",
                lb.len(),
                images.display(),
                im.count
            ),
        ));
    }
    if im.count == 0 {
        return Err(Error::bad_file(images, "holds no images"));
    }
    Ok(Split {
        images: im.pixels,
        labels: lb,
    })
}

/// Options for loading a dataset.
#[derive(Debug, Clone)]
pub struct LoadOptions<'a> {
    /// Which dataset.
    pub spec: &'a DatasetSpec,
    /// Where its files are (or go).
    pub dir: &'a Path,
    /// Whether missing files may be downloaded.
    pub allow_download: bool,
    /// Fraction of the training file held out for validation.
    pub valid_fraction: f64,
    /// Seed of the validation split.
    pub seed: u64,
    /// Keep only this many training images (before the split), for quick runs.
    pub limit_train: Option<usize>,
    /// Keep only this many test images.
    pub limit_test: Option<usize>,
}

/// Loads train and test files, then holds out a seeded validation split from train.
pub fn load(opts: &LoadOptions) -> Result<Dataset> {
    if !(0.0..1.0).contains(&opts.valid_fraction) {
        return Err(Error::config(
            "valid-fraction",
            format!("{} is not in [0, 1)", opts.valid_fraction),
        ));
    }
    if !opts.dir.is_dir() && opts.spec.mirrors.is_empty() {
        return Err(Error::Data(format!(
            "dataset folder {} not found",
            opts.dir.display()
        )));
    }
    let [tri, trl, tei, tel] = ensure_files(opts.spec, opts.dir, opts.allow_download)?;
    let mut full = load_split(&tri, &trl)?;
    let mut test = load_split(&tei, &tel)?;
    if let Some(n) = opts.limit_train {
        full = full.head(n);
    }
    if let Some(n) = opts.limit_test {
        test = test.head(n);
    }
    let (train, valid) = split_valid(&full, opts.valid_fraction, opts.seed);
    Ok(Dataset { train, valid, test })
}

/// Loads only the test files (downloading only those when missing and allowed).
pub fn load_test(opts: &LoadOptions) -> Result<Split> {
    if !opts.dir.is_dir() && opts.spec.mirrors.is_empty() {
        return Err(Error::Data(format!(
            "dataset folder {} not found",
            opts.dir.display()
        )));
    }
    let [images, labels] = ensure_test_files(opts.spec, opts.dir, opts.allow_download)?;
    let test = load_split(&images, &labels)?;
    Ok(match opts.limit_test {
        Some(n) => test.head(n),
        None => test,
    })
}

/// Splits `full` into (train, valid) with a seeded shuffle; valid gets `fraction` of it.
pub fn split_valid(full: &Split, fraction: f64, seed: u64) -> (Split, Split) {
    let n = full.len();
    let n_valid = ((n as f64) * fraction).round() as usize;
    let mut idx: Vec<usize> = (0..n).collect();
    // A stream separate from the training shuffles: the split never depends on epochs.
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ SPLIT_STREAM);
    idx.shuffle(&mut rng);
    let (v, t) = idx.split_at(n_valid);
    let mut v = v.to_vec();
    let mut t = t.to_vec();
    v.sort_unstable();
    t.sort_unstable();
    (full.select(&t), full.select(&v))
}

/// Mixed into the seed of the validation split so it is independent of other seeded streams.
const SPLIT_STREAM: u64 = 0x5EED_0000_0000_0001;

/// [`Split::scaled`] in AVX-512 code: 16 pixels at a time, `p / d` computed as `q = p·(1/d)`
/// corrected once by its exact remainder (`q + (p − q·d)·(1/d)`, two fused multiply-adds),
/// which gives the correctly rounded quotient, so the bits of `apply`, for every one of
/// the 256 pixel values and both divisors (the unit test below checks all of them). The
/// table lookups of the portable code took about 60 µs per 128 MNIST images, on the
/// critical path of every training shard (BENCHMARKS.md).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Scale, Split, PIXELS};

    /// [`Split::scaled`].
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn scaled(split: &Split, indices: &[usize], scale: Scale) -> Vec<f32> {
        const LANES: usize = 16;
        const _: () = assert!(PIXELS.is_multiple_of(LANES));
        let (d, shift) = match scale {
            Scale::ZeroOne => (255.0f32, None),
            Scale::MinusOneOne => (127.5f32, Some(1.0f32)),
        };
        let (dv, cv) = (_mm512_set1_ps(d), _mm512_set1_ps(1.0 / d));
        let len = indices.len() * PIXELS;
        let mut out: Vec<f32> = Vec::with_capacity(len);
        let dst = out.spare_capacity_mut().as_mut_ptr().cast::<f32>();
        for (k, &i) in indices.iter().enumerate() {
            if let Some(&ahead) = indices.get(k + 2) {
                split.prefetch(ahead);
            }
            let image = split.image(i);
            for (c, chunk) in image.chunks_exact(LANES).enumerate() {
                // SAFETY: `chunk` holds 16 bytes; the store goes to values `k·784 + 16c ..
                // + 16` of the `len` the buffer has room for (`k < indices.len()`, `16c + 16
                // ≤ 784`).
                unsafe {
                    let p = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(
                        chunk.as_ptr().cast(),
                    )));
                    let q = _mm512_mul_ps(p, cv);
                    let r = _mm512_fnmadd_ps(q, dv, p);
                    let mut v = _mm512_fmadd_ps(r, cv, q);
                    if let Some(s) = shift {
                        v = _mm512_sub_ps(v, _mm512_set1_ps(s));
                    }
                    _mm512_storeu_ps(dst.add(k * PIXELS + c * LANES), v);
                }
            }
        }
        // SAFETY: the loop stored every one of the `len` values (784 per index, in 49
        // stores of 16).
        unsafe { out.set_len(len) };
        out
    }
}

#[cfg(test)]
mod tests {
    use super::Scale;

    #[test]
    fn a_batch_is_scaled_as_each_pixel_is() {
        let split = super::Split {
            images: (0..3 * 784).map(|i| (i * 7 % 256) as u8).collect(),
            labels: vec![0; 3],
        };
        for scale in [Scale::ZeroOne, Scale::MinusOneOne] {
            let got = split.scaled(&[2, 0, 2], scale);
            let want = [2, 0, 2].iter().flat_map(|&i| split.image(i).iter());
            assert_eq!(got.len(), 3 * 784);
            for (v, &p) in got.iter().zip(want) {
                assert_eq!(v.to_bits(), scale.apply(p).to_bits(), "{scale:?} {p}");
            }
        }
        assert_eq!(Scale::ZeroOne.table()[255], 1.0);
        assert_eq!(Scale::MinusOneOne.table()[0], -1.0);
    }
}
