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

/// The wgpu device, acquired once per process: wgpu picks its best adapter (a discrete GPU
/// first; `CUBECL_WGPU_DEFAULT_DEVICE` overrides it). Acquiring it up front, rather than at the
/// first tensor operation, turns a machine without a usable adapter into an error here instead
/// of a panic inside the runtime.
#[cfg(feature = "wgpu")]
fn wgpu_device() -> Result<Device> {
    use std::sync::OnceLock;
    static DEVICE: OnceLock<std::result::Result<Device, String>> = OnceLock::new();
    DEVICE
        .get_or_init(|| {
            Device::wgpu_options().init().map_err(|e| {
                format!(
                    "no usable GPU for --device wgpu (wgpu tried {}): {}. HINT: install the GPU's \
                     Vulkan driver (on Debian, mesa-vulkan-drivers gives a CPU one, lavapipe), or use --device cpu",
                    WGPU_APIS,
                    one_line(&e.to_string())
                )
            })
        })
        .clone()
        .map_err(Error::Device)
}

/// The graphics APIs wgpu's automatic choice tries on this platform, in its order.
#[cfg(all(feature = "wgpu", target_os = "macos"))]
const WGPU_APIS: &str = "Metal";
#[cfg(all(feature = "wgpu", target_os = "windows"))]
const WGPU_APIS: &str = "Vulkan, DX12, OpenGL";
#[cfg(all(feature = "wgpu", not(any(target_os = "macos", target_os = "windows"))))]
const WGPU_APIS: &str = "Vulkan, OpenGL";

/// `s` on one line: its lines joined with "; ", surrounding blanks dropped.
#[cfg(feature = "wgpu")]
fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
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

/// What `device` is, for people: `cpu`, or `gpu` and the adapter's own name
/// (`gpu: NVIDIA H100 PCIe`). Opens the device.
pub fn describe(device: &Device) -> String {
    if crate::kernels::fused_here(device) {
        return "cpu".to_string();
    }
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    if let Some(identity) = device.identity() {
        return format!("gpu: {}", identity.name);
    }
    "gpu".to_string()
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

/// Runs `f` with a one-thread rayon pool as its pool (or, where that pool cannot be made, in
/// the current one): for computations whose parallel sums would otherwise round differently
/// from run to run, or whose pieces are too small to be worth handing to other threads.
pub fn on_one_thread<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    match rayon::ThreadPoolBuilder::new().num_threads(1).build() {
        Ok(pool) => pool.install(f),
        Err(_) => f(),
    }
}
