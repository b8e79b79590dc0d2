//! The convolutions' gathers, scatters and reorderings, split into pieces: on rayon's pool
//! when called from outside it, on the calling thread inside a worker of a small pool.

use rayon::prelude::*;

/// Whether to run a pass's pieces on this thread: it is a rayon worker (in training, a shard
/// of a batch) in a pool of at most two, the batch's default number of shards, so the other
/// worker is busy with a shard of its own, and handing it pieces would only wake it for
/// tasks of a few microseconds. Larger pools may have idle workers: there the pieces go to
/// the pool.
pub(super) fn stay_on_this_thread() -> bool {
    rayon::current_thread_index().is_some() && rayon::current_num_threads() <= 2
}

/// Calls `f(index, chunk)` on each `size`-long chunk of `data`, on rayon's pool unless
/// [`stay_on_this_thread`].
pub(super) fn each_chunk<T: Send>(
    data: &mut [T],
    size: usize,
    f: impl Fn(usize, &mut [T]) + Sync + Send,
) {
    map_chunks(data, size, f);
}

/// [`each_chunk`], collecting what `f` returns for each chunk, in order.
pub(super) fn map_chunks<T: Send, R: Send>(
    data: &mut [T],
    size: usize,
    f: impl Fn(usize, &mut [T]) -> R + Sync + Send,
) -> Vec<R> {
    if stay_on_this_thread() {
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

/// `[f(0), …, f(n − 1)]`, on rayon's pool unless [`stay_on_this_thread`].
pub(super) fn map_range<R: Send>(n: usize, f: impl Fn(usize) -> R + Sync + Send) -> Vec<R> {
    if stay_on_this_thread() {
        (0..n).map(f).collect()
    } else {
        (0..n).into_par_iter().map(f).collect()
    }
}
