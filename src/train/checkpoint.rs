//! Checkpoints in the run folder, each written atomically:
//! - `model.safetensors`: weights named `encoder.…` / `decoder.…` (either half loads alone),
//!   with the model (its spec, as in `config.json`), code size, epoch (and batch, for a checkpoint taken mid-epoch) and
//!   parameter ids in the metadata. The same weights always give the same bytes: parameter ids
//!   come from the parameters' names, and the metadata is written in sorted order.
//! - `resume.safetensors` ([`super::resume`]): the optimizer and schedule state, with the
//!   SHA-256 of the `model.safetensors` it was saved with, so a resume never pairs Adam's state
//!   with other weights (another run's, or another save's).
//!
//! Loading refuses weights that are not finite numbers.
//!
//! Why this is written here and not with burn's own store (`burn-store`'s `SafetensorsStore`,
//! which does save atomically, remap keys and adapt PyTorch names): its safetensors files carry
//! no parameter ids, and loading keeps the fresh module's ids. Resuming bit for bit pairs
//! Adam's state with parameters by id, and the ids of every run folder written so far are in
//! our `param_ids` entry (for runs made before specs, derived from the presets' old layer
//! names), so loading would have to re-apply them from our metadata anyway. It also writes its
//! metadata from a hash map (header bytes differ per process, where ours must not), does not
//! refuse non-finite weights, and its save writes one file where ours builds both files'
//! bytes first to link them by digest. What would remain ours is most of this module.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::module::Module;
use burn::prelude::*;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::model::{Autoencoder, Decoder, Encoder, ModelConfig};

/// The weights file of a run.
pub const MODEL_FILE: &str = "model.safetensors";
pub use super::resume::{load_resume, load_resume_from, save_checkpoint, save_resume, ResumeState};

/// The weights of the epoch with the lowest validation loss (same format as [`MODEL_FILE`]).
pub const BEST_FILE: &str = "best.safetensors";

/// The optimizer/schedule state file of a run.
pub const RESUME_FILE: &str = "resume.safetensors";

pub(crate) use super::params::named_tensors;
use super::params::{collect_model, Loader, PathStack};
pub use super::params::{stable, with_stable_ids};

/// What `model.safetensors` says about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightsInfo {
    /// The model it holds.
    pub model: ModelConfig,
    /// Epochs trained.
    pub epoch: usize,
    /// Batches trained of epoch `epoch + 1` when the checkpoint was taken mid-epoch (an
    /// interrupted run), else 0.
    pub batch: usize,
    /// Written before models were specs: tensors carry the preset's own layer names
    /// ([`crate::model::legacy`]).
    pub legacy: bool,
}

impl WeightsInfo {
    /// How far training got, in words: "epoch 3", or "epoch 3 + 120 batches of epoch 4".
    pub fn progress(&self) -> String {
        if self.batch == 0 {
            format!("epoch {}", self.epoch)
        } else {
            format!(
                "epoch {} + {} batches of epoch {} (interrupted mid-epoch)",
                self.epoch,
                self.batch,
                self.epoch.saturating_add(1)
            )
        }
    }
}

/// Checks that a run whose weights stand at `at` may be continued to `epochs` in total: never
/// fewer epochs than it has trained, which would leave config.json disagreeing with its
/// weights and metrics.
pub fn check_epochs(epochs: usize, at: &WeightsInfo) -> Result<()> {
    if epochs < at.epoch || (epochs == at.epoch && at.batch > 0) {
        let done = if at.batch > 0 {
            format!(
                "{} and {}",
                crate::console::plural(at.epoch, "epoch"),
                crate::console::plural(at.batch, "batch")
            )
        } else {
            crate::console::plural(at.epoch, "epoch")
        };
        return Err(Error::config(
            "epochs",
            format!(
                "{epochs}: the run has already trained {done}; config.json would disagree with its weights. \
                 HINT: give --epochs {} or more",
                at.epoch.saturating_add(usize::from(at.batch > 0))
            ),
        ));
    }
    Ok(())
}

/// Where a checkpoint's weights stand: epochs completed, and batches of the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TrainedTo {
    /// Complete epochs.
    pub epoch: usize,
    /// Batches of the next epoch (0 at an epoch's end).
    pub batch: usize,
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn to_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Saves `model`, trained for `epoch` whole epochs, to `path` (atomically).
pub fn save_model(
    path: &Path,
    model: &Autoencoder,
    config: &ModelConfig,
    epoch: usize,
) -> Result<()> {
    let at = TrainedTo { epoch, batch: 0 };
    write_atomic(path, &model_bytes(path, model, config, at)?)
}

/// The first parameter of `tensors` (from [`collect`]) holding a value that is not finite, with
/// that value.
fn first_broken(
    tensors: &[(String, burn::module::ParamId, Vec<usize>, Vec<f32>)],
) -> Option<(&str, f32)> {
    tensors.iter().find_map(|t| {
        t.3.iter()
            .find(|v| !v.is_finite())
            .map(|&v| (t.0.as_str(), v))
    })
}

/// The first parameter of `model` holding a value that is not finite (NaN or infinite), with
/// that value: training diverged even where its loss stayed finite (a ReLU passes 0 for NaN).
pub(crate) fn broken_weight(model: &Autoencoder) -> Option<(String, f32)> {
    first_broken(&collect_model(model)).map(|(name, v)| (name.to_string(), v))
}

/// The bytes of `model.safetensors` for `model`.
pub(crate) fn model_bytes(
    path: &Path,
    model: &Autoencoder,
    config: &ModelConfig,
    at: TrainedTo,
) -> Result<Vec<u8>> {
    let tensors = collect_model(model);
    if let Some((name, v)) = first_broken(&tensors) {
        return Err(Error::bad_file(
            path,
            format!("not written: {name} holds {v}; the weights are broken"),
        ));
    }
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|t| to_bytes(&t.3)).collect();
    let ids: BTreeMap<&str, u64> = tensors.iter().map(|t| (t.0.as_str(), t.1.val())).collect();
    let mut meta = HashMap::from([
        ("format".to_string(), "mnist-ae".to_string()),
        ("model".to_string(), model_json(config)),
        ("latent_dim".to_string(), config.latent_dim.to_string()),
        ("epoch".to_string(), at.epoch.to_string()),
        (
            "param_ids".to_string(),
            serde_json::to_string(&ids).unwrap_or_default(),
        ),
    ]);
    if at.batch > 0 {
        meta.insert("batch".to_string(), at.batch.to_string());
    }
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
    let typed: Vec<_> = tensors
        .iter()
        .map(|&(n, s, b)| (n, Dtype::F32, s, b))
        .collect();
    serialize(path, &typed, meta)
}

/// Serialises little-endian tensors `(name, dtype, shape, bytes)` with `meta` as safetensors.
pub(crate) fn serialize(
    path: &Path,
    tensors: &[(&str, Dtype, &[usize], &[u8])],
    meta: HashMap<String, String>,
) -> Result<Vec<u8>> {
    let views = tensors
        .iter()
        .map(|(name, dtype, shape, b)| {
            TensorView::new(*dtype, shape.to_vec(), b)
                .map(|v| (name.to_string(), v))
                .map_err(|e| Error::bad_file(path, e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::serialize(views, &Some(meta))
        .map_err(|e| Error::bad_file(path, e.to_string()))?;
    sort_metadata(path, bytes)
}

/// Rewrites a safetensors header with its `__metadata__` keys in sorted order. safetensors
/// 0.4 writes the metadata from a `HashMap`, in an order that changes from process to
/// process, so the same tensors and metadata would give different bytes. The header is a
/// length-prefixed JSON object (8 bytes little-endian length, then the JSON, space-padded);
/// the sorted form has the same length, so the data offsets stay valid.
pub(crate) fn sort_metadata(path: &Path, mut bytes: Vec<u8>) -> Result<Vec<u8>> {
    let bad = |m: &str| Error::bad_file(path, format!("serialising safetensors: {m}"));
    let n = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as usize)
        .filter(|&n| n <= bytes.len() - 8)
        .ok_or_else(|| bad("no header"))?;
    let text = std::str::from_utf8(&bytes[8..8 + n]).map_err(|e| bad(&e.to_string()))?;
    let header: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(text.trim_end()).map_err(|e| bad(&e.to_string()))?;
    let mut sorted = serde_json::to_string(&header)
        .map_err(|e| bad(&e.to_string()))?
        .into_bytes();
    if sorted.len() > n {
        return Err(bad("sorted header is longer"));
    }
    sorted.resize(n, b' ');
    bytes[8..8 + n].copy_from_slice(&sorted);
    Ok(bytes)
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>> {
    crate::fsutil::read(path)
}

pub(crate) fn metadata(path: &Path, bytes: &[u8]) -> Result<HashMap<String, String>> {
    let (_, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| Error::bad_file(path, format!("not a valid safetensors file ({e})")))?;
    Ok(meta.metadata().clone().unwrap_or_default())
}

/// The `model` metadata entry: the model config as JSON (its layer strings).
pub(crate) fn model_json(config: &ModelConfig) -> String {
    serde_json::to_string(config).unwrap_or_default()
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
    let num = |k: &str| -> Result<usize> {
        get(k)?
            .parse()
            .map_err(|_| Error::bad_file(path, format!("metadata '{k}' is not a number")))
    };
    let (model, legacy) = match meta.get("model") {
        Some(json) => {
            let model: ModelConfig = serde_json::from_str(json).map_err(|e| {
                Error::bad_file(path, format!("metadata 'model' is not a model ({e})"))
            })?;
            (model, false)
        }
        // Written before models were specs: a preset and its code size.
        None => {
            let preset = crate::model::Preset::parse(get("preset")?)?;
            (ModelConfig::of_preset(preset, num("latent_dim")?), true)
        }
    };
    Ok(WeightsInfo {
        model,
        epoch: num("epoch")?,
        batch: if meta.contains_key("batch") {
            num("batch")?
        } else {
            0
        },
        legacy,
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
    if info.model.spec != expected.spec || info.model.latent_dim != expected.latent_dim {
        let what = |m: &ModelConfig| format!("{} with latent_dim {}", m.name(), m.latent_dim);
        let (held, want) = (what(&info.model), what(expected));
        let msg = if held == want {
            format!(
                "it holds another {held} architecture than the config's: {} / {}",
                crate::model::spec::layers_to_string(&info.model.spec.encoder),
                crate::model::spec::layers_to_string(&info.model.spec.decoder)
            )
        } else {
            format!("it holds {held}, the config says {want}")
        };
        return Err(Error::Checkpoint {
            path: path.to_path_buf(),
            msg,
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
        legacy: info.legacy.then_some(info.model.preset).flatten(),
        st: &st,
        ids: &ids,
        errors: Vec::new(),
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
    load_model_from(path, &read(path)?, config, config.init(device)?)
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
    Ok(load_into(
        path,
        &bytes,
        config,
        config.init(device)?.encoder,
        "encoder",
    )?
    .0)
}

/// Loads only the decoder half.
pub fn load_decoder(path: &Path, config: &ModelConfig, device: &Device) -> Result<Decoder> {
    let bytes = read(path)?;
    Ok(load_into(
        path,
        &bytes,
        config,
        config.init(device)?.decoder,
        "decoder",
    )?
    .0)
}
