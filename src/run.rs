//! A run folder opened for the commands after `train`: its config, its weights, and the
//! model rebuilt from them.

use std::path::{Path, PathBuf};

use burn::prelude::*;

use crate::config::TrainConfig;
use crate::data::{Dataset, Scale};
use crate::error::{Error, Result};
use crate::model::{Activation, Autoencoder};
use crate::train::checkpoint::{load_model, WeightsInfo, MODEL_FILE};
use crate::train::run::{load_data, read_config};

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
        if !weights.exists() {
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
        self.config.model.preset.activation()
    }

    /// The data scale of the model.
    pub fn scale(&self) -> Scale {
        self.activation().scale()
    }

    /// Loads the run's dataset (same split as in training).
    pub fn data(&self, data_dir: &Path, allow_download: bool) -> Result<Dataset> {
        load_data(&self.config, data_dir, allow_download)
    }

    /// Where outputs go: `out` or the run folder.
    pub fn out_dir(&self, out: Option<&Path>) -> Result<PathBuf> {
        let d = out
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.dir.clone());
        std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
        Ok(d)
    }
}
