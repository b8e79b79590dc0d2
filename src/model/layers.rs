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
/// (with the ReLU after it) is one fused operation from [`crate::kernels`]. Elsewhere (GPU
/// backends), two convolution shapes in our presets are a
/// plain matrix product, and burn's CPU convolution (im2col, then a matrix product, plus
/// layout copies, and the same again in the backward pass) is several times slower for them
/// than one `matmul` (measured in BENCHMARKS.md):
/// - a convolution whose kernel covers its whole unpadded input (conv7's `Conv(32→64, k7)` on
///   7×7) is `Linear(in·k·k → out)`;
/// - a transposed convolution of a 1×1 input without padding (conv64's `ConvT(64→32, k4)`,
///   conv7's `ConvT(64→32, k7)`) is `Linear(in → out·k·k)`.
///
/// Both use the layer's own weight tensor, reshaped, so checkpoints and the PyTorch export are
/// unchanged; any other shape goes through the layer's `forward`.
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
        kernels::conv2d(self, x.clone(), false).unwrap_or_else(|| self.composed(x))
    }
    fn apply_relu(&self, x: Tensor<4>) -> Tensor<4> {
        kernels::conv2d(self, x.clone(), true).unwrap_or_else(|| relu(self.composed(x)))
    }
}

/// A convolution from burn's operations, with the matrix-product forms above.
trait Composed {
    fn composed(&self, x: Tensor<4>) -> Tensor<4>;
}

impl Composed for Conv2d {
    fn composed(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let unpadded = matches!(
            self.padding,
            PaddingConfig2d::Valid | PaddingConfig2d::Explicit(0, 0, 0, 0)
        );
        if c == 1 && self.dilation == [1, 1] && self.groups == 1 && !x.is_require_grad() {
            if let PaddingConfig2d::Explicit(p, l, b2, r) = self.padding {
                if p == l && p == b2 && p == r {
                    return self.first_layer(x, p);
                }
            }
        }
        if !(unpadded && self.dilation == [1, 1] && self.groups == 1 && [h, w] == self.kernel_size)
        {
            return self.forward(x);
        }
        let weight = self.weight.val(); // [out, in, k, k]
        let o = weight.dims()[0];
        let y = x
            .reshape([b, c * h * w])
            .matmul(weight.reshape([o, c * h * w]).transpose());
        let y = match &self.bias {
            Some(bias) => y + bias.val().unsqueeze::<2>(),
            None => y,
        };
        y.reshape([b, o, 1, 1])
    }
}

/// The first convolution of a model sees a one-channel input that needs no gradient. burn's
/// convolution backward computes the weight gradient as another convolution (batch and
/// channels swapped, single-threaded for one input channel); here the input's patches are
/// gathered once by hand (im2col: a few lines for one channel, and burn has no unfold kernel
/// of its own, only one built on convolution), the layer is one matrix product with the
/// reshaped weight, and its weight gradient is one matrix product in the backward pass.
trait FirstLayer {
    fn first_layer(&self, x: Tensor<4>, pad: usize) -> Tensor<4>;
}

impl FirstLayer for Conv2d {
    fn first_layer(&self, x: Tensor<4>, pad: usize) -> Tensor<4> {
        let [b, _, h, w] = x.dims();
        let [kh, kw] = self.kernel_size;
        let [sh, sw] = self.stride;
        let (oh, ow) = ((h + 2 * pad - kh) / sh + 1, (w + 2 * pad - kw) / sw + 1);
        let device = x.device();
        let pixels: Vec<f32> = x.into_data().iter::<f32>().collect();
        let mut patches = vec![0.0f32; b * oh * ow * kh * kw];
        for (img, out) in pixels
            .chunks_exact(h * w)
            .zip(patches.chunks_exact_mut(oh * ow * kh * kw))
        {
            for (pos, row) in out.chunks_exact_mut(kh * kw).enumerate() {
                let (oy, ox) = (pos / ow, pos % ow);
                for ky in 0..kh {
                    let Some(y) = (oy * sh + ky).checked_sub(pad).filter(|&y| y < h) else {
                        continue;
                    };
                    for kx in 0..kw {
                        if let Some(xx) = (ox * sw + kx).checked_sub(pad).filter(|&v| v < w) {
                            row[ky * kw + kx] = img[y * w + xx];
                        }
                    }
                }
            }
        }
        let patches = Tensor::<2>::from_data(
            burn::tensor::TensorData::new(patches, [b * oh * ow, kh * kw]),
            &device,
        );
        let weight = self.weight.val(); // [out, 1, k, k]
        let o = weight.dims()[0];
        let y = patches.matmul(weight.reshape([o, kh * kw]).transpose());
        let y = match &self.bias {
            Some(bias) => y + bias.val().unsqueeze::<2>(),
            None => y,
        };
        y.reshape([b, oh * ow, o])
            .swap_dims(1, 2)
            .reshape([b, o, oh, ow])
    }
}

impl Apply for ConvTranspose2d {
    type In = Tensor<4>;
    type Out = Tensor<4>;
    fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        kernels::conv_transpose2d(self, x.clone(), false).unwrap_or_else(|| self.composed(x))
    }
    fn apply_relu(&self, x: Tensor<4>) -> Tensor<4> {
        kernels::conv_transpose2d(self, x.clone(), true).unwrap_or_else(|| relu(self.composed(x)))
    }
}

impl Composed for ConvTranspose2d {
    fn composed(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        if !([h, w] == [1, 1]
            && self.padding == [0, 0]
            && self.padding_out == [0, 0]
            && self.dilation == [1, 1]
            && self.groups == 1)
        {
            return self.forward(x);
        }
        let weight = self.weight.val(); // [in, out, k, k]
        let [_, o, kh, kw] = weight.dims();
        let y = x
            .reshape([b, c])
            .matmul(weight.reshape([c, o * kh * kw]))
            .reshape([b, o, kh, kw]);
        match &self.bias {
            Some(bias) => y + bias.val().reshape([1, o, 1, 1]),
            None => y,
        }
    }
}

impl Apply for Linear {
    type In = Tensor<2>;
    type Out = Tensor<2>;
    fn apply(&self, x: Tensor<2>) -> Tensor<2> {
        kernels::linear(self, x, false)
    }
    fn apply_relu(&self, x: Tensor<2>) -> Tensor<2> {
        kernels::linear(self, x, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    fn max_diff(a: Tensor<4>, b: Tensor<4>) -> f32 {
        assert_eq!(a.dims(), b.dims());
        (a - b).abs().max().into_scalar::<f32>()
    }

    /// The matmul forms give the convolution's own output, for the shapes that take them.
    #[test]
    fn matmul_forms_equal_the_convolutions() {
        let _rng = crate::rng_lock();
        let device = Device::flex();
        device.seed(3);
        let x = Tensor::random([5, 32, 7, 7], Distribution::Normal(0.0, 1.0), &device);
        let c = conv(32, 64, 7, 1, 0, &device);
        let d = max_diff(c.composed(x.clone()), c.forward(x));
        assert!(d < 1e-4, "conv k7 on 7x7: {d}");

        let z = Tensor::random([5, 64, 1, 1], Distribution::Normal(0.0, 1.0), &device);
        for (k, s) in [(4, 1), (7, 1), (3, 2)] {
            let t = convt(64, 32, k, s, 0, 0, &device);
            let d = max_diff(t.composed(z.clone()), t.forward(z.clone()));
            assert!(d < 1e-4, "convT k{k} s{s} from 1x1: {d}");
        }
    }

    /// The hand-gathered first layer gives the convolution's output, with and without padding
    /// and stride.
    #[test]
    fn first_layer_equals_the_convolution() {
        let _rng = crate::rng_lock();
        let device = Device::flex();
        device.seed(5);
        let x = Tensor::random([3, 1, 28, 28], Distribution::Uniform(0.0, 1.0), &device);
        for (o, k, s, p) in [(16, 3, 2, 1), (32, 3, 2, 1), (8, 4, 1, 0), (4, 5, 3, 2)] {
            let c = conv(1, o, k, s, p, &device);
            let d = max_diff(c.composed(x.clone()), c.forward(x.clone()));
            assert!(d < 1e-5, "conv(1->{o}, k{k}, s{s}, p{p}): {d}");
        }
    }

    /// Other shapes take the layer's own forward pass (off the CPU; there the fused kernels
    /// run, tested in `kernels`).
    #[test]
    fn other_shapes_use_forward() {
        let _rng = crate::rng_lock();
        let device = Device::flex();
        device.seed(4);
        let x = Tensor::random([2, 16, 14, 14], Distribution::Normal(0.0, 1.0), &device);
        let c = conv(16, 32, 3, 2, 1, &device);
        assert_eq!(max_diff(c.composed(x.clone()), c.forward(x)), 0.0);
        let y = Tensor::random([2, 32, 4, 4], Distribution::Normal(0.0, 1.0), &device);
        let t = convt(32, 16, 3, 2, 1, 0, &device);
        assert_eq!(max_diff(t.composed(y.clone()), t.forward(y)), 0.0);
    }
}
