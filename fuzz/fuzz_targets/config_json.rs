//! Fuzzes the `config.json` check (`src/config_json.rs`, compiled in directly): any bytes give
//! an answer, never a panic or a stack overflow; an accepted configuration's sizes are in range.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../src/config_json.rs"]
mod config_json;

fuzz_target!(|data: &[u8]| {
    if let Ok(config) = config_json::check_config_json(data) {
        if let Some(layers) = config.get("num_hidden_layers").and_then(|v| v.as_u64()) {
            assert!((1..=4096).contains(&layers));
        }
        let _ = config_json::is_supported_class(config["architectures"][0].as_str().unwrap_or(""));
    }
});
