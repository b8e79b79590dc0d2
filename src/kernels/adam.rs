//! Adam for a whole model: on the flex CPU backend one pass over every parameter at once,
//! which also sums the shards' gradients; burn's `Adam` elsewhere. The state is burn's
//! [`AdamState`], and it is saved and loaded as burn's `ModuleOptimizer` record, so resume
//! files are those of burn's optimizer.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{
    Adam as BurnAdam, AdamConfig, AdamState, AdaptiveMomentumState, DynState, GradientsParams,
    LearningRate, ModuleOptimizer, Optimizer,
};
use burn::store::RecordError;
use burn::tensor::{Bytes, Device, GradientCheckpointingStrategy, Shape, Tensor, TensorData};

use super::adam_pass::{AdamPass, AdamWork, Hyper, Pieces};
use super::fused_here;

/// PyTorch's `Adam(lr, betas=(0.9, 0.999), eps, weight_decay)` (L2 penalty added to the
/// gradient, as PyTorch and burn's `WeightDecay` do), for every parameter of a model.
///
/// [`step`](Self::step) takes the gradients of the shards of a batch and updates each
/// parameter with their sum. On the flex backend the sum and the update of every parameter are
/// one pass ([`super::adam_pass`]), shared with the pool's other threads from the first
/// parameter taken out of the model (after the first step, which sizes the pass): the shards' sum and the optimizer are both bound by
/// memory, and a separate sum would write and read the whole gradient once more; a pass per
/// parameter would run the small ones on one thread. The order of the operations is burn's,
/// so the results are those of burn's Adam applied to the shards' sum.
#[derive(Clone)]
pub struct Adam {
    hyper: Hyper,
    /// burn's Adam with the same settings: the update on other backends.
    fallback: BurnAdam,
    states: HashMap<ParamId, State>,
    /// One empty tensor per rank, cloned into the module in place of each parameter that the
    /// fused pass takes out: a clone only counts a reference, where making an empty tensor
    /// goes through the device's settings and autodiff for every parameter at every step.
    stand_ins: Vec<Arc<dyn Any + Send + Sync>>,
    /// How many values the last step's fused pass updated (0 before the first, or when it
    /// updated none): the parameters' sizes do not change from step to step.
    pass_values: usize,
}

impl Adam {
    /// Adam with β = (0.9, 0.999), `epsilon`, and an L2 penalty of `weight_decay` (none when
    /// not positive).
    pub fn new(epsilon: f32, weight_decay: f32) -> Self {
        let (beta_1, beta_2) = (0.9, 0.999);
        // A penalty only when positive, on both paths (burn's `WeightDecay` is built only then).
        let weight_decay = weight_decay.max(0.0);
        let wd = (weight_decay > 0.0).then(|| WeightDecayConfig::new(weight_decay));
        let fallback = AdamConfig::new()
            .with_beta_1(beta_1)
            .with_beta_2(beta_2)
            .with_epsilon(epsilon)
            .with_weight_decay(wd)
            .build();
        Adam {
            hyper: Hyper {
                beta_1,
                beta_2,
                epsilon,
                weight_decay,
            },
            fallback,
            states: HashMap::new(),
            stand_ins: Vec::new(),
            pass_values: 0,
        }
    }

    /// One update of every parameter of `module` that has a gradient in `parts`, with the sum
    /// of its gradients over `parts` in order (`((g₀ + g₁) + g₂) …`); returns the updated
    /// module. Parameters without a gradient are left as they are, state included.
    pub fn step<M: Module>(
        &mut self,
        lr: LearningRate,
        module: M,
        parts: Vec<GradientsParams>,
    ) -> M {
        self.step_as(lr, module, parts, false).0
    }

    /// [`step`](Self::step), every updated parameter put back untracked by autodiff, for
    /// steps that take their gradients without autodiff's graph; with whether any of them
    /// was tracked before. A tracked parameter registers in autodiff's graphs, which free a
    /// dropped tensor's entry only at some later backward pass.
    pub fn step_untracked<M: Module>(
        &mut self,
        lr: LearningRate,
        module: M,
        parts: Vec<GradientsParams>,
    ) -> (M, bool) {
        self.step_as(lr, module, parts, true)
    }

    /// [`step`](Self::step), the parameters put back untracked when `untrack`; with whether
    /// any of them was tracked before then.
    fn step_as<M: Module>(
        &mut self,
        lr: LearningRate,
        module: M,
        mut parts: Vec<GradientsParams>,
        untrack: bool,
    ) -> (M, bool) {
        let helpers = self.pass_helpers();
        let pass = AdamPass::new(self.hyper, lr as f32, helpers > 0);
        let pieces = Pieces::new();
        let work = AdamWork::new(&pieces);
        let (module, was_tracked) = super::with_helpers(
            helpers,
            |_| work.help(),
            || {
                let closing = work.closing();
                let mut take = Take {
                    adam: self,
                    lr,
                    parts: &mut parts,
                    pass: &pass,
                    pieces: &pieces,
                    untrack,
                    was_tracked: false,
                };
                let module = module.map(&mut take);
                let was_tracked = take.was_tracked;
                drop(closing);
                pieces.finish();
                (module, was_tracked)
            },
        );
        drop((work, pieces));
        let updated: Vec<Option<Updated>> = pass
            .into_results()
            .into_iter()
            .map(|(tag, p, m, v)| Some(Updated { tag, p, m, v }))
            .collect();
        self.pass_values = updated
            .iter()
            .flatten()
            .map(|u| u.p.layout().num_elements())
            .sum();
        if updated.is_empty() {
            return (module, was_tracked);
        }
        let module = module.map(&mut Put {
            states: &mut self.states,
            updated,
            next: 0,
        });
        (module, was_tracked)
    }

    /// How many of the pool's threads help the calling one with the next step's pass: one
    /// per thread of the pool, but for a block of values ([`super::flex::BLOCK`]) at least
    /// each, sized on the last step's pass (none before the first, and off the flex backend,
    /// where burn's Adam updates the parameters).
    fn pass_helpers(&self) -> usize {
        // No more than the cores: a helper spins while it waits for pieces, and one more than
        // the cores would take a core from the thread taking the parameters out.
        let threads = rayon::current_num_threads().min(super::cores());
        match self.pass_values {
            0 => 0,
            n => threads.min(n.div_ceil(super::flex::BLOCK)).max(1) - 1,
        }
    }

    /// An empty tensor of rank `D` on `device`, to stand in a module for a parameter.
    fn stand_in<const D: usize>(&mut self, device: &Device) -> Tensor<D> {
        let kept = self
            .stand_ins
            .iter()
            .find_map(|t| t.downcast_ref::<Tensor<D>>())
            .filter(|t| t.device() == *device);
        if let Some(t) = kept {
            return t.clone();
        }
        let t = Tensor::<D>::empty(Shape::new([0; D]), device);
        self.stand_ins.retain(|k| !k.is::<Tensor<D>>());
        self.stand_ins.push(Arc::new(t.clone()));
        t
    }

    /// The state as burn's `ModuleOptimizer` (with burn's Adam state) would save it for
    /// `module`: the bytes of its record.
    pub fn to_bytes<M: Module>(&self, module: &M) -> Result<Bytes, RecordError> {
        let mut ids = Vec::new();
        module.visit(&mut Ids(&mut ids));
        let (table, grads) = self.relay_for(module, &ids, true);
        let mut relay = ModuleOptimizer::from(Relay {
            table: table.clone(),
        });
        // The relay's "step" hands each parameter's state to burn's optimizer and leaves the
        // (cloned) module as it was; the clone is then dropped.
        let _ = relay.step(0.0, module.clone().map(&mut Tracked), grads);
        relay.into_bytes()
    }

    /// Loads the state saved by [`to_bytes`](Self::to_bytes) (or by burn's `ModuleOptimizer`
    /// with burn's Adam) for `module`, replacing the current state.
    pub fn load_bytes<M: Module>(&mut self, module: &M, bytes: Bytes) -> Result<(), RecordError> {
        let mut ids = Vec::new();
        module.visit(&mut Ids(&mut ids));
        let (table, grads) = self.relay_for(module, &ids, false);
        let mut relay = ModuleOptimizer::from(Relay {
            table: table.clone(),
        })
        .from_bytes(bytes)?;
        let _ = relay.step(0.0, module.clone().map(&mut Tracked), grads);
        drop(relay);
        let table = std::mem::take(&mut *table.lock().unwrap_or_else(PoisonError::into_inner));
        self.states = ids
            .into_iter()
            .zip(table)
            .filter_map(|(id, s)| s.map(|s| (id, s)))
            .collect();
        Ok(())
    }

    /// For each parameter of `module` (`ids`, in visiting order): its slot in a relay table
    /// (filled with the current states when `fill`), and a stand-in gradient naming that slot.
    fn relay_for<M: Module>(
        &self,
        module: &M,
        ids: &[ParamId],
        fill: bool,
    ) -> (Arc<Mutex<Vec<Option<State>>>>, GradientsParams) {
        let table: Vec<Option<State>> = ids
            .iter()
            .map(|id| fill.then(|| self.states.get(id).cloned()).flatten())
            .collect();
        let mut grads = GradientsParams::new();
        module.visit(&mut Slots {
            next: 0,
            only: fill.then_some(&self.states),
            grads: &mut grads,
        });
        (Arc::new(Mutex::new(table)), grads)
    }
}

/// What a parameter taken out of the module for the fused update needs when it is put back.
struct Tag {
    id: ParamId,
    rank: usize,
    context: Context,
    /// Its state's step count after this step.
    time: usize,
}

/// A parameter's new value and moments, to put back.
struct Updated {
    tag: Tag,
    p: FlexTensor,
    m: FlexTensor,
    v: FlexTensor,
}

/// A parameter's Adam state: as the fused pass keeps it (its step count and moments as flex
/// tensors, handed back to the next step as they are), or as burn's optimizer keeps it
/// (burn's update off the flex backend, or a state just loaded from a record). burn's
/// form goes through type erasure, a shared allocation and a device transfer at every
/// step; the fused pass's is converted only when the state is saved.
/// (One per parameter, kept in place in the optimizer's map: boxing the moments would only
/// add an allocation per parameter and step.)
#[derive(Clone)]
#[allow(clippy::large_enum_variant)]
enum State {
    Flex {
        time: usize,
        m: FlexTensor,
        v: FlexTensor,
    },
    Burn(DynState),
}

impl State {
    /// The state as burn's Adam keeps it, for a parameter of rank `D`.
    fn into_burn<const D: usize>(self) -> AdamState<D> {
        match self {
            State::Flex { time, m, v } => AdamState::new(AdaptiveMomentumState::new(
                time,
                Tensor::<D>::from_primitive::<Flex>(m),
                Tensor::<D>::from_primitive::<Flex>(v),
            )),
            State::Burn(s) => s.downcast::<AdamState<D>>(),
        }
    }

    /// [`into_burn`](Self::into_burn), on `device`.
    fn into_burn_on<const D: usize>(self, device: &Device) -> AdamState<D> {
        <BurnAdam as Optimizer>::to_device(self.into_burn(), device)
    }
}

/// What autodiff carries on a parameter, taken before the update on the inner backend and put
/// back on the new value (as burn's `ModuleOptimizer` does).
#[derive(Clone, Copy)]
struct Context {
    require_grad: bool,
    checkpointing: Option<GradientCheckpointingStrategy>,
}

impl Context {
    fn capture<const D: usize>(t: &Tensor<D>) -> Self {
        Context {
            require_grad: t.is_require_grad(),
            checkpointing: t.gradient_checkpointing_strategy(),
        }
    }

    fn restore<const D: usize>(self, inner: Tensor<D>) -> Tensor<D> {
        let mut t = Tensor::from_inner(inner);
        if let Some(s) = self.checkpointing {
            t = t.with_gradient_checkpointing_strategy(s);
        }
        if self.require_grad {
            t = t.require_grad();
        }
        t
    }
}

/// The first pass of [`Adam::step`]: takes each parameter with gradients out of the module
/// into the fused pass (leaving an empty stand-in, so that the pass owns the parameter's
/// storage and can update it in place), or, off the flex backend, updates it at once with
/// burn's Adam.
struct Take<'a, 'p> {
    adam: &'a mut Adam,
    lr: LearningRate,
    parts: &'a mut Vec<GradientsParams>,
    pass: &'p AdamPass<Tag>,
    pieces: &'a Pieces<'p>,
    /// Put the parameters back untracked.
    untrack: bool,
    /// Whether a parameter with a gradient was tracked.
    was_tracked: bool,
}

impl ModuleMapper for Take<'_, '_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let grads: Vec<Tensor<D>> = self
            .parts
            .iter_mut()
            .filter_map(|g| g.remove::<D>(param.id))
            .collect();
        if grads.is_empty() {
            return param;
        }
        let (id, tensor, mapper) = param.consume();
        let mut context = Context::capture(&tensor);
        self.was_tracked |= context.require_grad;
        if self.untrack {
            context.require_grad = false;
        }
        let device = tensor.device();
        let state = self.adam.states.remove(&id);
        let inner = tensor.inner();
        if !fused_here(&device) {
            let grad = grads.into_iter().reduce(|a, b| a + b).expect("a gradient");
            let state = state.map(|s| s.into_burn_on::<D>(&grad.device()));
            let (t, state) = self.adam.fallback.step(self.lr, inner, grad, state);
            if let Some(s) = state {
                self.adam
                    .states
                    .insert(id, State::Burn(DynState::create(s, D)));
            }
            return Param::from_mapped_value(id, context.restore(t), mapper);
        }
        let (time, m, v) = match state {
            Some(State::Flex { time, m, v }) => (time, m, v),
            Some(burns) => {
                let s = burns.into_burn_on::<D>(&grads[0].device());
                let m = on_flex(s.momentum.moment_1);
                (s.momentum.time, m, on_flex(s.momentum.moment_2))
            }
            None => (
                0,
                on_flex(grads[0].zeros_like()),
                on_flex(grads[0].zeros_like()),
            ),
        };
        let stand_in = self.adam.stand_in::<D>(&device);
        self.pass.add(
            self.pieces,
            Tag {
                id,
                rank: D,
                context,
                time: time + 1,
            },
            on_flex(inner),
            grads.into_iter().map(on_flex).collect(),
            (m, v),
            time + 1,
        );
        Param::from_mapped_value(id, stand_in, mapper)
    }
}

/// `t`'s flex tensor; `t` is a plain tensor on the flex device ([`fused_here`]).
fn on_flex<const D: usize>(t: Tensor<D>) -> FlexTensor {
    t.try_into_primitive::<Flex>()
        .expect("a plain tensor on the flex device is a flex tensor")
}

/// The second pass of [`Adam::step`]: puts the updated parameters back, and keeps their
/// states.
struct Put<'a> {
    states: &'a mut HashMap<ParamId, State>,
    /// In the order the parameters were taken out, which is the order this pass visits
    /// them in; each taken when put back.
    updated: Vec<Option<Updated>>,
    /// Where the next parameter to put back is expected in `updated`.
    next: usize,
}

impl Put<'_> {
    /// The update of parameter `id`, taken out of `updated`: the next one in order, or
    /// found further on should the visit's order differ.
    fn take(&mut self, id: ParamId) -> Option<Updated> {
        let is = |u: &Option<Updated>| u.as_ref().is_some_and(|u| u.tag.id == id);
        let at = match self.updated.get(self.next) {
            Some(u) if is(u) => self.next,
            _ => self.updated.iter().position(is)?,
        };
        self.next = at + 1;
        self.updated[at].take()
    }
}

impl ModuleMapper for Put<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(u) = self.take(param.id) else {
            return param;
        };
        debug_assert_eq!(u.tag.rank, D, "a parameter's rank changed during the step");
        let (id, _stand_in, mapper) = param.consume();
        self.states.insert(
            id,
            State::Flex {
                time: u.tag.time,
                m: u.m,
                v: u.v,
            },
        );
        let p = u
            .tag
            .context
            .restore(Tensor::<D>::from_primitive::<Flex>(u.p));
        Param::from_mapped_value(id, p, mapper)
    }
}

/// Puts every float parameter under autodiff (burn's optimizer steps only such parameters):
/// for a [`Relay`] step on a module loaded for inference.
struct Tracked;

impl ModuleMapper for Tracked {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, t, mapper) = param.consume();
        let t = if t.is_autodiff() { t } else { t.autodiff() };
        Param::from_mapped_value(id, t, mapper)
    }
}

/// Every float parameter's id, in visiting order.
struct Ids<'a>(&'a mut Vec<ParamId>);

impl ModuleVisitor for Ids<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.push(param.id);
    }
}

/// Stand-in gradients for a [`Relay`] step: for the `i`-th parameter in visiting order a
/// one-element tensor holding `i` (for every parameter, or only those in `only`).
struct Slots<'a> {
    next: usize,
    only: Option<&'a HashMap<ParamId, State>>,
    grads: &'a mut GradientsParams,
}

impl ModuleVisitor for Slots<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let slot = self.next;
        self.next += 1;
        if self.only.is_some_and(|s| !s.contains_key(&param.id)) {
            return;
        }
        let device = param.val().inner().device();
        let t = Tensor::<D>::from_data(TensorData::new(vec![slot as f32], [1; D]), &device);
        self.grads.register(param.id, t);
    }
}

/// burn's optimizer interface for moving states between [`Adam`] and burn's
/// `ModuleOptimizer` record: a "step" that leaves the parameter unchanged and passes the state
/// through a table, both ways. The gradient is a stand-in naming the parameter's slot in the
/// table (see [`Slots`]). The state type is burn's Adam's, so the record is the one burn's
/// Adam writes and reads.
#[derive(Clone)]
struct Relay {
    table: Arc<Mutex<Vec<Option<State>>>>,
}

impl Optimizer for Relay {
    type State<const D: usize> = AdamState<D>;

    fn step<const D: usize>(
        &self,
        _lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let slot = grad
            .into_data()
            .try_into_vec::<f32>()
            .ok()
            .and_then(|v| v.first().copied())
            .map(|s| s as usize);
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(entry) = slot.and_then(|s| table.get_mut(s)) else {
            return (tensor, state);
        };
        // Loading: the record's state goes into the table. Saving: the table's state goes to
        // burn's optimizer, which has none of its own.
        let out = state.or_else(|| entry.take().map(State::into_burn::<D>));
        *entry = out.clone().map(|s| State::Burn(DynState::create(s, D)));
        (tensor, out)
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        <BurnAdam as Optimizer>::to_device(state, device)
    }
}
