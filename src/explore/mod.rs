//! Exploring a trained run: denoising, interpolation, sampling, anomaly scores, and sweeps
//! over code sizes.

pub mod anomaly;
pub mod codes;
pub mod denoise;
pub mod digit;
pub mod interpolate;
pub mod judge;
pub mod reconstruct;
pub mod sample;
pub mod sweep;
