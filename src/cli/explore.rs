//! `denoise`, `interpolate`, `sample`, `anomaly` and `sweep`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use mnist_ae::data::Split;
use mnist_ae::explore::{anomaly, denoise, interpolate, sample, sweep};
use mnist_ae::run::{OutDir, Run};

use super::choices::{parse_seed, ClassifierArg, DeviceArg};
use super::DataArgs;

/// What every command on a run takes.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The run folder (written by `mnist-ae train`).
    pub run: PathBuf,
    /// Compute device.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceArg,
    #[command(flatten)]
    pub data: DataArgs,
}

/// What every command that writes pictures and results of a run takes.
#[derive(Debug, Args)]
pub struct RunOutArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Where to write outputs [default: the run folder].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

impl RunOutArgs {
    /// Opens the run, takes the output folder (locked for `command`, before any slow work,
    /// so that a second writer is turned away at once), and loads the data.
    pub fn open(&self, command: &str) -> Result<(Run, mnist_ae::data::Dataset, OutDir)> {
        let run = self.run.open_run()?;
        let out = run.out_dir(self.out.as_deref(), command)?;
        let data = run.data(
            self.run.data.data_dir.as_deref(),
            !self.run.data.no_download,
        )?;
        Ok((run, data, out))
    }

    /// Like [`RunOutArgs::open`] for a command that reads only the test images (only their
    /// files are read, or downloaded).
    pub fn open_test(&self, command: &str) -> Result<(Run, Split, OutDir)> {
        let run = self.run.open_run()?;
        let out = run.out_dir(self.out.as_deref(), command)?;
        let d = &self.run.data;
        let test = run.test_data(d.data_dir.as_deref(), !d.no_download)?;
        Ok((run, test, out))
    }
}

impl RunArgs {
    fn open_run(&self) -> Result<Run> {
        let device = self.device.device()?;
        Run::open(&self.run, &device).with_context(|| format!("opening run {}", self.run.display()))
    }

    /// Opens the run and loads its test images.
    pub fn open_test(&self) -> Result<(Run, Split)> {
        let run = self.open_run()?;
        let test = run.test_data(self.data.data_dir.as_deref(), !self.data.no_download)?;
        Ok((run, test))
    }
}

fn wrote(files: &[PathBuf]) {
    for f in files {
        mnist_ae::outln!("wrote {}", f.display());
    }
}

/// Flags of `denoise`.
#[derive(Debug, Args)]
pub struct DenoiseArgs {
    #[command(flatten)]
    run: RunOutArgs,
    /// Std of the Gaussian noise, in [0,1] pixel units.
    #[arg(long, default_value_t = 0.2)]
    noise_std: f64,
    /// Seed of the noise.
    #[arg(long, default_value = "0", value_parser = parse_seed)]
    seed: u64,
    /// Test images to show, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0,1,2,3,4,5,6,7,8,9")]
    indices: Vec<usize>,
}

pub fn run_denoise(a: DenoiseArgs) -> Result<()> {
    let (run, test, out) = a.run.open_test("denoise")?;
    let (r, files) = denoise::denoise(&run, &test, a.noise_std, a.seed, &a.indices, &out)?;
    mnist_ae::outln!(
        "noise σ={}: noisy PSNR {:.2} dB SSIM {:.4} → denoised PSNR {:.2} dB SSIM {:.4} (MSE {:.6})",
        r.noise_std, r.noisy.psnr_db, r.noisy.ssim, r.denoised.psnr_db, r.denoised.ssim, r.denoised.mse
    );
    wrote(&files);
    Ok(())
}

/// Flags of `interpolate`.
#[derive(Debug, Args)]
pub struct InterpolateArgs {
    #[command(flatten)]
    run: RunOutArgs,
    /// Test image to start from.
    #[arg(long, default_value_t = 0)]
    from: usize,
    /// Test image to end at.
    #[arg(long, default_value_t = 1)]
    to: usize,
    /// Decoded steps, endpoints included: 2 to 64.
    #[arg(long, default_value_t = 8)]
    steps: usize,
}

pub fn run_interpolate(a: InterpolateArgs) -> Result<()> {
    let (run, test, out) = a.run.open_test("interpolate")?;
    let (r, files) = interpolate::interpolate(&run, &test, a.from, a.to, a.steps, &out)?;
    mnist_ae::outln!(
        "interpolated #{} ({}) → #{} ({}) in {} steps; code distance {:.3}",
        r.from.0,
        r.from.1,
        r.to.0,
        r.to.1,
        r.t.len(),
        r.code_distance
    );
    wrote(&files);
    Ok(())
}

/// Flags of `sample`.
#[derive(Debug, Args)]
pub struct SampleArgs {
    #[command(flatten)]
    run: RunOutArgs,
    /// How many digits to draw: 1 to 1024.
    #[arg(long, default_value_t = 64)]
    count: usize,
    /// Seed of the draws.
    #[arg(long, default_value = "0", value_parser = parse_seed)]
    seed: u64,
    /// Label each sample with this other run's encoder and a classifier fitted to its
    /// training codes, with the probability (how digit-like the samples are).
    #[arg(long, value_name = "RUN")]
    judge: Option<PathBuf>,
    /// The judge's classifier (on conv64 codes: mlp 98% accurate, logistic 94%).
    #[arg(long, value_enum, default_value = "mlp")]
    judge_classifier: ClassifierArg,
}

pub fn run_sample(a: SampleArgs) -> Result<()> {
    sample::check_count(a.count)?;
    let kind = a.judge_classifier.kind();
    let (run, data, out) = a.run.open("sample")?;
    let judge = match &a.judge {
        Some(dir) => {
            let jrun = Run::open(dir, &run.device)
                .with_context(|| format!("opening judge run {}", dir.display()))?;
            mnist_ae::explore::judge::check_judge(&jrun, &run)?;
            let d = &a.run.run.data;
            let jdata = jrun.data(d.data_dir.as_deref(), !d.no_download)?;
            Some(mnist_ae::explore::judge::Judge::new(jrun, &jdata, kind)?)
        }
        None => None,
    };
    let (r, files) = sample::sample(&run, &data.train, a.count, a.seed, judge.as_ref(), &out)?;
    if let Some(j) = &r.judged {
        mnist_ae::outln!(
            "judged by {} ({}): mean probability {:.3}, {:.1}% of samples at 0.9 or more \
             (1,000 real test images: mean {:.3}, {:.1}% at 0.9 or more, {:.1}% labelled correctly)",
            j.by.display(),
            j.classifier.name(),
            j.mean_confidence,
            100.0 * j.share_at_least_0_9,
            j.real_mean_confidence,
            100.0 * j.real_share_at_least_0_9,
            100.0 * j.real_accuracy
        );
    }
    if r.prior {
        mnist_ae::outln!("drew {} samples from the prior N(0, I)", r.count);
    } else {
        mnist_ae::outln!(
            "drew {} samples from a Gaussian fitted to {} training codes",
            r.count,
            r.fitted_on
        );
    }
    wrote(&files);
    Ok(())
}

/// Flags of `anomaly`.
#[derive(Debug, Args)]
pub struct AnomalyArgs {
    #[command(flatten)]
    run: RunOutArgs,
    /// How many of the worst images to show: 1 to 100.
    #[arg(long, default_value_t = 16)]
    top: usize,
}

pub fn run_anomaly(a: AnomalyArgs) -> Result<()> {
    let (run, test, out) = a.run.open_test("anomaly")?;
    let (r, files) = anomaly::anomaly(&run, &test, a.top, &out)?;
    mnist_ae::outln!(
        "reconstruction error over {} test images: mean {:.6}, std {:.6}; {} above mean+3std ({:.6}); worst #{} (label {}) {:.6}",
        r.images, r.mean, r.std, r.flagged, r.threshold, r.worst[0].0, r.worst[0].1, r.worst[0].2
    );
    wrote(&files);
    Ok(())
}

/// Flags of `sweep`.
#[derive(Debug, Args)]
pub struct SweepArgs {
    #[command(flatten)]
    model: super::model_args::ModelArgs,
    /// Code sizes, comma-separated, each 1 to 4096.
    #[arg(long, value_delimiter = ',', default_value = "2,4,8,16,32,64")]
    latent_dims: Vec<usize>,
    /// Training settings of every run.
    #[command(flatten)]
    train: super::train::TrainFlags,
    /// The sweep's folder, with one run per code size in it [default: runs/sweep-<model>].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

pub fn run_sweep(a: SweepArgs) -> Result<()> {
    let mut base = super::train::config_from_flags(a.model.config(None)?, &a.train)?;
    base.pin_data(a.train.data_dir_flag());
    let data_dir = base.data_dir_for(a.train.data_dir_flag());
    let out = a
        .out
        .unwrap_or_else(|| Path::new("runs").join(format!("sweep-{}", base.model.name())));
    let rows = sweep::sweep(&sweep::SweepOptions {
        base,
        latent_dims: a.latent_dims,
        out: out.clone(),
        data_dir,
        allow_download: a.train.allow_download(),
        device: a.train.device().device()?,
        quiet: a.train.is_quiet(),
    })?;
    mnist_ae::outln!("latent_dim  test_mse  psnr_clean  ssim_clean  psnr_denoised(σ0.2)");
    for r in rows {
        mnist_ae::outln!(
            "{:>10}  {:.6}  {:>10.2}  {:>10.4}  {:>19.2}",
            r.latent_dim,
            r.test_mse,
            r.psnr_clean,
            r.ssim_clean,
            r.psnr_denoised
        );
    }
    wrote(&[
        out.join("sweep.md"),
        out.join("sweep.csv"),
        out.join("sweep.json"),
        out.join("sweep.png"),
    ]);
    Ok(())
}
