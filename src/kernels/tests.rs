//! The fused kernels against burn's own operations (forward values, gradients, optimizer
//! steps), on the flex backend with and without autodiff.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::activation::{relu, sigmoid, tanh};
use burn::tensor::{Device, Distribution, Tensor};

use super::adam::FusedAdam;
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
    let device = Device::flex().autodiff();
    for relu_after in [false, true] {
        let l = layer(37, 19, &device);
        let x =
            Tensor::<2>::random([23, 37], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let t = Tensor::<2>::random([23, 19], Distribution::Normal(0.0, 1.0), &device);

        let y = linear(&l, x.clone(), relu_after);
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
fn fused_linear_without_autodiff_and_on_a_narrowed_batch() {
    let device = Device::flex();
    let l = layer(11, 5, &device);
    let x = Tensor::<2>::random([9, 11], Distribution::Normal(0.0, 1.0), &device);
    // A batch cut from a larger one starts at an offset in its storage.
    let part = x.clone().narrow(0, 4, 5);
    let y = linear(&l, part.clone(), true);
    assert!(max_diff(y, relu(l.forward(part))) < 1e-5);
}

#[test]
fn fused_losses_match_their_definitions_and_gradients() {
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
    let device = Device::flex().autodiff();
    let start = layer(13, 7, &device);
    let x = Tensor::<2>::random([10, 13], Distribution::Normal(0.0, 1.0), &device);
    let mut ours = FusedAdam::new(1e-8, 1e-3).init();
    let mut burns = AdamConfig::new()
        .with_epsilon(1e-8)
        .with_weight_decay(Some(WeightDecayConfig::new(1e-3)))
        .init();
    let w0 = start.weight.val().inner();
    let (mut a, mut b) = (start.clone(), start);
    for _ in 0..5 {
        let ga = GradientsParams::from_grads(a.forward(x.clone()).square().mean().backward(), &a);
        a = ours.step(1e-2, a, ga);
        let gb = GradientsParams::from_grads(b.forward(x.clone()).square().mean().backward(), &b);
        b = burns.step(1e-2, b, gb);
    }
    let d = max_diff(a.weight.val().inner(), b.weight.val().inner());
    assert!(d < 1e-6, "weights differ by {d} after 5 steps");
    // The steps moved the weights well beyond that tolerance.
    assert!(max_diff(a.weight.val().inner(), w0) > 1e-3);
    assert_eq!(a.num_params(), b.num_params());
}
