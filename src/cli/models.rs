//! `mnist-ae models` and `mnist-ae summary`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use mnist_ae::model::arch::{Init, ModelSpec};
use mnist_ae::model::summary::summarize;
use mnist_ae::model::{Activation, ModelConfig, Preset, PRESETS};

/// Flags of `models`.
#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Print this preset as a spec file (TOML) to copy and edit, for `--arch`.
    #[arg(long, value_name = "PRESET")]
    show: Option<String>,
    /// With --show: the code size [default: the preset's].
    #[arg(long, requires = "show")]
    latent_dim: Option<usize>,
}

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

/// Flags of `summary`.
#[derive(Debug, Args)]
pub struct SummaryArgs {
    /// Model preset (see `mnist-ae models`).
    #[arg(long, default_value = "conv64", conflicts_with_all = ["encoder", "arch"])]
    model: String,
    /// Code size [default: the preset's].
    #[arg(long, conflicts_with_all = ["encoder", "arch"])]
    latent_dim: Option<usize>,
    /// Your own encoder: a layer list such as "conv(16,3,s2,p1) relu flatten linear(16)"
    /// (grammar: README, "Your own model").
    #[arg(long, requires = "decoder", conflicts_with = "arch")]
    encoder: Option<String>,
    /// Your own decoder: a layer list from the code to 1×28×28, or `mirror`.
    #[arg(long, requires = "encoder")]
    decoder: Option<String>,
    /// With --encoder: the output activation.
    #[arg(long, value_enum, default_value = "sigmoid", requires = "encoder")]
    output: OutputArg,
    /// With --encoder: a variational model (the encoder's last linear layer gives mean and
    /// log-variance).
    #[arg(long, requires = "encoder")]
    variational: bool,
    /// With --encoder: initialisation of linear layers.
    #[arg(long, value_enum, default_value = "pytorch", requires = "encoder")]
    init: InitArg,
    /// A spec file (TOML: encoder, decoder, output, variational, init; see `models --show`).
    #[arg(long, value_name = "FILE")]
    arch: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run_models(a: ModelsArgs) -> Result<()> {
    if let Some(name) = &a.show {
        let preset = Preset::parse(name)?;
        let mut cfg = ModelConfig::preset(preset);
        if let Some(l) = a.latent_dim {
            cfg.latent_dim = l;
        }
        cfg.validate()?;
        mnist_ae::outln!(
            "# the {} preset ({}); save as a .toml file and edit",
            preset.name(),
            preset.description()
        );
        mnist_ae::outln!("{}", preset.spec(cfg.latent_dim).to_toml().trim_end());
        return Ok(());
    }
    let device = burn::tensor::Device::flex();
    let mut rows = Vec::new();
    for p in PRESETS {
        let cfg = ModelConfig::preset(p);
        let s = summarize(&cfg, &cfg.init(&device), &device);
        rows.push(serde_json::json!({
            "model": p.name(),
            "latent_dim": cfg.latent_dim,
            "params": s.total_params,
            "encoder_params": s.encoder_params,
            "decoder_params": s.decoder_params,
            "output": format!("{:?}", p.activation()).to_lowercase(),
            "description": p.description(),
        }));
    }
    if a.json {
        mnist_ae::outln!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        mnist_ae::outln!(
            "{:<8} {:>6} {:>9}  description",
            "model",
            "latent",
            "params"
        );
        for r in rows {
            mnist_ae::outln!(
                "{:<8} {:>6} {:>9}  {}",
                r["model"].as_str().unwrap_or(""),
                r["latent_dim"].as_u64().unwrap_or(0),
                r["params"].as_u64().unwrap_or(0),
                r["description"].as_str().unwrap_or("")
            );
        }
    }
    Ok(())
}

pub fn run_summary(a: SummaryArgs) -> Result<()> {
    let spec = match (&a.arch, &a.encoder, &a.decoder) {
        (Some(path), _, _) => Some((ModelSpec::read(path)?, path.display().to_string())),
        (None, Some(e), Some(d)) => {
            let output = match a.output {
                OutputArg::Sigmoid => Activation::Sigmoid,
                OutputArg::Tanh => Activation::Tanh,
            };
            let init = match a.init {
                InitArg::Pytorch => Init::Pytorch,
                InitArg::Xavier => Init::Xavier,
            };
            let spec = ModelSpec::parse(e, d, output, a.variational, init)?;
            Some((spec, "custom".to_string()))
        }
        _ => None,
    };
    if let Some((spec, name)) = spec {
        let s = spec.summary(&name)?;
        if a.json {
            mnist_ae::outln!("{}", serde_json::to_string_pretty(&s)?);
        } else {
            mnist_ae::outln!("{s}");
        }
        return Ok(());
    }
    let preset = Preset::parse(&a.model)?;
    let mut cfg = ModelConfig::preset(preset);
    if let Some(l) = a.latent_dim {
        cfg.latent_dim = l;
    }
    cfg.validate()?;
    let device = burn::tensor::Device::flex();
    let s = summarize(&cfg, &cfg.init(&device), &device);
    if a.json {
        mnist_ae::outln!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        mnist_ae::outln!("{s}");
    }
    Ok(())
}
