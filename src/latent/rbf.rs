//! The RBF kernel's arithmetic for [`super::kernel_svm`]: kernel rows for the solver and kernel
//! blocks for prediction, written as plain loops over `f32` lanes that pulp compiles for the
//! CPU's widest vectors (chosen at run time), with a polynomial `exp`.

use pulp::{Arch, Simd, WithSimd};

use crate::kernels::exp_fast;

/// The rows of one binary problem, copied together (read in order, not gathered from the
/// whole training matrix), and what the kernel needs of them.
pub(super) struct Rows {
    x: Vec<f32>,
    /// The same rows in blocks of [`LANES`] rows, each block dimension-major (`[dim, LANES]`,
    /// the last block padded with zeros), so that a kernel row runs across rows in vectors.
    blocks: Vec<f32>,
    len: usize,
    dim: usize,
    gamma: f32,
}

/// Rows per block of [`Rows::blocks`]: the lanes of the widest vectors.
const LANES: usize = 16;

impl Rows {
    /// Rows `idx` of `x` (`[n, dim]`).
    pub(super) fn gather(x: &[f32], dim: usize, gamma: f32, idx: &[usize]) -> Rows {
        let mut blocks = vec![0f32; idx.len().div_ceil(LANES) * LANES * dim];
        for (t, &i) in idx.iter().enumerate() {
            let block = &mut blocks[t / LANES * LANES * dim..][..LANES * dim];
            for (d, &v) in x[i * dim..(i + 1) * dim].iter().enumerate() {
                block[d * LANES + t % LANES] = v;
            }
        }
        Rows {
            x: idx
                .iter()
                .flat_map(|&i| x[i * dim..(i + 1) * dim].iter().copied())
                .collect(),
            blocks,
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

/// One kernel row: the squared distances for [`LANES`] rows at a time (one per lane, from
/// [`Rows::blocks`]) and a polynomial `exp`, a [`WithSimd`] operation so that pulp compiles it
/// for the CPU's widest vectors (chosen at run time); this is where fitting spends most of
/// its time. Each squared distance ‖a − b‖² is summed directly (not as ‖a‖² + ‖b‖² − 2a·b,
/// which loses digits to cancellation between nearby codes in `f32`), in a fixed order: 16
/// partial sums, sum `l` over coordinates l, l + 16, l + 32, …, then the partial sums in
/// order.
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
        let (a, dim) = (rows.row(i), rows.dim);
        for (block, out) in rows
            .blocks
            .chunks_exact(LANES * dim)
            .zip(out.chunks_mut(LANES))
        {
            let mut total = [0f32; LANES];
            // Partial sum `l` for every lane's row, then added to the lanes' totals.
            for l in 0..LANES.min(dim) {
                let mut acc = [0f32; LANES];
                for d in (l..dim).step_by(LANES) {
                    let (ad, column) = (a[d], &block[d * LANES..(d + 1) * LANES]);
                    for (acc, &v) in acc.iter_mut().zip(column) {
                        let diff = ad - v;
                        *acc += diff * diff;
                    }
                }
                for (t, acc) in total.iter_mut().zip(acc) {
                    *t += acc;
                }
            }
            for (o, t) in out.iter_mut().zip(total) {
                *o = exp_fast(-rows.gamma * t);
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `‖a − b‖²` summed in 16 lanes, then across them (directly, not as ‖a‖² + ‖b‖² − 2a·b,
    /// which loses digits to cancellation between nearby codes in `f32`).
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

    /// Kernel rows in blocks of rows are, to the bit, the kernel of each pair on its own.
    #[test]
    fn kernel_rows_are_the_pairwise_kernel() {
        for dim in [1, 5, 16, 17, 64, 70] {
            for len in [1, 15, 16, 33] {
                let x: Vec<f32> = (0..len * dim)
                    .map(|v| ((v * 7919) % 113) as f32 / 37.0 - 1.5)
                    .collect();
                let idx: Vec<usize> = (0..len).rev().collect();
                let rows = Rows::gather(&x, dim, 0.3, &idx);
                for i in [0, len / 2, len - 1] {
                    let want: Vec<u32> = (0..len)
                        .map(|t| exp_fast(-0.3 * dist16(rows.row(i), rows.row(t))).to_bits())
                        .collect();
                    let got: Vec<u32> = rows.kernel_row(i).iter().map(|v| v.to_bits()).collect();
                    assert_eq!(got, want, "dim {dim} len {len} row {i}");
                    assert_eq!(got[i], 1f32.to_bits(), "K(x, x) = 1");
                }
            }
        }
    }
}
