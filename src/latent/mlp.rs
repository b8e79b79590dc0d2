//! A small neural-network classifier on codes, with scikit-learn's `MLPClassifier()` defaults:
//! one hidden layer of 100 ReLU units, softmax output, cross-entropy plus an L2 penalty
//! (α = 1e-4, as ½α‖W‖² over the batch size), Adam at lr 1e-3, shuffled batches of 200, and
//! stopping when the epoch's training loss has not improved by 1e-4 for 10 epochs (at most 200
//! epochs). Its softmax gives class probabilities, which is what judging generated digits
//! needs: a 98%-accurate classifier whose confidence means something, where logistic regression
//! on the same codes is 94% accurate.

use burn::prelude::Device;
use rand::seq::SliceRandom;
use rand::Rng;

use super::classifier::argmax;
use crate::data::batch::rng;
use crate::error::{Error, Result};
use crate::kernels::{matmul_at_b, matmul_rows};

/// scikit-learn's `hidden_layer_sizes=(100,)`.
const HIDDEN: usize = 100;
/// scikit-learn's `alpha`.
const ALPHA: f32 = 1e-4;
/// scikit-learn's `batch_size="auto"`: min(200, n).
const BATCH: usize = 200;
/// scikit-learn's `max_iter`, `tol` and `n_iter_no_change`.
const MAX_EPOCHS: usize = 200;
const TOL: f64 = 1e-4;
const NO_CHANGE: usize = 10;
/// scikit-learn's Adam: `learning_rate_init`, `beta_1`, `beta_2`, `epsilon`.
const LR: f32 = 1e-3;
const BETA1: f32 = 0.9;
const BETA2: f32 = 0.999;
const EPS: f32 = 1e-8;
/// Random streams for the initial weights and the shuffles (apart from training's streams).
const INIT_STREAM: u64 = 0x6d6c_7069;
const SHUFFLE_STREAM: u64 = 0x6d6c_7063;

/// The network's parameters, row-major as PyTorch lays out linear layers: `w1` `[HIDDEN,
/// dim]`, `b1` `[HIDDEN]`, `w2` `[classes, HIDDEN]`, `b2` `[classes]`, one after the other.
#[derive(Debug, Clone)]
struct Params {
    v: Vec<f32>,
    dim: usize,
    classes: usize,
}

impl Params {
    fn len(dim: usize, classes: usize) -> usize {
        HIDDEN * dim + HIDDEN + classes * HIDDEN + classes
    }

    /// scikit-learn's initialisation: weights and biases uniform in ±√(6 / (fan_in +
    /// fan_out)) per layer.
    fn init(dim: usize, classes: usize, seed: u64) -> Params {
        let mut r = rng(seed, INIT_STREAM);
        let mut v = Vec::with_capacity(Params::len(dim, classes));
        for (fan_in, fan_out) in [(dim, HIDDEN), (HIDDEN, classes)] {
            let bound = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
            for _ in 0..fan_out * (fan_in + 1) {
                v.push(r.gen_range(-bound..bound));
            }
        }
        Params { v, dim, classes }
    }

    /// `(w1, b1, w2, b2)`.
    fn split(&self) -> (&[f32], &[f32], &[f32], &[f32]) {
        let (w1, rest) = self.v.split_at(HIDDEN * self.dim);
        let (b1, rest) = rest.split_at(HIDDEN);
        let (w2, b2) = rest.split_at(self.classes * HIDDEN);
        (w1, b1, w2, b2)
    }

    /// Hidden activations `[m, HIDDEN]` and class probabilities `[m, classes]` of rows `x`.
    fn forward(&self, x: &[f32], m: usize) -> (Vec<f32>, Vec<f32>) {
        let (w1, b1, w2, b2) = self.split();
        let mut h = vec![0f32; m * HIDDEN];
        matmul_rows(&mut h, x, (m, self.dim), w1, HIDDEN, true);
        for row in h.chunks_mut(HIDDEN) {
            for (v, b) in row.iter_mut().zip(b1) {
                *v = (*v + b).max(0.0);
            }
        }
        let mut p = vec![0f32; m * self.classes];
        matmul_rows(&mut p, &h, (m, HIDDEN), w2, self.classes, true);
        for row in p.chunks_mut(self.classes) {
            for (v, b) in row.iter_mut().zip(b2) {
                *v += b;
            }
            softmax(row);
        }
        (h, p)
    }
}

/// Softmax of one row, in place.
fn softmax(row: &mut [f32]) {
    let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in row.iter_mut() {
        *v /= sum;
    }
}

/// A fitted MLP classifier (inputs already scaled by the caller).
#[derive(Debug)]
pub struct MlpClassifier {
    params: Params,
    /// Epochs trained.
    pub epochs: usize,
    /// Training loss of the last epoch.
    pub loss: f64,
}

/// Fits to rows `x` (`[n, dim]` row-major, scaled) with labels in `0..classes`; `seed` drives
/// the initial weights and the shuffles. Forward and backward passes are written out (two
/// layers): at these sizes (batches of 200 × 64 codes) a general autodiff graph per step costs
/// several times the arithmetic. The CPU only; `_device` is accepted for symmetry with the
/// other classifiers.
pub fn fit(
    x: &[f32],
    dim: usize,
    y: &[u8],
    classes: usize,
    seed: u64,
    _device: &Device,
) -> Result<MlpClassifier> {
    // On one worker thread: the matrix products of a batch are too small to split (handing
    // them to other threads cost more than they did), and one thread keeps the result the
    // same on every machine.
    crate::device::on_one_thread(|| fit_here(x, dim, y, classes, seed))
}

fn fit_here(x: &[f32], dim: usize, y: &[u8], classes: usize, seed: u64) -> Result<MlpClassifier> {
    let n = y.len();
    if n == 0 || dim == 0 || x.len() != n * dim {
        return Err(Error::Data("no codes to fit a classifier to".into()));
    }
    let mut params = Params::init(dim, classes, seed);
    let len = params.v.len();
    let (mut m1, mut m2) = (vec![0f32; len], vec![0f32; len]);
    let mut grad = vec![0f32; len];
    let batch = BATCH.min(n);
    let mut order: Vec<usize> = (0..n).collect();
    let mut shuffler = rng(seed, SHUFFLE_STREAM);
    let (mut best, mut stalled, mut epochs, mut last) = (f64::INFINITY, 0, 0, f64::NAN);
    let mut step = 0i32;
    let mut xb = Vec::with_capacity(batch * dim);
    while epochs < MAX_EPOCHS {
        order.shuffle(&mut shuffler);
        let mut sum = 0.0;
        for chunk in order.chunks(batch) {
            let m = chunk.len();
            xb.clear();
            for &i in chunk {
                xb.extend_from_slice(&x[i * dim..(i + 1) * dim]);
            }
            let (h, mut g) = params.forward(&xb, m);
            // Cross-entropy of the batch, and its gradient (P − Y) / m on the logits.
            let mut ce = 0.0f64;
            for (row, &i) in g.chunks_mut(classes).zip(chunk) {
                let c = y[i] as usize;
                ce -= (row[c].max(f32::MIN_POSITIVE) as f64).ln();
                row[c] -= 1.0;
                for v in row.iter_mut() {
                    *v /= m as f32;
                }
            }
            let (w1, _, w2, _) = params.split();
            let l2: f64 = w1.iter().chain(w2).map(|&w| (w * w) as f64).sum();
            let lv = ce / m as f64 + 0.5 * ALPHA as f64 * l2 / m as f64;
            if !lv.is_finite() {
                return Err(Error::Data(format!(
                    "MLP classifier: training loss became {lv} in epoch {}",
                    epochs + 1
                )));
            }
            sum += lv * m as f64;
            backward(&params, &xb, &h, &g, m, &mut grad);
            step += 1;
            adam(&mut params.v, &grad, &mut m1, &mut m2, step);
        }
        epochs += 1;
        last = sum / n as f64;
        // scikit-learn's rule: an epoch that does not beat the best by `tol` counts as stalled.
        if last > best - TOL {
            stalled += 1;
        } else {
            stalled = 0;
        }
        best = best.min(last);
        if stalled > NO_CHANGE {
            break;
        }
    }
    Ok(MlpClassifier {
        params,
        epochs,
        loss: last,
    })
}

/// The gradient of the batch loss into `grad` (laid out as [`Params`]): `g` is the loss's
/// gradient on the logits `[m, classes]`, `h` the hidden activations; the L2 term adds
/// α·W / m to the weights' gradients (not the biases'), as scikit-learn.
fn backward(p: &Params, x: &[f32], h: &[f32], g: &[f32], m: usize, grad: &mut [f32]) {
    let (dim, classes) = (p.dim, p.classes);
    let (w1, _, w2, _) = p.split();
    let (gw1, rest) = grad.split_at_mut(HIDDEN * dim);
    let (gb1, rest) = rest.split_at_mut(HIDDEN);
    let (gw2, gb2) = rest.split_at_mut(classes * HIDDEN);
    // Output layer: dW2 = gᵀ·h, db2 = Σ g.
    matmul_at_b(gw2, g, (m, classes), h, HIDDEN);
    gb2.fill(0.0);
    for row in g.chunks(classes) {
        for (b, v) in gb2.iter_mut().zip(row) {
            *b += v;
        }
    }
    // Hidden layer: dh = g·W2 masked by the ReLU, dW1 = dhᵀ·x, db1 = Σ dh.
    let mut dh = vec![0f32; m * HIDDEN];
    matmul_rows(&mut dh, g, (m, classes), w2, HIDDEN, false);
    for (d, &a) in dh.iter_mut().zip(h) {
        *d = if a > 0.0 { *d } else { 0.0 };
    }
    matmul_at_b(gw1, &dh, (m, HIDDEN), x, dim);
    gb1.fill(0.0);
    for row in dh.chunks(HIDDEN) {
        for (b, v) in gb1.iter_mut().zip(row) {
            *b += v;
        }
    }
    let decay = ALPHA / m as f32;
    for (gw, w) in gw1.iter_mut().zip(w1).chain(gw2.iter_mut().zip(w2)) {
        *gw += decay * w;
    }
}

/// scikit-learn's Adam step `t` (from 1): the bias corrections folded into the learning rate,
/// ε added to √v.
fn adam(v: &mut [f32], g: &[f32], m1: &mut [f32], m2: &mut [f32], t: i32) {
    let lr = LR * (1.0 - BETA2.powi(t)).sqrt() / (1.0 - BETA1.powi(t));
    let n = v.len();
    let (g, m1, m2) = (&g[..n], &mut m1[..n], &mut m2[..n]);
    for i in 0..n {
        m1[i] = BETA1 * m1[i] + (1.0 - BETA1) * g[i];
        m2[i] = BETA2 * m2[i] + (1.0 - BETA2) * g[i] * g[i];
        v[i] -= lr * m1[i] / (m2[i].sqrt() + EPS);
    }
}

impl MlpClassifier {
    /// Class probabilities of rows `x` (`[n, dim]`, scaled), one `Vec` per row.
    pub fn probabilities(&self, x: &[f32]) -> Vec<Vec<f64>> {
        let n = x.len() / self.params.dim.max(1);
        if n == 0 {
            return Vec::new();
        }
        let (_, p) = self.params.forward(x, n);
        p.chunks(self.params.classes)
            .map(|r| r.iter().map(|&v| v as f64).collect())
            .collect()
    }

    /// Predicted classes of rows `x` (the most probable).
    pub fn predict(&self, x: &[f32]) -> Vec<u8> {
        self.probabilities(x)
            .iter()
            .map(|p| argmax(p).0 as u8)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Points on three interleaved spirals: a linear model cannot separate them.
    fn spirals(n: usize) -> (Vec<f32>, Vec<u8>) {
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..n {
            let l = i % 3;
            let t = (i / 3) as f64 / (n / 3) as f64 * 3.0 + 0.3;
            let a = t * 1.6 + l as f64 * std::f64::consts::TAU / 3.0;
            x.extend([(t * a.cos()) as f32, (t * a.sin()) as f32]);
            y.push(l as u8);
        }
        (x, y)
    }

    #[test]
    fn learns_spirals_and_gives_probabilities() {
        let _rng = crate::rng_lock();
        let (x, y) = spirals(1500);
        let m = fit(&x, 2, &y, 3, 7, &Device::flex()).unwrap();
        let p = m.predict(&x);
        let acc = p.iter().zip(&y).filter(|(a, b)| a == b).count() as f64 / y.len() as f64;
        assert!(
            acc > 0.95,
            "training accuracy {acc} after {} epochs",
            m.epochs
        );
        for row in m.probabilities(&x[..30]) {
            let s: f64 = row.iter().sum();
            assert!((s - 1.0).abs() < 1e-5 && row.iter().all(|&q| (0.0..=1.0).contains(&q)));
        }
        // Same seed, same model.
        let again = fit(&x, 2, &y, 3, 7, &Device::flex()).unwrap();
        assert_eq!(again.epochs, m.epochs);
        assert_eq!(again.probabilities(&x[..20]), m.probabilities(&x[..20]));
    }

    #[test]
    fn rejects_empty_input() {
        assert!(fit(&[], 2, &[], 3, 0, &Device::flex()).is_err());
    }
}
