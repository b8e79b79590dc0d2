//! The short block `train` prints once the run folder exists: what is trained, on what, how,
//! and on which device and how many threads, one line each.

use std::path::Path;

use burn::tensor::Device;

use crate::config::{Keep, Loss, Scheduler, TrainConfig};
use crate::data::Dataset;
use crate::error::Result;
use crate::model::summary::summarize;

/// `n` with thousands separators: 54,000.
pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The block, without a trailing newline; `threads` is the size of the pool the run was
/// started in (training may run in a smaller one: the current pool).
pub fn describe(
    config: &TrainConfig,
    dir: &Path,
    done: usize,
    data: &Dataset,
    device: &Device,
    threads: usize,
) -> Result<String> {
    let m = &config.model;
    let params = summarize(m)?.total_params;
    let model = match m.preset {
        Some(p) => format!("{} ({})", p.name(), p.description()),
        None => format!("your own: {}", m.description()),
    };
    let state = if done == 0 {
        "new run".to_string()
    } else {
        format!("resumed after epoch {done}")
    };
    let range = match m.activation().scale() {
        crate::data::Scale::ZeroOne => "[0,1]",
        crate::data::Scale::MinusOneOne => "[-1,1]",
    };
    let loss = match config.loss {
        Loss::Mse => "MSE",
        Loss::Bce => "BCE",
    };
    let schedule = match config.scheduler {
        Scheduler::None => "constant lr".to_string(),
        Scheduler::Plateau {
            factor,
            patience,
            min_lr,
            ..
        } => format!(
            "lr ×{factor} after {} without improvement (≥ {min_lr})",
            crate::console::plural(patience, "epoch")
        ),
        Scheduler::Cosine { min_lr } => format!("cosine lr down to {min_lr}"),
    };
    let mut extras = Vec::new();
    if m.is_variational() {
        extras.push(format!("KL weight β {}", config.beta));
    }
    if config.noise_std > 0.0 {
        extras.push(format!("input noise σ {}", config.noise_std));
    }
    let stop = match config.early_stop {
        Some(p) => format!(
            "after {} without a better validation loss",
            crate::console::plural(p, "epoch")
        ),
        None => "no (every epoch is trained)".to_string(),
    };
    let keep = match config.keep {
        Keep::Last => "the last epoch's weights (model.safetensors)",
        Keep::Best => "the best validation epoch's weights (best.safetensors)",
    };
    let cores = crate::kernels::cores();
    let lines = [
        format!("run folder  {} ({state})", dir.display()),
        format!(
            "model       {model}; code {}, {} parameters",
            m.latent_dim,
            thousands(params)
        ),
        format!(
            "data        {}: {} training and {} validation images, pixels in {range}",
            config.dataset,
            thousands(data.train.len()),
            thousands(data.valid.len())
        ),
        format!(
            "training    {} of batch {}, Adam lr {} (weight decay {}), {loss} loss, {schedule}, seed {}{}",
            crate::console::plural(config.epochs, "epoch"),
            config.batch_size,
            config.lr,
            config.weight_decay,
            config.seed,
            extras.iter().map(|e| format!(", {e}")).collect::<String>()
        ),
        format!("early stop  {stop}; analyses use {keep}"),
        format!("device      {}", crate::device::describe(device)),
        format!(
            "threads     {threads} ({cores} cores), {}",
            // A batch has no more shards than images (`step::shard_ranges`).
            match config.shards.min(config.batch_size) {
                1 => "each batch whole".to_string(),
                // Off the CPU's kernels dropout needs each batch whole (`train::step`).
                _ if m.has_dropout() && !crate::kernels::fused_here(device) => {
                    "each batch whole (dropout off the CPU)".to_string()
                }
                // Batch norm's shards share the batch's statistics through the fused layers
                // only (`train::step`).
                _ if m.has_batch_norm() && !(m.trains_fused() && crate::kernels::fused_here(device)) => {
                    "each batch whole (batch norm outside the CPU's fused layers)".to_string()
                }
                // `train` chose a pool of one worker per shard.
                s if rayon::current_num_threads() < threads => format!(
                    "each batch in {s} shards, one thread each (--shards N to use more)"
                ),
                s => format!("each batch in {s} shards"),
            }
        ),
    ];
    let mut text = lines.join("\n");
    if m.is_variational() && !crate::kernels::fused_here(device) {
        // A known defect, said where it matters (see the README's GPU section).
        text.push_str(
            "\ncaution     a variational model on a GPU: its training diverged on an NVIDIA GPU \
             (Vulkan) where the CPU device's did not; compare its losses with --device cpu",
        );
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(7), "7");
        assert_eq!(thousands(54_000), "54,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
