//! PyTorch interop: `export` writes a run's weights as the state dict of the PyTorch module of
//! its spec, and that module as Python code ([`pytorch`]); `import` makes a run folder from
//! such a state dict. Conv weights are OIHW and transposed-conv weights (in, out, kH, kW) on
//! both sides; linear weights are transposed (burn stores in×out, PyTorch out×in).

pub mod pytorch;

use std::collections::HashMap;
use std::path::Path;

use burn::prelude::*;
use safetensors::tensor::Dtype;
use safetensors::SafeTensors;

use crate::config::TrainConfig;
use crate::error::{Error, Result};
use crate::fsutil::{write_atomic, write_json};
use crate::model::ModelConfig;
use crate::rundir::CONFIG_FILE;
use crate::train::checkpoint::{
    load_model, model_json, named_tensors, save_model, serialize, MODEL_FILE,
};
use pytorch::{from_torch, module_code, to_torch};

/// Every F32 tensor of a safetensors file: name → (shape, values).
type Tensors = HashMap<String, (Vec<usize>, Vec<f32>)>;

/// Reads every F32 tensor of a safetensors file, and its metadata. Tensors of other types are
/// left out only where `skip` accepts their name (PyTorch's integer `num_batches_tracked`).
fn read_tensors(
    path: &Path,
    skip: impl Fn(&str) -> bool,
) -> Result<(Tensors, HashMap<String, String>)> {
    let bytes = crate::fsutil::read(path)?;
    let bad = |e: &dyn std::fmt::Display| {
        Error::bad_file(path, format!("not a valid safetensors file ({e})"))
    };
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(&e))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(&e))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 && skip(&name) {
            continue;
        }
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

/// A tensor to write: name, dtype, shape, little-endian bytes.
type Raw = (String, Dtype, Vec<usize>, Vec<u8>);

fn f32_raw(name: String, shape: Vec<usize>, v: &[f32]) -> Raw {
    let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    (name, Dtype::F32, shape, bytes)
}

fn write_tensors(path: &Path, tensors: &[Raw], meta: HashMap<String, String>) -> Result<()> {
    let named: Vec<(&str, Dtype, &[usize], &[u8])> = tensors
        .iter()
        .map(|t| (t.0.as_str(), t.1, t.2.as_slice(), t.3.as_slice()))
        .collect();
    write_atomic(path, &serialize(path, &named, meta)?)
}

/// Where `export --torch FILE` writes the module's Python code: next to FILE, named after it
/// (`weights.safetensors` → `weights.py`).
pub fn code_path(weights: &Path) -> std::path::PathBuf {
    weights.with_extension("py")
}

/// The `source` metadata of the weights `export` writes.
const EXPORT_SOURCE: &str = "mnist-ae export";
/// The `source` metadata of the reference files `export --reference` writes.
const REFERENCE_SOURCE: &str = "mnist-ae export --reference";
/// How the module code `export` writes begins.
const CODE_HEAD: &str = "\"\"\"The PyTorch module of an mnist-ae model";

/// Checks the files `export --torch torch [--reference reference]` would write, before any is
/// written: the weights, the module's code next to them ([`code_path`]) and the reference are
/// three different files, and each one that exists is a regular file that an earlier `export`
/// wrote (weights, code or reference, as its role), so that neither a run's own files nor a
/// user's are ever replaced.
pub fn check_export_targets(torch: &Path, reference: Option<&Path>) -> Result<()> {
    let code = code_path(torch);
    if code == torch {
        return Err(Error::config(
            "torch",
            format!(
                "{}: name the weights file with another extension than .py (e.g. .safetensors); the module's code goes to a .py file next to it",
                torch.display()
            ),
        ));
    }
    let targets: Vec<(&str, &Path)> = [
        ("the weights (--torch)", torch),
        ("the module code (next to --torch)", code.as_path()),
    ]
    .into_iter()
    .chain(reference.map(|r| ("the reference (--reference)", r)))
    .collect();
    for (i, (role, path)) in targets.iter().enumerate() {
        crate::fsutil::check_replaceable(path)?;
        if let Some((other, _)) = targets[..i]
            .iter()
            .find(|(_, p)| crate::fsutil::same_path(p, path))
        {
            return Err(Error::bad_file(
                path,
                format!("would be both {other} and {role}; choose different names"),
            ));
        }
        if path.is_file() && !written_by_export(path, i) {
            return Err(Error::bad_file(
                path,
                format!(
                    "exists and is not {} that `mnist-ae export` wrote; refusing to replace it (remove it or choose another name)",
                    ["weights", "module code", "a reference file"][i]
                ),
            ));
        }
    }
    Ok(())
}

/// Whether the existing file `path` is what `export` writes in role `role` (0 the weights, 1
/// the module code, 2 a reference file).
fn written_by_export(path: &Path, role: usize) -> bool {
    use std::io::Read;
    // Only the beginning is read: the file may be anything, of any size.
    let Ok(mut file) = std::fs::File::open(path) else {
        return false;
    };
    if role == 1 {
        let mut head = Vec::new();
        let read = (&mut file)
            .take(CODE_HEAD.len() as u64)
            .read_to_end(&mut head);
        return read.is_ok() && head == CODE_HEAD.as_bytes();
    }
    // A safetensors file begins with its header's length (8 bytes, little-endian), then the
    // header, JSON whose `__metadata__` holds the metadata.
    let mut len = [0u8; 8];
    if file.read_exact(&mut len).is_err() {
        return false;
    }
    let len = u64::from_le_bytes(len);
    if len > MAX_HEADER {
        return false;
    }
    let mut header = Vec::new();
    if (&mut file).take(len).read_to_end(&mut header).is_err() {
        return false;
    }
    let Ok(header) = serde_json::from_slice::<serde_json::Value>(&header) else {
        return false;
    };
    let meta = &header["__metadata__"];
    let source = meta.get("source").and_then(|v| v.as_str());
    match role {
        0 => source == Some(EXPORT_SOURCE),
        // Reference files written before they carried a source hold a preset and nothing else.
        _ => match source {
            Some(s) => s == REFERENCE_SOURCE,
            None => meta
                .as_object()
                .is_some_and(|m| m.len() == 1 && m.contains_key("preset")),
        },
    }
}

/// The largest safetensors header read when checking a file (as the safetensors crate's own
/// limit).
const MAX_HEADER: u64 = 100_000_000;

/// What `export` wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    /// Tensors in the state dict.
    pub tensors: usize,
    /// The Python module's file.
    pub code: std::path::PathBuf,
}

/// Writes the weights of the run in `run_dir` as the state dict (safetensors) of its PyTorch
/// module to `out`, and the module's code to [`code_path`]`(out)`.
pub fn export_torch(run_dir: &Path, out: &Path) -> Result<Exported> {
    let config = crate::rundir::read_config(run_dir)?;
    let model = &config.model;
    let weights = run_dir.join(config.keep.file());
    let (m, _) = load_model(&weights, model, &Device::flex())?;
    let mut named = Vec::new();
    for (name, shape, v) in named_tensors(&m) {
        let t = to_torch(&model.spec, &name).ok_or_else(|| {
            Error::bad_file(
                &weights,
                format!("tensor {name} has no PyTorch counterpart"),
            )
        })?;
        let (shape, v) = if t.transpose {
            transpose(&shape, &v)
        } else {
            (shape, v)
        };
        if t.batch_norm && t.name.ends_with(".running_mean") {
            // PyTorch's count of training batches seen by a batch norm; it reads it only with
            // momentum=None (a cumulative average), and the module uses momentum 0.1 as
            // mnist-ae does, so no output depends on it.
            let module = t.name.trim_end_matches(".running_mean");
            named.push((
                format!("{module}.num_batches_tracked"),
                Dtype::I64,
                vec![],
                0i64.to_le_bytes().to_vec(),
            ));
        }
        named.push(f32_raw(t.name, shape, &v));
    }
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let meta = HashMap::from([
        ("model".to_string(), model_json(model)),
        ("preset".to_string(), model.name().to_string()),
        ("latent_dim".to_string(), model.latent_dim.to_string()),
        ("source".to_string(), EXPORT_SOURCE.to_string()),
    ]);
    let code = code_path(out);
    let file_name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let source = module_code(model, &file_name)?;
    write_tensors(out, &named, meta)?;
    write_atomic(&code, source.as_bytes())?;
    Ok(Exported {
        tensors: named.len(),
        code,
    })
}

/// Makes a run folder from PyTorch weights of `model` (a state dict saved with safetensors,
/// of the module `export` writes for that model). The run can then be evaluated and explored
/// like a trained one (it has no optimizer state, so it cannot be resumed).
pub fn import_torch(model: ModelConfig, weights: &Path, run_dir: &Path) -> Result<()> {
    model.validate()?;
    // The model, the file's tensors, their rearranged copy and the model loaded from them.
    crate::train::run::check_model_memory(&model, 16, "in the copies an import holds")?;
    // A folder this creates is removed again if the import fails before writing into it.
    let _held = crate::rundir::DirLock::acquire(run_dir, "import")?;
    for held in [MODEL_FILE, CONFIG_FILE] {
        if run_dir.join(held).exists() {
            return Err(Error::config(
                "out",
                format!(
                    "{} already holds a run ({held}); choose another --out",
                    run_dir.display()
                ),
            ));
        }
    }
    let (tensors, file_meta) = read_tensors(weights, |n| n.ends_with(".num_batches_tracked"))?;
    // Every tensor's shape as the model holds it, to check the file's in PyTorch's terms.
    let needed: Vec<(String, Vec<usize>)> = named_tensors(&model.init(&Device::flex())?)
        .into_iter()
        .map(|(name, shape, _)| (name, shape))
        .collect();
    // A file `export` wrote names the model it came from: a mismatch says which to ask for.
    let hint = match (file_meta.get("preset"), file_meta.get("latent_dim")) {
        (Some(preset), Some(latent))
            if (preset.as_str(), latent.as_str())
                != (model.name(), model.latent_dim.to_string().as_str()) =>
        {
            let from = if preset == "custom" {
                "a model of its own (--encoder/--decoder)".to_string()
            } else {
                format!("the {preset} model")
            };
            format!("; HINT: the file was exported from {from} with --latent-dim {latent}")
        }
        _ => String::new(),
    };
    let bad = |msg: String| Error::Checkpoint {
        path: weights.to_path_buf(),
        msg: format!("{msg}{hint}"),
    };
    // In the order of their names, so that the first mismatch named is always the same.
    let mut tensors: Vec<_> = tensors.into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let mut ours = Vec::new();
    for (name, (shape, v)) in tensors {
        let Some(t) = from_torch(&model.spec, &name) else {
            return Err(bad(format!(
                "tensor {name} does not belong to the {} model",
                model.name()
            )));
        };
        if let Some((_, want)) = needed.iter().find(|(n, _)| *n == t.name) {
            let want: Vec<usize> = if t.transpose {
                want.iter().rev().copied().collect()
            } else {
                want.clone()
            };
            if shape != want {
                return Err(bad(format!(
                    "tensor {name} has shape {shape:?}, the {} model needs {want:?}",
                    model.name()
                )));
            }
        }
        if name.ends_with(".running_var") {
            if let Some(x) = v.iter().find(|x| **x < 0.0) {
                return Err(bad(format!(
                    "tensor {name} holds {x}: a batch norm's running variance is never negative"
                )));
            }
        }
        let (shape, v) = if t.transpose {
            transpose(&shape, &v)
        } else {
            (shape, v)
        };
        ours.push(f32_raw(t.name, shape, &v));
    }
    // Every tensor the model needs, named as PyTorch names it.
    let have: std::collections::HashSet<&str> = ours.iter().map(|t| t.0.as_str()).collect();
    let missing: Vec<String> = needed
        .into_iter()
        .filter(|(name, _)| !have.contains(name.as_str()))
        .map(|(name, _)| to_torch(&model.spec, &name).map_or(name, |n| n.name))
        .collect();
    if !missing.is_empty() {
        return Err(bad(format!(
            "the {} model also needs {}",
            model.name(),
            missing.join(", ")
        )));
    }
    // Rebuild through the regular loader, which checks every name, shape and value.
    let staged = run_dir.join(".import.safetensors");
    let meta = HashMap::from([
        ("format".to_string(), "mnist-ae".to_string()),
        ("model".to_string(), model_json(&model)),
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
    let mut config = match model.preset {
        Some(p) => TrainConfig::for_preset(p),
        None => TrainConfig::for_model(model.clone()),
    };
    config.model = model.clone();
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
    let meta = HashMap::from([
        ("preset".to_string(), run.config.model.name().to_string()),
        ("source".to_string(), REFERENCE_SOURCE.to_string()),
    ]);
    write_tensors(
        out,
        &[
            f32_raw("input".into(), shape.clone(), &x),
            f32_raw("output".into(), shape, &y),
        ],
        meta,
    )?;
    Ok(n)
}
