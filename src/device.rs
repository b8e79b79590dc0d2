//! Choosing the compute device at run time: the CPU (burn's `flex` backend, always built),
//! or a GPU through the `wgpu` / `cuda` cargo features.

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A device name from the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// burn's flex CPU backend.
    #[default]
    Cpu,
    /// Any GPU through wgpu (Vulkan, Metal, DX12).
    Wgpu,
    /// An NVIDIA GPU through CUDA.
    Cuda,
}

impl DeviceChoice {
    /// Parses `cpu`, `wgpu` or `cuda`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(DeviceChoice::Cpu),
            "wgpu" => Ok(DeviceChoice::Wgpu),
            "cuda" => Ok(DeviceChoice::Cuda),
            _ => Err(Error::config(
                "device",
                format!("'{s}' is not one of cpu, wgpu, cuda"),
            )),
        }
    }

    /// The burn device, or an error when this binary was built without that backend.
    pub fn device(self) -> Result<Device> {
        match self {
            DeviceChoice::Cpu => Ok(Device::flex()),
            DeviceChoice::Wgpu => wgpu_device(),
            DeviceChoice::Cuda => cuda_device(),
        }
    }
}

#[cfg(feature = "wgpu")]
fn wgpu_device() -> Result<Device> {
    Ok(Device::wgpu(burn::tensor::DeviceKind::default()))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_device() -> Result<Device> {
    Err(Error::Device(
        "this mnist-ae was built without the wgpu backend. HINT: rebuild with `cargo install --features wgpu` (or `cargo build --release --features wgpu`)".into(),
    ))
}

#[cfg(feature = "cuda")]
fn cuda_device() -> Result<Device> {
    Ok(Device::cuda(0usize))
}

#[cfg(not(feature = "cuda"))]
fn cuda_device() -> Result<Device> {
    Err(Error::Device(
        "this mnist-ae was built without the CUDA backend. HINT: rebuild with `cargo install --features cuda` (or `cargo build --release --features cuda`)".into(),
    ))
}

/// Sets the number of worker threads of every parallel computation of this process (burn's
/// CPU backend, the kernels, the shards of a batch and the analyses all use rayon's global
/// pool). Call it once, before any computation; results do not depend on it.
pub fn set_threads(n: usize) -> Result<()> {
    if n == 0 || n > 1024 {
        return Err(Error::config("threads", format!("{n} is not in 1..=1024")));
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("mnist-ae-worker-{i}"))
        .build_global()
        .map_err(|e| Error::config("threads", e.to_string()))
}
