//! The run report: one self-contained HTML page (pictures embedded as data URIs) with every
//! metric, plot and picture the run folder holds, each with a one-line explanation. It reads
//! only the files the other commands wrote, so it can be rebuilt at any time.

pub mod analyze;
mod html;

use std::path::{Path, PathBuf};

use base64::Engine;

use crate::config::Keep;
use crate::error::{Error, Result};
use crate::eval::EvalReport;
use crate::explore::anomaly::AnomalyReport;
use crate::explore::denoise::DenoiseReport;
use crate::fsutil::write_atomic;
use crate::model::summary::summarize;
use crate::rundir::read_config;
use crate::train::checkpoint::{BEST_FILE, MODEL_FILE};
use crate::train::metrics;
use html::{esc, Page};

/// The report file name.
pub const REPORT_FILE: &str = "report.html";

/// An analysis' output, read back as the struct it was written from; `None` when the analysis
/// has not run (or its file is not one of ours), and the report leaves its section out.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    crate::fsutil::read_to_string(path)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
}

fn img(path: &Path, alt: &str) -> Option<String> {
    let bytes = crate::fsutil::read(path).ok()?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    Some(format!(
        "<img alt=\"{}\" src=\"data:image/png;base64,{b64}\">",
        esc(alt)
    ))
}

fn num(v: f64, digits: usize) -> String {
    format!("{v:.digits$}")
}

/// Builds `report.html` in the run folder `dir` from the analyses' files there; returns its
/// path and the sections it holds. The page is self-contained (pictures embedded).
pub fn build_report(dir: &Path) -> Result<(PathBuf, Vec<String>)> {
    let config = read_config(dir)?;
    let _held = crate::rundir::DirLock::acquire(dir, "report")?;
    let mut page = Page::new(&format!("mnist-ae run: {}", dir.display()));

    // Configuration.
    let cfg_json = serde_json::to_value(&config)
        .map_err(|e| Error::bad_file(dir.join("config.json"), e.to_string()))?;
    let mut rows = String::new();
    let last = crate::train::checkpoint::read_info(&dir.join(config.keep.file()));
    let trained = crate::train::checkpoint::read_info(&dir.join(MODEL_FILE));
    if let (Ok(info), Ok(all)) = (last, trained) {
        let which = match config.keep {
            Keep::Last => format!("{}, the last epoch", config.keep.file()),
            Keep::Best => format!(
                "{}, the epoch with the lowest validation loss",
                config.keep.file()
            ),
        };
        // The rule training stopped by, with the best epoch it saved.
        let best = crate::train::checkpoint::read_info(&dir.join(BEST_FILE)).map_or(0, |b| b.epoch);
        let stopped =
            if all.epoch < config.epochs && all.batch == 0 && config.patience_over(all.epoch, best)
            {
                " (stopped early)"
            } else {
                ""
            };
        rows.push_str(&format!(
            "<tr><th>weights analysed</th><td>{} ({}); {} of {} epochs trained{stopped}</td></tr>",
            esc(&info.progress()),
            esc(&which),
            all.epoch,
            config.epochs
        ));
    }
    if let Some(obj) = cfg_json.as_object() {
        for (k, v) in obj {
            rows.push_str(&format!(
                "<tr><th>{}</th><td><code>{}</code></td></tr>",
                esc(k),
                esc(&v.to_string())
            ));
        }
    }
    page.section(
        "config",
        "Configuration",
        "Everything that defines the run, as saved in config.json.",
        &format!("<table>{rows}</table>"),
    );

    // Model summary.
    let s = summarize(&config.model)?;
    let mut t =
        String::from("<table><tr><th>layer</th><th>type</th><th>output</th><th>params</th></tr>");
    for r in &s.layers {
        t.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{:?}</td><td class=n>{}</td></tr>",
            esc(&r.name),
            esc(&r.layer),
            r.output,
            r.params
        ));
    }
    t.push_str(&format!(
        "<tr><th colspan=3>total (encoder {} + decoder {})</th><th class=n>{}</th></tr></table>",
        s.encoder_params, s.decoder_params, s.total_params
    ));
    page.section(
        "model",
        "Model",
        &match config.model.preset {
            Some(p) => format!("The {} preset: {}.", p.name(), p.description()),
            None => format!(
                "A model of its own: encoder <code>{}</code>, decoder <code>{}</code>.",
                esc(&crate::model::spec::layers_to_string(
                    &config.model.spec.encoder
                )),
                esc(&crate::model::spec::layers_to_string(
                    &config.model.spec.decoder
                ))
            ),
        },
        &t,
    );

    // Training curves.
    let history = metrics::read(&dir.join(metrics::METRICS_FILE))?;
    if !history.is_empty() {
        let mut t = String::from("<table><tr><th>epoch</th><th>train loss</th><th>validation loss</th><th>validation MSE</th><th>lr</th><th>seconds</th><th>images/s</th></tr>");
        for m in &history {
            t.push_str(&format!(
                "<tr><td>{}</td><td class=n>{:.6}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{:.1e}</td><td class=n>{:.1}</td><td class=n>{:.0}</td></tr>",
                m.epoch,
                m.train_loss,
                m.valid_loss.map(|v| format!("{v:.6}")).unwrap_or_default(),
                m.valid_mse.map(|v| format!("{v:.6}")).unwrap_or_default(),
                m.lr,
                m.seconds,
                m.images_per_sec
            ));
        }
        t.push_str("</table>");
        let plot = img(&dir.join(metrics::LOSS_PLOT), "loss curves").unwrap_or_default();
        page.section("training", "Training", "Mean training loss per epoch and validation loss after each epoch; the validation images are held out of training.", &format!("{plot}{t}"));
    }

    // Evaluation.
    if let Some(j) = read_json::<EvalReport>(&dir.join("eval.json")) {
        let t = &j.test;
        let table = format!(
            "<table><tr><th>test images</th><th>MSE</th><th>BCE</th><th>PSNR (dB)</th><th>SSIM</th></tr><tr><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td></tr></table>",
            t.images, num(t.mse, 6), num(t.bce, 5), num(t.psnr_db, 2), num(t.ssim, 4)
        );
        let table = match j.elbo {
            Some(e) => format!("{table}<p>ELBO: {e:.2} nats per test image (Bernoulli likelihood, one sample of z).</p>"),
            None => table,
        };
        let pic = img(&dir.join("reconstructions.png"), "reconstructions").unwrap_or_default();
        page.section("eval", "Test-set reconstruction", "Mean per-image error of the reconstructions of all test images, and a few test images over their reconstructions.", &format!("{table}{pic}"));
    }

    // Denoising.
    if let Some(j) = read_json::<DenoiseReport>(&dir.join("denoise.json")) {
        let table = format!(
            "<table><tr><th></th><th>PSNR (dB)</th><th>SSIM</th><th>MSE</th></tr><tr><th>noisy input</th><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td></tr><tr><th>denoised</th><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td></tr></table>",
            num(j.noisy.psnr_db, 2), num(j.noisy.ssim, 4), num(j.noisy.mse, 6),
            num(j.denoised.psnr_db, 2), num(j.denoised.ssim, 4), num(j.denoised.mse, 6)
        );
        let pic = img(&dir.join("denoise.png"), "denoising").unwrap_or_default();
        page.section("denoise", "Denoising", &format!("Test images with Gaussian noise of σ = {} (clipped), and the model's reconstruction of the noisy input, both scored against the clean image.", j.noise_std), &format!("{table}{pic}"));
    }

    if let Some(pic) = img(&dir.join("interpolate.png"), "interpolation") {
        page.section("interpolate", "Interpolation", "Codes on the straight line between two test images' codes, decoded; the originals stand at both ends.", &pic);
    }
    if let Some(pic) = img(&dir.join("samples.png"), "samples") {
        page.section("samples", "Samples", "New digits: codes drawn from a Gaussian fitted (mean and covariance) to the training codes, decoded.", &pic);
    }
    if let Some(j) = read_json::<AnomalyReport>(&dir.join("anomaly.json")) {
        let table = format!(
            "<table><tr><th>mean</th><th>std</th><th>threshold (mean + 3 std)</th><th>images above</th></tr><tr><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td></tr></table>",
            num(j.mean, 6), num(j.std, 6), num(j.threshold, 6), j.flagged
        );
        let pics = [
            img(&dir.join("anomalies.png"), "anomalies"),
            img(&dir.join("anomaly_hist.png"), "anomaly histogram"),
        ]
        .into_iter()
        .flatten()
        .collect::<String>();
        page.section("anomaly", "Anomalies", "Reconstruction error of every test image as an anomaly score: the images the model finds least typical, and the distribution of scores (all scores in anomaly_scores.csv).", &format!("{table}{pics}"));
    }
    for (kind, title, what) in [
        ("logistic", "Logistic regression on the codes", "A linear classifier fitted to the standardised training codes and scored on the test codes: how much digit identity the code keeps in linearly separable form."),
        ("svm", "Linear SVM on the codes", "A one-vs-rest linear SVM on the standardised training codes, scored on the test codes."),
        ("rbf", "RBF-kernel SVM on the codes", "scikit-learn's default SVC (RBF kernel, C = 1, γ = scale, one-vs-one) on the standardised codes: how much digit identity the code keeps when the boundary may curve."),
        ("mlp", "MLP classifier on the codes", "scikit-learn's default MLPClassifier (one hidden layer of 100 ReLU units, Adam, early stop on the training loss) on the standardised codes; the judge of generated samples uses the same model."),
    ] {
        let cdir = dir.join(format!("classify-{kind}"));
        if let Ok(text) = crate::fsutil::read_to_string(&cdir.join("classification_report.txt")) {
            let pic =
                img(&cdir.join("confusion_matrix.png"), "confusion matrix").unwrap_or_default();
            page.section(
                &format!("classify-{kind}"),
                title,
                what,
                &format!("<pre>{}</pre>{pic}", esc(&text)),
            );
        }
    }
    if let Some(pic) = img(&dir.join("tsne.png"), "t-SNE") {
        page.section("tsne", "Map of the codes", "Test codes in two dimensions, coloured by digit: t-SNE (left, neighbourhoods) and PCA (right, the two directions of largest variance).", &pic);
    }

    let path = dir.join(REPORT_FILE);
    let sections = page.ids();
    write_atomic(&path, page.finish().as_bytes())?;
    Ok((path, sections))
}
