//! Writes the seed corpora for the fuzz targets into `corpus/<target>/`: small valid inputs
//! made here by the library itself (nothing downloaded), which the fuzzer then mutates.
//! Run from `fuzz/`: `cargo run --release --bin make_seeds`.

use std::io::Write;
use std::path::Path;

use mnist_ae::config::TrainConfig;
use mnist_ae::data::idx::{encode_images, encode_labels};
use mnist_ae::device::DeviceChoice;
use mnist_ae::model::{Preset, PRESETS};
use mnist_ae::train::checkpoint::{save_model, save_resume, ResumeState};
use mnist_ae::train::run::optimizer;
use mnist_ae::train::schedule::ScheduleState;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).expect("writing to memory");
    enc.finish().expect("writing to memory")
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("creating the corpus folder");
    std::fs::write(dir.join(name), bytes).expect("writing a seed");
}

fn main() {
    let corpus = Path::new("corpus");

    let idx = corpus.join("idx");
    let pixels: Vec<u8> = (0..3 * 28 * 28).map(|i| (i * 7 % 256) as u8).collect();
    let images = encode_images(3, 28, 28, &pixels);
    let labels = encode_labels(&[0, 5, 9]);
    write(&idx, "images-raw", &images);
    write(&idx, "images-gz", &gzip(&images));
    write(&idx, "labels-raw", &labels);
    write(&idx, "labels-gz", &gzip(&labels));
    write(
        &idx,
        "images-2x3",
        &encode_images(2, 2, 3, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]),
    );

    let cfg = corpus.join("config");
    for preset in PRESETS {
        let text = serde_json::to_string_pretty(&TrainConfig::for_preset(preset)).expect("json");
        write(&cfg, preset.name(), text.as_bytes());
    }

    let ckpt = corpus.join("checkpoint");
    std::fs::create_dir_all(&ckpt).expect("creating the corpus folder");
    let device = DeviceChoice::Cpu
        .device()
        .expect("the CPU backend is always built");
    let config = TrainConfig::for_preset(Preset::Linear3);
    let model = config.model.init(&device);
    save_model(&ckpt.join("linear3"), &model, &config.model, 1).expect("saving weights");
    let state = ResumeState {
        epoch: 1,
        schedule: ScheduleState::new(config.lr),
        best_valid: 0.05,
        batch: 0,
        partial_loss_sum: 0.0,
        partial_images: 0,
        model_sha256: None,
    };
    save_resume(&ckpt.join("resume"), &optimizer(&config), &state).expect("saving resume state");
    println!("seed corpora written under {}", corpus.display());
}
