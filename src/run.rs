//! A run folder opened for the commands after `train`: its config, its weights, and the
//! model rebuilt from them.

use std::path::{Path, PathBuf};

use burn::prelude::*;

use crate::config::{Keep, TrainConfig};
use crate::data::{Dataset, Scale, Split};
use crate::error::{Error, Result};
use crate::model::{Activation, Autoencoder};
use crate::rundir::DirLock;
use crate::rundir::{load_data, load_test_data, read_config};
use crate::train::checkpoint::{load_model, WeightsInfo, MODEL_FILE};

/// A trained run, ready for inference.
#[derive(Debug)]
pub struct Run {
    /// The run folder.
    pub dir: PathBuf,
    /// Its `config.json`.
    pub config: TrainConfig,
    /// The model with the run's weights, on `device`, in inference mode.
    pub model: Autoencoder,
    /// The weights file loaded: `model.safetensors`, or `best.safetensors` for a run that
    /// keeps its best epoch.
    pub weights: PathBuf,
    /// What the weights file says about itself.
    pub info: WeightsInfo,
    /// The device the model lives on.
    pub device: Device,
}

impl Run {
    /// Opens `dir`: reads `config.json` and loads the weights it keeps (`model.safetensors`,
    /// or `best.safetensors` with `keep: best`), checked against it.
    pub fn open(dir: &Path, device: &Device) -> Result<Run> {
        let config = read_config(dir)?;
        let weights = dir.join(config.keep.file());
        if config.keep == Keep::Best && dir.join(MODEL_FILE).exists() && !weights.exists() {
            return Err(Error::Data(format!(
                "{}: missing, though the run keeps its best epoch's weights (config.json: \"keep\": \"best\"); no epoch was validated",
                weights.display()
            )));
        }
        if std::fs::symlink_metadata(&weights).is_err() {
            return Err(Error::Data(format!(
                "{}: missing; is {} a finished run? HINT: train it with `mnist-ae train --out {}`",
                weights.display(),
                dir.display(),
                dir.display()
            )));
        }
        let (model, info) = load_model(&weights, &config.model, device)?;
        Ok(Run {
            dir: dir.to_path_buf(),
            config,
            model: model.valid(),
            weights,
            info,
            device: device.clone(),
        })
    }

    /// Which weights these are, in words: "epoch 10", or "epoch 7 (best validation loss)".
    pub fn trained(&self) -> String {
        match self.config.keep {
            Keep::Last => self.info.progress(),
            Keep::Best => format!("{} (best validation loss)", self.info.progress()),
        }
    }

    /// The model's output activation.
    pub fn activation(&self) -> Activation {
        self.config.model.activation()
    }

    /// The data scale of the model.
    pub fn scale(&self) -> Scale {
        self.activation().scale()
    }

    /// Loads the run's dataset (same split as in training), from `data_dir` when given, else
    /// from where the run found it (see [`TrainConfig::data_dir_for`]).
    pub fn data(&self, data_dir: Option<&Path>, allow_download: bool) -> Result<Dataset> {
        load_data(
            &self.config,
            &self.config.data_dir_for(data_dir),
            allow_download,
        )
    }

    /// Loads only the run's test images (see [`crate::rundir::load_test_data`]).
    pub fn test_data(&self, data_dir: Option<&Path>, allow_download: bool) -> Result<Split> {
        load_test_data(
            &self.config,
            &self.config.data_dir_for(data_dir),
            allow_download,
        )
    }

    /// Where outputs go, `out` or the run folder, locked for writing by this process (see
    /// [`crate::rundir`]) until the returned value is dropped.
    pub fn out_dir(&self, out: Option<&Path>, command: &str) -> Result<OutDir> {
        let path = out
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.dir.clone());
        let lock = DirLock::acquire(&path, command)?;
        // Another run's folder would then hold this run's results beside its own, and its
        // report would mix the two.
        if crate::rundir::is_run(&path) && !crate::fsutil::same_path(&path, &self.dir) {
            return Err(Error::config(
                "out",
                format!(
                    "{} is another run's folder; write {}'s results into its own folder or a new one",
                    path.display(),
                    self.dir.display()
                ),
            ));
        }
        Ok(OutDir { path, _lock: lock })
    }
}

/// A folder outputs are written to, held for writing (see [`Run::out_dir`]).
#[derive(Debug)]
pub struct OutDir {
    /// The folder.
    pub path: PathBuf,
    _lock: DirLock,
}

impl std::ops::Deref for OutDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}
