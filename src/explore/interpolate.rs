//! Interpolation: decode straight-line steps between two test images' codes.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::codes::{decode, encode};
use crate::data::Split;
use crate::error::{Error, Result};
use crate::eval::{check_indices, to_unit};
use crate::fsutil::write_json;
use crate::run::Run;
use crate::viz::grid::{image_grid, GridRow, GridStyle};

/// What `interpolate` writes to `interpolate.json`.
#[derive(Debug, Clone, Serialize)]
pub struct InterpolateReport {
    /// Start image index (test set) and its label.
    pub from: (usize, u8),
    /// End image index and its label.
    pub to: (usize, u8),
    /// Interpolation weights, 0 (start) to 1 (end).
    pub t: Vec<f64>,
    /// Euclidean distance between the two codes.
    pub code_distance: f64,
}

/// Runs `interpolate`: `interpolate.png` (original, `steps` decodings, original) and JSON.
pub fn interpolate(
    run: &Run,
    test: &Split,
    from: usize,
    to: usize,
    steps: usize,
    out: &Path,
) -> Result<(InterpolateReport, [PathBuf; 2])> {
    check_indices(&[from], test, "from")?;
    check_indices(&[to], test, "to")?;
    if !(2..=64).contains(&steps) {
        return Err(Error::config("steps", format!("{steps} is not in 2..=64")));
    }
    let codes = encode(run, test, &[from, to])?;
    let (a, b) = (&codes[0], &codes[1]);
    let t: Vec<f64> = (0..steps).map(|i| i as f64 / (steps - 1) as f64).collect();
    let path: Vec<Vec<f32>> = t
        .iter()
        .map(|&w| {
            a.iter()
                .zip(b)
                .map(|(&x, &y)| ((1.0 - w) * x as f64 + w * y as f64) as f32)
                .collect()
        })
        .collect();
    let decoded = decode(run, &path);
    let scale = run.scale();
    let unit = |v: &[f32]| -> Vec<f32> { v.iter().map(|&p| to_unit(p, scale)).collect() };
    let mut images = vec![unit(&test.scaled(&[from], scale))];
    images.extend(decoded.iter().map(|d| unit(d)));
    images.push(unit(&test.scaled(&[to], scale)));
    let mut captions = vec![format!("#{from} ({})", test.labels[from])];
    captions.extend(t.iter().map(|w| format!("t={w:.2}")));
    captions.push(format!("#{to} ({})", test.labels[to]));
    let report = InterpolateReport {
        from: (from, test.labels[from]),
        to: (to, test.labels[to]),
        t,
        code_distance: a
            .iter()
            .zip(b)
            .map(|(x, y)| ((x - y) as f64).powi(2))
            .sum::<f64>()
            .sqrt(),
    };
    let png = out.join("interpolate.png");
    let title =
        format!("Interpolation in code space: test #{from} → #{to} (originals at the ends)");
    image_grid(
        &png,
        &title,
        &[GridRow {
            label: "".into(),
            images,
            captions,
        }],
        GridStyle {
            label_width: 10,
            ..GridStyle::default()
        },
    )?;
    let json = out.join("interpolate.json");
    write_json(&json, &report)?;
    Ok((report, [json, png]))
}
