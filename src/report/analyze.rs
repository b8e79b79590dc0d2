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
    /// Data folder [default: where the run found its data].
    pub data_dir: Option<PathBuf>,
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
    let say = |s: &str| {
        if !opts.quiet {
            crate::errln!("{s}");
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
    tsne(run, &data.test, tsne_settings, out)?;
    say("analyze: report");
    Ok(super::build_report(&run.dir, None)?.0)
}
