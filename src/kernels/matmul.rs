//! A safe matrix product over strided views of flex tensors, into a buffer we own.
//!
//! burn-flex's `float_matmul` allocates its output zero-filled and then copies it to realign
//! it (a memset and a memcpy per product, 4% of an mlp training profile) and always asks the
//! `gemm` crate for all threads, even when called from inside a parallel shard, which nests
//! thread pools. Calling `gemm` directly lets the fused linear layer accumulate onto a buffer
//! already holding the bias, and keeps a shard's products on its own thread.

use burn::backend::flex::FlexTensor;

/// A 2-D strided view of an `f32` tensor: element `(r, c)` is `data[offset + r·rs + c·cs]`.
#[derive(Clone, Copy)]
pub(super) struct View<'a> {
    data: &'a [f32],
    offset: usize,
    rows: usize,
    cols: usize,
    rs: isize,
    cs: isize,
}

impl<'a> View<'a> {
    /// The view of a 2-D tensor, or `None` when it is not 2-D or has negative strides.
    pub(super) fn of(t: &'a FlexTensor) -> Option<Self> {
        let l = t.layout();
        let (shape, strides) = (l.shape(), l.strides());
        if shape.num_dims() != 2 || strides.iter().any(|&s| s < 0) {
            return None;
        }
        let v = View {
            data: t.storage::<f32>(),
            offset: l.start_offset(),
            rows: shape[0],
            cols: shape[1],
            rs: strides[0],
            cs: strides[1],
        };
        v.in_bounds().then_some(v)
    }

    /// A row-major `[rows, cols]` matrix held in `data`.
    pub(super) fn dense(data: &'a [f32], rows: usize, cols: usize) -> Self {
        assert_eq!(
            Some(data.len()),
            rows.checked_mul(cols),
            "matmul: matrix size differs from its data"
        );
        View {
            data,
            offset: 0,
            rows,
            cols,
            rs: cols as isize,
            cs: 1,
        }
    }

    /// A view of `data` with arbitrary non-negative strides: element `(r, c)` at `offset + r·rs
    /// + c·cs`, every one of which must lie inside `data`.
    pub(super) fn strided(
        data: &'a [f32],
        offset: usize,
        (rows, cols): (usize, usize),
        (rs, cs): (usize, usize),
    ) -> Self {
        let v = View {
            data,
            offset,
            rows,
            cols,
            rs: isize::try_from(rs).expect("matmul: stride too large"),
            cs: isize::try_from(cs).expect("matmul: stride too large"),
        };
        assert!(v.in_bounds(), "matmul: strided view out of its data");
        v
    }

    /// The transposed view (no copy).
    pub(super) fn t(self) -> Self {
        View {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    /// Whether every element of the view lies inside `data` (strides are non-negative).
    fn in_bounds(&self) -> bool {
        if self.rows == 0 || self.cols == 0 {
            return true;
        }
        // Checked: a layout whose extent overflows is out of bounds, never wrapped around.
        let extent = |n: usize, stride: isize| (n as isize - 1).checked_mul(stride);
        let last = extent(self.rows, self.rs)
            .zip(extent(self.cols, self.cs))
            .and_then(|(r, c)| r.checked_add(c))
            .and_then(|rc| rc.checked_add(isize::try_from(self.offset).ok()?));
        last.is_some_and(|last| (last as usize) < self.data.len())
    }

    /// Rows.
    pub(super) fn rows(&self) -> usize {
        self.rows
    }

    /// Columns.
    pub(super) fn cols(&self) -> usize {
        self.cols
    }

    /// Whether each row is contiguous in memory (column stride 1, or a single column).
    pub(super) fn row_contiguous(&self) -> bool {
        self.cs == 1 || self.cols <= 1
    }

    /// The view's first element and its row stride, for kernels that address rows themselves;
    /// the view must be [`row_contiguous`](Self::row_contiguous) and not empty. Row `r < rows`
    /// is then the `cols` values from `first + r·stride`, all inside the view's data.
    pub(super) fn rows_raw(&self) -> (*const f32, usize) {
        assert!(
            self.row_contiguous() && self.rows > 0 && self.cols > 0,
            "matmul: rows of an empty or strided view"
        );
        // `in_bounds` holds (checked on construction), so the first element lies inside.
        (self.data[self.offset..].as_ptr(), self.rs as usize)
    }

    /// The view's first element and its row and column strides, for kernels that address
    /// elements themselves; the view must not be empty. Element `(r, c)` of the view is at
    /// `first + r·rs + c·cs`, inside its data.
    pub(super) fn raw(&self) -> (*const f32, usize, usize) {
        assert!(
            self.rows > 0 && self.cols > 0,
            "matmul: elements of an empty view"
        );
        // `in_bounds` holds (checked on construction) and strides are non-negative.
        (
            self.data[self.offset..].as_ptr(),
            self.rs as usize,
            self.cs as usize,
        )
    }

    /// Row `r` as a slice; the view must be [`row_contiguous`](Self::row_contiguous).
    pub(super) fn row(&self, r: usize) -> &'a [f32] {
        assert!(
            self.row_contiguous() && r < self.rows,
            "matmul: row out of view"
        );
        let start = self.offset + r * self.rs as usize;
        &self.data[start..start + self.cols]
    }
}

/// Whether the CPU has AVX-512F (never, off x86-64), which the hand-written products need.
pub(super) fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A pointer to a product's output, shared by the tasks that write its disjoint blocks.
#[derive(Clone, Copy)]
pub(super) struct Out(pub(super) *mut f32);
// SAFETY: the tasks given an `Out` write disjoint elements of it, and whoever makes one keeps
// the buffer alive and unaliased until every task has returned (`dot::product`,
// `skinny::product`, `skinny::picked`).
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

/// A list of row or step numbers, shared by the tasks of a product that read them
/// (`dot::product_picked`, `skinny::picked`).
#[derive(Clone, Copy)]
pub(super) struct Picked(*const usize);
// SAFETY: the numbers are only read, and whoever makes one keeps the list alive until every
// task has returned.
unsafe impl Send for Picked {}
unsafe impl Sync for Picked {}

impl Picked {
    pub(super) fn of(list: &[usize]) -> Self {
        Picked(list.as_ptr())
    }

    /// The first number.
    pub(super) fn first(self) -> *const usize {
        self.0
    }

    /// The `j`-th number.
    ///
    /// # Safety
    /// The list holds more than `j` numbers.
    #[inline(always)]
    pub(super) unsafe fn at(self, j: usize) -> usize {
        // SAFETY: the caller's contract.
        unsafe { *self.0.add(j) }
    }
}

impl Out {
    /// The element `off` past the start (a method, so that closures capture the whole `Out`).
    ///
    /// # Safety
    /// `off` lies inside the output buffer.
    pub(super) unsafe fn at(self, off: usize) -> *mut f32 {
        // SAFETY: the caller's contract.
        unsafe { self.0.add(off) }
    }
}

/// The depth up to which a product's every value is summed from zero in one pass and then
/// added to the destination once, by gemm (its least block of depth is 512: deeper products
/// it sums in blocks, each added to the destination) as by [`super::skinny`].
pub(super) const ONE_PASS_DEPTH: usize = 512;

/// Whether accumulating `a·b` onto a destination ([`matmul_into`]) gives the bits of the
/// product alone ([`matmul_new`]) then added to it, for `a` of `m` rows and depth `k`: a
/// depth from 3 to [`ONE_PASS_DEPTH`] and two rows or more. gemm's kernels for one row (its
/// matrix–vector path) and for depths of 1 or 2 (its outer products) fold the destination in
/// differently (each checked against gemm 0.19 over 1 to 2,000 rows, one thread and many).
pub(super) fn adds_once(m: usize, k: usize) -> bool {
    m >= 2 && (3..=ONE_PASS_DEPTH).contains(&k)
}

/// `dst ← (accumulate ? dst : 0) + a·b` with `dst` row-major `[a.rows, b.cols]`. Runs on the
/// calling thread in a rayon task (a shard: see [`super::in_task`]), on all threads otherwise.
pub(super) fn matmul_into(dst: &mut [f32], a: View<'_>, b: View<'_>, accumulate: bool) {
    assert_eq!(
        Some(dst.len()),
        a.rows.checked_mul(b.cols),
        "matmul: output buffer has the wrong size"
    );
    // SAFETY: `dst` is an initialised buffer of exactly `a.rows · b.cols` elements, borrowed
    // mutably for the call, so it aliases neither operand.
    unsafe { gemm_raw(dst.as_mut_ptr(), a, b, accumulate) }
}

/// `a·b` in a new row-major `[a.rows, b.cols]` buffer, not zero-filled first: for a layer's
/// gradients (a 1.2 MB weight gradient per step, say) the fill was a pass over memory of its
/// own, about 5% of an mlp training profile (BENCHMARKS.md, session 18).
pub(super) fn matmul_new(a: View<'_>, b: View<'_>) -> Vec<f32> {
    let len = a
        .rows
        .checked_mul(b.cols)
        .expect("matmul: output size overflows");
    let mut out: Vec<f32> = Vec::with_capacity(len);
    // SAFETY: the buffer has room for `len` elements and no other reference to it exists.
    // Told not to accumulate, gemm 0.19.0 (pinned in Cargo.toml for this) stores `a·b` to
    // every one of the `a.rows × b.cols` positions without loading any of them, on each of its
    // paths for f32 on x86 and plain targets: the blocked path's full and edge tiles and the
    // small-product kernels (first depth chunk with `alpha_status` 0, later chunks reading
    // only what the first wrote), the `k ≤ 2` kernels and the one-row and one-column (gemv)
    // paths; an empty inner dimension is zero-filled by `gemm_raw`. (gemm's optional Apple AMX
    // kernels do read the destination; the `experimental-apple-amx` feature is not enabled in
    // this build.) Products of rows by rows (`dot::product`) store every element without
    // reading it too, and so do the products with a short side (`skinny::product`). So all
    // `len` elements are initialised when it returns, and `set_len` exposes only those.
    unsafe {
        gemm_raw(out.as_mut_ptr(), a, b, false);
        out.set_len(len);
    }
    out
}

/// `dst ← (accumulate ? dst : 0) + a·b`, `dst` row-major `[a.rows, b.cols]`: through
/// [`super::dot`] when both operands run along the inner dimension and it can, through
/// [`super::skinny`] when a side is short and it can, else `gemm`.
///
/// # Safety
/// `dst` is valid for writes of `a.rows · b.cols` elements (and for reads of as many,
/// initialised, when `accumulate`), and aliases neither operand for the call's duration.
unsafe fn gemm_raw(dst: *mut f32, a: View<'_>, b: View<'_>, accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "matmul: inner dimensions differ");
    assert!(a.in_bounds() && b.in_bounds());
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            // SAFETY: the caller guarantees `m · n` writable elements at `dst`.
            unsafe { std::ptr::write_bytes(dst, 0, m * n) };
        }
        return;
    }
    let bt = b.t();
    if super::dot::usable(&a, &bt) {
        // SAFETY: `usable` holds; the caller's contract on `dst` is `product`'s (`bt.rows` is
        // `n`).
        unsafe { super::dot::product(dst, a, bt, accumulate) };
        return;
    }
    if let Some(how) = super::skinny::shape(&a, &b) {
        // SAFETY: `how` is `shape(&a, &b)`; the caller's contract on `dst` is `product`'s.
        unsafe { super::skinny::product(dst, a, b, how, accumulate) };
        return;
    }
    let parallelism = if super::in_task() {
        gemm::Parallelism::None
    } else {
        gemm::Parallelism::Rayon(0)
    };
    // SAFETY: `dst` addresses m·n elements written at row stride n, column stride 1 (the
    // caller's contract); `a` and `b` were checked above to address only elements inside their
    // slices (`in_bounds`, non-negative strides), with shapes [m, k] and [k, n], and are
    // borrowed for the whole call.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            n as isize,
            accumulate,
            a.data.as_ptr().add(a.offset),
            a.cs,
            a.rs,
            b.data.as_ptr().add(b.offset),
            b.cs,
            b.rs,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `a·b` in f64, plainly, through the views' strides.
    fn reference(a: View<'_>, b: View<'_>) -> Vec<f64> {
        let at = |v: &View<'_>, r: usize, c: usize| {
            v.data[(v.offset as isize + r as isize * v.rs + c as isize * v.cs) as usize] as f64
        };
        let mut out = vec![0f64; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                out[i * b.cols + j] = (0..a.cols).map(|p| at(&a, i, p) * at(&b, p, j)).sum();
            }
        }
        out
    }

    #[test]
    fn a_new_product_is_written_whole_for_every_shape_and_layout() {
        let values = |n: usize, seed: usize| -> Vec<f32> {
            (0..n)
                .map(|i| ((i * 37 + seed * 11) % 23) as f32 / 7.0 - 1.5)
                .collect()
        };
        // Shapes small and large enough for gemm's blocked path, an empty inner dimension,
        // and every combination of transposed operands.
        for &(m, k, n) in &[
            (1, 1, 1),
            (5, 0, 3),
            (5, 2, 3),
            (1, 17, 9),
            (9, 17, 1),
            (1, 17, 1),
            (70, 1100, 70),
            (7, 13, 9),
            (64, 70, 33),
            (130, 257, 20),
        ] {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let (a_data, b_data) = (values(m * k, 1), values(k * n, 2));
                let a = if ta {
                    View::dense(&a_data, k, m).t()
                } else {
                    View::dense(&a_data, m, k)
                };
                let b = if tb {
                    View::dense(&b_data, n, k).t()
                } else {
                    View::dense(&b_data, k, n)
                };
                let got = matmul_new(a, b);
                let mut into = vec![f32::NAN; m * n];
                matmul_into(&mut into, a, b, false);
                assert_eq!(got.len(), m * n);
                for ((g, i), w) in got.iter().zip(&into).zip(reference(a, b)) {
                    assert_eq!(g.to_bits(), i.to_bits(), "{m}×{k}×{n} {ta} {tb}");
                    assert!(
                        (*g as f64 - w).abs() <= 1e-4 * (1.0 + w.abs()),
                        "{g} vs {w}"
                    );
                }
            }
        }
    }
}
