//! `resume.safetensors`: Adam's state (burn's burnpack bytes as one u8 tensor) and the
//! schedule state, saved together with `model.safetensors` and bound to it by the SHA-256 of
//! the weights file it was saved with.

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::Bytes;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use super::checkpoint::{
    metadata, model_bytes, read, sha256_hex, sort_metadata, TrainedTo, MODEL_FILE, RESUME_FILE,
};
use super::schedule::ScheduleState;
use crate::error::{Error, Result};
use crate::fsutil::{write_atomic, write_atomic_pair};
use crate::kernels::adam::Adam;
use crate::model::{Autoencoder, ModelConfig};

/// What resuming needs besides the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResumeState {
    /// Epochs completed.
    pub epoch: usize,
    /// Learning-rate schedule state.
    pub schedule: ScheduleState,
    /// Best validation loss so far.
    pub best_valid: f64,
    /// Batches already done of epoch `epoch + 1` (an interrupted epoch), else 0.
    #[serde(default)]
    pub batch: usize,
    /// Sum of the loss over those batches, weighted by batch size.
    #[serde(default)]
    pub partial_loss_sum: f64,
    /// Images in those batches.
    #[serde(default)]
    pub partial_images: usize,
    /// SHA-256 (hex) of the `model.safetensors` saved together with this state; absent in
    /// runs written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_sha256: Option<String>,
    /// The epoch (from 1) whose validation loss is `best_valid`, whose weights are in
    /// `best.safetensors`; 0 when none yet, and in runs written before it was recorded.
    #[serde(default)]
    pub best_epoch: usize,
}

/// Saves the optimizer state for `model` and the schedule state (atomically).
pub fn save_resume(
    path: &Path,
    model: &Autoencoder,
    optim: &Adam,
    state: &ResumeState,
) -> Result<()> {
    write_atomic(path, &resume_bytes(path, model, optim, state)?)
}

/// Saves weights and resume state together: both files are written and synced under temporary
/// names first, then renamed one after the other, so a crash leaves either both old files or
/// (in the microseconds between the renames) a new model beside an old resume state, which
/// `--resume` detects.
pub fn save_checkpoint(
    dir: &Path,
    model: &Autoencoder,
    config: &ModelConfig,
    optim: &Adam,
    state: &ResumeState,
) -> Result<()> {
    let (mp, rp) = (dir.join(MODEL_FILE), dir.join(RESUME_FILE));
    let at = TrainedTo {
        epoch: state.epoch,
        batch: state.batch,
    };
    let m = model_bytes(&mp, model, config, at)?;
    let state = ResumeState {
        model_sha256: Some(sha256_hex(&m)),
        ..state.clone()
    };
    let r = resume_bytes(&rp, model, optim, &state)?;
    write_atomic_pair([(&mp, &m), (&rp, &r)])
}

fn resume_bytes(
    path: &Path,
    model: &Autoencoder,
    optim: &Adam,
    state: &ResumeState,
) -> Result<Vec<u8>> {
    let record = optim
        .to_bytes(model)
        .map_err(|e| Error::bad_file(path, format!("encoding optimizer state: {e}")))?;
    let raw: &[u8] = &record;
    let meta = HashMap::from([
        ("format".to_string(), "mnist-ae-resume".to_string()),
        (
            "state".to_string(),
            serde_json::to_string(state).unwrap_or_default(),
        ),
    ]);
    let view = TensorView::new(Dtype::U8, vec![raw.len()], raw)
        .map_err(|e| Error::bad_file(path, e.to_string()))?;
    let out = safetensors::serialize([("optimizer".to_string(), view)], &Some(meta))
        .map_err(|e| Error::bad_file(path, e.to_string()))?;
    sort_metadata(path, out)
}

/// Loads the optimizer state for `model`, and the schedule state, into `optim`.
pub fn load_resume(path: &Path, model: &Autoencoder, optim: Adam) -> Result<(Adam, ResumeState)> {
    load_resume_from(path, &read(path)?, model, optim)
}

/// Loads the bytes of a resume file into `optim`; `path` only names the file in errors.
pub fn load_resume_from(
    path: &Path,
    bytes: &[u8],
    model: &Autoencoder,
    mut optim: Adam,
) -> Result<(Adam, ResumeState)> {
    let meta = metadata(path, bytes)?;
    let state: ResumeState = meta
        .get("state")
        .and_then(|s| serde_json::from_str(s).ok())
        .ok_or_else(|| {
            Error::bad_file(
                path,
                "metadata has no valid 'state'; not an mnist-ae resume file",
            )
        })?;
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| Error::bad_file(path, format!("not a valid safetensors file ({e})")))?;
    let view = st
        .tensor("optimizer")
        .map_err(|_| Error::bad_file(path, "no 'optimizer' tensor"))?;
    let record = Bytes::from_bytes_vec(view.data().to_vec());
    // The burnpack decoder rejects truncated or foreign bytes with an error.
    optim
        .load_bytes(model, record)
        .map_err(|e| Error::bad_file(path, format!("optimizer state: {e}")))?;
    Ok((optim, state))
}
