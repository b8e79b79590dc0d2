//! The training configuration: plain data, saved as `config.json` in the run folder. It is
//! the contract between `train` and every later command, which rebuild the model from it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::{resolve_data_dir, DatasetSource};
use crate::error::{Error, Result};
use crate::model::{Activation, ModelConfig, Preset};

/// `p` as an absolute path (symbolic links and `..` resolved where it exists).
fn absolute(p: &Path) -> PathBuf {
    p.canonicalize()
        .or_else(|_| std::path::absolute(p))
        .unwrap_or_else(|_| p.to_path_buf())
}

/// The reconstruction loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Loss {
    /// Mean squared error between the activated output and the target.
    Mse,
    /// Binary cross-entropy on the logits (numerically stable form).
    Bce,
}

/// The learning-rate schedule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Scheduler {
    /// A constant learning rate.
    None,
    /// PyTorch's `ReduceLROnPlateau(mode="min")` on the validation loss.
    Plateau {
        /// Multiply the lr by this when the loss stalls.
        factor: f64,
        /// Epochs without improvement before reducing.
        patience: usize,
        /// Relative improvement that counts (PyTorch's default 1e-4, mode "rel").
        threshold: f64,
        /// Never go below this lr.
        min_lr: f64,
    },
    /// Cosine annealing per epoch, PyTorch's `CosineAnnealingLR(T_max=epochs, eta_min)`: epoch
    /// e (from 0) trains at min_lr + (lr − min_lr)·(1 + cos(π·e/epochs))/2.
    Cosine {
        /// The lr the curve ends at.
        min_lr: f64,
    },
}

/// Everything that defines a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// The architecture and code size.
    pub model: ModelConfig,
    /// Dataset: `mnist`, `fashion-mnist`, `kmnist`, or the path of a folder of IDX files.
    pub dataset: String,
    /// Number of epochs.
    pub epochs: usize,
    /// Images per optimisation step.
    pub batch_size: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Adam L2 weight decay.
    pub weight_decay: f64,
    /// Reconstruction loss.
    pub loss: Loss,
    /// Learning-rate schedule.
    pub scheduler: Scheduler,
    /// One seed for init, split, shuffles and noise.
    pub seed: u64,
    /// Std of Gaussian input noise (denoising training), in [0,1] pixel units; 0 = plain AE.
    pub noise_std: f64,
    /// Fraction of the training file held out for validation.
    pub valid_fraction: f64,
    /// Use only the first N training images (quick runs and tests).
    pub limit_train: Option<usize>,
    /// Weight of the KL term of a variational preset (β-VAE); 1 is the plain ELBO.
    #[serde(default = "one")]
    pub beta: f64,
    /// Each batch is cut into this many shards trained in parallel, their gradients combined
    /// (mathematically the same step; see `train::step::step`). Runs written before this
    /// setting existed used 1.
    #[serde(default = "one_shard")]
    pub shards: usize,
    /// Where a named dataset's files were found when the run was made (absolute), so later
    /// commands find them again from anywhere; `--data-dir` overrides it. Absent for a dataset
    /// given as a folder (`dataset` is then that folder's absolute path) and in runs written
    /// before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Stop training when the validation loss has not improved for this many epochs in a row
    /// (`None`: train every epoch).
    #[serde(default)]
    pub early_stop: Option<usize>,
    /// Which weights the commands after `train` use: the last epoch's (`model.safetensors`)
    /// or the best validation epoch's (`best.safetensors`).
    #[serde(default)]
    pub keep: Keep,
}

/// Which of a run's weights its analyses use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Keep {
    /// The weights after the last epoch trained.
    #[default]
    Last,
    /// The weights of the epoch with the lowest validation loss.
    Best,
}

impl Keep {
    /// The weights file in the run folder.
    pub fn file(self) -> &'static str {
        match self {
            Keep::Last => crate::train::checkpoint::MODEL_FILE,
            Keep::Best => crate::train::checkpoint::BEST_FILE,
        }
    }

    /// `best` or `last`.
    pub fn name(self) -> &'static str {
        match self {
            Keep::Last => "last",
            Keep::Best => "best",
        }
    }
}

fn one() -> f64 {
    1.0
}

fn one_shard() -> usize {
    1
}

impl TrainConfig {
    /// The preset's defaults (lr 1e-3, MSE, no schedule, seed 42, 10% validation).
    pub fn for_preset(preset: Preset) -> Self {
        let d = preset.defaults();
        TrainConfig {
            epochs: d.epochs,
            batch_size: d.batch_size,
            weight_decay: d.weight_decay,
            ..Self::for_model(ModelConfig::preset(preset))
        }
    }

    /// The shards a batch of `batch` images trains in on the CPU unless told: 2; for a model
    /// with batch norm, whose shards wait for each other at every batch norm anyway, one per
    /// [`crate::kernels::PART_IMAGES`] images (its convolutions then run parts of that size on
    /// one thread each, as in a batch trained whole), or 1 where its layers do not all train
    /// through the fused operations, which alone share a batch's statistics between shards.
    pub fn default_shards(model: &ModelConfig, batch: usize) -> usize {
        match (model.has_batch_norm(), model.trains_fused()) {
            (true, true) => batch.div_ceil(crate::kernels::PART_IMAGES).max(1),
            (true, false) => 1,
            (false, _) => 2,
        }
    }

    /// The shards a batch is trained in on the CPU: [`Self::shards`], or 1 for a model with
    /// batch norm whose layers do not all train through the fused operations.
    pub fn cpu_shards(&self) -> usize {
        match self.model.has_batch_norm() && !self.model.trains_fused() {
            true => 1,
            false => self.shards,
        }
    }

    /// The defaults for any model: 10 epochs of batch 64, Adam lr 1e-3 without weight decay,
    /// MSE (BCE for a variational model), no schedule, seed 42, 10% validation, the shards of
    /// [`Self::default_shards`].
    pub fn for_model(model: ModelConfig) -> Self {
        TrainConfig {
            dataset: "mnist".into(),
            epochs: 10,
            batch_size: 64,
            lr: 1e-3,
            weight_decay: 0.0,
            // The VAE's reconstruction term is the Bernoulli likelihood, as in Kingma & Welling.
            loss: if model.is_variational() {
                Loss::Bce
            } else {
                Loss::Mse
            },
            scheduler: Scheduler::None,
            seed: 42,
            noise_std: 0.0,
            valid_fraction: 0.1,
            limit_train: None,
            beta: 1.0,
            shards: Self::default_shards(&model, 64),
            data_dir: None,
            early_stop: None,
            keep: Keep::Last,
            model,
        }
    }

    /// Records where the data is, as absolute paths: a folder dataset's own path, or the
    /// folder a named dataset is read from (`flag`, else `$MNIST_AE_DATA` for MNIST, else the
    /// cache folder).
    pub fn pin_data(&mut self, flag: Option<&Path>) {
        match DatasetSource::parse(&self.dataset) {
            DatasetSource::Folder(p) => {
                self.dataset = absolute(&p).to_string_lossy().into_owned();
                self.data_dir = None;
            }
            DatasetSource::Named(spec) => {
                self.data_dir = Some(absolute(&resolve_data_dir(flag, spec)));
            }
        }
    }

    /// The folder to read this run's data from: a folder dataset's own path; for a named
    /// dataset `flag`, else the recorded folder while it still holds the four files (a run
    /// copied to another machine falls back), else the default (see [`resolve_data_dir`]).
    pub fn data_dir_for(&self, flag: Option<&Path>) -> PathBuf {
        match DatasetSource::parse(&self.dataset) {
            DatasetSource::Folder(p) => p,
            DatasetSource::Named(spec) => flag
                .map(Path::to_path_buf)
                .or_else(|| {
                    self.data_dir.clone().filter(|d| {
                        spec.files
                            .iter()
                            .all(|f| crate::data::download::find_local(d, f.name).is_some())
                    })
                })
                .unwrap_or_else(|| resolve_data_dir(None, spec)),
        }
    }

    /// The settings in which `other` differs from `self`, as `key: ours → theirs` lines
    /// (nested keys dotted, e.g. `model.latent_dim`), leaving out the keys in `ignore`. The
    /// data location never counts: it says where the data is, not what a run is.
    pub fn differences(&self, other: &TrainConfig, ignore: &[&str]) -> Vec<String> {
        fn flat(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
            match v {
                serde_json::Value::Object(m) => {
                    for (k, v) in m {
                        let key = if prefix.is_empty() {
                            k.clone()
                        } else {
                            format!("{prefix}.{k}")
                        };
                        flat(&key, v, out);
                    }
                }
                other => out.push((prefix.to_string(), other.to_string())),
            }
        }
        let pairs = |c: &TrainConfig| {
            let mut out = Vec::new();
            if let Ok(v) = serde_json::to_value(c) {
                flat("", &v, &mut out);
            }
            out.into_iter()
                .collect::<std::collections::BTreeMap<String, String>>()
        };
        let (a, b) = (pairs(self), pairs(other));
        let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .filter(|k| *k != "data_dir" && !ignore.contains(&k.as_str()))
            .filter_map(|k| {
                let (x, y) = (a.get(k), b.get(k));
                (x != y).then(|| {
                    let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "-".into());
                    format!("{k}: {} → {}", show(x), show(y))
                })
            })
            .collect()
    }

    /// Whether `--early-stop` ends a run that has trained `done` epochs, the best (lowest
    /// validation loss) at epoch `best` (from 1; 0 when none yet): `patience` epochs have
    /// passed since the best.
    pub fn patience_over(&self, done: usize, best: usize) -> bool {
        self.early_stop
            .is_some_and(|p| best > 0 && done >= best + p)
    }

    /// Checks every value; the error names the flag.
    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        if self.dataset.trim().is_empty() {
            return Err(Error::config(
                "dataset",
                "is empty (mnist, fashion-mnist, kmnist, or a folder)",
            ));
        }
        if self.epochs == 0 {
            return Err(Error::config("epochs", "must be at least 1"));
        }
        if self.batch_size == 0 {
            return Err(Error::config("batch-size", "must be at least 1"));
        }
        if self.shards == 0 {
            return Err(Error::config("shards", "must be at least 1"));
        }
        positive_finite("lr", self.lr)?;
        non_negative_finite("weight-decay", self.weight_decay)?;
        non_negative_finite("noise-std", self.noise_std)?;
        non_negative_finite("beta", self.beta)?;
        if !(0.0..1.0).contains(&self.valid_fraction) {
            return Err(Error::config(
                "valid-fraction",
                format!("{} is not in [0, 1)", self.valid_fraction),
            ));
        }
        if self.early_stop == Some(0) {
            return Err(Error::config("early-stop", "must be at least 1 epoch"));
        }
        if self.valid_fraction == 0.0 {
            let needs = match (self.early_stop, self.keep) {
                (Some(_), _) => Some("--early-stop"),
                (None, Keep::Best) => Some("--keep best"),
                (None, Keep::Last) => None,
            };
            if let Some(flag) = needs {
                return Err(Error::config(
                    "valid-fraction",
                    format!("0 leaves no validation set, which {flag} watches; HINT: give --valid-fraction 0.1"),
                ));
            }
        }
        if self.limit_train == Some(0) {
            return Err(Error::config("limit-train", "must be at least 1"));
        }
        if let Scheduler::Plateau {
            factor,
            threshold,
            min_lr,
            ..
        } = self.scheduler
        {
            if !(factor > 0.0 && factor < 1.0) {
                return Err(Error::config(
                    "plateau-factor",
                    format!("{factor} is not in (0, 1)"),
                ));
            }
            non_negative_finite("plateau-threshold", threshold)?;
            non_negative_finite("min-lr", min_lr)?;
        }
        if let Scheduler::Cosine { min_lr } = self.scheduler {
            non_negative_finite("min-lr", min_lr)?;
            if min_lr > self.lr {
                return Err(Error::config(
                    "min-lr",
                    format!("{min_lr} is above the lr {}", self.lr),
                ));
            }
        }
        if self.loss == Loss::Bce && self.model.activation() == Activation::Tanh {
            return Err(Error::config(
                "loss",
                format!(
                    "bce needs targets in [0,1], but {} has a tanh output on [-1,1] data; use mse",
                    self.model.name()
                ),
            ));
        }
        Ok(())
    }
}

fn positive_finite(name: &str, v: f64) -> Result<()> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(Error::config(
            name,
            format!("{v} must be a positive finite number"),
        ))
    }
}

fn non_negative_finite(name: &str, v: f64) -> Result<()> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(Error::config(
            name,
            format!("{v} must be a finite number >= 0"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `config` fuzz target: without serde_json's `float_roundtrip`, a `beta`
    /// given as 1 followed by 113 threes was read a few ulps off, and the value written back
    /// (`1.3333333333333335e+113`) then read one bit lower: a run's config changed between
    /// writing and reading it.
    #[test]
    fn config_floats_survive_a_write_and_a_read() {
        let long = format!("1{}.0", "3".repeat(113));
        let text = serde_json::to_string(&TrainConfig::for_preset(Preset::Mlp))
            .unwrap()
            .replace("\"beta\":1.0", &format!("\"beta\":{long}"));
        assert!(text.contains(&long), "{text}");
        let cfg: TrainConfig = serde_json::from_str(&text).unwrap();
        let written = serde_json::to_string(&cfg).unwrap();
        let back: TrainConfig = serde_json::from_str(&written).unwrap();
        assert_eq!(back.beta.to_bits(), cfg.beta.to_bits(), "{written}");
    }
}
