//! A pure IDX parser (the format of MNIST, Fashion-MNIST, KMNIST): gzip or raw bytes in,
//! checked arrays out. Magic numbers and layout from <http://yann.lecun.com/exdb/mnist/>:
//! a big-endian u32 magic (0x0803 = 2051 for u8 images of rank 3, 0x0801 = 2049 for u8
//! labels of rank 1), one big-endian u32 per dimension, then the data.

use std::io::{BufRead, Read};
use std::path::Path;

use crate::error::{Error, Result};

/// Magic number of a u8 tensor of rank 3 (images).
pub const IMAGES_MAGIC: u32 = 2051;
/// Magic number of a u8 tensor of rank 1 (labels).
pub const LABELS_MAGIC: u32 = 2049;
/// Largest decompressed file we accept: 60,000 images of 28×28 are 47 MB; 1 GiB leaves room
/// for bigger datasets. Reading also stops where the file's own header says it ends.
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

/// The content of an IDX file (raw, or gzip with any number of members, as `gunzip` reads
/// it), as a reader: `raw` itself, or a decompressor over it when it starts with the gzip
/// magic bytes.
fn decoded<'a, R: BufRead + 'a>(mut raw: R) -> std::io::Result<Box<dyn Read + 'a>> {
    let head = raw.fill_buf()?;
    Ok(if head.len() >= 2 && head[0] == 0x1f && head[1] == 0x8b {
        Box::new(flate2::bufread::MultiGzDecoder::new(raw))
    } else {
        Box::new(raw)
    })
}

fn gz_error(e: std::io::Error) -> String {
    format!("corrupt or truncated gzip data ({e})")
}

/// Reads one IDX file from `raw` (gzip or not) with a header of `words` big-endian u32s, and
/// no more than that header allows: a file (or a gzip bomb) longer than its header says is
/// refused as soon as the excess appears, and a header claiming more than `MAX_DECOMPRESSED`
/// is refused before the data is read. Returns the header's bytes and the data, checked for
/// length; the data has its own buffer, sized from the header (up to [`RESERVED`]), so it is
/// neither grown by copies while it is read nor copied out afterwards.
fn read_bounded(
    raw: impl BufRead,
    words: usize,
    magic: u32,
) -> std::result::Result<(Vec<u8>, Vec<u8>), String> {
    let mut r = decoded(raw).map_err(gz_error)?;
    let head_len = 4 * words;
    let mut head = Vec::with_capacity(head_len);
    r.by_ref()
        .take(head_len as u64)
        .read_to_end(&mut head)
        .map_err(gz_error)?;
    let h = header(&head, words, magic)?;
    let items = h[1..]
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d as usize))
        .filter(|&n| n as u64 + head_len as u64 <= MAX_DECOMPRESSED)
        .ok_or_else(|| {
            format!(
                "header claims {} items, more than the {} bytes this program reads from one IDX file",
                h[1..].iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x"),
                MAX_DECOMPRESSED
            )
        })?;
    let mut data = Vec::with_capacity(items.min(RESERVED));
    r.by_ref()
        .take(items as u64)
        .read_to_end(&mut data)
        .map_err(gz_error)?;
    check_len(head_len + data.len(), head_len, items)?;
    // One byte more than the header allows means the file is longer; reading on to the end
    // also checks the gzip trailer (CRC and length of every member).
    let mut extra = [0u8; 1];
    loop {
        match r.read(&mut extra) {
            Ok(0) => break,
            Ok(_) => {
                return Err(format!(
                    "file is longer than its header says ({} bytes expected: {head_len} header + {items} data)",
                    head_len + items
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(gz_error(e)),
        }
    }
    Ok((head, data))
}

/// The most a data buffer is sized to before it is read: a header may claim more than its
/// file holds, and such a file is refused once it ends.
const RESERVED: usize = 1 << 28;

/// Reads IDX images (gzip or raw) from any reader, within the bounds of its header.
pub fn read_images_from(raw: impl BufRead) -> std::result::Result<IdxImages, String> {
    let (head, data) = read_bounded(raw, 4, IMAGES_MAGIC)?;
    images_from_parts(&head, data)
}

/// Reads IDX labels (gzip or raw) from any reader, within the bounds of its header.
pub fn read_labels_from(raw: impl BufRead, classes: u8) -> std::result::Result<Vec<u8>, String> {
    let (head, data) = read_bounded(raw, 2, LABELS_MAGIC)?;
    labels_from_parts(&head, data, classes)
}

fn open(path: &Path) -> Result<std::io::BufReader<std::fs::File>> {
    crate::fsutil::check_readable(path)?;
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    Ok(std::io::BufReader::new(f))
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
    let (head, data) = bytes.split_at(bytes.len().min(16));
    images_from_parts(head, data.to_vec())
}

/// Images from an IDX file's header bytes (`head`, at most 16) and its data.
fn images_from_parts(head: &[u8], data: Vec<u8>) -> std::result::Result<IdxImages, String> {
    let h = header(head, 4, IMAGES_MAGIC)?;
    let (count, rows, cols) = (h[1] as usize, h[2] as usize, h[3] as usize);
    if rows == 0 || cols == 0 {
        return Err(format!("image dimensions {rows}x{cols} must be positive"));
    }
    let items = count
        .checked_mul(rows * cols)
        .ok_or_else(|| "image count times size overflows".to_string())?;
    check_len(16 + data.len(), 16, items)?;
    Ok(IdxImages {
        count,
        rows,
        cols,
        pixels: data,
    })
}

/// Parses decompressed IDX label bytes; every label must be below `classes`.
pub fn parse_labels(bytes: &[u8], classes: u8) -> std::result::Result<Vec<u8>, String> {
    let (head, data) = bytes.split_at(bytes.len().min(8));
    labels_from_parts(head, data.to_vec(), classes)
}

/// Labels from an IDX file's header bytes (`head`, at most 8) and its data; every label must
/// be below `classes`.
fn labels_from_parts(
    head: &[u8],
    labels: Vec<u8>,
    classes: u8,
) -> std::result::Result<Vec<u8>, String> {
    let h = header(head, 2, LABELS_MAGIC)?;
    let count = h[1] as usize;
    check_len(8 + labels.len(), 8, count)?;
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
    read_images_from(open(path)?).map_err(|msg| Error::bad_file(path, msg))
}

/// Reads and parses an IDX label file (gzip or raw).
pub fn read_labels(path: &Path, classes: u8) -> Result<Vec<u8>> {
    read_labels_from(open(path)?, classes).map_err(|msg| Error::bad_file(path, msg))
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

    fn gz(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn gzip_round_trip_and_corrupt_gzip() {
        let gz = gz(&images());
        assert_eq!(
            read_images_from(&gz[..]).unwrap(),
            parse_images(&images()).unwrap()
        );
        assert_eq!(read_images_from(&images()[..]).unwrap().count, 2);
        for cut in [gz.len() / 2, gz.len() - 4, gz.len() - 1] {
            let e = read_images_from(&gz[..cut]).unwrap_err();
            assert!(
                e.contains("gzip") || e.contains("does not match"),
                "cut {cut}: {e}"
            );
        }
        let mut flipped = gz.clone();
        let n = flipped.len();
        flipped[n - 6] ^= 0xff; // inside the CRC-32 of the trailer
        assert!(read_images_from(&flipped[..]).unwrap_err().contains("gzip"));
    }

    /// `cat a.gz b.gz` is a valid gzip file (RFC 1952 allows several members; gunzip reads
    /// them all).
    #[test]
    fn multi_member_gzip_is_read_whole() {
        let all = images();
        let mut two = gz(&all[..10]);
        two.extend(gz(&all[10..]));
        assert_eq!(
            read_images_from(&two[..]).unwrap(),
            parse_images(&all).unwrap()
        );
    }

    /// A gzip bomb: a valid header for 2 images, then a megabyte of zeros. Reading stops one
    /// byte past what the header allows.
    #[test]
    fn reading_stops_where_the_header_says_the_file_ends() {
        let mut long = images();
        long.extend(vec![0u8; 1 << 20]);
        let e = read_images_from(&gz(&long)[..]).unwrap_err();
        assert!(e.contains("longer than its header"), "{e}");
        let mut huge = encode_images(4_000_000, 28, 28, &[]);
        huge.extend([0u8; 100]);
        let e = read_images_from(&huge[..]).unwrap_err();
        assert!(e.contains("more than the"), "{e}");
        assert!(read_images_from(&gz(&[0u8; 4096])[..])
            .unwrap_err()
            .contains("wrong magic number 0"));
    }
}
