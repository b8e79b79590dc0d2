//! One optimisation step and the validation pass: the loss of a batch (the reconstruction
//! loss, or a VAE's negative ELBO with seeded noise), the batch cut into shards trained in
//! parallel with their gradients combined, the optimizer update; and the mean loss over a
//! split without gradients.

use burn::module::{ModuleMapper, ModuleVisitor, Param};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use std::ops::Range;

use super::loss::{fused_kind, loss, vae_loss};
use crate::config::{Loss, TrainConfig};
use crate::data::batch::{add_noise, noise_rng, rng};
use crate::data::{dataset::to_tensor, Scale, Split};
use crate::kernels::adam::Adam;
use crate::model::Autoencoder;

/// Batch size for validation passes (no gradients, so larger is fine).
const EVAL_BATCH: usize = 1000;
/// Noise stream id of validation batches, apart from the training streams.
const VALID_NOISE_EPOCH: usize = u32::MAX as usize;
/// Mixed into the seed of a VAE's ε draws, apart from the input-noise streams.
const EPS_STREAM: u64 = 0xE95_0000;
/// Mixed into the seed of a step's dropout choices, apart from the other streams.
const DROPOUT_STREAM: u64 = 0xD0_0000;

/// The seeds of the dropout calls of batch `batch` of `epoch` (see [`crate::kernels::dropout`]):
/// from the run's seed, so runs and resumes make the same choices.
fn step_draws(seed: u64, epoch: usize, batch: usize) -> crate::kernels::StepDraws {
    use rand::RngCore;
    let mut r = rng(seed ^ DROPOUT_STREAM, ((epoch as u64) << 32) | batch as u64);
    crate::kernels::StepDraws::new(r.next_u64())
}

/// The ε of a VAE's reparameterisation for batch `batch` of `epoch`: `[n, latent]` standard
/// normal draws from the run's seed, so runs and resumes are reproducible.
pub fn vae_eps(
    seed: u64,
    epoch: usize,
    batch: usize,
    n: usize,
    latent: usize,
    device: &Device,
) -> Tensor<2> {
    use rand_distr::{Distribution, StandardNormal};
    let mut r = rng(seed ^ EPS_STREAM, ((epoch as u64) << 32) | batch as u64);
    let v: Vec<f32> = (0..n * latent)
        .map(|_| StandardNormal.sample(&mut r))
        .collect();
    Tensor::from_data(TensorData::new(v, [n, latent]), device)
}

/// The training loss of a batch (`n` images, batch `batch` of `epoch`): the reconstruction
/// loss, or for a VAE the negative ELBO per image with a seeded ε.
#[allow(clippy::too_many_arguments)]
pub(crate) fn batch_loss(
    model: &Autoencoder,
    config: &TrainConfig,
    x: Tensor<4>,
    target: Tensor<4>,
    epoch: usize,
    batch: usize,
    n: usize,
    device: &Device,
) -> Tensor<1> {
    let eps = batch_eps(config, epoch, batch, n, device);
    shard_loss(model, config, x, target, eps)
}

/// The VAE's ε for a whole batch (None for other presets).
fn batch_eps(
    config: &TrainConfig,
    epoch: usize,
    batch: usize,
    n: usize,
    device: &Device,
) -> Option<Tensor<2>> {
    config.model.is_variational().then(|| {
        vae_eps(
            config.seed,
            epoch,
            batch,
            n,
            config.model.latent_dim,
            device,
        )
    })
}

/// The mean training loss of some images, with the VAE's ε for exactly those images.
fn shard_loss(
    model: &Autoencoder,
    config: &TrainConfig,
    x: Tensor<4>,
    target: Tensor<4>,
    eps: Option<Tensor<2>>,
) -> Tensor<1> {
    if let Some(eps) = eps {
        if let Some((logits, mu, logvar)) = model.forward_variational(x.clone(), eps) {
            return vae_loss(config.loss, logits, target, mu, logvar, config.beta).0;
        }
    }
    loss(
        config.loss,
        config.model.activation(),
        model.forward(x),
        target,
    )
}

/// The mean training loss of some images and its gradients for a model whose layers all run
/// as fused operations ([`Autoencoder::chain`]), computed without autodiff's graph, the loss
/// weighted by `weight` (a shard's share of the batch) when given: the numbers of
/// [`shard_loss`] and its backward pass. `None` where a layer does not run fused for these
/// images.
#[cfg(test)]
fn chain_shard<'a>(
    links: &[crate::kernels::Link<'a>],
    config: &TrainConfig,
    x: Tensor<4>,
    target: Tensor<4>,
    weight: Option<f64>,
) -> Option<crate::kernels::ShardPass<'a>> {
    let kind = fused_kind(config.loss, config.model.activation());
    let scale = 1.0 / target.shape().num_elements() as f64;
    crate::kernels::chain_pass(
        links,
        x,
        target,
        kind,
        scale as f32,
        weight.map(|w| w as f32),
    )
}

/// The shards' losses and gradients as [`chain_shard`] gives them, each shard on its own
/// thread as in the graph's step (a batch trained whole on the calling thread), their batch
/// norms normalising with the whole batch's statistics ([`crate::kernels::chain_shards`]);
/// `None` where the model's layers do not all run fused.
fn chain_shards(
    model: &Autoencoder,
    config: &TrainConfig,
    (n, ranges): (usize, &[Range<usize>]),
    inputs: &(dyn Fn(Range<usize>) -> (Tensor<4>, Tensor<4>) + Sync),
    draws: crate::kernels::StepDraws,
) -> Option<Vec<(f32, GradientsParams)>> {
    let links = model.chain()?;
    let kind = fused_kind(config.loss, config.model.activation());
    let sharded = ranges.len() > 1;
    let start = |i: usize| {
        let r = &ranges[i];
        let (x, target) = inputs(r.clone());
        let scale = 1.0 / target.shape().num_elements() as f64;
        let w = sharded.then(|| (r.len() as f64 / n as f64) as f32);
        crate::kernels::with_step_draws(draws, r.start, || {
            crate::kernels::ShardRun::new(
                &links,
                (x, target),
                (kind, scale as f32, w),
                sharded.then_some(i == 0),
            )
        })
    };
    let passes = crate::kernels::chain_shards(ranges.len(), start)?;
    // Every shard ran fused: the batch norms' running statistics move on.
    Some(
        passes
            .into_iter()
            .map(crate::kernels::ShardPass::finish)
            .collect(),
    )
}

/// Frees what burn's autodiff still holds for parameters that were tracked and have been
/// replaced: burn-autodiff registers each tracked leaf in its graphs, and frees the entries
/// of dropped tensors only after a backward pass, which a step through the chain never
/// runs. Steps through the chain keep the parameters untracked ([`Track`]); the first one
/// replaces tracked parameters, and so does the first after a step through the graph. The
/// smallest backward pass (one value) sweeps them.
fn sweep_graphs(device: &Device) {
    let one = Tensor::<1>::zeros([1], device).require_grad();
    let _ = one.sum().backward();
}

/// `n` images cut into `k` contiguous shards whose sizes differ by at most one.
fn shard_ranges(n: usize, k: usize) -> Vec<Range<usize>> {
    let k = k.clamp(1, n.max(1));
    let (base, extra) = (n / k, n % k);
    let mut start = 0;
    (0..k)
        .map(|i| {
            let len = base + usize::from(i < extra);
            let r = start..start + len;
            start += len;
            r
        })
        .collect()
}

/// An optimizer that a training step updates the model with, from the gradients of the
/// batch's shards: mathematically with their sum, taken in shard order.
pub trait ShardOptimizer {
    /// One update of `model` at learning rate `lr` with the sum of the gradients in `parts`.
    fn update(&mut self, lr: f64, model: Autoencoder, parts: Vec<GradientsParams>) -> Autoencoder;

    /// [`update`](Self::update) for a step whose gradients came without autodiff's graph: the
    /// parameters go back untracked by autodiff (see [`Track`]), with whether any of them
    /// was tracked before.
    fn update_untracked(
        &mut self,
        lr: f64,
        model: Autoencoder,
        parts: Vec<GradientsParams>,
    ) -> (Autoencoder, bool) {
        let mut untrack = Track {
            on: false,
            was_tracked: false,
        };
        let model = self.update(lr, model, parts).map(&mut untrack);
        (model, untrack.was_tracked)
    }
}

/// Training's optimizer: the sum and the update in one pass on the CPU.
impl ShardOptimizer for Adam {
    fn update(&mut self, lr: f64, model: Autoencoder, parts: Vec<GradientsParams>) -> Autoencoder {
        self.step(lr, model, parts)
    }

    fn update_untracked(
        &mut self,
        lr: f64,
        model: Autoencoder,
        parts: Vec<GradientsParams>,
    ) -> (Autoencoder, bool) {
        self.step_untracked(lr, model, parts)
    }
}

/// Puts every parameter under autodiff's tracking (`on`), for a step through autodiff's
/// graph, or takes them out of it, noting whether any was tracked.
///
/// A model trained without the graph ([`Autoencoder::chain`]) keeps its parameters untracked
/// between steps: a tracked parameter is registered in autodiff's graphs, which free a
/// dropped tensor's entry only at some later backward pass, and such steps run none. Every
/// parameter of a model in training is trained, so a step through the graph tracks them
/// all.
struct Track {
    on: bool,
    was_tracked: bool,
}

impl ModuleMapper for Track {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let tracked = tensor.is_require_grad();
        self.was_tracked |= tracked;
        let tensor = match (self.on, tracked) {
            (true, false) => tensor.require_grad(),
            (false, true) => Tensor::from_inner(tensor.inner()),
            _ => tensor,
        };
        Param::from_mapped_value(id, tensor, mapper)
    }
}

/// Any of burn's optimizers (the tests use SGD, whose steps scale with the gradients): the
/// shards' gradients summed with burn's addition, then burn's step.
impl ShardOptimizer for ModuleOptimizer {
    fn update(&mut self, lr: f64, model: Autoencoder, parts: Vec<GradientsParams>) -> Autoencoder {
        let mut sum = SumGrads {
            parts,
            out: GradientsParams::new(),
        };
        model.visit(&mut sum);
        self.step(lr, model, sum.out)
    }
}

/// Sums the shards' gradients of every parameter of the visited model, in shard order.
struct SumGrads {
    parts: Vec<GradientsParams>,
    out: GradientsParams,
}

impl ModuleVisitor for SumGrads {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let sum = self
            .parts
            .iter_mut()
            .filter_map(|g| g.remove::<D>(param.id))
            .reduce(|a, b| a + b);
        if let Some(sum) = sum {
            self.out.register(param.id, sum);
        }
    }
}

/// Where a training step falls: its epoch and batch (they seed the VAE's noise) and the
/// learning rate it uses.
#[derive(Debug, Clone, Copy)]
pub struct StepAt {
    /// Epoch, from 0.
    pub epoch: usize,
    /// Batch within the epoch, from 0.
    pub batch: usize,
    /// Learning rate.
    pub lr: f64,
}

/// A training step's loss: read at once where reading is a plain copy (the CPU), else left on
/// the device. Reading a GPU tensor waits until the GPU has run everything queued before it;
/// a loss read at every step would leave the GPU idle while the CPU queues the next step's
/// work, so the training loop reads pending losses several steps at a time.
#[derive(Debug, Clone)]
pub enum StepLoss {
    /// The loss, read; when it is not finite the step left the model unchanged.
    Read(f64),
    /// The loss as a one-value tensor not read yet; the step updated the model whatever it is.
    Pending(Box<Tensor<1>>),
}

impl StepLoss {
    /// The loss's value (reading a pending one waits for the device).
    pub fn value(self) -> f64 {
        match self {
            StepLoss::Read(v) => v,
            StepLoss::Pending(t) => t.into_scalar::<f32>() as f64,
        }
    }

    /// Reads the values of `losses` with one wait for the device, in order.
    pub fn values(losses: Vec<StepLoss>) -> Vec<f64> {
        let mut out = vec![f64::NAN; losses.len()];
        let mut pending = Vec::new();
        let mut slots = Vec::new();
        for (i, l) in losses.into_iter().enumerate() {
            match l {
                StepLoss::Read(v) => out[i] = v,
                StepLoss::Pending(t) => {
                    pending.push(*t);
                    slots.push(i);
                }
            }
        }
        if !pending.is_empty() {
            let read = Tensor::cat(pending, 0)
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .expect("converted to f32");
            for (i, v) in slots.into_iter().zip(read) {
                out[i] = v as f64;
            }
        }
        out
    }
}

/// One optimisation step on the batch `x` (input) / `target` (on an autodiff device): the loss,
/// its gradients, one optimizer update. Returns the updated model and the batch's loss, read
/// on the CPU and pending elsewhere ([`StepLoss`]); when a read loss is not finite the model
/// comes back unchanged, for the caller to stop.
///
/// With `config.shards` > 1 the batch is cut into that many shards whose forward and backward
/// passes run in parallel (rayon tasks), each on its own autodiff graph ([`Leaves`] gives the
/// shard's copy of the model fresh leaves sharing the weights). Each shard's loss is weighted
/// by its share of the batch, so the sum of the shards' gradients, which the optimizer takes
/// in shard order, is mathematically the whole batch's gradient. burn's CPU kernels use
/// only part of two cores at these small sizes (see BENCHMARKS.md); shards fill them. The
/// shard count, not the thread count, fixes the summation order, so results do not depend on
/// the machine's cores. Batch norms share the batch's statistics between shards only in a
/// step through the fused operations ([`chain_shards`]); elsewhere a model with batch norm
/// trains each batch whole.
pub fn step(
    model: Autoencoder,
    optim: &mut dyn ShardOptimizer,
    config: &TrainConfig,
    x: Tensor<4>,
    target: Tensor<4>,
    at: StepAt,
    device: &Device,
) -> (Autoencoder, StepLoss) {
    let n = x.dims()[0];
    let cut = |t: &Tensor<4>, r: Range<usize>| {
        if r.len() == n {
            t.clone()
        } else {
            t.clone().narrow(0, r.start, r.len())
        }
    };
    step_on(
        model,
        optim,
        config,
        n,
        &|r| (cut(&x, r.clone()), cut(&target, r)),
        at,
        device,
    )
}

/// [`step`] on the images `indices` of `split`, scaled by `scale`, as both input and target
/// (training without input noise). Each shard converts its own images on its own thread, so
/// the conversion, a pass over scattered rows of the training set at every step, is not left
/// to one thread while the others wait.
#[allow(clippy::too_many_arguments)]
pub fn step_images(
    model: Autoencoder,
    optim: &mut dyn ShardOptimizer,
    config: &TrainConfig,
    split: &Split,
    indices: &[usize],
    scale: Scale,
    at: StepAt,
    device: &Device,
) -> (Autoencoder, StepLoss) {
    let images = |r: Range<usize>| {
        let x = split.batch(&indices[r], scale, device);
        (x.clone(), x)
    };
    step_on(model, optim, config, indices.len(), &images, at, device)
}

/// [`step`] on a batch of `n` images whose input and target tensors for any range of them
/// `inputs` gives (called once per shard, on the shard's thread).
fn step_on(
    model: Autoencoder,
    optim: &mut dyn ShardOptimizer,
    config: &TrainConfig,
    n: usize,
    inputs: &(dyn Fn(Range<usize>) -> (Tensor<4>, Tensor<4>) + Sync),
    at: StepAt,
    device: &Device,
) -> (Autoencoder, StepLoss) {
    let eps = batch_eps(config, at.epoch, at.batch, n, device);
    let read_now = crate::kernels::fused_here(device);
    // Off the CPU's kernels dropout is burn's, whose draws would come in whatever order the
    // shards run: a model with dropout trains each batch whole there.
    let shards = match read_now || !config.model.has_dropout() {
        true => config.shards,
        false => 1,
    };
    let ranges = shard_ranges(n, shards);
    let draws = step_draws(config.seed, at.epoch, at.batch);
    if read_now && eps.is_none() {
        if let Some(done) = chain_shards(&model, config, (n, &ranges), inputs, draws) {
            let (losses, parts): (Vec<f32>, Vec<GradientsParams>) = done.into_iter().unzip();
            let v: f64 = losses.into_iter().map(f64::from).sum();
            if !v.is_finite() {
                return (model, StepLoss::Read(v));
            }
            let (model, was_tracked) = optim.update_untracked(at.lr, model, parts);
            if was_tracked {
                sweep_graphs(device);
            }
            return (model, StepLoss::Read(v));
        }
    }
    // Batch norms normalise shards with the batch's statistics only through the chain.
    let ranges = match config.model.has_batch_norm() {
        true => shard_ranges(n, 1),
        false => ranges,
    };
    let model = model.map(&mut Track {
        on: true,
        was_tracked: false,
    });
    if ranges.len() == 1 {
        let (x, target) = inputs(0..n);
        let l = crate::kernels::with_step_draws(draws, 0, || {
            shard_loss(&model, config, x, target, eps)
        });
        let lv = if read_now {
            StepLoss::Read(l.clone().into_scalar::<f32>() as f64)
        } else {
            StepLoss::Pending(Box::new(l.clone().detach()))
        };
        if matches!(lv, StepLoss::Read(v) if !v.is_finite()) {
            return (model, lv);
        }
        let grads = GradientsParams::from_grads(l.backward(), &model);
        return (optim.update(at.lr, model, vec![grads]), lv);
    }
    // Each shard gets its images and forks the model on its own thread, as a task whose
    // kernels stay on that thread (`as_task`); its dropout layers make the whole batch's
    // choices for its rows (`with_step_draws`).
    let results: Vec<(Tensor<1>, GradientsParams)> = crate::kernels::tasks(ranges.len(), |i| {
        let r = &ranges[i];
        crate::kernels::as_task(|| {
            let (x, target) = inputs(r.clone());
            let m = model.clone().map(&mut Leaves);
            let e = eps.as_ref().map(|e| e.clone().narrow(0, r.start, r.len()));
            let w = r.len() as f64 / n as f64;
            let l = crate::kernels::with_step_draws(draws, r.start, || {
                shard_loss(&m, config, x, target, e)
            })
            .mul_scalar(w);
            (
                l.clone().detach(),
                GradientsParams::from_grads(l.backward(), &m),
            )
        })
    });
    let (losses, parts): (Vec<Tensor<1>>, Vec<GradientsParams>) = results.into_iter().unzip();
    let lv = if read_now {
        let v: f64 = losses
            .into_iter()
            .map(|l| l.into_scalar::<f32>() as f64)
            .sum();
        if !v.is_finite() {
            return (model, StepLoss::Read(v));
        }
        StepLoss::Read(v)
    } else {
        let sum = losses.into_iter().reduce(|a, b| a + b);
        StepLoss::Pending(Box::new(sum.expect("at least one shard")))
    };
    (optim.update(at.lr, model, parts), lv)
}

/// A shard's copy of a model: each parameter a fresh autodiff leaf on the same storage, so
/// that each shard's graph is its own. burn's `fork` does this through a `to_device` step
/// whose parent is the model's own leaf, shared by every shard: twice as many nodes
/// registered in autodiff's graphs, all behind one lock, and the shards' graphs hanging off
/// common parents; leaves made directly copy the model in half the time and make the shards'
/// passes faster on two threads (BENCHMARKS.md, session 33).
struct Leaves;

impl ModuleMapper for Leaves {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let trained = tensor.is_require_grad();
        let mut leaf = Tensor::from_inner(tensor.inner());
        if trained {
            leaf = leaf.require_grad();
        }
        Param::from_mapped_value(id, leaf, mapper)
    }
}

/// Mean loss and mean MSE of `model` on `split`, in batches, with seeded noise on the input
/// when `noise_std > 0`.
pub fn evaluate_loss(
    model: &Autoencoder,
    split: &Split,
    config: &TrainConfig,
    device: &Device,
) -> (f64, f64) {
    let act = config.model.activation();
    let scale = act.scale();
    let idx: Vec<usize> = (0..split.len()).collect();
    let (mut loss_sum, mut mse_sum) = (0.0f64, 0.0f64);
    for (bi, chunk) in idx.chunks(EVAL_BATCH).enumerate() {
        let clean = split.scaled(chunk, scale);
        let input = noisy(&clean, config, scale, VALID_NOISE_EPOCH, bi);
        let target = to_tensor(clean, chunk.len(), device);
        let x = input
            .map(|v| to_tensor(v, chunk.len(), device))
            .unwrap_or_else(|| target.clone());
        let logits = model.forward(x.clone());
        let n = chunk.len() as f64;
        let mse = loss(Loss::Mse, act, logits.clone(), target.clone()).into_scalar::<f32>() as f64;
        let l = if config.model.is_variational() {
            batch_loss(
                model,
                config,
                x,
                target,
                VALID_NOISE_EPOCH,
                bi,
                chunk.len(),
                device,
            )
            .into_scalar::<f32>() as f64
        } else {
            match config.loss {
                Loss::Mse => mse,
                Loss::Bce => loss(Loss::Bce, act, logits, target).into_scalar::<f32>() as f64,
            }
        };
        loss_sum += l * n;
        mse_sum += mse * n;
    }
    let n = split.len().max(1) as f64;
    (loss_sum / n, mse_sum / n)
}

pub(crate) fn noisy(
    clean: &[f32],
    config: &TrainConfig,
    scale: Scale,
    epoch: usize,
    batch: usize,
) -> Option<Vec<f32>> {
    (config.noise_std > 0.0).then(|| {
        let mut v = clean.to_vec();
        add_noise(
            &mut v,
            config.noise_std as f32,
            scale,
            &mut noise_rng(config.seed, epoch, batch),
        );
        v
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::Link;
    use crate::model::arch::{Init, ModelSpec};
    use crate::model::stack::Block;
    use crate::model::{Activation, ModelConfig, PRESETS};

    /// `n` images of which about four pixels in five are zero, as in MNIST, on `device`.
    fn sparse_images(n: usize, seed: u32, device: &Device) -> Tensor<4> {
        let mut s = seed;
        let v: Vec<f32> = (0..n * 784)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let u = (s >> 8) as f32 / (1 << 24) as f32;
                if u < 0.8 {
                    0.0
                } else {
                    (u - 0.8) * 5.0
                }
            })
            .collect();
        Tensor::<1>::from_floats(v.as_slice(), device).reshape([n, 1, 28, 28])
    }

    /// Takes the gradient of every tensor of the visited model out of `grads`, in order
    /// (`None` for those without one: batch norms' running statistics).
    struct Take<'a> {
        grads: &'a mut GradientsParams,
        out: Vec<Option<Vec<f32>>>,
    }

    impl ModuleVisitor for Take<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let g = self.grads.remove::<D>(param.id);
            self.out
                .push(g.map(|g| g.into_data().try_to_vec::<f32>().expect("f32 values")));
        }
    }

    /// Asserts that `a` and `b` hold the same values, bit for bit.
    fn same_bits(a: &[f32], b: &[f32], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}: sizes");
        let differ = a.iter().zip(b).filter(|(x, y)| x.to_bits() != y.to_bits());
        assert_eq!(differ.count(), 0, "{what}: values that differ");
    }

    /// The running means and variances of a model's batch norms.
    fn running_stats(model: &Autoencoder) -> Vec<Vec<f32>> {
        let read = |t: Tensor<1>| t.into_data().try_to_vec::<f32>().expect("f32 values");
        model
            .encoder
            .layers
            .iter()
            .chain(&model.decoder.layers)
            .filter_map(|b| match b {
                Block::Norm(n) => Some([n.running_mean.value(), n.running_var.value()]),
                _ => None,
            })
            .flatten()
            .map(read)
            .collect()
    }

    /// Asserts that the chain's pass gives the graph's loss, gradients and running statistics,
    /// bit for bit, on `n` images: two models of `mc` made alike (`tweak` applied to each),
    /// one through each pass, the images whole (outside a task, as a batch trained whole) or as
    /// a shard from row `n` weighted by `weight` (inside a task, as the step runs shards),
    /// with the same dropout draws.
    fn same_as_the_graph(
        mc: &ModelConfig,
        config: &TrainConfig,
        n: usize,
        weight: Option<f64>,
        tweak: impl Fn(&mut Autoencoder),
    ) {
        let device = Device::flex().autodiff();
        let make = || {
            device.seed(11);
            let mut m = crate::train::params::initial(mc, 11, &device).unwrap();
            tweak(&mut m);
            m
        };
        let (graph_model, chain_model) = (make(), make());
        let case = format!("{:?} {:?} n={n}", config.model.activation(), config.loss);
        let x = sparse_images(n, n as u32, &device);
        let links = chain_model.chain().expect("layers that run fused");
        let draws = crate::kernels::StepDraws::new(42);
        let first = if weight.is_some() { n } else { 0 };
        let run = || {
            crate::kernels::with_step_draws(draws, first, || {
                let m = graph_model.clone().map(&mut Leaves);
                let mut l = shard_loss(&m, config, x.clone(), x.clone(), None);
                if let Some(w) = weight {
                    l = l.mul_scalar(w);
                }
                let want = l.clone().into_scalar::<f32>();
                let graph = GradientsParams::from_grads(l.backward(), &m);
                (want, graph)
            })
        };
        let chain = || {
            crate::kernels::with_step_draws(draws, first, || {
                chain_shard(&links, config, x.clone(), x.clone(), weight).map(|p| p.finish())
            })
        };
        let ((want, mut graph), got) = match weight {
            Some(_) => (crate::kernels::as_task(run), crate::kernels::as_task(chain)),
            None => (run(), chain()),
        };
        let (got, mut chained) = got.expect("every layer runs fused");
        assert_eq!(got.to_bits(), want.to_bits(), "{case}: loss");
        let take = |model: &Autoencoder, grads: &mut GradientsParams| {
            let mut t = Take {
                grads,
                out: Vec::new(),
            };
            model.visit(&mut t);
            t.out
        };
        let a = take(&chain_model, &mut chained);
        let b = take(&graph_model, &mut graph);
        assert_eq!(a.len(), b.len(), "{case}: parameters");
        for (i, (a, b)) in a.iter().zip(&b).enumerate() {
            match (a, b) {
                (Some(a), Some(b)) => {
                    assert!(
                        a.iter().any(|&v| v != 0.0),
                        "{case}: parameter {i}'s gradient"
                    );
                    same_bits(a, b, &format!("{case}: parameter {i}"));
                }
                (None, None) => {}
                _ => panic!("{case}: parameter {i} has a gradient in one pass only"),
            }
        }
        assert!(a.iter().flatten().count() >= 4, "{case}: gradients");
        assert!(
            chained.is_empty() && graph.is_empty(),
            "{case}: no other gradient"
        );
        let (a, b) = (running_stats(&chain_model), running_stats(&graph_model));
        for (i, (a, b)) in a.iter().zip(&b).enumerate() {
            same_bits(a, b, &format!("{case}: running statistics {i}"));
        }
    }

    #[test]
    fn a_model_of_linear_layers_gets_the_graphs_loss_and_gradients_bit_for_bit() {
        // The encoder ends in a ReLU and the decoder's hidden layer has units no image turns
        // on (a bias far below zero): the paths of sparse input, fused ReLUs and input
        // gradients over live units are all taken. Each loss, whole or weighted as a shard.
        let _rng = crate::rng_lock();
        let device = Device::flex().autodiff();
        for (act, kind) in [
            (Activation::Sigmoid, Loss::Mse),
            (Activation::Sigmoid, Loss::Bce),
            (Activation::Tanh, Loss::Mse),
        ] {
            let spec = ModelSpec::parse(
                "flatten linear(96) relu linear(8) relu",
                "linear(80) relu linear(784) reshape(1,28,28)",
                act,
                false,
                Init::Pytorch,
            )
            .unwrap();
            let mc = ModelConfig::custom(spec).unwrap();
            let dead_units = |model: &mut Autoencoder| {
                let Block::Linear(l) = &mut model.decoder.layers[0] else {
                    panic!("the decoder starts with a linear layer")
                };
                let bias: Vec<f32> = (0..80)
                    .map(|u| if u % 10 < 3 { -1e3 } else { 0.1 })
                    .collect();
                l.bias = Some(Param::from_tensor(Tensor::<1>::from_floats(
                    bias.as_slice(),
                    &device,
                )));
            };
            let mut config = TrainConfig::for_model(mc.clone());
            config.loss = kind;
            same_as_the_graph(&mc, &config, 64, None, dead_units);
            same_as_the_graph(&mc, &config, 37, Some(37.0 / 100.0), dead_units);
        }
    }

    /// A model of your own with these layers and a sigmoid output.
    fn custom(enc: &str, dec: &str) -> ModelConfig {
        let spec = ModelSpec::parse(enc, dec, Activation::Sigmoid, false, Init::Pytorch);
        ModelConfig::custom(spec.unwrap()).unwrap()
    }

    /// Whether each parameter of `model` is tracked by autodiff, in visiting order.
    fn tracking(model: &Autoencoder) -> Vec<bool> {
        struct Tracking(Vec<bool>);
        impl ModuleVisitor for Tracking {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                self.0.push(param.val().is_require_grad());
            }
        }
        let mut t = Tracking(Vec::new());
        model.visit(&mut t);
        t.0
    }

    #[test]
    fn steps_without_the_graph_leave_the_parameters_untracked_and_the_graph_tracks_them() {
        let _rng = crate::rng_lock();
        let device = Device::flex().autodiff();
        let config = TrainConfig::for_model(custom(
            "flatten linear(32) relu linear(4) relu",
            "linear(32) relu linear(784) reshape(1,28,28)",
        ));
        let mut model = config.model.init(&device).unwrap();
        let mut optim = Adam::new(1e-8, 0.0);
        let x = sparse_images(16, 7, &device);
        assert!(
            tracking(&model).iter().all(|&t| t),
            "a new model is tracked"
        );
        for (batch, was) in [(0, true), (1, false)] {
            let grads = chain_shards(
                &model,
                &config,
                (16, std::slice::from_ref(&(0..16))),
                &|_| (x.clone(), x.clone()),
                step_draws(1, 0, batch),
            )
            .expect("every layer runs fused");
            let parts = grads.into_iter().map(|(_, g)| g).collect();
            let (next, was_tracked) = optim.update_untracked(1e-3, model, parts);
            assert_eq!(was_tracked, was, "step {batch}: tracked before");
            assert!(
                tracking(&next).iter().all(|&t| !t),
                "step {batch}: untracked"
            );
            model = next;
        }
        // The chain takes untracked parameters; a step through the graph tracks them all
        // again, and each then gets its gradient.
        assert!(model.chain().is_some());
        let model = model.map(&mut Track {
            on: true,
            was_tracked: false,
        });
        assert!(tracking(&model).iter().all(|&t| t), "tracked for the graph");
        let l = shard_loss(&model, &config, x.clone(), x, None);
        let mut grads = GradientsParams::from_grads(l.backward(), &model);
        let mut take = Take {
            grads: &mut grads,
            out: Vec::new(),
        };
        model.visit(&mut take);
        assert_eq!(take.out.len(), 8);
        assert!(take.out.iter().all(Option::is_some), "a gradient each");
        // And a whole step through `step` leaves them untracked once more.
        let (model, _) = step(
            model,
            &mut optim,
            &config,
            sparse_images(16, 8, &device),
            sparse_images(16, 8, &device),
            StepAt {
                epoch: 0,
                batch: 2,
                lr: 1e-3,
            },
            &device,
        );
        assert!(tracking(&model).iter().all(|&t| !t));
    }

    #[test]
    fn convolutional_models_get_the_graphs_loss_and_gradients_bit_for_bit() {
        // conv64 (convolutions, transposed convolutions, the mean pooling, reshapes), a model
        // with max pooling and upsampling, and the README's model of your own (batch norms,
        // dropout); 20 images whole are cut in parts by each convolution, as a batch trained
        // whole is.
        let _rng = crate::rng_lock();
        let pools = custom(
            "conv(8,3,s1,p1) relu maxpool(2) conv(8,3,s2,p1) relu flatten linear(10)",
            "linear(392) relu reshape(8,7,7) upsample(2) conv(4,3,s1,p1) relu convt(1,4,s2,p1)",
        );
        let yours = custom(
            "conv(16,3,s1,p1) bn relu maxpool(2) conv(32,3,s1,p1) bn relu maxpool(2) flatten \
             dropout(0.1) linear(16)",
            "linear(1568) relu reshape(32,7,7) upsample(2) conv(16,3,s1,p1) relu upsample(2) \
             conv(1,3,s1,p1)",
        );
        let conv64 = ModelConfig::preset(PRESETS[0]).with_latent(16).unwrap();
        for mc in [conv64, pools, yours] {
            let config = TrainConfig::for_model(mc.clone());
            same_as_the_graph(&mc, &config, 20, None, |_| {});
            same_as_the_graph(&mc, &config, 13, Some(13.0 / 32.0), |_| {});
        }
    }

    #[test]
    fn shards_of_a_batch_normalise_with_the_batchs_statistics() {
        // 10 images in 3 uneven shards: the step moves the running statistics once, by the
        // whole batch's mean and variance (a shard's own would give another variance, and a
        // move per shard other means), and gives the whole batch's loss, up to rounding.
        let _rng = crate::rng_lock();
        let device = Device::flex().autodiff();
        let mc = custom(
            "conv(4,3,s2,p1) bn relu flatten linear(8) bn",
            "linear(784) reshape(1,28,28)",
        );
        let x = sparse_images(10, 5, &device);
        let mut runs = Vec::new();
        for shards in [1, 3] {
            let mut config = TrainConfig::for_model(mc.clone());
            config.shards = shards;
            device.seed(3);
            let model = crate::train::params::initial(&mc, 3, &device).unwrap();
            let before = running_stats(&model);
            let at = StepAt {
                epoch: 0,
                batch: 0,
                lr: 1e-3,
            };
            let (model, loss) = step(
                model,
                &mut Adam::new(1e-3, 0.0),
                &config,
                x.clone(),
                x.clone(),
                at,
                &device,
            );
            let after = running_stats(&model);
            assert_eq!(after.len(), 4);
            assert!(after.iter().zip(&before).all(|(a, b)| a != b), "moved");
            runs.push((after, loss.value()));
        }
        let ((whole, l1), (sharded, l3)) = (&runs[0], &runs[1]);
        assert!((l1 - l3).abs() < 1e-6 * l1, "loss {l3} vs {l1}");
        for (i, (a, b)) in whole.iter().zip(sharded).enumerate() {
            for (a, b) in a.iter().zip(b) {
                assert!(
                    (a - b).abs() < 1e-5 * a.abs().max(1e-2),
                    "statistics {i}: {b} vs {a}"
                );
            }
        }
    }

    #[test]
    fn running_statistics_move_only_when_the_chains_pass_is_finished() {
        // A step that a layer sends back to the graph must leave them to the graph's pass.
        let _rng = crate::rng_lock();
        let device = Device::flex().autodiff();
        let mc = custom(
            "conv(4,3,s2,p1) bn relu flatten linear(8)",
            "linear(784) reshape(1,28,28)",
        );
        let model = crate::train::params::initial(&mc, 3, &device).unwrap();
        let config = TrainConfig::for_model(mc);
        let links = model.chain().expect("layers that run fused");
        let x = sparse_images(8, 8, &device);
        let before = running_stats(&model);
        let pass = chain_shard(&links, &config, x.clone(), x, None).expect("fused");
        assert_eq!(
            running_stats(&model),
            before,
            "not before the pass is finished"
        );
        let _ = pass.finish();
        let after = running_stats(&model);
        assert_eq!(after.len(), 2);
        assert!(
            after.iter().zip(&before).all(|(a, b)| a != b),
            "moved once finished"
        );
    }

    #[test]
    fn only_models_of_fused_layers_are_trained_without_the_graph() {
        // Reading the parameters draws them from the device's generator.
        let _rng = crate::rng_lock();
        let device = Device::flex().autodiff();
        let chain = |enc: &str, dec: &str| {
            let mc = custom(enc, dec);
            let m = mc.init(&device).unwrap();
            // The spec tells as the built model does.
            assert_eq!(mc.trains_fused(), m.chain().is_some(), "{enc} | {dec}");
            m.chain().map(|links| {
                links
                    .iter()
                    .map(|l| match l {
                        Link::Linear {
                            relu, after_relu, ..
                        } => format!("linear {relu} {after_relu}"),
                        Link::Conv { relu, .. } => format!("conv {relu}"),
                        Link::ConvT { relu, .. } => format!("convt {relu}"),
                        Link::Norm { relu, .. } => format!("bn {relu}"),
                        Link::Dropout(_) => "dropout".into(),
                        other => format!("{other:?}").chars().take(7).collect(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            })
        };
        // The flags of `run`: a ReLU after a layer fused, and a linear layer told that its
        // input is a ReLU's output within its half.
        assert_eq!(
            chain(
                "flatten linear(32) relu linear(4) relu",
                "linear(32) relu linear(784) reshape(1,28,28)"
            )
            .as_deref(),
            Some(
                "Flatten, linear true false, linear true true, linear true false, \
                 linear false true, Reshape"
            )
        );
        assert_eq!(
            chain(
                "conv(4,3,s2,p1) relu flatten linear(4)",
                "linear(784) relu reshape(1,28,28)"
            )
            .as_deref(),
            Some("conv true, Flatten, linear false false, linear true false, Reshape")
        );
        for (enc, dec) in [
            (
                "flatten linear(32) tanh linear(4)",
                "linear(784) reshape(1,28,28)",
            ),
            ("relu flatten linear(4)", "linear(784) reshape(1,28,28)"),
            (
                "avgpool(2,2) flatten linear(4)",
                "linear(784) reshape(1,28,28)",
            ),
        ] {
            assert_eq!(chain(enc, dec), None, "{enc} | {dec}");
        }
        let vae = ModelConfig::preset(PRESETS[5]).init(&device).unwrap();
        assert!(vae.chain().is_none(), "a variational model");
        for p in PRESETS {
            let mc = ModelConfig::preset(p);
            let built = mc.init(&device).unwrap();
            assert_eq!(mc.trains_fused(), built.chain().is_some(), "{p:?}");
        }
        // The README's model, and batch norms and dropout where the chain takes them or not.
        for (enc, dec) in [
            (
                "conv(16,3,s1,p1) bn relu maxpool(2) conv(32,3,s1,p1) bn relu maxpool(2) flatten \
                 dropout(0.1) linear(16)",
                "linear(1568) relu reshape(32,7,7) upsample(2) conv(16,3,s1,p1) relu \
                 upsample(2) conv(1,3,s1,p1)",
            ),
            (
                "bn flatten linear(8) bn relu",
                "linear(784) reshape(1,28,28)",
            ),
            ("bn relu flatten linear(8)", "linear(784) reshape(1,28,28)"),
            ("flatten linear(8) bn tanh", "linear(784) reshape(1,28,28)"),
            (
                "flatten linear(8) leaky_relu(0.1)",
                "linear(784) reshape(1,28,28)",
            ),
            (
                "adaptive_avgpool(2,2) flatten linear(8)",
                "linear(784) reshape(1,28,28)",
            ),
        ] {
            let _ = chain(enc, dec);
        }
    }
}
