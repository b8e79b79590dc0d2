//! Reconstruction losses on logits.

use burn::prelude::*;
use burn::tensor::activation::relu;

use crate::config::Loss;
use crate::model::Activation;

/// Mean loss of `logits` against `target`, averaged over every pixel (PyTorch's
/// `reduction="mean"`).
pub fn loss(kind: Loss, act: Activation, logits: Tensor<4>, target: Tensor<4>) -> Tensor<1> {
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
