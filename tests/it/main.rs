//! The integration test binary: the library's public API and the real `mnist-ae` executable,
//! on real MNIST (`../shared/data/mnist`) and on small data the tests make.

mod cli;
mod common;
mod custom;
mod data;
mod eval;
mod explore;
mod explorer;
#[cfg(feature = "wgpu")]
mod gpu;
mod interop;
mod latent;
mod models;
mod reliability;
mod report;
mod training;
