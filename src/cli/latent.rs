//! `classify` and `tsne`.

use anyhow::Result;
use clap::Args;
use mnist_ae::explore::codes::DataCodes;
use mnist_ae::latent::classifier::ClassifierKind;
use mnist_ae::latent::tsne::{tsne, TsneSettings};

use super::choices::{parse_positive_f32, parse_seed, ClassifierArg};
use super::explore::RunOutArgs;

/// Flags of `classify`.
#[derive(Debug, Args)]
pub struct ClassifyArgs {
    #[command(flatten)]
    run: RunOutArgs,
    /// Classifiers fitted on the training codes; comma-separate for several.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "logistic")]
    classifier: Vec<ClassifierArg>,
    /// Inverse regularisation strength (scikit-learn's C).
    #[arg(long, default_value_t = 1.0)]
    c: f64,
    /// Also write the codes as codes_train.csv and codes_test.csv.
    #[arg(long)]
    export_codes: bool,
}

pub fn run_classify(a: ClassifyArgs) -> Result<()> {
    let kinds: Vec<ClassifierKind> = a.classifier.iter().map(|k| k.kind()).collect();
    let (run, data, out) = a.run.open("classify")?;
    let codes = DataCodes::encode(&run, &data)?;
    for (i, kind) in kinds.into_iter().enumerate() {
        let export = a.export_codes && i == 0;
        let (r, dir) =
            mnist_ae::latent::classify_codes(&run, &data, &codes, kind, a.c, &out, export)?;
        mnist_ae::outln!(
            "{}: test accuracy {:.4} (train {:.4}, fitted in {:.1}s on {} codes)",
            kind.name(),
            r.report.accuracy,
            r.train_accuracy,
            r.fit_seconds,
            r.train_images
        );
        mnist_ae::outln!("{}", r.report.to_sklearn_text().trim_end());
        mnist_ae::outln!("wrote {}", dir.display());
    }
    Ok(())
}

/// Flags of `tsne`.
#[derive(Debug, Args)]
pub struct TsneArgs {
    #[command(flatten)]
    run: RunOutArgs,
    /// Map the first N test images: at least 3 × perplexity + 1 (91 for perplexity 30).
    #[arg(long, default_value_t = 10_000)]
    count: usize,
    /// t-SNE perplexity.
    #[arg(long, default_value = "30", value_parser = parse_positive_f32)]
    perplexity: f32,
    /// Gradient-descent epochs.
    #[arg(long, default_value_t = 1000)]
    epochs: usize,
    /// Seed of the initial embedding.
    #[arg(long, default_value = "0", value_parser = parse_seed)]
    seed: u64,
}

pub fn run_tsne(a: TsneArgs) -> Result<()> {
    let s = TsneSettings {
        count: a.count,
        perplexity: a.perplexity,
        epochs: a.epochs,
        seed: a.seed,
    };
    s.validate(usize::MAX)?;
    let (run, test, out) = a.run.open_test("tsne")?;
    let (r, files) = tsne(&run, &test, s, &out)?;
    let whole = if a.count > r.settings.count {
        " (all the test set holds)"
    } else {
        ""
    };
    mnist_ae::outln!(
        "t-SNE of {} test codes{whole} in {:.1}s; PCA axes explain {:.1}% and {:.1}% of the variance",
        r.settings.count,
        r.seconds,
        100.0 * r.pca_explained[0],
        100.0 * r.pca_explained[1]
    );
    for f in files {
        mnist_ae::outln!("wrote {}", f.display());
    }
    Ok(())
}
