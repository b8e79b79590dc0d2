//! The checkpoint loaders on arbitrary bytes: the weights file (into a `linear3` model, the
//! smallest preset) and the resume file (into a fresh Adam optimizer). Any input must give
//! `Ok` or `Err`, never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mnist_ae::config::TrainConfig;
use mnist_ae::device::DeviceChoice;
use mnist_ae::model::Preset;
use mnist_ae::train::checkpoint::{load_model_from, load_resume_from, read_info_from};
use mnist_ae::train::run::optimizer;

fuzz_target!(|data: &[u8]| {
    let device = DeviceChoice::Cpu
        .device()
        .expect("the CPU backend is always built");
    let config = TrainConfig::for_preset(Preset::Linear3);
    let path = Path::new("fuzz/model.safetensors");
    let _ = read_info_from(path, data);
    if let Ok((_, info)) = load_model_from(path, data, &config.model, config.model.init(&device)) {
        assert_eq!(info.model, config.model);
    }
    let _ = load_resume_from(path, data, optimizer(&config));
});
