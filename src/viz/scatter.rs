//! Scatter plots of 2-D points coloured by class, several panels side by side.

use std::path::Path;

use plotters::prelude::*;

use super::{init_fonts, FONT};
use crate::error::{Error, Result};
use crate::fsutil::with_atomic_path;

/// matplotlib's `tab10` palette: ten colours that stay apart.
pub const TAB10: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// One panel: a title and points `(x, y)` with class labels.
pub struct Panel<'a> {
    /// Shown above the panel.
    pub title: &'a str,
    /// The points.
    pub points: &'a [(f64, f64)],
}

/// Draws `panels` side by side, points coloured by `labels` (shared), with a legend of
/// `class_names`.
pub fn scatter(path: &Path, panels: &[Panel], labels: &[u8], class_names: &[String]) -> Result<()> {
    init_fonts();
    let err = |e: &dyn std::fmt::Display| Error::Plot {
        path: path.to_path_buf(),
        msg: e.to_string(),
    };
    let w = 640 * panels.len().max(1) as u32;
    with_atomic_path(path, |tmp| {
        let root = BitMapBackend::new(tmp, (w, 660)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let areas = root.split_evenly((1, panels.len().max(1)));
        for (area, panel) in areas.iter().zip(panels) {
            let (x0, x1, y0, y1) = panel
                .points
                .iter()
                .fold((f64::MAX, f64::MIN, f64::MAX, f64::MIN), |a, p| {
                    (a.0.min(p.0), a.1.max(p.0), a.2.min(p.1), a.3.max(p.1))
                });
            let (px, py) = (((x1 - x0) * 0.05).max(1e-6), ((y1 - y0) * 0.05).max(1e-6));
            let mut chart = ChartBuilder::on(area)
                .caption(panel.title, (FONT, 22))
                .margin(15)
                .x_label_area_size(30)
                .y_label_area_size(50)
                .build_cartesian_2d((x0 - px)..(x1 + px), (y0 - py)..(y1 + py))
                .map_err(|e| err(&e))?;
            chart
                .configure_mesh()
                .disable_mesh()
                .label_style((FONT, 13))
                .draw()
                .map_err(|e| err(&e))?;
            for (c, name) in class_names.iter().enumerate() {
                let color = TAB10[c % TAB10.len()];
                chart
                    .draw_series(
                        panel
                            .points
                            .iter()
                            .zip(labels)
                            .filter(|(_, &l)| l as usize == c)
                            .map(|(&p, _)| Circle::new(p, 2, color.mix(0.7).filled())),
                    )
                    .map_err(|e| err(&e))?
                    .label(name.as_str())
                    .legend(move |(x, y)| Circle::new((x + 8, y), 5, color.filled()));
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font((FONT, 14))
                .draw()
                .map_err(|e| err(&e))?;
        }
        root.present().map_err(|e| err(&e))?;
        Ok(())
    })
}
