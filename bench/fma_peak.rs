//! The CPU's floating-point peak, measured: fused multiply-adds per second on 512-bit
//! (AVX-512) and 256-bit (AVX2) vectors of f32, on one thread and on every CPU at once, as
//! GFLOP/s (a multiply-add counts two). BENCHMARKS.md quotes what share of this figure a
//! training step uses; nominal figures (cores × base clock × units × lanes) miss turbo clocks
//! and how many 512-bit units a core really has, which this shows.
//!
//!   rustc -O --edition 2021 -o target/fma_peak bench/fma_peak.rs
//!   target/fma_peak
//!
//! Each thread runs twelve independent chains of multiply-adds (more than the units' latency
//! times their count, so that the units never wait), three times, and the best run counts.
//! x86-64 only; it uses no crate, so that it builds with `rustc` alone, outside the project's
//! build.

#[cfg(target_arch = "x86_64")]
mod peak {
    use std::arch::asm;
    use std::time::Instant;

    /// Rounds of the twelve multiply-adds in one run.
    const STEPS: u64 = 40_000_000;
    const CHAINS: u64 = 12;

    // In assembly, so that the loop is exactly twelve independent multiply-adds and a
    // counter: compiled from Rust, the optimiser may keep some chains in memory or drop one.
    macro_rules! chains {
        ($name:ident, $feature:literal, $r:literal) => {
            /// Runs `STEPS` rounds of `CHAINS` multiply-adds on registers 0–13 (sources 0 and 1).
            ///
            /// # Safety
            /// The CPU has the target feature.
            #[target_feature(enable = $feature)]
            unsafe fn $name() {
                // SAFETY: only the named vector registers and the counter are touched, all
                // declared clobbered; no memory is read or written.
                unsafe {
                    asm!(
                        concat!("vxorps ", $r, "0, ", $r, "0, ", $r, "0"),
                        concat!("vxorps ", $r, "1, ", $r, "1, ", $r, "1"),
                        "2:",
                        concat!("vfmadd231ps ", $r, "2, ", $r, "0, ", $r, "1"),
                        concat!("vfmadd231ps ", $r, "3, ", $r, "0, ", $r, "1"),
                        concat!("vfmadd231ps ", $r, "4, ", $r, "0, ", $r, "1"),
                        concat!("vfmadd231ps ", $r, "5, ", $r, "0, ", $r, "1"),
                        concat!("vfmadd231ps ", $r, "6, ", $r, "0, ", $r, "1"),
                        concat!("vfmadd231ps ", $r, "7, ", $r, "0, ", $r, "1"),
                        concat!("vfmadd231ps ", $r, "8, ", $r, "0, ", $r, "1"),
                        concat!("vfmadd231ps ", $r, "9, ", $r, "0, ", $r, "1"),
                        concat!("vfmadd231ps ", $r, "10, ", $r, "0, ", $r, "1"),
                        concat!("vfmadd231ps ", $r, "11, ", $r, "0, ", $r, "1"),
                        concat!("vfmadd231ps ", $r, "12, ", $r, "0, ", $r, "1"),
                        concat!("vfmadd231ps ", $r, "13, ", $r, "0, ", $r, "1"),
                        "dec {n}",
                        "jnz 2b",
                        n = inout(reg) STEPS => _,
                        out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _,
                        out("zmm4") _, out("zmm5") _, out("zmm6") _, out("zmm7") _,
                        out("zmm8") _, out("zmm9") _, out("zmm10") _, out("zmm11") _,
                        out("zmm12") _, out("zmm13") _,
                        options(nomem, nostack),
                    );
                }
            }
        };
    }
    chains!(zmm, "avx512f", "zmm");
    chains!(ymm, "avx512f", "ymm");
    chains!(ymm_avx2, "avx2,fma", "ymm");

    /// GFLOP/s of one thread running `f`: the best of three runs.
    fn gflops(f: unsafe fn(), lanes: u64) -> f64 {
        let best = (0..3)
            .map(|_| {
                let start = Instant::now();
                // SAFETY: `run` only passes a function whose feature the CPU has.
                unsafe { f() };
                start.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min);
        (STEPS * CHAINS * lanes * 2) as f64 / best / 1e9
    }

    pub fn run() {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let avx512 = is_x86_feature_detected!("avx512f");
        let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        // The 256-bit loop names registers 0–13, which AVX2 has too; it is compiled for
        // AVX-512 where the CPU has it only because `zmm` clobbers need that feature.
        let ymm_here: Option<unsafe fn()> = if avx512 {
            Some(ymm)
        } else if avx2 {
            Some(ymm_avx2)
        } else {
            None
        };
        let kinds: [(&str, Option<unsafe fn()>, u64); 2] = [
            ("512-bit (AVX-512)", avx512.then_some(zmm as unsafe fn()), 16),
            ("256-bit (AVX2)", ymm_here, 8),
        ];
        for (name, f, lanes) in kinds {
            let Some(f) = f else {
                println!("{name}: not on this CPU");
                continue;
            };
            let one = gflops(f, lanes);
            let each: Vec<f64> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads)
                    .map(|_| s.spawn(move || gflops(f, lanes)))
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let all: f64 = each.iter().sum();
            println!(
                "{name}: {one:.1} GFLOP/s on 1 thread, {all:.1} on {threads} at once ({})",
                each.iter()
                    .map(|g| format!("{g:.1}"))
                    .collect::<Vec<_>>()
                    .join(" + ")
            );
        }
    }
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    peak::run();
    #[cfg(not(target_arch = "x86_64"))]
    println!("fma_peak measures x86-64 vector units only");
}
