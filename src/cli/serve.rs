//! `serve` (the explorer) and `reconstruct` (your own pictures through a run).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use mnist_ae::serve::{DataOptions, Explorer};

use super::choices::DeviceArg;
use super::DataArgs;

/// Flags of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Run folders to explore (several: side by side).
    #[arg(required = true, value_name = "RUN")]
    runs: Vec<PathBuf>,
    /// Port to listen on (0: any free port).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Address to listen on; the default takes connections from this machine only.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Compute device.
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceArg,
    #[command(flatten)]
    data: DataArgs,
}

pub fn run_serve(a: ServeArgs) -> Result<()> {
    let data = DataOptions {
        data_dir: a.data.data_dir.clone(),
        allow_download: !a.data.no_download,
    };
    let device = a.device.device()?;
    let explorer = Explorer::open(&a.runs, &data, &device, |name| {
        mnist_ae::errln!("preparing {name}: encoding its images, fitting its classifier");
    })
    .context("opening the runs")?;
    let explorer = Arc::new(explorer);
    let addr = SocketAddr::new(a.host, a.port);
    let runtime = tokio::runtime::Runtime::new().context("starting the web server")?;
    runtime.block_on(async {
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        mnist_ae::serve::serve(
            explorer,
            addr,
            |bound| {
                mnist_ae::outln!("explorer at http://{bound}/ (Ctrl-C stops it)");
            },
            shutdown,
        )
        .await
    })?;
    Ok(())
}

/// Flags of `reconstruct`.
#[derive(Debug, Args)]
pub struct ReconstructArgs {
    /// The run folder.
    run: PathBuf,
    /// Pictures of digits (PNG or JPEG, any size; dark on light or light on dark).
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<PathBuf>,
    /// Where to write the pictures and reconstruct.json [default: the run folder].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Compute device.
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceArg,
    #[command(flatten)]
    data: DataArgs,
}

pub fn run_reconstruct(a: ReconstructArgs) -> Result<()> {
    for f in &a.images {
        mnist_ae::fsutil::check_readable(f)?;
    }
    let data = DataOptions {
        data_dir: a.data.data_dir.clone(),
        allow_download: !a.data.no_download,
    };
    let device = a.device.device()?;
    let run = mnist_ae::run::Run::open(&a.run, &device)
        .with_context(|| format!("opening run {}", a.run.display()))?;
    let out = run.out_dir(a.out.as_deref(), "reconstruct")?;
    drop(run);
    let explorer = Explorer::open(std::slice::from_ref(&a.run), &data, &device, |_| {})?;
    let state = &explorer.runs[0];
    let results = mnist_ae::explore::reconstruct::reconstruct(state, &a.images, &out)?;
    for r in &results {
        mnist_ae::outln!(
            "{}: {} ({:.1}%), anomaly MSE {:.6} (percentile {:.1} among test images); wrote {}",
            r.file.display(),
            r.class,
            100.0 * r.probabilities.iter().cloned().fold(0.0, f64::max),
            r.anomaly_mse,
            r.anomaly_percentile,
            r.png.display()
        );
    }
    mnist_ae::outln!("wrote {}", out.join("reconstruct.json").display());
    Ok(())
}
