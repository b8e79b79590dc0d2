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
/// columns, so a picture of 10,000 pairs is a tall page rather than 880,000 pixels wide.
pub const MAX_COLUMNS: usize = 32;

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
    let rows = if rows.iter().any(|r| r.images.len() > MAX_COLUMNS) {
        wrapped = wrap(rows, MAX_COLUMNS);
        &wrapped[..]
    } else {
        rows
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
    let height = title_h + rows.len() as u32 * row_h + style.gap;
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
            let y0 = title_h + ri as u32 * row_h + style.gap;
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
