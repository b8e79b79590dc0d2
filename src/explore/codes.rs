//! Encoding images to codes and decoding codes to images, in batches.

use burn::prelude::*;

use crate::data::{Split, SIDE};
use crate::error::{Error, Result};
use crate::eval::EVAL_BATCH;
use crate::run::Run;

/// Codes of the images at `indices` of `split`: `indices.len()` rows of `latent_dim` values.
/// An error when a code is not finite: every analysis of such codes would show garbage.
pub fn encode(run: &Run, split: &Split, indices: &[usize]) -> Result<Vec<Vec<f32>>> {
    let scale = run.scale();
    let l = run.config.model.latent_dim;
    let mut out = Vec::with_capacity(indices.len());
    for chunk in indices.chunks(EVAL_BATCH) {
        let x = split.batch(chunk, scale, &run.device);
        let z = run.model.encoder.forward(x);
        let v = z
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap_or_default();
        if let Some(at) = v.iter().position(|v| !v.is_finite()) {
            return Err(Error::Data(format!(
                "the code of image {} holds {}, not a finite number; the model's weights are broken",
                chunk[at / l.max(1)],
                v[at]
            )));
        }
        out.extend(v.chunks(l).map(<[f32]>::to_vec));
    }
    Ok(out)
}

/// Codes of every image of `split`.
pub fn encode_all(run: &Run, split: &Split) -> Result<Vec<Vec<f32>>> {
    let idx: Vec<usize> = (0..split.len()).collect();
    encode(run, split, &idx)
}

/// The codes of a dataset's training and test images, encoded once for several analyses.
#[derive(Debug, Clone)]
pub struct DataCodes {
    /// One code per training image.
    pub train: Vec<Vec<f32>>,
    /// One code per test image.
    pub test: Vec<Vec<f32>>,
}

impl DataCodes {
    /// Encodes every training and test image of `data`.
    pub fn encode(run: &Run, data: &crate::data::Dataset) -> Result<DataCodes> {
        Ok(DataCodes {
            train: encode_all(run, &data.train)?,
            test: encode_all(run, &data.test)?,
        })
    }
}

/// Decoded images (on the model's scale, 784 values each) of `codes`.
pub fn decode(run: &Run, codes: &[Vec<f32>]) -> Vec<Vec<f32>> {
    let l = run.config.model.latent_dim;
    let mut out = Vec::with_capacity(codes.len());
    for chunk in codes.chunks(EVAL_BATCH) {
        let flat: Vec<f32> = chunk.iter().flatten().copied().collect();
        let z = Tensor::<2>::from_data(TensorData::new(flat, [chunk.len(), l]), &run.device);
        let y = run.activation().apply(run.model.decoder.forward(z));
        let v = y
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap_or_default();
        out.extend(v.chunks(SIDE * SIDE).map(<[f32]>::to_vec));
    }
    out
}
