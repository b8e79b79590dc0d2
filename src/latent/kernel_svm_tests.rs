//! Tests of the RBF-kernel SVM against scikit-learn's results.

use super::*;

/// Three concentric noisy rings (inner, middle, outer; the inner two overlap): no line
/// separates them. Computed in f64 and rounded to f32, so numpy rebuilds them exactly.
fn rings(n: usize) -> (Vec<f32>, Vec<u8>) {
    let mut x = Vec::new();
    let mut y = Vec::new();
    for i in 0..n {
        let l = i % 3;
        let a = i as f64 * 0.618034 * std::f64::consts::TAU;
        let r = [0.3, 1.0, 2.0][l] + 1.0 * ((i * 7919 % 101) as f64 / 101.0 - 0.5);
        x.extend([(r * a.cos()) as f32, (r * a.sin()) as f32]);
        y.push(l as u8);
    }
    (x, y)
}

/// scikit-learn 1.9 on the same rings:
///
/// ```python
/// import numpy as np
/// from sklearn.svm import SVC
/// i = np.arange(900); l = i % 3; a = i * 0.618034 * 2 * np.pi
/// r = np.array([0.3, 1.0, 2.0])[l] + 1.0 * ((i * 7919 % 101) / 101 - 0.5)
/// X = np.stack([r * np.cos(a), r * np.sin(a)], 1).astype(np.float32).astype(np.float64)
/// m = SVC().fit(X[:600], l[:600])
/// print((m.predict(X[600:]) == l[600:]).mean(), m.n_support_.sum(), m._gamma)
/// # 0.88333 264 0.5654661785481254
/// ```
#[test]
fn matches_scikit_learn_svc_on_rings() {
    const SKLEARN_ACC: f64 = 0.88333;
    const SKLEARN_NSV: f64 = 264.0;
    const SKLEARN_GAMMA: f64 = 0.5654661785481254;
    let (x, y) = rings(900);
    let m = fit(&x[..1200], 2, &y[..600], 3, 1.0).unwrap();
    let p = m.predict(&x[1200..]);
    let acc = p.iter().zip(&y[600..]).filter(|(a, b)| a == b).count() as f64 / 300.0;
    assert!(
        (acc - SKLEARN_ACC).abs() <= 0.005,
        "accuracy {acc} vs {SKLEARN_ACC}"
    );
    let nsv = m.support_vectors() as f64;
    assert!(
        (nsv - SKLEARN_NSV).abs() <= 0.02 * SKLEARN_NSV,
        "{nsv} support vectors vs {SKLEARN_NSV}"
    );
    assert!(
        (m.gamma - SKLEARN_GAMMA).abs() < 1e-6 * SKLEARN_GAMMA,
        "gamma {}",
        m.gamma
    );
}

/// The optimality (KKT) conditions of the dual at the returned solution: with
/// m_t = y_t f(x_t), samples with α = 0 have m ≥ 1, at α = C have m ≤ 1, free ones m = 1,
/// all up to the stopping tolerance.
#[test]
fn kkt_conditions_hold_at_the_solution() {
    let (x, y) = rings(600);
    let keep: Vec<usize> = (0..600).filter(|&t| y[t] < 2).collect();
    let xs: Vec<f32> = keep
        .iter()
        .flat_map(|&t| [x[2 * t], x[2 * t + 1]])
        .collect();
    let ys: Vec<u8> = keep.iter().map(|&t| y[t]).collect();
    let m = fit(&xs, 2, &ys, 2, 1.0).unwrap();
    assert_eq!(m.pairs, [(0, 1)]);
    let dec = m.decision(&xs);
    let mut alpha = vec![0.0f64; ys.len()];
    for (s, &t) in m.support_index.iter().enumerate() {
        alpha[t] = (m.coef[s] as f64).abs();
    }
    let tol = 0.01;
    let mut free = 0;
    for (t, &l) in ys.iter().enumerate() {
        let margin = if l == 0 { dec[t] } else { -dec[t] } as f64;
        if alpha[t] == 0.0 {
            assert!(margin >= 1.0 - tol, "α = 0 but margin {margin}");
        } else if alpha[t] >= m.c - 1e-9 {
            assert!(margin <= 1.0 + tol, "α = C but margin {margin}");
        } else {
            free += 1;
            assert!((margin - 1.0).abs() <= tol, "free α but margin {margin}");
        }
    }
    assert!(free > 0, "no free support vectors");
}

#[test]
fn gamma_scale_is_one_over_dim_times_variance() {
    let x = [1.0f32, 3.0, 1.0, 3.0];
    assert!((gamma_scale(&x, 2) - 0.5).abs() < 1e-12);
}

#[test]
fn rejects_empty_input_and_bad_c() {
    assert!(fit(&[], 2, &[], 3, 1.0).is_err());
    assert!(fit(&[0.0, 1.0], 2, &[0], 3, 0.0).is_err());
    assert!(fit(&[0.0, 1.0], 2, &[0], 3, f64::NAN).is_err());
}
