//! The training loop, top to bottom: data, model, optimizer, then per epoch: shuffle, forward,
//! loss, backward, step, validate, schedule, log, checkpoint.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use burn::prelude::*;

use super::checkpoint::{self, ResumeState, BEST_FILE, MODEL_FILE, RESUME_FILE};
use super::metrics::{self, EpochMetrics, LOSS_PLOT, METRICS_FILE};
use super::progress::EpochProgress;
use super::schedule::{self, ScheduleState};
use super::step::noisy;
pub use super::step::{evaluate_loss, step, step_images, vae_eps, StepAt, StepLoss};
use crate::config::{Loss, TrainConfig};
use crate::data::batch::epoch_order;
use crate::data::dataset::to_tensor;
use crate::error::{Error, Result};
use crate::fsutil::write_json;
use crate::kernels::adam::Adam;
use crate::model::{Activation, Autoencoder};
use crate::rundir::DirLock;
pub use crate::rundir::{load_data, parse_config, read_config, CONFIG_FILE};
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
    /// The epoch (from 1) with the lowest validation loss so far, whose weights are in
    /// `best.safetensors` (0: no validation set, or none recorded).
    pub best_epoch: usize,
    /// Whether `--early-stop` ended training before `config.epochs`.
    pub stopped_early: bool,
}

/// The Adam optimizer a config asks for: burn's Adam with PyTorch's defaults (burn's epsilon
/// default is 1e-5; PyTorch uses 1e-8), fused into one pass over the model on the CPU.
pub fn optimizer(config: &TrainConfig) -> Adam {
    Adam::new(1e-8, config.weight_decay.max(0.0) as f32)
}

/// Loads the weights and the resume state of a run to continue it, checking that the resume
/// state was saved together with exactly these weights.
fn load_pair(
    model_path: &Path,
    resume_path: &Path,
    config: &TrainConfig,
    optim: Adam,
    device: &Device,
) -> Result<(Autoencoder, Adam, ResumeState)> {
    let bytes = crate::fsutil::read(model_path)?;
    let (model, info) = checkpoint::load_model_from(
        model_path,
        &bytes,
        &config.model,
        config.model.init(device)?,
    )?;
    let (optim, state) = checkpoint::load_resume(resume_path, &model, optim)?;
    let resume_at = checkpoint::WeightsInfo {
        model: info.model.clone(),
        epoch: state.epoch,
        batch: state.batch,
        legacy: info.legacy,
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
///
/// The loop runs as the driver of rayon's pool ([`crate::kernels::drive`]); on the CPU a
/// helper stands by for each shard of a batch past the first, or every other worker when
/// batches train whole. Batches cut into shards train in a pool of one worker per shard
/// where the threads are more: a shard's kernels split their passes over idle workers, and
/// at these sizes waking them costs more than they do (BENCHMARKS.md, "more threads than
/// shards").
pub fn train(opts: &TrainOptions) -> Result<TrainOutcome> {
    let threads = rayon::current_num_threads();
    let drive = |helpers| crate::kernels::drive(helpers, || train_here(opts, threads));
    match opts.config.cpu_shards() {
        _ if !crate::kernels::fused_here(&opts.device) => drive(0),
        // A batch trained whole splits each operation's passes over the pool: every other
        // worker stands by for them.
        1 => drive(threads.saturating_sub(1)),
        s => crate::device::on_threads(s, || drive(s - 1)),
    }
}

/// [`train`] in the pool it chose; `threads`: the pool `train` was called in.
fn train_here(opts: &TrainOptions, threads: usize) -> Result<TrainOutcome> {
    let config = &opts.config;
    config.validate()?;
    let dir = &opts.run_dir;
    if opts.resume && !dir.is_dir() {
        return Err(Error::Data(format!(
            "{}: run folder not found",
            dir.display()
        )));
    }
    // Held until training returns: no other process writes this folder meanwhile (and a
    // folder it created is removed again if training fails before writing into it).
    let _lock = DirLock::acquire(dir, "train")?;
    check_memory(config, &opts.device)?;
    train_locked(opts, threads)
}

/// Bytes each parameter takes while it trains: its value, its gradient and Adam's two moments.
const TRAINING_BYTES_PER_PARAM: u64 = 16;

/// Refuses a model whose parameters alone, with their gradients and Adam's state, would take
/// more memory than the system has free: allocating them would abort the process instead.
/// On the CPU only: a GPU holds them in its own memory.
fn check_memory(config: &TrainConfig, device: &Device) -> Result<()> {
    if !crate::kernels::fused_here(device) {
        return Ok(());
    }
    check_model_memory(
        &config.model,
        TRAINING_BYTES_PER_PARAM,
        "with their gradients and Adam's state",
    )
}

/// Refuses `model` when `bytes_per_param` bytes for each of its parameters (what `holding`
/// says they are) exceed the memory the system has free.
pub(crate) fn check_model_memory(
    model: &crate::model::ModelConfig,
    bytes_per_param: u64,
    holding: &str,
) -> Result<()> {
    let params = crate::model::summary::summarize(model)?.total_params as u64;
    let need = params.saturating_mul(bytes_per_param);
    match crate::device::available_memory() {
        Some(free) if need > free => {
            let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
            Err(Error::config(
                "model",
                format!(
                    "its {params} parameters take {:.1} GiB {holding}, more than the {:.1} GiB of memory free; HINT: use fewer or narrower layers",
                    gib(need),
                    gib(free)
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// [`train_here`] once the run folder is locked.
fn train_locked(opts: &TrainOptions, threads: usize) -> Result<TrainOutcome> {
    let config = &opts.config;
    let dir = &opts.run_dir;
    let model_path = dir.join(MODEL_FILE);
    let resume_path = dir.join(RESUME_FILE);
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
    let act: Activation = config.model.activation();
    let scale = act.scale();

    let mut model = super::params::initial(&config.model, config.seed, &device)?;
    let mut optim = optimizer(config);
    let mut sched = ScheduleState::new(config.lr);
    // f64::MAX, not infinity, stands for "none yet": JSON (the resume state) has no infinity.
    let mut best_valid = f64::MAX;
    let mut best_epoch = 0;
    let mut start_epoch = 0;
    let mut history = Vec::new();
    // Where an interrupted epoch left off: (batches, loss sum, images).
    let mut partial = (0usize, 0.0f64, 0usize);

    if opts.resume {
        match (model_path.exists(), resume_path.exists()) {
            (false, false) => {
                return Err(Error::Data(format!(
                    "{} holds no checkpoint to resume: its training stopped before the first one was saved (at the end of epoch 1, or when stopped with Ctrl-C); HINT: train it again without --resume",
                    dir.display()
                )))
            }
            (true, false) => {
                return Err(Error::Data(format!(
                    "{} has weights but no {RESUME_FILE} (an imported run, or one whose optimizer state was removed): it can be evaluated and explored, not resumed",
                    dir.display()
                )))
            }
            _ => {}
        }
        let (m, o, state) = load_pair(&model_path, &resume_path, config, optim, &device)?;
        model = m;
        optim = o;
        sched = state.schedule;
        best_valid = state.best_valid;
        best_epoch = state.best_epoch;
        start_epoch = state.epoch;
        partial = (state.batch, state.partial_loss_sum, state.partial_images);
        history = metrics::read(&dir.join(METRICS_FILE))?;
        history.truncate(start_epoch);
    } else {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    write_json(&dir.join(CONFIG_FILE), config)?;
    if !opts.quiet {
        crate::errln!(
            "{}",
            super::announce::describe(config, dir, start_epoch, &data, &device, threads)?
        );
    }

    let n_train = data.train.len();
    let end_epoch = match opts.max_epochs_this_call {
        Some(k) => (start_epoch + k).min(config.epochs),
        None => config.epochs,
    };
    let mut stopped_early = config.patience_over(start_epoch, best_epoch);
    if stopped_early && !opts.quiet {
        crate::errln!(
            "early stop: this run stopped at epoch {start_epoch}, {} after its best (epoch {best_epoch}); nothing to train",
            crate::console::plural(start_epoch - best_epoch, "epoch")
        );
    }
    let mut epochs_done = start_epoch;
    let mut eta = super::progress::RunClock::new(n_train, start_epoch, config.epochs);
    for epoch in start_epoch..end_epoch {
        if stopped_early {
            break;
        }
        let order = epoch_order(n_train, config.seed, epoch);
        let mut bar = EpochProgress::new(epoch + 1, &eta, opts.quiet);
        let t0 = Instant::now();
        // Resuming an interrupted epoch: skip its finished batches, keep its running loss.
        let (skip, mut sum, mut done) = if epoch == start_epoch {
            partial
        } else {
            (0, 0.0, 0)
        };
        let done_before = done;
        // Step losses not yet added to `sum` (a GPU's are read together): (loss, batch, images).
        let mut pending: Vec<(StepLoss, usize, usize)> = Vec::new();
        let lr = sched.lr;
        let kept = if epoch == 0 && !opts.resume {
            "no checkpoint was written".to_string()
        } else {
            format!(
                "the checkpoint of epoch {epoch} in {} is kept",
                dir.display()
            )
        };
        let diverged = |lv: f64, bi: usize| {
            Error::Diverged(format!(
                "training loss became {lv} in epoch {} (batch {}); {kept}. HINT: lower --lr (now {lr})",
                epoch + 1,
                bi + 1,
            ))
        };
        for (bi, chunk) in order.chunks(config.batch_size).enumerate().skip(skip) {
            let at = StepAt {
                epoch,
                batch: bi,
                lr: sched.lr,
            };
            // Without input noise, the shards convert their own images; noise is drawn for
            // the whole batch at once (one stream per batch), so a noisy batch is made here.
            let clean = (config.noise_std > 0.0).then(|| data.train.scaled(chunk, scale));
            let (next, lv) = match clean {
                None => step_images(
                    model,
                    &mut optim,
                    config,
                    &data.train,
                    chunk,
                    scale,
                    at,
                    &device,
                ),
                Some(clean) => {
                    let input = noisy(&clean, config, scale, epoch, bi);
                    let target = to_tensor(clean, chunk.len(), &device);
                    let x = input
                        .map(|v| to_tensor(v, chunk.len(), &device))
                        .unwrap_or_else(|| target.clone());
                    step(model, &mut optim, config, x, target, at, &device)
                }
            };
            model = next;
            done += chunk.len();
            let stop = opts.stop.as_ref().is_some_and(|f| f.load(Ordering::SeqCst));
            // A loss read as not finite stops the run at once (its step left the model as it
            // was); pending ones are checked when read.
            let read =
                bi % READ_EVERY == 0 || stop || matches!(lv, StepLoss::Read(v) if !v.is_finite());
            pending.push((lv, bi, chunk.len()));
            if read {
                read_pending(&mut pending, &mut sum).map_err(|(v, b)| diverged(v, b))?;
            }
            if bi % READ_EVERY == 0 {
                bar.update(done, sum / done as f64);
            }
            if stop && done < n_train {
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
                        best_epoch,
                    },
                )?;
                return Ok(TrainOutcome {
                    epochs_done: epoch,
                    interrupted: Some(bi + 1),
                    metrics: history,
                    best_epoch,
                    stopped_early: false,
                });
            }
        }
        read_pending(&mut pending, &mut sum).map_err(|(v, b)| diverged(v, b))?;
        bar.finish();
        if let Some((name, v)) = checkpoint::broken_weight(&model) {
            return Err(Error::Diverged(format!(
                "the weights became {v} in epoch {} ({name}) while the loss stayed finite; {kept}. HINT: lower --lr (now {lr})",
                epoch + 1,
            )));
        }
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
        let improved = valid_loss.is_some_and(|v| v < best_valid);
        best_valid = best_valid.min(monitor);
        if improved {
            best_epoch = epoch + 1;
            // Written before the checkpoint: a crash between the two leaves a best file one
            // epoch ahead of the resume state, and resuming re-trains that epoch bit for bit.
            checkpoint::save_model(&dir.join(BEST_FILE), &model, &config.model, epoch + 1)?;
        }
        eta.epoch_done(seconds, images_this_call);
        epochs_done = epoch + 1;
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
                "epoch {}/{} train {:.6} valid {}{} lr {:.1e} time {:.1}s ({:.0} img/s){}",
                row.epoch,
                config.epochs,
                train_loss,
                valid_loss
                    .map(|v| format!("{v:.6}"))
                    .unwrap_or_else(|| "-".into()),
                if improved { " (best)" } else { "" },
                lr_used,
                seconds,
                row.images_per_sec,
                eta.remaining()
                    .filter(|_| epoch + 1 < end_epoch)
                    .map(|s| format!(", ETA {}", super::progress::duration(s)))
                    .unwrap_or_default()
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
                best_epoch,
            },
        )?;
        metrics::write(&dir.join(METRICS_FILE), &history)?;
        let loss_name = match config.loss {
            Loss::Mse => "MSE",
            Loss::Bce => "BCE",
        };
        metrics::plot_losses(&dir.join(LOSS_PLOT), &history, loss_name)?;
        if config.patience_over(epoch + 1, best_epoch) && epoch + 1 < config.epochs {
            stopped_early = true;
            if !opts.quiet {
                crate::errln!(
                    "early stop: the validation loss has not improved for {} since epoch {best_epoch}",
                    crate::console::plural(epoch + 1 - best_epoch, "epoch")
                );
            }
        }
    }
    Ok(TrainOutcome {
        epochs_done,
        interrupted: None,
        metrics: history,
        best_epoch,
        stopped_early,
    })
}

/// The progress bar shows the running loss, and losses left on the device are read, once
/// per this many batches: a GPU waits for its queue about that often.
const READ_EVERY: usize = 20;

/// Reads the losses in `pending` (emptying it), adding each times its batch's image count to
/// `sum`, in order; the first that is not finite, with its batch, is the error.
fn read_pending(
    pending: &mut Vec<(StepLoss, usize, usize)>,
    sum: &mut f64,
) -> Result<(), (f64, usize)> {
    if pending.is_empty() {
        return Ok(());
    }
    let (losses, at): (Vec<StepLoss>, Vec<(usize, usize)>) =
        pending.drain(..).map(|(l, b, n)| (l, (b, n))).unzip();
    for (v, (b, n)) in StepLoss::values(losses).into_iter().zip(at) {
        if !v.is_finite() {
            return Err((v, b));
        }
        *sum += v * n as f64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(v: f32) -> StepLoss {
        let device = Device::flex();
        StepLoss::Pending(Box::new(Tensor::from_data(
            TensorData::new(vec![v], [1]),
            &device,
        )))
    }

    /// Pending and read losses are added in order, each times its images; the first loss that
    /// is not finite stops the sum and names its batch, whichever kind it is.
    #[test]
    fn pending_losses_are_summed_in_order_and_checked() {
        let mut sum = 1.0;
        let mut p = vec![
            (pending(0.5), 0, 10),
            (StepLoss::Read(0.25), 1, 4),
            (pending(2.0), 2, 3),
        ];
        assert_eq!(read_pending(&mut p, &mut sum), Ok(()));
        assert!(p.is_empty());
        assert_eq!(sum, 1.0 + 5.0 + 1.0 + 6.0);

        let mut p = vec![
            (pending(0.5), 7, 2),
            (pending(f32::NAN), 8, 2),
            (StepLoss::Read(f64::INFINITY), 9, 2),
        ];
        let (v, batch) = read_pending(&mut p, &mut sum).unwrap_err();
        assert!(v.is_nan());
        assert_eq!(batch, 8);
        let mut p = vec![(pending(1.0), 3, 1), (StepLoss::Read(f64::INFINITY), 4, 1)];
        assert_eq!(read_pending(&mut p, &mut sum), Err((f64::INFINITY, 4)));
        assert_eq!(read_pending(&mut Vec::new(), &mut sum), Ok(()));
    }
}
