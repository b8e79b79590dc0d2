//! Grids of 28×28 images with labelled rows: pixels are upscaled (nearest neighbour) so digits
//! read at a glance, and labels are drawn with the embedded font.

use std::path::Path;

use plotters::prelude::*;

use super::{init_fonts, FONT};
use crate::data::SIDE;
use crate::error::{Error, Result};
use crate::fsutil::with_atomic_path;

/// One row of a grid: a label and images with values in [0, 1] (784 each), with an optional
/// caption under each image.
pub struct GridRow {
    /// Shown left of the row.
    pub label: String,
    /// Images, `SIDE * SIDE` values in [0, 1] each.
    pub images: Vec<Vec<f32>>,
    /// Text under each image (empty for none).
    pub captions: Vec<String>,
}

/// Layout of a grid picture.
#[derive(Debug, Clone, Copy)]
pub struct GridStyle {
    /// Screen pixels per image pixel.
    pub scale: u32,
    /// Width of the label column.
    pub label_width: u32,
    /// Gap between images.
    pub gap: u32,
}

impl Default for GridStyle {
    fn default() -> Self {
        GridStyle {
            scale: 3,
            label_width: 120,
            gap: 4,
        }
    }
}

/// Most images side by side: longer rows wrap, all rows together, into bands of this many
/// columns, so a picture of many images is a page about a screen wide (some 1,500 pixels)
/// and as tall as it needs.
pub const MAX_COLUMNS: usize = 16;

/// Extra space between the bands of a wrapped picture.
const BAND_GAP: u32 = 14;

/// `rows` cut into bands of at most `width` columns: band after band, each with every row's
/// images of that band.
fn wrap(rows: &[GridRow], width: usize) -> Vec<GridRow> {
    let cols = rows.iter().map(|r| r.images.len()).max().unwrap_or(0);
    let mut out = Vec::new();
    for start in (0..cols).step_by(width) {
        for r in rows {
            let end = (start + width).min(r.images.len());
            if start >= end {
                continue;
            }
            out.push(GridRow {
                label: r.label.clone(),
                images: r.images[start..end].to_vec(),
                captions: r
                    .captions
                    .get(start..end.min(r.captions.len()))
                    .map(<[String]>::to_vec)
                    .unwrap_or_default(),
            });
        }
    }
    out
}

/// Draws `rows` into a PNG at `path` (atomically), with an optional title; rows longer than
/// [`MAX_COLUMNS`] wrap.
pub fn image_grid(path: &Path, title: &str, rows: &[GridRow], style: GridStyle) -> Result<()> {
    init_fonts();
    let wrapped;
    // Rows per band: a band holds one slice of every row.
    let band = rows.len().max(1);
    let (rows, band_gap) = if rows.iter().any(|r| r.images.len() > MAX_COLUMNS) {
        wrapped = wrap(rows, MAX_COLUMNS);
        (&wrapped[..], BAND_GAP)
    } else {
        (rows, 0)
    };
    let err = |e: &dyn std::fmt::Display| Error::Plot {
        path: path.to_path_buf(),
        msg: e.to_string(),
    };
    let cols = rows.iter().map(|r| r.images.len()).max().unwrap_or(0) as u32;
    if cols == 0 {
        return Err(err(&"no images to draw"));
    }
    let cell = SIDE as u32 * style.scale;
    let has_captions = rows
        .iter()
        .any(|r| r.captions.iter().any(|c| !c.is_empty()));
    let caption_h = if has_captions { 18 } else { 0 };
    let title_h = if title.is_empty() { 0 } else { 34 };
    let row_h = cell + style.gap + caption_h;
    let width = style.label_width + cols * (cell + style.gap) + style.gap;
    let bands = rows.len().div_ceil(band) as u32;
    let height = title_h + rows.len() as u32 * row_h + (bands - 1) * band_gap + style.gap;
    with_atomic_path(path, |tmp| {
        let root = BitMapBackend::new(tmp, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        if !title.is_empty() {
            root.draw(&Text::new(
                title.to_string(),
                (10, 8),
                (FONT, 20).into_font().color(&BLACK),
            ))
            .map_err(|e| err(&e))?;
        }
        for (ri, row) in rows.iter().enumerate() {
            let y0 = title_h + ri as u32 * row_h + (ri / band) as u32 * band_gap + style.gap;
            root.draw(&Text::new(
                row.label.clone(),
                (8, (y0 + cell / 2) as i32 - 8),
                (FONT, 16).into_font().color(&BLACK),
            ))
            .map_err(|e| err(&e))?;
            for (ci, img) in row.images.iter().enumerate() {
                let x0 = style.label_width + ci as u32 * (cell + style.gap);
                for (i, &v) in img.iter().enumerate().take(SIDE * SIDE) {
                    let g = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
                    let (px, py) = (
                        (i % SIDE) as u32 * style.scale,
                        (i / SIDE) as u32 * style.scale,
                    );
                    let (x, y) = ((x0 + px) as i32, (y0 + py) as i32);
                    let s = style.scale as i32;
                    root.draw(&Rectangle::new(
                        [(x, y), (x + s, y + s)],
                        RGBColor(g, g, g).filled(),
                    ))
                    .map_err(|e| err(&e))?;
                }
                if let Some(c) = row.captions.get(ci).filter(|c| !c.is_empty()) {
                    root.draw(&Text::new(
                        c.clone(),
                        (x0 as i32, (y0 + cell + 2) as i32),
                        (FONT, 12).into_font().color(&BLACK),
                    ))
                    .map_err(|e| err(&e))?;
                }
            }
        }
        root.present().map_err(|e| err(&e))?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_rows_wrap_into_bands_about_a_screen_wide() {
        let row = |label: &str, v: f32| GridRow {
            label: label.into(),
            images: vec![vec![v; SIDE * SIDE]; 100],
            captions: (0..100).map(|i| format!("#{i}")).collect(),
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grid.png");
        let style = GridStyle::default();
        image_grid(&path, "t", &[row("a", 0.0), row("b", 1.0)], style).unwrap();
        let (w, h) = image::image_dimensions(&path).unwrap();
        let cell = SIDE as u32 * style.scale;
        assert_eq!(
            w,
            style.label_width + 16 * (cell + style.gap) + style.gap,
            "16 columns"
        );
        // 100 images in bands of 16: 7 bands of both rows.
        let row_h = cell + style.gap + 18;
        assert_eq!(h, 34 + 14 * row_h + 6 * BAND_GAP + style.gap);
    }
}
