//! Lines for people on stdout and stderr that never panic: `println!` panics when its stream
//! is a pipe whose reader has quit (`mnist-ae eval RUN | head -1`), and a training run must not
//! die because nobody reads its progress. A failed write is dropped; the work goes on.

use std::fmt::Arguments;
use std::io::Write;

/// Writes one line to stdout, ignoring a closed or broken stream.
pub fn out(args: Arguments<'_>) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{args}");
}

/// Writes one line to stderr, ignoring a closed or broken stream.
pub fn err(args: Arguments<'_>) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "{args}");
}

/// `println!` that survives a closed stdout (see the module doc).
#[macro_export]
macro_rules! outln {
    ($($t:tt)*) => { $crate::console::out(format_args!($($t)*)) };
}

/// `eprintln!` that survives a closed stderr (see the module doc).
#[macro_export]
macro_rules! errln {
    ($($t:tt)*) => { $crate::console::err(format_args!($($t)*)) };
}

/// `n` and a noun in proper English: "1 epoch", "3 epochs", "2 batches".
pub fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else if ["tch", "sh", "s", "x"].iter().any(|e| noun.ends_with(e)) {
        format!("{n} {noun}es")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn plurals_are_english() {
        assert_eq!(super::plural(1, "epoch"), "1 epoch");
        assert_eq!(super::plural(0, "epoch"), "0 epochs");
        assert_eq!(super::plural(2, "batch"), "2 batches");
    }
}
