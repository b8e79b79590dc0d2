//! `mnist-ae reconstruct`: a user's own pictures of digits through a run, as the explorer
//! shows a drawing: the MNIST-like input, its reconstruction, code, class probabilities,
//! anomaly score (and its percentile among the test images) and the nearest training images.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::fsutil::write_json;
use crate::serve::state::RunState;
use crate::viz::grid::{image_grid, GridRow, GridStyle};

/// What `reconstruct` finds for one picture.
#[derive(Debug, Clone, Serialize)]
pub struct PictureResult {
    /// The picture's file.
    pub file: PathBuf,
    /// The picture written beside it: input, reconstruction and nearest training images.
    pub png: PathBuf,
    /// The code.
    pub code: Vec<f32>,
    /// The most probable class, by name.
    pub class: String,
    /// Probability of each class (logistic regression on the training codes).
    pub probabilities: Vec<f64>,
    /// Reconstruction MSE on the model's scale (the anomaly score).
    pub anomaly_mse: f64,
    /// Percent of test images whose score is lower.
    pub anomaly_percentile: f64,
    /// The nearest training images in code space: (index, label, distance).
    pub neighbours: Vec<(usize, u8, f32)>,
}

/// Runs every picture in `files` through `state`; writes one picture per input and
/// `reconstruct.json` into `out`.
pub fn reconstruct(state: &RunState, files: &[PathBuf], out: &Path) -> Result<Vec<PictureResult>> {
    // Every picture is read and checked before anything is written.
    let mut pictures = Vec::with_capacity(files.len());
    for file in files {
        crate::fsutil::check_readable(file)?;
        // The format is read from the file's first bytes, whatever its name says.
        let img = image::io::Reader::open(file)
            .map_err(|e| Error::io(file, e))?
            .with_guessed_format()
            .map_err(|e| Error::io(file, e))?
            .decode()
            .map_err(|e| {
                Error::bad_file(file, format!("not a picture this program reads ({e})"))
            })?;
        let pixels =
            super::digit::mnist_like(&img).map_err(|e| Error::bad_file(file, e.to_string()))?;
        pictures.push(pixels);
    }
    let mut used = std::collections::HashSet::new();
    let mut results = Vec::new();
    for (n, (file, pixels)) in files.iter().zip(pictures).enumerate() {
        let r = crate::serve::api::reconstruction(state, &pixels);
        let stem = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| format!("picture{n}"));
        // Pictures of the same name from different folders get pictures of their own.
        let mut name = format!("reconstruct-{stem}.png");
        let mut k = 1;
        while !used.insert(name.clone()) {
            k += 1;
            name = format!("reconstruct-{stem}-{k}.png");
        }
        let png = out.join(name);
        let (best, _) = crate::latent::classifier::argmax(&r.probabilities);
        let class = state.classes.get(best).cloned().unwrap_or_default();
        let mut images = vec![pixels, r.reconstruction.clone()];
        let mut captions = vec!["input".to_string(), "output".to_string()];
        for nb in &r.neighbours {
            images.push(nb.pixels.clone());
            captions.push(format!(
                "#{} {}",
                nb.index,
                state
                    .classes
                    .get(nb.label as usize)
                    .map_or("", |s| s.as_str())
            ));
        }
        image_grid(
            &png,
            &format!(
                "{stem}: {class} ({:.0}%), anomaly percentile {:.1}",
                100.0 * r.probabilities.get(best).copied().unwrap_or(0.0),
                r.anomaly.percentile
            ),
            &[GridRow {
                label: String::new(),
                images,
                captions,
            }],
            GridStyle::default(),
        )?;
        results.push(PictureResult {
            file: file.clone(),
            png,
            code: r.code,
            class,
            probabilities: r.probabilities,
            anomaly_mse: r.anomaly.mse,
            anomaly_percentile: r.anomaly.percentile,
            neighbours: r
                .neighbours
                .iter()
                .map(|n| (n.index, n.label, n.distance))
                .collect(),
        });
    }
    write_json(&out.join("reconstruct.json"), &results)?;
    Ok(results)
}
