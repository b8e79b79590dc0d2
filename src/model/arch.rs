//! A whole architecture as data: encoder and decoder layer lists, the output activation, and
//! whether the model is variational; read from flags or an `--arch` TOML file, checked layer by
//! layer, summarised, and written back in the same forms. Every preset is one of these
//! ([`Preset::spec`]), which `mnist-ae models --show NAME` prints for copying and editing.

use serde::{Deserialize, Serialize};

use super::shape::{check_decoder, check_encoder, mirror, Shape, Traced, IMAGE};
use super::spec::{layers_to_string, parse_layers, Layer};
use super::summary::LayerRow;
use super::summary::Summary;
use super::Activation;
use crate::error::{Error, Result};

/// The names of a variational encoder's two heads (its last `linear(L)`, built twice), as
/// PyTorch's VAEs and the module `export` writes call them.
pub const MU_HEAD: &str = "fc_mu";
/// See [`MU_HEAD`].
pub const LOGVAR_HEAD: &str = "fc_logvar";

/// How linear layers' weights start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Init {
    /// PyTorch's defaults (Kaiming-uniform weights, uniform biases; burn's defaults match).
    #[default]
    Pytorch,
    /// Xavier-uniform weights and zero biases for linear layers (`mlp`'s notebook).
    Xavier,
}

/// An architecture: what `--encoder`, `--decoder`, `--output` and `--variational` (or an
/// `--arch` file) describe.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// Images `1×28×28` to a flat code.
    pub encoder: Vec<Layer>,
    /// The code to `1×28×28` logits.
    pub decoder: Vec<Layer>,
    /// The output activation (fixes the data scale: sigmoid [0,1], tanh [-1,1]).
    pub output: Activation,
    /// A variational model: the encoder's last `linear(L)` is built twice, for the mean and
    /// the log-variance of the code.
    pub variational: bool,
    /// Weight initialisation of linear layers.
    pub init: Init,
}

/// The file form of a spec (`--arch my-model.toml`): the same layer strings as the flags.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    /// The encoder's layers, one string.
    encoder: String,
    /// The decoder's layers, or `mirror`.
    decoder: String,
    /// `sigmoid` (default) or `tanh`.
    #[serde(default = "sigmoid")]
    output: Activation,
    /// A variational model.
    #[serde(default)]
    variational: bool,
    /// `pytorch` (default) or `xavier`.
    #[serde(default)]
    init: Init,
}

fn sigmoid() -> Activation {
    Activation::Sigmoid
}

/// A checked spec: every layer with its input and output shapes, and the code size.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The encoder's layers with shapes.
    pub encoder: Traced,
    /// The decoder's layers with shapes.
    pub decoder: Traced,
    /// Code size.
    pub latent_dim: usize,
}

impl ModelSpec {
    /// Reads the flag forms: layer lists (`decoder` may be `mirror`).
    pub fn parse(
        encoder: &str,
        decoder: &str,
        output: Activation,
        variational: bool,
        init: Init,
    ) -> Result<ModelSpec> {
        let encoder = parse_layers("encoder", encoder)?;
        let decoder = if decoder.trim() == "mirror" {
            mirror(&encoder)?
        } else {
            parse_layers("decoder", decoder)?
        };
        let spec = ModelSpec {
            encoder,
            decoder,
            output,
            variational,
            init,
        };
        spec.check()?;
        Ok(spec)
    }

    /// Reads the TOML form; `path` names the file in errors.
    pub fn from_toml(path: &std::path::Path, text: &str) -> Result<ModelSpec> {
        let f: SpecFile = toml::from_str(text)
            .map_err(|e| Error::bad_file(path, e.to_string().trim().replace('\n', " ")))?;
        ModelSpec::parse(&f.encoder, &f.decoder, f.output, f.variational, f.init)
            .map_err(|e| Error::bad_file(path, e.to_string()))
    }

    /// Reads an `--arch` file.
    pub fn read(path: &std::path::Path) -> Result<ModelSpec> {
        ModelSpec::from_toml(path, &crate::fsutil::read_to_string(path)?)
    }

    /// The TOML form, ready to save and edit.
    pub fn to_toml(&self) -> String {
        let f = SpecFile {
            encoder: layers_to_string(&self.encoder),
            decoder: layers_to_string(&self.decoder),
            output: self.output,
            variational: self.variational,
            init: self.init,
        };
        toml::to_string(&f).unwrap_or_default()
    }

    /// Checks that the layers make a model (see [`super::shape`]).
    pub fn check(&self) -> Result<Checked> {
        let (encoder, latent_dim) = check_encoder(&self.encoder, self.variational)?;
        if latent_dim == 0 || latent_dim > 4096 {
            return Err(Error::config(
                "encoder",
                format!("gives a code of {latent_dim} values, not in 1..=4096"),
            ));
        }
        let decoder = check_decoder(&self.decoder, latent_dim)?;
        Ok(Checked {
            encoder,
            decoder,
            latent_dim,
        })
    }

    /// Every layer's output shape and parameter count, without building the model. Layers
    /// are named as in the module `export` writes: `encoder.i` and `decoder.i` for layer `i`
    /// of each half, and a variational encoder's two heads `fc_mu` and `fc_logvar`.
    pub fn summary(&self, name: &str) -> Result<Summary> {
        let c = self.check()?;
        let mut rows = vec![LayerRow {
            name: "input".into(),
            layer: "Input".into(),
            output: IMAGE.batched(1),
            params: 0,
        }];
        let last = self.encoder.len() - 1;
        let mut encoder_params = 0;
        for (i, (l, x, y)) in c.encoder.iter().enumerate() {
            let names = if self.variational && i == last {
                vec![MU_HEAD.to_string(), LOGVAR_HEAD.to_string()]
            } else {
                vec![format!("encoder.{i}")]
            };
            for name in names {
                encoder_params += l.params(*x);
                rows.push(row(&name, l, *x, *y));
            }
        }
        let mut decoder_params = 0;
        for (i, (l, x, y)) in c.decoder.iter().enumerate() {
            decoder_params += l.params(*x);
            rows.push(row(&format!("decoder.{i}"), l, *x, *y));
        }
        rows.push(LayerRow {
            name: "output".into(),
            layer: format!("{:?}", self.output),
            output: IMAGE.batched(1),
            params: 0,
        });
        Ok(Summary {
            model: name.into(),
            latent_dim: c.latent_dim,
            layers: rows,
            encoder_params,
            decoder_params,
            total_params: encoder_params + decoder_params,
        })
    }
}

/// A summary row in PyTorch's words.
fn row(name: &str, l: &Layer, x: Shape, y: Shape) -> LayerRow {
    let channels = x.channels();
    let layer = match *l {
        Layer::Linear { out } => format!("Linear({}→{out})", x.numel()),
        Layer::Conv { out, k, s, p } => format!("Conv2d({channels}→{out}, k{k}, s{s}, p{p})"),
        Layer::ConvT { out, k, s, p, op } => {
            let op = if op > 0 {
                format!(", op{op}")
            } else {
                String::new()
            };
            format!("ConvTranspose2d({channels}→{out}, k{k}, s{s}, p{p}{op})")
        }
        Layer::MaxPool { k, s } => format!("MaxPool2d(k{k}, s{s})"),
        Layer::AvgPool { k, s } => format!("AvgPool2d(k{k}, s{s})"),
        Layer::AdaptiveAvgPool { h, w } => format!("AdaptiveAvgPool2d({h}, {w})"),
        Layer::Upsample { f } => format!("Upsample(×{f}, nearest)"),
        Layer::BatchNorm => match x {
            Shape::Image { c, .. } => format!("BatchNorm2d({c})"),
            Shape::Flat(n) => format!("BatchNorm1d({n})"),
        },
        Layer::Dropout { p } => format!("Dropout({p})"),
        Layer::Relu => "ReLU".into(),
        Layer::LeakyRelu { a } => format!("LeakyReLU({a})"),
        Layer::Gelu => "GELU".into(),
        Layer::Tanh => "Tanh".into(),
        Layer::Sigmoid => "Sigmoid".into(),
        Layer::Flatten => "Flatten".into(),
        Layer::Reshape { c, h, w } => format!("Unflatten({c}, {h}, {w})"),
    };
    LayerRow {
        name: name.into(),
        layer,
        output: y.batched(1),
        params: l.params(x),
    }
}
