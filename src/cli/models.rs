//! `mnist-ae models` and `mnist-ae summary`.

use anyhow::Result;
use clap::Args;
use mnist_ae::model::summary::summarize;
use mnist_ae::model::{ModelConfig, Preset, PRESETS};

/// Flags of `models`.
#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Flags of `summary`.
#[derive(Debug, Args)]
pub struct SummaryArgs {
    /// Model preset (see `mnist-ae models`).
    #[arg(long, default_value = "conv64")]
    model: String,
    /// Code size [default: the preset's].
    #[arg(long)]
    latent_dim: Option<usize>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run_models(a: ModelsArgs) -> Result<()> {
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
