//! Every analysis of a run with default settings, then the report: what the main job runs
//! after training so one command shows everything.

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::eval::evaluate;
use crate::explore::{anomaly, denoise, interpolate, sample};
use crate::latent::classifier::ClassifierKind;
use crate::latent::tsne::{tsne, TsneSettings};
use crate::run::Run;

/// Options of the full analysis.
#[derive(Debug, Clone)]
pub struct AnalyzeOptions {
    /// Data folder.
    pub data_dir: PathBuf,
    /// Whether downloads are allowed.
    pub allow_download: bool,
    /// Test images in the t-SNE map.
    pub tsne_count: usize,
    /// No progress lines.
    pub quiet: bool,
}

/// Runs eval, denoise (σ 0.2), interpolate, sample, anomaly, classify (logistic, linear SVM, RBF SVM) and
/// t-SNE on `run`, writing into its folder, then builds the report; returns the report path.
pub fn analyze(run: &Run, opts: &AnalyzeOptions) -> Result<PathBuf> {
    let data = run.data(&opts.data_dir, opts.allow_download)?;
    let out: &Path = &run.dir;
    let say = |s: &str| {
        if !opts.quiet {
            eprintln!("{s}");
        }
    };
    let first10: Vec<usize> = (0..10).collect();
    say("analyze: eval");
    evaluate(run, &data.test, &first10, out)?;
    say("analyze: denoise");
    denoise::denoise(run, &data.test, 0.2, 0, &first10, out)?;
    say("analyze: interpolate");
    interpolate::interpolate(run, &data.test, 0, 1, 8, out)?;
    say("analyze: sample");
    sample::sample(run, &data.train, 64, 0, None, out)?;
    say("analyze: anomaly");
    anomaly::anomaly(run, &data.test, 16, out)?;
    for kind in ClassifierKind::ALL {
        say(&format!("analyze: classify {}", kind.name()));
        crate::latent::classify(run, &data, kind, 1.0, out, false)?;
    }
    say("analyze: t-SNE");
    let count = opts.tsne_count.min(data.test.len());
    tsne(
        run,
        &data.test,
        TsneSettings {
            count,
            ..TsneSettings::default()
        },
        out,
    )?;
    say("analyze: report");
    Ok(super::build_report(&run.dir, None)?.0)
}
