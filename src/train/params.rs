//! A model's parameters by name: dotted paths (`encoder.layers.0.weight`) as the checkpoint
//! files name them, ids derived from those names, and loading named tensors into a module.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::prelude::*;
use safetensors::tensor::Dtype;
use safetensors::SafeTensors;

use crate::model::{Autoencoder, ModelConfig, Preset};

/// Dotted parameter paths, skipping the enum variant level so names do not depend on it.
#[derive(Default)]
pub(crate) struct PathStack {
    pub(crate) parts: Vec<String>,
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
pub(crate) fn collect<M: Module>(
    module: &M,
    prefix: &str,
) -> Vec<(String, ParamId, Vec<usize>, Vec<f32>)> {
    let mut c = Collector {
        stack: PathStack::default(),
        tensors: Vec::new(),
    };
    c.stack.parts.push(prefix.to_string());
    module.visit(&mut c);
    c.tensors
}

/// Loaded tensors keyed by name; the mapper takes them out and notes what does not fit.
pub(crate) struct Loader<'a> {
    pub(crate) stack: PathStack,
    /// The preset of a pre-spec file, whose tensors have the preset's own names.
    pub(crate) legacy: Option<Preset>,
    pub(crate) st: &'a SafeTensors<'a>,
    pub(crate) ids: &'a HashMap<String, u64>,
    pub(crate) errors: Vec<String>,
}

impl ModuleMapper for Loader<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack.enter(name, container_type);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let name = match self.legacy {
            Some(p) => {
                let new = self.stack.path();
                crate::model::legacy::old_name(p, &new).unwrap_or(new)
            }
            None => self.stack.path(),
        };
        let view = match self.st.tensor(&name) {
            Ok(v) => v,
            Err(_) => {
                self.errors.push(format!("missing tensor {name}"));
                return param;
            }
        };
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
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            self.errors.push(format!(
                "{name} holds {} at index {i}; the weights are broken (a diverged or corrupted model)",
                values[i]
            ));
            return param;
        }
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
/// Gives every parameter an id derived from its name (`encoder.layers.0.weight`), so that a
/// model's ids, which the weights file records and Adam's state is keyed by, are the same in
/// every run: burn's own ids are random, and would make two identical runs' files differ.
pub fn with_stable_ids<M: Module>(module: M, prefix: &str) -> M {
    struct Ids {
        stack: PathStack,
    }
    impl ModuleMapper for Ids {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.stack.enter(name, container_type);
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.stack.exit();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let value = param.val();
            param.transform_for_load(value, crate::model::stack::stable_id(&self.stack.path()))
        }
    }
    let mut ids = Ids {
        stack: PathStack::default(),
    };
    ids.stack.parts.push(prefix.to_string());
    module.map(&mut ids)
}

/// A model with stable parameter ids (see [`with_stable_ids`]).
pub fn stable(model: Autoencoder) -> Autoencoder {
    Autoencoder {
        encoder: with_stable_ids(model.encoder, "encoder"),
        decoder: with_stable_ids(model.decoder, "decoder"),
    }
}

/// A freshly initialised model with stable ids on the training `device` (autodiff, seeded with
/// `seed`), its weights drawn from `seed`. The draws are made on the CPU whatever the device (a
/// GPU backend has a random generator of its own), so one seed starts every device from the
/// same weights.
pub fn initial(
    config: &ModelConfig,
    seed: u64,
    device: &Device,
) -> crate::error::Result<Autoencoder> {
    if crate::kernels::fused_here(device) {
        return Ok(stable(config.init(device)?));
    }
    let cpu = Device::flex().autodiff();
    cpu.seed(seed);
    // `stable` reads every parameter, so they are drawn here, on the CPU, before the move.
    Ok(stable(config.init(&cpu)?).fork(device))
}

/// A model's float tensors (weights and batch-norm statistics) as (name, id, shape, values),
/// the encoder's first.
pub(crate) fn collect_model(model: &Autoencoder) -> Vec<(String, ParamId, Vec<usize>, Vec<f32>)> {
    let mut tensors = collect(&model.encoder, "encoder");
    tensors.extend(collect(&model.decoder, "decoder"));
    tensors
}

/// A model's float tensors (weights and batch-norm statistics) as (name, shape, values).
pub fn named_tensors(model: &Autoencoder) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    collect_model(model)
        .into_iter()
        .map(|(n, _, s, v)| (n, s, v))
        .collect()
}
