//! `mnist-ae models` and `mnist-ae summary`.

use anyhow::Result;
use clap::Args;
use mnist_ae::model::summary::summarize;
use mnist_ae::model::{ModelConfig, Preset, PRESETS};

use super::choices::preset_parser;
use super::model_args::{LatentArg, ModelArgs};

/// Flags of `models`.
#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Print this preset as a spec file (TOML) to copy and edit, for `--arch`.
    #[arg(long, value_name = "PRESET", value_parser = preset_parser())]
    show: Option<Preset>,
    /// With --show: the code size [default: the preset's].
    #[arg(long, requires = "show")]
    latent_dim: Option<usize>,
}

/// Flags of `summary`.
#[derive(Debug, Args)]
pub struct SummaryArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    latent: LatentArg,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run_models(a: ModelsArgs) -> Result<()> {
    if let Some(preset) = a.show {
        let cfg =
            ModelConfig::of_preset(preset, a.latent_dim.unwrap_or(preset.defaults().latent_dim));
        cfg.validate()?;
        mnist_ae::outln!(
            "# the {} preset ({}); save as a .toml file and edit",
            preset.name(),
            preset.description()
        );
        mnist_ae::outln!("{}", preset.spec(cfg.latent_dim).to_toml().trim_end());
        return Ok(());
    }
    let mut rows = Vec::new();
    for p in PRESETS {
        let cfg = ModelConfig::preset(p);
        let s = summarize(&cfg)?;
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
    let cfg = a.model.config(a.latent.latent_dim)?;
    let mut s = summarize(&cfg)?;
    if let Some(path) = &a.model.arch {
        s.model = path.display().to_string();
    }
    if a.json {
        mnist_ae::outln!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        mnist_ae::outln!("{s}");
    }
    Ok(())
}
