//! How far apart two CPUs are: the round trip of a cache line between a thread pinned to CPU
//! `a` and one pinned to CPU `b`, in nanoseconds (the median of 7 runs of 100,000 round trips).
//!
//!   rustc -O --edition 2021 -o target/core_latency bench/core_latency.rs
//!   target/core_latency [A B]        (default: CPUs 0 and 1)
//!
//! Two cores that share a cache cluster answer in tens of nanoseconds; two on different dies
//! (or sockets) in hundreds. A virtual machine's host may move its virtual CPUs between such
//! placements while it runs, and everything that moves data between the threads of a training
//! step (the shards' gradients, the updated weights) slows down with it: `bench/scaling.sh`
//! records this figure around each run for that reason. Linux only (`sched_setaffinity`); it
//! uses no crate, so that it builds with `rustc` alone, outside the project's build.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

const TRIPS: u64 = 100_000;

extern "C" {
    fn sched_setaffinity(pid: i32, size: usize, mask: *const u64) -> i32;
}

/// Pins the calling thread to `cpu`; false where the kernel refuses.
fn pin(cpu: usize) -> bool {
    let mut mask = [0u64; 16];
    if cpu >= mask.len() * 64 {
        return false;
    }
    mask[cpu / 64] |= 1 << (cpu % 64);
    // SAFETY: `mask` is a live array of `size_of_val(&mask)` bytes for the call's duration;
    // pid 0 is the calling thread.
    unsafe { sched_setaffinity(0, std::mem::size_of_val(&mask), mask.as_ptr()) == 0 }
}

/// Cache-line aligned, so that the flag shares its line with nothing else.
#[repr(align(128))]
struct Line(AtomicU64);

/// Whether the second thread could not run on its CPU.
static FAILED: AtomicBool = AtomicBool::new(false);

/// One run: nanoseconds per round trip between CPUs `a` and `b`.
fn run(a: usize, b: usize) -> Result<f64, String> {
    let flag = Arc::new(Line(AtomicU64::new(0)));
    let other = {
        let flag = Arc::clone(&flag);
        std::thread::spawn(move || {
            if !pin(b) {
                FAILED.store(true, Ordering::Release);
                return false;
            }
            // Spins without a pause hint, which would add its own delay to every trip.
            for i in 0..TRIPS {
                while flag.0.load(Ordering::Acquire) != 2 * i + 1 {}
                flag.0.store(2 * i + 2, Ordering::Release);
            }
            true
        })
    };
    if !pin(a) {
        return Err(format!("cannot run on CPU {a}"));
    }
    let t0 = Instant::now();
    for i in 0..TRIPS {
        flag.0.store(2 * i + 1, Ordering::Release);
        while flag.0.load(Ordering::Acquire) != 2 * i + 2 {
            if i == 0 && FAILED.load(Ordering::Acquire) {
                return Err(format!("cannot run on CPU {b}"));
            }
        }
    }
    let ns = t0.elapsed().as_nanos() as f64 / TRIPS as f64;
    match other.join() {
        Ok(true) => Ok(ns),
        _ => Err(format!("cannot run on CPU {b}")),
    }
}

fn main() {
    let args: Vec<usize> = match std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()
    {
        Ok(v) => v,
        Err(e) => {
            eprintln!("core_latency: {e}; usage: core_latency [A B]");
            std::process::exit(2);
        }
    };
    let (a, b) = match args[..] {
        [] => (0, 1),
        [a, b] if a != b => (a, b),
        _ => {
            eprintln!("core_latency: usage: core_latency [A B], two different CPUs");
            std::process::exit(2);
        }
    };
    let mut runs = Vec::new();
    for _ in 0..7 {
        match run(a, b) {
            Ok(ns) => runs.push(ns),
            Err(e) => {
                eprintln!("core_latency: {e}");
                std::process::exit(1);
            }
        }
    }
    runs.sort_by(f64::total_cmp);
    println!("{:.0}", runs[runs.len() / 2]);
}
