//! The `config.json` loader on arbitrary text: parse and validate. Any input must give `Ok` or
//! `Err`, never a panic; an accepted config must survive a write and a re-read unchanged.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mnist_ae::rundir::parse_config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz/config.json");
    if let Ok(config) = parse_config(path, text) {
        let again = serde_json::to_string(&config).expect("a parsed config serialises");
        let back = parse_config(path, &again).expect("a written config parses again");
        assert_eq!(
            serde_json::to_string(&back).expect("serialises"),
            again,
            "config changed on a round trip"
        );
    }
});
