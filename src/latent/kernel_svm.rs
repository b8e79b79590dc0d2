//! An RBF-kernel support vector classifier with scikit-learn's `SVC()` defaults: C = 1,
//! γ = "scale" (1 / (features · variance of the training matrix)), stopping tolerance 1e-3,
//! one-vs-one over the classes with libsvm's voting (ties go to the lower class).
//!
//! Each binary problem is the C-SVC dual, min ½αᵀQα − Σα subject to 0 ≤ α ≤ C, yᵀα = 0,
//! solved by sequential minimal optimisation with the second-order working-set choice of
//! Fan, Chen & Lin (JMLR 6, 2005), the method libsvm (and so scikit-learn) uses; kernel rows are
//! computed on demand and kept in a least-recently-used cache.
//!
//! Written here rather than taken from a crate: linfa-svm 0.8 builds the whole n × n kernel
//! matrix up front, one entry at a time on one thread (54,000² entries for these codes, 23 GB
//! in f64; even one one-vs-one pair of digits is 10,800² entries), and its multi-class helper is
//! one-vs-rest over every sample; its sparse mode replaces the kernel by a k-nearest-neighbour
//! approximation. Prediction here is two matrix products around the kernel, by blocks of rows.

use std::collections::HashMap;

use pulp::Arch;
use rayon::prelude::*;

use super::classifier::argmax;
use super::rbf::{RbfFromDots, Rows, DECISION_ROWS};
use super::smo_scan::{move_grad, pick_low, pick_up, Problem, DIAG, TAU};
use crate::error::{Error, Result};
use crate::kernels::matmul_rows;

/// libsvm's default stopping tolerance (scikit-learn's `tol=1e-3`).
const TOL: f64 = 1e-3;
/// Kernel-row cache per binary problem, in f32 entries (256 MB; libsvm's default is 200 MB).
const CACHE_ENTRIES: usize = 64 << 20;

/// A fitted one-vs-one RBF SVM.
#[derive(Debug, Clone)]
pub struct KernelSvm {
    /// Kernel width: K(a, b) = exp(−γ‖a − b‖²).
    pub gamma: f64,
    /// Box constraint.
    pub c: f64,
    classes: usize,
    dim: usize,
    /// The support vectors of all pairs, standardised by the caller, `[n_sv, dim]` row-major.
    support: Vec<f32>,
    /// Their indices in the training rows.
    support_index: Vec<usize>,
    /// `coef[s * pairs + p]` = y_s α_s of support vector s in pair p (0 if not in it).
    coef: Vec<f32>,
    /// Per pair, the offset ρ: decision = Σ y α K − ρ.
    rho: Vec<f64>,
    /// Per pair (i, j) with i < j, in libsvm's order.
    pairs: Vec<(usize, usize)>,
    /// SMO iterations per pair, for the record.
    pub iterations: Vec<usize>,
}

/// scikit-learn's γ = "scale": 1 / (d · Var(X)) over every entry of the training matrix.
pub fn gamma_scale(x: &[f32], dim: usize) -> f64 {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    if var > 0.0 {
        1.0 / (dim as f64 * var)
    } else {
        1.0
    }
}

/// Fits to rows `x` (`[n, dim]` row-major, already scaled) with labels in `0..classes`.
pub fn fit(x: &[f32], dim: usize, y: &[u8], classes: usize, c: f64) -> Result<KernelSvm> {
    let n = y.len();
    if n == 0 || dim == 0 || x.len() != n * dim {
        return Err(Error::Data("no codes to fit a classifier to".into()));
    }
    if !(c.is_finite() && c > 0.0) {
        return Err(Error::config(
            "c",
            format!("{c} must be a positive finite number"),
        ));
    }
    let gamma = gamma_scale(x, dim);
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &l) in y.iter().enumerate() {
        if let Some(v) = by_class.get_mut(l as usize) {
            v.push(i);
        }
    }
    let pairs: Vec<(usize, usize)> = (0..classes)
        .flat_map(|a| (a + 1..classes).map(move |b| (a, b)))
        .filter(|&(a, b)| !by_class[a].is_empty() && !by_class[b].is_empty())
        .collect();
    // Each pair is independent and deterministic, so the result does not depend on threads.
    let solved: Vec<Binary> = pairs
        .par_iter()
        .map(|&(a, b)| {
            let idx: Vec<usize> = by_class[a].iter().chain(&by_class[b]).copied().collect();
            let sign: Vec<f64> = by_class[a]
                .iter()
                .map(|_| 1.0)
                .chain(by_class[b].iter().map(|_| -1.0))
                .collect();
            let rows = Rows::gather(x, dim, gamma as f32, &idx);
            let solved = solve(&rows, &sign, c);
            // Local indices back to training indices.
            Binary {
                sv: solved.sv.into_iter().map(|(t, a)| (idx[t], a)).collect(),
                ..solved
            }
        })
        .collect();
    // Gather the union of support vectors and their coefficients per pair.
    let np = pairs.len();
    let mut slot: HashMap<usize, usize> = HashMap::new();
    let mut support = Vec::new();
    let mut support_index = Vec::new();
    let mut coef: Vec<f32> = Vec::new();
    for (p, bin) in solved.iter().enumerate() {
        for &(i, yc) in &bin.sv {
            let s = *slot.entry(i).or_insert_with(|| {
                support.extend_from_slice(&x[i * dim..(i + 1) * dim]);
                support_index.push(i);
                coef.extend(std::iter::repeat_n(0.0, np));
                coef.len() / np - 1
            });
            coef[s * np + p] = yc as f32;
        }
    }
    Ok(KernelSvm {
        gamma,
        c,
        classes,
        dim,
        support,
        support_index,
        coef,
        rho: solved.iter().map(|b| b.rho).collect(),
        pairs,
        iterations: solved.iter().map(|b| b.iterations).collect(),
    })
}

/// A solved binary problem: support vectors (training index, y·α) and ρ.
struct Binary {
    sv: Vec<(usize, f64)>,
    rho: f64,
    iterations: usize,
}

/// Least-recently-used cache of kernel rows of one binary problem, by local index.
struct RowCache {
    rows: Vec<Option<Vec<f32>>>,
    used: Vec<u64>,
    clock: u64,
    held: usize,
    capacity: usize,
}

impl RowCache {
    fn new(l: usize) -> Self {
        RowCache {
            rows: vec![None; l],
            used: vec![0; l],
            clock: 0,
            held: 0,
            capacity: (CACHE_ENTRIES / l.max(1)).max(2),
        }
    }

    /// Makes sure row `i` is present (computing it with `make`), never evicting `keep`.
    fn ensure(&mut self, i: usize, keep: usize, make: impl FnOnce() -> Vec<f32>) {
        self.clock += 1;
        self.used[i] = self.clock;
        if self.rows[i].is_some() {
            return;
        }
        if self.held >= self.capacity {
            let victim = (0..self.rows.len())
                .filter(|&t| t != keep && t != i && self.rows[t].is_some())
                .min_by_key(|&t| self.used[t]);
            if let Some(v) = victim {
                self.rows[v] = None;
                self.held -= 1;
            }
        }
        self.rows[i] = Some(make());
        self.held += 1;
    }

    fn get(&self, i: usize) -> &[f32] {
        self.rows[i].as_deref().unwrap_or(&[])
    }
}

/// SMO on one binary problem: the samples `data` with labels `y` (±1); support vectors by
/// their index in `data`.
fn solve(data: &Rows, y: &[f64], c: f64) -> Binary {
    let l = y.len();
    let mut alpha = vec![0.0f64; l];
    // G = Qα − e; with α = 0 it is −1 everywhere.
    let mut grad = vec![-1.0f64; l];
    let mut cache = RowCache::new(l);
    let row_of = |t: usize| data.kernel_row(t);
    // libsvm's cap: max(10,000,000, 100·l) iterations.
    let max_iter = (100 * l).max(10_000_000);
    let mut iterations = 0;
    while iterations < max_iter {
        let problem = Problem {
            y,
            grad: &grad,
            alpha: &alpha,
            c,
        };
        // i: the most violating sample of the "up" set, by −y G.
        let (gmax, i) = pick_up(problem);
        if i == usize::MAX {
            break;
        }
        cache.ensure(i, i, || row_of(i));
        let ki = cache.get(i);
        // j: the "low" sample that, paired with i, decreases the objective most (second order).
        let (gmax2, j) = pick_low(problem, ki, gmax);
        if gmax + gmax2 < TOL || j == usize::MAX {
            break;
        }
        iterations += 1;
        let kij = ki[j] as f64;
        cache.ensure(j, i, || row_of(j));
        // Move along α_i += y_i t, α_j −= y_j t (keeps yᵀα), t ≥ 0, clipped to the box.
        let a = (DIAG + DIAG - 2.0 * kij).max(TAU);
        let mut step = (-y[i] * grad[i] + y[j] * grad[j]) / a;
        step = step.min(if y[i] > 0.0 { c - alpha[i] } else { alpha[i] });
        step = step.min(if y[j] > 0.0 { alpha[j] } else { c - alpha[j] });
        if step <= 0.0 {
            break;
        }
        alpha[i] = (alpha[i] + y[i] * step).clamp(0.0, c);
        alpha[j] = (alpha[j] - y[j] * step).clamp(0.0, c);
        // G_t += y_t · step · (K_ti − K_tj).
        move_grad(&mut grad, y, step, (cache.get(i), cache.get(j)));
    }
    Binary {
        sv: (0..l)
            .filter(|&t| alpha[t] > 0.0)
            .map(|t| (t, y[t] * alpha[t]))
            .collect(),
        rho: offset(&alpha, &grad, y, c),
        iterations,
    }
}

/// ρ as libsvm computes it: the mean of y G over free α, else the middle of the feasible range.
fn offset(alpha: &[f64], grad: &[f64], y: &[f64], c: f64) -> f64 {
    let (mut ub, mut lb) = (f64::INFINITY, f64::NEG_INFINITY);
    let (mut sum, mut free) = (0.0, 0usize);
    for t in 0..alpha.len() {
        let yg = y[t] * grad[t];
        let at_upper = alpha[t] >= c;
        let at_lower = alpha[t] <= 0.0;
        if at_upper {
            if y[t] < 0.0 {
                ub = ub.min(yg);
            } else {
                lb = lb.max(yg);
            }
        } else if at_lower {
            if y[t] > 0.0 {
                ub = ub.min(yg);
            } else {
                lb = lb.max(yg);
            }
        } else {
            sum += yg;
            free += 1;
        }
    }
    if free > 0 {
        sum / free as f64
    } else {
        (ub + lb) / 2.0
    }
}

impl KernelSvm {
    /// The training rows that are support vectors of some pair.
    pub fn support_indices(&self) -> &[usize] {
        &self.support_index
    }

    /// Support vectors over all pairs (each counted once).
    pub fn support_vectors(&self) -> usize {
        self.support.len() / self.dim.max(1)
    }

    /// One-vs-one decision values `[n, pairs]` of rows `x` (`[n, dim]`, scaled): K(x, SV) ·
    /// coef − ρ, by blocks of rows in parallel, each block two matrix products around one
    /// vectorised pass of the kernel. Deterministic: each block is computed on one thread.
    fn decision(&self, x: &[f32]) -> Vec<f32> {
        let d = self.dim.max(1);
        let n = x.len() / d;
        let nsv = self.support_vectors();
        let np = self.pairs.len();
        if nsv == 0 || np == 0 {
            return vec![0.0; n * np];
        }
        let sv_norm: Vec<f32> = self
            .support
            .chunks(d)
            .map(|r| r.iter().map(|v| v * v).sum())
            .collect();
        let rho: Vec<f32> = self.rho.iter().map(|&r| r as f32).collect();
        let mut out = vec![0f32; n * np];
        out.par_chunks_mut(DECISION_ROWS * np)
            .zip(x.par_chunks(DECISION_ROWS * d))
            .for_each_init(Vec::new, |k: &mut Vec<f32>, (o, xb)| {
                let m = xb.len() / d;
                k.resize(m * nsv, 0.0);
                matmul_rows(k, xb, (m, d), &self.support, nsv, true);
                Arch::new().dispatch(RbfFromDots {
                    k,
                    x: xb,
                    sv_norm: &sv_norm,
                    dim: d,
                    gamma: self.gamma as f32,
                });
                matmul_rows(o, k, (m, nsv), &self.coef, np, false);
                for row in o.chunks_mut(np) {
                    for (v, r) in row.iter_mut().zip(&rho) {
                        *v -= r;
                    }
                }
            });
        out
    }

    /// Predicted classes of rows `x` (`[n, dim]`, scaled) by one-vs-one voting.
    pub fn predict(&self, x: &[f32]) -> Vec<u8> {
        let np = self.pairs.len();
        let dec = self.decision(x);
        let n = x.len() / self.dim.max(1);
        (0..n)
            .map(|r| {
                let mut votes = vec![0usize; self.classes];
                for (p, &(a, b)) in self.pairs.iter().enumerate() {
                    if dec[r * np + p] > 0.0 {
                        votes[a] += 1;
                    } else {
                        votes[b] += 1;
                    }
                }
                // The first class with the most votes, as libsvm.
                argmax(&votes).0 as u8
            })
            .collect()
    }
}

#[cfg(test)]
#[path = "kernel_svm_tests.rs"]
mod tests;
