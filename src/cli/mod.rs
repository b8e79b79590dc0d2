//! Command-line types (clap) and the dispatch to one file per subcommand.

mod choices;
mod download;
mod eval;
mod explore;
mod interop;
mod latent;
mod model_args;
mod models;
mod report;
mod serve;
mod train;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

/// Train, evaluate and explore autoencoders on MNIST.
#[derive(Debug, Parser)]
#[command(name = "mnist-ae", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Worker threads for training and analyses (results do not depend on it) [default: one
    /// per core]
    #[arg(long, global = true, value_name = "N")]
    threads: Option<usize>,
}

impl Cli {
    /// Whether the command is the long-lived web server (`serve`).
    pub fn is_server(&self) -> bool {
        matches!(self.command, Command::Serve(_))
    }
}

/// The command-line parser: [`Cli`] with the settings derive cannot express. Numbers may be
/// negative (`--seed -1`), and the `--threads` help states this machine's default.
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Cli::command()
        .mut_subcommands(|s| s.allow_negative_numbers(true))
        .mut_arg("threads", |a| {
            a.display_order(1000).help(format!(
                "Worker threads for training and analyses (results do not depend on it) [default: one per core: {cores} here]"
            ))
        })
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train a model and write a run folder (config, weights, metrics, loss plot).
    Train(Box<train::TrainArgs>),
    /// Evaluate a run on the test set: MSE, BCE, PSNR, SSIM and a reconstructions grid.
    Eval(eval::EvalArgs),
    /// Denoise noisy test images: PSNR/SSIM of noisy and denoised vs clean, and a picture.
    Denoise(explore::DenoiseArgs),
    /// Decode straight-line steps between two test images' codes.
    Interpolate(explore::InterpolateArgs),
    /// Draw new digits from a Gaussian fitted to the training codes.
    Sample(explore::SampleArgs),
    /// Score test images by reconstruction error; show the worst and a histogram.
    Anomaly(explore::AnomalyArgs),
    /// Train one run per code size and tabulate reconstruction vs denoising quality.
    Sweep(Box<explore::SweepArgs>),
    /// Fit classifiers on the codes (logistic, linear or RBF SVM, MLP): report, confusion matrix.
    Classify(latent::ClassifyArgs),
    /// Map the test codes to 2-D with t-SNE (and PCA), coloured by digit.
    Tsne(latent::TsneArgs),
    /// Build report.html: every metric, plot and picture of a run on one page.
    Report(report::ReportArgs),
    /// Write a run's weights as a PyTorch state dict (safetensors) and its PyTorch module as code.
    Export(interop::ExportArgs),
    /// Make a run folder from PyTorch weights (safetensors).
    Import(interop::ImportArgs),
    /// The explorer: a local web app to draw digits, wander the code space and compare runs.
    Serve(serve::ServeArgs),
    /// Your own pictures of digits through a run: reconstruction, code, class, anomaly score.
    Reconstruct(serve::ReconstructArgs),
    /// List the model presets with their parameter counts.
    Models(models::ModelsArgs),
    /// Print a model's layers, output shapes and parameter counts.
    Summary(models::SummaryArgs),
    /// Fetch a dataset's four IDX files into the data folder (checked against their MD5).
    Download(download::DownloadArgs),
}

/// Where the data is: shared by every command that reads a dataset.
#[derive(Debug, Args, Clone)]
pub struct DataArgs {
    /// Folder with the IDX files (gz or raw) [default: $MNIST_AE_DATA, else ~/.cache/mnist-ae/mnist]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Never download; fail if the files are not in the data folder.
    #[arg(long)]
    pub no_download: bool,
}

/// The ids of the flags of the subcommand in `matches` that were given on the command line
/// (not filled in from a default).
pub fn given_flags(matches: &clap::ArgMatches) -> Vec<String> {
    let Some((_, m)) = matches.subcommand() else {
        return Vec::new();
    };
    m.ids()
        .filter(|id| m.value_source(id.as_str()) == Some(clap::parser::ValueSource::CommandLine))
        .map(|id| id.to_string())
        .collect()
}

/// Runs the parsed command; `given` is [`given_flags`] of its matches.
pub fn run(cli: Cli, given: &[String]) -> Result<()> {
    mnist_ae::device::without_denormals(|| {
        mnist_ae::set_threads(cli.threads)?;
        dispatch(cli.command, given)
    })
}

fn dispatch(command: Command, given: &[String]) -> Result<()> {
    match command {
        Command::Train(a) => train::run(*a, given),
        Command::Eval(a) => eval::run(a),
        Command::Denoise(a) => explore::run_denoise(a),
        Command::Interpolate(a) => explore::run_interpolate(a),
        Command::Sample(a) => explore::run_sample(a),
        Command::Anomaly(a) => explore::run_anomaly(a),
        Command::Sweep(a) => explore::run_sweep(*a),
        Command::Classify(a) => latent::run_classify(a),
        Command::Tsne(a) => latent::run_tsne(a),
        Command::Report(a) => report::run(a),
        Command::Export(a) => interop::run_export(a),
        Command::Import(a) => interop::run_import(a),
        Command::Serve(a) => serve::run_serve(a),
        Command::Reconstruct(a) => serve::run_reconstruct(a),
        Command::Models(a) => models::run_models(a),
        Command::Summary(a) => models::run_summary(a),
        Command::Download(a) => download::run(a),
    }
}
