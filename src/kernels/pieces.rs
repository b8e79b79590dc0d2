//! The element-wise and reordering passes of the kernels, split into pieces: on rayon's pool
//! when called from outside it, on the calling thread inside a worker.

use rayon::prelude::*;

/// Whether this thread is one of rayon's workers: a shard of a batch, which has a core of its
/// own. There the kernels' passes run their pieces on this thread: handing them to the other
/// workers, busy with their own shards, would only wake them for tasks of a few microseconds.
pub(super) fn in_worker() -> bool {
    rayon::current_thread_index().is_some()
}

/// Calls `f(index, chunk)` on each `size`-long chunk of `data`, on rayon's pool from outside it.
pub(super) fn each_chunk<T: Send>(
    data: &mut [T],
    size: usize,
    f: impl Fn(usize, &mut [T]) + Sync + Send,
) {
    if in_worker() {
        data.chunks_mut(size).enumerate().for_each(|(i, c)| f(i, c));
    } else {
        data.par_chunks_mut(size)
            .enumerate()
            .for_each(|(i, c)| f(i, c));
    }
}

/// [`each_chunk`], collecting what `f` returns for each chunk, in order.
pub(super) fn map_chunks<T: Send, R: Send>(
    data: &mut [T],
    size: usize,
    f: impl Fn(usize, &mut [T]) -> R + Sync + Send,
) -> Vec<R> {
    if in_worker() {
        data.chunks_mut(size)
            .enumerate()
            .map(|(i, c)| f(i, c))
            .collect()
    } else {
        data.par_chunks_mut(size)
            .enumerate()
            .map(|(i, c)| f(i, c))
            .collect()
    }
}

/// `[f(0), …, f(n − 1)]`, on rayon's pool from outside it.
pub(super) fn map_range<R: Send>(n: usize, f: impl Fn(usize) -> R + Sync + Send) -> Vec<R> {
    if in_worker() {
        (0..n).map(f).collect()
    } else {
        (0..n).into_par_iter().map(f).collect()
    }
}
