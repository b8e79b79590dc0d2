//! Layer constructors with PyTorch's argument order, and the forward pass of the layers with
//! parameters (fused CPU kernels where they apply).

use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

use crate::kernels;

/// `nn.Conv2d(i, o, k, stride=s, padding=p)`.
pub fn conv(i: usize, o: usize, k: usize, s: usize, p: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([i, o], [k, k])
        .with_stride([s, s])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .init(device)
}

/// `nn.ConvTranspose2d(i, o, k, stride=s, padding=p, output_padding=op)`.
pub fn convt(
    i: usize,
    o: usize,
    k: usize,
    s: usize,
    p: usize,
    op: usize,
    device: &Device,
) -> ConvTranspose2d {
    ConvTranspose2dConfig::new([i, o], [k, k])
        .with_stride([s, s])
        .with_padding([p, p])
        .with_padding_out([op, op])
        .init(device)
}

/// `nn.Linear(i, o)` with PyTorch's default initialisation.
pub fn linear(i: usize, o: usize, device: &Device) -> Linear {
    LinearConfig::new(i, o).init(device)
}

/// `nn.Linear(i, o)` then `nn.init.xavier_uniform_(weight)` and `nn.init.zeros_(bias)`.
pub fn linear_xavier(i: usize, o: usize, device: &Device) -> Linear {
    let mut l = LinearConfig::new(i, o)
        .with_initializer(burn::nn::Initializer::XavierUniform { gain: 1.0 })
        .init(device);
    l.bias = Some(burn::module::Param::from_tensor(Tensor::zeros([o], device)));
    l
}

/// A layer's forward pass as the models call it. On the CPU every linear layer and convolution
/// (with the ReLU after it) is one fused operation from [`crate::kernels`]; on a GPU the layer's
/// own `forward` runs, on the device, through burn's kernels (with its fusion and autotuning).
pub trait Apply {
    /// Input tensor.
    type In;
    /// Output tensor.
    type Out;
    /// The layer's output for `x`.
    fn apply(&self, x: Self::In) -> Self::Out;
    /// The layer's output for `x`, followed by ReLU (one fused operation on the CPU).
    fn apply_relu(&self, x: Self::In) -> Self::Out;
}

impl Apply for Conv2d {
    type In = Tensor<4>;
    type Out = Tensor<4>;
    fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        kernels::conv2d(self, x.clone(), false).unwrap_or_else(|| self.forward(x))
    }
    fn apply_relu(&self, x: Tensor<4>) -> Tensor<4> {
        kernels::conv2d(self, x.clone(), true).unwrap_or_else(|| relu(self.forward(x)))
    }
}

impl Apply for ConvTranspose2d {
    type In = Tensor<4>;
    type Out = Tensor<4>;
    fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        kernels::conv_transpose2d(self, x.clone(), false).unwrap_or_else(|| self.forward(x))
    }
    fn apply_relu(&self, x: Tensor<4>) -> Tensor<4> {
        kernels::conv_transpose2d(self, x.clone(), true).unwrap_or_else(|| relu(self.forward(x)))
    }
}

impl Apply for Linear {
    type In = Tensor<2>;
    type Out = Tensor<2>;
    fn apply(&self, x: Tensor<2>) -> Tensor<2> {
        kernels::linear(self, x, false, false)
    }
    fn apply_relu(&self, x: Tensor<2>) -> Tensor<2> {
        kernels::linear(self, x, true, false)
    }
}
