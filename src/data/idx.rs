//! A pure IDX parser (the format of MNIST, Fashion-MNIST, KMNIST): gzip or raw bytes in,
//! checked arrays out. Magic numbers and layout from <http://yann.lecun.com/exdb/mnist/>:
//! a big-endian u32 magic (0x0803 = 2051 for u8 images of rank 3, 0x0801 = 2049 for u8
//! labels of rank 1), one big-endian u32 per dimension, then the data.

use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// Magic number of a u8 tensor of rank 3 (images).
pub const IMAGES_MAGIC: u32 = 2051;
/// Magic number of a u8 tensor of rank 1 (labels).
pub const LABELS_MAGIC: u32 = 2049;
/// Largest decompressed file we accept: 60,000 images of 28×28 are 47 MB; 1 GiB leaves room
/// for bigger datasets while stopping a gzip bomb.
const MAX_DECOMPRESSED: u64 = 1 << 30;

/// Images from an IDX file: `count` images of `rows`×`cols` u8 pixels, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    /// Number of images.
    pub count: usize,
    /// Rows per image.
    pub rows: usize,
    /// Columns per image.
    pub cols: usize,
    /// `count * rows * cols` pixels.
    pub pixels: Vec<u8>,
}

impl IdxImages {
    /// The pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.rows * self.cols;
        &self.pixels[i * n..(i + 1) * n]
    }
}

/// Reads a whole file, decompressing it when it starts with the gzip magic bytes.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    if path.is_dir() {
        return Err(Error::bad_file(
            path,
            "is a directory, expected an IDX file",
        ));
    }
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decompress_if_gz(&raw).map_err(|msg| Error::bad_file(path, msg))
}

/// Returns `raw` itself, or its decompressed content when it is gzip.
pub fn decompress_if_gz(raw: &[u8]) -> std::result::Result<Vec<u8>, String> {
    if raw.len() >= 2 && raw[0] == 0x1f && raw[1] == 0x8b {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw)
            .take(MAX_DECOMPRESSED)
            .read_to_end(&mut out)
            .map_err(|e| format!("corrupt or truncated gzip data ({e})"))?;
        // The decoder stops quietly when the input ends early; the gzip trailer's ISIZE
        // (uncompressed length mod 2^32, RFC 1952) tells a complete stream from a cut one.
        let n = raw.len();
        let trailer =
            (n >= 18).then(|| u32::from_le_bytes([raw[n - 4], raw[n - 3], raw[n - 2], raw[n - 1]]));
        if trailer != Some(out.len() as u32) {
            return Err(
                "corrupt or truncated gzip data (length does not match the gzip trailer)".into(),
            );
        }
        Ok(out)
    } else {
        Ok(raw.to_vec())
    }
}

/// Reads the magic and `words - 1` dimensions; the magic is checked against `magic` before
/// the length, so a label file given as images is named as such, whatever its size.
fn header(bytes: &[u8], words: usize, magic: u32) -> std::result::Result<Vec<u32>, String> {
    if bytes.is_empty() {
        return Err("empty file, expected an IDX header".into());
    }
    if bytes.len() >= 4 {
        let m = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        if m != magic {
            let (want, other, other_kind) = if magic == IMAGES_MAGIC {
                ("an IDX image file", LABELS_MAGIC, "a label file")
            } else {
                ("an IDX label file", IMAGES_MAGIC, "an image file")
            };
            let hint = if m == other {
                format!("; this looks like {other_kind}")
            } else {
                String::new()
            };
            return Err(format!(
                "wrong magic number {m} (expected {magic} for {want}{hint})"
            ));
        }
    }
    if bytes.len() < 4 * words {
        return Err(format!(
            "truncated IDX header: {} bytes, expected at least {}",
            bytes.len(),
            4 * words
        ));
    }
    Ok(bytes[..4 * words]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn check_len(got: usize, header_len: usize, items: usize) -> std::result::Result<(), String> {
    let want = header_len + items;
    if got != want {
        return Err(format!(
            "file size {got} bytes does not match its header ({want} bytes expected: {header_len} header + {items} data)"
        ));
    }
    Ok(())
}

/// Parses decompressed IDX image bytes.
pub fn parse_images(bytes: &[u8]) -> std::result::Result<IdxImages, String> {
    let h = header(bytes, 4, IMAGES_MAGIC)?;
    let (count, rows, cols) = (h[1] as usize, h[2] as usize, h[3] as usize);
    if rows == 0 || cols == 0 {
        return Err(format!("image dimensions {rows}x{cols} must be positive"));
    }
    let items = count
        .checked_mul(rows * cols)
        .ok_or_else(|| "image count times size overflows".to_string())?;
    check_len(bytes.len(), 16, items)?;
    Ok(IdxImages {
        count,
        rows,
        cols,
        pixels: bytes[16..].to_vec(),
    })
}

/// Parses decompressed IDX label bytes; every label must be below `classes`.
pub fn parse_labels(bytes: &[u8], classes: u8) -> std::result::Result<Vec<u8>, String> {
    let h = header(bytes, 2, LABELS_MAGIC)?;
    let count = h[1] as usize;
    check_len(bytes.len(), 8, count)?;
    let labels = bytes[8..].to_vec();
    if let Some((i, l)) = labels.iter().enumerate().find(|(_, &l)| l >= classes) {
        return Err(format!(
            "label {l} at index {i} is out of range (expected 0..={})",
            classes - 1
        ));
    }
    Ok(labels)
}

/// Reads and parses an IDX image file (gzip or raw).
pub fn read_images(path: &Path) -> Result<IdxImages> {
    let bytes = read_maybe_gz(path)?;
    parse_images(&bytes).map_err(|msg| Error::bad_file(path, msg))
}

/// Reads and parses an IDX label file (gzip or raw).
pub fn read_labels(path: &Path, classes: u8) -> Result<Vec<u8>> {
    let bytes = read_maybe_gz(path)?;
    parse_labels(&bytes, classes).map_err(|msg| Error::bad_file(path, msg))
}

/// Encodes images as IDX bytes (used to make test data and exports).
pub fn encode_images(count: usize, rows: usize, cols: usize, pixels: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + pixels.len());
    for v in [IMAGES_MAGIC, count as u32, rows as u32, cols as u32] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(pixels);
    out
}

/// Encodes labels as IDX bytes.
pub fn encode_labels(labels: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + labels.len());
    for v in [LABELS_MAGIC, labels.len() as u32] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(labels);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images() -> Vec<u8> {
        encode_images(2, 2, 3, &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11])
    }

    #[test]
    fn parses_good_images_and_labels() {
        let im = parse_images(&images()).unwrap();
        assert_eq!((im.count, im.rows, im.cols), (2, 2, 3));
        assert_eq!(im.image(1), &[6, 7, 8, 9, 10, 11]);
        assert_eq!(
            parse_labels(&encode_labels(&[3, 9]), 10).unwrap(),
            vec![3, 9]
        );
    }

    #[test]
    fn rejects_wrong_magic_truncation_and_bad_labels() {
        let mut bad = images();
        bad[3] = 0x01;
        assert!(parse_images(&bad).unwrap_err().contains("label file"));
        let short = &images()[..20];
        assert!(parse_images(short).unwrap_err().contains("does not match"));
        assert!(parse_images(&[]).unwrap_err().contains("empty"));
        assert!(parse_images(&[0, 0, 8, 3, 0])
            .unwrap_err()
            .contains("truncated"));
        assert!(parse_images(&encode_labels(&[1]))
            .unwrap_err()
            .contains("label file"));
        assert!(parse_labels(&encode_labels(&[3, 10]), 10)
            .unwrap_err()
            .contains("label 10 at index 1"));
        let mut extra = encode_labels(&[1, 2]);
        extra.push(0);
        assert!(parse_labels(&extra, 10).is_err());
    }

    #[test]
    fn gzip_round_trip_and_corrupt_gzip() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&images()).unwrap();
        let gz = enc.finish().unwrap();
        assert_eq!(decompress_if_gz(&gz).unwrap(), images());
        assert!(decompress_if_gz(&gz[..gz.len() / 2])
            .unwrap_err()
            .contains("gzip"));
    }
}
