//! Flags that take one of a fixed set of values, checked while parsing so that `--help` lists
//! the values and a bad one fails before any work, and the parsers of numbers with a special
//! form (seeds).

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::ValueEnum;
use mnist_ae::device::DeviceChoice;
use mnist_ae::latent::classifier::ClassifierKind;
use mnist_ae::model::{Preset, PRESETS};

/// `--device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    /// The CPU (always built in)
    Cpu,
    /// A GPU through wgpu: Vulkan, Metal or DX12 (needs the `wgpu` cargo feature)
    Wgpu,
    /// An NVIDIA GPU through CUDA (needs the `cuda` cargo feature)
    Cuda,
}

impl DeviceArg {
    /// The library's name for it.
    pub fn choice(self) -> DeviceChoice {
        match self {
            DeviceArg::Cpu => DeviceChoice::Cpu,
            DeviceArg::Wgpu => DeviceChoice::Wgpu,
            DeviceArg::Cuda => DeviceChoice::Cuda,
        }
    }

    /// The burn device, or why this binary cannot give it.
    pub fn device(self) -> anyhow::Result<burn::tensor::Device> {
        Ok(self.choice().device()?)
    }
}

/// A latent classifier (`classify --classifier`, `sample --judge-classifier`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClassifierArg {
    /// Multinomial logistic regression (scikit-learn's LogisticRegression)
    Logistic,
    /// Linear SVM, one-vs-rest (scikit-learn's LinearSVC)
    Svm,
    /// RBF-kernel SVM, one-vs-one (scikit-learn's SVC())
    Rbf,
    /// A one-hidden-layer neural network (scikit-learn's MLPClassifier())
    Mlp,
}

impl ClassifierArg {
    /// The library's kind.
    pub fn kind(self) -> ClassifierKind {
        match self {
            ClassifierArg::Logistic => ClassifierKind::Logistic,
            ClassifierArg::Svm => ClassifierKind::Svm,
            ClassifierArg::Rbf => ClassifierKind::Rbf,
            ClassifierArg::Mlp => ClassifierKind::Mlp,
        }
    }
}

/// `--model`: a preset name, listed with its description in `--help`.
pub fn preset_parser() -> impl TypedValueParser<Value = Preset> {
    PossibleValuesParser::new(
        PRESETS
            .iter()
            .map(|p| PossibleValue::new(p.name()).help(p.description())),
    )
    .try_map(|name| Preset::parse(&name))
}

/// `--dataset`: a known name, or a folder that exists.
pub fn parse_dataset(s: &str) -> Result<String, String> {
    let names: Vec<&str> = mnist_ae::data::DATASETS.iter().map(|d| d.name).collect();
    if names.contains(&s) || std::path::Path::new(s).is_dir() {
        return Ok(s.to_string());
    }
    Err(format!(
        "'{s}' is neither a dataset name ({}) nor a folder of IDX files",
        names.join(", ")
    ))
}

/// A seed: 0 to 2⁶⁴−1, or a negative number down to −2⁶³, which stands for 2⁶⁴ plus it (as
/// PyTorch's `manual_seed` takes it), so `--seed -1` is 18446744073709551615.
pub fn parse_seed(s: &str) -> Result<u64, String> {
    let bad = || format!("'{s}' is not a whole number from -2^63 to 2^64-1");
    match s.strip_prefix('-') {
        Some(_) => s.parse::<i64>().map(|v| v as u64).map_err(|_| bad()),
        None => s.parse::<u64>().map_err(|_| bad()),
    }
}

/// A positive number that single precision holds (a perplexity): `1e-300` or `1e300` would
/// otherwise become 0 or infinity silently.
pub fn parse_positive_f32(s: &str) -> Result<f32, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number"))?;
    let single = v as f32;
    if v.is_finite() && v > 0.0 && single.is_finite() && single > 0.0 {
        Ok(single)
    } else {
        Err(format!(
            "'{s}' is not a positive number of single precision (from about 1.2e-38 to 3.4e38)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positive_numbers_must_fit_single_precision() {
        assert_eq!(parse_positive_f32("30"), Ok(30.0));
        for bad in ["0", "-5", "1e-300", "1e300", "nan", "inf", "x"] {
            assert!(parse_positive_f32(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn seeds_wrap_negative_values_as_pytorch_does() {
        assert_eq!(parse_seed("42"), Ok(42));
        assert_eq!(parse_seed("-1"), Ok(u64::MAX));
        assert_eq!(parse_seed("-9223372036854775808"), Ok(1 << 63));
        assert!(parse_seed("-9223372036854775809").is_err());
        assert!(parse_seed("1.5").is_err());
        assert_eq!(parse_seed("18446744073709551615"), Ok(u64::MAX));
    }

    #[test]
    fn datasets_are_names_or_folders() {
        assert!(parse_dataset("fashion-mnist").is_ok());
        assert!(parse_dataset(".").is_ok());
        let e = parse_dataset("mnist2").unwrap_err();
        assert!(e.contains("mnist, fashion-mnist, kmnist"), "{e}");
    }
}
