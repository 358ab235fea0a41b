//! Fuzzes the `config.json` check (`src/config_json.rs`, compiled in directly): any bytes give
//! an answer, never a panic or a stack overflow; an accepted configuration's sizes are in range.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../src/config_json.rs"]
mod config_json;

fuzz_target!(|data: &[u8]| {
    // Parsed as the folder loader parses it (serde_json bounds its own recursion).
    let Ok(config) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if config_json::check_config(&config).is_ok() {
        if let Some(layers) = config.get("num_hidden_layers").and_then(|v| v.as_u64()) {
            assert!((1..=4096).contains(&layers));
        }
        let _ = config_json::is_supported_class(config["architectures"][0].as_str().unwrap_or(""));
    }
});
