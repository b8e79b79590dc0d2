//! `mnist-ae report RUN`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use mnist_ae::report::analyze::{analyze, AnalyzeOptions};
use mnist_ae::report::build_report;
use mnist_ae::run::Run;

use super::DataArgs;

/// Flags of `report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The run folder.
    run: PathBuf,
    /// First run every analysis with default settings (eval, denoise, interpolate, sample,
    /// anomaly, classify, t-SNE), then build the report.
    #[arg(long)]
    analyze: bool,
    /// Test images in the t-SNE map (with --analyze).
    #[arg(long, default_value_t = 10_000)]
    tsne_count: usize,
    /// Folder for report.html [default: the run folder].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Compute device: cpu, wgpu, cuda (with --analyze).
    #[arg(long, default_value = "cpu")]
    device: String,
    #[command(flatten)]
    data: DataArgs,
}

/// Runs every analysis on `run_dir` and builds its report.
pub fn analyze_run(
    run_dir: &std::path::Path,
    device: &str,
    data: &DataArgs,
    tsne_count: usize,
    quiet: bool,
) -> Result<PathBuf> {
    let device = super::device(device)?;
    let run = Run::open(run_dir, &device)
        .with_context(|| format!("opening run {}", run_dir.display()))?;
    Ok(analyze(
        &run,
        &AnalyzeOptions {
            data_dir: data.data_dir.clone(),
            allow_download: !data.no_download,
            tsne_count,
            quiet,
        },
    )?)
}

pub fn run(a: ReportArgs) -> Result<()> {
    if a.analyze {
        analyze_run(&a.run, &a.device, &a.data, a.tsne_count, false)?;
    }
    let (path, sections) = build_report(&a.run, a.out.as_deref())?;
    mnist_ae::outln!(
        "wrote {} ({} sections: {})",
        path.display(),
        sections.len(),
        sections.join(", ")
    );
    Ok(())
}
