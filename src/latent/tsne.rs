//! 2-D maps of the test codes: t-SNE and PCA, side by side.
//!
//! t-SNE is FIt-SNE (Linderman et al., 2019: the repulsive forces interpolated on a grid and
//! summed by FFT; openTSNE's method for large maps) from the `bhtsne` crate, perplexity 30,
//! seeded through our own random initial embedding, on affinities over the exact nearest
//! neighbours that [`super::knn`] finds by matrix products (the crate's own tree search does
//! nearly a full scan per code, one distance at a time). Its step size is `max(n / 12, 200)`
//! (Belkina et al., 2019): the step of scikit-learn's `learning_rate="auto"`, whose gradient
//! carries a factor 4 that the crate's lacks. The crate's own default copies scikit-learn's
//! number without that factor, so its steps are 4× shorter and leave a 10,000-point map
//! unconverged after 1000 iterations (BENCHMARKS.md, "t-SNE against scikit-learn").

use std::path::{Path, PathBuf};
use std::time::Instant;

use nalgebra::{DMatrix, SymmetricEigen};
use rand_distr::{Distribution, Normal};
use serde::Serialize;

use super::class_names;
use crate::data::batch::rng;
use crate::data::Split;
use crate::error::{Error, Result};
use crate::explore::codes::encode;
use crate::fsutil::{write_atomic, write_json};
use crate::run::Run;
use crate::viz::scatter::{scatter, Panel};

/// Settings of a t-SNE map.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TsneSettings {
    /// Test images to map (the first `count`).
    pub count: usize,
    /// Perplexity.
    pub perplexity: f32,
    /// Gradient-descent epochs.
    pub epochs: usize,
    /// Seed of the initial embedding.
    pub seed: u64,
}

impl Default for TsneSettings {
    fn default() -> Self {
        // Perplexity 30 and 1000 iterations: scikit-learn's defaults.
        TsneSettings {
            count: 10_000,
            perplexity: 30.0,
            epochs: 1000,
            seed: 0,
        }
    }
}

impl TsneSettings {
    /// Checks the settings for a test set of `available` images (the map takes the first
    /// `count` of them, or all when there are fewer).
    pub fn validate(&self, available: usize) -> Result<()> {
        let n = self.count.min(available);
        if !(self.perplexity.is_finite() && self.perplexity > 0.0) {
            return Err(Error::config(
                "perplexity",
                format!("{} must be a positive number", self.perplexity),
            ));
        }
        if (n as f32 - 1.0) < 3.0 * self.perplexity {
            return Err(Error::config(
                "count",
                format!(
                    "{n} points are too few for perplexity {} (need at least {})",
                    self.perplexity,
                    (3.0 * self.perplexity).ceil() as usize + 1
                ),
            ));
        }
        if self.epochs == 0 {
            return Err(Error::config("epochs", "must be at least 1"));
        }
        Ok(())
    }
}

/// What `tsne` writes to `tsne.json`.
#[derive(Debug, Clone, Serialize)]
pub struct TsneReport {
    /// The settings used.
    pub settings: TsneSettings,
    /// The method: "FIt-SNE".
    pub method: &'static str,
    /// The gradient-descent step size, [`learning_rate`] of the map's size.
    pub learning_rate: f32,
    /// Seconds for t-SNE.
    pub seconds: f64,
    /// Share of the code variance along the two principal axes.
    pub pca_explained: [f64; 2],
}

/// The t-SNE step size for `n` points: `max(n / 12, 200)`, for a gradient without the factor
/// 4 (see the module's documentation).
pub fn learning_rate(n: usize) -> f32 {
    (n as f32 / 12.0).max(200.0)
}

/// The first two principal components of `x` (rows), and their explained-variance shares.
pub fn pca2(x: &[Vec<f32>]) -> (Vec<(f64, f64)>, [f64; 2]) {
    let n = x.len();
    let d = x.first().map(Vec::len).unwrap_or(0);
    let m = DMatrix::from_fn(n, d, |i, j| x[i][j] as f64);
    let mean = m.row_mean();
    let centered = DMatrix::from_fn(n, d, |i, j| m[(i, j)] - mean[j]);
    let cov = centered.transpose() * &centered / (n.max(2) - 1) as f64;
    let eig = SymmetricEigen::new(cov);
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]));
    let total: f64 = eig
        .eigenvalues
        .iter()
        .map(|v| v.max(0.0))
        .sum::<f64>()
        .max(f64::MIN_POSITIVE);
    let pick = |k: usize| order.get(k).copied();
    let axis = |k: usize| pick(k).map(|c| eig.eigenvectors.column(c).clone_owned());
    let (a0, a1) = (axis(0), axis(1));
    let proj = |v: &Option<nalgebra::DVector<f64>>, i: usize| {
        v.as_ref()
            .map(|a| centered.row(i).dot(&a.transpose()))
            .unwrap_or(0.0)
    };
    let pts = (0..n).map(|i| (proj(&a0, i), proj(&a1, i))).collect();
    let share = |k: usize| {
        pick(k)
            .map(|c| eig.eigenvalues[c].max(0.0) / total)
            .unwrap_or(0.0)
    };
    (pts, [share(0), share(1)])
}

/// Runs `tsne`: `tsne.png` (t-SNE and PCA panels), `tsne.csv` and `tsne.json` in `out`.
pub fn tsne(
    run: &Run,
    test: &Split,
    s: TsneSettings,
    out: &Path,
) -> Result<(TsneReport, [PathBuf; 3])> {
    let n = s.count.min(test.len());
    s.validate(test.len())?;
    let idx: Vec<usize> = (0..n).collect();
    tsne_codes(run, &encode(run, test, &idx)?, &test.labels, s, out)
}

/// [`tsne`] on test codes already computed (`codes[i]` is test image `i`'s; the map takes the
/// first `s.count`).
pub fn tsne_codes(
    run: &Run,
    codes: &[Vec<f32>],
    labels: &[u8],
    s: TsneSettings,
    out: &Path,
) -> Result<(TsneReport, [PathBuf; 3])> {
    let n = s.count.min(codes.len()).min(labels.len());
    s.validate(n)?;
    let codes = &codes[..n];
    let labels = &labels[..n];
    if let Some(v) = codes.iter().flatten().find(|v| !v.is_finite()) {
        return Err(Error::Data(format!(
            "a test image's code holds {v}, not a finite number; the model's weights are broken"
        )));
    }
    let (pca, pca_explained) = pca2(codes);

    // A seeded N(0, 1e-4) start, as in van der Maaten's reference implementation.
    let mut r = rng(s.seed, 11);
    let normal = Normal::new(0.0f32, 1e-4).expect("valid normal");
    let init: Vec<f32> = (0..n * 2).map(|_| normal.sample(&mut r)).collect();
    let t0 = Instant::now();
    let learning_rate = learning_rate(n);
    // The neighbours the affinities are built on: 3 × perplexity of them (as the crate's own
    // search takes), at least one, found exactly (and the same on any number of threads).
    let k = ((3.0 * s.perplexity) as usize).max(1);
    let flat: Vec<f32> = codes.iter().flatten().copied().collect();
    let dim = codes.first().map(Vec::len).unwrap_or(0);
    let neighbors = super::knn::nearest_neighbors(&flat, n, dim, k);
    let samples: Vec<&[f32]> = codes.iter().map(Vec::as_slice).collect();
    // On one worker thread: the crate sums over points with rayon's parallel reductions, whose
    // grouping, and so rounding, follows the threads' scheduling (two runs on 2 threads gave
    // different maps). One thread makes the map a function of the codes and the seed alone.
    let embedding = crate::device::on_one_thread(|| {
        bhtsne::tSNE::<f32, &[f32], 2>::new(&samples)
            .perplexity(s.perplexity)
            .epochs(s.epochs)
            .learning_rate(learning_rate)
            .initial_embedding(init)
            .fit_sne_with_neighbors(&neighbors)
            .embedding()
    });
    let seconds = t0.elapsed().as_secs_f64();
    let tsne_pts: Vec<(f64, f64)> = embedding
        .chunks(2)
        .map(|c| (c[0] as f64, c[1] as f64))
        .collect();

    let mut csv = String::from("index,label,tsne_x,tsne_y,pca_x,pca_y\n");
    for i in 0..n {
        csv.push_str(&format!(
            "{i},{},{},{},{},{}\n",
            labels[i], tsne_pts[i].0, tsne_pts[i].1, pca[i].0, pca[i].1
        ));
    }
    let csv_path = out.join("tsne.csv");
    write_atomic(&csv_path, csv.as_bytes())?;
    let png = out.join("tsne.png");
    let t_title = format!("t-SNE of {n} test codes (perplexity {})", s.perplexity);
    let p_title = format!(
        "PCA ({:.0}% + {:.0}% of variance)",
        100.0 * pca_explained[0],
        100.0 * pca_explained[1]
    );
    scatter(
        &png,
        &[
            Panel {
                title: &t_title,
                points: &tsne_pts,
            },
            Panel {
                title: &p_title,
                points: &pca,
            },
        ],
        labels,
        &class_names(run),
    )?;
    let report = TsneReport {
        // The images mapped, which a count past the test set's size does not reach.
        settings: TsneSettings { count: n, ..s },
        method: "FIt-SNE",
        learning_rate,
        seconds,
        pca_explained,
    };
    let json = out.join("tsne.json");
    write_json(&json, &report)?;
    Ok((report, [json, csv_path, png]))
}
