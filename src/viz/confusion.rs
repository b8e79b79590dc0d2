//! The confusion-matrix picture: a heat map with the count in every cell and labelled axes.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{init_fonts, FONT};
use crate::error::{Error, Result};
use crate::fsutil::with_atomic_path;

/// Draws `confusion[true][predicted]` into a PNG at `path` (atomically).
pub fn confusion_matrix(
    path: &Path,
    title: &str,
    classes: &[String],
    confusion: &[Vec<usize>],
) -> Result<()> {
    init_fonts();
    let err = |e: &dyn std::fmt::Display| Error::Plot {
        path: path.to_path_buf(),
        msg: e.to_string(),
    };
    let k = classes.len();
    let cell = 56i32;
    let (left, top) = (150i32, 70i32);
    let size = (
        left as u32 + k as u32 * cell as u32 + 30,
        top as u32 + k as u32 * cell as u32 + 80,
    );
    with_atomic_path(path, |tmp| {
        let root = BitMapBackend::new(tmp, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        root.draw(&Text::new(
            title.to_string(),
            (10, 10),
            (FONT, 20).into_font().color(&BLACK),
        ))
        .map_err(|e| err(&e))?;
        for (t, row) in confusion.iter().enumerate() {
            // Colour by the share of the true class, so rare classes read as well as common ones.
            let total = row.iter().sum::<usize>().max(1) as f64;
            for (p, &n) in row.iter().enumerate() {
                let share = n as f64 / total;
                let shade = (255.0 * (1.0 - share)).round() as u8;
                let color = RGBColor(shade, shade, 255);
                let (x, y) = (left + p as i32 * cell, top + t as i32 * cell);
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell, y + cell)],
                    color.filled(),
                ))
                .map_err(|e| err(&e))?;
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell, y + cell)],
                    BLACK.mix(0.2),
                ))
                .map_err(|e| err(&e))?;
                let text_color = if share > 0.5 { WHITE } else { BLACK };
                root.draw(&Text::new(
                    n.to_string(),
                    (x + cell / 2, y + cell / 2),
                    (FONT, 15)
                        .into_font()
                        .color(&text_color)
                        .pos(Pos::new(HPos::Center, VPos::Center)),
                ))
                .map_err(|e| err(&e))?;
            }
            let name: String = classes[t].chars().take(14).collect();
            root.draw(&Text::new(
                name,
                (left - 10, top + t as i32 * cell + cell / 2),
                (FONT, 14)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Right, VPos::Center)),
            ))
            .map_err(|e| err(&e))?;
        }
        for (p, name) in classes.iter().enumerate() {
            let name: String = name.chars().take(6).collect();
            root.draw(&Text::new(
                name,
                (left + p as i32 * cell + cell / 2, top + k as i32 * cell + 8),
                (FONT, 14)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Center, VPos::Top)),
            ))
            .map_err(|e| err(&e))?;
        }
        root.draw(&Text::new(
            "predicted",
            (left + k as i32 * cell / 2 - 35, top + k as i32 * cell + 40),
            (FONT, 16).into_font().color(&BLACK),
        ))
        .map_err(|e| err(&e))?;
        root.draw(&Text::new(
            "true",
            (10, top + k as i32 * cell / 2 - 8),
            (FONT, 16).into_font().color(&BLACK),
        ))
        .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
        Ok(())
    })
}
