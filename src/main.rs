//! The `mnist-ae` command: parses flags, converts them into library configs, calls the
//! library, and prints errors as one line with their causes (exit code 2).

mod cli;

use std::process::ExitCode;

use clap::FromArgMatches;

/// mimalloc rather than the system's malloc: faster for training's many short-lived buffers,
/// most of all with several threads (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns off transparent huge pages for this process. mimalloc asks for them on its large
/// regions, and then every region it hands back to the system and takes again costs the
/// kernel a fault that zeroes 2 MiB: in bursts, up to 15% of a training run's samples in a
/// profile (BENCHMARKS.md). The training's buffers are small enough not to need huge pages.
#[cfg(target_os = "linux")]
fn no_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes plain integer arguments and only sets a flag of the
    // calling process; its result (ignored: without it the process runs as before) is an int.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

#[cfg(not(target_os = "linux"))]
fn no_huge_pages() {}

/// mimalloc's number for its purge delay option, `mi_option_purge_delay` in its `mimalloc.h`
/// (the Rust bindings name no constant for it; mimalloc keeps its options' numbers from
/// version to version, deprecated ones holding their places).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory in the process instead of handing it back to the system. mimalloc
/// hands back ("purges") memory that has stayed free for about a second, each time flushing
/// the other cores' address translations, and takes it again with a page fault per 4 KiB that
/// the kernel zeroes. A training step frees and takes again buffers of the same sizes, and
/// some of them went back and forth at every purge: without purging, training on two
/// threads takes a quarter of the page faults and runs 1.4–2.7% faster, for a peak memory some
/// tens of MiB higher (BENCHMARKS.md). Not for `serve`, a long-lived server whose memory
/// goes back when it is done with a request; nor when `MIMALLOC_PURGE_DELAY` is set, which
/// mimalloc then follows.
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: mi_option_set takes two integers and sets one option; it is not thread-safe,
    // and runs on the main thread before the command starts any other thread.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

fn main() -> ExitCode {
    no_huge_pages();
    let matches = cli::command().get_matches();
    let args = cli::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if !args.is_server() {
        keep_freed_memory();
    }
    match cli::run(args, &cli::given_flags(&matches)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            mnist_ae::errln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
