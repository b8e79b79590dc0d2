//! mnist-ae: train, evaluate and explore autoencoders on MNIST and other 28×28 IDX datasets.
//!
//! The library does all the work; the `mnist-ae` binary parses flags and calls it. A run is a
//! folder (`config.json`, `model.safetensors`, `metrics.jsonl`, pictures) written by
//! [`train::train`] and read by every later command.
//!
//! Like the binary, a program that calls the library computes fastest inside
//! [`device::without_denormals`], with its threads started by [`set_threads`]:
//! `without_denormals(|| { set_threads(None)?; … })`.

pub mod data;
pub mod device;
pub mod error;
pub mod fsutil;
pub mod model;

pub use device::set_threads;
pub use error::{Error, Result};
pub mod config;
pub mod console;
pub mod eval;
pub mod explore;
pub mod interop;
pub mod kernels;
pub mod latent;
pub mod report;
pub mod run;
pub mod rundir;
pub mod serve;
pub mod train;
pub mod viz;

/// Serialises the unit tests that draw from burn's device-wide random generator, so that one
/// test's seeded draws never interleave with another's (tests run on parallel threads).
#[cfg(test)]
pub(crate) fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
