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

/// Starts the worker threads of every parallel computation of this process (burn's CPU
/// backend, the kernels, the shards of a batch and the analyses all use rayon's global pool):
/// `n` of them, or with `None` rayon's default (`RAYON_NUM_THREADS`, else one per core). Each
/// runs with denormal floats flushed to zero (see [`without_denormals`]). Call it once, before
/// any computation, from inside [`without_denormals`], as the `mnist-ae` binary does:
/// `without_denormals(|| { set_threads(None)?; … })`, so that the calling thread computes
/// like the workers; results do not depend on `n`.
pub fn set_threads(n: Option<usize>) -> Result<()> {
    if let Some(n) = n.filter(|n| *n == 0 || *n > 1024) {
        return Err(Error::config("threads", format!("{n} is not in 1..=1024")));
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(n.unwrap_or(0))
        .thread_name(|i| format!("mnist-ae-worker-{i}"))
        .spawn_handler(spawn_worker)
        .build_global()
        .map_err(|e| Error::config("threads", e.to_string()))
}

/// Runs `f` with a one-thread rayon pool as its pool (or, where that pool cannot be made, in
/// the current one): for computations whose parallel sums would otherwise round differently
/// from run to run, or whose pieces are too small to be worth handing to other threads.
pub fn on_one_thread<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    on_threads(1, f)
}

/// Runs `f` with a rayon pool of `n` workers (flushing denormals, like the global pool's) as
/// its pool; with `n` > 1, in the current pool instead where that one has no more than `n`
/// workers; in the current pool where a new one cannot be made.
pub fn on_threads<R: Send>(n: usize, f: impl FnOnce() -> R + Send) -> R {
    if n > 1 && rayon::current_num_threads() <= n {
        return f();
    }
    match rayon::ThreadPoolBuilder::new()
        .num_threads(n.max(1))
        .thread_name(|i| format!("mnist-ae-pool-{i}"))
        .spawn_handler(spawn_worker)
        .build()
    {
        Ok(pool) => pool.install(f),
        Err(_) => f(),
    }
}

/// Starts one rayon worker, which runs with denormals flushed to zero.
fn spawn_worker(worker: rayon::ThreadBuilder) -> std::io::Result<()> {
    let mut thread = std::thread::Builder::new();
    if let Some(name) = worker.name() {
        thread = thread.name(name.to_owned());
    }
    if let Some(size) = worker.stack_size() {
        thread = thread.stack_size(size);
    }
    thread.spawn(move || without_denormals(|| worker.run()))?;
    Ok(())
}

/// Runs `f` on this thread with denormal floats (`f32` magnitudes below 1.2e-38, `f64` below
/// 2.2e-308) flushed to zero, as inputs and as results. Training makes such numbers after a
/// while, and the CPU computes with them many times slower than with normal ones: conv64's
/// epochs after the first ran about 1.4× slower without this, to bit-identical weights
/// (BENCHMARKS.md). Numbers that small are far below anything a loss or a metric resolves.
/// Where the CPU has no such mode, `f` just runs.
pub fn without_denormals<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64"))]
    // SAFETY: the CPU's flush-to-zero and denormals-are-zero flags are set for this thread
    // and restored when `f` returns or unwinds (threads started inside `f` may inherit them,
    // as rayon's workers and the explorer's blocking threads get them explicitly). Rust
    // assumes them off, so a denormal result computed at run time can differ from the same
    // expression folded by the compiler. Neither this crate nor the code it runs under the
    // flags (burn, gemm, bhtsne, plotters, image) depends on a float's value for memory
    // safety; denormals read as zero, so what is computed from them changes accordingly
    // (this crate's divisions and logarithms are guarded by floors of normal size).
    return unsafe { no_denormals::no_denormals(f) };
    #[cfg(not(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64")))]
    f()
}

#[cfg(all(
    test,
    any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64")
))]
mod tests {
    use super::*;
    use std::hint::black_box;

    /// 1e-30 × 1e-10 = 1e-40, a denormal `f32`.
    fn tiny_product() -> f32 {
        black_box(1e-30f32) * black_box(1e-10f32)
    }

    #[test]
    fn a_smaller_pool_only_where_the_current_one_is_larger() {
        fn in_pool<R: Send>(n: usize, f: impl FnOnce() -> R + Send) -> R {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .unwrap()
                .install(f)
        }
        assert_eq!(in_pool(4, || on_threads(2, rayon::current_num_threads)), 2);
        assert_eq!(in_pool(2, || on_threads(3, rayon::current_num_threads)), 2);
        assert_eq!(in_pool(3, || on_one_thread(rayon::current_num_threads)), 1);
        // The smaller pool's workers flush denormals, where the outer pool's do not.
        assert_ne!(in_pool(4, tiny_product), 0.0);
        assert_eq!(in_pool(4, || on_threads(2, tiny_product)), 0.0);
    }

    #[test]
    fn denormals_are_flushed_inside_and_restored_after() {
        assert!(tiny_product() > 0.0, "denormals are kept by default");
        assert_eq!(without_denormals(tiny_product), 0.0);
        assert!(tiny_product() > 0.0, "the flags are restored afterwards");
    }

    #[test]
    fn workers_flush_denormals() {
        assert_eq!(on_one_thread(tiny_product), 0.0);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .spawn_handler(spawn_worker)
            .build()
            .unwrap();
        let products: Vec<f32> = pool.broadcast(|_| tiny_product());
        assert_eq!(products, vec![0.0, 0.0]);
    }
}

/// Bytes of memory the system can still give this process (Linux's `MemAvailable`), or `None`
/// where that is not known. Read from `/proc/meminfo` by hand: one line of a file the kernel
/// documents, where a crate for system facts would bring far more than that.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}
