//! `mnist-ae train`: flags → `TrainConfig` → `mnist_ae::train::train`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use mnist_ae::config::{Keep, Loss, Scheduler, TrainConfig};
use mnist_ae::model::ModelConfig;
use mnist_ae::rundir::read_config;
use mnist_ae::train::{self, TrainOptions};
use signal_hook::consts::SIGTERM;

mod resume_flags;

use super::choices::{parse_dataset, parse_seed, DeviceArg};
use super::model_args::{LatentArg, ModelArgs};
use super::DataArgs;
use resume_flags::resume_conflicts;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LossArg {
    /// Mean squared error
    Mse,
    /// Binary cross-entropy on the logits (data in [0,1])
    Bce,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SchedulerArg {
    /// A constant learning rate
    None,
    /// ReduceLROnPlateau on the validation loss
    Plateau,
    /// Cosine annealing from --lr to --min-lr over the epochs, stepped per epoch
    Cosine,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum KeepArg {
    /// The last epoch's weights (model.safetensors)
    Last,
    /// The weights of the epoch with the lowest validation loss (best.safetensors)
    Best,
}

/// The training settings shared by `train` and `sweep`.
#[derive(Debug, Args)]
pub struct TrainFlags {
    /// Epochs [default: the preset's: 10, cae32 20; 10 for your own model].
    #[arg(long)]
    epochs: Option<usize>,
    /// Batch size [default: the preset's: conv64 32, conv7/linear3/cae32 64, vae 128, mlp 256;
    /// 64 for your own model].
    #[arg(long)]
    batch_size: Option<usize>,
    /// Dataset: mnist, fashion-mnist, kmnist, or a folder holding the four IDX files
    /// (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
    /// t10k-labels-idx1-ubyte; raw or .gz).
    #[arg(long, default_value = "mnist", value_parser = parse_dataset)]
    dataset: String,
    /// Adam learning rate (above 0).
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Adam weight decay (L2) [default: the preset's: 1e-5 for conv7 and linear3, else 0].
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Reconstruction loss [default: mse; bce for a variational model].
    #[arg(long, value_enum)]
    loss: Option<LossArg>,
    /// Weight of the KL term (variational models only; 1 = the ELBO, other values a β-VAE).
    #[arg(long, default_value_t = 1.0)]
    beta: f64,
    /// Learning-rate schedule.
    #[arg(long, value_enum, default_value = "none")]
    scheduler: SchedulerArg,
    /// Plateau: multiply the lr by this factor, in (0, 1).
    #[arg(long, default_value_t = 0.5)]
    plateau_factor: f64,
    /// Plateau: epochs without improvement before reducing.
    #[arg(long, default_value_t = 2)]
    plateau_patience: usize,
    /// Plateau: smallest lr; cosine: the lr of the last epoch's end.
    #[arg(long, default_value_t = 1e-6)]
    min_lr: f64,
    /// Seed for weights, validation split, shuffling and noise (a negative one counts from
    /// 2^64, as in PyTorch's manual_seed).
    #[arg(long, default_value = "42", value_parser = parse_seed)]
    seed: u64,
    /// Denoising training: std of Gaussian noise added to the input (pixels in [0,1]); 0 = off.
    #[arg(long, default_value_t = 0.0)]
    noise_std: f64,
    /// Fraction of the training images held out for validation, in [0, 1).
    #[arg(long, default_value_t = 0.1)]
    valid_fraction: f64,
    /// Stop when the validation loss has not improved for this many epochs in a row [default:
    /// train every epoch].
    #[arg(long, value_name = "PATIENCE")]
    early_stop: Option<usize>,
    /// Which weights eval, the analyses and the report use; both are saved.
    #[arg(long, value_enum, default_value = "last")]
    keep: KeepArg,
    /// Cut each batch into N shards trained in parallel, gradients combined, batch norms
    /// normalising with the whole batch's statistics (the same step up to float rounding, and
    /// the same result whatever --threads is; 1 = off) [default on the CPU: 2, and for a
    /// model with batch norm one per 16 images of a batch; 1 on a GPU; dropout shards on the
    /// CPU only, batch norm on the CPU in models whose layers all run as its fused kernels].
    #[arg(long)]
    shards: Option<usize>,
    /// Use only the first N training images (quick runs).
    #[arg(long)]
    limit_train: Option<usize>,
    /// Compute device.
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceArg,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    data: DataArgs,
}

/// Flags of `train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    latent: LatentArg,
    #[command(flatten)]
    flags: TrainFlags,
    /// Run folder to write [default: runs/<model>].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Continue the run in this folder (its config is used; --epochs may raise the total).
    #[arg(long, value_name = "RUN", conflicts_with = "out")]
    resume: Option<PathBuf>,
    /// Stop after this many epochs in this call; the run stays resumable.
    #[arg(long, hide = true)]
    stop_after: Option<usize>,
    /// After training, run every analysis (eval, denoise, interpolate, sample, anomaly,
    /// classify, t-SNE) and write report.html into the run folder.
    #[arg(long)]
    report: bool,
}

/// The `TrainConfig` the flags describe for `model`.
pub fn config_from_flags(model: ModelConfig, a: &TrainFlags) -> Result<TrainConfig> {
    let mut c = match model.preset {
        Some(p) => TrainConfig::for_preset(p),
        None => TrainConfig::for_model(model.clone()),
    };
    c.model = model;
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
    match a.shards {
        Some(s) => c.shards = s,
        // A GPU runs a whole batch at once: shards would only queue its kernels twice.
        None if a.device != DeviceArg::Cpu => c.shards = 1,
        None => c.shards = TrainConfig::default_shards(&c.model, c.batch_size),
    }
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
    c.early_stop = a.early_stop;
    c.keep = match a.keep {
        KeepArg::Last => Keep::Last,
        KeepArg::Best => Keep::Best,
    };
    c.validate()?;
    Ok(c)
}

impl TrainFlags {
    /// `--data-dir`, if given.
    pub fn data_dir_flag(&self) -> Option<&std::path::Path> {
        self.data.data_dir.as_deref()
    }
    /// Whether downloads are allowed.
    pub fn allow_download(&self) -> bool {
        !self.data.no_download
    }
    /// `--device`.
    pub fn device(&self) -> DeviceArg {
        self.device
    }
    /// `--quiet`.
    pub fn is_quiet(&self) -> bool {
        self.quiet
    }
}

/// `train`; `given` holds the ids of the flags given on the command line.
pub fn run(a: TrainArgs, given: &[String]) -> Result<()> {
    let device = a.flags.device.device()?;
    let quiet = a.flags.quiet;
    let (config, run_dir, resume) = match &a.resume {
        Some(dir) => {
            let mut c = read_config(dir).with_context(|| format!("resuming {}", dir.display()))?;
            let conflicts = resume_conflicts(&a, given, &c)?;
            if !conflicts.is_empty() {
                anyhow::bail!(
                    "--resume {} continues the run with its own config.json; these flags ask for something else: {}. \
                     HINT: drop them (only --epochs may raise the total), or start a new run with --out",
                    dir.display(),
                    conflicts.join(", ")
                );
            }
            if let Some(e) = a.flags.epochs.filter(|&e| e != c.epochs) {
                let weights = dir.join(mnist_ae::train::checkpoint::MODEL_FILE);
                let info = mnist_ae::train::checkpoint::read_info(&weights)?;
                mnist_ae::train::checkpoint::check_epochs(e, &info)?;
                if !quiet {
                    mnist_ae::errln!(
                        "resume: --epochs {e} replaces the run's {} epochs",
                        c.epochs
                    );
                }
                c.epochs = e;
            }
            if a.flags.data.data_dir.is_some() || c.data_dir.is_none() {
                c.pin_data(a.flags.data.data_dir.as_deref());
            }
            (c, dir.clone(), true)
        }
        None => {
            let mut c = config_from_flags(a.model.config(a.latent.latent_dim)?, &a.flags)?;
            c.pin_data(a.flags.data.data_dir.as_deref());
            let dir = a
                .out
                .clone()
                .unwrap_or_else(|| PathBuf::from("runs").join(c.model.name()));
            (c, dir, false)
        }
    };
    // Held to the end, report included: no other process writes the folder meanwhile (and
    // `train`, sharing this hold, removes the folder it created if it fails before writing).
    let _held = mnist_ae::rundir::DirLock::acquire(&run_dir, "train")
        .with_context(|| format!("training into {}", run_dir.display()))?;
    // Ctrl-C (SIGINT) and SIGTERM (what docker, SLURM and systemd send) stop training after
    // the current step with a checkpoint; a second signal, or one after training, quits at
    // once.
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register_conditional_shutdown(SIGTERM, 130, stop.clone())?;
    signal_hook::flag::register(SIGTERM, stop.clone())?;
    let flag = stop.clone();
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        mnist_ae::errln!(
            "\ninterrupted: saving a checkpoint after this step (interrupt again to quit at once)"
        );
    });
    let data_dir = config.data_dir_for(a.flags.data.data_dir.as_deref());
    let out = train::train(&TrainOptions {
        config,
        run_dir: run_dir.clone(),
        data_dir,
        allow_download: !a.flags.data.no_download,
        device,
        resume,
        max_epochs_this_call: a.stop_after,
        quiet,
        stop: Some(stop.clone()),
    })
    .with_context(|| format!("training into {}", run_dir.display()))?;
    if let Some(batches) = out.interrupted {
        mnist_ae::errln!(
            "interrupted in epoch {} after {batches} batches; checkpoint saved. HINT: continue with `mnist-ae train --resume {}`",
            out.epochs_done + 1,
            run_dir.display()
        );
        std::process::exit(130);
    }
    if let Some(last) = out.metrics.last() {
        let best = match out.metrics.get(out.best_epoch.wrapping_sub(1)) {
            Some(b) if out.best_epoch != last.epoch => format!(
                "; best validation loss {} at epoch {} (best.safetensors)",
                b.valid_loss.map(|v| format!("{v:.6}")).unwrap_or_default(),
                b.epoch
            ),
            _ => String::new(),
        };
        mnist_ae::outln!(
            "trained {}{}: train loss {:.6}, validation loss {}{best}; run folder {}",
            mnist_ae::console::plural(out.epochs_done, "epoch"),
            if out.stopped_early {
                " (stopped early)"
            } else {
                ""
            },
            last.train_loss,
            last.valid_loss
                .map(|v| format!("{v:.6}"))
                .unwrap_or_else(|| "-".into()),
            run_dir.display()
        );
    }
    // From here on a signal quits at once: there is no training step to finish.
    if stop.swap(true, Ordering::SeqCst) && a.report {
        mnist_ae::errln!(
            "interrupted after the last epoch: the run is complete; no report was made"
        );
        std::process::exit(130);
    }
    if a.report {
        let path = super::report::analyze_run(&run_dir, a.flags.device, &a.flags.data, 10_000)?;
        mnist_ae::outln!("wrote {}", path.display());
    }
    Ok(())
}
