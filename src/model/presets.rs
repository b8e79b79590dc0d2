//! The presets: six architectures from the notebooks and tutorials our users come from, each
//! one row of [`TABLE`] (its spec as layer strings, output, initialisation and training
//! defaults). Adding a preset is adding a row (and its name to [`Preset`]).

use serde::{Deserialize, Serialize};

use super::arch::{Init, ModelSpec};
use super::spec::parse_layers;
use super::Activation;
use crate::error::{Error, Result};

/// The named architectures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// Conv AE with a 64-d adaptive-pooled code.
    Conv64,
    /// Conv AE with a 7×7 convolution to a 64-d code.
    Conv7,
    /// The 784-128-64-12-3 linear AE.
    Linear3,
    /// The 784-392-N-392-784 MLP AE with Xavier init.
    Mlp,
    /// Conv AE with a linear 32-d bottleneck and tanh output.
    Cae32,
    /// Convolutional variational autoencoder.
    Vae,
}

/// Every preset, in listing order.
pub const PRESETS: [Preset; 6] = [
    Preset::Conv64,
    Preset::Conv7,
    Preset::Linear3,
    Preset::Mlp,
    Preset::Cae32,
    Preset::Vae,
];

/// Training defaults of a preset, as the notebooks they come from used them.
#[derive(Debug, Clone, Copy)]
pub struct PresetDefaults {
    /// Code size.
    pub latent_dim: usize,
    /// Epochs.
    pub epochs: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Adam weight decay (L2, as PyTorch's `Adam(weight_decay=...)`).
    pub weight_decay: f64,
}

/// Everything that defines a preset.
struct Entry {
    preset: Preset,
    name: &'static str,
    description: &'static str,
    /// The encoder's layers; `L` stands for the code size.
    encoder: &'static str,
    /// The decoder's layers; `L` stands for the code size.
    decoder: &'static str,
    output: Activation,
    variational: bool,
    init: Init,
    defaults: PresetDefaults,
}

const fn defaults(
    latent_dim: usize,
    epochs: usize,
    batch_size: usize,
    weight_decay: f64,
) -> PresetDefaults {
    PresetDefaults {
        latent_dim,
        epochs,
        batch_size,
        weight_decay,
    }
}

/// The presets. Training defaults: conv64 and cae32 from their reference configs; conv7 and
/// linear3 from the tutorial that defines them (Adam lr 1e-3, weight decay 1e-5, batch 64);
/// mlp batch 256 as in the denoising notebook; vae as pytorch/examples/vae (batch 128, 10
/// epochs).
const TABLE: [Entry; 6] = [
    Entry {
        preset: Preset::Conv64,
        name: "conv64",
        description: "conv AE, 3 stride-2 convs + adaptive avg-pool to a 64-d code",
        encoder: "conv(16,3,s2,p1) relu conv(32,3,s2,p1) relu conv(L,3,s2,p1) relu adaptive_avgpool(1,1) flatten",
        decoder: "reshape(L,1,1) convt(32,4) relu convt(16,3,s2,p1) relu convt(8,4,s2,p1) relu convt(1,4,s2,p1)",
        output: Activation::Sigmoid,
        variational: false,
        init: Init::Pytorch,
        defaults: defaults(64, 10, 32, 0.0),
    },
    Entry {
        preset: Preset::Conv7,
        name: "conv7",
        description: "conv AE, 2 stride-2 convs + a 7x7 conv to a 64-d code",
        encoder: "conv(16,3,s2,p1) relu conv(32,3,s2,p1) relu conv(L,7) flatten",
        decoder: "reshape(L,1,1) convt(32,7) relu convt(16,3,s2,p1,op1) relu convt(1,3,s2,p1,op1)",
        output: Activation::Sigmoid,
        variational: false,
        init: Init::Pytorch,
        defaults: defaults(64, 10, 64, 1e-5),
    },
    Entry {
        preset: Preset::Linear3,
        name: "linear3",
        description: "linear AE 784-128-64-12-3",
        encoder: "flatten linear(128) relu linear(64) relu linear(12) relu linear(L)",
        decoder: "linear(12) relu linear(64) relu linear(128) relu linear(784) reshape(1,28,28)",
        output: Activation::Sigmoid,
        variational: false,
        init: Init::Pytorch,
        defaults: defaults(3, 10, 64, 1e-5),
    },
    Entry {
        preset: Preset::Mlp,
        name: "mlp",
        description: "MLP AE 784-392-N-392-784, Xavier init",
        encoder: "flatten linear(392) relu linear(L) relu",
        decoder: "linear(392) relu linear(784) reshape(1,28,28)",
        output: Activation::Sigmoid,
        variational: false,
        init: Init::Xavier,
        defaults: defaults(32, 10, 256, 0.0),
    },
    Entry {
        preset: Preset::Cae32,
        name: "cae32",
        description: "conv AE with a linear 32-d bottleneck, tanh output, data in [-1,1]",
        encoder: "conv(16,3,s2,p1) relu conv(32,3,s2,p1) relu flatten linear(L)",
        decoder: "linear(1568) relu reshape(32,7,7) convt(16,3,s2,p1,op1) relu convt(1,3,s2,p1,op1)",
        output: Activation::Tanh,
        variational: false,
        init: Init::Pytorch,
        defaults: defaults(32, 20, 64, 0.0),
    },
    Entry {
        preset: Preset::Vae,
        name: "vae",
        description: "conv variational AE, 2 stride-2 convs to mean and log-variance of a 16-d code",
        encoder: "conv(32,4,s2,p1) relu conv(64,4,s2,p1) relu flatten linear(L)",
        decoder: "linear(3136) relu reshape(64,7,7) convt(32,4,s2,p1) relu convt(1,4,s2,p1)",
        output: Activation::Sigmoid,
        variational: true,
        init: Init::Pytorch,
        defaults: defaults(16, 10, 128, 0.0),
    },
];

impl Preset {
    fn entry(self) -> &'static Entry {
        // Every preset has its row (tested).
        TABLE.iter().find(|e| e.preset == self).unwrap_or(&TABLE[0])
    }

    /// The preset's name on the command line and in `config.json`.
    pub fn name(self) -> &'static str {
        self.entry().name
    }

    /// Whether the preset is variational (its loss adds a KL term; samples come from the prior).
    pub fn is_variational(self) -> bool {
        self.entry().variational
    }

    /// Parses a preset name.
    pub fn parse(s: &str) -> Result<Self> {
        PRESETS.into_iter().find(|p| p.name() == s).ok_or_else(|| {
            let names: Vec<_> = PRESETS.iter().map(|p| p.name()).collect();
            Error::config(
                "model",
                format!("unknown preset '{s}' (one of {})", names.join(", ")),
            )
        })
    }

    /// One line on what the preset is.
    pub fn description(self) -> &'static str {
        self.entry().description
    }

    /// Output activation.
    pub fn activation(self) -> Activation {
        self.entry().output
    }

    /// Training defaults.
    pub fn defaults(self) -> PresetDefaults {
        self.entry().defaults
    }

    /// The preset as a spec, with a code of `latent` values.
    pub fn spec(self, latent: usize) -> ModelSpec {
        let e = self.entry();
        // `L` is the only capital letter in the layer strings.
        let layers = |half, text: &str| {
            parse_layers(half, &text.replace('L', &latent.to_string())).unwrap_or_default()
        };
        ModelSpec {
            encoder: layers("encoder", e.encoder),
            decoder: layers("decoder", e.decoder),
            output: e.output,
            variational: e.variational,
            init: e.init,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every preset has its own row, and its spec checks out at any code size.
    #[test]
    fn every_preset_has_a_row_and_a_valid_spec() {
        for p in PRESETS {
            assert_eq!(p.entry().preset, p);
            assert_eq!(Preset::parse(p.name()).unwrap(), p);
            for l in [1, p.defaults().latent_dim, 100] {
                let c = p
                    .spec(l)
                    .check()
                    .unwrap_or_else(|e| panic!("{}: {e}", p.name()));
                assert_eq!(c.latent_dim, l, "{}", p.name());
            }
        }
    }
}
