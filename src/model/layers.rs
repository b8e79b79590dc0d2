//! Layer constructors with PyTorch's argument order, and the tracer behind `summary`.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::Device;

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

/// One row of a model summary.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LayerRow {
    /// Where the layer sits, e.g. `encoder.conv1`.
    pub name: String,
    /// What it is, e.g. `Conv2d(1→16, k3, s2, p1)`.
    pub layer: String,
    /// Output shape, batch first.
    pub output: Vec<usize>,
    /// Trainable parameters.
    pub params: usize,
}

/// Receives each layer's output during a traced forward pass. The untraced pass uses
/// [`NoTrace`], whose `on` is a constant `false`, so tracing costs nothing in training.
pub trait Tracer {
    /// Whether rows are wanted.
    fn on(&self) -> bool;
    /// Records one layer.
    fn row(&mut self, row: LayerRow);
}

/// The tracer that records nothing.
pub struct NoTrace;

impl Tracer for NoTrace {
    #[inline(always)]
    fn on(&self) -> bool {
        false
    }
    fn row(&mut self, _row: LayerRow) {}
}

/// The tracer that collects rows for a summary.
#[derive(Default)]
pub struct Collect(pub Vec<LayerRow>);

impl Tracer for Collect {
    fn on(&self) -> bool {
        true
    }
    fn row(&mut self, row: LayerRow) {
        self.0.push(row);
    }
}

/// A short PyTorch-like description of a layer.
pub trait Describe: Module {
    /// E.g. `Conv2d(1→16, k3, s2, p1)`.
    fn describe(&self) -> String;
}

impl Describe for Conv2d {
    fn describe(&self) -> String {
        let [i, o] = [self.weight.lazy_shape()[1], self.weight.lazy_shape()[0]];
        let pad = match &self.padding {
            PaddingConfig2d::Explicit(t, ..) => format!(", p{t}"),
            PaddingConfig2d::Valid => String::new(),
            PaddingConfig2d::Same => ", same".to_string(),
        };
        format!(
            "Conv2d({i}→{o}, k{}, s{}{pad})",
            self.kernel_size[0], self.stride[0]
        )
    }
}

impl Describe for ConvTranspose2d {
    fn describe(&self) -> String {
        let op = if self.padding_out[0] > 0 {
            format!(", op{}", self.padding_out[0])
        } else {
            String::new()
        };
        format!(
            "ConvTranspose2d({}→{}, k{}, s{}, p{}{op})",
            self.channels[0],
            self.channels[1],
            self.kernel_size[0],
            self.stride[0],
            self.padding[0]
        )
    }
}

impl Describe for Linear {
    fn describe(&self) -> String {
        let s = self.weight.lazy_shape();
        format!("Linear({}→{})", s[0], s[1])
    }
}

/// Runs `layer` and records its row when tracing.
macro_rules! traced {
    ($t:expr, $name:expr, $layer:expr, $x:expr) => {{
        let y = $layer.forward($x);
        if $t.on() {
            $t.row($crate::model::layers::LayerRow {
                name: $name.to_string(),
                layer: $crate::model::layers::Describe::describe(&$layer),
                output: y.dims().to_vec(),
                params: burn::module::Module::num_params(&$layer),
            });
        }
        y
    }};
}

/// Records a parameter-free step (activation, reshape, pooling).
macro_rules! note {
    ($t:expr, $name:expr, $what:expr, $y:expr) => {{
        let y = $y;
        if $t.on() {
            $t.row($crate::model::layers::LayerRow {
                name: $name.to_string(),
                layer: $what.to_string(),
                output: y.dims().to_vec(),
                params: 0,
            });
        }
        y
    }};
}

pub(crate) use note;
pub(crate) use traced;
