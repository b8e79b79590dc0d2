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

fn main() -> ExitCode {
    no_huge_pages();
    let matches = cli::command().get_matches();
    let args = cli::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match cli::run(args, &cli::given_flags(&matches)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            mnist_ae::errln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
