//! Weights files written before models were specs name their layers after the preset's own
//! fields (`encoder.conv1.weight`); the layer stack names them by position
//! (`encoder.layers.0.weight`). This table maps one to the other, so those run folders still
//! load, evaluate and resume.

use super::Preset;

/// Old layer path → the stack's layer path, for each preset (the part before `.weight` /
/// `.bias`).
fn table(preset: Preset) -> Vec<(String, String)> {
    let t = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    match preset {
        Preset::Conv64 => t(&[
            ("encoder.conv1", "encoder.layers.0"),
            ("encoder.conv2", "encoder.layers.2"),
            ("encoder.conv3", "encoder.layers.4"),
            ("decoder.deconv1", "decoder.layers.1"),
            ("decoder.deconv2", "decoder.layers.3"),
            ("decoder.deconv3", "decoder.layers.5"),
            ("decoder.deconv4", "decoder.layers.7"),
        ]),
        Preset::Conv7 => t(&[
            ("encoder.conv1", "encoder.layers.0"),
            ("encoder.conv2", "encoder.layers.2"),
            ("encoder.conv3", "encoder.layers.4"),
            ("decoder.deconv1", "decoder.layers.1"),
            ("decoder.deconv2", "decoder.layers.3"),
            ("decoder.deconv3", "decoder.layers.5"),
        ]),
        // The encoder starts with `flatten`, so its linear layers sit at odd positions.
        Preset::Linear3 | Preset::Mlp => {
            let n = if preset == Preset::Linear3 { 4 } else { 2 };
            (0..n)
                .flat_map(|i| {
                    [
                        (
                            format!("encoder.stack.layers.{i}"),
                            format!("encoder.layers.{}", 1 + 2 * i),
                        ),
                        (
                            format!("decoder.stack.layers.{i}"),
                            format!("decoder.layers.{}", 2 * i),
                        ),
                    ]
                })
                .collect()
        }
        Preset::Cae32 => t(&[
            ("encoder.conv1", "encoder.layers.0"),
            ("encoder.conv2", "encoder.layers.2"),
            ("encoder.fc", "encoder.layers.5"),
            ("decoder.fc", "decoder.layers.0"),
            ("decoder.deconv1", "decoder.layers.3"),
            ("decoder.deconv2", "decoder.layers.5"),
        ]),
        Preset::Vae => t(&[
            ("encoder.conv1", "encoder.layers.0"),
            ("encoder.conv2", "encoder.layers.2"),
            ("encoder.fc_mu", "encoder.layers.5"),
            ("encoder.fc_logvar", "encoder.logvar"),
            ("decoder.fc", "decoder.layers.0"),
            ("decoder.deconv1", "decoder.layers.3"),
            ("decoder.deconv2", "decoder.layers.5"),
        ]),
    }
}

/// The name a pre-spec weights file of `preset` gives the parameter the stack calls `name`
/// (`encoder.layers.0.weight` → `encoder.conv1.weight`).
pub fn old_name(preset: Preset, name: &str) -> Option<String> {
    let (layer, param) = name.rsplit_once('.')?;
    table(preset)
        .into_iter()
        .find(|(_, new)| new == layer)
        .map(|(old, _)| format!("{old}.{param}"))
}
