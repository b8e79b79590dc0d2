//! `export` and `import`: PyTorch state dicts in safetensors.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use mnist_ae::interop::{export_torch, import_torch, write_reference};
use mnist_ae::model::{ModelConfig, Preset};

use super::explore::RunArgs;

/// Flags of `export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Write the weights as a PyTorch state dict (safetensors) to this file.
    #[arg(long, value_name = "FILE")]
    torch: PathBuf,
    /// Also write test images and this run's reconstructions of them, to check the export
    /// with bench/check_torch_export.py.
    #[arg(long, value_name = "FILE")]
    reference: Option<PathBuf>,
    /// Test images in the reference file.
    #[arg(long, default_value_t = 10_000)]
    count: usize,
}

pub fn run_export(a: ExportArgs) -> Result<()> {
    // Both targets are checked before either is written.
    for target in std::iter::once(&a.torch).chain(&a.reference) {
        mnist_ae::fsutil::check_replaceable(target)?;
    }
    let n = export_torch(&a.run.run, &a.torch)
        .with_context(|| format!("exporting {}", a.run.run.display()))?;
    mnist_ae::outln!(
        "wrote {} ({n} tensors, PyTorch names and layouts)",
        a.torch.display()
    );
    if let Some(r) = &a.reference {
        let (run, data) = a.run.open_read()?;
        let n = write_reference(&run, &data.test, a.count, r)?;
        mnist_ae::outln!(
            "wrote {} ({n} test images and their reconstructions)",
            r.display()
        );
    }
    Ok(())
}

/// Flags of `import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// PyTorch weights (a state dict saved with safetensors) of the preset's PyTorch module.
    weights: PathBuf,
    /// The preset the weights belong to.
    #[arg(long)]
    model: String,
    /// Code size [default: the preset's].
    #[arg(long)]
    latent_dim: Option<usize>,
    /// Run folder to create.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

pub fn run_import(a: ImportArgs) -> Result<()> {
    let mut m = ModelConfig::preset(Preset::parse(&a.model)?);
    if let Some(l) = a.latent_dim {
        m.latent_dim = l;
    }
    import_torch(m, &a.weights, &a.out)
        .with_context(|| format!("importing {}", a.weights.display()))?;
    mnist_ae::outln!("wrote run {} from {}", a.out.display(), a.weights.display());
    Ok(())
}
