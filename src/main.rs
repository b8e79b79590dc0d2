//! The `mnist-ae` command: parses flags, converts them into library configs, calls the
//! library, and prints errors as one line with their causes (exit code 2).

mod cli;

use std::process::ExitCode;

use clap::FromArgMatches;

fn main() -> ExitCode {
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
