//! The GPU tier, built only with `--features wgpu` (`scripts/test-gpu.sh`): every preset trained
//! on the wgpu device against the CPU, the command line's computing commands run with
//! `--device wgpu`, and the error where there is no adapter. It needs a wgpu adapter; CI has no
//! GPU and installs Mesa's lavapipe, a Vulkan driver that runs on the CPU, so this tier checks
//! the GPU code path, not GPU speed (`bench/gpu.sh` measures that where there is a GPU).
//!
//! Both devices start from the same weights (drawn on the CPU from the seed), see the same
//! batches and the same noise, so a GPU run differs from the CPU run only by float rounding:
//! different kernels sum in different orders. Each comparison also checks that its tolerance
//! tells a different seed apart, so a GPU path that trained some other model would fail.
//!
//! A process's first computation on a wgpu device measures the device and tunes its kernels:
//! on lavapipe that takes about a minute. The preset comparison therefore runs inside this
//! test process, through the library, and the command line is run as few times as covers it.

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::tensor::Device;
use mnist_ae::config::TrainConfig;
use mnist_ae::data::idx::{encode_images, encode_labels, read_images, read_labels};
use mnist_ae::device::DeviceChoice;
use mnist_ae::model::PRESETS;
use mnist_ae::run::Run;
use mnist_ae::train::{train, TrainOptions};

use crate::common::{mnist_dir, ok, write_gz};

/// Training and test images of the subset the tier trains on.
const TRAIN: usize = 1200;
const TEST: usize = 300;

/// A data folder with the first [`TRAIN`] training and [`TEST`] test images of real MNIST,
/// made once per test process.
fn subset() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let src = mnist_dir();
        for (prefix, n) in [("train", TRAIN), ("t10k", TEST)] {
            let images = read_images(&src.join(format!("{prefix}-images-idx3-ubyte.gz"))).unwrap();
            let labels =
                read_labels(&src.join(format!("{prefix}-labels-idx1-ubyte.gz")), 10).unwrap();
            write_gz(
                &dir.join(format!("{prefix}-images-idx3-ubyte.gz")),
                &encode_images(n, 28, 28, &images.pixels[..n * 784]),
            );
            write_gz(
                &dir.join(format!("{prefix}-labels-idx1-ubyte.gz")),
                &encode_labels(&labels[..n]),
            );
        }
        dir
    })
    .clone()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Where cubecl writes which kernel its autotuning chose for each operation and shape, with
/// the candidates' times: set once per test process, before its first GPU computation.
/// Autotuning times the candidates on the machine as it runs, so two processes may choose
/// different kernels; a failing GPU run prints these choices ([`autotune_choices`]).
fn autotune_log() -> &'static Path {
    use burn::cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};
    static LOG: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        let path = tempfile::tempdir().unwrap().keep().join("autotune.log");
        let mut config = CubeClRuntimeConfig::default();
        config.autotune.logger.file = Some(path.clone());
        // False when cubecl's configuration was already read: then there is no log.
        CubeClRuntimeConfig::try_set(config);
        path
    })
}

/// The kernels autotuning chose in this process so far, one line each.
fn autotune_choices() -> String {
    std::fs::read_to_string(autotune_log())
        .map(|log| {
            log.lines()
                .filter(|l| l.starts_with("Fastest result"))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_else(|e| format!("no autotune log ({e})"))
}

/// Trains `preset` for one epoch on the subset on `device` with `seed` into `out`, in this
/// process; returns the epoch's (training loss, validation loss). A failure panics with the
/// kernels autotuning chose.
fn train_here(
    preset: mnist_ae::model::Preset,
    device: &Device,
    seed: u64,
    out: &Path,
) -> (f64, f64) {
    let mut config = TrainConfig::for_preset(preset);
    config.epochs = 1;
    config.batch_size = 64;
    config.seed = seed;
    config.shards = 1;
    // `train` seeds burn's random generator, one for the whole process, and draws the model's
    // weights from it: another test seeding it meanwhile (the one-step test below, on another
    // thread) would change the weights drawn here.
    let _seeded = crate::common::seed_lock();
    let outcome = train(&TrainOptions {
        config,
        run_dir: out.to_path_buf(),
        data_dir: subset(),
        allow_download: false,
        device: device.clone(),
        resume: false,
        max_epochs_this_call: None,
        quiet: true,
        stop: None,
    })
    .unwrap_or_else(|e| {
        panic!(
            "{}: {e}\nkernels chosen by autotuning in this process:\n{}",
            preset.name(),
            autotune_choices()
        )
    });
    let m = &outcome.metrics[0];
    (m.train_loss, m.valid_loss.unwrap())
}

/// The test MSE of the run in `dir` with its model on `device`.
fn test_mse(dir: &Path, device: &Device) -> f64 {
    let run = Run::open(dir, device).unwrap();
    let test = run.test_data(Some(&subset()), false).unwrap();
    mnist_ae::eval::score_split(&run, &test).unwrap().mse
}

fn wgpu() -> Device {
    autotune_log();
    DeviceChoice::Wgpu.device().unwrap()
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

/// Relative tolerance of one epoch's losses, GPU against CPU. One epoch is 17 Adam steps on
/// 1,080 images from the same weights, batches and noise: only the kernels' summation order
/// differs, and the two devices' losses came out within 2e-7 of each other for every preset on
/// lavapipe, while another seed moves them by more than 1e-3.
const TRAIN_TOL: f64 = 1e-4;
/// Relative tolerance of the test MSE of the same weights on both devices: the forward pass
/// alone, where only summation order differs (measured on lavapipe: within 2e-7).
const EVAL_TOL: f64 = 1e-4;

#[test]
fn every_preset_trains_on_the_gpu_as_on_the_cpu() {
    let tmp = tempfile::tempdir().unwrap();
    let (cpu_device, gpu_device) = (Device::flex(), wgpu());
    for preset in PRESETS {
        let name = preset.name();
        let dir = |d: &str| tmp.path().join(format!("{name}-{d}"));
        let cpu = train_here(preset, &cpu_device, 7, &dir("cpu"));
        let gpu = train_here(preset, &gpu_device, 7, &dir("gpu"));
        let other = train_here(preset, &cpu_device, 8, &dir("other"));
        eprintln!("{name}: cpu {cpu:?} gpu {gpu:?} seed 8 {other:?}");
        for (what, c, g, o) in [
            ("training", cpu.0, gpu.0, other.0),
            ("validation", cpu.1, gpu.1, other.1),
        ] {
            assert!(
                rel(g, c) < TRAIN_TOL,
                "{name}: {what} loss {g} on the GPU, {c} on the CPU\nkernels chosen by \
                 autotuning:\n{}",
                autotune_choices()
            );
            assert!(
                rel(o, c) > TRAIN_TOL,
                "{name}: the tolerance does not tell seed 8 ({o}) from seed 7 ({c})"
            );
        }
        // The GPU's weights, evaluated on both devices.
        let (on_gpu, on_cpu) = (
            test_mse(&dir("gpu"), &gpu_device),
            test_mse(&dir("gpu"), &cpu_device),
        );
        eprintln!("{name}: test MSE gpu {on_gpu} cpu {on_cpu}");
        assert!(
            rel(on_gpu, on_cpu) < EVAL_TOL,
            "{name}: test MSE {on_gpu} on the GPU, {on_cpu} on the CPU\nkernels chosen by \
             autotuning:\n{}",
            autotune_choices()
        );
    }
}

/// Relative tolerance of one step's parameter changes, GPU against CPU (the norm of the
/// difference over the norm of the CPU's change, per parameter tensor): the same weights and
/// batch, so only summation order differs. Measured on lavapipe: within 5.1e-4 (linear3; the
/// other presets within 7e-5), while another batch of images moved every tensor by at least 1e-2.
const STEP_TOL: f64 = 2e-3;

/// One SGD step of every preset on 64 real images, on both devices from the same weights: the
/// losses agree, and so does each parameter tensor's change (the step is 1, so the change is
/// the gradient). Where training on a GPU goes wrong this names the layers whose gradients
/// differ, with the kernels autotuning chose.
#[test]
fn one_step_changes_every_parameter_as_on_the_cpu() {
    use burn::optim::SgdConfig;
    use mnist_ae::train::run::load_data;
    use mnist_ae::train::step::{step, StepAt};
    use mnist_ae::train::{initial, named_tensors};

    // The subset split as `train` splits it (every preset's default seed and validation share).
    let data = load_data(&TrainConfig::for_preset(PRESETS[0]), &subset(), false).unwrap();
    let (cpu_device, gpu_device) = (Device::flex().autodiff(), wgpu().autodiff());
    let at = StepAt {
        epoch: 0,
        batch: 0,
        lr: 1.0,
    };
    let mut failures = Vec::new();
    for preset in PRESETS {
        let name = preset.name();
        let mut config = TrainConfig::for_preset(preset);
        config.shards = 1;
        let scale = preset.activation().scale();
        // (loss, each tensor's change) after one step on images `first..first + 64`.
        let changes = |device: &Device, first: usize| {
            // As `train` does: the CPU draws from its seeded device, a GPU's from the seed.
            let _seeded = crate::common::seed_lock();
            device.seed(7);
            let model = initial(&config.model, 7, device).unwrap();
            let before = named_tensors(&model);
            let idx: Vec<usize> = (first..first + 64).collect();
            let x = data.train.batch(&idx, scale, device);
            let mut sgd = SgdConfig::new().init();
            let (model, loss) = step(model, &mut sgd, &config, x.clone(), x, at, device);
            let after = named_tensors(&model);
            let deltas: Vec<(String, Vec<f64>)> = before
                .into_iter()
                .zip(after)
                .map(|((n, _, b), (_, _, a))| {
                    (
                        n,
                        a.iter()
                            .zip(&b)
                            .map(|(a, b)| *a as f64 - *b as f64)
                            .collect(),
                    )
                })
                .collect();
            (loss.value(), deltas)
        };
        let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
        let diff = |a: &[f64], b: &[f64]| {
            let d: Vec<f64> = a.iter().zip(b).map(|(a, b)| a - b).collect();
            norm(&d) / norm(b).max(f64::MIN_POSITIVE)
        };
        let (cpu_loss, cpu) = changes(&cpu_device, 0);
        let (gpu_loss, gpu) = changes(&gpu_device, 0);
        let (_, other) = changes(&cpu_device, 64);
        if rel(gpu_loss, cpu_loss) > 1e-5 {
            failures.push(format!(
                "{name}: loss {gpu_loss} on the GPU, {cpu_loss} on the CPU"
            ));
        }
        let (mut worst, mut closest_other) = (0.0f64, f64::INFINITY);
        for ((tensor, c), ((_, g), (_, o))) in cpu.iter().zip(gpu.iter().zip(&other)) {
            if norm(c) == 0.0 {
                continue;
            }
            let (on_gpu, other_batch) = (diff(g, c), diff(o, c));
            worst = worst.max(on_gpu);
            closest_other = closest_other.min(other_batch);
            assert!(
                other_batch > STEP_TOL,
                "{name} {tensor}: the tolerance does not tell another batch apart ({other_batch})"
            );
            if on_gpu > STEP_TOL {
                failures.push(format!(
                    "{name} {tensor}: the GPU's change differs from the CPU's by {on_gpu:.2e} of it"
                ));
            }
        }
        eprintln!(
            "{name}: loss gpu {gpu_loss} cpu {cpu_loss}; parameter changes within {worst:.1e} \
             (another batch: {closest_other:.2} at the least)"
        );
    }
    assert!(
        failures.is_empty(),
        "{}\nkernels chosen by autotuning:\n{}",
        failures.join("\n"),
        autotune_choices()
    );
}

/// `train`, `report --analyze` (eval, denoise, interpolate, sample, anomaly, t-SNE and the
/// classifiers, in one process), `reconstruct` and `sweep`, each with `--device wgpu`.
#[test]
fn the_command_line_computes_on_the_gpu() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let data = subset();
    let with_data = |args: &[&str]| {
        let mut v: Vec<&str> = args.to_vec();
        v.extend(["--device", "wgpu", "--data-dir", s(&data), "--no-download"]);
        ok(&v)
    };
    let out = with_data(&["train", "--model", "mlp", "--epochs", "1", "--out", s(&run)]);
    assert!(out.contains("trained 1 epoch"), "{out}");
    let text = with_data(&["report", s(&run), "--analyze", "--tsne-count", "100"]);
    assert!(run.join("report.html").exists(), "{text}");
    for f in [
        "eval.json",
        "denoise.json",
        "interpolate.json",
        "samples.json",
        "anomaly_scores.csv",
        "tsne.csv",
    ] {
        assert!(run.join(f).exists(), "report --analyze wrote no {f}");
    }

    // The anomaly scores the GPU wrote, against the same weights' scores on the CPU.
    let cpu_run = Run::open(&run, &Device::flex()).unwrap();
    let test = cpu_run.test_data(Some(&data), false).unwrap();
    let cpu_scores = mnist_ae::explore::anomaly::scores(&cpu_run, &test);
    let gpu_scores: Vec<f64> = std::fs::read_to_string(run.join("anomaly_scores.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.rsplit(',').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(gpu_scores.len(), TEST);
    for (i, (g, c)) in gpu_scores.iter().zip(&cpu_scores).enumerate() {
        // The file keeps 6 significant digits.
        assert!(
            rel(*g, *c) < 1e-4,
            "image {i}: score {g} on the GPU, {c} on the CPU"
        );
    }

    // A picture of one's own: the first test image (a 7), dark ink on white.
    let seven = read_images(&data.join("t10k-images-idx3-ubyte.gz")).unwrap();
    let img = image::GrayImage::from_fn(28, 28, |x, y| {
        image::Luma([255 - seven.pixels[(y * 28 + x) as usize]])
    });
    let file = tmp.path().join("seven.png");
    img.save(&file).unwrap();
    let text = with_data(&[
        "reconstruct",
        s(&run),
        s(&file),
        "--out",
        s(&tmp.path().join("mine")),
    ]);
    assert!(text.contains("seven.png: "), "{text}");

    let sweep = tmp.path().join("sweep");
    with_data(&[
        "sweep",
        "--model",
        "mlp",
        "--latent-dims",
        "4,8",
        "--epochs",
        "1",
        "--out",
        s(&sweep),
        "-q",
    ]);
    assert!(sweep.join("sweep.json").exists());
}

/// With no adapter at all (the Vulkan loader pointed at no driver, and no OpenGL), a command
/// fails with one line naming what was tried, and no panic.
#[test]
fn no_adapter_is_one_clear_line() {
    let data = subset();
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mnist-ae"))
        .args([
            "train",
            "--model",
            "mlp",
            "--epochs",
            "1",
            "--device",
            "wgpu",
            "--data-dir",
            s(&data),
            "--no-download",
            "--out",
            s(&tmp.path().join("run")),
        ])
        .env("VK_ICD_FILENAMES", "/nonexistent/icd.json")
        .env("VK_DRIVER_FILES", "/nonexistent/icd.json")
        .env("__EGL_VENDOR_LIBRARY_FILENAMES", "/nonexistent/egl.json")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {err}"));
    assert!(
        line.contains("no usable GPU for --device wgpu (wgpu tried Vulkan, OpenGL)"),
        "{line}"
    );
    assert!(!tmp.path().join("run").exists(), "a run folder was made");
}
