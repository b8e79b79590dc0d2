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

/// `dst ← (accumulate ? dst : 0) + a·b` with `dst` row-major `[a.rows, b.cols]`. Runs on the
/// calling thread in a rayon task (a shard: see [`super::in_task`]), on all threads otherwise.
pub(super) fn matmul_into(dst: &mut [f32], a: View<'_>, b: View<'_>, accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "matmul: inner dimensions differ");
    assert_eq!(dst.len(), m * n, "matmul: output buffer has the wrong size");
    assert!(a.in_bounds() && b.in_bounds());
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst.fill(0.0);
        }
        return;
    }
    let parallelism = if super::in_task() {
        gemm::Parallelism::None
    } else {
        gemm::Parallelism::Rayon(0)
    };
    // SAFETY: `dst` holds exactly m·n elements written at row stride n, column stride 1;
    // `a` and `b` were checked above to address only elements inside their slices
    // (`in_bounds`, non-negative strides), with shapes [m, k] and [k, n]. The slices are
    // borrowed for the whole call, and `dst` is a distinct `&mut` so it cannot alias them.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
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
