//! Human progress on stderr: an indicatif bar per epoch on a terminal, plain lines elsewhere
//! (CI, pipes), in one fixed format.

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

/// Progress of one epoch.
pub struct EpochProgress {
    bar: Option<ProgressBar>,
    label: String,
    total: usize,
    next_line: usize,
    start: Instant,
}

impl EpochProgress {
    /// Starts the display for `total` images of epoch `epoch` of `epochs`.
    pub fn new(epoch: usize, epochs: usize, total: usize, quiet: bool) -> Self {
        let label = format!("epoch {epoch}/{epochs}");
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::new(total as u64);
            b.set_style(
                ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            b.set_prefix(label.clone());
            b
        });
        EpochProgress {
            bar,
            label,
            total,
            next_line: if quiet { usize::MAX } else { total / 4 },
            start: Instant::now(),
        }
    }

    /// Reports `done` images so far and the running loss.
    pub fn update(&mut self, done: usize, loss: f64) {
        let rate = done as f64 / self.start.elapsed().as_secs_f64().max(1e-9);
        if let Some(b) = &self.bar {
            b.set_position(done as u64);
            b.set_message(format!("loss {loss:.5} {rate:.0} img/s"));
        } else if done >= self.next_line && done < self.total {
            crate::errln!(
                "{} {done}/{} loss {loss:.5} {rate:.0} img/s",
                self.label,
                self.total
            );
            self.next_line = done + self.total / 4;
        }
    }

    /// Removes the bar.
    pub fn finish(self) {
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}
