//! Data: the IDX parser, the downloader and cache, and the in-memory dataset with its splits.

pub mod batch;
pub mod dataset;
pub mod download;
pub mod idx;

pub use dataset::{load, load_test, Dataset, LoadOptions, Scale, Split, PIXELS, SIDE};
pub use download::{
    resolve_data_dir, DatasetSource, DatasetSpec, DATASETS, FASHION_MNIST, KMNIST, MNIST,
};
