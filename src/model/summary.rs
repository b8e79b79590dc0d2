//! The model summary: every layer's output shape and parameter count.

use super::ModelConfig;
use crate::error::Result;

/// One row of a model summary.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LayerRow {
    /// Where the layer sits, e.g. `encoder.0` (its index in the layer list), as the module
    /// `export` writes names it (a variational encoder's heads: `fc_mu`, `fc_logvar`).
    pub name: String,
    /// What it is, in PyTorch's words, e.g. `Conv2d(1→16, k3, s2, p1)`.
    pub layer: String,
    /// Output shape, batch first.
    pub output: Vec<usize>,
    /// Trainable parameters.
    pub params: usize,
}

/// A model's layers and totals.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    /// Preset name, or `custom`.
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

/// The summary of `config`'s model, worked out from its spec (no weights are built).
pub fn summarize(config: &ModelConfig) -> Result<Summary> {
    config.spec.summary(config.name())
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "model {} (latent_dim {})", self.model, self.latent_dim)?;
        writeln!(
            f,
            "{:<16} {:<40} {:<18} {:>10}",
            "name", "layer", "output", "params"
        )?;
        for r in &self.layers {
            let shape = format!("{:?}", r.output);
            writeln!(
                f,
                "{:<16} {:<40} {:<18} {:>10}",
                r.name, r.layer, shape, r.params
            )?;
        }
        writeln!(f, "encoder params: {}", self.encoder_params)?;
        writeln!(f, "decoder params: {}", self.decoder_params)?;
        write!(f, "total params:   {}", self.total_params)
    }
}
