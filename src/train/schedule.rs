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

/// Where a run is when its schedule steps: the base lr, epochs finished, epochs in all.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// The configured (initial) learning rate.
    pub base_lr: f64,
    /// Epochs finished, counting the one that just ended.
    pub done: usize,
    /// Epochs of the run.
    pub epochs: usize,
}

/// The state after an epoch whose validation loss was `valid_loss`. The plateau schedule
/// mirrors PyTorch's `ReduceLROnPlateau(mode="min", threshold_mode="rel", cooldown=0)`, the
/// cosine one `CosineAnnealingLR(T_max=epochs, eta_min=min_lr)` stepped once per epoch.
pub fn step(
    scheduler: &Scheduler,
    s: ScheduleState,
    valid_loss: f64,
    at: Progress,
) -> ScheduleState {
    match *scheduler {
        Scheduler::Cosine { min_lr } => {
            let t = (at.done as f64 / at.epochs.max(1) as f64).min(1.0);
            ScheduleState {
                lr: min_lr + (at.base_lr - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()),
                best: s.best.min(valid_loss),
                bad_epochs: 0,
            }
        }
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

    fn at(done: usize) -> Progress {
        Progress {
            base_lr: 1e-3,
            done,
            epochs: 4,
        }
    }

    #[test]
    fn cosine_follows_pytorch_cosine_annealing() {
        // PyTorch 2.15: opt = Adam([p], lr=1e-3); s = CosineAnnealingLR(opt, T_max=4, eta_min=1e-5)
        // lr after each s.step(): 0.000855017856687341, 0.000505, 0.000154982143312659, 1e-05
        let sch = Scheduler::Cosine { min_lr: 1e-5 };
        let mut s = ScheduleState::new(1e-3);
        let mut lrs = Vec::new();
        for e in 1..=4 {
            s = step(&sch, s, 1.0 / e as f64, at(e));
            lrs.push(s.lr);
        }
        for (a, b) in lrs
            .iter()
            .zip([0.000855017856687341, 0.000505, 0.000154982143312659, 1e-05])
        {
            assert!((a - b).abs() < 1e-15, "{lrs:?}");
        }
        assert_eq!(s.best, 0.25);
        // Past the end (a resumed run with fewer epochs) it stays at min_lr.
        assert!((step(&sch, s, 0.1, at(6)).lr - 1e-5).abs() < 1e-15);
    }

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
            s = step(&sch, s, l, at(1));
            s.lr
        })
        .collect();
        assert_eq!(
            lrs,
            [1e-3, 1e-3, 1e-3, 1e-3, 5e-4, 5e-4, 5e-4, 5e-4, 2.5e-4, 2.5e-4, 2.5e-4, 1.25e-4]
        );
        // min_lr floors it.
        for _ in 0..10 {
            s = step(&sch, s, 0.6, at(1));
        }
        assert_eq!(s.lr, 1e-4);
        let none = step(&Scheduler::None, ScheduleState::new(1e-3), 0.3, at(1));
        assert_eq!((none.lr, none.best), (1e-3, 0.3));
    }
}
