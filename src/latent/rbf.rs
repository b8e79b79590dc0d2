//! The RBF kernel's arithmetic for [`super::kernel_svm`]: kernel rows for the solver and kernel
//! blocks for prediction, written as plain loops over `f32` lanes that pulp compiles for the
//! CPU's widest vectors (chosen at run time), with a polynomial `exp`.

use pulp::{Arch, Simd, WithSimd};

use crate::kernels::exp_fast;

/// The rows of one binary problem, copied together (read in order, not gathered from the
/// whole training matrix), and what the kernel needs of them.
pub(super) struct Rows {
    x: Vec<f32>,
    len: usize,
    dim: usize,
    gamma: f32,
}

impl Rows {
    /// Rows `idx` of `x` (`[n, dim]`).
    pub(super) fn gather(x: &[f32], dim: usize, gamma: f32, idx: &[usize]) -> Rows {
        Rows {
            x: idx
                .iter()
                .flat_map(|&i| x[i * dim..(i + 1) * dim].iter().copied())
                .collect(),
            len: idx.len(),
            dim,
            gamma,
        }
    }

    #[inline(always)]
    fn row(&self, i: usize) -> &[f32] {
        &self.x[i * self.dim..(i + 1) * self.dim]
    }

    /// K(x_i, x_t) for every row t.
    pub(super) fn kernel_row(&self, i: usize) -> Vec<f32> {
        let mut out = vec![0f32; self.len];
        Arch::new().dispatch(KernelRow {
            rows: self,
            i,
            out: &mut out,
        });
        out
    }
}

/// One kernel row: the dot products in 16 lanes and a polynomial `exp`, a [`WithSimd`]
/// operation so that pulp compiles it for the CPU's widest vectors (chosen at run time); this
/// is where fitting spends most of its time.
struct KernelRow<'a> {
    rows: &'a Rows,
    i: usize,
    out: &'a mut [f32],
}

impl WithSimd for KernelRow<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        let KernelRow { rows, i, out } = self;
        let a = rows.row(i);
        for (t, o) in out.iter_mut().enumerate() {
            *o = -rows.gamma * dist16(a, rows.row(t));
        }
        for o in out.iter_mut() {
            *o = exp_fast(*o);
        }
    }
}

/// Rows of test points per block of `KernelSvm::decision` (its kernel block is this many
/// rows of every support vector).
pub(super) const DECISION_ROWS: usize = 64;

/// The kernel from dot products, in place: `k[r, s] ← exp(−γ·max(‖x_r‖² + ‖sv_s‖² − 2k[r, s], 0))`,
/// compiled for the CPU's widest vectors.
pub(super) struct RbfFromDots<'a> {
    pub k: &'a mut [f32],
    pub x: &'a [f32],
    pub sv_norm: &'a [f32],
    pub dim: usize,
    pub gamma: f32,
}

impl WithSimd for RbfFromDots<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        let nsv = self.sv_norm.len();
        for (row, xr) in self.k.chunks_mut(nsv).zip(self.x.chunks(self.dim)) {
            let xn: f32 = xr.iter().map(|v| v * v).sum();
            for (v, &sn) in row.iter_mut().zip(self.sv_norm) {
                *v = exp_fast(-self.gamma * (xn + sn - 2.0 * *v).max(0.0));
            }
        }
    }
}

/// `‖a − b‖²` summed in 16 lanes, then across them (directly, not as ‖a‖² + ‖b‖² − 2a·b,
/// which loses digits to cancellation between nearby codes in `f32`).
#[inline(always)]
fn dist16(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let (a16, b16) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ar, br) = (a16.remainder(), b16.remainder());
    for (p, q) in a16.zip(b16) {
        for l in 0..16 {
            let d = p[l] - q[l];
            lanes[l] += d * d;
        }
    }
    for (l, (p, q)) in ar.iter().zip(br).enumerate() {
        let d = p - q;
        lanes[l] += d * d;
    }
    lanes.iter().sum()
}
