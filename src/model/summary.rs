//! The model summary: every layer's output shape and parameter count, from a traced forward
//! pass of one blank image.

use burn::prelude::*;

use super::layers::{Collect, LayerRow};
use super::{Autoencoder, ModelConfig};
use crate::data::SIDE;

/// A model's layers and totals.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    /// Preset name.
    pub model: String,
    /// Code size.
    pub latent_dim: usize,
    /// Rows in forward order (encoder, then decoder).
    pub layers: Vec<LayerRow>,
    /// Encoder parameters.
    pub encoder_params: usize,
    /// Decoder parameters.
    pub decoder_params: usize,
    /// All parameters.
    pub total_params: usize,
}

/// Traces `model` (built from `config`) on a `[1, 1, 28, 28]` input.
pub fn summarize(config: &ModelConfig, model: &Autoencoder, device: &Device) -> Summary {
    let mut t = Collect::default();
    let x = Tensor::<4>::zeros([1, 1, SIDE, SIDE], device);
    t.0.push(LayerRow {
        name: "input".into(),
        layer: "Input".into(),
        output: vec![1, 1, SIDE, SIDE],
        params: 0,
    });
    let z = model.encoder.forward_traced(x, &mut t);
    let y = model.decoder.forward_traced(z, &mut t);
    let act = config.preset.activation();
    t.0.push(LayerRow {
        name: "output".into(),
        layer: format!("{act:?}"),
        output: y.dims().to_vec(),
        params: 0,
    });
    let encoder_params = model.encoder.num_params();
    let decoder_params = model.decoder.num_params();
    Summary {
        model: config.preset.name().into(),
        latent_dim: config.latent_dim,
        layers: t.0,
        encoder_params,
        decoder_params,
        total_params: encoder_params + decoder_params,
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "model {} (latent_dim {})", self.model, self.latent_dim)?;
        writeln!(
            f,
            "{:<20} {:<36} {:<18} {:>10}",
            "name", "layer", "output", "params"
        )?;
        for r in &self.layers {
            let shape = format!("{:?}", r.output);
            writeln!(
                f,
                "{:<20} {:<36} {:<18} {:>10}",
                r.name, r.layer, shape, r.params
            )?;
        }
        writeln!(f, "encoder params: {}", self.encoder_params)?;
        writeln!(f, "decoder params: {}", self.decoder_params)?;
        write!(f, "total params:   {}", self.total_params)
    }
}
