//! Training: the loop, the learning-rate schedule, losses, checkpoints and progress.

pub mod checkpoint;
pub mod loss;
pub mod metrics;
pub mod progress;
pub mod run;
pub mod schedule;

pub use run::{train, TrainOptions, TrainOutcome, CONFIG_FILE};
