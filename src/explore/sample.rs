//! Sampling new digits: fit a Gaussian (mean, full covariance) to the training codes, draw
//! codes from it (seeded) and decode them.

use std::path::{Path, PathBuf};

use nalgebra::{DMatrix, DVector};
use rand_distr::{Distribution, StandardNormal};
use serde::Serialize;

use super::codes::{decode, encode_all};
use super::judge::Judge;
use crate::data::batch::rng;
use crate::data::Split;
use crate::error::{Error, Result};
use crate::eval::to_unit;
use crate::fsutil::write_json;
use crate::run::Run;
use crate::viz::grid::{image_grid, GridRow, GridStyle};

/// A Gaussian over codes.
#[derive(Debug, Clone)]
pub struct CodeGaussian {
    /// Mean code.
    pub mean: DVector<f64>,
    /// Lower Cholesky factor of the covariance.
    pub chol: DMatrix<f64>,
}

/// Fits mean and covariance (maximum likelihood) to `codes`, with a small ridge so the
/// Cholesky factorisation exists even for dead (constant) code units.
pub fn fit(codes: &[Vec<f32>]) -> Result<CodeGaussian> {
    let n = codes.len();
    let d = codes.first().map(Vec::len).unwrap_or(0);
    if n < 2 || d == 0 {
        return Err(Error::Data(
            "need at least two codes to fit a Gaussian".into(),
        ));
    }
    let mut mean = DVector::<f64>::zeros(d);
    for c in codes {
        for (m, &v) in mean.iter_mut().zip(c) {
            *m += v as f64;
        }
    }
    mean /= n as f64;
    let mut cov = DMatrix::<f64>::zeros(d, d);
    for c in codes {
        let x = DVector::from_iterator(d, c.iter().map(|&v| v as f64)) - &mean;
        cov.ger(1.0, &x, &x, 1.0);
    }
    cov /= n as f64;
    let ridge = 1e-6 * (cov.trace() / d as f64).max(1e-12);
    for i in 0..d {
        cov[(i, i)] += ridge;
    }
    let chol = cov
        .cholesky()
        .ok_or_else(|| Error::Data("code covariance is not positive definite".into()))?
        .l();
    Ok(CodeGaussian { mean, chol })
}

impl CodeGaussian {
    /// Draws `count` codes with seed `seed`.
    pub fn sample(&self, count: usize, seed: u64) -> Vec<Vec<f32>> {
        let d = self.mean.len();
        let mut r = rng(seed, 7);
        (0..count)
            .map(|_| {
                let e = DVector::from_iterator(d, (0..d).map(|_| StandardNormal.sample(&mut r)));
                let z = &self.mean + &self.chol * e;
                z.iter().map(|&v| v as f32).collect()
            })
            .collect()
    }
}

/// What `sample` writes to `samples.json`.
#[derive(Debug, Clone, Serialize)]
pub struct SampleReport {
    /// Images drawn.
    pub count: usize,
    /// Seed.
    pub seed: u64,
    /// Training codes the Gaussian was fitted to (0 when sampling a VAE's prior).
    pub fitted_on: usize,
    /// Whether the codes came from the prior N(0, I) (VAE).
    pub prior: bool,
    /// Mean of the fitted Gaussian.
    pub mean: Vec<f64>,
    /// Standard deviation of each code unit.
    pub std: Vec<f64>,
    /// With a judge: its run folder, and each sample's class and probability.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judged: Option<Judged>,
}

/// How another run's classifier labels the samples.
#[derive(Debug, Clone, Serialize)]
pub struct Judged {
    /// The judge run.
    pub by: PathBuf,
    /// The classifier on its codes.
    pub classifier: crate::latent::classifier::ClassifierKind,
    /// Class of each sample.
    pub classes: Vec<String>,
    /// Its probability.
    pub confidence: Vec<f64>,
    /// Mean probability.
    pub mean_confidence: f64,
    /// Share of samples with probability at least 0.9.
    pub share_at_least_0_9: f64,
    /// For comparison: the mean probability on real test images (the first 1,000), which
    /// neither the judge's encoder nor its classifier was fitted to.
    pub real_mean_confidence: f64,
    /// Share of those real images with probability at least 0.9.
    pub real_share_at_least_0_9: f64,
    /// Share of those real images that the judge labels correctly.
    pub real_accuracy: f64,
}

/// Mean probability of a judge's verdicts, and the share at 0.9 or more.
fn confidence_summary(verdicts: &[(u8, f64)]) -> (f64, f64) {
    let n = verdicts.len().max(1) as f64;
    (
        verdicts.iter().map(|(_, p)| p).sum::<f64>() / n,
        verdicts.iter().filter(|(_, p)| *p >= 0.9).count() as f64 / n,
    )
}

/// Checks a sample count: 1 to 1024 (a picture of at most 32×32 digits).
pub fn check_count(count: usize) -> Result<()> {
    if count == 0 || count > 1024 {
        return Err(Error::config(
            "count",
            format!("{count} is not in 1..=1024"),
        ));
    }
    Ok(())
}

/// Runs `sample`: `samples.png` (a square-ish grid) and `samples.json` in `out`.
pub fn sample(
    run: &Run,
    train: &Split,
    count: usize,
    seed: u64,
    judge: Option<&Judge>,
    out: &Path,
) -> Result<(SampleReport, [PathBuf; 2])> {
    check_count(count)?;
    let codes = training_codes(run, train)?;
    sample_codes(run, &codes, count, seed, judge, out)
}

/// The codes [`sample`] fits its Gaussian to: every training code (none for a VAE, which
/// samples its prior).
pub fn training_codes(run: &Run, train: &Split) -> Result<Vec<Vec<f32>>> {
    if run.config.model.is_variational() {
        Ok(Vec::new())
    } else {
        encode_all(run, train)
    }
}

/// [`sample`] with the training codes already computed ([`training_codes`], or every
/// training code).
pub fn sample_codes(
    run: &Run,
    codes: &[Vec<f32>],
    count: usize,
    seed: u64,
    judge: Option<&Judge>,
    out: &Path,
) -> Result<(SampleReport, [PathBuf; 2])> {
    check_count(count)?;
    // A VAE samples its prior N(0, I); other models a Gaussian fitted to their training codes.
    let prior = run.config.model.is_variational();
    let g = if prior {
        let d = run.config.model.latent_dim;
        CodeGaussian {
            mean: DVector::zeros(d),
            chol: DMatrix::identity(d, d),
        }
    } else {
        fit(codes)?
    };
    let images = decode(run, &g.sample(count, seed));
    let scale = run.scale();
    let unit: Vec<Vec<f32>> = images
        .iter()
        .map(|im| im.iter().map(|&p| to_unit(p, scale)).collect())
        .collect();
    let verdicts = judge.map(|j| (j, j.judge(&unit)));
    let cols = (count as f64).sqrt().ceil() as usize;
    let rows: Vec<GridRow> = unit
        .chunks(cols)
        .enumerate()
        .map(|(ri, chunk)| GridRow {
            label: String::new(),
            images: chunk.to_vec(),
            captions: match &verdicts {
                Some((j, v)) => v[ri * cols..(ri * cols + chunk.len())]
                    .iter()
                    .map(|(c, p)| format!("{} {p:.2}", j.classes[*c as usize]))
                    .collect(),
                None => vec![],
            },
        })
        .collect();
    let judged = verdicts.map(|(j, v)| {
        let (mean_confidence, share_at_least_0_9) = confidence_summary(&v);
        let rv = j.judge(&j.real);
        let rn = rv.len().max(1) as f64;
        let (real_mean_confidence, real_share_at_least_0_9) = confidence_summary(&rv);
        let real_accuracy = rv
            .iter()
            .zip(&j.real_labels)
            .filter(|((c, _), l)| c == *l)
            .count() as f64
            / rn;
        Judged {
            by: j.dir().to_path_buf(),
            classifier: j.kind,
            classes: v
                .iter()
                .map(|(c, _)| j.classes[*c as usize].clone())
                .collect(),
            confidence: v.iter().map(|(_, p)| *p).collect(),
            mean_confidence,
            share_at_least_0_9,
            real_mean_confidence,
            real_share_at_least_0_9,
            real_accuracy,
        }
    });
    let png = out.join("samples.png");
    let title = if prior {
        format!("{count} samples from the prior N(0, I)")
    } else {
        format!(
            "{count} samples from a Gaussian fitted to {} training codes",
            codes.len()
        )
    };
    image_grid(
        &png,
        &title,
        &rows,
        GridStyle {
            label_width: 10,
            gap: 2,
            ..GridStyle::default()
        },
    )?;
    let cov_diag: Vec<f64> = (0..g.mean.len()).map(|i| g.chol.row(i).norm()).collect();
    let report = SampleReport {
        count,
        seed,
        fitted_on: codes.len(),
        prior,
        mean: g.mean.iter().copied().collect(),
        std: cov_diag,
        judged,
    };
    let json = out.join("samples.json");
    write_json(&json, &report)?;
    Ok((report, [json, png]))
}
