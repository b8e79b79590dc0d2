//! Adam as one fused pass per parameter on the CPU, with burn's Adam state record.

use burn::optim::decay::WeightDecayConfig;
use burn::optim::{
    Adam, AdamConfig, AdamState, AdaptiveMomentumState, LearningRate, ModuleOptimizer, Optimizer,
};
use burn::tensor::{Device, Tensor};

use super::{fused_here, FusedAdamOps};

/// burn's Adam (no AMSGrad), computed by [`FusedAdamOps::fused_adam`] on the flex CPU backend
/// and by burn's own `Adam` elsewhere. The state is burn's [`AdamState`], so optimizer records
/// (resume files) are the same as with `AdamConfig::init`.
#[derive(Clone)]
pub struct FusedAdam {
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
    weight_decay: f32,
    fallback: Adam,
}

impl FusedAdam {
    /// PyTorch's `Adam(lr, betas=(0.9, 0.999), eps, weight_decay)` (L2 penalty added to the
    /// gradient, as PyTorch and burn's `WeightDecay` do).
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
        FusedAdam {
            beta_1,
            beta_2,
            epsilon,
            weight_decay,
            fallback,
        }
    }

    /// The optimizer for a whole module.
    pub fn init(self) -> ModuleOptimizer {
        ModuleOptimizer::from(self)
    }
}

impl Optimizer for FusedAdam {
    type State<const D: usize> = AdamState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        if !fused_here(&tensor.device()) {
            return self.fallback.step(lr, tensor, grad, state);
        }
        let (time, m, v) = match state {
            Some(s) => (s.momentum.time, s.momentum.moment_1, s.momentum.moment_2),
            None => (0, grad.zeros_like(), grad.zeros_like()),
        };
        let time = time + 1;
        let (p, m, v) = <burn::backend::Dispatch as FusedAdamOps>::fused_adam(
            tensor.into_dispatch(),
            grad.into_dispatch(),
            m.into_dispatch(),
            v.into_dispatch(),
            lr as f32,
            self.beta_1,
            self.beta_2,
            self.epsilon,
            self.weight_decay,
            time,
        );
        let momentum =
            AdaptiveMomentumState::new(time, Tensor::from_dispatch(m), Tensor::from_dispatch(v));
        (Tensor::from_dispatch(p), Some(AdamState::new(momentum)))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        <Adam as Optimizer>::to_device(state, device)
    }
}
