//! `train --resume` with other flags: which of them ask for something else than the run's
//! config.

use anyhow::Result;
use mnist_ae::config::{Keep, Loss, Scheduler, TrainConfig};

use super::{KeepArg, LossArg, SchedulerArg, TrainArgs};

/// The flags given with `--resume` that ask for something else than the run's config, as
/// `--flag value (the run has value)`. Only `--epochs` (more epochs) and the flags that do not
/// change the run (device, output, data location) may go with `--resume`.
pub(super) fn resume_conflicts(
    a: &TrainArgs,
    given: &[String],
    run: &TrainConfig,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut differs = |flag: &str, ours: String, theirs: String| {
        if ours != theirs {
            out.push(format!("--{flag} {ours} (the run has {theirs})"));
        }
    };
    let is = |id: &str| given.iter().any(|g| g == id);
    let scheduler_name = |s: &Scheduler| match s {
        Scheduler::None => "none",
        Scheduler::Plateau { .. } => "plateau",
        Scheduler::Cosine { .. } => "cosine",
    };
    if [
        "model",
        "encoder",
        "decoder",
        "arch",
        "output",
        "variational",
        "init",
    ]
    .iter()
    .any(|f| is(f))
    {
        let ours = a.model.config(a.latent.latent_dim)?;
        if ours.spec != run.model.spec {
            let flag = if a.model.is_custom() {
                "encoder"
            } else {
                "model"
            };
            let show = |m: &mnist_ae::model::ModelConfig| match m.preset {
                Some(p) => p.name().to_string(),
                None => format!("\"{}\"", m.description()),
            };
            differs(flag, show(&ours), show(&run.model));
        }
    }
    if let (true, Some(l)) = (is("latent_dim"), a.latent.latent_dim) {
        differs(
            "latent-dim",
            l.to_string(),
            run.model.latent_dim.to_string(),
        );
    }
    if let (true, Some(b)) = (is("batch_size"), a.flags.batch_size) {
        differs("batch-size", b.to_string(), run.batch_size.to_string());
    }
    if is("dataset") {
        let mut c = run.clone();
        c.dataset = a.flags.dataset.clone();
        c.pin_data(None);
        differs("dataset", c.dataset, run.dataset.clone());
    }
    if is("lr") {
        differs("lr", a.flags.lr.to_string(), run.lr.to_string());
    }
    if let (true, Some(w)) = (is("weight_decay"), a.flags.weight_decay) {
        differs("weight-decay", w.to_string(), run.weight_decay.to_string());
    }
    if let (true, Some(l)) = (is("loss"), a.flags.loss) {
        let name = match l {
            LossArg::Mse => "mse",
            LossArg::Bce => "bce",
        };
        let theirs = match run.loss {
            Loss::Mse => "mse",
            Loss::Bce => "bce",
        };
        differs("loss", name.into(), theirs.into());
    }
    if is("beta") {
        differs("beta", a.flags.beta.to_string(), run.beta.to_string());
    }
    if is("scheduler") {
        let ours = match a.flags.scheduler {
            SchedulerArg::None => "none",
            SchedulerArg::Plateau => "plateau",
            SchedulerArg::Cosine => "cosine",
        };
        differs(
            "scheduler",
            ours.into(),
            scheduler_name(&run.scheduler).into(),
        );
    }
    let (factor, patience, min_lr) = match run.scheduler {
        Scheduler::Plateau {
            factor,
            patience,
            min_lr,
            ..
        } => (Some(factor), Some(patience), Some(min_lr)),
        Scheduler::Cosine { min_lr } => (None, None, Some(min_lr)),
        Scheduler::None => (None, None, None),
    };
    let or_absent = |v: Option<String>| {
        v.unwrap_or_else(|| {
            format!(
                "no such setting: scheduler {}",
                scheduler_name(&run.scheduler)
            )
        })
    };
    if is("plateau_factor") {
        differs(
            "plateau-factor",
            a.flags.plateau_factor.to_string(),
            or_absent(factor.map(|v| v.to_string())),
        );
    }
    if is("plateau_patience") {
        differs(
            "plateau-patience",
            a.flags.plateau_patience.to_string(),
            or_absent(patience.map(|v| v.to_string())),
        );
    }
    if is("min_lr") {
        differs(
            "min-lr",
            a.flags.min_lr.to_string(),
            or_absent(min_lr.map(|v| v.to_string())),
        );
    }
    if is("seed") {
        differs("seed", a.flags.seed.to_string(), run.seed.to_string());
    }
    if is("noise_std") {
        differs(
            "noise-std",
            a.flags.noise_std.to_string(),
            run.noise_std.to_string(),
        );
    }
    if is("valid_fraction") {
        differs(
            "valid-fraction",
            a.flags.valid_fraction.to_string(),
            run.valid_fraction.to_string(),
        );
    }
    if let (true, Some(s)) = (is("shards"), a.flags.shards) {
        differs("shards", s.to_string(), run.shards.to_string());
    }
    if let (true, Some(l)) = (is("limit_train"), a.flags.limit_train) {
        let theirs = run
            .limit_train
            .map(|v| v.to_string())
            .unwrap_or_else(|| "none".into());
        differs("limit-train", l.to_string(), theirs);
    }
    if is("early_stop") {
        let show = |v: Option<usize>| v.map_or("none".to_string(), |p| p.to_string());
        differs("early-stop", show(a.flags.early_stop), show(run.early_stop));
    }
    if is("keep") {
        let ours = match a.flags.keep {
            KeepArg::Last => Keep::Last,
            KeepArg::Best => Keep::Best,
        };
        differs("keep", ours.name().into(), run.keep.name().into());
    }
    Ok(out)
}
