//! What the explorer keeps per run: the model, the codes of the test and training images, the
//! principal axes of the codes, a latent classifier, and the test images' anomaly scores.

use std::path::Path;

use burn::prelude::*;
use nalgebra::{DMatrix, SymmetricEigen};
use serde::Serialize;

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::eval::{reconstruct_values, to_unit};
use crate::explore::{anomaly, codes};
use crate::latent::classifier::{fit, ClassifierKind, Fitted, LinearClassifier, SavedLinear};
use crate::run::Run;
use crate::rundir::DirLock;
use crate::train::checkpoint::sha256_hex;

/// Principal axes of the codes: the mean code, up to 8 unit axes (largest variance first) and
/// the standard deviation of the codes along each.
#[derive(Debug, Clone, Serialize)]
pub struct Pca {
    /// The mean code.
    pub mean: Vec<f32>,
    /// Unit axes, each `latent` values.
    pub axes: Vec<Vec<f32>>,
    /// Standard deviation of the codes along each axis.
    pub std: Vec<f32>,
    /// Share of the code variance along each axis.
    pub explained: Vec<f32>,
}

impl Pca {
    /// The first `k` principal axes of the rows of `x`.
    pub fn fit(x: &[Vec<f32>], k: usize) -> Pca {
        let n = x.len();
        let d = x.first().map(Vec::len).unwrap_or(0);
        let mut mean = vec![0f64; d];
        for r in x {
            for (m, &v) in mean.iter_mut().zip(r) {
                *m += v as f64 / n.max(1) as f64;
            }
        }
        let mut cov = DMatrix::<f64>::zeros(d, d);
        for r in x {
            let c: Vec<f64> = r.iter().zip(&mean).map(|(&v, m)| v as f64 - m).collect();
            for i in 0..d {
                for j in 0..=i {
                    cov[(i, j)] += c[i] * c[j];
                }
            }
        }
        let denom = (n.max(2) - 1) as f64;
        for i in 0..d {
            for j in 0..=i {
                let v = cov[(i, j)] / denom;
                cov[(i, j)] = v;
                cov[(j, i)] = v;
            }
        }
        let eig = SymmetricEigen::new(cov);
        let mut order: Vec<usize> = (0..d).collect();
        order.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]));
        let total: f64 = eig.eigenvalues.iter().map(|v| v.max(0.0)).sum::<f64>();
        let total = total.max(f64::MIN_POSITIVE);
        let top = &order[..k.min(d)];
        Pca {
            mean: mean.iter().map(|&m| m as f32).collect(),
            axes: top
                .iter()
                .map(|&c| {
                    eig.eigenvectors
                        .column(c)
                        .iter()
                        .map(|&v| v as f32)
                        .collect()
                })
                .collect(),
            std: top
                .iter()
                .map(|&c| eig.eigenvalues[c].max(0.0).sqrt() as f32)
                .collect(),
            explained: top
                .iter()
                .map(|&c| (eig.eigenvalues[c].max(0.0) / total) as f32)
                .collect(),
        }
    }

    /// Coordinates of `code` along the axes.
    pub fn project(&self, code: &[f32]) -> Vec<f32> {
        self.axes
            .iter()
            .map(|a| {
                a.iter()
                    .zip(code)
                    .zip(&self.mean)
                    .map(|((a, c), m)| a * (c - m))
                    .sum()
            })
            .collect()
    }
}

/// One point of the map: a test image's code in two dimensions.
#[derive(Debug, Clone, Serialize)]
pub struct MapPoint {
    /// Horizontal position.
    pub x: f32,
    /// Vertical position.
    pub y: f32,
    /// The image's class.
    pub label: u8,
    /// The image's index in the test set.
    pub index: usize,
}

/// The 2-D map of the test codes.
#[derive(Debug, Clone, Serialize)]
pub struct CodeMap {
    /// `tsne` (the run's `tsne.csv`, from `latent --tsne` or `report`) or `pca`.
    pub projection: &'static str,
    /// One point per test image.
    pub points: Vec<MapPoint>,
}

/// A run as the explorer serves it.
pub struct RunState {
    /// The name in URLs (the run folder's name, made unique).
    pub name: String,
    /// The model.
    pub run: Run,
    /// Class names.
    pub classes: Vec<String>,
    /// The run's data (test and training images).
    pub data: Dataset,
    /// Codes of the test images.
    pub test_codes: Vec<Vec<f32>>,
    /// Codes of the training images.
    pub train_codes: Vec<Vec<f32>>,
    /// Principal axes of the test codes.
    pub pca: Pca,
    /// The map of the test codes.
    pub map: CodeMap,
    /// Logistic regression on the training codes.
    pub classifier: Fitted,
    /// Reconstruction MSE of every test image, sorted (for percentiles).
    pub scores: Vec<f64>,
}

/// Reads `tsne.csv` (index,label,tsne_x,tsne_y,…) when it matches the test set.
fn read_tsne(dir: &Path, test_len: usize) -> Option<Vec<MapPoint>> {
    let text = crate::fsutil::read_to_string(&dir.join("tsne.csv")).ok()?;
    let mut points = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let (index, label, x, y) = (
            f.first()?.parse().ok()?,
            f.get(1)?.parse().ok()?,
            f.get(2)?.parse::<f32>().ok()?,
            f.get(3)?.parse::<f32>().ok()?,
        );
        if index >= test_len || !x.is_finite() || !y.is_finite() {
            return None;
        }
        points.push(MapPoint { x, y, label, index });
    }
    (!points.is_empty()).then_some(points)
}

/// The explorer's classifier of a run, cached in the run folder.
pub const CLASSIFIER_FILE: &str = "explorer-classifier.json";

/// What the cache holds: the classifier, and what it was fitted to.
#[derive(Serialize, serde::Deserialize)]
struct CachedClassifier {
    /// SHA-256 of the `model.safetensors` whose codes it was fitted to.
    weights_sha256: String,
    /// Training images it was fitted to.
    train_images: usize,
    classifier: SavedLinear,
}

/// The run's logistic regression on its training codes: read from [`CLASSIFIER_FILE`] when
/// that was fitted to these weights and images, else fitted (L-BFGS, C = 1, as `classify`)
/// and saved there, unless another process holds the folder (a run still training).
fn classifier(
    run: &Run,
    codes: &[Vec<f32>],
    labels: &[u8],
    classes: usize,
) -> Result<LinearClassifier> {
    let device = Device::flex();
    let d = run.config.model.latent_dim;
    let digest = crate::fsutil::read(&run.weights)
        .map(|b| sha256_hex(&b))
        .unwrap_or_default();
    let path = run.dir.join(CLASSIFIER_FILE);
    if let Ok(text) = crate::fsutil::read_to_string(&path) {
        if let Ok(c) = serde_json::from_str::<CachedClassifier>(&text) {
            if c.weights_sha256 == digest && c.train_images == codes.len() {
                if let Ok(m) = LinearClassifier::from_saved(c.classifier, d, classes, &device) {
                    return Ok(m);
                }
            }
        }
    }
    let m = fit(
        ClassifierKind::Logistic,
        codes,
        labels,
        classes,
        1.0,
        500,
        &device,
    )?;
    if let Ok(_held) = DirLock::acquire(&run.dir, "serve") {
        let cached = CachedClassifier {
            weights_sha256: digest,
            train_images: codes.len(),
            classifier: m.to_saved(),
        };
        // A cache: the explorer works the same without it.
        let _ = crate::fsutil::write_json(&path, &cached);
    }
    Ok(m)
}

impl RunState {
    /// Prepares `run` with its `data`: encodes every test and training image, fits the
    /// principal axes, fits (or reads) a logistic regression on the training codes, and scores
    /// the test images.
    pub fn new(name: String, run: Run, data: Dataset) -> Result<RunState> {
        if data.test.is_empty() || data.train.is_empty() {
            return Err(Error::Data(format!(
                "{}: the explorer needs test and training images",
                run.dir.display()
            )));
        }
        let classes = crate::latent::class_names(&run);
        let test_codes = codes::encode_all(&run, &data.test)?;
        let train_codes = codes::encode_all(&run, &data.train)?;
        let pca = Pca::fit(&test_codes, 8);
        let map = match read_tsne(&run.dir, data.test.len()) {
            Some(points) => CodeMap {
                projection: "tsne",
                points,
            },
            None => CodeMap {
                projection: "pca",
                points: test_codes
                    .iter()
                    .enumerate()
                    .map(|(index, c)| {
                        let p = pca.project(c);
                        MapPoint {
                            x: p.first().copied().unwrap_or(0.0),
                            y: p.get(1).copied().unwrap_or(0.0),
                            label: data.test.labels[index],
                            index,
                        }
                    })
                    .collect(),
            },
        };
        let classifier = Fitted::Linear(classifier(
            &run,
            &train_codes,
            &data.train.labels,
            classes.len(),
        )?);
        let mut scores = anomaly::scores(&run, &data.test);
        scores.sort_by(f64::total_cmp);
        Ok(RunState {
            name,
            run,
            classes,
            data,
            test_codes,
            train_codes,
            pca,
            map,
            classifier,
            scores,
        })
    }

    /// `pixels` (784 values in [0, 1]) on the model's scale.
    fn to_model(&self, pixels: &[f32]) -> Vec<f32> {
        let (lo, hi) = self.run.scale().range();
        pixels.iter().map(|&p| lo + p * (hi - lo)).collect()
    }

    /// Model outputs mapped to [0, 1].
    fn to_unit(&self, values: &[f32]) -> Vec<f32> {
        values
            .iter()
            .map(|&v| to_unit(v, self.run.scale()))
            .collect()
    }

    /// The reconstruction of `pixels` (in [0, 1]), in [0, 1].
    pub fn reconstruct(&self, pixels: &[f32]) -> Vec<f32> {
        self.to_unit(&reconstruct_values(&self.run, &self.to_model(pixels)))
    }

    /// The code of `pixels`.
    pub fn encode(&self, pixels: &[f32]) -> Vec<f32> {
        let x = crate::data::dataset::to_tensor(self.to_model(pixels), 1, &self.run.device);
        self.run
            .model
            .encoder
            .forward(x)
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap_or_default()
    }

    /// The image (in [0, 1]) a code decodes to.
    pub fn decode(&self, code: &[f32]) -> Vec<f32> {
        let out = codes::decode(&self.run, &[code.to_vec()]);
        self.to_unit(out.first().map(Vec::as_slice).unwrap_or(&[]))
    }

    /// Class probabilities of a code.
    pub fn probabilities(&self, code: &[f32]) -> Vec<f64> {
        self.classifier
            .probabilities(&[code.to_vec()])
            .and_then(|mut p| p.pop())
            .unwrap_or_default()
    }

    /// The share of test images whose reconstruction error is below `mse`, in percent.
    pub fn percentile(&self, mse: f64) -> f64 {
        let below = self.scores.partition_point(|&s| s < mse);
        100.0 * below as f64 / self.scores.len().max(1) as f64
    }

    /// The `k` training images whose codes are nearest `code` (Euclidean): (index, distance).
    pub fn neighbours(&self, code: &[f32], k: usize) -> Vec<(usize, f32)> {
        let mut best: Vec<(usize, f32)> = Vec::with_capacity(k + 1);
        for (i, c) in self.train_codes.iter().enumerate() {
            let d: f32 = c.iter().zip(code).map(|(a, b)| (a - b) * (a - b)).sum();
            if best.len() < k || d < best[best.len() - 1].1 {
                let at = best.partition_point(|&(_, e)| e <= d);
                best.insert(at, (i, d));
                best.truncate(k);
            }
        }
        best.into_iter().map(|(i, d)| (i, d.sqrt())).collect()
    }

    /// Image `i` of the training (`test` false) or test set, in [0, 1].
    pub fn image(&self, test: bool, i: usize) -> Option<(Vec<f32>, u8)> {
        let split = if test {
            &self.data.test
        } else {
            &self.data.train
        };
        (i < split.len()).then(|| {
            let px = split.image(i).iter().map(|&p| p as f32 / 255.0).collect();
            (px, split.labels[i])
        })
    }
}
