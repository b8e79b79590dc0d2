//! Latent-space analysis: classifiers on the codes (linear, RBF-kernel SVM, MLP) with a
//! scikit-learn style report and confusion matrix, and 2-D maps of the codes (t-SNE, PCA).

pub mod classifier;
pub mod kernel_svm;
pub mod knn;
pub mod mlp;
mod rbf;
pub mod report;
mod smo_scan;
pub mod tsne;

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::data::Dataset;
use crate::error::Result;
use crate::explore::codes::DataCodes;
use crate::fsutil::{write_atomic, write_json};
use crate::run::Run;
use crate::viz::confusion::confusion_matrix;
use classifier::{fit_any, ClassifierKind};
use report::{classification_report, ClassificationReport};

/// The class names of a run's dataset, used in reports and legends.
pub fn class_names(run: &Run) -> Vec<String> {
    crate::data::DatasetSource::parse(&run.config.dataset).classes()
}

/// What `classify` writes to `classification_report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct ClassifyResult {
    /// The classifier.
    pub classifier: ClassifierKind,
    /// Inverse regularisation strength.
    pub c: f64,
    /// Training codes (train split).
    pub train_images: usize,
    /// Accuracy on the training codes.
    pub train_accuracy: f64,
    /// Seconds to fit.
    pub fit_seconds: f64,
    /// The test-set report.
    pub report: ClassificationReport,
}

/// The folder `classify` writes into for `kind`.
pub fn classify_dir(out: &Path, kind: ClassifierKind) -> PathBuf {
    out.join(format!("classify-{}", kind.name()))
}

/// Writes codes as CSV (`label,z0,z1,...`) for checking against other tools.
pub fn write_codes_csv(path: &Path, codes: &[Vec<f32>], labels: &[u8]) -> Result<()> {
    let d = codes.first().map(Vec::len).unwrap_or(0);
    let mut s = String::from("label");
    for i in 0..d {
        s.push_str(&format!(",z{i}"));
    }
    s.push('\n');
    for (c, l) in codes.iter().zip(labels) {
        s.push_str(&l.to_string());
        for v in c {
            s.push_str(&format!(",{v}"));
        }
        s.push('\n');
    }
    write_atomic(path, s.as_bytes())
}

/// Runs `classify`: encodes train and test, fits, and writes `classification_report.txt`,
/// `classification_report.json` and `confusion_matrix.png` into `classify-<kind>/` of `out`.
pub fn classify(
    run: &Run,
    data: &Dataset,
    kind: ClassifierKind,
    c: f64,
    out: &Path,
    export_codes: bool,
) -> Result<(ClassifyResult, PathBuf)> {
    classify_codes(
        run,
        data,
        &DataCodes::encode(run, data)?,
        kind,
        c,
        out,
        export_codes,
    )
}

/// [`classify`] on codes already computed (`codes` of `data`).
pub fn classify_codes(
    run: &Run,
    data: &Dataset,
    codes: &DataCodes,
    kind: ClassifierKind,
    c: f64,
    out: &Path,
    export_codes: bool,
) -> Result<(ClassifyResult, PathBuf)> {
    let (train_codes, test_codes) = (&codes.train, &codes.test);

    let dir = classify_dir(out, kind);
    std::fs::create_dir_all(&dir).map_err(|e| crate::Error::io(&dir, e))?;
    if export_codes {
        write_codes_csv(
            &out.join("codes_train.csv"),
            train_codes,
            &data.train.labels,
        )?;
        write_codes_csv(&out.join("codes_test.csv"), test_codes, &data.test.labels)?;
    }
    let t0 = Instant::now();
    let model = fit_any(
        kind,
        train_codes,
        &data.train.labels,
        10,
        c,
        run.config.seed,
        &run.device,
    )?;
    let fit_seconds = t0.elapsed().as_secs_f64();
    let train_pred = model.predict(train_codes);
    let train_accuracy = train_pred
        .iter()
        .zip(&data.train.labels)
        .filter(|(a, b)| a == b)
        .count() as f64
        / train_pred.len().max(1) as f64;
    let names = class_names(run);
    let report = classification_report(&data.test.labels, &model.predict(test_codes), &names);
    write_atomic(
        &dir.join("classification_report.txt"),
        report.to_sklearn_text().as_bytes(),
    )?;
    let result = ClassifyResult {
        classifier: kind,
        c,
        train_images: train_codes.len(),
        train_accuracy,
        fit_seconds,
        report,
    };
    write_json(&dir.join("classification_report.json"), &result)?;
    let title = format!(
        "{} on {} codes: test accuracy {:.2}%",
        kind.title(),
        run.config.model.name(),
        100.0 * result.report.accuracy
    );
    confusion_matrix(
        &dir.join("confusion_matrix.png"),
        &title,
        &names,
        &result.report.confusion,
    )?;
    Ok((result, dir))
}
