//! The convolutions' gathers and reorderings, split into pieces: on rayon's pool in general, on
//! the calling thread in a task of a small pool; and the scratch buffers they write into.

use std::mem::MaybeUninit;

use rayon::prelude::*;

/// Whether to run a pass's pieces on this thread: it is a rayon task ([`super::in_task`]; in
/// training, a shard of a batch) in a pool of at most two, the batch's default number of
/// shards, so the other worker is busy with a shard of its own, and handing it pieces would only wake it for
/// tasks of a few microseconds. Larger pools may have idle workers: there the pieces go to
/// the pool.
pub(super) fn stay_on_this_thread() -> bool {
    super::in_task() && rayon::current_num_threads() <= 2
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

/// Values of output a piece of [`each_plane`] covers, at least: pieces of a few microseconds of
/// work, enough of them to balance two to a few dozen threads.
pub(super) const PLANE_PIECE: usize = 1 << 14;

/// Calls `f(p, plane)` on each `len`-long plane `p` of `data`, planes grouped into pieces of at
/// least [`PLANE_PIECE`] values run as [`each_chunk`] runs them; all here for less than one
/// piece.
pub(super) fn each_plane<T: Send>(
    data: &mut [T],
    len: usize,
    f: impl Fn(usize, &mut [T]) + Sync + Send,
) {
    if data.is_empty() || len == 0 {
        return;
    }
    let per = planes_per_piece(len);
    let piece = |i: usize, chunk: &mut [T]| {
        for (j, plane) in chunk.chunks_exact_mut(len).enumerate() {
            f(i * per + j, plane);
        }
    };
    if data.len() < PLANE_PIECE {
        piece(0, data);
    } else {
        each_chunk(data, per * len, piece);
    }
}

/// `n` values in planes of `len`, each plane zero-filled and then passed to `f(p, plane)` by
/// the piece of [`each_plane`] that owns it ([`planes_written`]). A whole batch's buffer
/// zero-filled first on the calling thread (`vec![0.0; n]`) kept the other threads waiting,
/// and left its lines in that thread's cache for the others to take (BENCHMARKS.md, session
/// 33).
pub(super) fn planes_from_zero(
    n: usize,
    len: usize,
    f: impl Fn(usize, &mut [f32]) + Sync + Send,
) -> Vec<f32> {
    if len == 0 || n == 0 {
        return vec![0f32; n];
    }
    planes_written(n, len, |p, plane| f(p, plane.zeros(len)))
}

/// [`chunks_written_into`] a new buffer of `n` values in planes of `len`, grouped into pieces
/// as [`each_plane`] groups them: `f(p, fill)` writes plane `p`.
pub(super) fn planes_written(
    n: usize,
    len: usize,
    f: impl Fn(usize, &mut Fill<'_>) + Sync + Send,
) -> Vec<f32> {
    written(n, len, true, f)
}

/// The values of `dest` in chunks of `size`, each chunk written once, front to back, by
/// `f(i, fill)` for chunk `i`, the chunks as [`each_chunk`] runs them; returned written.
/// No value is written twice: a zero-filled buffer (`vec![0.0; n]`) costs a pass over memory
/// before the real values come, as much as the pass that writes them where they are copies.
/// `dest` may be a new buffer ([`fresh`]) or a part of a larger one.
///
/// # Panics
/// Where `f` leaves a chunk not written in full (or `size` does not divide its length).
pub(super) fn chunks_written_into(
    dest: &mut [MaybeUninit<f32>],
    size: usize,
    f: impl Fn(usize, &mut Fill<'_>) + Sync + Send,
) -> &mut [f32] {
    written_into(dest, size, false, f)
}

/// [`chunks_written_into`] a new buffer of `n` values, the chunks run as [`each_plane`] runs
/// planes when `planes`.
fn written(
    n: usize,
    size: usize,
    planes: bool,
    f: impl Fn(usize, &mut Fill<'_>) + Sync + Send,
) -> Vec<f32> {
    fresh(n, |dest| written_into(dest, size, planes, f))
}

/// The values of `dest` in chunks of `size`, each written by `f(i, fill)` for chunk `i`, the
/// chunks run as [`each_plane`] runs planes when `planes`, else as [`each_chunk`] runs
/// them; returned written.
fn written_into(
    dest: &mut [MaybeUninit<f32>],
    size: usize,
    planes: bool,
    f: impl Fn(usize, &mut Fill<'_>) + Sync + Send,
) -> &mut [f32] {
    let n = dest.len();
    if n == 0 {
        return &mut [];
    }
    assert!(
        size > 0 && n.is_multiple_of(size),
        "written: {n} values are not chunks of {size}"
    );
    let write = |i: usize, chunk: &mut [MaybeUninit<f32>]| {
        let len = chunk.len();
        let mut fill = Fill { buf: chunk, at: 0 };
        f(i, &mut fill);
        assert_eq!(fill.at, len, "chunk {i} was not written in full");
    };
    if planes {
        each_plane(dest, size, write);
    } else {
        each_chunk(dest, size, write);
    }
    // SAFETY: `each_chunk` and `each_plane` pass each `size`-long chunk of `dest` once (its
    // length is a whole number of chunks, asserted), so the chunks cover it; `write` returns
    // only once its `Fill` has written every value of the chunk it was given (asserted
    // against that chunk's length; a `Fill` counts only the values it wrote).
    unsafe { dest.assume_init_mut() }
}

/// A new buffer of `n` values, written by `f`, which returns them: through a function that
/// writes into the memory it is given ([`chunks_written_into`]) or by a copy
/// (`write_copy_of_slice`).
///
/// # Panics
/// Where `f` returns other values than those it was given.
pub(super) fn fresh(n: usize, f: impl FnOnce(&mut [MaybeUninit<f32>]) -> &mut [f32]) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(n);
    let dest = &mut v.spare_capacity_mut()[..n];
    let at = dest.as_ptr().cast::<f32>();
    let done = f(dest);
    assert!(
        done.len() == n && (n == 0 || std::ptr::eq(done.as_ptr(), at)),
        "fresh: the values returned are not those of the buffer"
    );
    // SAFETY: where `n > 0`, `done` is a `&mut [f32]` over exactly the `n` values `f` was
    // given (asserted). `f` can only return a slice borrowed from those or one that outlives
    // the call (its lifetime is any caller's), and the latter cannot lie where the live
    // buffer does; safe code cannot make a `&mut [f32]` over uninitialised memory, and the
    // functions that write into memory they are given return theirs only once every value
    // is written. A panic in `f` leaves `v` empty.
    unsafe { v.set_len(n) };
    v
}

/// A new buffer of parts of `lens` values one after the other, part `i` written by
/// `f(i, place)` in parallel on rayon's pool, which returns the values of its place, written
/// ([`chunks_written_into`]), and a result of its own; the results in order.
///
/// # Panics
/// Where a part returns other values than those of its place.
pub(super) fn written_by_parts<R: Send>(
    lens: &[usize],
    f: impl for<'d> Fn(usize, &'d mut [MaybeUninit<f32>]) -> (&'d mut [f32], R) + Sync + Send,
) -> (Vec<f32>, Vec<R>) {
    let n = lens.iter().sum();
    let mut v: Vec<f32> = Vec::with_capacity(n);
    let mut rest = &mut v.spare_capacity_mut()[..n];
    let places: Vec<&mut [MaybeUninit<f32>]> = (lens.iter())
        .map(|&len| {
            let (place, tail) = std::mem::take(&mut rest).split_at_mut(len);
            rest = tail;
            place
        })
        .collect();
    let results = (places.into_par_iter().enumerate())
        .map(|(i, place)| {
            let (at, len) = (place.as_ptr().cast::<f32>(), place.len());
            let (done, r) = f(i, place);
            assert!(
                done.len() == len && (len == 0 || std::ptr::eq(done.as_ptr(), at)),
                "written_by_parts: part {i} returned values not of its place"
            );
            r
        })
        .collect();
    // SAFETY: the places cover the first `n` values (their lengths sum to `n`), and each
    // part returned a `&mut [f32]` over exactly its place (asserted), which is proof that
    // its values were written, as in `fresh`. rayon waits for every part, so a panic in one
    // reaches here only after all of them stopped, and leaves `v` empty.
    unsafe { v.set_len(n) };
    (v, results)
}

/// A chunk of a buffer being written front to back ([`chunks_written_into`]): values are only
/// appended, and counted as they are.
pub(super) struct Fill<'a> {
    buf: &'a mut [MaybeUninit<f32>],
    /// How many values have been written.
    at: usize,
}

impl Fill<'_> {
    /// Appends the values of `values`, at most as many as its `len` says.
    ///
    /// # Panics
    /// Where its `len` is more than the room left.
    #[inline(always)]
    pub(super) fn extend(&mut self, values: impl ExactSizeIterator<Item = f32>) {
        let room = &mut self.buf[self.at..];
        assert!(values.len() <= room.len(), "Fill::extend: no room");
        // Counted as written, not taken from `len`, which a safe trait may get wrong.
        let mut k = 0;
        for (d, v) in room.iter_mut().zip(values) {
            d.write(v);
            k += 1;
        }
        self.at += k;
    }

    /// Appends `k` zeros, and returns them to be written over.
    ///
    /// # Panics
    /// Where they do not fit.
    #[inline(always)]
    pub(super) fn zeros(&mut self, k: usize) -> &mut [f32] {
        let zeros = &mut self.buf[self.at..][..k];
        zeros.fill(MaybeUninit::new(0.0));
        self.at += k;
        // SAFETY: every value of `zeros` was written just above.
        unsafe { zeros.assume_init_mut() }
    }

    /// Appends a copy of `src`.
    ///
    /// # Panics
    /// Where it does not fit.
    #[inline(always)]
    pub(super) fn copy(&mut self, src: &[f32]) {
        self.buf[self.at..][..src.len()].write_copy_of_slice(src);
        self.at += src.len();
    }
}

/// Planes per piece of [`each_plane`] for planes of `len` values.
pub(super) fn planes_per_piece(len: usize) -> usize {
    PLANE_PIECE.div_ceil(len.max(1)).max(1)
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

/// A buffer of `f32` borrowed from this thread's pool, for the intermediate matrices of one
/// operation (a product's output, a patch matrix) that are written in full before they are
/// read: it holds whatever values it last held, so taking one costs no allocation and no
/// zero-fill once the step's sizes have been seen. It goes back to the pool when dropped,
/// unless the pool already holds [`SCRATCH_KEPT`] buffers or [`SCRATCH_KEPT_VALUES`] values.
pub(super) struct Scratch {
    buf: Vec<f32>,
    len: usize,
}

/// How many buffers each thread's pool keeps: an operation holds at most three at once, and a
/// convolution keeps one per part of the batch for its backward pass.
const SCRATCH_KEPT: usize = 24;

/// How many values, in all, each thread's pool keeps (64 MiB of `f32`): enough for a training
/// shard's matrices; the larger ones of a big evaluation batch are freed after use.
const SCRATCH_KEPT_VALUES: usize = 16 << 20;

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<Vec<f32>>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Scratch {
    /// A buffer of `len` values: the smallest pooled one that is long enough, else the
    /// longest, grown (its new part zero-filled), else a new one.
    pub(super) fn new(len: usize) -> Self {
        let mut buf = SCRATCH.with_borrow_mut(|pool| {
            let fits = (0..pool.len())
                .filter(|&i| pool[i].len() >= len)
                .min_by_key(|&i| pool[i].len());
            let pick = fits.or_else(|| (0..pool.len()).max_by_key(|&i| pool[i].len()));
            pick.map(|i| pool.swap_remove(i)).unwrap_or_default()
        });
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        Scratch { buf, len }
    }
}

impl Clone for Scratch {
    fn clone(&self) -> Self {
        let mut copy = Scratch::new(self.len);
        copy.copy_from_slice(self);
        copy
    }
}

impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Scratch({} values)", self.len)
    }
}

impl std::ops::Deref for Scratch {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.buf[..self.len]
    }
}

impl std::ops::DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.buf[..self.len]
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        // `try_with`: a buffer dropped while the thread's locals are torn down is just freed.
        let _ = SCRATCH.try_with(|pool| {
            let mut pool = pool.borrow_mut();
            let held: usize = pool.iter().map(Vec::len).sum();
            if pool.len() < SCRATCH_KEPT && held + buf.len() <= SCRATCH_KEPT_VALUES {
                pool.push(buf);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`chunks_written_into`] a new buffer.
    fn chunks_written(
        n: usize,
        size: usize,
        f: impl Fn(usize, &mut Fill<'_>) + Sync + Send,
    ) -> Vec<f32> {
        fresh(n, |dest| chunks_written_into(dest, size, f))
    }

    /// Parts (one of them empty) written in parallel land one after the other, their own
    /// results in order; a part that returns fewer values than its place is refused.
    #[test]
    fn parts_are_written_in_their_places_and_a_short_one_is_refused() {
        let lens = [7, 0, 12, 5];
        /// Part `i`: its values' indices in the buffer, and `10·i`.
        fn write(i: usize, place: &mut [MaybeUninit<f32>]) -> (&mut [f32], usize) {
            let at = [0, 7, 7, 19][i];
            let done = chunks_written_into(place, 1, |j, fill| {
                fill.extend(std::iter::once((at + j) as f32))
            });
            (done, i * 10)
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .expect("a pool of three");
        let (v, results) = pool.install(|| written_by_parts(&lens, write));
        assert_eq!(v, (0..24).map(|v| v as f32).collect::<Vec<_>>());
        assert_eq!(results, [0, 10, 20, 30]);
        let short = std::panic::catch_unwind(|| {
            written_by_parts(&lens, |i, place| {
                let (done, r) = write(i, place);
                let k = done.len().saturating_sub(usize::from(i == 2));
                (&mut done[..k], r)
            })
        });
        assert!(short.is_err(), "a part one value short was taken");
    }

    /// Written into a part of a larger buffer, the values land in their place and nothing
    /// around them changes; a new buffer takes only the values it was given back.
    #[test]
    fn values_are_written_in_their_place_and_only_theirs_are_taken() {
        let mut big = [MaybeUninit::new(-1.0f32); 50];
        let got = chunks_written_into(&mut big[10..40], 6, |i, fill| {
            fill.extend((0..6).map(|v| (i * 6 + v) as f32));
        });
        assert_eq!(got, (0..30).map(|v| v as f32).collect::<Vec<_>>());
        // SAFETY: every value of `big` was initialised (with -1, or by the call above).
        let big: Vec<f32> = big.iter().map(|v| unsafe { v.assume_init() }).collect();
        assert!(big[..10].iter().chain(&big[40..]).all(|&v| v == -1.0));
        // Leaked: values that outlive the call are the only others `f` can return.
        let foreign = std::panic::catch_unwind(|| {
            fresh(8, |_| Box::leak(vec![2.0f32; 8].into_boxed_slice()))
        });
        assert!(foreign.is_err(), "values not the buffer's were taken");
        let short =
            std::panic::catch_unwind(|| fresh(8, |dest| dest[..4].write_copy_of_slice(&[1.0; 4])));
        assert!(short.is_err(), "four values of eight were taken as all");
    }

    #[test]
    fn scratch_buffers_are_reused_at_the_asked_length() {
        let first = Scratch::new(100);
        assert_eq!(first.len(), 100);
        let at = first.as_ptr();
        drop(first);
        // A shorter request reuses the pooled buffer, at its own length.
        let mut short = Scratch::new(40);
        assert_eq!((short.len(), short.as_ptr()), (40, at));
        short.fill(1.0);
        // Two at once are distinct; a longer one than any pooled grows the longest.
        let other = Scratch::new(40);
        assert_ne!(other.as_ptr(), short.as_ptr());
        drop(short);
        let long = Scratch::new(500);
        assert_eq!(long.len(), 500);
        assert!(
            long[100..].iter().all(|&v| v == 0.0),
            "the grown part is zeroed"
        );
        // The pool keeps at most SCRATCH_KEPT buffers, and SCRATCH_KEPT_VALUES values.
        let many: Vec<Scratch> = (0..3 * SCRATCH_KEPT).map(|_| Scratch::new(8)).collect();
        drop(many);
        assert!(SCRATCH.with_borrow(Vec::len) <= SCRATCH_KEPT);
        drop(Scratch::new(SCRATCH_KEPT_VALUES + 1));
        let held: usize = SCRATCH.with_borrow(|pool| pool.iter().map(Vec::len).sum());
        assert!(held <= SCRATCH_KEPT_VALUES, "{held} values kept");
    }

    /// Every chunk is written once, in its place, by whichever piece and thread writes it
    /// (one piece and many, on the pool and inside a task of a pool of two, where the pieces
    /// stay on the task's thread); a chunk left short is refused, never handed out, however
    /// it came short.
    #[test]
    fn chunks_written_writes_each_chunk_once_and_refuses_a_short_one() {
        let size = 37;
        let check = || {
            for chunks in [1, 3, PLANE_PIECE / size + 5, 4 * PLANE_PIECE / size] {
                let n = chunks * size;
                let want: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 3.0).collect();
                let got = chunks_written(n, size, |i, fill| {
                    let part = &want[i * size..][..size];
                    fill.copy(&part[..10]);
                    fill.extend(part[10..].iter().copied());
                });
                assert_eq!(got, want);
                let got = planes_written(n, size, |p, fill| {
                    fill.extend(want[p * size..][..size].iter().copied())
                });
                assert_eq!(got, want);
            }
        };
        check();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("a pool of two");
        pool.install(|| super::super::as_task(check));
        assert!(chunks_written(0, 5, |_, _| unreachable!()).is_empty());

        /// Says it holds `size` values and yields one fewer.
        struct Lying(std::ops::Range<usize>, usize);
        impl Iterator for Lying {
            type Item = f32;
            fn next(&mut self) -> Option<f32> {
                self.0.next().map(|v| v as f32)
            }
        }
        impl ExactSizeIterator for Lying {
            fn len(&self) -> usize {
                self.1
            }
        }
        let refused = |f: &(dyn Fn(usize, &mut Fill<'_>) + Sync + Send)| {
            let e = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                chunks_written(4 * size, size, f)
            }))
            .expect_err("refused");
            let message = e.downcast_ref::<String>().cloned().unwrap_or_default();
            message + e.downcast_ref::<&str>().map_or("", |m| m)
        };
        let short = refused(&|i, fill| {
            let k = if i == 2 { size - 1 } else { size };
            fill.extend((0..k).map(|v| v as f32));
        });
        assert!(short.contains("chunk 2 was not written in full"), "{short}");
        let lying = refused(&|i, fill| match i {
            1 => fill.extend(Lying(0..size - 1, size)),
            _ => fill.extend((0..size).map(|v| v as f32)),
        });
        assert!(lying.contains("chunk 1 was not written in full"), "{lying}");
        let past = refused(&|_, fill| fill.copy(&[0.0; 38]));
        assert!(past.contains("out of range"), "{past}");
    }

    /// Every plane starts from zeros, whichever piece and thread fills it (memory reused from
    /// a freed buffer of non-zero values included), and `f` sees each plane once, with its
    /// index: one value of each plane is written, the rest must read zero.
    #[test]
    fn planes_from_zero_starts_each_plane_from_zeros() {
        let len = 37;
        for planes in [1, 3, PLANE_PIECE / len + 5, 4 * PLANE_PIECE / len] {
            drop(vec![7.0f32; planes * len]);
            let seen: Vec<std::sync::atomic::AtomicUsize> =
                (0..planes).map(|_| Default::default()).collect();
            let v = planes_from_zero(planes * len, len, |p, plane| {
                assert_eq!(plane.len(), len);
                assert!(plane.iter().all(|&x| x == 0.0), "plane {p} not zeroed");
                seen[p].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                plane[p % len] += p as f32 + 1.0;
            });
            assert_eq!(v.len(), planes * len);
            for (p, plane) in v.chunks_exact(len).enumerate() {
                assert_eq!(seen[p].load(std::sync::atomic::Ordering::Relaxed), 1);
                for (i, &x) in plane.iter().enumerate() {
                    let want = if i == p % len { p as f32 + 1.0 } else { 0.0 };
                    assert_eq!(x, want, "plane {p}, value {i}");
                }
            }
        }
    }
}
