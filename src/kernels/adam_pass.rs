//! Adam's pass over a model's parameters on flex tensors: each parameter's gradient is the
//! sum, in order, of its shards' gradients, added in the same pass as the update (the sum and
//! the update are both bound by memory; a separate sum would write and read the whole
//! gradient once more).
//!
//! The optimizer takes the parameters out of the model one at a time, through burn's module
//! mapping, on one thread: tens of microseconds for a model of a dozen parameters, which
//! would leave the pool's other threads idle. So the pass starts while it goes on:
//! [`AdamPass::add`] cuts each parameter it is given into pieces, which the pool's helpers
//! update ([`AdamWork::help`]) while the caller takes out the next one; once every parameter
//! is in, the caller updates the pieces left ([`Pieces::finish`]). Every value goes through
//! the same operations whichever thread updates it, so the results do not depend on the
//! threads.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use burn::backend::flex::FlexTensor;
use burn::tensor::Shape;
use crossbeam_deque::{Steal, Stealer, Worker};
use pulp::{Arch, Simd, WithSimd};
use typed_arena::Arena;

use super::flex::{owned, storage, tensor};

/// Values per piece of a shared pass: about 3 µs of work, so that the caller, which joins
/// the pass last, and the helpers end within about a piece of each other.
const PIECE: usize = 1 << 12;

/// Adam's settings: β, ε and an L2 penalty (none when 0).
#[derive(Clone, Copy)]
pub(super) struct Hyper {
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
    pub weight_decay: f32,
}

/// One Adam step of a model's parameters, as they are [`add`](Self::add)ed. Each parameter
/// is kept, with its gradients and moments, in an arena: the pieces that helpers update
/// borrow from it while the next parameters come in.
pub(super) struct AdamPass<T> {
    slots: Arena<Slot<T>>,
    hyper: Hyper,
    lr: f32,
    /// Whether helpers share the pass, through an [`AdamWork`].
    shared: bool,
}

/// A parameter in an [`AdamPass`], with what its caller tagged it with.
struct Slot<T> {
    tag: T,
    weights: Weights,
    m: FlexTensor,
    v: FlexTensor,
    grads: Vec<FlexTensor>,
    shape: Shape,
    /// How many of its new values the pieces have written.
    written: AtomicUsize,
}

impl<T> AdamPass<T> {
    /// A pass with `hyper` and learning rate `lr`, `shared` with helpers or on the calling
    /// thread alone.
    ///
    /// Shared, the new values go to new memory. In place, a thread's stores would first have
    /// to take each line of its pieces of the weights back from the other cores, which read
    /// all of them during the step; the memory is left uninitialised until the pass writes
    /// it, as a zero-fill first costs about half the gain. On one thread the lines are its
    /// own, and in place is faster (BENCHMARKS.md, session 33).
    pub(super) fn new(hyper: Hyper, lr: f32, shared: bool) -> Self {
        AdamPass {
            slots: Arena::new(),
            hyper,
            lr,
            shared,
        }
    }

    /// Adds the parameter `param`, with moments `m` and `v`, at step `step` (from 1), whose
    /// gradient is the sum in order of `grads` (at least one), each of its size: on one
    /// thread it is updated at once; shared, its pieces go to `pieces`. `tag` comes back
    /// with its results.
    pub(super) fn add<'a>(
        &'a self,
        pieces: &Pieces<'a>,
        tag: T,
        param: FlexTensor,
        grads: Vec<FlexTensor>,
        (m, v): (FlexTensor, FlexTensor),
        step: usize,
    ) {
        let shape = param.layout().shape().clone();
        let len = shape.num_elements();
        let weights = match self.shared {
            true => Weights::Fresh(contiguous(param), Box::new_uninit_slice(len)),
            false => Weights::InPlace(owned(param)),
        };
        let grads: Vec<FlexTensor> = grads.into_iter().map(contiguous).collect();
        let Slot {
            weights,
            m,
            v,
            grads,
            written,
            ..
        } = self.slots.alloc(Slot {
            tag,
            weights,
            m: owned(m),
            v: owned(v),
            grads,
            shape,
            written: AtomicUsize::new(0),
        });
        let (mut p, mut m, mut v) = (weights.dest(), storage(m), storage(v));
        let g: Vec<&[f32]> = grads.iter().map(values_of).collect();
        assert!(
            !g.is_empty() && m.len() == len && v.len() == len && g.iter().all(|g| g.len() == len),
            "Adam's pass: a gradient or moment of another size than its parameter, or none"
        );
        let h = self.hyper;
        let coef = AdamCoef::new(step, self.lr, h.beta_1, h.beta_2, h.epsilon, h.weight_decay);
        let piece = if self.shared { PIECE } else { len.max(1) };
        let mut at = 0;
        while at < len {
            let end = (at + piece).min(len);
            let (p_piece, p_rest) = p.split_at(end - at);
            let (m_piece, m_rest) = std::mem::take(&mut m).split_at_mut(end - at);
            let (v_piece, v_rest) = std::mem::take(&mut v).split_at_mut(end - at);
            let piece = Piece {
                p: p_piece,
                m: m_piece,
                v: v_piece,
                g: g.iter().map(|g| &g[at..end]).collect(),
                coef,
                written,
            };
            match self.shared {
                true => pieces.0.push(piece),
                false => piece.run(),
            }
            (p, m, v) = (p_rest, m_rest, v_rest);
            at = end;
        }
    }

    /// Each parameter's tag, new values and new moments, in the order added. Every piece
    /// must have been updated ([`Pieces::finish`], and the helpers returned).
    pub(super) fn into_results(self) -> Vec<(T, FlexTensor, FlexTensor, FlexTensor)> {
        self.slots
            .into_vec()
            .into_iter()
            .map(|s| {
                let written = s.written.into_inner();
                (s.tag, s.weights.finish(s.shape, written), s.m, s.v)
            })
            .collect()
    }
}

/// `t` contiguous, to be only read: shared storage is fine, a strided one is copied.
fn contiguous(t: FlexTensor) -> FlexTensor {
    match t.as_slice::<f32>() {
        Some(_) => t,
        None => owned(t),
    }
}

/// A block of one parameter's values, with its moments and gradients, to update.
struct Piece<'a> {
    p: Dest<'a>,
    m: &'a mut [f32],
    v: &'a mut [f32],
    g: Vec<&'a [f32]>,
    coef: AdamCoef,
    /// The parameter's count of new values written.
    written: &'a AtomicUsize,
}

impl Piece<'_> {
    fn run(self) {
        let n = self.m.len();
        adam_piece(self.p, self.m, self.v, &self.g, self.coef);
        self.written.fetch_add(n, Ordering::Relaxed);
    }
}

/// The caller's end of a shared [`AdamPass`]'s pieces: it adds them at the back and, once it
/// has added every parameter, takes back from there the pieces no helper took
/// ([`finish`](Self::finish)). Helpers take them from the front ([`AdamWork`]).
pub(super) struct Pieces<'a>(Worker<Piece<'a>>);

impl<'a> Pieces<'a> {
    pub(super) fn new() -> Self {
        Pieces(Worker::new_lifo())
    }

    /// Whether no piece is waiting.
    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Updates the pieces no helper took, on the calling thread.
    pub(super) fn finish(&self) {
        while let Some(piece) = self.0.pop() {
            piece.run();
        }
    }
}

/// The helpers' end of a shared [`AdamPass`]'s pieces.
pub(super) struct AdamWork<'a> {
    pieces: Stealer<Piece<'a>>,
    /// No more pieces will come.
    closed: AtomicBool,
    /// The caller's thread, which adds the pieces and closes the queue.
    caller: std::thread::ThreadId,
}

impl<'a> AdamWork<'a> {
    pub(super) fn new(pieces: &Pieces<'a>) -> Self {
        AdamWork {
            pieces: pieces.0.stealer(),
            closed: AtomicBool::new(false),
            caller: std::thread::current().id(),
        }
    }

    /// A guard that closes the queue when dropped: when the caller has added every
    /// parameter, or unwinds (the helpers then return).
    pub(super) fn closing(&self) -> Closing<'_, 'a> {
        Closing(self)
    }

    /// A helper's part: updates pieces from the front, spinning while the queue is empty
    /// and open, until it is empty and closed. On the caller's own thread (a helper's task
    /// that no other thread took, run by the caller while it waits for parallel work of its
    /// own) it returns at once: spinning there would wait for the caller, which is waiting
    /// for it; the caller updates what is left itself ([`Pieces::finish`]).
    pub(super) fn help(&self) {
        if std::thread::current().id() == self.caller {
            return;
        }
        loop {
            // Closed first: every piece was queued before it closed, so a queue found empty
            // after that stays empty.
            let closed = self.closed.load(Ordering::Acquire);
            match self.pieces.steal() {
                Steal::Success(piece) => piece.run(),
                Steal::Retry => {}
                Steal::Empty if closed => return,
                Steal::Empty => std::hint::spin_loop(),
            }
        }
    }
}

/// See [`AdamWork::closing`].
pub(super) struct Closing<'w, 'a>(&'w AdamWork<'a>);

impl Drop for Closing<'_, '_> {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::Release);
    }
}

/// A parameter's values during Adam's pass: updated in place, or read from the old values
/// and written whole to new memory.
enum Weights {
    InPlace(FlexTensor),
    Fresh(FlexTensor, Box<[std::mem::MaybeUninit<f32>]>),
}

/// The values of a contiguous tensor, borrowed.
fn values_of(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>()
        .expect("Adam's pass: tensors are made contiguous first")
}

/// Where one block of a parameter's new values go (see [`Weights`]).
enum Dest<'a> {
    InPlace(&'a mut [f32]),
    Fresh(&'a [f32], &'a mut [std::mem::MaybeUninit<f32>]),
}

impl<'a> Dest<'a> {
    /// The first `mid` values' destination, and the rest's.
    fn split_at(self, mid: usize) -> (Dest<'a>, Dest<'a>) {
        match self {
            Dest::InPlace(p) => {
                let (a, b) = p.split_at_mut(mid);
                (Dest::InPlace(a), Dest::InPlace(b))
            }
            Dest::Fresh(old, new) => {
                let ((o1, o2), (n1, n2)) = (old.split_at(mid), new.split_at_mut(mid));
                (Dest::Fresh(o1, n1), Dest::Fresh(o2, n2))
            }
        }
    }
}

impl Weights {
    /// Where all of the parameter's new values go.
    fn dest(&mut self) -> Dest<'_> {
        match self {
            Weights::InPlace(t) => Dest::InPlace(storage(t)),
            Weights::Fresh(old, new) => Dest::Fresh(values_of(old), new),
        }
    }

    /// The new values as a tensor of `shape`, once the pieces have `written` every one
    /// (asserted).
    fn finish(self, shape: Shape, written: usize) -> FlexTensor {
        assert_eq!(
            written,
            shape.num_elements(),
            "Adam's pass: a parameter's pieces were not all updated"
        );
        match self {
            Weights::InPlace(t) => t,
            Weights::Fresh(_, new) => {
                // SAFETY: `AdamPass::add` cut `new` into pieces that do not overlap, and each
                // piece that ran wrote every one of its values (`adam_piece`'s slices have one
                // length, asserted) and counted them in `written`, which is the length of
                // `new`: every value is written.
                let new = unsafe { new.assume_init() };
                tensor(new.into_vec(), shape)
            }
        }
    }
}

/// The constants of one Adam step of one parameter.
#[derive(Clone, Copy)]
struct AdamCoef {
    lr: f32,
    beta_1: f32,
    beta_2: f32,
    f1: f32,
    f2: f32,
    c: f32,
    eps: f32,
    weight_decay: f32,
}

impl AdamCoef {
    /// burn's Adam (burn-optim 0.22 `AdaptiveMomentum::transform`) at step `step` (from 1).
    fn new(step: usize, lr: f32, beta_1: f32, beta_2: f32, epsilon: f32, wd: f32) -> Self {
        let t = step as i32;
        let bc2 = (1.0 - beta_2.powi(t)).sqrt();
        AdamCoef {
            lr,
            beta_1,
            beta_2,
            f1: 1.0 - beta_1,
            f2: 1.0 - beta_2,
            c: bc2 / (1.0 - beta_1.powi(t)),
            eps: epsilon * bc2,
            weight_decay: wd,
        }
    }

    /// The update of one value `p` with moments `m`, `v` and gradient `g`, in burn's order of
    /// operations: g ← g + λ·p; m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²;
    /// p ← p − lr · (m·c) / (√v + ε·√(1−β₂ᵗ)), c = √(1−β₂ᵗ) / (1−β₁ᵗ).
    /// Returns the new value.
    #[inline(always)]
    fn apply(&self, p: f32, m: &mut f32, v: &mut f32, g: f32) -> f32 {
        let g = if self.weight_decay != 0.0 {
            g + self.weight_decay * p
        } else {
            g
        };
        *m = *m * self.beta_1 + g * self.f1;
        *v = *v * self.beta_2 + g * g * self.f2;
        let u = (*m * self.c) / (v.sqrt() + self.eps);
        p - u * self.lr
    }
}

/// Adam on one block of a parameter whose gradient is the sum of `g` (in order). The common
/// cases, one and two shards, read the gradients in the same loop; more are summed first
/// into a buffer of the block's size.
fn adam_piece(p: Dest<'_>, m: &mut [f32], v: &mut [f32], g: &[&[f32]], coef: AdamCoef) {
    let n = m.len();
    let p_fits = match &p {
        Dest::InPlace(p) => p.len() == n,
        Dest::Fresh(old, new) => old.len() == n && new.len() == n,
    };
    // Every slice the same length, and a gradient at least, so that the loops' zips write
    // every new value.
    assert!(
        p_fits && v.len() == n && !g.is_empty() && g.iter().all(|g| g.len() == n),
        "Adam's pass: a piece of another size than its parameter's"
    );
    Arch::new().dispatch(AdamPiece { p, m, v, g, coef })
}

/// [`adam_piece`]'s loops, compiled for the CPU's widest vectors: pulp picks them at run time
/// and compiles this body (always inlined) with their features. The same operations in the
/// same order as the plain loop, so the results match it.
struct AdamPiece<'a> {
    p: Dest<'a>,
    m: &'a mut [f32],
    v: &'a mut [f32],
    g: &'a [&'a [f32]],
    coef: AdamCoef,
}

/// The update of one block with gradients `g`, in place or to new memory.
#[inline(always)]
fn update(p: Dest<'_>, m: &mut [f32], v: &mut [f32], g: impl Iterator<Item = f32>, coef: AdamCoef) {
    match p {
        Dest::InPlace(p) => {
            for (((p, m), v), g) in p.iter_mut().zip(m).zip(v).zip(g) {
                *p = coef.apply(*p, m, v, g);
            }
        }
        Dest::Fresh(old, new) => {
            for ((((new, &p), m), v), g) in new.iter_mut().zip(old).zip(m).zip(v).zip(g) {
                new.write(coef.apply(p, m, v, g));
            }
        }
    }
}

impl WithSimd for AdamPiece<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        let AdamPiece { p, m, v, g, coef } = self;
        match g {
            [g0] => update(p, m, v, g0.iter().copied(), coef),
            [g0, g1] => update(p, m, v, g0.iter().zip(*g1).map(|(a, b)| a + b), coef),
            [g0, rest @ ..] => {
                let mut sum = g0.to_vec();
                for g in rest {
                    for (s, &g) in sum.iter_mut().zip(*g) {
                        *s += g;
                    }
                }
                update(p, m, v, sum.into_iter(), coef)
            }
            [] => unreachable!("adam_piece asserts a gradient"),
        }
    }
}
