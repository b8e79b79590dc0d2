//! Linear classifiers on codes, fitted with burn's L-BFGS (full batch, strong Wolfe line
//! search) on standardised features, with scikit-learn's objectives:
//! - logistic: `LogisticRegression(C=1)`: multinomial cross-entropy + ½‖W‖²/C (bias free);
//! - svm: `LinearSVC(C=1)`: one-vs-rest squared hinge + ½(‖w‖² + b²)/C (liblinear penalises
//!   the intercept, `intercept_scaling=1`).
//!
//! Written on burn rather than a classifier crate: linfa and smartcore fit kernel SVMs with SMO,
//! which needs the 54,000² kernel matrix here, and neither has liblinear's linear SVM; the two
//! objectives are a dozen lines each on burn's autodiff and L-BFGS.

use burn::module::Param;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{GradientsParams, LBFGSConfig, LineSearchFn};
use burn::prelude::*;
use burn::tensor::activation::{log_softmax, relu};
use serde::{Deserialize, Serialize};

use super::kernel_svm::{self, KernelSvm};
use super::mlp::{self, MlpClassifier};
use crate::error::{Error, Result};

/// Which classifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClassifierKind {
    /// Multinomial logistic regression.
    Logistic,
    /// Linear SVM, one-vs-rest, squared hinge.
    Svm,
    /// RBF-kernel SVM, one-vs-one (scikit-learn's `SVC()`; see `kernel_svm`).
    Rbf,
    /// A one-hidden-layer neural network (scikit-learn's `MLPClassifier()`; see `mlp`).
    Mlp,
}

impl ClassifierKind {
    /// Every kind, in the order the report shows them.
    pub const ALL: [ClassifierKind; 4] = [
        ClassifierKind::Logistic,
        ClassifierKind::Svm,
        ClassifierKind::Rbf,
        ClassifierKind::Mlp,
    ];

    /// Parses `logistic`, `svm`, `rbf` or `mlp`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "logistic" => Ok(ClassifierKind::Logistic),
            "svm" => Ok(ClassifierKind::Svm),
            "rbf" => Ok(ClassifierKind::Rbf),
            "mlp" => Ok(ClassifierKind::Mlp),
            _ => Err(Error::config(
                "classifier",
                format!("'{s}' is not one of logistic, svm, rbf, mlp"),
            )),
        }
    }

    /// A title for plots and reports.
    pub fn title(self) -> &'static str {
        match self {
            ClassifierKind::Logistic => "Logistic regression",
            ClassifierKind::Svm => "Linear SVM",
            ClassifierKind::Rbf => "RBF-kernel SVM",
            ClassifierKind::Mlp => "MLP classifier",
        }
    }

    /// The name used in file names and reports.
    pub fn name(self) -> &'static str {
        match self {
            ClassifierKind::Logistic => "logistic",
            ClassifierKind::Svm => "svm",
            ClassifierKind::Rbf => "rbf",
            ClassifierKind::Mlp => "mlp",
        }
    }
}

/// Per-feature standardisation (scikit-learn's `StandardScaler`: population std, 1 for
/// constant features).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scaler {
    /// Feature means.
    pub mean: Vec<f64>,
    /// Feature standard deviations.
    pub std: Vec<f64>,
}

impl Scaler {
    /// Fits to the rows of `x`.
    pub fn fit(x: &[Vec<f32>]) -> Scaler {
        let d = x.first().map(Vec::len).unwrap_or(0);
        let n = x.len().max(1) as f64;
        let mut mean = vec![0.0; d];
        for r in x {
            for (m, &v) in mean.iter_mut().zip(r) {
                *m += v as f64 / n;
            }
        }
        let mut var = vec![0.0; d];
        for r in x {
            for ((s, &v), m) in var.iter_mut().zip(r).zip(&mean) {
                *s += (v as f64 - m).powi(2) / n;
            }
        }
        let std = var
            .into_iter()
            .map(|v| if v > 0.0 { v.sqrt() } else { 1.0 })
            .collect();
        Scaler { mean, std }
    }

    /// Standardised rows, flattened.
    pub fn transform(&self, x: &[Vec<f32>]) -> Vec<f32> {
        x.iter()
            .flat_map(|r| {
                r.iter()
                    .zip(&self.mean)
                    .zip(&self.std)
                    .map(|((&v, m), s)| ((v as f64 - m) / s) as f32)
            })
            .collect()
    }
}

/// A fitted linear classifier: scaler, weights `[d, classes]` and biases.
#[derive(Debug)]
pub struct LinearClassifier {
    /// Which objective it was fitted with.
    pub kind: ClassifierKind,
    /// The feature scaler.
    pub scaler: Scaler,
    linear: Linear,
    device: Device,
    /// L-BFGS iterations' final objective value.
    pub objective: f64,
}

fn tensor2(values: Vec<f32>, rows: usize, cols: usize, device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(values, [rows, cols]), device)
}

/// Fits a classifier to codes `x` with labels `y` in `0..classes`, regularisation `c`.
pub fn fit(
    kind: ClassifierKind,
    x: &[Vec<f32>],
    y: &[u8],
    classes: usize,
    c: f64,
    max_iter: usize,
    device: &Device,
) -> Result<LinearClassifier> {
    let n = x.len();
    let d = x.first().map(Vec::len).unwrap_or(0);
    if n == 0 || d == 0 || y.len() != n {
        return Err(Error::Data("no codes to fit a classifier to".into()));
    }
    if !(c.is_finite() && c > 0.0) {
        return Err(Error::config(
            "c",
            format!("{c} must be a positive finite number"),
        ));
    }
    if matches!(kind, ClassifierKind::Rbf | ClassifierKind::Mlp) {
        return Err(Error::config(
            "classifier",
            format!("{} is not a linear classifier: use `fit_any`", kind.name()),
        ));
    }
    let scaler = Scaler::fit(x);
    let ad = device.clone().autodiff();
    let xs = tensor2(scaler.transform(x), n, d, &ad);
    // One-hot targets for the logistic loss; ±1 targets for one-vs-rest hinge.
    let mut t = vec![0f32; n * classes];
    for (i, &l) in y.iter().enumerate() {
        t[i * classes + l as usize] = 1.0;
    }
    let onehot = tensor2(t, n, classes, &ad);
    let signs = onehot.clone().mul_scalar(2.0).sub_scalar(1.0);
    let mut linear = LinearConfig::new(d, classes).init(&ad);
    linear.weight = Param::from_tensor(Tensor::zeros([d, classes], &ad));
    linear.bias = Some(Param::from_tensor(Tensor::zeros([classes], &ad)));
    let reg = 0.5 / (c * n as f64);
    let mut closure = |m: Linear| {
        let scores = m.forward(xs.clone()); // [n, classes]
        let w2 = m.weight.val().square().sum();
        let loss = match kind {
            ClassifierKind::Logistic => {
                let ce = -(log_softmax(scores, 1) * onehot.clone()).sum_dim(1).mean();
                ce + w2.mul_scalar(reg)
            }
            _ => {
                let margin = relu((scores * signs.clone()).neg().add_scalar(1.0));
                let hinge = margin.square().sum_dim(1).mean();
                let b2 = m
                    .bias
                    .as_ref()
                    .map(|b| b.val().square().sum())
                    .unwrap_or_else(|| w2.zeros_like());
                hinge + (w2 + b2).mul_scalar(reg)
            }
        };
        let grads = GradientsParams::from_grads(loss.backward(), &m);
        (loss.into_scalar::<f64>(), grads)
    };
    let mut lbfgs = LBFGSConfig::new()
        .with_max_iter(max_iter)
        .with_line_search_fn(LineSearchFn::StrongWolfe)
        .init();
    let (linear, objective) = lbfgs.step(1.0, linear, &mut closure);
    Ok(LinearClassifier {
        kind,
        scaler,
        linear: linear.valid(),
        device: device.clone(),
        objective,
    })
}

impl LinearClassifier {
    /// Class scores (`[n, classes]`, row-major) of codes `x`.
    pub fn decision(&self, x: &[Vec<f32>]) -> Vec<Vec<f32>> {
        let d = self.scaler.mean.len();
        let xs = tensor2(self.scaler.transform(x), x.len(), d, &self.device);
        tensor_rows(self.linear.forward(xs))
    }

    /// Class probabilities (softmax of the scores; for the logistic model these are its
    /// probabilities, for the SVM only a monotone score).
    pub fn probabilities(&self, x: &[Vec<f32>]) -> Vec<Vec<f64>> {
        self.decision(x)
            .iter()
            .map(|r| {
                let m = r.iter().copied().fold(f32::MIN, f32::max) as f64;
                let e: Vec<f64> = r.iter().map(|&v| (v as f64 - m).exp()).collect();
                let s: f64 = e.iter().sum();
                e.into_iter().map(|v| v / s).collect()
            })
            .collect()
    }

    /// Predicted classes of codes `x` (argmax of the scores).
    pub fn predict(&self, x: &[Vec<f32>]) -> Vec<u8> {
        self.decision(x).iter().map(|r| argmax(r).0 as u8).collect()
    }
}

/// A fitted linear classifier as plain numbers, to save and load.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedLinear {
    /// Which objective it was fitted with.
    pub kind: ClassifierKind,
    /// The feature scaler.
    pub scaler: Scaler,
    /// Weights `[d, classes]`, row-major.
    pub weight: Vec<f32>,
    /// Biases, one per class.
    pub bias: Vec<f32>,
    /// The final objective value.
    pub objective: f64,
}

impl LinearClassifier {
    /// The classifier as plain numbers.
    pub fn to_saved(&self) -> SavedLinear {
        let v = |t: Tensor<1>| {
            t.into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .unwrap_or_default()
        };
        SavedLinear {
            kind: self.kind,
            scaler: self.scaler.clone(),
            weight: v(self.linear.weight.val().flatten::<1>(0, 1)),
            bias: self
                .linear
                .bias
                .as_ref()
                .map(|b| v(b.val()))
                .unwrap_or_default(),
            objective: self.objective,
        }
    }

    /// Rebuilds a saved classifier for codes of `d` values and `classes` classes; an error
    /// when the numbers do not fit or are not finite.
    pub fn from_saved(s: SavedLinear, d: usize, classes: usize, device: &Device) -> Result<Self> {
        let fits = s.scaler.mean.len() == d
            && s.scaler.std.len() == d
            && s.weight.len() == d * classes
            && s.bias.len() == classes;
        let finite = s.weight.iter().chain(&s.bias).all(|v| v.is_finite())
            && s.scaler.mean.iter().all(|v| v.is_finite())
            && s.scaler.std.iter().all(|v| v.is_finite() && *v > 0.0);
        if !fits || !finite {
            return Err(Error::Data(format!(
                "a saved classifier for another model (or broken): {} weights for codes of {d} and {classes} classes",
                s.weight.len()
            )));
        }
        let mut linear = LinearConfig::new(d, classes).init(device);
        linear.weight = Param::from_tensor(tensor2(s.weight, d, classes, device));
        linear.bias = Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(s.bias, [classes]),
            device,
        )));
        Ok(LinearClassifier {
            kind: s.kind,
            scaler: s.scaler,
            linear,
            device: device.clone(),
            objective: s.objective,
        })
    }
}

/// The rows of a `[n, k]` tensor, as `f32`.
pub(crate) fn tensor_rows(t: Tensor<2>) -> Vec<Vec<f32>> {
    let k = t.dims()[1].max(1);
    let v = t
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap_or_default();
    v.chunks(k).map(<[f32]>::to_vec).collect()
}

/// The index and value of the largest entry of `row`, the first one on ties (as numpy's and
/// libsvm's); `(0, default)` for an empty row.
pub fn argmax<T: PartialOrd + Copy + Default>(row: &[T]) -> (usize, T) {
    let mut best = (0, row.first().copied().unwrap_or_default());
    for (i, &v) in row.iter().enumerate().skip(1) {
        if v > best.1 {
            best = (i, v);
        }
    }
    best
}

/// A fitted classifier of any kind.
#[derive(Debug)]
pub enum Fitted {
    /// Logistic regression or linear SVM.
    Linear(LinearClassifier),
    /// RBF-kernel SVM with its feature scaler.
    Kernel(Scaler, KernelSvm),
    /// MLP classifier with its feature scaler.
    Mlp(Scaler, MlpClassifier),
}

/// Fits a classifier of `kind` to codes `x` with labels `y` in `0..classes` (standardised
/// first, as scikit-learn's `StandardScaler`), regularisation `c` (linear and kernel models),
/// `seed` (the MLP's weights and shuffles).
pub fn fit_any(
    kind: ClassifierKind,
    x: &[Vec<f32>],
    y: &[u8],
    classes: usize,
    c: f64,
    seed: u64,
    device: &Device,
) -> Result<Fitted> {
    if y.len() != x.len() {
        return Err(Error::Data(format!(
            "{} codes but {} labels",
            x.len(),
            y.len()
        )));
    }
    if let Some(&l) = y.iter().find(|&&l| l as usize >= classes) {
        return Err(Error::Data(format!(
            "label {l} is not below the class count {classes}"
        )));
    }
    let d = x.first().map(Vec::len).unwrap_or(0);
    match kind {
        ClassifierKind::Mlp => {
            let scaler = Scaler::fit(x);
            let m = mlp::fit(&scaler.transform(x), d, y, classes, seed, device)?;
            Ok(Fitted::Mlp(scaler, m))
        }
        ClassifierKind::Rbf => {
            let scaler = Scaler::fit(x);
            let svm = kernel_svm::fit(&scaler.transform(x), d, y, classes, c)?;
            Ok(Fitted::Kernel(scaler, svm))
        }
        _ => Ok(Fitted::Linear(fit(kind, x, y, classes, c, 500, device)?)),
    }
}

impl Fitted {
    /// Predicted classes of codes `x`.
    pub fn predict(&self, x: &[Vec<f32>]) -> Vec<u8> {
        match self {
            Fitted::Linear(m) => m.predict(x),
            Fitted::Kernel(scaler, svm) => svm.predict(&scaler.transform(x)),
            Fitted::Mlp(scaler, m) => m.predict(&scaler.transform(x)),
        }
    }

    /// Class probabilities of codes `x`: the logistic and MLP models' own; for the SVMs none.
    pub fn probabilities(&self, x: &[Vec<f32>]) -> Option<Vec<Vec<f64>>> {
        match self {
            Fitted::Linear(m) if m.kind == ClassifierKind::Logistic => Some(m.probabilities(x)),
            Fitted::Mlp(scaler, m) => Some(m.probabilities(&scaler.transform(x))),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed 3-class problem that numpy can rebuild exactly.
    fn data() -> (Vec<Vec<f32>>, Vec<u8>) {
        let off = [1.0, -1.0, 0.5, 0.0].map(|v: f64| v * 0.6);
        (0..1600)
            .map(|i| {
                let l = (i % 3) as u8;
                let x = (0..4)
                    .map(|j| {
                        ((i as f64 * (j + 1) as f64 * 0.7 + j as f64).sin() + l as f64 * off[j])
                            as f32
                    })
                    .collect();
                (x, l)
            })
            .unzip()
    }

    /// scikit-learn 1.9.1 on the same data:
    ///
    /// ```python
    /// import numpy as np
    /// from sklearn.linear_model import LogisticRegression
    /// from sklearn.preprocessing import StandardScaler
    /// from sklearn.svm import LinearSVC
    /// i = np.arange(1600); lab = i % 3
    /// X = np.stack([np.sin(i * (j + 1) * 0.7 + j) for j in range(4)], 1)
    /// X = (X + lab[:, None] * (np.array([1.0, -1.0, 0.5, 0.0]) * 0.6)).astype(np.float32).astype(np.float64)
    /// sc = StandardScaler().fit(X[:1200]); xtr, xte = sc.transform(X[:1200]), sc.transform(X[1200:])
    /// for clf in [LogisticRegression(C=1.0, max_iter=1000), LinearSVC(C=1.0, max_iter=100000)]:
    ///     clf.fit(xtr, lab[:1200]); print((clf.predict(xte) == lab[1200:]).mean())
    /// # LogisticRegression 0.7425 (train 0.73083), LinearSVC 0.6675 (train 0.59917)
    /// ```
    ///
    /// On real codes (conv64, 10 epochs, `classify --export-codes` then
    /// `bench/sklearn_classify.py`): ours 0.9401 / 0.9318, scikit-learn 0.9396 / 0.9319.
    #[test]
    fn argmax_takes_the_first_of_equal_maxima() {
        assert_eq!(argmax(&[1.0f32, 3.0, 3.0, 2.0]), (1, 3.0));
        assert_eq!(argmax(&[2usize, 0, 2]), (0, 2));
        assert_eq!(argmax::<f64>(&[]), (0, 0.0));
    }

    #[test]
    fn fit_any_refuses_labels_beyond_the_classes_and_mismatched_lengths() {
        let (x, mut y) = data();
        y[5] = 3;
        let device = Device::flex();
        for kind in ClassifierKind::ALL {
            let e = fit_any(kind, &x[..100], &y[..100], 3, 1.0, 0, &device).unwrap_err();
            assert!(e.to_string().contains("label 3"), "{kind:?}: {e}");
        }
        let e = fit_any(ClassifierKind::Mlp, &x[..10], &y[..9], 3, 1.0, 0, &device).unwrap_err();
        assert!(e.to_string().contains("10 codes but 9 labels"), "{e}");
    }

    #[test]
    fn matches_scikit_learn_within_half_a_point() {
        let (x, y) = data();
        let device = Device::flex();
        for (kind, reference) in [
            (ClassifierKind::Logistic, 0.7425),
            (ClassifierKind::Svm, 0.6675),
        ] {
            let m = fit(kind, &x[..1200], &y[..1200], 3, 1.0, 500, &device).unwrap();
            let p = m.predict(&x[1200..]);
            let acc = p.iter().zip(&y[1200..]).filter(|(a, b)| a == b).count() as f64 / 400.0;
            assert!(
                (acc - reference).abs() <= 0.005,
                "{kind:?}: {acc} vs scikit-learn {reference}"
            );
        }
    }
}
