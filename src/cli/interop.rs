//! `export` and `import`: PyTorch state dicts in safetensors.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use mnist_ae::interop::{check_export_targets, export_torch, import_torch, write_reference};

use super::explore::RunArgs;
use super::model_args::{LatentArg, ModelArgs};

/// Flags of `export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Write the weights as a PyTorch state dict (safetensors) to this file, and the PyTorch
    /// module as Python code beside it (same name, .py).
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
    // Every target is checked, and the test data opened, before anything is written.
    check_export_targets(&a.torch, a.reference.as_deref())?;
    if a.count == 0 {
        anyhow::bail!("invalid --count 0: a reference file needs at least one test image");
    }
    let reference = match &a.reference {
        Some(r) => Some((r, a.run.open_test()?)),
        None => None,
    };
    let e = export_torch(&a.run.run, &a.torch)
        .with_context(|| format!("exporting {}", a.run.run.display()))?;
    mnist_ae::outln!(
        "wrote {} ({} tensors, PyTorch names and layouts)",
        a.torch.display(),
        e.tensors
    );
    let stem = (e.code.file_stem())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Python imports a module by name only when the name is an identifier.
    let identifier = stem.chars().next().is_some_and(|c| !c.is_ascii_digit())
        && stem.chars().all(|c| c == '_' || c.is_alphanumeric());
    let how = if identifier {
        format!("`from {stem} import Autoencoder`")
    } else {
        format!("`{stem}` is not a Python identifier: rename the file to import it")
    };
    mnist_ae::outln!("wrote {} (the PyTorch module: {how})", e.code.display());
    if let Some((r, (run, test))) = reference {
        let n = write_reference(&run, &test, a.count, r)?;
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
    /// PyTorch weights (a state dict saved with safetensors) of the model's PyTorch module
    /// (the one `export` writes as code).
    weights: PathBuf,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    latent: LatentArg,
    /// Run folder to create.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

pub fn run_import(a: ImportArgs) -> Result<()> {
    let m = a.model.config(a.latent.latent_dim)?;
    import_torch(m, &a.weights, &a.out)
        .with_context(|| format!("importing {}", a.weights.display()))?;
    mnist_ae::outln!("wrote run {} from {}", a.out.display(), a.weights.display());
    Ok(())
}
