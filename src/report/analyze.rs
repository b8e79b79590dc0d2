//! Every analysis of a run with default settings, then the report: what the main job runs
//! after training so one command shows everything.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::error::Result;
use crate::eval::evaluate_each;
use crate::explore::codes::DataCodes;
use crate::explore::{anomaly, denoise, interpolate, sample};
use crate::latent::classifier::ClassifierKind;
use crate::latent::tsne::{tsne_codes, TsneSettings};
use crate::run::Run;
use crate::train::announce::thousands;

/// Options of the full analysis.
#[derive(Debug, Clone)]
pub struct AnalyzeOptions {
    /// Data folder [default: where the run found its data].
    pub data_dir: Option<PathBuf>,
    /// Whether downloads are allowed.
    pub allow_download: bool,
    /// Test images in the t-SNE map.
    pub tsne_count: usize,
}

/// Computes the codes, then runs eval, denoise (σ 0.2), interpolate, sample, anomaly, classify
/// (logistic, linear SVM, MLP) on one thread and, beside them, t-SNE then classify (RBF SVM)
/// on another, writing into `run`'s folder, then builds the report; returns the report path.
/// `done(analysis, headline)` gives each analysis's headline numbers in words: as it finishes
/// on the calling thread; for t-SNE and the RBF SVM, once the other chain has finished.
pub fn analyze(
    run: &Run,
    opts: &AnalyzeOptions,
    mut done: impl FnMut(&str, String),
) -> Result<PathBuf> {
    let tsne_settings = TsneSettings {
        count: opts.tsne_count,
        ..TsneSettings::default()
    };
    // Everything that can be refused is checked before the first analysis writes anything.
    tsne_settings.validate(usize::MAX)?;
    let held = run.out_dir(None, "report --analyze")?;
    let data = run.data(opts.data_dir.as_deref(), opts.allow_download)?;
    tsne_settings.validate(data.test.len())?;
    let out: &Path = &held;
    let first10: Vec<usize> = (0..10).collect();
    let clock = Instant::now;
    let took = |t: Instant| format!("({:.1}s)", t.elapsed().as_secs_f64());

    // Every code is computed once, here, for the analyses of the codes below.
    let t = clock();
    let codes = DataCodes::encode(run, &data)?;
    done(
        "encode",
        format!(
            "{} training and {} test codes {}",
            thousands(codes.train.len()),
            thousands(codes.test.len()),
            took(t)
        ),
    );
    // Two chains of analyses side by side: t-SNE (one thread, so that a seed gives one map)
    // then the RBF SVM (its binary problems on the worker pool) on a thread of their own; the
    // others here: eval, denoise, interpolate (the model on the pool), sample, anomaly, and
    // the logistic, linear and MLP classifiers (each fitted on one thread).
    let classify = |kind: ClassifierKind| {
        let t = clock();
        crate::latent::classify_codes(run, &data, &codes, kind, 1.0, out, false).map(|(c, _)| {
            (
                format!("classify {}", kind.name()),
                format!(
                    "test accuracy {:.2}% {}",
                    100.0 * c.report.accuracy,
                    took(t)
                ),
            )
        })
    };
    let failed = AtomicBool::new(false);
    let (rest, side) = std::thread::scope(|scope| {
        let side = scope.spawn(|| {
            crate::device::without_denormals(|| {
                let t = clock();
                let map = tsne_codes(run, &codes.test, &data.test.labels, tsne_settings, out);
                let map = (map, took(t));
                // Not after a failed map (its error is reported), nor after a failure on the
                // other chain (the analysis stops there).
                let go = map.0.is_ok() && !failed.load(Ordering::Relaxed);
                let rbf = go.then(|| classify(ClassifierKind::Rbf));
                (map, rbf)
            })
        });
        let rest = (|| -> Result<()> {
            let t = clock();
            // Each test image's MSE from eval is what anomaly scores: computed once.
            let (e, _, errors) = evaluate_each(run, &data.test, &first10, out)?;
            done(
                "eval",
                format!(
                    "test MSE {:.6}, PSNR {:.2} dB, SSIM {:.4} {}",
                    e.test.mse,
                    e.test.psnr_db,
                    e.test.ssim,
                    took(t)
                ),
            );
            let t = clock();
            let (d, _) = denoise::denoise(run, &data.test, 0.2, 0, &first10, out)?;
            done(
                "denoise",
                format!(
                    "σ 0.2: PSNR {:.2} → {:.2} dB, SSIM {:.4} → {:.4} {}",
                    d.noisy.psnr_db,
                    d.denoised.psnr_db,
                    d.noisy.ssim,
                    d.denoised.ssim,
                    took(t)
                ),
            );
            let t = clock();
            let (i, _) = interpolate::interpolate(run, &data.test, 0, 1, 8, out)?;
            done(
                "interpolate",
                format!(
                    "#0 ({}) → #1 ({}), code distance {:.3} {}",
                    i.from.1,
                    i.to.1,
                    i.code_distance,
                    took(t)
                ),
            );
            let t = clock();
            let (s, _) = sample::sample_codes(run, &codes.train, 64, 0, None, out)?;
            done(
                "sample",
                format!(
                    "{} digits from {} {}",
                    s.count,
                    if s.prior {
                        "the prior N(0, I)".to_string()
                    } else {
                        format!(
                            "a Gaussian fitted to {} training codes",
                            thousands(s.fitted_on)
                        )
                    },
                    took(t)
                ),
            );
            let t = clock();
            let (a, _) = anomaly::anomaly_scored(run, &data.test, errors, 16, out)?;
            done(
                "anomaly",
                format!(
                    "mean error {:.6}; {} test images above mean+3std {}",
                    a.mean,
                    a.flagged,
                    took(t)
                ),
            );
            let here = ClassifierKind::ALL
                .into_iter()
                .filter(|&k| k != ClassifierKind::Rbf);
            for kind in here {
                // On a pool of its own: the RBF SVM's problems hold the shared pool's
                // workers for a long time each, and would stall this fit's matrix products.
                let (name, line) = crate::device::on_one_thread(|| classify(kind))?;
                done(&name, line);
            }
            Ok(())
        })();
        if rest.is_err() {
            failed.store(true, Ordering::Relaxed);
        }
        // Joined whatever the other analyses gave, so that a panic on that thread is not lost.
        let side = side
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (rest, side)
    });
    rest?;
    let ((map, seconds), rbf) = side;
    let (m, _) = map?;
    done(
        "t-SNE",
        format!(
            "{} test codes mapped {seconds}",
            thousands(m.settings.count.min(data.test.len())),
        ),
    );
    if let Some(rbf) = rbf {
        let (name, line) = rbf?;
        done(&name, line);
    }
    Ok(super::build_report(&run.dir)?.0)
}
