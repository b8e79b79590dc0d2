//! `mnist-ae download`: fetch a named dataset's files ahead of time.

use anyhow::Result;
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::Args;
use mnist_ae::data::dataset::load_split;
use mnist_ae::data::download::ensure_files;
use mnist_ae::data::{resolve_data_dir, DatasetSpec, DATASETS};
use mnist_ae::train::announce::thousands;

use super::DataArgs;

fn dataset_parser() -> impl TypedValueParser<Value = &'static DatasetSpec> {
    PossibleValuesParser::new(DATASETS.iter().map(|d| PossibleValue::new(d.name))).map(|name| {
        *DATASETS
            .iter()
            .find(|d| d.name == name)
            .unwrap_or(&DATASETS[0])
    })
}

/// Flags of `download`.
#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// The dataset.
    #[arg(long, default_value = "mnist", value_parser = dataset_parser())]
    dataset: &'static DatasetSpec,
    #[command(flatten)]
    data: DataArgs,
}

pub fn run(a: DownloadArgs) -> Result<()> {
    let dir = resolve_data_dir(a.data.data_dir.as_deref(), a.dataset);
    let [tri, trl, tei, tel] = ensure_files(a.dataset, &dir, !a.data.no_download)?;
    let train = load_split(&tri, &trl)?;
    let test = load_split(&tei, &tel)?;
    mnist_ae::outln!(
        "{}: {} training and {} test images in {}",
        a.dataset.name,
        thousands(train.len()),
        thousands(test.len()),
        dir.display()
    );
    Ok(())
}
