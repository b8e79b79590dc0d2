//! Judging generated images with another run: its encoder and a logistic regression fitted to
//! its training codes give each image a class and a confidence — how digit-like samples are.

use burn::prelude::*;

use crate::data::{Dataset, Scale, SIDE};
use crate::error::Result;
use crate::eval::EVAL_BATCH;
use crate::explore::codes::encode_all;
use crate::latent::class_names;
use crate::latent::classifier::{fit, ClassifierKind, LinearClassifier};
use crate::run::Run;

/// A trained run plus a classifier on its codes.
pub struct Judge {
    run: Run,
    classifier: LinearClassifier,
    /// Class names of the judge's dataset.
    pub classes: Vec<String>,
}

impl Judge {
    /// Fits a logistic regression (C = 1) on `run`'s training codes.
    pub fn new(run: Run, data: &Dataset) -> Result<Judge> {
        let codes = encode_all(&run, &data.train);
        let classifier = fit(
            ClassifierKind::Logistic,
            &codes,
            &data.train.labels,
            10,
            1.0,
            500,
            &run.device,
        )?;
        let classes = class_names(&run);
        Ok(Judge {
            run,
            classifier,
            classes,
        })
    }

    /// The judge run's folder.
    pub fn dir(&self) -> &std::path::Path {
        &self.run.dir
    }

    /// (class, probability) for each image, given with values in [0, 1].
    pub fn judge(&self, images: &[Vec<f32>]) -> Vec<(u8, f64)> {
        let scale = self.run.scale();
        let l = self.run.config.model.latent_dim;
        let mut codes = Vec::with_capacity(images.len());
        for chunk in images.chunks(EVAL_BATCH) {
            let flat: Vec<f32> = chunk
                .iter()
                .flatten()
                .map(|&v| match scale {
                    Scale::ZeroOne => v,
                    Scale::MinusOneOne => v * 2.0 - 1.0,
                })
                .collect();
            let x = Tensor::<4>::from_data(
                TensorData::new(flat, [chunk.len(), 1, SIDE, SIDE]),
                &self.run.device,
            );
            let z = self.run.model.encoder.forward(x);
            let v = z
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .unwrap_or_default();
            codes.extend(v.chunks(l).map(<[f32]>::to_vec));
        }
        self.classifier
            .probabilities(&codes)
            .iter()
            .map(|p| {
                let (c, &best) =
                    p.iter()
                        .enumerate()
                        .fold((0, &0.0), |b, (i, v)| if v > b.1 { (i, v) } else { b });
                (c as u8, best)
            })
            .collect()
    }
}
