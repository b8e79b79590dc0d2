//! Reconstruction losses on logits.

use burn::prelude::*;
use burn::tensor::activation::relu;

use crate::config::Loss;
use crate::kernels::{self, LossKind};
use crate::model::Activation;

/// The fused kernel's name for a training loss on a model's output activation.
pub(crate) fn fused_kind(loss: Loss, act: Activation) -> LossKind {
    match (loss, act) {
        (Loss::Bce, _) => LossKind::Bce,
        (Loss::Mse, Activation::Sigmoid) => LossKind::SigmoidMse,
        (Loss::Mse, Activation::Tanh) => LossKind::TanhMse,
    }
}

/// Mean loss of `logits` against `target`, averaged over every pixel (PyTorch's
/// `reduction="mean"`).
pub fn loss(kind: Loss, act: Activation, logits: Tensor<4>, target: Tensor<4>) -> Tensor<1> {
    let n = logits.shape().num_elements() as f64;
    let fused = fused_kind(kind, act);
    if let Some(l) = kernels::recon_loss(fused, logits.clone(), target.clone(), 1.0 / n) {
        return l;
    }
    match kind {
        Loss::Mse => (act.apply(logits) - target).square().mean(),
        Loss::Bce => bce_with_logits(logits, target).mean(),
    }
}

/// Element-wise `BCEWithLogits`: `max(x, 0) - x*y + log(1 + exp(-|x|))`, which never
/// overflows (the form PyTorch uses).
pub fn bce_with_logits<const D: usize>(x: Tensor<D>, y: Tensor<D>) -> Tensor<D> {
    relu(x.clone()) - x.clone() * y + x.abs().neg().exp().log1p()
}

/// The negative ELBO of a VAE per image, `recon + beta * KL`, with its two parts; the
/// reconstruction term is summed over pixels (BCE on logits: the Bernoulli negative
/// log-likelihood in nats; or squared error) and everything is averaged over the batch.
pub fn vae_loss(
    kind: Loss,
    logits: Tensor<4>,
    target: Tensor<4>,
    mu: Tensor<2>,
    logvar: Tensor<2>,
    beta: f64,
) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
    let b = logits.dims()[0] as f64;
    let fused = fused_kind(kind, Activation::Sigmoid);
    let recon = match kernels::recon_loss(fused, logits.clone(), target.clone(), 1.0 / b) {
        Some(l) => l,
        None => match kind {
            Loss::Bce => bce_with_logits(logits, target).sum(),
            Loss::Mse => (Activation::Sigmoid.apply(logits) - target).square().sum(),
        }
        .div_scalar(b),
    };
    // KL(q(z|x) || N(0, I)) = -½ Σ (1 + log σ² - μ² - σ²)
    let kl = (logvar.clone().add_scalar(1.0) - mu.square() - logvar.exp())
        .sum()
        .mul_scalar(-0.5 / b);
    (recon.clone() + kl.clone().mul_scalar(beta), recon, kl)
}
