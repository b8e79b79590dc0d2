//! `mnist-ae report RUN`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use mnist_ae::report::analyze::{analyze, AnalyzeOptions};
use mnist_ae::report::build_report;
use mnist_ae::run::Run;

use super::choices::DeviceArg;
use super::DataArgs;

/// Flags of `report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The run folder; report.html is written into it (one self-contained page).
    run: PathBuf,
    /// First run every analysis with default settings (eval, denoise, interpolate, sample,
    /// anomaly, classify, t-SNE) into the run folder, then build the report.
    #[arg(long)]
    analyze: bool,
    /// Test images in the t-SNE map (with --analyze), at least 91 (3 × perplexity 30, + 1).
    #[arg(long, default_value_t = 10_000)]
    tsne_count: usize,
    /// Compute device (with --analyze).
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceArg,
    #[command(flatten)]
    data: DataArgs,
}

/// Runs every analysis on `run_dir` and builds its report, printing each analysis's headline
/// numbers (t-SNE's and the RBF SVM's, which run beside the others, at the end).
pub fn analyze_run(
    run_dir: &std::path::Path,
    device: DeviceArg,
    data: &DataArgs,
    tsne_count: usize,
) -> Result<PathBuf> {
    let device = device.device()?;
    let run = Run::open(run_dir, &device)
        .with_context(|| format!("opening run {}", run_dir.display()))?;
    mnist_ae::outln!(
        "analysing {} with the weights of {}",
        run_dir.display(),
        run.trained()
    );
    let path = analyze(
        &run,
        &AnalyzeOptions {
            data_dir: data.data_dir.clone(),
            allow_download: !data.no_download,
            tsne_count,
        },
        |name, headline| mnist_ae::outln!("{name:<17} {headline}"),
    )?;
    Ok(path)
}

pub fn run(a: ReportArgs) -> Result<()> {
    if a.analyze {
        analyze_run(&a.run, a.device, &a.data, a.tsne_count)?;
    }
    let (path, sections) = build_report(&a.run)?;
    mnist_ae::outln!(
        "wrote {} ({} sections: {})",
        path.display(),
        sections.len(),
        sections.join(", ")
    );
    Ok(())
}
