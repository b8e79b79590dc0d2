//! Checkpoints in the run folder, each written atomically:
//! - `model.safetensors`: weights named `encoder.…` / `decoder.…` (either half loads alone),
//!   with the preset, code size, epoch and parameter ids in the metadata;
//! - `resume.safetensors`: the optimizer state (burn's burnpack bytes as one u8 tensor) and the
//!   schedule state, with the same epoch, so a resume never mixes files from two epochs.

use std::collections::HashMap;
use std::path::Path;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::ModuleOptimizer;
use burn::prelude::*;
use burn::tensor::Bytes;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use super::schedule::ScheduleState;
use crate::error::{Error, Result};
use crate::fsutil::{write_atomic, write_atomic_pair};
use crate::model::{Autoencoder, Decoder, Encoder, ModelConfig};

/// The weights file of a run.
pub const MODEL_FILE: &str = "model.safetensors";
/// The optimizer/schedule state file of a run.
pub const RESUME_FILE: &str = "resume.safetensors";

/// Dotted parameter paths, skipping the enum variant level so names do not depend on it.
#[derive(Default)]
struct PathStack {
    parts: Vec<String>,
    pushed: Vec<bool>,
}

impl PathStack {
    fn enter(&mut self, name: &str, container: &str) {
        let push = !container.starts_with("Enum:");
        if push {
            self.parts.push(name.to_string());
        }
        self.pushed.push(push);
    }
    fn exit(&mut self) {
        if self.pushed.pop() == Some(true) {
            self.parts.pop();
        }
    }
    fn path(&self) -> String {
        self.parts.join(".")
    }
}

struct Collector {
    stack: PathStack,
    tensors: Vec<(String, ParamId, Vec<usize>, Vec<f32>)>,
}

impl ModuleVisitor for Collector {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack.enter(name, container_type);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let data = param.val().into_data();
        let shape = data.shape().to_vec();
        let values = data
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap_or_default();
        self.tensors
            .push((self.stack.path(), param.id, shape, values));
    }
}

/// A module's float parameters as (dotted name, id, shape, values), with `prefix`.
fn collect<M: Module>(module: &M, prefix: &str) -> Vec<(String, ParamId, Vec<usize>, Vec<f32>)> {
    let mut c = Collector {
        stack: PathStack::default(),
        tensors: Vec::new(),
    };
    c.stack.parts.push(prefix.to_string());
    module.visit(&mut c);
    c.tensors
}

/// Loaded tensors keyed by name; the mapper takes them out and notes what does not fit.
struct Loader<'a> {
    stack: PathStack,
    st: &'a SafeTensors<'a>,
    ids: &'a HashMap<String, u64>,
    errors: Vec<String>,
    seen: Vec<String>,
}

impl ModuleMapper for Loader<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack.enter(name, container_type);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let name = self.stack.path();
        let view = match self.st.tensor(&name) {
            Ok(v) => v,
            Err(_) => {
                self.errors.push(format!("missing tensor {name}"));
                return param;
            }
        };
        self.seen.push(name.clone());
        let want = param.lazy_shape().to_vec();
        if view.shape() != want.as_slice() || view.dtype() != Dtype::F32 {
            self.errors.push(format!(
                "{name} is {:?} {:?}, the model needs F32 {:?}",
                view.dtype(),
                view.shape(),
                want
            ));
            return param;
        }
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let device = param.lazy_device();
        let tensor = Tensor::from_data(TensorData::new(values, want), &device);
        let id = self
            .ids
            .get(&name)
            .map(|&i| ParamId::from(i))
            .unwrap_or(param.id);
        param.transform_for_load(tensor, id)
    }
}

/// What `model.safetensors` says about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightsInfo {
    /// The model it holds.
    pub model: ModelConfig,
    /// Epochs trained.
    pub epoch: usize,
}

fn to_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Saves `model` to `path` (atomically).
pub fn save_model(
    path: &Path,
    model: &Autoencoder,
    config: &ModelConfig,
    epoch: usize,
) -> Result<()> {
    write_atomic(path, &model_bytes(path, model, config, epoch)?)
}

/// The bytes of `model.safetensors` for `model`.
fn model_bytes(
    path: &Path,
    model: &Autoencoder,
    config: &ModelConfig,
    epoch: usize,
) -> Result<Vec<u8>> {
    let mut tensors = collect(&model.encoder, "encoder");
    tensors.extend(collect(&model.decoder, "decoder"));
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|t| to_bytes(&t.3)).collect();
    let ids: HashMap<&str, u64> = tensors.iter().map(|t| (t.0.as_str(), t.1.val())).collect();
    let meta = HashMap::from([
        ("format".to_string(), "mnist-ae".to_string()),
        ("preset".to_string(), config.preset.name().to_string()),
        ("latent_dim".to_string(), config.latent_dim.to_string()),
        ("epoch".to_string(), epoch.to_string()),
        (
            "param_ids".to_string(),
            serde_json::to_string(&ids).unwrap_or_default(),
        ),
    ]);
    let named: Vec<(&str, &[usize], &[u8])> = tensors
        .iter()
        .zip(&bytes)
        .map(|(t, b)| (t.0.as_str(), t.2.as_slice(), b.as_slice()))
        .collect();
    serialize_f32(path, &named, meta)
}

/// Serialises little-endian F32 tensors `(name, shape, bytes)` with `meta` as safetensors;
/// `path` only names the file in errors.
pub(crate) fn serialize_f32(
    path: &Path,
    tensors: &[(&str, &[usize], &[u8])],
    meta: HashMap<String, String>,
) -> Result<Vec<u8>> {
    let views = tensors
        .iter()
        .map(|(name, shape, b)| {
            TensorView::new(Dtype::F32, shape.to_vec(), b)
                .map(|v| (name.to_string(), v))
                .map_err(|e| Error::bad_file(path, e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, &Some(meta)).map_err(|e| Error::bad_file(path, e.to_string()))
}

fn read(path: &Path) -> Result<Vec<u8>> {
    if path.is_dir() {
        return Err(Error::bad_file(
            path,
            "is a directory, expected a checkpoint file",
        ));
    }
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

fn metadata(path: &Path, bytes: &[u8]) -> Result<HashMap<String, String>> {
    let (_, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| Error::bad_file(path, format!("not a valid safetensors file ({e})")))?;
    Ok(meta.metadata().clone().unwrap_or_default())
}

fn info_from(path: &Path, meta: &HashMap<String, String>) -> Result<WeightsInfo> {
    let get = |k: &str| {
        meta.get(k).ok_or_else(|| {
            Error::bad_file(
                path,
                format!("metadata has no '{k}'; not an mnist-ae checkpoint"),
            )
        })
    };
    let preset = crate::model::Preset::parse(get("preset")?)?;
    let num = |k: &str| -> Result<usize> {
        get(k)?
            .parse()
            .map_err(|_| Error::bad_file(path, format!("metadata '{k}' is not a number")))
    };
    Ok(WeightsInfo {
        model: ModelConfig {
            preset,
            latent_dim: num("latent_dim")?,
        },
        epoch: num("epoch")?,
    })
}

/// Reads only the header of a weights file.
pub fn read_info(path: &Path) -> Result<WeightsInfo> {
    read_info_from(path, &read(path)?)
}

/// Reads only the header of the bytes of a weights file; `path` only names it in errors.
pub fn read_info_from(path: &Path, bytes: &[u8]) -> Result<WeightsInfo> {
    info_from(path, &metadata(path, bytes)?)
}

fn load_into<M: Module>(
    path: &Path,
    bytes: &[u8],
    expected: &ModelConfig,
    module: M,
    prefix: &str,
) -> Result<(M, WeightsInfo)> {
    let meta = metadata(path, bytes)?;
    let info = info_from(path, &meta)?;
    if info.model != *expected {
        return Err(Error::Checkpoint {
            path: path.to_path_buf(),
            msg: format!(
                "it holds {} with latent_dim {}, the config says {} with latent_dim {}",
                info.model.preset.name(),
                info.model.latent_dim,
                expected.preset.name(),
                expected.latent_dim
            ),
        });
    }
    let ids: HashMap<String, u64> = meta
        .get("param_ids")
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| Error::bad_file(path, format!("not a valid safetensors file ({e})")))?;
    let mut loader = Loader {
        stack: PathStack::default(),
        st: &st,
        ids: &ids,
        errors: Vec::new(),
        seen: Vec::new(),
    };
    loader.stack.parts.push(prefix.to_string());
    let module = module.map(&mut loader);
    if !loader.errors.is_empty() {
        return Err(Error::Checkpoint {
            path: path.to_path_buf(),
            msg: loader.errors.join("; "),
        });
    }
    Ok((module, info))
}

/// Loads a whole model; the file must hold exactly the model `config` describes.
pub fn load_model(
    path: &Path,
    config: &ModelConfig,
    device: &Device,
) -> Result<(Autoencoder, WeightsInfo)> {
    load_model_from(path, &read(path)?, config, config.init(device))
}

/// Loads the bytes of a weights file into `fresh`, a model built from `config`, which the file
/// must match; `path` only names the file in errors.
pub fn load_model_from(
    path: &Path,
    bytes: &[u8],
    config: &ModelConfig,
    fresh: Autoencoder,
) -> Result<(Autoencoder, WeightsInfo)> {
    let (encoder, info) = load_into(path, bytes, config, fresh.encoder, "encoder")?;
    let (decoder, _) = load_into(path, bytes, config, fresh.decoder, "decoder")?;
    Ok((Autoencoder { encoder, decoder }, info))
}

/// Loads only the encoder half.
pub fn load_encoder(path: &Path, config: &ModelConfig, device: &Device) -> Result<Encoder> {
    let bytes = read(path)?;
    Ok(load_into(path, &bytes, config, config.init(device).encoder, "encoder")?.0)
}

/// Loads only the decoder half.
pub fn load_decoder(path: &Path, config: &ModelConfig, device: &Device) -> Result<Decoder> {
    let bytes = read(path)?;
    Ok(load_into(path, &bytes, config, config.init(device).decoder, "decoder")?.0)
}

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
}

/// Saves the optimizer and schedule state (atomically).
pub fn save_resume(path: &Path, optim: &ModuleOptimizer, state: &ResumeState) -> Result<()> {
    write_atomic(path, &resume_bytes(path, optim, state)?)
}

/// Saves weights and resume state together: both files are written and synced under temporary
/// names first, then renamed one after the other, so a crash leaves either both old files or
/// (in the microseconds between the renames) a new model beside an old resume state, which
/// `--resume` detects.
pub fn save_checkpoint(
    dir: &Path,
    model: &Autoencoder,
    config: &ModelConfig,
    optim: &ModuleOptimizer,
    state: &ResumeState,
    model_epoch: usize,
) -> Result<()> {
    let (mp, rp) = (dir.join(MODEL_FILE), dir.join(RESUME_FILE));
    let m = model_bytes(&mp, model, config, model_epoch)?;
    let r = resume_bytes(&rp, optim, state)?;
    write_atomic_pair([(&mp, &m), (&rp, &r)])
}

fn resume_bytes(path: &Path, optim: &ModuleOptimizer, state: &ResumeState) -> Result<Vec<u8>> {
    let record = optim
        .into_bytes()
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
    Ok(out)
}

/// Loads the optimizer and schedule state into `optim`.
pub fn load_resume(path: &Path, optim: ModuleOptimizer) -> Result<(ModuleOptimizer, ResumeState)> {
    load_resume_from(path, &read(path)?, optim)
}

/// Loads the bytes of a resume file into `optim`; `path` only names the file in errors.
pub fn load_resume_from(
    path: &Path,
    bytes: &[u8],
    optim: ModuleOptimizer,
) -> Result<(ModuleOptimizer, ResumeState)> {
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
    let optim = optim
        .from_bytes(record)
        .map_err(|e| Error::bad_file(path, format!("optimizer state: {e}")))?;
    Ok((optim, state))
}
