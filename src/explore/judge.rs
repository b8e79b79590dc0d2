//! Judging generated images with another run: its encoder and a classifier fitted to its
//! training codes (an MLP by default, or logistic regression) give each image a class and a
//! probability — how digit-like samples are.

use burn::prelude::*;

use crate::data::{Dataset, Scale, SIDE};
use crate::error::{Error, Result};
use crate::eval::EVAL_BATCH;
use crate::explore::codes::encode_all;
use crate::latent::class_names;
use crate::latent::classifier::{argmax, fit_any, ClassifierKind, Fitted};
use crate::run::Run;

/// How many test images give the real-image baseline.
pub const REAL_IMAGES: usize = 1000;

/// A trained run plus a classifier on its codes.
pub struct Judge {
    run: Run,
    classifier: Fitted,
    /// The classifier kind.
    pub kind: ClassifierKind,
    /// Up to `REAL_IMAGES` test images of the judge's dataset (values in [0, 1]), which its
    /// classifier never saw: the baseline that samples are compared with.
    pub real: Vec<Vec<f32>>,
    /// Their labels.
    pub real_labels: Vec<u8>,
    /// Class names of the judge's dataset.
    pub classes: Vec<String>,
}

/// Checks that `judge` can judge the samples of `run`: a run on another named dataset has other
/// classes (a Fashion-MNIST judge would call every digit a garment), so its verdicts would be
/// meaningless. Runs on folders of IDX files may hold the same images under another name: for
/// those a difference is only cautioned.
pub fn check_judge(judge: &Run, run: &Run) -> Result<()> {
    use crate::data::download::DatasetSource;
    let (j, r) = (&judge.config.dataset, &run.config.dataset);
    if j == r {
        return Ok(());
    }
    match (DatasetSource::parse(j), DatasetSource::parse(r)) {
        (DatasetSource::Named(_), DatasetSource::Named(_)) => Err(Error::config(
            "judge",
            format!(
                "the judge was trained on {j}, the samples come from a run on {r}; its classes are not theirs. HINT: judge with a run on {r}"
            ),
        )),
        _ => {
            crate::errln!(
                "caution: the judge was trained on {j}, the samples come from a run on {r}; its verdicts mean something only if both hold the same kind of images"
            );
            Ok(())
        }
    }
}

impl Judge {
    /// Fits a classifier of `kind` (`logistic` or `mlp`: one with probabilities) on `run`'s
    /// training codes.
    pub fn new(run: Run, data: &Dataset, kind: ClassifierKind) -> Result<Judge> {
        if !matches!(kind, ClassifierKind::Logistic | ClassifierKind::Mlp) {
            return Err(Error::config(
                "judge-classifier",
                format!(
                    "{} gives no probabilities; use logistic or mlp",
                    kind.name()
                ),
            ));
        }
        let codes = encode_all(&run, &data.train)?;
        let classifier = fit_any(
            kind,
            &codes,
            &data.train.labels,
            10,
            1.0,
            run.config.seed,
            &run.device,
        )?;
        let classes = class_names(&run);
        let idx: Vec<usize> = (0..REAL_IMAGES.min(data.test.len())).collect();
        let real = data
            .test
            .scaled(&idx, Scale::ZeroOne)
            .chunks(crate::data::PIXELS)
            .map(<[f32]>::to_vec)
            .collect();
        Ok(Judge {
            real,
            real_labels: data.test.labels[..idx.len()].to_vec(),
            run,
            classifier,
            kind,
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
            .unwrap_or_default()
            .iter()
            .map(|p| {
                let (c, best) = argmax(p);
                (c as u8, best)
            })
            .collect()
    }
}
