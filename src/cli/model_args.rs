//! The flags that choose a model, shared by `train`, `sweep`, `summary` and `import`: a
//! preset, or your own layers (`--encoder`/`--decoder`, or an `--arch` file).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use mnist_ae::model::arch::{Init, ModelSpec};
use mnist_ae::model::{Activation, ModelConfig, Preset};

use super::choices::preset_parser;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OutputArg {
    Sigmoid,
    Tanh,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum InitArg {
    Pytorch,
    Xavier,
}

/// `--latent-dim`: the code size, for the commands that build one model.
#[derive(Debug, Args)]
pub struct LatentArg {
    /// Code size, 1 to 4096 [default: the preset's: conv64 64, conv7 64, linear3 3, mlp 32,
    /// cae32 32, vae 16]. With your own layers, resizes the encoder's last layer.
    #[arg(long)]
    pub latent_dim: Option<usize>,
}

/// Which model: a preset, or layer lists.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Model preset (see `mnist-ae models`).
    #[arg(long, default_value = "conv64", value_parser = preset_parser(), conflicts_with_all = ["encoder", "arch"])]
    pub model: Preset,
    /// Your own encoder: a layer list from 1×28×28 images to a flat code, such as
    /// "conv(16,3,s2,p1) relu flatten linear(16)" (grammar: README, "Your own model").
    #[arg(long, requires = "decoder", conflicts_with = "arch")]
    pub encoder: Option<String>,
    /// Your own decoder: a layer list from the code to 1×28×28 logits, or `mirror`.
    #[arg(long, requires = "encoder")]
    pub decoder: Option<String>,
    /// With --encoder: the output activation (sigmoid: data in [0,1]; tanh: [-1,1]).
    #[arg(long, value_enum, default_value = "sigmoid", requires = "encoder")]
    output: OutputArg,
    /// With --encoder: a variational model (the encoder's last linear layer gives mean and
    /// log-variance).
    #[arg(long, requires = "encoder")]
    variational: bool,
    /// With --encoder: initialisation of linear layers.
    #[arg(long, value_enum, default_value = "pytorch", requires = "encoder")]
    init: InitArg,
    /// A model file (TOML: encoder, decoder, output, variational, init; see `models --show`).
    #[arg(long, value_name = "FILE")]
    pub arch: Option<PathBuf>,
}

impl ModelArgs {
    /// Whether the model is of the user's own (`--encoder` or `--arch`).
    pub fn is_custom(&self) -> bool {
        self.encoder.is_some() || self.arch.is_some()
    }

    /// The model the flags describe, with code size `latent_dim` when given, checked.
    pub fn config(&self, latent_dim: Option<usize>) -> Result<ModelConfig> {
        let custom = match (&self.arch, &self.encoder, &self.decoder) {
            (Some(path), _, _) => Some(ModelSpec::read(path)?),
            (None, Some(e), Some(d)) => {
                let output = match self.output {
                    OutputArg::Sigmoid => Activation::Sigmoid,
                    OutputArg::Tanh => Activation::Tanh,
                };
                let init = match self.init {
                    InitArg::Pytorch => Init::Pytorch,
                    InitArg::Xavier => Init::Xavier,
                };
                Some(ModelSpec::parse(e, d, output, self.variational, init)?)
            }
            _ => None,
        };
        let m = match custom {
            Some(spec) => ModelConfig::custom(spec)?,
            None => ModelConfig::preset(self.model),
        };
        let m = match latent_dim {
            Some(l) if l != m.latent_dim => m.with_latent(l)?,
            _ => m,
        };
        m.validate()?;
        Ok(m)
    }
}
