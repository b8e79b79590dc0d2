//! Any picture of a digit made to look like an MNIST image, as MNIST's own images were made:
//! grey levels, a light digit on a dark ground, the digit scaled to fit a 20×20 box (aspect
//! kept), then placed in 28×28 with its centre of mass at the centre.

use image::imageops::FilterType;
use image::{DynamicImage, GrayImage, Luma};

use crate::data::SIDE;
use crate::error::{Error, Result};

/// The box the digit is scaled into.
const BOX: u32 = 20;

/// `img` as 784 values in [0, 1], MNIST-like; an error when it holds no digit (one flat
/// colour).
pub fn mnist_like(img: &DynamicImage) -> Result<Vec<f32>> {
    let mut g = grey(img);
    let n = (g.width() as u64 * g.height() as u64).max(1);
    let mean = g.pixels().map(|p| p.0[0] as u64).sum::<u64>() / n;
    // A dark digit on a light ground (ink on paper) is turned around.
    if mean > 127 {
        image::imageops::invert(&mut g);
    }
    let max = g.pixels().map(|p| p.0[0]).max().unwrap_or(0);
    let min = g.pixels().map(|p| p.0[0]).min().unwrap_or(0);
    if max.saturating_sub(min) < 16 {
        return Err(Error::Data(
            "the picture is one flat colour; no digit to read".into(),
        ));
    }
    // The ground becomes 0 and the strokes span up to 255.
    for p in g.pixels_mut() {
        let v = (p.0[0].saturating_sub(min) as u32 * 255) / (max - min) as u32;
        p.0[0] = v as u8;
    }
    // The digit's bounding box: pixels above a tenth of full ink.
    let (w, h) = g.dimensions();
    let (mut x0, mut y0, mut x1, mut y1) = (w, h, 0, 0);
    for (x, y, p) in g.enumerate_pixels() {
        if p.0[0] > 25 {
            x0 = x0.min(x);
            y0 = y0.min(y);
            x1 = x1.max(x);
            y1 = y1.max(y);
        }
    }
    if x1 < x0 {
        return Err(Error::Data("no digit found in the picture".into()));
    }
    let crop = image::imageops::crop_imm(&g, x0, y0, x1 - x0 + 1, y1 - y0 + 1).to_image();
    let (cw, ch) = crop.dimensions();
    let scale = BOX as f32 / cw.max(ch) as f32;
    let (nw, nh) = (
        ((cw as f32 * scale).round() as u32).clamp(1, BOX),
        ((ch as f32 * scale).round() as u32).clamp(1, BOX),
    );
    let small = image::imageops::resize(&crop, nw, nh, FilterType::Triangle);
    Ok(centre_by_mass(&small))
}

/// Places `digit` (at most 20×20) in a 28×28 image with its centre of mass at the centre
/// (as near as whole pixels and the border allow).
fn centre_by_mass(digit: &GrayImage) -> Vec<f32> {
    let (w, h) = digit.dimensions();
    let (mut m, mut mx, mut my) = (0f64, 0f64, 0f64);
    for (x, y, p) in digit.enumerate_pixels() {
        let v = p.0[0] as f64;
        m += v;
        mx += v * x as f64;
        my += v * y as f64;
    }
    let (cx, cy) = if m > 0.0 {
        (mx / m, my / m)
    } else {
        (w as f64 / 2.0, h as f64 / 2.0)
    };
    let side = SIDE as i64;
    let place = |c: f64, len: u32| -> i64 {
        let want = (side as f64 / 2.0 - 0.5 - c).round() as i64;
        want.clamp(0, side - len as i64)
    };
    let (ox, oy) = (place(cx, w), place(cy, h));
    let mut out = vec![0f32; SIDE * SIDE];
    for (x, y, Luma([v])) in digit.enumerate_pixels() {
        let (tx, ty) = (x as i64 + ox, y as i64 + oy);
        out[(ty * side + tx) as usize] = *v as f32 / 255.0;
    }
    out
}

/// `img` in grey levels. Where it is partly transparent (strokes on a transparent ground, as a
/// drawing program or a browser's canvas exports them) the transparent parts are the ground:
/// the picture is laid on white when its visible strokes are dark, on black when they are
/// light, so that the strokes stand out either way.
fn grey(img: &DynamicImage) -> GrayImage {
    if !img.color().has_alpha() {
        return img.to_luma8();
    }
    let la = img.to_luma_alpha8();
    if la.pixels().all(|p| p.0[1] == u8::MAX) {
        return img.to_luma8();
    }
    // The strokes' mean grey level, each pixel weighted by how opaque it is.
    let (mut ink, mut weight) = (0u64, 0u64);
    for p in la.pixels() {
        let [l, a] = p.0;
        ink += l as u64 * a as u64;
        weight += a as u64;
    }
    let ground: u32 = if weight > 0 && ink / weight > 127 {
        0
    } else {
        255
    };
    GrayImage::from_fn(la.width(), la.height(), |x, y| {
        let [l, a] = la.get_pixel(x, y).0;
        let (l, a) = (l as u32, a as u32);
        Luma([((l * a + ground * (255 - a)) / 255) as u8])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dark bar drawn on a light, large picture becomes a light bar, 20 pixels tall, with its
    /// centre of mass at the image centre.
    #[test]
    fn ink_on_paper_becomes_a_centred_mnist_digit() {
        let mut g = GrayImage::from_pixel(200, 300, Luma([250]));
        for y in 40..240 {
            for x in 150..170 {
                g.put_pixel(x, y, Luma([10]));
            }
        }
        let v = mnist_like(&DynamicImage::ImageLuma8(g)).unwrap();
        assert_eq!(v.len(), 784);
        let ink: Vec<(usize, usize)> = (0..784)
            .filter(|&i| v[i] > 0.5)
            .map(|i| (i % 28, i / 28))
            .collect();
        let rows =
            ink.iter().map(|p| p.1).max().unwrap() - ink.iter().map(|p| p.1).min().unwrap() + 1;
        assert_eq!(rows, 20, "scaled into the 20-pixel box");
        let mass: f32 = v.iter().sum();
        let cx: f32 = (0..784).map(|i| v[i] * (i % 28) as f32).sum::<f32>() / mass;
        let cy: f32 = (0..784).map(|i| v[i] * (i / 28) as f32).sum::<f32>() / mass;
        assert!(
            (cx - 13.5).abs() <= 1.0 && (cy - 13.5).abs() <= 1.0,
            "{cx} {cy}"
        );
        assert!(v[0] == 0.0, "the ground is dark");
    }

    /// Dark or light strokes on a transparent ground read as the same digit as dark strokes on
    /// white paper; a picture that is transparent everywhere holds none.
    #[test]
    fn strokes_on_a_transparent_ground_are_read() {
        use image::{LumaA, Rgba, RgbaImage};
        let mut paper = GrayImage::from_pixel(60, 80, Luma([255]));
        let mut dark = RgbaImage::from_pixel(60, 80, Rgba([0, 0, 0, 0]));
        let mut light = RgbaImage::from_pixel(60, 80, Rgba([0, 0, 0, 0]));
        for y in 10..70 {
            for x in 25..33 {
                paper.put_pixel(x, y, Luma([0]));
                dark.put_pixel(x, y, Rgba([0, 0, 0, 255]));
                light.put_pixel(x, y, Rgba([255, 255, 255, 255]));
            }
        }
        let want = mnist_like(&DynamicImage::ImageLuma8(paper)).unwrap();
        assert_eq!(mnist_like(&DynamicImage::ImageRgba8(dark)).unwrap(), want);
        assert_eq!(mnist_like(&DynamicImage::ImageRgba8(light)).unwrap(), want);
        let clear = image::GrayAlphaImage::from_pixel(28, 28, LumaA([0, 0]));
        assert!(mnist_like(&DynamicImage::ImageLumaA8(clear)).is_err());
    }

    #[test]
    fn a_blank_picture_is_refused() {
        let g = GrayImage::from_pixel(28, 28, Luma([200]));
        assert!(mnist_like(&DynamicImage::ImageLuma8(g)).is_err());
    }
}
