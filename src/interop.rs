//! PyTorch interop: weights renamed and laid out as the PyTorch modules of the same
//! architectures (`bench/torch_models.py`) expect them: `nn.Sequential` indices such as
//! `encoder.0.weight`, conv weights OIHW and transposed-conv weights (in, out, kH, kW) as in
//! burn, linear weights out×in (burn stores in×out, so they are transposed).

use std::collections::HashMap;
use std::path::Path;

use burn::prelude::*;
use safetensors::tensor::Dtype;
use safetensors::SafeTensors;

use crate::config::TrainConfig;
use crate::error::{Error, Result};
use crate::fsutil::{write_atomic, write_json};
use crate::model::{ModelConfig, Preset};
use crate::rundir::CONFIG_FILE;
use crate::train::checkpoint::{load_model, save_model, serialize_f32, MODEL_FILE};

/// Our layer path → the PyTorch module path, per preset (the part before `.weight`/`.bias`).
fn layer_table(preset: Preset) -> Vec<(String, String)> {
    let t = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    match preset {
        Preset::Conv64 => t(&[
            ("encoder.conv1", "encoder.0"),
            ("encoder.conv2", "encoder.2"),
            ("encoder.conv3", "encoder.4"),
            ("decoder.deconv1", "decoder.1"),
            ("decoder.deconv2", "decoder.3"),
            ("decoder.deconv3", "decoder.5"),
            ("decoder.deconv4", "decoder.7"),
        ]),
        Preset::Conv7 => t(&[
            ("encoder.conv1", "encoder.0"),
            ("encoder.conv2", "encoder.2"),
            ("encoder.conv3", "encoder.4"),
            ("decoder.deconv1", "decoder.1"),
            ("decoder.deconv2", "decoder.3"),
            ("decoder.deconv3", "decoder.5"),
        ]),
        // Flatten, then Linear/ReLU pairs; the decoder's Linear layers sit at even indices.
        Preset::Linear3 | Preset::Mlp => {
            let n = if preset == Preset::Linear3 { 4 } else { 2 };
            (0..n)
                .flat_map(|i| {
                    [
                        (
                            format!("encoder.stack.layers.{i}"),
                            format!("encoder.{}", 1 + 2 * i),
                        ),
                        (
                            format!("decoder.stack.layers.{i}"),
                            format!("decoder.{}", 2 * i),
                        ),
                    ]
                })
                .collect()
        }
        Preset::Cae32 => t(&[
            ("encoder.conv1", "encoder.0"),
            ("encoder.conv2", "encoder.2"),
            ("encoder.fc", "encoder.5"),
            ("decoder.fc", "decoder.0"),
            ("decoder.deconv1", "decoder.3"),
            ("decoder.deconv2", "decoder.5"),
        ]),
        Preset::Vae => t(&[
            ("encoder.conv1", "encoder.0"),
            ("encoder.conv2", "encoder.2"),
            ("encoder.fc_mu", "fc_mu"),
            ("encoder.fc_logvar", "fc_logvar"),
            ("decoder.fc", "decoder.0"),
            ("decoder.deconv1", "decoder.3"),
            ("decoder.deconv2", "decoder.5"),
        ]),
    }
}

fn rename(name: &str, table: &[(String, String)], forward: bool) -> Option<String> {
    let (layer, param) = name.rsplit_once('.')?;
    table
        .iter()
        .find(|(ours, theirs)| {
            if forward {
                ours == layer
            } else {
                theirs == layer
            }
        })
        .map(|(ours, theirs)| format!("{}.{param}", if forward { theirs } else { ours }))
}

/// Reads every F32 tensor of a safetensors file: name → (shape, values), and its metadata.
type Tensors = HashMap<String, (Vec<usize>, Vec<f32>)>;

fn read_tensors(path: &Path) -> Result<(Tensors, HashMap<String, String>)> {
    let bytes = crate::fsutil::read(path)?;
    let bad = |e: &dyn std::fmt::Display| {
        Error::bad_file(path, format!("not a valid safetensors file ({e})"))
    };
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(&e))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(&e))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(Error::bad_file(
                path,
                format!("{name} is {:?}, expected F32", view.dtype()),
            ));
        }
        let v = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        out.insert(name, (view.shape().to_vec(), v));
    }
    Ok((out, meta.metadata().clone().unwrap_or_default()))
}

/// Swaps the two axes of a row-major `[r, c]` matrix.
fn transpose(shape: &[usize], v: &[f32]) -> (Vec<usize>, Vec<f32>) {
    let (r, c) = (shape[0], shape[1]);
    let mut out = vec![0.0; v.len()];
    for i in 0..r {
        for j in 0..c {
            out[j * r + i] = v[i * c + j];
        }
    }
    (vec![c, r], out)
}

fn write_tensors(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    meta: HashMap<String, String>,
) -> Result<()> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|t| t.2.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let named: Vec<(&str, &[usize], &[u8])> = tensors
        .iter()
        .zip(&bytes)
        .map(|(t, b)| (t.0.as_str(), t.1.as_slice(), b.as_slice()))
        .collect();
    write_atomic(path, &serialize_f32(path, &named, meta)?)
}

/// Writes the weights of the run in `run_dir` as a PyTorch state dict in safetensors.
pub fn export_torch(run_dir: &Path, out: &Path) -> Result<usize> {
    let config = crate::rundir::read_config(run_dir)?;
    let (tensors, _) = read_tensors(&run_dir.join(MODEL_FILE))?;
    let table = layer_table(config.model.preset);
    let mut named = Vec::new();
    for (name, (shape, v)) in tensors {
        let torch = rename(&name, &table, true).ok_or_else(|| {
            Error::bad_file(
                run_dir.join(MODEL_FILE),
                format!("tensor {name} has no PyTorch counterpart"),
            )
        })?;
        let (shape, v) = if shape.len() == 2 {
            transpose(&shape, &v)
        } else {
            (shape, v)
        };
        named.push((torch, shape, v));
    }
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let meta = HashMap::from([
        ("preset".to_string(), config.model.preset.name().to_string()),
        (
            "latent_dim".to_string(),
            config.model.latent_dim.to_string(),
        ),
        ("source".to_string(), "mnist-ae export".to_string()),
    ]);
    let n = named.len();
    write_tensors(out, &named, meta)?;
    Ok(n)
}

/// Makes a run folder from PyTorch weights of `model` (a state dict saved with safetensors).
/// The run can then be evaluated and explored like a trained one (it has no optimizer state,
/// so it cannot be resumed).
pub fn import_torch(model: ModelConfig, weights: &Path, run_dir: &Path) -> Result<()> {
    model.validate()?;
    let _held = crate::rundir::DirLock::acquire(run_dir, "import")?;
    if run_dir.join(MODEL_FILE).exists() {
        return Err(Error::config(
            "out",
            format!(
                "{} already holds a model; choose another --out",
                run_dir.display()
            ),
        ));
    }
    let (tensors, _) = read_tensors(weights)?;
    let table = layer_table(model.preset);
    let mut ours = Vec::new();
    for (name, (shape, v)) in tensors {
        let Some(mine) = rename(&name, &table, false) else {
            return Err(Error::Checkpoint {
                path: weights.to_path_buf(),
                msg: format!(
                    "tensor {name} does not belong to the {} preset",
                    model.preset.name()
                ),
            });
        };
        let (shape, v) = if shape.len() == 2 {
            transpose(&shape, &v)
        } else {
            (shape, v)
        };
        ours.push((mine, shape, v));
    }
    // Rebuild through the regular loader, which checks every name, shape and value.
    let staged = run_dir.join(".import.safetensors");
    let meta = HashMap::from([
        ("format".to_string(), "mnist-ae".to_string()),
        ("preset".to_string(), model.preset.name().to_string()),
        ("latent_dim".to_string(), model.latent_dim.to_string()),
        ("epoch".to_string(), "0".to_string()),
    ]);
    write_tensors(&staged, &ours, meta)?;
    let device = Device::flex();
    let loaded = load_model(&staged, &model, &device).map_err(|e| match e {
        Error::Checkpoint { msg, .. } => Error::Checkpoint {
            path: weights.to_path_buf(),
            msg,
        },
        other => other,
    });
    let _ = std::fs::remove_file(&staged);
    let (m, _) = loaded?;
    let mut config = TrainConfig::for_preset(model.preset);
    config.model = model;
    config.pin_data(None);
    save_model(&run_dir.join(MODEL_FILE), &m, &model, 0)?;
    write_json(&run_dir.join(CONFIG_FILE), &config)
}

/// Writes the first `count` test images (`input`, on the model's scale) and the run's
/// reconstructions of them (`output`) to a safetensors file, for checking an export elsewhere.
pub fn write_reference(
    run: &crate::run::Run,
    test: &crate::data::Split,
    count: usize,
    out: &Path,
) -> Result<usize> {
    let n = count.min(test.len());
    let idx: Vec<usize> = (0..n).collect();
    let x = test.scaled(&idx, run.scale());
    let y = crate::eval::reconstruct_values(run, &x);
    let shape = vec![n, 1, 28, 28];
    let meta = HashMap::from([(
        "preset".to_string(),
        run.config.model.preset.name().to_string(),
    )]);
    write_tensors(
        out,
        &[
            ("input".into(), shape.clone(), x),
            ("output".into(), shape, y),
        ],
        meta,
    )?;
    Ok(n)
}
