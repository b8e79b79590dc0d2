//! The training loop, top to bottom: data, model, optimizer, then per epoch: shuffle, forward,
//! loss, backward, step, validate, schedule, log, checkpoint.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use burn::module::{ModuleVisitor, Param};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use rayon::prelude::*;

use super::checkpoint::{self, ResumeState, MODEL_FILE, RESUME_FILE};
use super::loss::{loss, vae_loss};
use super::metrics::{self, EpochMetrics, LOSS_PLOT, METRICS_FILE};
use super::progress::EpochProgress;
use super::schedule::{self, ScheduleState};
use crate::config::{Loss, TrainConfig};
use crate::data::batch::{add_noise, epoch_order, noise_rng, rng};
use crate::data::{self, dataset::to_tensor, Dataset, DatasetSource, LoadOptions, Scale, Split};
use crate::error::{Error, Result};
use crate::fsutil::write_json;
use crate::kernels::adam::FusedAdam;
use crate::model::{Activation, Autoencoder};
use crate::rundir::DirLock;

pub use crate::rundir::CONFIG_FILE;
/// Batch size for validation passes (no gradients, so larger is fine).
const EVAL_BATCH: usize = 1000;
/// Noise stream id of validation batches, apart from the training streams.
const VALID_NOISE_EPOCH: usize = u32::MAX as usize;
/// Mixed into the seed of a VAE's ε draws, apart from the input-noise streams.
const EPS_STREAM: u64 = 0xE95_0000;

/// The ε of a VAE's reparameterisation for batch `batch` of `epoch`: `[n, latent]` standard
/// normal draws from the run's seed, so runs and resumes are reproducible.
pub fn vae_eps(
    seed: u64,
    epoch: usize,
    batch: usize,
    n: usize,
    latent: usize,
    device: &Device,
) -> Tensor<2> {
    use rand_distr::{Distribution, StandardNormal};
    let mut r = rng(seed ^ EPS_STREAM, ((epoch as u64) << 32) | batch as u64);
    let v: Vec<f32> = (0..n * latent)
        .map(|_| StandardNormal.sample(&mut r))
        .collect();
    Tensor::from_data(TensorData::new(v, [n, latent]), device)
}

/// The training loss of a batch (`n` images, batch `batch` of `epoch`): the reconstruction
/// loss, or for a VAE the negative ELBO per image with a seeded ε.
#[allow(clippy::too_many_arguments)]
fn batch_loss(
    model: &Autoencoder,
    config: &TrainConfig,
    x: Tensor<4>,
    target: Tensor<4>,
    epoch: usize,
    batch: usize,
    n: usize,
    device: &Device,
) -> Tensor<1> {
    let eps = batch_eps(config, epoch, batch, n, device);
    shard_loss(model, config, x, target, eps)
}

/// The VAE's ε for a whole batch (None for other presets).
fn batch_eps(
    config: &TrainConfig,
    epoch: usize,
    batch: usize,
    n: usize,
    device: &Device,
) -> Option<Tensor<2>> {
    config.model.preset.is_variational().then(|| {
        vae_eps(
            config.seed,
            epoch,
            batch,
            n,
            config.model.latent_dim,
            device,
        )
    })
}

/// The mean training loss of some images, with the VAE's ε for exactly those images.
fn shard_loss(
    model: &Autoencoder,
    config: &TrainConfig,
    x: Tensor<4>,
    target: Tensor<4>,
    eps: Option<Tensor<2>>,
) -> Tensor<1> {
    if let Some(eps) = eps {
        if let Some((logits, mu, logvar)) = model.forward_variational(x.clone(), eps) {
            return vae_loss(config.loss, logits, target, mu, logvar, config.beta).0;
        }
    }
    loss(
        config.loss,
        config.model.preset.activation(),
        model.forward(x),
        target,
    )
}

/// `n` images cut into `k` contiguous shards whose sizes differ by at most one.
fn shard_ranges(n: usize, k: usize) -> Vec<std::ops::Range<usize>> {
    let k = k.clamp(1, n.max(1));
    let (base, extra) = (n / k, n % k);
    let mut start = 0;
    (0..k)
        .map(|i| {
            let len = base + usize::from(i < extra);
            let r = start..start + len;
            start += len;
            r
        })
        .collect()
}

/// Sums the shards' gradients of every parameter of the visited model. Each shard's loss was
/// weighted by its share of the batch before its backward pass, so the sum is the gradient of
/// the whole batch's mean loss.
struct CombineGrads {
    parts: Vec<GradientsParams>,
    out: GradientsParams,
}

impl ModuleVisitor for CombineGrads {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let mut acc: Option<Tensor<D>> = None;
        for g in self.parts.iter_mut() {
            if let Some(t) = g.remove::<D>(param.id) {
                acc = Some(match acc {
                    Some(a) => a + t,
                    None => t,
                });
            }
        }
        if let Some(a) = acc {
            self.out.register(param.id, a);
        }
    }
}

/// Where a training step falls: its epoch and batch (they seed the VAE's noise) and the
/// learning rate it uses.
#[derive(Debug, Clone, Copy)]
pub struct StepAt {
    /// Epoch, from 0.
    pub epoch: usize,
    /// Batch within the epoch, from 0.
    pub batch: usize,
    /// Learning rate.
    pub lr: f64,
}

/// One optimisation step on the batch `x` (input) / `target` (on an autodiff device): the loss,
/// its gradients, one optimizer update. Returns the updated model and the batch's loss; when
/// the loss is not finite the model comes back unchanged, for the caller to stop.
///
/// With `config.shards` > 1 the batch is cut into that many shards whose forward and backward
/// passes run in parallel (rayon), each on its own autodiff graph (`fork` gives the shard's
/// copy of the model fresh leaves sharing the weights), and the gradients are combined,
/// weighted by shard size: mathematically the whole batch's gradient. burn's CPU kernels use
/// only part of two cores at these small sizes (see BENCHMARKS.md); shards fill them. The
/// shard count, not the thread count, fixes the summation order, so results do not depend on
/// the machine's cores.
pub fn step(
    model: Autoencoder,
    optim: &mut ModuleOptimizer,
    config: &TrainConfig,
    x: Tensor<4>,
    target: Tensor<4>,
    at: StepAt,
    device: &Device,
) -> (Autoencoder, f64) {
    let n = x.dims()[0];
    let eps = batch_eps(config, at.epoch, at.batch, n, device);
    let ranges = shard_ranges(n, config.shards);
    if ranges.len() == 1 {
        let l = shard_loss(&model, config, x, target, eps);
        let lv = l.clone().into_scalar::<f32>() as f64;
        if !lv.is_finite() {
            return (model, lv);
        }
        let grads = GradientsParams::from_grads(l.backward(), &model);
        return (optim.step(at.lr, model, grads), lv);
    }
    let jobs: Vec<_> = ranges
        .iter()
        .map(|r| {
            let cut4 = |t: &Tensor<4>| t.clone().narrow(0, r.start, r.len());
            (
                model.clone().fork(device),
                cut4(&x),
                cut4(&target),
                eps.as_ref().map(|e| e.clone().narrow(0, r.start, r.len())),
            )
        })
        .collect();
    let weights: Vec<f64> = ranges.iter().map(|r| r.len() as f64 / n as f64).collect();
    let results: Vec<(f64, GradientsParams)> = jobs
        .into_par_iter()
        .zip(&weights)
        .map(|((m, x, t, e), &w)| {
            let l = shard_loss(&m, config, x, t, e).mul_scalar(w);
            let lv = l.clone().into_scalar::<f32>() as f64;
            (lv, GradientsParams::from_grads(l.backward(), &m))
        })
        .collect();
    let lv: f64 = results.iter().map(|(l, _)| l).sum();
    if !lv.is_finite() {
        return (model, lv);
    }
    let mut combine = CombineGrads {
        parts: results.into_iter().map(|(_, g)| g).collect(),
        out: GradientsParams::new(),
    };
    model.visit(&mut combine);
    (optim.step(at.lr, model, combine.out), lv)
}

/// How to run `train`.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// What to train (for a resume, the run's own config with possibly more epochs).
    pub config: TrainConfig,
    /// The run folder.
    pub run_dir: PathBuf,
    /// Where the dataset is (see [`crate::data::resolve_data_dir`]).
    pub data_dir: PathBuf,
    /// Whether missing data files may be downloaded.
    pub allow_download: bool,
    /// The compute device (without autodiff; training adds it).
    pub device: Device,
    /// Continue the run in `run_dir` instead of starting one.
    pub resume: bool,
    /// Stop after this many epochs in this call (the run stays resumable).
    pub max_epochs_this_call: Option<usize>,
    /// No progress output.
    pub quiet: bool,
    /// Set (by a Ctrl-C handler) to stop after the current step with a checkpoint.
    pub stop: Option<Arc<AtomicBool>>,
}

/// What a finished `train` call reports.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// Epochs completed in the run so far.
    pub epochs_done: usize,
    /// `Some(batches done in the next epoch)` when the stop flag ended the call early.
    pub interrupted: Option<usize>,
    /// Every epoch's metrics.
    pub metrics: Vec<EpochMetrics>,
}

/// Reads a run's `config.json`.
pub fn read_config(run_dir: &Path) -> Result<TrainConfig> {
    let path = run_dir.join(CONFIG_FILE);
    if !run_dir.is_dir() {
        return Err(Error::Data(format!(
            "{}: run folder not found",
            run_dir.display()
        )));
    }
    let text = crate::fsutil::read_to_string(&path)?;
    parse_config(&path, &text)
}

/// Parses and validates the text of a `config.json`; `path` only names the file in errors.
pub fn parse_config(path: &Path, text: &str) -> Result<TrainConfig> {
    let cfg: TrainConfig =
        serde_json::from_str(text).map_err(|e| Error::bad_file(path, e.to_string()))?;
    cfg.validate()
        .map_err(|e| Error::bad_file(path, e.to_string()))?;
    Ok(cfg)
}

/// Loads the dataset a config names.
pub fn load_data(config: &TrainConfig, data_dir: &Path, allow_download: bool) -> Result<Dataset> {
    let source = DatasetSource::parse(&config.dataset);
    let folder = match &source {
        DatasetSource::Folder(p) => p.as_path(),
        DatasetSource::Named(_) => data_dir,
    };
    data::load(&LoadOptions {
        spec: source.spec(),
        dir: folder,
        allow_download,
        valid_fraction: config.valid_fraction,
        seed: config.seed,
        limit_train: config.limit_train,
        limit_test: None,
    })
}

/// The Adam optimizer a config asks for: burn's Adam with PyTorch's defaults (burn's epsilon
/// default is 1e-5; PyTorch uses 1e-8), fused into one pass per parameter on the CPU.
pub fn optimizer(config: &TrainConfig) -> ModuleOptimizer {
    FusedAdam::new(1e-8, config.weight_decay.max(0.0) as f32).init()
}

/// Mean loss and mean MSE of `model` on `split`, in batches, with seeded noise on the input
/// when `noise_std > 0`.
pub fn evaluate_loss(
    model: &Autoencoder,
    split: &Split,
    config: &TrainConfig,
    device: &Device,
) -> (f64, f64) {
    let act = config.model.preset.activation();
    let scale = act.scale();
    let idx: Vec<usize> = (0..split.len()).collect();
    let (mut loss_sum, mut mse_sum) = (0.0f64, 0.0f64);
    for (bi, chunk) in idx.chunks(EVAL_BATCH).enumerate() {
        let clean = split.scaled(chunk, scale);
        let input = noisy(&clean, config, scale, VALID_NOISE_EPOCH, bi);
        let target = to_tensor(clean, chunk.len(), device);
        let x = input
            .map(|v| to_tensor(v, chunk.len(), device))
            .unwrap_or_else(|| target.clone());
        let logits = model.forward(x.clone());
        let n = chunk.len() as f64;
        let mse = (act.apply(logits.clone()) - target.clone())
            .square()
            .mean()
            .into_scalar::<f32>() as f64;
        let l = if config.model.preset.is_variational() {
            batch_loss(
                model,
                config,
                x,
                target,
                VALID_NOISE_EPOCH,
                bi,
                chunk.len(),
                device,
            )
            .into_scalar::<f32>() as f64
        } else {
            match config.loss {
                Loss::Mse => mse,
                Loss::Bce => loss(Loss::Bce, act, logits, target).into_scalar::<f32>() as f64,
            }
        };
        loss_sum += l * n;
        mse_sum += mse * n;
    }
    let n = split.len().max(1) as f64;
    (loss_sum / n, mse_sum / n)
}

fn noisy(
    clean: &[f32],
    config: &TrainConfig,
    scale: Scale,
    epoch: usize,
    batch: usize,
) -> Option<Vec<f32>> {
    (config.noise_std > 0.0).then(|| {
        let mut v = clean.to_vec();
        add_noise(
            &mut v,
            config.noise_std as f32,
            scale,
            &mut noise_rng(config.seed, epoch, batch),
        );
        v
    })
}

/// Loads the weights and the resume state of a run to continue it, checking that the resume
/// state was saved together with exactly these weights.
fn load_pair(
    model_path: &Path,
    resume_path: &Path,
    config: &TrainConfig,
    optim: ModuleOptimizer,
    device: &Device,
) -> Result<(Autoencoder, ModuleOptimizer, ResumeState)> {
    let bytes = crate::fsutil::read(model_path)?;
    let (model, info) =
        checkpoint::load_model_from(model_path, &bytes, &config.model, config.model.init(device))?;
    let (optim, state) = checkpoint::load_resume(resume_path, optim)?;
    let resume_at = checkpoint::WeightsInfo {
        model: info.model,
        epoch: state.epoch,
        batch: state.batch,
    };
    let mismatch = |what: String| {
        Error::bad_file(
            resume_path,
            format!(
                "does not belong to {}: {what} ({} is at {}, {} at {}). It comes from another run, \
                 or from another save of this one (a save cut off between its two files); nothing \
                 was trained. HINT: put back the model.safetensors and resume.safetensors of one \
                 save together; the weights alone still serve eval and every analysis, and a new \
                 run (--out) trains from scratch",
                model_path.display(),
                RESUME_FILE,
                resume_at.progress(),
                MODEL_FILE,
                info.progress()
            ),
        )
    };
    match &state.model_sha256 {
        Some(want) => {
            let got = checkpoint::sha256_hex(&bytes);
            if *want != got {
                return Err(mismatch(format!(
                    "it was saved with weights of SHA-256 {}…, {MODEL_FILE} has {}…",
                    want.get(..12).unwrap_or(want),
                    &got[..12]
                )));
            }
        }
        // Runs written before the digest was recorded: the epochs must at least agree.
        None if state.epoch != info.epoch => {
            return Err(mismatch("they were saved at different epochs".to_string()));
        }
        None => {}
    }
    checkpoint::check_epochs(config.epochs, &resume_at)?;
    Ok((model, optim, state))
}

/// Trains (or resumes) a run; writes config, metrics, plot and checkpoints into the run folder.
pub fn train(opts: &TrainOptions) -> Result<TrainOutcome> {
    let config = &opts.config;
    config.validate()?;
    let dir = &opts.run_dir;
    let model_path = dir.join(MODEL_FILE);
    let resume_path = dir.join(RESUME_FILE);
    if opts.resume && !dir.is_dir() {
        return Err(Error::Data(format!(
            "{}: run folder not found",
            dir.display()
        )));
    }
    // Held until training returns: no other process writes this folder meanwhile.
    let _lock = DirLock::acquire(dir, "train")?;
    if !opts.resume && model_path.exists() {
        return Err(Error::config(
            "out",
            format!(
                "{} already holds a trained model; HINT: use --resume {} to continue it, or choose another --out",
                dir.display(),
                dir.display()
            ),
        ));
    }
    let data = load_data(config, &opts.data_dir, opts.allow_download)?;
    if data.train.is_empty() {
        return Err(Error::config(
            "limit-train",
            "no training images left after the validation split",
        ));
    }
    if config.batch_size > data.train.len() {
        return Err(Error::config(
            "batch-size",
            format!(
                "{} is more than the {} training images; HINT: use --batch-size {} or less",
                config.batch_size,
                data.train.len(),
                data.train.len()
            ),
        ));
    }
    let device = opts.device.clone().autodiff();
    device.seed(config.seed);
    let act: Activation = config.model.preset.activation();
    let scale = act.scale();

    let mut model = checkpoint::stable(config.model.init(&device));
    let mut optim = optimizer(config);
    let mut sched = ScheduleState::new(config.lr);
    // f64::MAX, not infinity, stands for "none yet": JSON (the resume state) has no infinity.
    let mut best_valid = f64::MAX;
    let mut start_epoch = 0;
    let mut history = Vec::new();
    // Where an interrupted epoch left off: (batches, loss sum, images).
    let mut partial = (0usize, 0.0f64, 0usize);

    if opts.resume {
        let (m, o, state) = load_pair(&model_path, &resume_path, config, optim, &device)?;
        model = m;
        optim = o;
        sched = state.schedule;
        best_valid = state.best_valid;
        start_epoch = state.epoch;
        partial = (state.batch, state.partial_loss_sum, state.partial_images);
        history = metrics::read(&dir.join(METRICS_FILE))?;
        history.truncate(start_epoch);
    } else {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    write_json(&dir.join(CONFIG_FILE), config)?;

    let n_train = data.train.len();
    let end_epoch = match opts.max_epochs_this_call {
        Some(k) => (start_epoch + k).min(config.epochs),
        None => config.epochs,
    };
    for epoch in start_epoch..end_epoch {
        let order = epoch_order(n_train, config.seed, epoch);
        let mut bar = EpochProgress::new(epoch + 1, config.epochs, n_train, opts.quiet);
        let t0 = Instant::now();
        // Resuming an interrupted epoch: skip its finished batches, keep its running loss.
        let (skip, mut sum, mut done) = if epoch == start_epoch {
            partial
        } else {
            (0, 0.0, 0)
        };
        let done_before = done;
        for (bi, chunk) in order.chunks(config.batch_size).enumerate().skip(skip) {
            let clean = data.train.scaled(chunk, scale);
            let input = noisy(&clean, config, scale, epoch, bi);
            let target = to_tensor(clean, chunk.len(), &device);
            let x = input
                .map(|v| to_tensor(v, chunk.len(), &device))
                .unwrap_or_else(|| target.clone());
            let at = StepAt {
                epoch,
                batch: bi,
                lr: sched.lr,
            };
            let (next, lv) = step(model, &mut optim, config, x, target, at, &device);
            model = next;
            if !lv.is_finite() {
                let kept = if epoch == 0 && !opts.resume {
                    "no checkpoint was written".to_string()
                } else {
                    format!(
                        "the checkpoint of epoch {epoch} in {} is kept",
                        dir.display()
                    )
                };
                return Err(Error::Diverged(format!(
                    "training loss became {lv} in epoch {} (batch {}); {kept}. HINT: lower --lr (now {})",
                    epoch + 1,
                    bi + 1,
                    sched.lr
                )));
            }
            sum += lv * chunk.len() as f64;
            done += chunk.len();
            if bi % 20 == 0 {
                bar.update(done, sum / done as f64);
            }
            if opts.stop.as_ref().is_some_and(|f| f.load(Ordering::SeqCst)) && done < n_train {
                bar.finish();
                checkpoint::save_checkpoint(
                    dir,
                    &model,
                    &config.model,
                    &optim,
                    &ResumeState {
                        epoch,
                        schedule: sched,
                        best_valid,
                        batch: bi + 1,
                        partial_loss_sum: sum,
                        partial_images: done,
                        model_sha256: None,
                    },
                )?;
                return Ok(TrainOutcome {
                    epochs_done: epoch,
                    interrupted: Some(bi + 1),
                    metrics: history,
                });
            }
        }
        bar.finish();
        let seconds = t0.elapsed().as_secs_f64();
        let images_this_call = done - done_before;
        let train_loss = sum / n_train as f64;
        let plain = device.clone().without_autodiff();
        let (valid_loss, valid_mse) = if data.valid.is_empty() {
            (None, None)
        } else {
            let (l, m) = evaluate_loss(&model.valid(), &data.valid, config, &plain);
            (Some(l), Some(m))
        };
        let lr_used = sched.lr;
        let monitor = valid_loss.unwrap_or(train_loss);
        sched = schedule::step(
            &config.scheduler,
            sched,
            monitor,
            schedule::Progress {
                base_lr: config.lr,
                done: epoch + 1,
                epochs: config.epochs,
            },
        );
        best_valid = best_valid.min(monitor);
        let row = EpochMetrics {
            epoch: epoch + 1,
            train_loss,
            valid_loss,
            valid_mse,
            lr: lr_used,
            seconds,
            images_per_sec: images_this_call as f64 / seconds.max(1e-9),
        };
        if !opts.quiet {
            crate::errln!(
                "epoch {}/{} train {:.6} valid {} lr {:.1e} time {:.1}s ({:.0} img/s)",
                row.epoch,
                config.epochs,
                train_loss,
                valid_loss
                    .map(|v| format!("{v:.6}"))
                    .unwrap_or_else(|| "-".into()),
                lr_used,
                seconds,
                row.images_per_sec
            );
        }
        history.push(row);
        // Both files land together (see save_checkpoint); resume checks they belong together.
        checkpoint::save_checkpoint(
            dir,
            &model,
            &config.model,
            &optim,
            &ResumeState {
                epoch: epoch + 1,
                schedule: sched,
                best_valid,
                batch: 0,
                partial_loss_sum: 0.0,
                partial_images: 0,
                model_sha256: None,
            },
        )?;
        metrics::write(&dir.join(METRICS_FILE), &history)?;
        let loss_name = match config.loss {
            Loss::Mse => "MSE",
            Loss::Bce => "BCE",
        };
        metrics::plot_losses(&dir.join(LOSS_PLOT), &history, loss_name)?;
    }
    Ok(TrainOutcome {
        epochs_done: end_epoch.max(start_epoch),
        interrupted: None,
        metrics: history,
    })
}
