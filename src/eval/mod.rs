//! Evaluation of a trained run on the test set: mean MSE, BCE, PSNR and SSIM (per image, then
//! averaged), `eval.json`, and a grid of originals over reconstructions.

pub mod metrics;

use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use crate::data::dataset::to_tensor;
use crate::data::{Scale, Split, SIDE};
use crate::error::{Error, Result};
use crate::fsutil::write_json;
use crate::run::Run;
use crate::viz::grid::{image_grid, GridRow, GridStyle};

/// Images per forward pass when evaluating.
pub const EVAL_BATCH: usize = 1000;
/// The metrics file `eval` writes.
pub const EVAL_FILE: &str = "eval.json";
/// The picture `eval` writes.
pub const RECON_FILE: &str = "reconstructions.png";

/// Mean metrics over a set of images.
#[derive(Debug, Clone, Serialize, PartialEq, serde::Deserialize)]
pub struct Scores {
    /// Images scored.
    pub images: usize,
    /// Mean squared error on the model's data scale ([0,1], or [-1,1] for tanh models).
    pub mse: f64,
    /// Binary cross-entropy, on values mapped to [0,1].
    pub bce: f64,
    /// Mean per-image PSNR in dB (data range of the model's scale; identical images: 100 dB).
    pub psnr_db: f64,
    /// Mean per-image SSIM (Gaussian window 11, sigma 1.5).
    pub ssim: f64,
}

/// What `eval` writes to `eval.json`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct EvalReport {
    /// Preset name, or `custom`.
    pub model: String,
    /// Code size.
    pub latent_dim: usize,
    /// Epochs the weights were trained for.
    pub epoch: usize,
    /// Batches trained of the next epoch, for weights saved mid-epoch (an interrupted run).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub batch: usize,
    /// How far training got, in words ("epoch 3", or "epoch 3 + 120 batches of epoch 4
    /// (interrupted mid-epoch)").
    pub trained: String,
    /// Data scale the MSE and PSNR are on.
    pub scale: Scale,
    /// Test-set scores.
    pub test: Scores,
    /// VAE only: the evidence lower bound per test image in nats (Bernoulli likelihood, one
    /// seeded sample of z per image, KL weight 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elbo: Option<f64>,
    /// Seconds to reconstruct and score the test set.
    pub seconds: f64,
    /// Indices shown in the reconstructions picture.
    pub indices: Vec<usize>,
}

fn is_zero(v: &usize) -> bool {
    *v == 0
}

/// Maps a value on `scale` to [0, 1] for display and BCE.
pub fn to_unit(v: f32, scale: Scale) -> f32 {
    match scale {
        Scale::ZeroOne => v,
        Scale::MinusOneOne => (v + 1.0) / 2.0,
    }
}

/// Splits `n * 784` values on `scale` into images mapped to [0, 1], for pictures.
pub fn unit_images(values: &[f32], scale: Scale) -> Vec<Vec<f32>> {
    values
        .chunks(SIDE * SIDE)
        .map(|c| c.iter().map(|&p| to_unit(p, scale)).collect())
        .collect()
}

/// Accumulates per-image scores.
#[derive(Debug, Default, Clone)]
pub struct ScoreSum {
    n: usize,
    mse: f64,
    bce: f64,
    psnr: f64,
    ssim: f64,
}

impl ScoreSum {
    /// Adds one image pair (`reference`, `estimate`), both on `scale`.
    pub fn add(&mut self, reference: &[f32], estimate: &[f32], scale: Scale) {
        self.push(image_scores(reference, estimate, scale));
    }

    /// Adds every image pair of `references` and `estimates` (`n·784` values each, on
    /// `scale`): the same sums as [`add`](Self::add) image after image, with the images
    /// scored on all threads. Returns each image's `[MSE, BCE, PSNR, SSIM]`.
    pub fn add_all(
        &mut self,
        references: &[f32],
        estimates: &[f32],
        scale: Scale,
    ) -> Vec<[f64; 4]> {
        let px = SIDE * SIDE;
        let scores: Vec<[f64; 4]> = references
            .par_chunks(px)
            .zip(estimates.par_chunks(px))
            .map(|(a, b)| image_scores(a, b, scale))
            .collect();
        for &s in &scores {
            self.push(s);
        }
        scores
    }

    /// Adds one image's MSE, BCE, PSNR and SSIM.
    fn push(&mut self, [mse, bce, psnr, ssim]: [f64; 4]) {
        self.n += 1;
        self.mse += mse;
        self.bce += bce;
        self.psnr += psnr;
        self.ssim += ssim;
    }

    /// The means, or an error when any is not a finite number (the model's output was not):
    /// a NaN would otherwise show as a score.
    pub fn finish_checked(&self) -> Result<Scores> {
        let s = self.finish();
        if [s.mse, s.bce, s.psnr_db, s.ssim]
            .iter()
            .all(|v| v.is_finite())
        {
            Ok(s)
        } else {
            Err(Error::Data(format!(
                "the model's reconstructions are not finite numbers (MSE {}); its weights or \
                 inputs are broken, so no score is reported",
                s.mse
            )))
        }
    }

    /// The means.
    pub fn finish(&self) -> Scores {
        let n = self.n.max(1) as f64;
        Scores {
            images: self.n,
            mse: self.mse / n,
            bce: self.bce / n,
            psnr_db: self.psnr / n,
            ssim: self.ssim / n,
        }
    }
}

/// MSE, BCE, PSNR and SSIM of one image pair (`reference`, `estimate`), both on `scale`.
fn image_scores(reference: &[f32], estimate: &[f32], scale: Scale) -> [f64; 4] {
    let (lo, hi) = scale.range();
    let range = (hi - lo) as f64;
    let p: Vec<f32> = estimate
        .iter()
        .map(|&v| to_unit(v, scale).clamp(0.0, 1.0))
        .collect();
    let t: Vec<f32> = reference.iter().map(|&v| to_unit(v, scale)).collect();
    [
        metrics::mse(reference, estimate),
        metrics::bce(&p, &t),
        metrics::psnr(reference, estimate, range),
        metrics::ssim(reference, estimate, SIDE, SIDE, range),
    ]
}

/// Reconstructions (on the model's scale) of `inputs` (`n * 784` values on that scale).
pub fn reconstruct_values(run: &Run, inputs: &[f32]) -> Vec<f32> {
    let px = SIDE * SIDE;
    let mut out = Vec::with_capacity(inputs.len());
    for chunk in inputs.chunks(EVAL_BATCH * px) {
        let n = chunk.len() / px;
        let x = to_tensor(chunk.to_vec(), n, &run.device);
        let y = run.activation().apply(run.model.forward(x));
        out.extend(
            y.into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .unwrap_or_default(),
        );
    }
    out
}

/// Scores the reconstructions of every image of `split` (an error when they are not finite).
pub fn score_split(run: &Run, split: &Split) -> Result<Scores> {
    Ok(score_split_each(run, split)?.0)
}

/// [`score_split`] and each image's MSE, in order (what [`crate::explore::anomaly`] scores).
pub fn score_split_each(run: &Run, split: &Split) -> Result<(Scores, Vec<f64>)> {
    let scale = run.scale();
    let mut sum = ScoreSum::default();
    let mut each = Vec::with_capacity(split.len());
    let idx: Vec<usize> = (0..split.len()).collect();
    for chunk in idx.chunks(EVAL_BATCH) {
        let x = split.scaled(chunk, scale);
        let scores = sum.add_all(&x, &reconstruct_values(run, &x), scale);
        each.extend(scores.iter().map(|s| s[0]));
    }
    Ok((sum.finish_checked()?, each))
}

/// The ELBO per image of a variational run on `split`: a Bernoulli likelihood of the pixels,
/// so `None` for models that are not variational and for those with a tanh output, whose
/// pixels in [-1, 1] are no probabilities (the bound would be a meaningless number).
pub fn elbo(run: &Run, split: &Split) -> Option<f64> {
    use crate::config::Loss;
    use crate::model::Activation;
    use crate::train::loss::vae_loss;
    use crate::train::step::vae_eps;
    if !run.config.model.is_variational() || run.config.model.activation() != Activation::Sigmoid {
        return None;
    }
    let idx: Vec<usize> = (0..split.len()).collect();
    let mut sum = 0.0;
    for (bi, chunk) in idx.chunks(EVAL_BATCH).enumerate() {
        let x = split.batch(chunk, run.scale(), &run.device);
        let eps = vae_eps(
            run.config.seed ^ 0xE7A1,
            0,
            bi,
            chunk.len(),
            run.config.model.latent_dim,
            &run.device,
        );
        let (logits, mu, logvar) = run.model.forward_variational(x.clone(), eps)?;
        let (neg, _, _) = vae_loss(Loss::Bce, logits, x, mu, logvar, 1.0);
        sum -= neg.into_scalar::<f32>() as f64 * chunk.len() as f64;
    }
    Some(sum / split.len().max(1) as f64)
}

/// Most images in one picture (32 bands of 32; the scores always cover every image).
pub const MAX_PICTURED: usize = 1024;

/// Checks the number of images asked for in a picture (before any data is read).
pub fn check_pictured(count: usize, flag: &str) -> Result<()> {
    if count > MAX_PICTURED {
        return Err(Error::config(
            flag,
            format!(
                "{count} images asked for in the picture, at most {MAX_PICTURED} fit (the scores always cover the whole test set)"
            ),
        ));
    }
    Ok(())
}

/// Checks indices against a split's length and the size of a picture.
pub fn check_indices(indices: &[usize], split: &Split, flag: &str) -> Result<()> {
    check_pictured(indices.len(), flag)?;
    match indices.iter().find(|&&i| i >= split.len()) {
        Some(i) => Err(Error::config(
            flag,
            format!(
                "index {i} is beyond the test set ({} images, 0..={})",
                split.len(),
                split.len().saturating_sub(1)
            ),
        )),
        None if indices.is_empty() => Err(Error::config(flag, "no indices given")),
        None => Ok(()),
    }
}

/// Draws originals over reconstructions for `indices` of `split`.
pub fn reconstruction_grid(run: &Run, split: &Split, indices: &[usize], path: &Path) -> Result<()> {
    let scale = run.scale();
    let x = split.scaled(indices, scale);
    let y = reconstruct_values(run, &x);
    let unit = |v: &[f32]| unit_images(v, scale);
    let captions: Vec<String> = indices
        .iter()
        .map(|&i| format!("#{i} ({})", split.labels[i]))
        .collect();
    let rows = [
        GridRow {
            label: "original".into(),
            images: unit(&x),
            captions,
        },
        GridRow {
            label: "reconstructed".into(),
            images: unit(&y),
            captions: Vec::new(),
        },
    ];
    let title = format!(
        "{} (latent {}): test images and reconstructions",
        run.config.model.name(),
        run.config.model.latent_dim
    );
    image_grid(path, &title, &rows, GridStyle::default())
}

/// Runs the whole evaluation, writing `eval.json` and `reconstructions.png` into `out`.
pub fn evaluate(
    run: &Run,
    test: &Split,
    indices: &[usize],
    out: &Path,
) -> Result<(EvalReport, [PathBuf; 2])> {
    let (report, files, _) = evaluate_each(run, test, indices, out)?;
    Ok((report, files))
}

/// [`evaluate`], also returning each test image's MSE, in order.
pub fn evaluate_each(
    run: &Run,
    test: &Split,
    indices: &[usize],
    out: &Path,
) -> Result<(EvalReport, [PathBuf; 2], Vec<f64>)> {
    check_indices(indices, test, "indices")?;
    let t0 = Instant::now();
    let (scores, each) = score_split_each(run, test)?;
    let seconds = t0.elapsed().as_secs_f64();
    let elbo = elbo(run, test);
    if let Some(e) = elbo.filter(|e| !e.is_finite()) {
        return Err(Error::Data(format!(
            "the model's ELBO is {e}, not a finite number; its weights are broken"
        )));
    }
    let report = EvalReport {
        model: run.config.model.name().into(),
        latent_dim: run.config.model.latent_dim,
        epoch: run.info.epoch,
        batch: run.info.batch,
        trained: run.trained(),
        scale: run.scale(),
        test: scores,
        elbo,
        seconds,
        indices: indices.to_vec(),
    };
    let json = out.join(EVAL_FILE);
    write_json(&json, &report)?;
    let png = out.join(RECON_FILE);
    reconstruction_grid(run, test, indices, &png)?;
    Ok((report, [json, png], each))
}
