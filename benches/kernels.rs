//! `cargo bench`: the kernels that dominate training (see the profile in BENCHMARKS.md) and
//! whole training steps per preset, on the CPU backend, so that regressions show.
//!
//! Groups:
//! - `step/<preset>`: one training step (forward, loss, backward, Adam) on a random batch of
//!   the preset's default batch size; throughput in images. `step/mlp_b256_mnist`: the same
//!   on 256 real MNIST images (needs `$MNIST_AE_DATA`).
//! - `conv/<layer>`: forward, and forward + backward, of each convolution of `conv64`.
//! - `fused/<layer>`: the same convolutions through mnist-ae's fused kernels (with the ReLU
//!   that follows them in the model): forward without autodiff, and forward + backward.
//! - `linear/<input>_b<n>`: the `mlp` preset's first layer (784→392, ReLU) through the fused
//!   kernel, forward without autodiff and forward + weight gradient, on `n` real MNIST test
//!   images (mostly zeros: the sparse product) and on as many uniform random ones (dense: gemm).
//!   Needs the MNIST files in `$MNIST_AE_DATA` (else the group is skipped with a message).
//! - `batch`: turning 256 MNIST-sized u8 images into a scaled tensor.
//! - `adam/mlp`: one Adam update of the `mlp` preset (gradients precomputed).

use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::module::{conv2d, conv_transpose2d};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};
use burn::tensor::Distribution;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use mnist_ae::config::TrainConfig;
use mnist_ae::data::dataset::Split;
use mnist_ae::data::Scale;
use mnist_ae::model::Preset;
use mnist_ae::train::run::optimizer;
use mnist_ae::train::step::{step, StepAt};

fn device() -> Device {
    Device::flex().autodiff()
}

fn random(shape: [usize; 4], device: &Device) -> Tensor<4> {
    Tensor::random(shape, Distribution::Uniform(0.0, 1.0), device)
}

fn steps(c: &mut Criterion) {
    let device = device();
    let mut group = c.benchmark_group("step");
    for (preset, latent) in [
        (Preset::Conv64, 64),
        (Preset::Conv7, 64),
        (Preset::Linear3, 3),
        (Preset::Mlp, 8),
        (Preset::Cae32, 32),
        (Preset::Vae, 16),
    ] {
        let mut config = TrainConfig::for_preset(preset);
        config.model.latent_dim = latent;
        if preset == Preset::Mlp {
            config.batch_size = 256;
        }
        let b = config.batch_size;
        let x = random([b, 1, 28, 28], &device);
        let x = match preset.activation().scale() {
            Scale::ZeroOne => x,
            Scale::MinusOneOne => x * 2.0 - 1.0,
        };
        // mlp also on real MNIST images: mostly zeros, which its first layer exploits.
        let mnist = (preset == Preset::Mlp)
            .then(|| mnist_test("step/mlp_b256_mnist"))
            .flatten()
            .map(|t| t.batch(&(0..b).collect::<Vec<_>>(), Scale::ZeroOne, &device));
        let mut model = Some(config.model.init(&device).unwrap());
        let mut optim = optimizer(&config);
        let at = StepAt {
            epoch: 0,
            batch: 0,
            lr: 1e-4,
        };
        group.throughput(Throughput::Elements(b as u64));
        let inputs = [(String::new(), Some(x)), ("_mnist".to_string(), mnist)];
        for (suffix, x) in inputs {
            let Some(x) = x else { continue };
            group.bench_function(format!("{}_b{b}{suffix}", preset.name()), |bench| {
                bench.iter(|| {
                    let m = model.take().expect("model");
                    let (m, loss) = step(m, &mut optim, &config, x.clone(), x.clone(), at, &device);
                    model = Some(m);
                    loss.value()
                })
            });
        }
    }
    group.finish();
}

/// One convolution of `conv64`.
struct Layer {
    name: &'static str,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
    side: usize,
    transposed: bool,
}

const fn layer(name: &'static str, c: [usize; 6], transposed: bool) -> Layer {
    Layer {
        name,
        cin: c[0],
        cout: c[1],
        k: c[2],
        stride: c[3],
        pad: c[4],
        side: c[5],
        transposed,
    }
}

/// The seven convolutions of `conv64`: `[in, out, kernel, stride, padding, input side]`.
const CONV64: [Layer; 7] = [
    layer("enc1_1x16_28", [1, 16, 3, 2, 1, 28], false),
    layer("enc2_16x32_14", [16, 32, 3, 2, 1, 14], false),
    layer("enc3_32x64_7", [32, 64, 3, 2, 1, 7], false),
    layer("dec1_64x32_1", [64, 32, 4, 1, 0, 1], true),
    layer("dec2_32x16_4", [32, 16, 3, 2, 1, 4], true),
    layer("dec3_16x8_7", [16, 8, 4, 2, 1, 7], true),
    layer("dec4_8x1_14", [8, 1, 4, 2, 1, 14], true),
];

fn convs(c: &mut Criterion) {
    let device = device();
    let b = 32;
    let mut group = c.benchmark_group("conv");
    group.throughput(Throughput::Elements(b as u64));
    for l in CONV64 {
        let (cin, cout, k, s, p, side) = (l.cin, l.cout, l.k, l.stride, l.pad, l.side);
        let (name, transposed) = (l.name, l.transposed);
        let x = random([b, cin, side, side], &device).require_grad();
        let w_shape = if transposed {
            [cin, cout, k, k]
        } else {
            [cout, cin, k, k]
        };
        let w = random(w_shape, &device).require_grad();
        let bias: Tensor<1> = Tensor::zeros([cout], &device).require_grad();
        let run = |x: Tensor<4>, w: Tensor<4>, bias: Tensor<1>| {
            if transposed {
                conv_transpose2d(
                    x,
                    w,
                    Some(bias),
                    ConvTransposeOptions::new([s, s], [p, p], [0, 0], [1, 1], 1),
                )
            } else {
                conv2d(
                    x,
                    w,
                    Some(bias),
                    ConvOptions::new([s, s], [p, p], [1, 1], 1),
                )
            }
        };
        group.bench_function(format!("{name}/forward"), |bench| {
            bench.iter(|| run(x.clone(), w.clone(), bias.clone()).into_data())
        });
        group.bench_function(format!("{name}/forward_backward"), |bench| {
            bench.iter(|| run(x.clone(), w.clone(), bias.clone()).sum().backward())
        });
    }
    group.finish();
}

fn fused_convs(c: &mut Criterion) {
    use mnist_ae::kernels;
    use mnist_ae::model::layers::{conv, convt};
    type Run = Box<dyn Fn(Tensor<4>) -> Tensor<4>>;
    let device = device();
    let b = 32;
    let mut group = c.benchmark_group("fused");
    group.throughput(Throughput::Elements(b as u64));
    for l in CONV64 {
        let (cin, cout, k, s, p, side) = (l.cin, l.cout, l.k, l.stride, l.pad, l.side);
        let x = random([b, cin, side, side], &device).require_grad();
        // Training (autodiff) and inference (plain) forms of the same layer.
        let (train, infer): (Run, Run) = if l.transposed {
            let layer = convt(cin, cout, k, s, p, 0, &device);
            let plain = layer.valid();
            (
                Box::new(move |x| kernels::conv_transpose2d(&layer, x, true).expect("fused")),
                Box::new(move |x| kernels::conv_transpose2d(&plain, x, true).expect("fused")),
            )
        } else {
            let layer = conv(cin, cout, k, s, p, &device);
            let plain = layer.valid();
            (
                Box::new(move |x| kernels::conv2d(&layer, x, true).expect("fused")),
                Box::new(move |x| kernels::conv2d(&plain, x, true).expect("fused")),
            )
        };
        let x_plain = x.clone().inner();
        group.bench_function(format!("{}/forward", l.name), |bench| {
            bench.iter(|| infer(x_plain.clone()).into_data())
        });
        group.bench_function(format!("{}/forward_backward", l.name), |bench| {
            bench.iter(|| train(x.clone()).sum().backward())
        });
    }
    group.finish();
}

/// The MNIST test images from `$MNIST_AE_DATA`, or `None` (with a message naming `what` is
/// skipped) when they cannot be read.
fn mnist_test(what: &str) -> Option<Split> {
    let Some(dir) = std::env::var_os("MNIST_AE_DATA").map(std::path::PathBuf::from) else {
        eprintln!("{what}: skipped, MNIST_AE_DATA is not set");
        return None;
    };
    match mnist_ae::data::dataset::load_split(
        &dir.join("t10k-images-idx3-ubyte.gz"),
        &dir.join("t10k-labels-idx1-ubyte.gz"),
    ) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("{what}: skipped, {e}");
            None
        }
    }
}

fn first_layer(c: &mut Criterion) {
    use mnist_ae::kernels;
    let Some(test) = mnist_test("linear/*") else {
        return;
    };
    let device = device();
    let layer = mnist_ae::model::layers::linear(784, 392, &device);
    let plain = layer.valid();
    let mut group = c.benchmark_group("linear");
    for n in [128, 256] {
        let idx: Vec<usize> = (0..n).collect();
        let mnist = test.batch(&idx, Scale::ZeroOne, &device).reshape([n, 784]);
        let uniform = Tensor::<2>::random([n, 784], Distribution::Uniform(0.0, 1.0), &device);
        group.throughput(Throughput::Elements(n as u64));
        for (name, x) in [("mnist", mnist), ("uniform", uniform)] {
            let x_plain = x.clone().inner();
            group.bench_function(format!("{name}_b{n}/forward"), |bench| {
                bench.iter(|| kernels::linear(&plain, x_plain.clone(), true, false).into_data())
            });
            group.bench_function(format!("{name}_b{n}/forward_backward"), |bench| {
                bench.iter(|| {
                    kernels::linear(&layer, x.clone(), true, false)
                        .sum()
                        .backward()
                })
            });
        }
    }
    group.finish();
}

fn batching(c: &mut Criterion) {
    let device = Device::flex();
    let n = 1024;
    let split = Split {
        images: (0..n * 784).map(|i| (i * 31 % 256) as u8).collect(),
        labels: vec![0; n],
    };
    let idx: Vec<usize> = (0..256).map(|i| (i * 7) % n).collect();
    let mut group = c.benchmark_group("batch");
    group.throughput(Throughput::Elements(idx.len() as u64));
    group.bench_function("u8_to_tensor_256", |bench| {
        bench.iter(|| split.batch(&idx, Scale::ZeroOne, &device).into_data())
    });
    group.finish();
}

fn adam(c: &mut Criterion) {
    let device = device();
    let mut config = TrainConfig::for_preset(Preset::Mlp);
    config.model.latent_dim = 8;
    let model = std::cell::RefCell::new(Some(config.model.init(&device).unwrap()));
    let mut optim = optimizer(&config);
    let x = random([64, 1, 28, 28], &device);
    c.bench_function("adam/mlp", |bench| {
        bench.iter_batched(
            || {
                let m = model.borrow();
                let m = m.as_ref().expect("model");
                let loss = (m.forward(x.clone()) - x.clone()).square().mean();
                GradientsParams::from_grads(loss.backward(), m)
            },
            |grads| {
                let m = model.borrow_mut().take().expect("model");
                *model.borrow_mut() = Some(optim.step(1e-4, m, vec![grads]));
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(
    benches,
    steps,
    convs,
    fused_convs,
    first_layer,
    batching,
    adam
);
criterion_main!(benches);
