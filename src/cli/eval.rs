//! `mnist-ae eval RUN`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use mnist_ae::eval::evaluate;
use mnist_ae::run::Run;

use super::choices::DeviceArg;
use super::DataArgs;

/// Flags of `eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The run folder (written by `mnist-ae train`).
    run: PathBuf,
    /// Test images to show, comma-separated [default: the first --count].
    #[arg(long, value_delimiter = ',')]
    indices: Option<Vec<usize>>,
    /// How many pairs to show when --indices is not given: 1 to 1024 (the metrics always
    /// cover the whole test set).
    #[arg(long, default_value_t = 10)]
    count: usize,
    /// Where to write eval.json and reconstructions.png [default: the run folder].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Compute device.
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceArg,
    #[command(flatten)]
    data: DataArgs,
}

pub fn run(a: EvalArgs) -> Result<()> {
    match &a.indices {
        Some(i) => mnist_ae::eval::check_pictured(i.len(), "indices")?,
        None if a.count == 0 => anyhow::bail!("invalid count: must be at least 1"),
        None => mnist_ae::eval::check_pictured(a.count, "count")?,
    }
    let device = a.device.device()?;
    let run =
        Run::open(&a.run, &device).with_context(|| format!("opening run {}", a.run.display()))?;
    let out = run.out_dir(a.out.as_deref(), "eval")?;
    let test = run.test_data(a.data.data_dir.as_deref(), !a.data.no_download)?;
    // --count shows the first images, as many as the test set has.
    let indices = a
        .indices
        .unwrap_or_else(|| (0..a.count.min(test.len())).collect());
    let (r, files) = evaluate(&run, &test, &indices, &out)?;
    mnist_ae::outln!(
        "{} (latent {}, {}) on {} test images: MSE {:.6}  BCE {:.6}  PSNR {:.2} dB  SSIM {:.4}  ({:.1}s)",
        r.model, r.latent_dim, r.trained, r.test.images, r.test.mse, r.test.bce, r.test.psnr_db, r.test.ssim, r.seconds
    );
    if let Some(e) = r.elbo {
        mnist_ae::outln!("ELBO {e:.2} nats per test image");
    }
    for f in files {
        mnist_ae::outln!("wrote {}", f.display());
    }
    Ok(())
}
