//! The fused kernels against burn's own operations (forward values, gradients, optimizer
//! steps), on the flex backend with and without autodiff.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::activation::{relu, sigmoid, tanh};
use burn::tensor::{Device, Distribution, Tensor};

use super::adam::Adam;
use super::{linear, recon_loss, LossKind};

fn max_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b).abs().max().into_scalar::<f32>()
}

fn layer(i: usize, o: usize, device: &Device) -> Linear {
    LinearConfig::new(i, o).init(device)
}

#[test]
fn fused_linear_matches_burn_forward_and_gradients() {
    let _rng = crate::rng_lock();
    let device = Device::flex().autodiff();
    for relu_after in [false, true] {
        let l = layer(37, 19, &device);
        let x =
            Tensor::<2>::random([23, 37], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let t = Tensor::<2>::random([23, 19], Distribution::Normal(0.0, 1.0), &device);

        let y = linear(&l, x.clone(), relu_after, false);
        let mut reference = l.forward(x.clone());
        if relu_after {
            reference = relu(reference);
        }
        assert!(max_diff(y.clone().inner(), reference.clone().inner()) < 1e-5);

        // The same scalar function of both outputs, then every gradient compared.
        let g1 = (y * t.clone()).sum().backward();
        let g2 = (reference * t).sum().backward();
        let dx = |g| x.grad(g).expect("x has a gradient");
        assert!(max_diff(dx(&g1), dx(&g2)) < 1e-4, "relu {relu_after}: dx");
        let dw = |g| l.weight.grad(g).expect("w has a gradient");
        assert!(max_diff(dw(&g1), dw(&g2)) < 1e-4, "relu {relu_after}: dw");
        let bias = l.bias.as_ref().expect("bias");
        let db = |g| bias.grad(g).expect("b has a gradient");
        assert!(max_diff(db(&g1), db(&g2)) < 1e-4, "relu {relu_after}: db");
        // With ReLU some outputs are cut: the mask must have zeroed their gradients.
        if relu_after {
            assert!(dx(&g1).abs().sum().into_scalar::<f32>() > 0.0);
        }
    }
}

#[test]
fn fused_linear_on_a_sparse_input_matches_burn() {
    // A model's input (untracked) that is mostly zeros, as MNIST pixels are, takes the sparse
    // product forward and for the weight gradient; a narrowed batch starts at an offset.
    let _rng = crate::rng_lock();
    let device = Device::flex().autodiff();
    let l = layer(100, 70, &device);
    let full = relu(Tensor::<2>::random(
        [40, 100],
        Distribution::Normal(-1.0, 1.0),
        &device,
    ));
    let x = full.narrow(0, 3, 33);
    let nonzero = x
        .clone()
        .greater_elem(0.0)
        .float()
        .mean()
        .into_scalar::<f32>();
    assert!(nonzero > 0.05 && nonzero < 0.3, "density {nonzero}");
    let t = Tensor::<2>::random([33, 70], Distribution::Normal(0.0, 1.0), &device);
    let y = linear(&l, x.clone(), true, false);
    let reference = relu(l.forward(x));
    assert!(max_diff(y.clone().inner(), reference.clone().inner()) < 1e-5);
    let g1 = (y * t.clone()).sum().backward();
    let g2 = (reference * t).sum().backward();
    let dw = |g| l.weight.grad(g).expect("w has a gradient");
    assert!(dw(&g1).abs().sum().into_scalar::<f32>() > 0.0);
    assert!(max_diff(dw(&g1), dw(&g2)) < 1e-4, "dw");
    let bias = l.bias.as_ref().expect("bias");
    let db = |g| bias.grad(g).expect("b has a gradient");
    assert!(max_diff(db(&g1), db(&g2)) < 1e-4, "db");
    // Without autodiff too.
    let plain = Device::flex();
    let lp = layer(100, 70, &plain);
    let xp = relu(Tensor::<2>::random(
        [16, 100],
        Distribution::Normal(-1.0, 1.0),
        &plain,
    ));
    assert!(max_diff(linear(&lp, xp.clone(), false, false), lp.forward(xp)) < 1e-5);
}

#[test]
fn a_layer_after_a_relu_with_dead_units_gives_burns_gradients() {
    // Two layers: 100 hidden units, 30 of them never on (a bias far below zero), feeding a
    // layer of 70. The second is told its input is a ReLU's output, so its input gradient
    // skips the dead units; every gradient of the pair must be burn's.
    let _rng = crate::rng_lock();
    let device = Device::flex().autodiff();
    let mut l1 = layer(20, 100, &device);
    let l2 = layer(100, 70, &device);
    let bias: Vec<f32> = (0..100)
        .map(|u| if u % 10 < 3 { -1e3 } else { 0.5 })
        .collect();
    l1.bias = Some(burn::module::Param::from_tensor(Tensor::<1>::from_floats(
        bias.as_slice(),
        &device,
    )));
    let x = Tensor::<2>::random([33, 20], Distribution::Normal(0.0, 1.0), &device).require_grad();
    let t = Tensor::<2>::random([33, 70], Distribution::Normal(0.0, 1.0), &device);
    let h = linear(&l1, x.clone(), true, false);
    let dead = h.clone().inner().sum_dim(0).equal_elem(0.0).int().sum();
    assert_eq!(dead.into_scalar::<i64>(), 30, "30 dead units");
    let y = linear(&l2, h, false, true);
    let reference = l2.forward(relu(l1.forward(x.clone())));
    assert!(max_diff(y.clone().inner(), reference.clone().inner()) < 1e-5);
    let g1 = (y * t.clone()).sum().backward();
    let g2 = (reference * t).sum().backward();
    let dx = |g| x.grad(g).expect("x has a gradient");
    assert!(dx(&g1).abs().sum().into_scalar::<f32>() > 0.0);
    assert!(max_diff(dx(&g1), dx(&g2)) < 1e-4, "dx");
    for (name, l) in [("first", &l1), ("second", &l2)] {
        let dw = |g| l.weight.grad(g).expect("w has a gradient");
        assert!(max_diff(dw(&g1), dw(&g2)) < 1e-4, "{name} layer: dw");
        let bias = l.bias.as_ref().expect("bias");
        let db = |g| bias.grad(g).expect("b has a gradient");
        assert!(max_diff(db(&g1), db(&g2)) < 1e-4, "{name} layer: db");
    }
}

#[test]
fn fused_linear_without_autodiff_and_on_a_narrowed_batch() {
    let _rng = crate::rng_lock();
    let device = Device::flex();
    let l = layer(11, 5, &device);
    let x = Tensor::<2>::random([9, 11], Distribution::Normal(0.0, 1.0), &device);
    // A batch cut from a larger one starts at an offset in its storage.
    let part = x.clone().narrow(0, 4, 5);
    let y = linear(&l, part.clone(), true, false);
    assert!(max_diff(y, relu(l.forward(part))) < 1e-5);
}

#[test]
fn fused_losses_match_their_definitions_and_gradients() {
    let _rng = crate::rng_lock();
    let device = Device::flex().autodiff();
    let x = Tensor::<2>::random([6, 50], Distribution::Normal(0.0, 3.0), &device).require_grad();
    let t = Tensor::<2>::random([6, 50], Distribution::Uniform(0.0, 1.0), &device);
    let n = 300.0;
    for kind in [LossKind::SigmoidMse, LossKind::TanhMse, LossKind::Bce] {
        let fused = recon_loss(kind, x.clone(), t.clone(), 1.0 / n).expect("flex device");
        let reference = match kind {
            LossKind::SigmoidMse => (sigmoid(x.clone()) - t.clone()).square().mean(),
            LossKind::TanhMse => (tanh(x.clone()) - t.clone()).square().mean(),
            LossKind::Bce => crate::train::loss::bce_with_logits(x.clone(), t.clone()).mean(),
        };
        let (a, b) = (
            fused.clone().into_scalar::<f32>(),
            reference.clone().into_scalar::<f32>(),
        );
        assert!(
            (a - b).abs() < 1e-6 * b.abs().max(1.0),
            "{kind:?}: {a} vs {b}"
        );
        // Scaled by 3 after the loss: the backward pass must use the incoming gradient.
        let g1 = fused.mul_scalar(3.0).backward();
        let g2 = reference.mul_scalar(3.0).backward();
        let d = max_diff(x.grad(&g1).expect("grad"), x.grad(&g2).expect("grad"));
        assert!(d < 1e-7, "{kind:?}: gradient differs by {d}");
    }
}

#[test]
fn fused_adam_follows_burns_adam() {
    let _rng = crate::rng_lock();
    let device = Device::flex().autodiff();
    let start = layer(13, 7, &device);
    let x = Tensor::<2>::random([10, 13], Distribution::Normal(0.0, 1.0), &device);
    let mut ours = Adam::new(1e-8, 1e-3);
    let mut burns = AdamConfig::new()
        .with_epsilon(1e-8)
        .with_weight_decay(Some(WeightDecayConfig::new(1e-3)))
        .init();
    let w0 = start.weight.val().inner();
    let (mut a, mut b) = (start.clone(), start);
    for _ in 0..5 {
        let ga = GradientsParams::from_grads(a.forward(x.clone()).square().mean().backward(), &a);
        a = ours.step(1e-2, a, vec![ga]);
        let gb = GradientsParams::from_grads(b.forward(x.clone()).square().mean().backward(), &b);
        b = burns.step(1e-2, b, gb);
    }
    let d = max_diff(a.weight.val().inner(), b.weight.val().inner());
    assert!(d < 1e-6, "weights differ by {d} after 5 steps");
    // The steps moved the weights well beyond that tolerance.
    assert!(max_diff(a.weight.val().inner(), w0) > 1e-3);
    assert_eq!(a.num_params(), b.num_params());
    // The updated weights still train: they are tracked by autodiff again.
    let g = a.forward(x).square().mean().backward();
    assert!(a.weight.val().grad(&g).is_some());
}

/// Two layers, one larger than a block of the pool's split (so its update is cut into pieces)
/// and one smaller, and `parts` gradients of their loss on `parts` random batches.
fn shard_grads(
    model: &(Linear, Linear),
    parts: usize,
    device: &Device,
) -> (Vec<GradientsParams>, GradientsParams) {
    let mut grads = Vec::new();
    let mut sum = GradientsParams::new();
    let mut acc: Vec<Option<Tensor<2>>> = vec![None, None];
    let mut acc_b: Vec<Option<Tensor<1>>> = vec![None, None];
    for _ in 0..parts {
        let x = Tensor::<2>::random([6, 300], Distribution::Normal(0.0, 1.0), device);
        let y = model.1.forward(relu(model.0.forward(x)));
        let g = GradientsParams::from_grads(y.square().mean().backward(), model);
        for (k, l) in [&model.0, &model.1].into_iter().enumerate() {
            let w = g.get::<2>(l.weight.id).expect("weight gradient");
            acc[k] = Some(acc[k].take().map_or(w.clone(), |a| a + w));
            let b = g
                .get::<1>(l.bias.as_ref().expect("bias").id)
                .expect("bias gradient");
            acc_b[k] = Some(acc_b[k].take().map_or(b.clone(), |a| a + b));
        }
        grads.push(g);
    }
    for (k, l) in [&model.0, &model.1].into_iter().enumerate() {
        sum.register(l.weight.id, acc[k].take().expect("summed"));
        sum.register(
            l.bias.as_ref().expect("bias").id,
            acc_b[k].take().expect("summed"),
        );
    }
    (grads, sum)
}

/// Adam on the gradients of 1, 2 and 3 shards (the sum fused into the update) moves the
/// weights exactly as Adam on their sum by burn's addition, in shard order, over three steps.
#[test]
fn adam_on_shards_is_adam_on_their_sum() {
    let _rng = crate::rng_lock();
    let device = Device::flex().autodiff();
    for parts in [1, 2, 3] {
        let start = (layer(300, 257, &device), layer(257, 5, &device));
        let (mut ours, mut summed) = (Adam::new(1e-8, 1e-3), Adam::new(1e-8, 1e-3));
        let (mut a, mut b) = (start.clone(), start.clone());
        for _ in 0..3 {
            // The same gradients for both: taken at `a`'s weights, which `b` shares bit for bit.
            let (grads, sum) = shard_grads(&a, parts, &device);
            a = ours.step(1e-2, a, grads);
            b = summed.step(1e-2, b, vec![sum]);
            for (la, lb) in [(&a.0, &b.0), (&a.1, &b.1)] {
                assert_eq!(
                    la.weight.val().into_data(),
                    lb.weight.val().into_data(),
                    "{parts} parts"
                );
                assert_eq!(
                    la.bias.as_ref().unwrap().val().into_data(),
                    lb.bias.as_ref().unwrap().val().into_data(),
                    "{parts} parts"
                );
            }
        }
        assert!(max_diff(a.0.weight.val().inner(), start.0.weight.val().inner()) > 1e-3);
    }
}

/// Split over threads (from its second step: the first sizes the pass), Adam writes the new
/// weights to new memory, each piece updated by whichever thread takes it; on one thread, in
/// place: the two give the same bits, weights and moments, over three steps (two and three
/// threads).
#[test]
fn adam_in_place_and_to_new_memory_agree() {
    let _rng = crate::rng_lock();
    let device = Device::flex().autodiff();
    let start = (layer(300, 257, &device), layer(257, 5, &device));
    let pool = |n| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .expect("a thread pool")
    };
    let one = pool(1);
    let mut in_place = Adam::new(1e-8, 1e-3);
    let mut a = start.clone();
    let mut split: Vec<_> = [2, 3]
        .into_iter()
        .map(|n| (pool(n), Adam::new(1e-8, 1e-3), start.clone()))
        .collect();
    // A copy of gradients for the same parameters (the models share their ids).
    let copy = |parts: &[GradientsParams], m: &(Linear, Linear)| -> Vec<GradientsParams> {
        parts
            .iter()
            .map(|g| {
                let mut c = GradientsParams::new();
                for l in [&m.0, &m.1] {
                    let (w, b) = (l.weight.id, l.bias.as_ref().expect("bias").id);
                    c.register(w, g.get::<2>(w).expect("weight gradient"));
                    c.register(b, g.get::<1>(b).expect("bias gradient"));
                }
                c
            })
            .collect()
    };
    let same_weights = |a: &(Linear, Linear), b: &(Linear, Linear)| {
        for (la, lb) in [(&a.0, &b.0), (&a.1, &b.1)] {
            assert_eq!(la.weight.val().into_data(), lb.weight.val().into_data());
            assert_eq!(
                la.bias.as_ref().unwrap().val().into_data(),
                lb.bias.as_ref().unwrap().val().into_data()
            );
        }
    };
    for _ in 0..3 {
        let (grads, _) = shard_grads(&a, 2, &device);
        for (pool, fresh, b) in &mut split {
            let same = copy(&grads, &a);
            *b = pool.install(|| fresh.step(1e-2, b.clone(), same));
        }
        a = one.install(|| in_place.step(1e-2, a, grads));
        for (_, _, b) in &split {
            same_weights(&a, b);
        }
    }
    assert!(max_diff(a.0.weight.val().inner(), start.0.weight.val().inner()) > 1e-3);
    // The moments too: the next step from each state moves the weights alike.
    let (grads, _) = shard_grads(&a, 1, &device);
    for (_, fresh, b) in &mut split {
        let same = copy(&grads, &a);
        *b = one.install(|| fresh.step(1e-2, b.clone(), same));
    }
    let a = one.install(|| in_place.step(1e-2, a, grads));
    for (_, _, b) in &split {
        same_weights(&a, b);
    }
}

/// The state saved as burn's record and loaded again continues exactly where it was; a record
/// written by burn's own optimizer (burn's Adam) loads and continues as burn's does; and ours
/// loads into burn's optimizer. A fresh optimizer, by contrast, moves the weights elsewhere:
/// the state matters.
#[test]
fn adam_state_travels_as_burns_record() {
    let _rng = crate::rng_lock();
    let device = Device::flex().autodiff();
    let x = Tensor::<2>::random([10, 13], Distribution::Normal(0.0, 1.0), &device);
    let grads = |m: &Linear| {
        GradientsParams::from_grads(m.forward(x.clone()).square().mean().backward(), m)
    };
    let mut ours = Adam::new(1e-8, 0.0);
    let mut burns = AdamConfig::new().with_epsilon(1e-8).init();
    let mut m = layer(13, 7, &device);
    for _ in 0..4 {
        let g = grads(&m);
        m = ours.step(1e-2, m, vec![g]);
    }
    let mut mb = m.clone();
    for _ in 0..4 {
        let g = grads(&mb);
        mb = burns.step(1e-2, mb, g);
    }
    // Ours, saved and loaded: bit for bit the same next steps.
    let bytes = ours.to_bytes(&m).expect("saved");
    let mut loaded = Adam::new(1e-8, 0.0);
    loaded.load_bytes(&m, bytes.clone()).expect("loaded");
    let (mut a, mut b, mut fresh) = (m.clone(), m.clone(), m.clone());
    let mut new = Adam::new(1e-8, 0.0);
    for _ in 0..3 {
        let (ga, gb, gf) = (grads(&a), grads(&b), grads(&fresh));
        a = ours.step(1e-2, a, vec![ga]);
        b = loaded.step(1e-2, b, vec![gb]);
        fresh = new.step(1e-2, fresh, vec![gf]);
    }
    assert_eq!(a.weight.val().into_data(), b.weight.val().into_data());
    assert!(max_diff(a.weight.val().inner(), fresh.weight.val().inner()) > 1e-3);
    // burn's record into ours, ours into burn's: each continues as the other would.
    let burns_bytes = burns.clone().into_bytes().expect("burn's record");
    let mut from_burn = Adam::new(1e-8, 0.0);
    from_burn
        .load_bytes(&mb, burns_bytes)
        .expect("burn's record loads");
    let mut to_burn = AdamConfig::new()
        .with_epsilon(1e-8)
        .init()
        .from_bytes(bytes)
        .expect("our record loads into burn's optimizer");
    let (mut c, mut d) = (mb.clone(), m.clone());
    for _ in 0..3 {
        let (gb, gc) = (grads(&mb), grads(&c));
        mb = burns.step(1e-2, mb, gb);
        c = from_burn.step(1e-2, c, vec![gc]);
        let gd = grads(&d);
        d = to_burn.step(1e-2, d, gd);
    }
    let dc = max_diff(c.weight.val().inner(), mb.weight.val().inner());
    assert!(dc < 1e-6, "from burn's record: {dc}");
    let dd = max_diff(d.weight.val().inner(), a.weight.val().inner());
    assert!(dd < 1e-6, "into burn's optimizer: {dd}");
}

/// Fused convolution against burn's, forward and all three gradients, for each layer shape
/// of the presets (stride 1 and 2, padding 0 and 1, output padding, 1×1 inputs), and for
/// stride-1 convolutions to one channel (the direct path), from one channel to several (the
/// padded plane) and from eight channels or more to several (the shifted products): odd and
/// even kernels, padding from none to more than half
/// the kernel, non-square images, batches cut into parts.
#[test]
fn fused_convolutions_match_burn_forward_and_gradients() {
    let _rng = crate::rng_lock();
    use burn::tensor::Tensor as T;
    let device = Device::flex().autodiff();
    type Case = (&'static str, [usize; 4], bool, [usize; 7]);
    // (name, input dims, transposed, [in, out, kh, kw, stride, padding, output padding])
    let cases: [Case; 31] = [
        (
            "conv 1→16 k3 s2 p1",
            [3, 1, 28, 28],
            false,
            [1, 16, 3, 3, 2, 1, 0],
        ),
        (
            "conv 16→32 k3 s2 p1",
            [3, 16, 14, 14],
            false,
            [16, 32, 3, 3, 2, 1, 0],
        ),
        (
            "conv 32→64 k7 s1 p0",
            [2, 32, 7, 7],
            false,
            [32, 64, 7, 7, 1, 0, 0],
        ),
        (
            "convT 64→32 k4 on 1×1",
            [3, 64, 1, 1],
            true,
            [64, 32, 4, 4, 1, 0, 0],
        ),
        (
            "convT 32→16 k3 s2 p1",
            [3, 32, 4, 4],
            true,
            [32, 16, 3, 3, 2, 1, 0],
        ),
        (
            "convT 16→8 k4 s2 p1",
            [2, 16, 7, 7],
            true,
            [16, 8, 4, 4, 2, 1, 0],
        ),
        (
            "convT 32→16 k3 s2 p1 op1",
            [2, 32, 7, 7],
            true,
            [32, 16, 3, 3, 2, 1, 1],
        ),
        (
            "convT 8→1 k4 s2 p1",
            [2, 8, 14, 14],
            true,
            [8, 1, 4, 4, 2, 1, 0],
        ),
        // Batches a convolution outside a shard cuts into parts (12, 12 and 13 images).
        (
            "conv 4→8 k3 s1 p1, 37 images",
            [37, 4, 9, 9],
            false,
            [4, 8, 3, 3, 1, 1, 0],
        ),
        (
            "convT 8→4 k3 s2 p1 op1, 37 images",
            [37, 8, 5, 5],
            true,
            [8, 4, 3, 3, 2, 1, 1],
        ),
        (
            "conv 16→1 k3 s1 p1",
            [3, 16, 14, 14],
            false,
            [16, 1, 3, 3, 1, 1, 0],
        ),
        (
            "conv 4→1 k3 s1 p1, 37 images",
            [37, 4, 9, 9],
            false,
            [4, 1, 3, 3, 1, 1, 0],
        ),
        (
            "conv 3→1 k5 s1 p2 on 8×7",
            [2, 3, 8, 7],
            false,
            [3, 1, 5, 5, 1, 2, 0],
        ),
        (
            "conv 2→1 k3 s1 p0 on 6×5",
            [2, 2, 6, 5],
            false,
            [2, 1, 3, 3, 1, 0, 0],
        ),
        (
            "conv 2→1 k2 s1 p1 on 5×6",
            [3, 2, 5, 6],
            false,
            [2, 1, 2, 2, 1, 1, 0],
        ),
        (
            "conv 16→32 k3 s1 p1",
            [3, 16, 14, 14],
            false,
            [16, 32, 3, 3, 1, 1, 0],
        ),
        (
            "conv 32→16 k3 s1 p1 on 7×9, 37 images",
            [37, 32, 7, 9],
            false,
            [32, 16, 3, 3, 1, 1, 0],
        ),
        (
            "conv 8→4 k5 s1 p2 on 12×12",
            [2, 8, 12, 12],
            false,
            [8, 4, 5, 5, 1, 2, 0],
        ),
        (
            "conv 8→4 k5 s1 p2 on 8×7 (through patches: most of the padded grid is no output)",
            [2, 8, 8, 7],
            false,
            [8, 4, 5, 5, 1, 2, 0],
        ),
        (
            "conv 8→3 k1 s1 p2 on 5×6, one image",
            [1, 8, 5, 6],
            false,
            [8, 3, 1, 1, 1, 2, 0],
        ),
        (
            "conv 16→4 k3×1 s1 p1 on 6×9",
            [2, 16, 6, 9],
            false,
            [16, 4, 3, 1, 1, 1, 0],
        ),
        (
            "conv 8→2 k3 s1 p4 on 4×4 (padding past the kernel)",
            [2, 8, 4, 4],
            false,
            [8, 2, 3, 3, 1, 4, 0],
        ),
        (
            "conv 3→1 k1×3 s1 p2 on 4×5, one image",
            [1, 3, 4, 5],
            false,
            [3, 1, 1, 3, 1, 2, 0],
        ),
        (
            "conv 2→1 k3 s1 p0 on 7×3 (one column out)",
            [2, 2, 7, 3],
            false,
            [2, 1, 3, 3, 1, 0, 0],
        ),
        (
            "conv 2→1 k2 s1 p3 on 4×4, one image",
            [1, 2, 4, 4],
            false,
            [2, 1, 2, 2, 1, 3, 0],
        ),
        (
            "conv 8→3 k2 s1 p1 on 6×5",
            [2, 8, 6, 5],
            false,
            [8, 3, 2, 2, 1, 1, 0],
        ),
        (
            "conv 8→2 k3 s1 p0 on 9×9",
            [2, 8, 9, 9],
            false,
            [8, 2, 3, 3, 1, 0, 0],
        ),
        // Stride 1 from one input channel (the padded plane, no patch matrix forward).
        (
            "conv 1→16 k3 s1 p1 on 12×12, 37 images",
            [37, 1, 12, 12],
            false,
            [1, 16, 3, 3, 1, 1, 0],
        ),
        (
            "conv 1→4 k5 s1 p2 on 8×7",
            [2, 1, 8, 7],
            false,
            [1, 4, 5, 5, 1, 2, 0],
        ),
        (
            "conv 1→3 k2 s1 p0 on 6×5",
            [2, 1, 6, 5],
            false,
            [1, 3, 2, 2, 1, 0, 0],
        ),
        (
            "conv 1→2 k3×1 s1 p4 on 4×4 (padding past the kernel), one image",
            [1, 1, 4, 4],
            false,
            [1, 2, 3, 1, 1, 4, 0],
        ),
    ];
    // Each case from the test's thread (the passes run on rayon's pool) and from inside a pool
    // worker (as in a shard of a batch, where they run on that thread).
    for (name, dims, transposed, [i, o, kh, kw, s, p, op]) in cases {
        for relu_after in [false, true] {
            let check = || {
                let x =
                    T::<4>::random(dims, Distribution::Normal(0.0, 1.0), &device).require_grad();
                let (fused, reference, params) = if transposed {
                    assert_eq!(kh, kw, "square kernels for transposed convolutions");
                    let l = convt(i, o, kh, s, p, op, &device);
                    let f = super::conv_transpose2d(&l, x.clone(), relu_after).expect("fused");
                    let r = l.forward(x.clone());
                    let b = l.bias.clone().expect("bias");
                    (f, r, (l.weight.clone(), b))
                } else {
                    let l = conv(i, o, [kh, kw], s, p, &device);
                    let f = super::conv2d(&l, x.clone(), relu_after).expect("fused");
                    let r = l.forward(x.clone());
                    let b = l.bias.clone().expect("bias");
                    (f, r, (l.weight.clone(), b))
                };
                // A pre-activation within rounding of zero can fall on either side of the ReLU
                // in the two computations, and its gradient then differs by its whole value:
                // the few within 1e-3 of zero get no incoming gradient.
                let near_zero = reference.clone().detach().abs().lower_elem(1e-3);
                let reference = if relu_after {
                    relu(reference)
                } else {
                    reference
                };
                let d = max_diff(fused.clone().inner(), reference.clone().inner());
                assert!(d < 1e-4, "{name} relu {relu_after}: output differs by {d}");
                let t = T::<4>::random(fused.dims(), Distribution::Normal(0.0, 1.0), &device)
                    .mask_fill(near_zero, 0.0);
                let g1 = (fused * t.clone()).sum().backward();
                let g2 = (reference * t).sum().backward();
                let (w, b) = params;
                let dx = max_diff(x.grad(&g1).expect("dx"), x.grad(&g2).expect("dx"));
                let dw = max_diff(w.grad(&g1).expect("dw"), w.grad(&g2).expect("dw"));
                let db = max_diff(b.grad(&g1).expect("db"), b.grad(&g2).expect("db"));
                assert!(
                    dx < 1e-3 && dw < 1e-3 && db < 1e-3,
                    "{name} relu {relu_after}: gradients differ by {dx} {dw} {db}"
                );
            };
            check();
            crate::device::on_one_thread(check);
        }
    }
}

/// Shapes the fused kernels do not take (an empty batch here) go to burn's operations.
#[test]
fn empty_batches_are_left_to_burn() {
    let _rng = crate::rng_lock();
    let device = Device::flex();
    let c = conv(1, 2, [3, 3], 2, 1, &device);
    let empty = Tensor::<4>::zeros([0, 1, 28, 28], &device);
    assert!(super::conv2d(&c, empty.clone(), true).is_none());
    let t = convt(1, 2, 3, 2, 1, 0, &device);
    assert!(super::conv_transpose2d(&t, empty, true).is_none());
    let x = Tensor::<4>::zeros([2, 1, 28, 28], &device);
    assert!(super::conv2d(&c, x, true).is_some());
}

/// `nn.Conv2d(i, o, k, stride=s, padding=p)`, built from burn's config (the kernels' tests
/// build their layers themselves: `kernels` uses nothing of the model layer above it).
fn conv(
    i: usize,
    o: usize,
    k: [usize; 2],
    s: usize,
    p: usize,
    device: &Device,
) -> burn::nn::conv::Conv2d {
    burn::nn::conv::Conv2dConfig::new([i, o], k)
        .with_stride([s, s])
        .with_padding(burn::nn::PaddingConfig2d::Explicit(p, p, p, p))
        .init(device)
}

/// `nn.ConvTranspose2d(i, o, k, stride=s, padding=p, output_padding=op)`.
fn convt(
    i: usize,
    o: usize,
    k: usize,
    s: usize,
    p: usize,
    op: usize,
    device: &Device,
) -> burn::nn::conv::ConvTranspose2d {
    burn::nn::conv::ConvTranspose2dConfig::new([i, o], [k, k])
        .with_stride([s, s])
        .with_padding([p, p])
        .with_padding_out([op, op])
        .init(device)
}

#[test]
fn fused_mean_pool_is_burns_adaptive_pooling_to_the_bit() {
    let _rng = crate::rng_lock();
    let device = Device::flex().autodiff();
    let pool = burn::nn::pool::AdaptiveAvgPool2dConfig::new([1, 1]).init();
    let bits = |t: Tensor<4>| -> Vec<u32> {
        let v = t.into_data().try_to_vec::<f32>().expect("f32 values");
        v.iter().map(|x| x.to_bits()).collect()
    };
    for [b, c, h, w] in [[3, 5, 4, 4], [2, 7, 3, 5], [1, 1, 1, 1]] {
        let x = Tensor::<4>::random([b, c, h, w], Distribution::Normal(0.0, 1.0), &device)
            .require_grad();
        let t = Tensor::<4>::random([b, c, 1, 1], Distribution::Normal(0.0, 1.0), &device);
        let ours = super::mean_pool(x.clone());
        let theirs = pool.forward(x.clone());
        // A strided input (its last two axes swapped) gives the same as its contiguous copy.
        let swapped = x.clone().inner().swap_dims(2, 3);
        assert_eq!(
            bits(super::mean_pool(swapped.clone())),
            bits(pool.forward(swapped)),
            "strided {b}x{c}x{h}x{w}"
        );
        assert_eq!(
            bits(ours.clone().inner()),
            bits(theirs.clone().inner()),
            "forward {b}x{c}x{h}x{w}"
        );
        let g1 = (ours * t.clone()).sum().backward();
        let g2 = (theirs * t).sum().backward();
        let dx = |g| x.grad(g).expect("x has a gradient");
        let (d1, d2) = (dx(&g1), dx(&g2));
        assert!(d1.clone().abs().sum().into_scalar::<f32>() > 0.0);
        assert_eq!(bits(d1), bits(d2), "gradient {b}x{c}x{h}x{w}");
    }
}

#[test]
fn fused_max_pool_and_upsampling_are_burns_to_the_bit() {
    let _rng = crate::rng_lock();
    let device = Device::flex().autodiff();
    let bits = |t: Tensor<4>| -> Vec<u32> {
        let v = t.into_data().try_to_vec::<f32>().expect("f32 values");
        v.iter().map(|x| x.to_bits()).collect()
    };
    for ([b, c, h, w], k, s) in [
        ([4, 3, 28, 28], 2, 2),
        ([2, 5, 9, 7], 3, 2),
        ([3, 2, 6, 6], 3, 1),
    ] {
        let pool = burn::nn::pool::MaxPool2dConfig::new([k, k])
            .with_strides([s, s])
            .init();
        // Rounded values: many ties inside windows.
        let x = (Tensor::<4>::random([b, c, h, w], Distribution::Normal(0.0, 2.0), &device)
            .round())
        .require_grad();
        let ours = super::max_pool(&pool, x.clone());
        let theirs = pool.forward(x.clone());
        assert_eq!(bits(ours.clone().inner()), bits(theirs.clone().inner()));
        let t = Tensor::<4>::random(ours.dims(), Distribution::Normal(0.0, 1.0), &device);
        let g1 = (ours * t.clone()).sum().backward();
        let g2 = (theirs * t).sum().backward();
        let dx = |g| x.grad(g).expect("x has a gradient");
        assert_eq!(bits(dx(&g1)), bits(dx(&g2)), "max pool k{k} s{s}");
        // The same layer without autodiff.
        let plain = x.clone().inner();
        assert_eq!(
            bits(super::max_pool(&pool, plain.clone())),
            bits(pool.forward(plain))
        );
    }
    for ([b, c, h, w], out) in [([4, 3, 7, 7], [14, 14]), ([2, 2, 5, 3], [11, 7])] {
        let up = burn::nn::interpolate::Interpolate2dConfig::new()
            .with_output_size(Some(out))
            .with_mode(burn::nn::interpolate::InterpolateMode::Nearest)
            .init();
        let x = Tensor::<4>::random([b, c, h, w], Distribution::Normal(0.0, 1.0), &device)
            .require_grad();
        let ours = super::upsample(&up, x.clone());
        let theirs = up.forward(x.clone());
        assert_eq!(bits(ours.clone().inner()), bits(theirs.clone().inner()));
        let t = Tensor::<4>::random(ours.dims(), Distribution::Normal(0.0, 1.0), &device);
        let g1 = (ours * t.clone()).sum().backward();
        let g2 = (theirs * t).sum().backward();
        let dx = |g| x.grad(g).expect("x has a gradient");
        assert_eq!(bits(dx(&g1)), bits(dx(&g2)), "upsample to {out:?}");
    }
}

#[test]
fn shards_statistics_combine_into_the_batchs() {
    // 11 images of 3 channels with far-apart means, in uneven shards: the combined mean and
    // biased variance are the whole batch's, up to rounding, and a lone shard's are its own.
    let (b, c, s) = (11, 3, 20);
    let v: Vec<f32> = (0..b * c * s)
        .map(|i| {
            let ch = (i / s) % c;
            (ch as f32 * 1000.0) + ((i * 7919) % 101) as f32 / 10.0
        })
        .collect();
    let part = |from: usize, to: usize| {
        let t = super::flex::tensor(
            v[from * c * s..to * c * s].to_vec(),
            burn::tensor::Shape::new([to - from, c, 4, 5]),
        );
        super::norm::shard_stats(&t)
    };
    let whole = super::norm::batch_stats(&[part(0, b)]);
    let (mean, var) = super::norm::batch_stats(&[part(0, 4), part(4, 5), part(5, b)]);
    for ch in 0..c {
        let xs: Vec<f64> = (0..b)
            .flat_map(|i| &v[(i * c + ch) * s..][..s])
            .map(|&x| x as f64)
            .collect();
        let m = xs.iter().sum::<f64>() / xs.len() as f64;
        let var_direct = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / xs.len() as f64;
        assert!(var_direct > 1.0, "channel {ch}: values that vary");
        for (what, (got_m, got_v)) in [
            ("whole", (whole.0[ch], whole.1[ch])),
            ("shards", (mean[ch], var[ch])),
        ] {
            assert!(
                (got_m - m).abs() <= 1e-12 * m.abs().max(1.0),
                "{what} {ch}: mean {got_m} vs {m}"
            );
            assert!(
                (got_v - var_direct).abs() <= 1e-10 * var_direct,
                "{what} {ch}: var {got_v} vs {var_direct}"
            );
        }
    }
}

/// Batch norm layers `(ours, burn's)` with the same random `γ` and `β` over `c` channels.
fn norm_pair(c: usize, device: &Device) -> (burn::nn::BatchNorm, burn::nn::BatchNorm) {
    let gamma = Tensor::<1>::random([c], Distribution::Uniform(0.5, 1.5), device);
    let beta = Tensor::<1>::random([c], Distribution::Normal(0.0, 0.5), device);
    let make = || {
        let mut l = burn::nn::BatchNormConfig::new(c).init(device);
        l.gamma = burn::module::Param::from_tensor(gamma.clone());
        l.beta = burn::module::Param::from_tensor(beta.clone());
        l
    };
    (make(), make())
}

#[test]
fn fused_batch_norm_matches_burn_and_keeps_pytorchs_running_statistics() {
    let _rng = crate::rng_lock();
    let device = Device::flex().autodiff();
    fn check<const D: usize>(x: Tensor<D>, relu_after: bool, device: &Device) {
        let dims = x.dims();
        let (c, n) = (dims[1], dims.iter().product::<usize>() / dims[1]);
        let (ours_l, burn_l) = norm_pair(c, device);
        let x = x.require_grad();
        let ours = super::batch_norm(&ours_l, x.clone(), relu_after);
        let mut theirs = burn_l.forward(x.clone());
        if relu_after {
            theirs = relu(theirs);
        }
        let what = format!("{dims:?} relu {relu_after}");
        assert!(
            max_diff(ours.clone().inner(), theirs.clone().inner()) < 1e-5,
            "{what}"
        );
        let t = Tensor::<D>::random(dims, Distribution::Normal(0.0, 1.0), device);
        let g1 = (ours * t.clone()).sum().backward();
        let g2 = (theirs * t).sum().backward();
        let dx = |g| x.grad(g).expect("x has a gradient");
        assert!(max_diff(dx(&g1), dx(&g2)) < 1e-4, "{what}: dx");
        assert!(dx(&g1).abs().sum().into_scalar::<f32>() > 0.0);
        let dg = |l: &burn::nn::BatchNorm, g| l.gamma.grad(g).expect("γ has a gradient");
        assert!(
            max_diff(dg(&ours_l, &g1), dg(&burn_l, &g2)) < 1e-3,
            "{what}: dγ"
        );
        let db = |l: &burn::nn::BatchNorm, g| l.beta.grad(g).expect("β has a gradient");
        assert!(
            max_diff(db(&ours_l, &g1), db(&burn_l, &g2)) < 1e-3,
            "{what}: dβ"
        );
        // The running mean as burn's; the running variance from the unbiased batch variance,
        // where burn's layer takes the biased one: 0.9·1 + 0.1·v·n/(n − 1) against 0.9 + 0.1·v.
        let mean = |l: &burn::nn::BatchNorm| l.running_mean.value_sync().inner();
        let var = |l: &burn::nn::BatchNorm| l.running_var.value_sync().inner();
        assert!(
            max_diff(mean(&ours_l), mean(&burn_l)) < 1e-6,
            "{what}: running mean"
        );
        let biased = (var(&burn_l) - 0.9) / 0.1;
        let want = biased * (n as f32 / (n - 1) as f32) * 0.1 + 0.9;
        assert!(
            max_diff(var(&ours_l), want) < 1e-5,
            "{what}: running variance"
        );
        // Out of training (no autodiff) it normalises with its running statistics.
        let valid = ours_l.valid();
        let plain = x.inner();
        let per_channel = |t: Tensor<1, burn::tensor::Float>| {
            let mut shape = [1; D];
            shape[1] = c;
            t.inner().reshape(shape)
        };
        let want = (plain.clone() - per_channel(ours_l.running_mean.value_sync()))
            / (per_channel(ours_l.running_var.value_sync()) + 1e-5).sqrt()
            * per_channel(ours_l.gamma.val())
            + per_channel(ours_l.beta.val());
        let got = super::batch_norm(&valid, plain, relu_after);
        let want = if relu_after { relu(want) } else { want };
        assert!(max_diff(got, want) < 1e-5, "{what}: inference");
    }
    for relu_after in [false, true] {
        let x4 = Tensor::<4>::random([5, 3, 6, 7], Distribution::Normal(1.0, 2.0), &device);
        check(x4, relu_after, &device);
        // Large enough for the passes to split over the pool.
        let big = Tensor::<4>::random([9, 4, 30, 31], Distribution::Normal(-0.5, 1.0), &device);
        check(big, relu_after, &device);
        let x2 = Tensor::<2>::random([13, 6], Distribution::Normal(0.0, 3.0), &device);
        check(x2, relu_after, &device);
    }
}

/// Held by the tests of [`super::drive`], which check the process-wide helper flag.
static DRIVES: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Sums `0..n` as a tree of rayon tasks: parallel work inside a [`super::drive`].
fn tree_sum(lo: u64, hi: u64) -> u64 {
    if hi - lo <= 64 {
        (lo..hi).sum()
    } else {
        let mid = (lo + hi) / 2;
        let (a, b) = rayon::join(|| tree_sum(lo, mid), || tree_sum(mid, hi));
        a + b
    }
}

#[test]
fn a_drive_runs_its_work_and_its_tasks_stay_tasks() {
    let _one = DRIVES.lock().unwrap_or_else(|e| e.into_inner());
    let (sum, flags) = super::drive(1, || {
        let outside = super::in_task();
        let inside = super::as_task(super::in_task);
        (tree_sum(0, 100_000), (outside, inside, super::in_task()))
    });
    assert_eq!(sum, 100_000 * 99_999 / 2);
    // The driver's kernels use the pool; a task's stay on its thread; leaving the task
    // restores the driver's state.
    assert_eq!(flags, (false, true, false));
}

#[test]
fn a_drive_on_two_cores_has_its_helper_standing_by_before_it_starts() {
    let _one = DRIVES.lock().unwrap_or_else(|e| e.into_inner());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores < 2 || rayon::current_num_threads() < 2 {
        eprintln!("one core or one worker: no helper to check");
        return;
    }
    let before = super::STOOD.load(std::sync::atomic::Ordering::Relaxed);
    // Waiting as long as it takes (no time limit), the helper has started when `f` runs.
    let stood = super::drive_waiting(1, std::time::Duration::MAX, || {
        super::STOOD.load(std::sync::atomic::Ordering::Relaxed) - before
    });
    assert_eq!(stood, 1);
}

#[test]
fn drives_from_several_threads_at_once_all_finish() {
    let _one = DRIVES.lock().unwrap_or_else(|e| e.into_inner());
    // Six drives compete for the pool: one at a time gets helpers, the others run without,
    // and each one's work may run nested under another's; all finish with their own sums.
    let sums: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6u64)
            .map(|i| {
                s.spawn(move || {
                    super::drive(3, || {
                        (0..20)
                            .map(|_| super::as_task(|| tree_sum(0, 10_000 + i)) + tree_sum(0, i))
                            .sum()
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("no panic"))
            .collect()
    });
    for (i, got) in sums.into_iter().enumerate() {
        let n = 10_000 + i as u64;
        assert_eq!(
            got,
            20 * (n * (n - 1) / 2 + (i as u64) * (i as u64).saturating_sub(1) / 2)
        );
    }
}

#[test]
fn a_panic_inside_a_drive_reaches_the_caller_and_frees_its_helpers() {
    let _one = DRIVES.lock().unwrap_or_else(|e| e.into_inner());
    let caught = std::panic::catch_unwind(|| super::drive(1, || -> u64 { panic!("inside") }));
    assert!(caught.is_err());
    // The helper stood down and the process's helpers are free again: the next drive gets one
    // (where the machine has a second core) and the pool runs its work.
    assert!(!super::HELPED.load(std::sync::atomic::Ordering::Acquire));
    assert_eq!(super::drive(1, || tree_sum(0, 1000)), 999 * 1000 / 2);
}

#[test]
fn tasks_return_their_results_in_order_inside_and_outside_a_drive() {
    let _one = DRIVES.lock().unwrap_or_else(|e| e.into_inner());
    let work = |i: usize| (i, tree_sum(0, 1000 * (i as u64 + 1)), super::in_task());
    let expect: Vec<_> = (0..5)
        .map(|i| (i, tree_sum(0, 1000 * (i as u64 + 1)), true))
        .collect();
    // In a drive, each task runs as a task (as the shards of a step do); from outside the
    // pool too, on the pool's workers or on the caller.
    let driven = super::drive(1, || super::tasks(5, |i| super::as_task(|| work(i))));
    assert_eq!(driven, expect);
    let outside = super::tasks(5, |i| super::as_task(|| work(i)));
    assert_eq!(outside.len(), 5);
    assert!(outside
        .iter()
        .zip(&expect)
        .all(|(a, b)| (a.0, a.1) == (b.0, b.1)));
    assert!(super::tasks(0, work).is_empty());
    assert_eq!(super::tasks(1, |i| i + 7), vec![7]);
    // More tasks than threads, on a pool of one thread: the caller runs them all.
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    assert_eq!(one.install(|| super::tasks(4, |i| i * i)), vec![0, 1, 4, 9]);
}

/// `n` pseudo-random values in [-0.5, 0.5), or their magnitudes when `positive`.
fn adam_pass_values(n: usize, seed: usize, positive: bool) -> Vec<f32> {
    let mut s = seed as u32 * 2_654_435_761 + 1;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let u = (s >> 8) as f32 / (1 << 24) as f32 - 0.5;
            if positive {
                u.abs()
            } else {
                u
            }
        })
        .collect()
}

/// A parameter's tag, new values and new moments from Adam's pass.
type AdamPassResult = (usize, Vec<f32>, Vec<f32>, Vec<f32>);

/// Adam's pass over parameters from [`adam_pass_values`], `shared` with `helpers` or on the
/// calling thread, the caller's part done when `finish`; with each parameter's tag, new
/// values and moments. The parameters: one value, fewer than a piece, a piece and one more
/// value, several pieces ending inside one; each with two gradients.
fn adam_pass_run(shared: bool, helpers: usize, finish: bool) -> Vec<AdamPassResult> {
    use super::adam_pass::{AdamPass, AdamWork, Hyper, Pieces};
    let hyper = Hyper {
        beta_1: 0.9,
        beta_2: 0.999,
        epsilon: 1e-8,
        weight_decay: 1e-3,
    };
    let values = |n: usize, seed: usize, positive: bool| {
        super::flex::tensor(
            adam_pass_values(n, seed, positive),
            burn::tensor::Shape::new([n]),
        )
    };
    let pass = AdamPass::new(hyper, 1e-2, shared);
    let pieces = Pieces::new();
    let work = AdamWork::new(&pieces);
    super::with_helpers(
        helpers,
        |_| work.help(),
        || {
            let closing = work.closing();
            for (i, n) in [1, 3, 4097, 40_000].into_iter().enumerate() {
                let g = vec![values(n, 10 + i, false), values(n, 20 + i, false)];
                let moments = (values(n, 30 + i, false), values(n, 40 + i, true));
                pass.add(&pieces, i, values(n, i, false), g, moments, 3);
            }
            // Shared with helpers, they take every piece while the queue is still open
            // (waiting for them here, so that the caller's part finds nothing left).
            if shared && helpers > 0 {
                let since = std::time::Instant::now();
                while !pieces.is_empty() {
                    assert!(
                        since.elapsed() < std::time::Duration::from_secs(60),
                        "no helper took the pieces"
                    );
                    std::hint::spin_loop();
                }
            }
            drop(closing);
            if finish {
                pieces.finish();
            }
        },
    );
    drop((work, pieces));
    let read = |t: &burn::backend::flex::FlexTensor| super::flex::values(t).into_owned();
    pass.into_results()
        .into_iter()
        .map(|(tag, p, m, v)| (tag, read(&p), read(&m), read(&v)))
        .collect()
}

/// Adam's pass shared with helpers, which update its pieces while parameters are still
/// coming in, gives the bits of the pass on one thread: new values, both moments, in the
/// order the parameters came; and every value moved.
#[test]
fn adam_pass_shared_with_helpers_gives_the_one_thread_bits() {
    let _one = DRIVES.lock().unwrap_or_else(|e| e.into_inner());
    let one = adam_pass_run(false, 0, true);
    assert_eq!(one.len(), 4);
    for helpers in [1, 3] {
        let shared = super::drive(helpers, || adam_pass_run(true, helpers, true));
        assert_eq!(shared.len(), one.len());
        for (a, b) in one.iter().zip(&shared) {
            assert_eq!(a.0, b.0, "the order of the parameters");
            for (x, y) in [(&a.1, &b.1), (&a.2, &b.2), (&a.3, &b.3)] {
                assert_eq!(x.len(), y.len());
                assert!(x.iter().zip(y).all(|(x, y)| x.to_bits() == y.to_bits()));
            }
        }
    }
    let p0 = adam_pass_values(40_000, 3, false);
    assert!(one[3].1.iter().zip(&p0).all(|(a, b)| a != b));
}

/// A caller that panics while it adds parameters, with helpers waiting for pieces, closes the
/// queue as it unwinds: the helpers return and the panic reaches the caller's caller.
#[test]
fn adam_pass_caller_panicking_lets_its_helpers_go() {
    use super::adam_pass::{AdamPass, AdamWork, Hyper, Pieces};
    let _one = DRIVES.lock().unwrap_or_else(|e| e.into_inner());
    let hyper = Hyper {
        beta_1: 0.9,
        beta_2: 0.999,
        epsilon: 1e-8,
        weight_decay: 0.0,
    };
    let t = |n: usize| super::flex::tensor(vec![0.5; n], burn::tensor::Shape::new([n]));
    let caught = std::panic::catch_unwind(|| {
        super::drive(1, || {
            let pass = AdamPass::new(hyper, 1e-2, true);
            let pieces = Pieces::new();
            let work = AdamWork::new(&pieces);
            super::with_helpers(
                1,
                |_| work.help(),
                || {
                    let _closing = work.closing();
                    pass.add(&pieces, 0, t(9000), vec![t(9000)], (t(9000), t(9000)), 1);
                    // A gradient of another size: `add` panics.
                    pass.add(&pieces, 1, t(10), vec![t(11)], (t(10), t(10)), 1);
                },
            );
        })
    });
    assert!(caught.is_err());
}

/// A shared pass whose pieces were not all updated (no helpers, and the caller skipped its
/// part) gives no results: its new values were never written.
#[test]
#[should_panic(expected = "not all updated")]
fn adam_pass_with_pieces_left_gives_no_results() {
    adam_pass_run(true, 0, false);
}

/// Dropout in training on the autodiff device: every output is its input scaled by `1/keep`
/// or zero, about `keep` of them kept; the gradient flows through the kept values only, with
/// the same scale; the backend's seed fixes the choices, and the next call makes new ones;
/// out of training, or with `prob` 0, the input comes back unchanged.
#[test]
fn fused_dropout_keeps_scales_and_routes_gradients_like_burn() {
    let _rng = crate::rng_lock();
    let device = Device::flex().autodiff();
    let layer = burn::nn::DropoutConfig::new(0.3).init();
    let n = 40_000;
    let x =
        Tensor::<2>::random([8, n / 8], Distribution::Uniform(0.5, 2.0), &device).require_grad();
    let s = (1.0 / 0.7f64) as f32;
    let draw = |seed: u64| {
        device.seed(seed);
        super::dropout(&layer, x.clone())
    };
    let y = draw(5);
    let (yv, xv) = (
        y.clone().inner().into_data().try_to_vec::<f32>().unwrap(),
        x.clone().inner().into_data().try_to_vec::<f32>().unwrap(),
    );
    let kept = yv.iter().filter(|&&v| v != 0.0).count();
    assert!(
        (kept as f64 / n as f64 - 0.7).abs() < 0.02,
        "{kept} of {n} kept"
    );
    for (&yv, &xv) in yv.iter().zip(&xv) {
        assert!(
            yv == 0.0 || yv.to_bits() == (xv * s).to_bits(),
            "{yv} from {xv}"
        );
    }
    let t = Tensor::<2>::random([8, n / 8], Distribution::Normal(0.0, 1.0), &device);
    let grads = (y.clone() * t.clone()).sum().backward();
    let dx = x
        .grad(&grads)
        .unwrap()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let tv = t.into_data().try_to_vec::<f32>().unwrap();
    for i in 0..n {
        let r = if yv[i] == 0.0 { 0.0f32 } else { 1.0 };
        let want = (tv[i] * s) * r;
        assert_eq!(dx[i].to_bits(), want.to_bits(), "{i}");
    }
    let same = draw(5).inner().into_data().try_to_vec::<f32>().unwrap();
    assert_eq!(same, yv, "the same seed chooses the same values");
    let next = super::dropout(&layer, x.clone());
    assert_ne!(next.inner().into_data().try_to_vec::<f32>().unwrap(), yv);
    assert_ne!(draw(6).inner().into_data().try_to_vec::<f32>().unwrap(), yv);
    // burn's own operations with the same choices, bit for bit, on a transposed input: the
    // choices go by position in the input's logical (row-major) order, whatever its layout.
    let mask = Tensor::<2>::from_data(
        burn::tensor::TensorData::new(
            yv.iter()
                .map(|&v| if v == 0.0 { 0.0f32 } else { 1.0 })
                .collect::<Vec<_>>(),
            [8, n / 8],
        ),
        &device,
    );
    let xt = x.clone().transpose();
    device.seed(5);
    let yt = super::dropout(&layer, xt.clone());
    let want = (xt.clone() * mask.reshape([n / 8, 8])) * (1.0 / 0.7);
    assert!(
        yt.inner().into_data().try_to_vec::<f32>().unwrap()
            == want.inner().into_data().try_to_vec::<f32>().unwrap(),
        "a transposed input: not burn's arithmetic on the same choices"
    );
    // Out of training: a frozen layer on the autodiff device, and any layer off it.
    let frozen = super::dropout(&layer.clone().freeze(), x.clone());
    assert_eq!(frozen.inner().into_data().try_to_vec::<f32>().unwrap(), xv);
    let off = layer.clone().valid();
    let still = super::dropout(&off, x.clone().inner());
    assert_eq!(still.into_data().try_to_vec::<f32>().unwrap(), xv);
    let none = burn::nn::DropoutConfig::new(0.0).init();
    let y0 = super::dropout(&none, x.clone())
        .inner()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    assert_eq!(y0, xv);
}
