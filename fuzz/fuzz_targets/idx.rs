//! The IDX readers on arbitrary bytes: gzip detection, bounded decompression, both parsers.
//! Any input must give `Ok` or `Err`, never a panic, and an `Ok` must be self-consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mnist_ae::data::idx::{read_images_from, read_labels_from};

fuzz_target!(|data: &[u8]| {
    if let Ok(images) = read_images_from(data) {
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
    if let Ok(labels) = read_labels_from(data, 10) {
        assert!(labels.iter().all(|&l| l < 10));
    }
});
