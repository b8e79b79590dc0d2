//! Learning-rate schedules as pure functions of their state, so they checkpoint and test easily.

use serde::{Deserialize, Serialize};

use crate::config::Scheduler;

/// The state of the plateau schedule between epochs (saved in checkpoints).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScheduleState {
    /// The current learning rate.
    pub lr: f64,
    /// Best validation loss so far.
    pub best: f64,
    /// Epochs since `best` improved.
    pub bad_epochs: usize,
}

impl ScheduleState {
    /// The state before the first epoch.
    pub fn new(lr: f64) -> Self {
        ScheduleState {
            lr,
            // f64::MAX rather than infinity: the state is saved as JSON, which has no infinity.
            best: f64::MAX,
            bad_epochs: 0,
        }
    }
}

/// The state after an epoch whose validation loss was `valid_loss`. Mirrors PyTorch's
/// `ReduceLROnPlateau(mode="min", threshold_mode="rel", cooldown=0)`.
pub fn step(scheduler: &Scheduler, s: ScheduleState, valid_loss: f64) -> ScheduleState {
    match *scheduler {
        Scheduler::None => ScheduleState {
            best: s.best.min(valid_loss),
            ..s
        },
        Scheduler::Plateau {
            factor,
            patience,
            threshold,
            min_lr,
        } => {
            let improved = valid_loss < s.best * (1.0 - threshold);
            let (best, bad) = if improved {
                (valid_loss, 0)
            } else {
                (s.best, s.bad_epochs + 1)
            };
            if bad > patience {
                ScheduleState {
                    lr: (s.lr * factor).max(min_lr),
                    best,
                    bad_epochs: 0,
                }
            } else {
                ScheduleState {
                    lr: s.lr,
                    best,
                    bad_epochs: bad,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plateau_reduces_after_patience_epochs_without_improvement() {
        let sch = Scheduler::Plateau {
            factor: 0.5,
            patience: 2,
            threshold: 1e-4,
            min_lr: 1e-4,
        };
        let mut s = ScheduleState::new(1e-3);
        let lrs: Vec<f64> = [
            1.0, 0.9, 0.95, 0.92, 0.91, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6,
        ]
        .iter()
        .map(|&l| {
            s = step(&sch, s, l);
            s.lr
        })
        .collect();
        assert_eq!(
            lrs,
            [1e-3, 1e-3, 1e-3, 1e-3, 5e-4, 5e-4, 5e-4, 5e-4, 2.5e-4, 2.5e-4, 2.5e-4, 1.25e-4]
        );
        // min_lr floors it.
        for _ in 0..10 {
            s = step(&sch, s, 0.6);
        }
        assert_eq!(s.lr, 1e-4);
        let none = step(&Scheduler::None, ScheduleState::new(1e-3), 0.3);
        assert_eq!((none.lr, none.best), (1e-3, 0.3));
    }
}
