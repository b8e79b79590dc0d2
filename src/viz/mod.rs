//! Pictures and plots: PNG files made with plotters (text in the embedded DejaVu Sans font, so
//! no system fonts are needed) and image.

pub mod confusion;
pub mod grid;
pub mod plot;
pub mod scatter;

use std::sync::Once;

/// The font family every plot uses.
pub const FONT: &str = "sans-serif";

/// Registers the embedded font with plotters, once per process.
pub fn init_fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        use plotters::style::FontStyle;
        // DejaVu ships inside the `dejavu` crate; registration only fails on a corrupt font.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
        let _ = plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold());
    });
}
