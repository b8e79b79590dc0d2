//! Training end to end with the real binary on real MNIST subsets.

use std::collections::HashMap;
use std::path::Path;

use safetensors::SafeTensors;

use crate::common::{fails, mnist_dir, ok};

fn train_args<'a>(data: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "train",
        "--data-dir",
        data,
        "--no-download",
        "--out",
        out,
        "-q",
    ];
    v.extend_from_slice(extra);
    v
}

fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn weights(path: &Path) -> HashMap<String, Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| (n, v.data().to_vec()))
        .collect()
}

#[test]
fn a_short_real_run_lowers_the_loss_and_writes_its_folder() {
    let data = mnist_dir();
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let (d, r) = (data.to_str().unwrap(), run.to_str().unwrap());
    ok(&train_args(
        d,
        r,
        &[
            "--model",
            "conv64",
            "--epochs",
            "3",
            "--limit-train",
            "10000",
        ],
    ));
    for f in [
        "config.json",
        "model.safetensors",
        "resume.safetensors",
        "metrics.jsonl",
        "loss.png",
    ] {
        assert!(run.join(f).exists(), "{f} missing");
    }
    let m = metrics(&run);
    assert_eq!(m.len(), 3);
    let t: Vec<f64> = m
        .iter()
        .map(|r| r["train_loss"].as_f64().unwrap())
        .collect();
    let v: Vec<f64> = m
        .iter()
        .map(|r| r["valid_loss"].as_f64().unwrap())
        .collect();
    assert!(
        t[2] < t[1] && t[1] < t[0] && v[2] < v[1] && v[1] < v[0],
        "train {t:?} valid {v:?}"
    );
    // Predicting the mean image gives MSE ~0.067 on MNIST; after 3 epochs we must beat it.
    assert!(v[2] < 0.06, "valid {v:?}");
    let png = std::fs::read(run.join("loss.png")).unwrap();
    assert_eq!(&png[..4], b"\x89PNG");
    // An existing run is never overwritten.
    let e = fails(&train_args(d, r, &["--model", "conv64", "--epochs", "1"]));
    assert!(e.contains("already holds a trained model"), "{e}");
}

#[test]
fn resume_gives_the_same_weights_as_an_uninterrupted_run() {
    let data = mnist_dir();
    let tmp = tempfile::tempdir().unwrap();
    let full = tmp.path().join("full");
    let part = tmp.path().join("part");
    let d = data.to_str().unwrap();
    let common = [
        "--model",
        "mlp",
        "--latent-dim",
        "8",
        "--epochs",
        "3",
        "--limit-train",
        "2000",
        "--noise-std",
        "0.2",
        "--scheduler",
        "plateau",
        "--plateau-patience",
        "0",
    ];
    ok(&train_args(d, full.to_str().unwrap(), &common));
    let mut first = common.to_vec();
    first.extend(["--stop-after", "1"]);
    ok(&train_args(d, part.to_str().unwrap(), &first));
    assert_eq!(metrics(&part).len(), 1);
    ok(&[
        "train",
        "--resume",
        part.to_str().unwrap(),
        "--data-dir",
        d,
        "--no-download",
        "-q",
    ]);
    assert_eq!(metrics(&part).len(), 3);
    let a = weights(&full.join("model.safetensors"));
    let b = weights(&part.join("model.safetensors"));
    assert_eq!(a.len(), b.len());
    for (name, wa) in &a {
        assert!(wa == &b[name], "{name} differs after resume");
    }
    let (ma, mb) = (metrics(&full), metrics(&part));
    for (x, y) in ma.iter().zip(&mb) {
        assert_eq!(x["valid_loss"], y["valid_loss"]);
        assert_eq!(x["lr"], y["lr"]);
    }
}

#[test]
fn cosine_schedule_anneals_the_lr_over_the_epochs() {
    let data = mnist_dir();
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("cos");
    ok(&train_args(
        data.to_str().unwrap(),
        run.to_str().unwrap(),
        &[
            "--model",
            "mlp",
            "--latent-dim",
            "8",
            "--epochs",
            "3",
            "--limit-train",
            "1000",
            "--scheduler",
            "cosine",
            "--min-lr",
            "0",
        ],
    ));
    // lr · (1 + cos(π e / 3)) / 2 for e = 0, 1, 2.
    let lrs: Vec<f64> = metrics(&run)
        .iter()
        .map(|m| m["lr"].as_f64().unwrap())
        .collect();
    assert_eq!(lrs.len(), 3);
    for (a, b) in lrs.iter().zip([1e-3, 7.5e-4, 2.5e-4]) {
        assert!((a - b).abs() < 1e-12, "{lrs:?}");
    }
}

#[test]
fn bad_flags_are_refused_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r");
    let o = out.to_str().unwrap();
    for (flags, needle) in [
        (vec!["--epochs", "0"], "epochs"),
        (vec!["--batch-size", "0"], "batch-size"),
        (vec!["--lr", "NaN"], "lr"),
        (vec!["--lr", "inf"], "lr"),
        (vec!["--lr=-1"], "lr"),
        (vec!["--lr", "-1"], "invalid lr: -1"),
        (vec!["--seed", "1.5"], "not a whole number"),
        (
            vec!["--valid-fraction", "0", "--early-stop", "2"],
            "no validation set",
        ),
        (vec!["--early-stop", "0"], "early-stop"),
        (vec!["--threads", "0"], "threads"),
        (vec!["--noise-std=-0.1"], "noise-std"),
        (
            vec!["--model", "resnet"],
            "[possible values: conv64, conv7, linear3, mlp, cae32, vae]",
        ),
        (vec!["--model", "cae32", "--loss", "bce"], "bce"),
        (vec!["--latent-dim", "0"], "latent-dim"),
        (vec!["--scheduler", "cosine", "--min-lr", "0.01"], "min-lr"),
        (
            vec!["--device", "tpu"],
            "[possible values: cpu, wgpu, cuda]",
        ),
        (vec!["--device", "cuda"], "built without"),
    ] {
        let mut a = vec![
            "train",
            "--out",
            o,
            "--no-download",
            "--data-dir",
            "/nonexistent",
        ];
        a.extend(flags);
        let e = fails(&a);
        assert!(e.contains(needle), "{a:?}: {e}");
        assert!(!out.exists(), "{a:?} created the run folder");
    }
}

#[test]
fn a_diverging_run_stops_with_a_hint_and_writes_no_weights() {
    let data = mnist_dir();
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("nan");
    let e = fails(&train_args(
        data.to_str().unwrap(),
        run.to_str().unwrap(),
        &[
            "--model",
            "mlp",
            "--loss",
            "bce",
            "--lr",
            "1e30",
            "--epochs",
            "2",
            "--limit-train",
            "1000",
        ],
    ));
    assert!(
        e.contains("training loss became NaN in epoch 1") && e.contains("lower --lr"),
        "{e}"
    );
    assert!(!run.join("model.safetensors").exists());
}

#[test]
fn weights_gone_to_nan_under_a_finite_loss_stop_the_run_with_a_hint() {
    // At this rate linear3's weights overflow in the first epoch while its ReLUs turn the
    // NaNs they meet into zeros, so the loss stays finite.
    let data = mnist_dir();
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("nan");
    let e = fails(&train_args(
        data.to_str().unwrap(),
        run.to_str().unwrap(),
        &[
            "--model",
            "linear3",
            "--lr",
            "1e10",
            "--epochs",
            "2",
            "--limit-train",
            "1000",
        ],
    ));
    assert!(
        e.contains("the weights became NaN in epoch 1")
            && e.contains("no checkpoint was written")
            && e.contains("lower --lr"),
        "{e}"
    );
    assert!(!run.join("model.safetensors").exists());
}

#[test]
fn a_run_that_fails_after_taking_a_new_folder_leaves_none_behind() {
    let data = mnist_dir();
    let d = data.to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let new = tmp.path().join("new");
    let n = new.to_str().unwrap();
    // Refused once the data is read: more images per batch than there are.
    let e = fails(&train_args(
        d,
        n,
        &[
            "--model",
            "mlp",
            "--limit-train",
            "500",
            "--batch-size",
            "100000",
        ],
    ));
    assert!(e.contains("more than the 450 training images"), "{e}");
    assert!(!new.exists(), "the failed run left its folder");
    // A model whose weights, gradients and Adam's state would not fit in memory (over 200
    // GiB): refused, where allocating them would abort the process.
    let e = fails(&train_args(
        d,
        n,
        &[
            "--encoder",
            "flatten linear(65536) relu linear(65536) relu linear(65536) linear(8)",
            "--decoder",
            "mirror",
        ],
    ));
    assert!(
        e.contains("more than the") && e.contains("GiB of memory free"),
        "{e}"
    );
    assert!(!new.exists(), "the refused run left its folder");
    // A folder that was there before is left, and is not taken for a run.
    std::fs::create_dir(&new).unwrap();
    fails(&train_args(
        d,
        n,
        &[
            "--model",
            "mlp",
            "--limit-train",
            "500",
            "--batch-size",
            "100000",
        ],
    ));
    assert!(new.is_dir());
    let e = fails(&["eval", n, "--data-dir", d]);
    assert!(
        e.contains("not a run folder (it has no config.json)"),
        "{e}"
    );
}

#[test]
/// SIGTERM (what docker, SLURM and systemd send; Ctrl-C's SIGINT takes the same path) stops
/// training mid-epoch with a checkpoint labelled with its epoch and batch, and `--resume`
/// ends with exactly the weights of an uninterrupted run.
fn sigterm_saves_a_labelled_checkpoint_and_resume_matches_an_uninterrupted_run() {
    let data = mnist_dir();
    let d = data.to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (full, cut) = (tmp.path().join("full"), tmp.path().join("cut"));
    let common = [
        "--model",
        "conv64",
        "--epochs",
        "2",
        "--limit-train",
        "12000",
        "--batch-size",
        "16",
    ];
    ok(&train_args(d, full.to_str().unwrap(), &common));

    let mut args = train_args(d, cut.to_str().unwrap(), &common);
    args.retain(|a| *a != "-q");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mnist-ae"))
        .args(&args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the first progress line of epoch 1, then stop the process there (SIGSTOP) so
    // that the termination signal lands mid-epoch whatever the machine's load.
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if std::io::BufRead::read_line(&mut err, &mut line).unwrap() == 0 {
            panic!("training ended before it could be interrupted:\n{seen}");
        }
        seen.push_str(&line);
        if line.starts_with("epoch 1/2 ") && line.contains("img/s") {
            break;
        }
    }
    let pid = child.id().to_string();
    for sig in ["-STOP", "-TERM", "-CONT"] {
        assert!(std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success());
    }
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{rest}");
    assert!(
        rest.contains("interrupted in epoch 1 after") && rest.contains("--resume"),
        "{rest}"
    );
    assert!(cut.join("model.safetensors").exists() && cut.join("resume.safetensors").exists());
    // The checkpoint says what it holds: epoch 0 complete, some batches of epoch 1.
    let eval_out = tmp.path().join("eval");
    let shown = ok(&[
        "eval",
        cut.to_str().unwrap(),
        "--data-dir",
        d,
        "--no-download",
        "--out",
        eval_out.to_str().unwrap(),
    ]);
    assert!(
        shown.contains("epoch 0 + ")
            && shown.contains("batches of epoch 1 (interrupted mid-epoch)"),
        "{shown}"
    );
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(eval_out.join("eval.json")).unwrap())
            .unwrap();
    assert_eq!(j["epoch"], 0);
    assert!(j["batch"].as_u64().unwrap() > 0, "{j}");

    ok(&[
        "train",
        "--resume",
        cut.to_str().unwrap(),
        "--data-dir",
        d,
        "--no-download",
        "-q",
    ]);
    let (a, b) = (
        weights(&full.join("model.safetensors")),
        weights(&cut.join("model.safetensors")),
    );
    assert_eq!(a.len(), b.len());
    for (name, wa) in &a {
        assert!(
            wa == &b[name],
            "{name} differs after an interrupted run was resumed"
        );
    }
    let (ma, mb) = (metrics(&full), metrics(&cut));
    assert_eq!(ma.len(), 2);
    for (x, y) in ma.iter().zip(&mb) {
        assert_eq!(x["train_loss"], y["train_loss"]);
        assert_eq!(x["valid_loss"], y["valid_loss"]);
    }
}

#[test]
fn a_variational_model_with_a_tanh_output_reports_no_elbo() {
    // Its pixels in [-1, 1] are no Bernoulli probabilities: a bound on them would be a
    // number without meaning (it came out positive).
    let data = mnist_dir();
    let d = data.to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("tanh-vae");
    let r = run.to_str().unwrap();
    ok(&train_args(
        d,
        r,
        &[
            "--encoder",
            "flatten linear(64) relu linear(8)",
            "--decoder",
            "linear(784) reshape(1,28,28)",
            "--output",
            "tanh",
            "--variational",
            "--loss",
            "mse",
            "--epochs",
            "1",
            "--limit-train",
            "1000",
        ],
    ));
    let out = ok(&["eval", r, "--data-dir", d, "--no-download"]);
    assert!(out.contains("PSNR") && !out.contains("ELBO"), "{out}");
    let json = std::fs::read_to_string(run.join("eval.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(v["elbo"].is_null(), "{v}");
}

#[test]
fn a_short_vae_run_learns_and_reports_its_elbo() {
    let data = mnist_dir();
    let d = data.to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("vae");
    let r = run.to_str().unwrap();
    ok(&train_args(
        d,
        r,
        &[
            "--model",
            "vae",
            "--epochs",
            "2",
            "--limit-train",
            "4000",
            "--batch-size",
            "32",
        ],
    ));
    let m = metrics(&run);
    let t: Vec<f64> = m
        .iter()
        .map(|r| r["train_loss"].as_f64().unwrap())
        .collect();
    // Negative ELBO per image in nats: 784·ln 2 ≈ 543 for a uniform guess; training goes well below.
    assert!(t[1] < t[0] && t[1] < 250.0, "train {t:?}");
    let out = ok(&["eval", r, "--data-dir", d, "--no-download"]);
    let elbo: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("ELBO "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(elbo < 0.0 && elbo > -250.0, "ELBO {elbo}");
    let out = ok(&[
        "sample",
        r,
        "--data-dir",
        d,
        "--no-download",
        "--count",
        "9",
    ]);
    assert!(out.contains("from the prior N(0, I)"), "{out}");

    // Samples judged by another run's encoder + an MLP classifier on its codes: classed well
    // above chance (0.1), though below real test images. (Measured with full runs: the default
    // 10-epoch VAE judged by the 10-epoch conv64 gets mean probability 0.920, 75.0% of samples
    // at 0.9 or more; real test images 0.992 and 97.2%.)
    let judge = crate::common::short_run();
    ok(&[
        "sample",
        r,
        "--data-dir",
        d,
        "--no-download",
        "--count",
        "64",
        "--judge",
        judge.to_str().unwrap(),
    ]);
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("samples.json")).unwrap()).unwrap();
    let (mean, real) = (
        j["judged"]["mean_confidence"].as_f64().unwrap(),
        j["judged"]["real_mean_confidence"].as_f64().unwrap(),
    );
    assert!(
        mean > 0.3 && real > mean,
        "samples {mean}, real images {real}"
    );
    assert_eq!(j["judged"]["classifier"], "mlp");
    // The judge itself labels real test images it never saw far above chance.
    let acc = j["judged"]["real_accuracy"].as_f64().unwrap();
    assert!(acc > 0.8, "judge accuracy on real test images {acc}");
    let e = fails(&[
        "sample",
        r,
        "--data-dir",
        d,
        "--no-download",
        "--judge",
        judge.to_str().unwrap(),
        "--judge-classifier",
        "rbf",
    ]);
    assert!(e.contains("no probabilities"), "{e}");
    assert_eq!(j["judged"]["classes"].as_array().unwrap().len(), 64);
    // A judge trained on another named dataset has other classes: refused before it is fitted.
    let fashion = tmp.path().join("fashion-judge");
    crate::common::copy_of_short_run(&fashion);
    let cfg = std::fs::read_to_string(fashion.join("config.json")).unwrap();
    let cfg = cfg.replacen(
        "\"dataset\": \"mnist\"",
        "\"dataset\": \"fashion-mnist\"",
        1,
    );
    assert!(cfg.contains("fashion-mnist"));
    std::fs::write(fashion.join("config.json"), cfg).unwrap();
    let e = fails(&[
        "sample",
        r,
        "--data-dir",
        d,
        "--no-download",
        "--judge",
        fashion.to_str().unwrap(),
    ]);
    assert!(
        e.contains("the judge was trained on fashion-mnist, the samples come from a run on mnist"),
        "{e}"
    );
}

#[test]
fn killing_training_mid_save_never_leaves_a_broken_checkpoint() {
    use mnist_ae::model::{ModelConfig, Preset};
    use mnist_ae::train::checkpoint::{load_model, load_resume};
    let data = mnist_dir();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = ModelConfig::of_preset(Preset::Mlp, 8);
    let mut checked = 0;
    // mlp on 1,800 images saves a checkpoint about every 0.1 s; SIGKILL lands at varied points.
    for (i, ms) in [700u64, 950, 1200, 1450, 1700].into_iter().enumerate() {
        let run = tmp.path().join(format!("k{i}"));
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mnist-ae"))
            .args(train_args(
                data.to_str().unwrap(),
                run.to_str().unwrap(),
                &[
                    "--model",
                    "mlp",
                    "--latent-dim",
                    "8",
                    "--epochs",
                    "500",
                    "--limit-train",
                    "2000",
                ],
            ))
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(ms));
        child.kill().unwrap();
        child.wait().unwrap();
        let model = run.join("model.safetensors");
        if !model.exists() {
            continue;
        }
        let device = burn::tensor::Device::flex();
        let (weights, info) =
            load_model(&model, &cfg, &device).expect("model.safetensors intact after SIGKILL");
        let resume = run.join("resume.safetensors");
        if resume.exists() {
            let optim = mnist_ae::kernels::adam::Adam::new(1e-8, 0.0);
            let (_, state) = load_resume(&resume, &weights, optim)
                .expect("resume.safetensors intact after SIGKILL");
            // The two files are written in turn, so they may be one epoch apart, never more.
            assert!(
                info.epoch.abs_diff(state.epoch) <= 1,
                "{} vs {}",
                info.epoch,
                state.epoch
            );
        }
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} runs got far enough to save");
}

/// The first 200 MNIST training images (180 of them training, 20 held out) and 10 test
/// images, for the step tests.
fn small_mnist() -> mnist_ae::data::Dataset {
    use mnist_ae::data::{load, LoadOptions, MNIST};
    load(&LoadOptions {
        spec: &MNIST,
        dir: &mnist_dir(),
        allow_download: false,
        valid_fraction: 0.1,
        seed: 42,
        limit_train: Some(200),
        limit_test: Some(10),
    })
    .unwrap()
}

/// A step on a batch's images, each shard converting its own, moves the weights exactly as the
/// step on the batch's tensors does: the same images reach the same shards, for 1, 2 and 3
/// shards (3 shards of 7 images cut unevenly) and a plain and a variational preset.
#[test]
fn a_step_on_images_is_the_step_on_their_tensors() {
    use burn::prelude::*;
    use mnist_ae::config::TrainConfig;
    use mnist_ae::model::Preset;
    use mnist_ae::train::run::optimizer;
    use mnist_ae::train::step::{step, step_images, StepAt};

    let data = small_mnist();
    let device = Device::flex().autodiff();
    // Scattered images in no particular order, as a shuffled epoch gives them.
    let idx: Vec<usize> = (0..20).map(|i| (i * 37 + 11) % 180).collect();
    let probe: Vec<usize> = (100..108).collect();
    for preset in [Preset::Mlp, Preset::Vae] {
        let scale = preset.activation().scale();
        for shards in [1, 2, 3] {
            let mut config = TrainConfig::for_preset(preset);
            config.shards = shards;
            let at = StepAt {
                epoch: 1,
                batch: 4,
                lr: 1e-3,
            };
            let run = |on_images: bool| {
                let _seeded = crate::common::seed_lock();
                device.seed(7);
                let model = config.model.init(&device).unwrap();
                let mut optim = optimizer(&config);
                let (model, loss) = if on_images {
                    step_images(
                        model,
                        &mut optim,
                        &config,
                        &data.train,
                        &idx,
                        scale,
                        at,
                        &device,
                    )
                } else {
                    let x = data.train.batch(&idx, scale, &device);
                    step(model, &mut optim, &config, x.clone(), x, at, &device)
                };
                let loss = loss.value();
                let out = model.forward(data.train.batch(&probe, scale, &device));
                (loss, out.into_data())
            };
            let (loss_t, out_t) = run(false);
            let (loss_i, out_i) = run(true);
            assert!(loss_t.is_finite() && loss_t > 0.0);
            assert_eq!(
                loss_i.to_bits(),
                loss_t.to_bits(),
                "{preset:?} {shards} shards"
            );
            assert_eq!(
                out_i, out_t,
                "{preset:?} {shards} shards: the models differ"
            );
        }
    }
}

/// A step with the batch cut into shards (trained in parallel, gradients combined) moves the
/// weights as the whole-batch step does, up to float rounding, for a plain and a variational
/// preset and a model with batch norms (whose shards normalise with the batch's statistics),
/// on real MNIST images; and both differ clearly from no step at all. Plain SGD, not Adam:
/// Adam's first step is blind to the gradients' scale, SGD's is not.
#[test]
fn sharded_step_matches_the_whole_batch_step() {
    use burn::optim::SgdConfig;
    use burn::prelude::*;
    use mnist_ae::config::TrainConfig;
    use mnist_ae::model::arch::{Init, ModelSpec};
    use mnist_ae::model::{Activation, ModelConfig, Preset};
    use mnist_ae::train::step::{step, StepAt};

    let data = small_mnist();
    let device = Device::flex().autodiff();
    let normed = ModelSpec::parse(
        "conv(8,3,s1,p1) bn relu maxpool(2) conv(8,3,s2,p1) bn flatten linear(16) bn relu \
         linear(8)",
        "linear(392) relu reshape(8,7,7) convt(4,4,s2,p1) bn relu convt(1,4,s2,p1)",
        Activation::Sigmoid,
        false,
        Init::Pytorch,
    )
    .and_then(ModelConfig::custom)
    .unwrap();
    for (model, batch) in [
        (ModelConfig::preset(Preset::Conv64), 32),
        (ModelConfig::preset(Preset::Vae), 33),
        (normed, 32),
    ] {
        let (preset, scale) = (model.description(), model.activation().scale());
        let idx: Vec<usize> = (0..batch).collect();
        let mut after = Vec::new();
        for shards in [1, 2, 3] {
            let mut config = TrainConfig::for_model(model.clone());
            config.shards = shards;
            let _seeded = crate::common::seed_lock();
            device.seed(7);
            let model = config.model.init(&device).unwrap();
            let before = model.forward(data.train.batch(&idx, scale, &device));
            let x = data.train.batch(&idx, scale, &device);
            let at = StepAt {
                epoch: 0,
                batch: 0,
                lr: 0.05,
            };
            let (model, loss) = step(
                model,
                &mut SgdConfig::new().init(),
                &config,
                x.clone(),
                x.clone(),
                at,
                &device,
            );
            let loss = loss.value();
            assert!(loss.is_finite() && loss > 0.0, "{preset:?} loss {loss}");
            let out = model.forward(x);
            let moved = (out.clone() - before).abs().max().into_scalar::<f32>();
            assert!(
                moved > 1e-3,
                "{preset:?}: one step moved outputs by only {moved}"
            );
            after.push((loss, out));
        }
        let (l1, o1) = &after[0];
        for (shards, (l, o)) in [2, 3].iter().zip(&after[1..]) {
            let diff = (o.clone() - o1.clone()).abs().max().into_scalar::<f32>();
            assert!(
                diff < 1e-4,
                "{preset:?} {shards} shards: outputs differ by {diff}"
            );
            assert!(
                (l - l1).abs() < 1e-5 * l1.abs().max(1.0),
                "{preset:?} {shards} shards: loss {l} vs {l1}"
            );
        }
    }
}
