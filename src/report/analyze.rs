//! Every analysis of a run with default settings, then the report: what the main job runs
//! after training so one command shows everything.

use std::path::{Path, PathBuf};
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

/// Runs eval, denoise (σ 0.2), interpolate, sample, anomaly, classify (logistic, linear SVM,
/// RBF SVM, MLP) and t-SNE on `run`, writing into its folder, then builds the report; returns
/// the report path. `done(analysis, headline)` is called as each analysis finishes, with its
/// headline numbers in words.
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
    // Every code is computed once, here, for the analyses of the codes below.
    let t = clock();
    let codes = DataCodes::encode(run, &data);
    done(
        "encode",
        format!(
            "{} training and {} test codes {}",
            thousands(codes.train.len()),
            thousands(codes.test.len()),
            took(t)
        ),
    );
    // t-SNE computes its map on one thread (so that a seed gives one map), on a thread of its
    // own, beside the analyses below, which use the worker pool.
    let (rest, tsne) = std::thread::scope(|scope| {
        let tsne = scope.spawn(|| {
            crate::device::without_denormals(|| {
                let t = clock();
                let map = tsne_codes(run, &codes.test, &data.test.labels, tsne_settings, out);
                (map, took(t))
            })
        });
        let rest = (|| -> Result<()> {
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
            // The MLP first: it fits on one thread, beside t-SNE's one, so that the two
            // fill both cores of a 2-core machine before the others, which use the pool.
            let order = [
                ClassifierKind::Mlp,
                ClassifierKind::Rbf,
                ClassifierKind::Logistic,
                ClassifierKind::Svm,
            ];
            for kind in order {
                let t = clock();
                let (c, _) =
                    crate::latent::classify_codes(run, &data, &codes, kind, 1.0, out, false)?;
                done(
                    &format!("classify {}", kind.name()),
                    format!(
                        "test accuracy {:.2}% {}",
                        100.0 * c.report.accuracy,
                        took(t)
                    ),
                );
            }
            Ok(())
        })();
        // Joined whatever the other analyses gave, so that a panic in t-SNE is not lost.
        let tsne = tsne
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (rest, tsne)
    });
    rest?;
    let ((m, _), seconds) = (tsne.0?, tsne.1);
    done(
        "t-SNE",
        format!(
            "{} test codes mapped {seconds}",
            thousands(m.settings.count.min(data.test.len())),
        ),
    );
    Ok(super::build_report(&run.dir)?.0)
}
