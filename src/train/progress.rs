//! Human progress on stderr: an indicatif bar per epoch on a terminal, plain lines elsewhere
//! (CI, pipes), in one fixed format.

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

/// `seconds` as people write a duration: "45s", "3m05s", "1h02m".
pub fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// The clock of a whole training call: epochs and images done so far, for the time left.
#[derive(Debug, Clone)]
pub struct RunClock {
    n_train: usize,
    epochs: usize,
    done: usize,
    seconds: f64,
    images: usize,
}

impl RunClock {
    /// A run of `epochs` epochs of `n_train` images, `done` of them already trained.
    pub fn new(n_train: usize, done: usize, epochs: usize) -> Self {
        RunClock {
            n_train,
            epochs,
            done,
            seconds: 0.0,
            images: 0,
        }
    }

    /// Records an epoch that took `seconds` for `images` images.
    pub fn epoch_done(&mut self, seconds: f64, images: usize) {
        self.done += 1;
        self.seconds += seconds;
        self.images += images;
    }

    /// Seconds the epochs not yet trained will take at the mean speed of this call's epochs
    /// (`None` before the first one ends).
    pub fn remaining(&self) -> Option<f64> {
        (self.images > 0).then(|| {
            self.epochs.saturating_sub(self.done) as f64 * self.n_train as f64 * self.seconds
                / self.images as f64
        })
    }
}

/// Progress of one epoch.
pub struct EpochProgress {
    bar: Option<ProgressBar>,
    label: String,
    total: usize,
    /// Images in the epochs after this one, for the time left of the whole run.
    later: usize,
    next_line: usize,
    start: Instant,
}

impl EpochProgress {
    /// Starts the display of epoch `epoch` (from 1) of the run `clock` times.
    pub fn new(epoch: usize, clock: &RunClock, quiet: bool) -> Self {
        let (total, epochs) = (clock.n_train, clock.epochs);
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
            later: epochs.saturating_sub(epoch) * total,
            next_line: if quiet { usize::MAX } else { total / 4 },
            start: Instant::now(),
        }
    }

    /// Reports `done` images so far and the running loss, with the time left until the last
    /// epoch ends at this epoch's speed.
    pub fn update(&mut self, done: usize, loss: f64) {
        let rate = done as f64 / self.start.elapsed().as_secs_f64().max(1e-9);
        let left = (self.total.saturating_sub(done) + self.later) as f64 / rate.max(1e-9);
        let eta = duration(left);
        if let Some(b) = &self.bar {
            b.set_position(done as u64);
            b.set_message(format!("loss {loss:.5} {rate:.0} img/s ETA {eta}"));
        } else if done >= self.next_line && done < self.total {
            crate::errln!(
                "{} {done}/{} loss {loss:.5} {rate:.0} img/s ETA {eta}",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(duration(0.4), "0s");
        assert_eq!(duration(59.4), "59s");
        assert_eq!(duration(65.0), "1m05s");
        assert_eq!(duration(3725.0), "1h02m");
    }

    #[test]
    fn the_time_left_is_the_epochs_left_at_the_mean_speed() {
        let mut c = RunClock::new(1000, 1, 5);
        assert_eq!(c.remaining(), None);
        c.epoch_done(2.0, 1000);
        c.epoch_done(4.0, 1000);
        // 3 of 5 done, 2 left at 3 s each.
        assert_eq!(c.remaining(), Some(6.0));
    }
}
