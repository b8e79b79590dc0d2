//! `metrics.jsonl`: one JSON object per epoch; the loss plot and the report read only this.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::viz::plot::{line_plot, Series};

/// The metrics file of a run.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// The loss plot of a run.
pub const LOSS_PLOT: &str = "loss.png";

/// One epoch's numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss over the epoch.
    pub train_loss: f64,
    /// Mean validation loss after the epoch (NaN-free; absent without a validation split).
    pub valid_loss: Option<f64>,
    /// Mean validation MSE (on the model's output scale), whatever the loss.
    pub valid_mse: Option<f64>,
    /// Learning rate used in the epoch.
    pub lr: f64,
    /// Wall time of the training part of the epoch.
    pub seconds: f64,
    /// Training throughput.
    pub images_per_sec: f64,
}

/// Reads `metrics.jsonl` (empty when absent).
pub fn read(path: &Path) -> Result<Vec<EpochMetrics>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = crate::fsutil::read_to_string(path)?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| Error::bad_file(path, format!("line {}: {e}", i + 1)))
        })
        .collect()
}

/// Writes all rows to `metrics.jsonl` (atomically).
pub fn write(path: &Path, rows: &[EpochMetrics]) -> Result<()> {
    let mut s = String::new();
    for r in rows {
        s.push_str(&serde_json::to_string(r).map_err(|e| Error::bad_file(path, e.to_string()))?);
        s.push('\n');
    }
    write_atomic(path, s.as_bytes())
}

/// Plots train and validation loss per epoch.
pub fn plot_losses(path: &Path, rows: &[EpochMetrics], loss_name: &str) -> Result<()> {
    let train = Series {
        label: "train",
        points: rows
            .iter()
            .map(|r| (r.epoch as f64, r.train_loss))
            .collect(),
    };
    let valid = Series {
        label: "validation",
        points: rows
            .iter()
            .filter_map(|r| r.valid_loss.map(|v| (r.epoch as f64, v)))
            .collect(),
    };
    let mut series = vec![train];
    if !valid.points.is_empty() {
        series.push(valid);
    }
    line_plot(
        path,
        "Loss per epoch",
        "epoch",
        &format!("{loss_name} loss"),
        &series,
        false,
    )
}
