//! The IDX reader on arbitrary bytes: gzip detection and decompression, then both parsers.
//! Any input must give `Ok` or `Err`, never a panic, and an `Ok` must be self-consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mnist_ae::data::idx::{decompress_if_gz, parse_images, parse_labels};

fuzz_target!(|data: &[u8]| {
    let Ok(bytes) = decompress_if_gz(data) else {
        return;
    };
    if let Ok(images) = parse_images(&bytes) {
        assert_eq!(
            images.pixels.len(),
            images.count * images.rows * images.cols
        );
        assert!(images.rows > 0 && images.cols > 0);
        if images.count > 0 {
            assert_eq!(
                images.image(images.count - 1).len(),
                images.rows * images.cols
            );
        }
    }
    if let Ok(labels) = parse_labels(&bytes, 10) {
        assert!(labels.iter().all(|&l| l < 10));
        assert_eq!(labels.len() + 8, bytes.len());
    }
});
