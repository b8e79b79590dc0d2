//! Shapes through a layer list: what each [`Layer`] gives for its input, what it costs in
//! parameters, and the checks that make an encoder and decoder a model: images in, a flat code
//! in the middle, images of the input's shape out. Errors name the half, the layer (its number
//! from 1 and its text) and the shapes, with a hint where one is known.

use std::fmt;

use super::spec::Layer;
use crate::data::SIDE;
use crate::error::{Error, Result};

/// A tensor's shape without its batch dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Channels × height × width.
    Image {
        /// Channels.
        c: usize,
        /// Height.
        h: usize,
        /// Width.
        w: usize,
    },
    /// A flat vector.
    Flat(usize),
}

/// The model's input and output: one 28×28 channel.
pub const IMAGE: Shape = Shape::Image {
    c: 1,
    h: SIDE,
    w: SIDE,
};

impl Shape {
    /// Values per example (saturating: sizes are checked against a bound right after).
    pub fn numel(self) -> usize {
        match self {
            Shape::Image { c, h, w } => c.saturating_mul(h).saturating_mul(w),
            Shape::Flat(n) => n,
        }
    }

    /// Channels: an image's, or a flat vector's length (what batch norm normalises over).
    pub fn channels(self) -> usize {
        match self {
            Shape::Image { c, .. } => c,
            Shape::Flat(n) => n,
        }
    }

    /// The shape with the batch size in front, as burn reports it.
    pub fn batched(self, b: usize) -> Vec<usize> {
        match self {
            Shape::Image { c, h, w } => vec![b, c, h, w],
            Shape::Flat(n) => vec![b, n],
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shape::Image { c, h, w } => write!(f, "{c}×{h}×{w}"),
            Shape::Flat(n) => write!(f, "{n}"),
        }
    }
}

/// `(size + 2·pad − k) / stride + 1`, the output size of a convolution or pooling window, if
/// the window fits.
fn windows(size: usize, k: usize, s: usize, pad: usize) -> Option<usize> {
    (size + 2 * pad).checked_sub(k).map(|r| r / s + 1)
}

impl Layer {
    /// The layer's output for an input of shape `x`, or why it cannot take it.
    pub fn output(&self, x: Shape) -> std::result::Result<Shape, String> {
        let image = |what: &str| match x {
            Shape::Image { c, h, w } => Ok((c, h, w)),
            Shape::Flat(n) => Err(format!(
                "{what} needs an image input, got a flat {n}; add `reshape(c,h,w)` before it"
            )),
        };
        let big = |n: usize| {
            if n > 1 << 28 {
                Err(format!("gives {n} values per image, too many"))
            } else {
                Ok(())
            }
        };
        let out = match *self {
            Layer::Linear { out } => match x {
                Shape::Flat(_) => Shape::Flat(out),
                Shape::Image { .. } => {
                    return Err(format!(
                        "needs a flat input, got {x}; add `flatten` before it"
                    ))
                }
            },
            Layer::Conv { out, k, s, p } => {
                let (_, h, w) = image("a convolution")?;
                match (windows(h, k, s, p), windows(w, k, s, p)) {
                    (Some(oh), Some(ow)) => Shape::Image {
                        c: out,
                        h: oh,
                        w: ow,
                    },
                    _ => {
                        return Err(format!(
                            "a {k}×{k} kernel does not fit the {x} input with padding {p}"
                        ))
                    }
                }
            }
            Layer::ConvT { out, k, s, p, op } => {
                let (_, h, w) = image("a transposed convolution")?;
                if op >= s {
                    return Err(format!(
                        "output padding {op} must be smaller than the stride {s}"
                    ));
                }
                let size = |n: usize| ((n - 1) * s + k + op).checked_sub(2 * p).filter(|&v| v > 0);
                match (size(h), size(w)) {
                    (Some(oh), Some(ow)) => Shape::Image {
                        c: out,
                        h: oh,
                        w: ow,
                    },
                    _ => return Err(format!("padding {p} leaves nothing of the {x} input")),
                }
            }
            Layer::MaxPool { k, s } | Layer::AvgPool { k, s } => {
                let (c, h, w) = image("pooling")?;
                match (windows(h, k, s, 0), windows(w, k, s, 0)) {
                    (Some(oh), Some(ow)) => Shape::Image { c, h: oh, w: ow },
                    _ => return Err(format!("a {k}×{k} window does not fit the {x} input")),
                }
            }
            Layer::AdaptiveAvgPool { h, w } => {
                let (c, ih, iw) = image("adaptive pooling")?;
                if h > ih || w > iw {
                    return Err(format!("cannot pool the {x} input up to {h}×{w}"));
                }
                Shape::Image { c, h, w }
            }
            Layer::Upsample { f } => {
                let (c, h, w) = image("upsampling")?;
                Shape::Image {
                    c,
                    h: h.saturating_mul(f),
                    w: w.saturating_mul(f),
                }
            }
            Layer::Flatten => Shape::Flat(x.numel()),
            Layer::Reshape { c, h, w } => {
                let need = Shape::Image { c, h, w }.numel();
                if x.numel() != need {
                    return Err(format!("needs {need} values, got {x} ({})", x.numel()));
                }
                Shape::Image { c, h, w }
            }
            _ => x,
        };
        big(out.numel())?;
        Ok(out)
    }

    /// Trainable parameters for an input of shape `x` (PyTorch's count: batch norm's running
    /// statistics are buffers, not parameters).
    pub fn params(&self, x: Shape) -> usize {
        let channels = x.channels();
        match *self {
            Layer::Linear { out } => x.numel().saturating_mul(out).saturating_add(out),
            Layer::Conv { out, k, .. } | Layer::ConvT { out, k, .. } => [out, k, k]
                .iter()
                .fold(channels, |a, &b| a.saturating_mul(b))
                .saturating_add(out),
            Layer::BatchNorm => 2 * channels,
            _ => 0,
        }
    }
}

/// Every layer of a half with its input and output shapes.
pub type Traced = Vec<(Layer, Shape, Shape)>;

/// Runs `layers` from `input`, naming `half` in errors.
pub fn trace(half: &str, layers: &[Layer], input: Shape) -> Result<Traced> {
    let mut x = input;
    let mut out = Vec::with_capacity(layers.len());
    for (i, l) in layers.iter().enumerate() {
        let y = l
            .output(x)
            .map_err(|e| Error::config(half, format!("layer {} `{l}`: {e}", i + 1)))?;
        out.push((*l, x, y));
        x = y;
    }
    Ok(out)
}

/// Checks an encoder: images in, a flat code out (its size is the code size, returned). A
/// variational encoder must end with `linear(L)`, which becomes two heads (mean and
/// log-variance).
pub fn check_encoder(layers: &[Layer], variational: bool) -> Result<(Traced, usize)> {
    let t = trace("encoder", layers, IMAGE)?;
    let last = t.last().map(|r| r.2).unwrap_or(IMAGE);
    let latent = match last {
        Shape::Flat(n) => n,
        Shape::Image { .. } => {
            return Err(Error::config(
                "encoder",
                format!("ends at {last}, but a code is flat; add `flatten` (and maybe `linear(L)`) at its end"),
            ))
        }
    };
    if variational && !matches!(layers.last(), Some(Layer::Linear { .. })) {
        return Err(Error::config(
            "encoder",
            "a variational encoder must end with `linear(L)`: it is built twice, for the mean and the log-variance of the code",
        ));
    }
    Ok((t, latent))
}

/// Checks a decoder: a flat code of `latent` values in, one 28×28 channel out.
pub fn check_decoder(layers: &[Layer], latent: usize) -> Result<Traced> {
    let t = trace("decoder", layers, Shape::Flat(latent))?;
    let last = t.last().map(|r| r.2).unwrap_or(Shape::Flat(latent));
    if last == IMAGE {
        return Ok(t);
    }
    // Blame the last layer that changed the shape, with a hint where one is plain.
    let (i, layer) = t
        .iter()
        .enumerate()
        .rev()
        .find(|(_, r)| !r.0.is_elementwise())
        .map(|(i, r)| (i, r.0))
        .unwrap_or((0, t[0].0));
    let hint = match (layer, last) {
        (Layer::ConvT { s, op, .. }, Shape::Image { c: 1, h, w }) if h == w && h < SIDE => {
            let need = op + SIDE - h;
            if need < s {
                format!(" (try op{need})")
            } else {
                String::new()
            }
        }
        (_, Shape::Flat(n)) if n == SIDE * SIDE => " (end with `reshape(1,28,28)`)".into(),
        (_, Shape::Image { c, h, w }) if c != 1 && h == SIDE && w == SIDE => {
            " (its last layer must give 1 channel)".into()
        }
        _ => String::new(),
    };
    Err(Error::config(
        "decoder",
        format!(
            "layer {} `{layer}`: gives {last}, the model must end at {IMAGE}{hint}",
            i + 1
        ),
    ))
}

/// The decoder that mirrors `encoder`: its shape-changing layers inverted in reverse order
/// (convolution → transposed convolution with the output padding that restores the size,
/// linear → linear back, pooling → upsampling, flatten ↔ reshape), each followed by what
/// followed the layer before it in the encoder (its activation, batch norm, dropout), so the
/// decoder ends on the bare output layer.
pub fn mirror(encoder: &[Layer]) -> Result<Vec<Layer>> {
    let t = trace("encoder", encoder, IMAGE)?;
    // Blocks: a shape-changing layer (with its shapes) and the element-wise layers after it.
    let mut blocks: Vec<((Layer, Shape, Shape), Vec<Layer>)> = Vec::new();
    for &(l, x, y) in &t {
        if l.is_elementwise() {
            if let Some(b) = blocks.last_mut() {
                b.1.push(l);
            }
        } else {
            blocks.push(((l, x, y), Vec::new()));
        }
    }
    let mut out = Vec::new();
    for (i, &((l, x, y), _)) in blocks.iter().enumerate().rev() {
        let cannot = |why: &str| {
            Error::config(
                "decoder",
                format!("mirror: cannot invert encoder layer `{l}` ({why}); write the decoder out"),
            )
        };
        let inverse = match (l, x, y) {
            (Layer::Linear { .. }, Shape::Flat(n), _) => Layer::Linear { out: n },
            (Layer::Conv { k, s, p, .. }, Shape::Image { c, h, w }, Shape::Image { h: oh, .. }) => {
                if h != w {
                    return Err(cannot("its input is not square"));
                }
                let base = ((oh - 1) * s + k).saturating_sub(2 * p);
                match h.checked_sub(base).filter(|&op| op < s) {
                    Some(op) => Layer::ConvT {
                        out: c,
                        k,
                        s,
                        p,
                        op,
                    },
                    None => return Err(cannot("no output padding restores its input size")),
                }
            }
            (
                Layer::MaxPool { .. } | Layer::AvgPool { .. } | Layer::AdaptiveAvgPool { .. },
                Shape::Image { h, w, .. },
                Shape::Image { h: oh, w: ow, .. },
            ) => {
                if h % oh != 0 || w % ow != 0 || h / oh != w / ow {
                    return Err(cannot("its input is not a whole multiple of its output"));
                }
                Layer::Upsample { f: h / oh }
            }
            (Layer::Flatten, Shape::Image { c, h, w }, _) => Layer::Reshape { c, h, w },
            (Layer::Flatten, Shape::Flat(_), _) => continue,
            (Layer::Reshape { .. }, Shape::Flat(_), _) => Layer::Flatten,
            (Layer::Upsample { f }, ..) => Layer::AvgPool { k: f, s: f },
            (Layer::ConvT { .. }, ..) => return Err(cannot("it is a transposed convolution")),
            _ => return Err(cannot("no inverse")),
        };
        out.push(inverse);
        // The output layer stays bare: the model's output activation follows it.
        if i > 0 {
            out.extend(blocks[i - 1].1.iter().copied());
        }
    }
    Ok(out)
}
