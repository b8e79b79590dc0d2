//! Training: the loop, the learning-rate schedule, losses, checkpoints and progress.

pub mod announce;
pub mod checkpoint;
pub mod loss;
pub mod metrics;
mod params;
pub mod progress;
pub mod resume;
pub mod run;
pub mod schedule;
pub mod step;

pub use params::{initial, named_tensors};
pub use run::{train, TrainOptions, TrainOutcome};
