//! A sweep over code sizes: one run per size, then test reconstruction quality and denoising
//! quality at σ = 0.2: small codes denoise well but reconstruct poorly, big ones the reverse.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use serde::Serialize;

use super::denoise::denoise_scores;
use crate::config::TrainConfig;
use crate::error::{Error, Result};
use crate::eval::score_split;
use crate::fsutil::{write_atomic, write_json};
use crate::run::Run;
use crate::rundir::read_config;
use crate::rundir::{is_run, DirLock};
use crate::train::checkpoint::MODEL_FILE;
use crate::train::{train, TrainOptions};
use crate::viz::plot::{line_plot, Series};

/// Noise level of the denoising column.
pub const SWEEP_NOISE_STD: f64 = 0.2;
/// Seed of the denoising noise.
pub const SWEEP_NOISE_SEED: u64 = 0;

/// One row of the sweep table.
#[derive(Debug, Clone, Serialize)]
pub struct SweepRow {
    /// Code size.
    pub latent_dim: usize,
    /// Run folder.
    pub run: PathBuf,
    /// Test MSE of clean reconstructions.
    pub test_mse: f64,
    /// Test PSNR of clean reconstructions (dB).
    pub psnr_clean: f64,
    /// Test SSIM of clean reconstructions.
    pub ssim_clean: f64,
    /// Test PSNR of reconstructions of noisy inputs (σ = 0.2) against the clean images (dB).
    pub psnr_denoised: f64,
    /// Test SSIM of those.
    pub ssim_denoised: f64,
}

/// How to run a sweep.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// The config every run starts from; only `model.latent_dim` changes.
    pub base: TrainConfig,
    /// Code sizes.
    pub latent_dims: Vec<usize>,
    /// Folder of the sweep; runs go to `latent-<L>` inside it.
    pub out: PathBuf,
    /// Data folder.
    pub data_dir: PathBuf,
    /// Whether downloads are allowed.
    pub allow_download: bool,
    /// Compute device.
    pub device: Device,
    /// No progress output.
    pub quiet: bool,
}

/// Trains (or reuses) runs and writes `sweep.csv`, `sweep.md`, `sweep.json` and `sweep.png`
/// into the sweep folder. A run already in the folder is reused (or continued, if it was
/// interrupted) only when its whole config equals the requested one; any other difference is
/// refused before anything is trained, naming the run and the settings that differ.
pub fn sweep(opts: &SweepOptions) -> Result<Vec<SweepRow>> {
    if opts.latent_dims.is_empty() {
        return Err(Error::config("latent-dims", "no sizes given"));
    }
    if let Some(twice) = (opts.latent_dims.iter().enumerate())
        .find_map(|(i, l)| opts.latent_dims[..i].contains(l).then_some(l))
    {
        return Err(Error::config(
            "latent-dims",
            format!("{twice} is listed twice; each size is one run"),
        ));
    }
    let mut configs = Vec::new();
    for &l in &opts.latent_dims {
        let mut cfg = opts.base.clone();
        let in_l = |e: Error| Error::config("latent-dims", format!("latent_dim {l}: {e}"));
        cfg.model = cfg.model.with_latent(l).map_err(in_l)?;
        cfg.validate().map_err(in_l)?;
        configs.push((l, cfg));
    }
    let _held = DirLock::acquire(&opts.out, "sweep")?;
    let mut plan = Vec::new();
    for (l, cfg) in configs {
        let dir = opts.out.join(format!("latent-{l}"));
        let reuse = is_run(&dir) && {
            let mut old = read_config(&dir)?;
            // Runs written before data locations were recorded hold a folder dataset as typed.
            old.pin_data(None);
            let diff = old.differences(&cfg, &[]);
            if !diff.is_empty() {
                return Err(Error::config(
                    "out",
                    format!(
                        "{} holds a run made with other settings ({}); it is left as it is. \
                         HINT: give this sweep another --out, or delete that run to train it again",
                        dir.display(),
                        diff.join("; ")
                    ),
                ));
            }
            dir.join(MODEL_FILE).exists()
        };
        plan.push((l, cfg, dir, reuse));
    }
    let mut rows = Vec::new();
    for (l, cfg, dir, reuse) in plan {
        if !opts.quiet {
            crate::errln!(
                "sweep: latent_dim {l} → {}{}",
                dir.display(),
                if reuse {
                    " (same settings: reused, continued if unfinished)"
                } else {
                    ""
                }
            );
        }
        train(&TrainOptions {
            config: cfg,
            run_dir: dir.clone(),
            data_dir: opts.data_dir.clone(),
            allow_download: opts.allow_download,
            device: opts.device.clone(),
            resume: reuse,
            max_epochs_this_call: None,
            quiet: opts.quiet,
            stop: None,
        })?;
        let run = Run::open(&dir, &opts.device)?;
        let data = run.data(Some(&opts.data_dir), opts.allow_download)?;
        let clean = score_split(&run, &data.test)?;
        let (_, den) = denoise_scores(&run, &data.test, SWEEP_NOISE_STD, SWEEP_NOISE_SEED)?;
        rows.push(SweepRow {
            latent_dim: l,
            run: dir,
            test_mse: clean.mse,
            psnr_clean: clean.psnr_db,
            ssim_clean: clean.ssim,
            psnr_denoised: den.psnr_db,
            ssim_denoised: den.ssim,
        });
    }
    write_outputs(&opts.out, &opts.base, &rows)?;
    Ok(rows)
}

fn write_outputs(out: &Path, base: &TrainConfig, rows: &[SweepRow]) -> Result<()> {
    let mut csv = String::from(
        "latent_dim,test_mse,psnr_clean_db,ssim_clean,psnr_denoised_db,ssim_denoised\n",
    );
    let mut md = format!(
        "Sweep of `{}` over code sizes, {} epochs each; denoising at σ = {SWEEP_NOISE_STD}.\n\n\
         | latent_dim | test MSE | PSNR clean (dB) | SSIM clean | PSNR denoised (dB) | SSIM denoised |\n\
         | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        base.model.name(),
        base.epochs
    );
    for r in rows {
        csv.push_str(&format!(
            "{},{:.6},{:.4},{:.4},{:.4},{:.4}\n",
            r.latent_dim, r.test_mse, r.psnr_clean, r.ssim_clean, r.psnr_denoised, r.ssim_denoised
        ));
        md.push_str(&format!(
            "| {} | {:.5} | {:.2} | {:.4} | {:.2} | {:.4} |\n",
            r.latent_dim, r.test_mse, r.psnr_clean, r.ssim_clean, r.psnr_denoised, r.ssim_denoised
        ));
    }
    write_atomic(&out.join("sweep.csv"), csv.as_bytes())?;
    write_atomic(&out.join("sweep.md"), md.as_bytes())?;
    write_json(&out.join("sweep.json"), &rows)?;
    let pts = |f: fn(&SweepRow) -> f64| {
        rows.iter()
            .map(|r| (r.latent_dim as f64, f(r)))
            .collect::<Vec<_>>()
    };
    line_plot(
        &out.join("sweep.png"),
        "Reconstruction vs denoising by code size",
        "latent_dim",
        "PSNR (dB)",
        &[
            Series {
                label: "clean input",
                points: pts(|r| r.psnr_clean),
            },
            Series {
                label: "noisy input (σ 0.2)",
                points: pts(|r| r.psnr_denoised),
            },
        ],
        false,
    )
}
