//! Denoising: Gaussian noise on the test images (seeded, clipped to the data range), then
//! reconstruction; scores of noisy vs clean and denoised vs clean.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::data::batch::{add_noise, rng};
use crate::data::{Split, SIDE};
use crate::error::{Error, Result};
use crate::eval::{check_indices, reconstruct_values, unit_images, ScoreSum, Scores, EVAL_BATCH};
use crate::fsutil::write_json;
use crate::run::Run;
use crate::viz::grid::{image_grid, GridRow, GridStyle};

/// What `denoise` writes to `denoise.json`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct DenoiseReport {
    /// Noise std in [0,1] pixel units.
    pub noise_std: f64,
    /// Seed of the noise.
    pub seed: u64,
    /// Noisy input vs clean.
    pub noisy: Scores,
    /// Reconstruction of the noisy input vs clean.
    pub denoised: Scores,
    /// Indices in the picture.
    pub indices: Vec<usize>,
}

/// Noisy copies (on the run's scale) of the images at `indices`; image `i`'s noise depends
/// only on (seed, i), so any subset sees the same noise.
pub fn noisy_images(run: &Run, split: &Split, indices: &[usize], std: f64, seed: u64) -> Vec<f32> {
    let scale = run.scale();
    let mut out = Vec::with_capacity(indices.len() * SIDE * SIDE);
    for &i in indices {
        let mut v = split.scaled(&[i], scale);
        add_noise(
            &mut v,
            std as f32,
            scale,
            &mut rng(seed, 1 << 40 | i as u64),
        );
        out.extend(v);
    }
    out
}

/// Scores noisy and denoised test images over the whole split.
pub fn denoise_scores(run: &Run, split: &Split, std: f64, seed: u64) -> Result<(Scores, Scores)> {
    let scale = run.scale();
    let (mut noisy_sum, mut den_sum) = (ScoreSum::default(), ScoreSum::default());
    let idx: Vec<usize> = (0..split.len()).collect();
    for chunk in idx.chunks(EVAL_BATCH) {
        let clean = split.scaled(chunk, scale);
        let noisy = noisy_images(run, split, chunk, std, seed);
        let den = reconstruct_values(run, &noisy);
        noisy_sum.add_all(&clean, &noisy, scale);
        den_sum.add_all(&clean, &den, scale);
    }
    Ok((noisy_sum.finish_checked()?, den_sum.finish_checked()?))
}

/// Runs `denoise`: `denoise.json` and `denoise.png` (clean / noisy / denoised) in `out`.
pub fn denoise(
    run: &Run,
    test: &Split,
    std: f64,
    seed: u64,
    indices: &[usize],
    out: &Path,
) -> Result<(DenoiseReport, [PathBuf; 2])> {
    if !(std.is_finite() && std >= 0.0) {
        return Err(Error::config(
            "noise-std",
            format!("{std} must be a finite number >= 0"),
        ));
    }
    check_indices(indices, test, "indices")?;
    let (noisy, denoised) = denoise_scores(run, test, std, seed)?;
    let report = DenoiseReport {
        noise_std: std,
        seed,
        noisy,
        denoised,
        indices: indices.to_vec(),
    };
    let json = out.join("denoise.json");
    write_json(&json, &report)?;
    let scale = run.scale();
    let clean = test.scaled(indices, scale);
    let noisy = noisy_images(run, test, indices, std, seed);
    let den = reconstruct_values(run, &noisy);
    let unit = |v: &[f32]| unit_images(v, scale);
    let rows = [
        GridRow {
            label: "clean".into(),
            images: unit(&clean),
            captions: vec![],
        },
        GridRow {
            label: format!("noisy σ={std}"),
            images: unit(&noisy),
            captions: vec![],
        },
        GridRow {
            label: "denoised".into(),
            images: unit(&den),
            captions: vec![],
        },
    ];
    let png = out.join("denoise.png");
    let title = format!(
        "Denoising, σ = {std}: PSNR {:.2} → {:.2} dB, SSIM {:.3} → {:.3}",
        report.noisy.psnr_db, report.denoised.psnr_db, report.noisy.ssim, report.denoised.ssim
    );
    image_grid(&png, &title, &rows, GridStyle::default())?;
    Ok((report, [json, png]))
}
