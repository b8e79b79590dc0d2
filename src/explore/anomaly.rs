//! Anomaly scores: each test image's reconstruction error (MSE). The worst images are the
//! ones the model finds least typical.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::data::{Split, SIDE};
use crate::error::{Error, Result};
use crate::eval::metrics::mse;
use crate::eval::{reconstruct_values, unit_images, EVAL_BATCH};
use crate::fsutil::{write_atomic, write_json};
use crate::run::Run;
use crate::viz::grid::{image_grid, GridRow, GridStyle};
use crate::viz::plot::histogram;

/// What `anomaly` writes to `anomaly.json`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct AnomalyReport {
    /// Images scored.
    pub images: usize,
    /// Mean score.
    pub mean: f64,
    /// Standard deviation of the scores.
    pub std: f64,
    /// Median, 95th and 99th percentile.
    pub percentiles: [(u8, f64); 3],
    /// mean + 3 std: images above it are flagged.
    pub threshold: f64,
    /// How many images are above the threshold.
    pub flagged: usize,
    /// The worst images: (index, label, score), worst first.
    pub worst: Vec<(usize, u8, f64)>,
}

/// Reconstruction MSE of every image of `split`, in order.
pub fn scores(run: &Run, split: &Split) -> Vec<f64> {
    let px = SIDE * SIDE;
    let scale = run.scale();
    let idx: Vec<usize> = (0..split.len()).collect();
    let mut out = Vec::with_capacity(split.len());
    for chunk in idx.chunks(EVAL_BATCH) {
        let x = split.scaled(chunk, scale);
        let y = reconstruct_values(run, &x);
        out.extend(x.chunks(px).zip(y.chunks(px)).map(|(a, b)| mse(a, b)));
    }
    out
}

/// Refuses a number of worst images to show outside `1..=100`.
fn check_top(top: usize) -> Result<()> {
    if top == 0 || top > 100 {
        return Err(Error::config("top", format!("{top} is not in 1..=100")));
    }
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// Runs `anomaly`: `anomaly_scores.csv`, `anomaly.json`, `anomalies.png` (top `top` images)
/// and `anomaly_hist.png` in `out`.
pub fn anomaly(
    run: &Run,
    test: &Split,
    top: usize,
    out: &Path,
) -> Result<(AnomalyReport, Vec<PathBuf>)> {
    check_top(top)?;
    anomaly_scored(run, test, scores(run, test), top, out)
}

/// [`anomaly`] on scores already computed (`s[i]`: test image `i`'s reconstruction MSE, as
/// [`scores`] gives them; [`crate::eval::evaluate_each`] computes the same).
pub fn anomaly_scored(
    run: &Run,
    test: &Split,
    s: Vec<f64>,
    top: usize,
    out: &Path,
) -> Result<(AnomalyReport, Vec<PathBuf>)> {
    check_top(top)?;
    if s.len() != test.len() {
        return Err(Error::Data(format!(
            "{} anomaly scores for {} test images",
            s.len(),
            test.len()
        )));
    }
    if let Some(i) = s.iter().position(|v| !v.is_finite()) {
        return Err(Error::Data(format!(
            "the reconstruction of test image {i} is not finite (MSE {}); the model's weights \
             are broken, so no score is reported",
            s[i]
        )));
    }
    if s.is_empty() {
        return Err(Error::Data("the test set is empty".into()));
    }
    let n = s.len() as f64;
    let mean = s.iter().sum::<f64>() / n;
    let std = (s.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    let mut order: Vec<usize> = (0..s.len()).collect();
    order.sort_by(|&a, &b| s[b].total_cmp(&s[a]).then(a.cmp(&b)));
    let mut sorted = s.clone();
    sorted.sort_by(f64::total_cmp);
    let threshold = mean + 3.0 * std;
    let worst: Vec<(usize, u8, f64)> = order
        .iter()
        .take(top)
        .map(|&i| (i, test.labels[i], s[i]))
        .collect();
    let report = AnomalyReport {
        images: s.len(),
        mean,
        std,
        percentiles: [
            (50, percentile(&sorted, 0.5)),
            (95, percentile(&sorted, 0.95)),
            (99, percentile(&sorted, 0.99)),
        ],
        threshold,
        flagged: s.iter().filter(|&&v| v > threshold).count(),
        worst: worst.clone(),
    };
    let mut csv = String::from("index,label,mse\n");
    for (i, v) in s.iter().enumerate() {
        csv.push_str(&format!("{i},{},{v:.8}\n", test.labels[i]));
    }
    let csv_path = out.join("anomaly_scores.csv");
    write_atomic(&csv_path, csv.as_bytes())?;
    let json = out.join("anomaly.json");
    write_json(&json, &report)?;

    let scale = run.scale();
    let idx: Vec<usize> = worst.iter().map(|w| w.0).collect();
    let x = test.scaled(&idx, scale);
    let y = reconstruct_values(run, &x);
    let unit = |v: &[f32]| unit_images(v, scale);
    let png = out.join("anomalies.png");
    let rows = [
        GridRow {
            label: "original".into(),
            images: unit(&x),
            captions: worst
                .iter()
                .map(|(i, l, v)| format!("#{i} ({l}) {v:.3}"))
                .collect(),
        },
        GridRow {
            label: "reconstructed".into(),
            images: unit(&y),
            captions: vec![],
        },
    ];
    let title = format!("The {top} test images with the highest reconstruction error (MSE)");
    image_grid(
        &png,
        &title,
        &rows,
        GridStyle {
            scale: 4,
            ..GridStyle::default()
        },
    )?;
    let hist = out.join("anomaly_hist.png");
    histogram(
        &hist,
        "Reconstruction error of the test images",
        "MSE",
        &s,
        60,
        &[(mean, "mean"), (threshold, "mean + 3 std")],
    )?;
    Ok((report, vec![json, csv_path, png, hist]))
}
