//! Reading the layer-list grammar (see [`super::spec`]): a list split into layers, each layer
//! parsed with its positional and named arguments, errors naming the layer and what is wrong.

use super::spec::Layer;
use crate::error::{Error, Result};

/// Splits a list into layer texts: spaces separate layers, except inside parentheses.
fn split(text: &str) -> std::result::Result<Vec<String>, String> {
    let (mut out, mut cur, mut depth) = (Vec::new(), String::new(), 0i32);
    for ch in text.chars() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ => {}
        }
        if depth < 0 {
            return Err(format!("unbalanced `)` after `{cur}`"));
        }
        if ch.is_whitespace() && depth == 0 {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else if !ch.is_whitespace() {
            cur.push(ch);
        }
    }
    if depth != 0 {
        return Err(format!("unclosed `(` in `{cur}`"));
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

/// The arguments of one layer: positional values and `prefix`-number pairs.
struct Args<'a> {
    usage: &'static str,
    positional: Vec<&'a str>,
    named: Vec<(&'static str, &'a str)>,
}

impl<'a> Args<'a> {
    /// Splits `inner` (the text between the parentheses) given the named prefixes the layer
    /// takes, longest first (`op` before `p`).
    fn new(
        inner: &'a str,
        prefixes: &[&'static str],
        usage: &'static str,
    ) -> std::result::Result<Self, String> {
        let mut a = Args {
            usage,
            positional: Vec::new(),
            named: Vec::new(),
        };
        if inner.trim().is_empty() {
            return Ok(a);
        }
        for raw in inner.split(',') {
            let v = raw.trim();
            let named = prefixes.iter().find(|p| {
                v.strip_prefix(**p)
                    .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
            });
            match named {
                Some(p) if a.named.iter().any(|(q, _)| q == p) => {
                    return Err(format!("`{p}` given twice ({usage})"))
                }
                Some(p) => a.named.push((p, &v[p.len()..])),
                None if !a.named.is_empty() => {
                    return Err(format!("`{v}` after a named argument ({usage})"))
                }
                None => a.positional.push(v),
            }
        }
        Ok(a)
    }

    fn count(&self, min: usize, max: usize) -> std::result::Result<(), String> {
        let n = self.positional.len();
        if n < min || n > max {
            return Err(format!(
                "takes {} positional argument{}, got {n} ({})",
                if min == max {
                    min.to_string()
                } else {
                    format!("{min} to {max}")
                },
                if max == 1 { "" } else { "s" },
                self.usage
            ));
        }
        Ok(())
    }

    fn whole(&self, what: &str, v: &str, min: usize) -> std::result::Result<usize, String> {
        let n: usize = v
            .parse()
            .map_err(|_| format!("{what} `{v}` is not a whole number ({})", self.usage))?;
        if n < min || n > 65_536 {
            return Err(format!(
                "{what} {n} is out of range ({min}..=65536) ({})",
                self.usage
            ));
        }
        Ok(n)
    }

    fn pos(&self, i: usize, what: &str, min: usize) -> std::result::Result<usize, String> {
        self.whole(what, self.positional[i], min)
    }

    fn opt_pos(
        &self,
        i: usize,
        what: &str,
        min: usize,
    ) -> std::result::Result<Option<usize>, String> {
        self.positional
            .get(i)
            .map(|v| self.whole(what, v, min))
            .transpose()
    }

    fn named(
        &self,
        p: &str,
        what: &str,
        min: usize,
        default: usize,
    ) -> std::result::Result<usize, String> {
        match self.named.iter().find(|(q, _)| *q == p) {
            Some((_, v)) => self.whole(what, v, min),
            None => Ok(default),
        }
    }

    fn real(&self, i: usize, what: &str, default: f64) -> std::result::Result<f64, String> {
        match self.positional.get(i) {
            None => Ok(default),
            Some(v) => v
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| format!("{what} `{v}` is not a number ({})", self.usage)),
        }
    }

    fn none(&self) -> std::result::Result<(), String> {
        if self.positional.is_empty() && self.named.is_empty() {
            Ok(())
        } else {
            Err(format!("takes no arguments ({})", self.usage))
        }
    }
}

/// Parses one layer's text.
pub fn parse_layer(text: &str) -> std::result::Result<Layer, String> {
    let (name, inner) = match text.find('(') {
        Some(i) if text.ends_with(')') => (&text[..i], &text[i + 1..text.len() - 1]),
        Some(_) => return Err("`(` without a closing `)` at its end".into()),
        None => (text, ""),
    };
    let a = |prefixes: &[&'static str], usage| Args::new(inner, prefixes, usage);
    let lower = name.to_ascii_lowercase();
    let layer = match lower.as_str() {
        "linear" => {
            let a = a(&[], "linear(out)")?;
            a.count(1, 1)?;
            Layer::Linear {
                out: a.pos(0, "out", 1)?,
            }
        }
        "conv" => {
            let a = a(&["s", "p"], "conv(out,k,sS,pP)")?;
            a.count(2, 2)?;
            Layer::Conv {
                out: a.pos(0, "out", 1)?,
                k: a.pos(1, "k", 1)?,
                s: a.named("s", "stride", 1, 1)?,
                p: a.named("p", "padding", 0, 0)?,
            }
        }
        "convt" => {
            let a = a(&["op", "s", "p"], "convt(out,k,sS,pP,opO)")?;
            a.count(2, 2)?;
            Layer::ConvT {
                out: a.pos(0, "out", 1)?,
                k: a.pos(1, "k", 1)?,
                s: a.named("s", "stride", 1, 1)?,
                p: a.named("p", "padding", 0, 0)?,
                op: a.named("op", "output padding", 0, 0)?,
            }
        }
        "maxpool" | "avgpool" => {
            let usage = if lower == "maxpool" {
                "maxpool(k[,s])"
            } else {
                "avgpool(k[,s])"
            };
            let a = a(&["s"], usage)?;
            a.count(1, 2)?;
            let k = a.pos(0, "k", 1)?;
            let s = match a.opt_pos(1, "stride", 1)? {
                Some(s) => s,
                None => a.named("s", "stride", 1, k)?,
            };
            if lower == "maxpool" {
                Layer::MaxPool { k, s }
            } else {
                Layer::AvgPool { k, s }
            }
        }
        "adaptive_avgpool" => {
            let a = a(&[], "adaptive_avgpool(h,w)")?;
            a.count(2, 2)?;
            Layer::AdaptiveAvgPool {
                h: a.pos(0, "h", 1)?,
                w: a.pos(1, "w", 1)?,
            }
        }
        "upsample" => {
            let a = a(&[], "upsample(f)")?;
            a.count(1, 1)?;
            Layer::Upsample {
                f: a.pos(0, "factor", 1)?,
            }
        }
        "bn" | "batchnorm" => {
            a(&[], "bn")?.none()?;
            Layer::BatchNorm
        }
        "dropout" => {
            let a = a(&[], "dropout(p)")?;
            a.count(1, 1)?;
            let p = a.real(0, "p", 0.0)?;
            if !(0.0..1.0).contains(&p) {
                return Err(format!("p {p} is not in [0, 1) (dropout(p))"));
            }
            Layer::Dropout { p }
        }
        "relu" => {
            a(&[], "relu")?.none()?;
            Layer::Relu
        }
        "leaky_relu" => {
            let a = a(&[], "leaky_relu(a)")?;
            a.count(0, 1)?;
            // PyTorch's default negative slope.
            Layer::LeakyRelu {
                a: a.real(0, "a", 0.01)?,
            }
        }
        "gelu" => {
            a(&[], "gelu")?.none()?;
            Layer::Gelu
        }
        "tanh" => {
            a(&[], "tanh")?.none()?;
            Layer::Tanh
        }
        "sigmoid" => {
            a(&[], "sigmoid")?.none()?;
            Layer::Sigmoid
        }
        "flatten" => {
            a(&[], "flatten")?.none()?;
            Layer::Flatten
        }
        "reshape" | "unflatten" => {
            let a = a(&[], "reshape(c,h,w)")?;
            a.count(3, 3)?;
            Layer::Reshape {
                c: a.pos(0, "c", 1)?,
                h: a.pos(1, "h", 1)?,
                w: a.pos(2, "w", 1)?,
            }
        }
        other => {
            return Err(format!(
                "unknown layer `{other}` (linear, conv, convt, maxpool, avgpool, adaptive_avgpool, \
                 upsample, bn, dropout, relu, leaky_relu, gelu, tanh, sigmoid, flatten, reshape)"
            ))
        }
    };
    Ok(layer)
}

/// Parses a layer list; `half` ("encoder" or "decoder") names it in errors, with the layer's
/// number (from 1) and text.
pub fn parse_layers(half: &str, text: &str) -> Result<Vec<Layer>> {
    let parts = split(text).map_err(|e| Error::config(half, e))?;
    if parts.is_empty() {
        return Err(Error::config(half, "no layers given"));
    }
    parts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            parse_layer(t).map_err(|e| Error::config(half, format!("layer {} `{t}`: {e}", i + 1)))
        })
        .collect()
}
