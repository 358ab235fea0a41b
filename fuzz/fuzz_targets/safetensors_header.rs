//! Fuzzes the SafeTensors pre-flight check (`src/safetensors_header.rs`, compiled in
//! directly): whatever the bytes, it returns an answer without panicking, and an accepted file
//! really is tiled by its tensors.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../src/safetensors_header.rs"]
mod safetensors_header;

fuzz_target!(|data: &[u8]| {
    if let Ok(summary) = safetensors_header::check_safetensors_bytes(data) {
        // The data the tensors tile is what follows the header, no more.
        assert!(summary.data_bytes + 8 <= data.len() as u64);
    }
});
