//! `mnist-ae train`: flags → `TrainConfig` → `mnist_ae::train::train`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use mnist_ae::config::{Loss, Scheduler, TrainConfig};
use mnist_ae::model::Preset;
use mnist_ae::train::{self, run::read_config, TrainOptions};

use super::DataArgs;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LossArg {
    Mse,
    Bce,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SchedulerArg {
    None,
    Plateau,
    Cosine,
}

/// Flags of `train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Model preset: conv64, conv7, linear3, mlp, cae32, vae (see `mnist-ae models`).
    #[arg(long, default_value = "conv64")]
    model: String,
    /// Code size [default: the preset's: conv64 64, conv7 64, linear3 3, mlp 32, cae32 32, vae 16].
    #[arg(long)]
    latent_dim: Option<usize>,
    /// Epochs [default: the preset's: 10, cae32 20].
    #[arg(long)]
    epochs: Option<usize>,
    /// Batch size [default: the preset's: conv64 32, conv7/linear3/cae32 64, vae 128, mlp 256].
    #[arg(long)]
    batch_size: Option<usize>,
    /// Dataset: mnist, fashion-mnist, kmnist, or a folder holding the four IDX files
    /// (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
    /// t10k-labels-idx1-ubyte; raw or .gz).
    #[arg(long, default_value = "mnist")]
    dataset: String,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Adam weight decay (L2) [default: the preset's: 1e-5 for conv7 and linear3, else 0].
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Reconstruction loss: mse, or bce (binary cross-entropy on logits) [default: mse; bce for vae].
    #[arg(long, value_enum)]
    loss: Option<LossArg>,
    /// Weight of the KL term (vae only; 1 = the ELBO, other values a β-VAE).
    #[arg(long, default_value_t = 1.0)]
    beta: f64,
    /// Learning-rate schedule: none, plateau (ReduceLROnPlateau on validation loss), or cosine
    /// (cosine annealing from --lr to --min-lr over the epochs, stepped per epoch).
    #[arg(long, value_enum, default_value = "none")]
    scheduler: SchedulerArg,
    /// Plateau: multiply the lr by this factor.
    #[arg(long, default_value_t = 0.5)]
    plateau_factor: f64,
    /// Plateau: epochs without improvement before reducing.
    #[arg(long, default_value_t = 2)]
    plateau_patience: usize,
    /// Plateau: smallest lr; cosine: the lr of the last epoch's end.
    #[arg(long, default_value_t = 1e-6)]
    min_lr: f64,
    /// Seed for weights, validation split, shuffling and noise.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Denoising training: std of Gaussian noise added to the input (pixels in [0,1]); 0 = off.
    #[arg(long, default_value_t = 0.0)]
    noise_std: f64,
    /// Fraction of the training images held out for validation.
    #[arg(long, default_value_t = 0.1)]
    valid_fraction: f64,
    /// Cut each batch into N shards trained in parallel on the CPU's cores, gradients combined
    /// (the same step up to float rounding; 1 = off).
    #[arg(long, default_value_t = 2)]
    shards: usize,
    /// Use only the first N training images (quick runs).
    #[arg(long)]
    limit_train: Option<usize>,
    /// Run folder to write [default: runs/<model>].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Continue the run in this folder (its config is used; --epochs may raise the total).
    #[arg(long, value_name = "RUN", conflicts_with = "out")]
    resume: Option<PathBuf>,
    /// Stop after this many epochs in this call; the run stays resumable.
    #[arg(long, hide = true)]
    stop_after: Option<usize>,
    /// Compute device: cpu, wgpu, cuda (GPU ones need the matching cargo feature).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// After training, run every analysis (eval, denoise, interpolate, sample, anomaly,
    /// classify, t-SNE) and write report.html into the run folder.
    #[arg(long)]
    report: bool,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    data: DataArgs,
}

/// The `TrainConfig` the flags describe.
pub fn config_from_flags(a: &TrainArgs) -> Result<TrainConfig> {
    let preset = Preset::parse(&a.model)?;
    let mut c = TrainConfig::for_preset(preset);
    if let Some(l) = a.latent_dim {
        c.model.latent_dim = l;
    }
    if let Some(e) = a.epochs {
        c.epochs = e;
    }
    if let Some(b) = a.batch_size {
        c.batch_size = b;
    }
    if let Some(w) = a.weight_decay {
        c.weight_decay = w;
    }
    c.lr = a.lr;
    c.dataset = a.dataset.clone();
    if let Some(l) = a.loss {
        c.loss = match l {
            LossArg::Mse => Loss::Mse,
            LossArg::Bce => Loss::Bce,
        };
    }
    c.beta = a.beta;
    c.shards = a.shards;
    c.scheduler = match a.scheduler {
        SchedulerArg::None => Scheduler::None,
        SchedulerArg::Plateau => Scheduler::Plateau {
            factor: a.plateau_factor,
            patience: a.plateau_patience,
            threshold: 1e-4,
            min_lr: a.min_lr,
        },
        SchedulerArg::Cosine => Scheduler::Cosine { min_lr: a.min_lr },
    };
    c.seed = a.seed;
    c.noise_std = a.noise_std;
    c.valid_fraction = a.valid_fraction;
    c.limit_train = a.limit_train;
    c.validate()?;
    Ok(c)
}

impl TrainArgs {
    /// `--out`, if given.
    pub fn out_dir(&self) -> Option<PathBuf> {
        self.out.clone()
    }
    /// The data folder of `dataset`.
    pub fn data_dir(&self, dataset: &str) -> PathBuf {
        self.data.dir_for(dataset)
    }
    /// Whether downloads are allowed.
    pub fn allow_download(&self) -> bool {
        !self.data.no_download
    }
    /// `--device`.
    pub fn device_name(&self) -> &str {
        &self.device
    }
    /// `--quiet`.
    pub fn is_quiet(&self) -> bool {
        self.quiet
    }
}

pub fn run(a: TrainArgs) -> Result<()> {
    let device = super::device(&a.device)?;
    let (config, run_dir, resume) = match &a.resume {
        Some(dir) => {
            let mut c = read_config(dir).with_context(|| format!("resuming {}", dir.display()))?;
            if let Some(e) = a.epochs {
                c.epochs = e;
            }
            (c, dir.clone(), true)
        }
        None => {
            let c = config_from_flags(&a)?;
            let dir = a
                .out
                .clone()
                .unwrap_or_else(|| PathBuf::from("runs").join(c.model.preset.name()));
            (c, dir, false)
        }
    };
    if !a.quiet {
        eprintln!("config: {}", serde_json::to_string(&config)?);
        eprintln!("run folder: {}", run_dir.display());
    }
    // Ctrl-C stops after the current step with a checkpoint; a second Ctrl-C kills as usual.
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!(
            "\ninterrupt: saving a checkpoint after this step (Ctrl-C again to quit at once)"
        );
    });
    let data_dir = a.data.dir_for(&config.dataset);
    let out = train::train(&TrainOptions {
        config,
        run_dir: run_dir.clone(),
        data_dir,
        allow_download: !a.data.no_download,
        device,
        resume,
        max_epochs_this_call: a.stop_after,
        quiet: a.quiet,
        stop: Some(stop),
    })
    .with_context(|| format!("training into {}", run_dir.display()))?;
    if let Some(batches) = out.interrupted {
        eprintln!(
            "interrupted in epoch {} after {batches} batches; checkpoint saved. HINT: continue with `mnist-ae train --resume {}`",
            out.epochs_done + 1,
            run_dir.display()
        );
        std::process::exit(130);
    }
    if let Some(last) = out.metrics.last() {
        println!(
            "trained {} epochs: train loss {:.6}, validation loss {}; run folder {}",
            out.epochs_done,
            last.train_loss,
            last.valid_loss
                .map(|v| format!("{v:.6}"))
                .unwrap_or_else(|| "-".into()),
            run_dir.display()
        );
    }
    if a.report {
        let path = super::report::analyze_run(&run_dir, &a.device, &a.data, 10_000, a.quiet)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
