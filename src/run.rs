//! A run folder opened for the commands after `train`: its config, its weights, and the
//! model rebuilt from them.

use std::path::{Path, PathBuf};

use burn::prelude::*;

use crate::config::TrainConfig;
use crate::data::{Dataset, Scale};
use crate::error::{Error, Result};
use crate::model::{Activation, Autoencoder};
use crate::rundir::DirLock;
use crate::rundir::{load_data, read_config};
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
    /// What the weights file says about itself.
    pub info: WeightsInfo,
    /// The device the model lives on.
    pub device: Device,
}

impl Run {
    /// Opens `dir`: reads `config.json` and loads `model.safetensors` (checked against it).
    pub fn open(dir: &Path, device: &Device) -> Result<Run> {
        let config = read_config(dir)?;
        let weights = dir.join(MODEL_FILE);
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
            info,
            device: device.clone(),
        })
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

    /// Where outputs go, `out` or the run folder, locked for writing by this process (see
    /// [`crate::rundir`]) until the returned value is dropped.
    pub fn out_dir(&self, out: Option<&Path>, command: &str) -> Result<OutDir> {
        let path = out
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.dir.clone());
        let lock = DirLock::acquire(&path, command)?;
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
