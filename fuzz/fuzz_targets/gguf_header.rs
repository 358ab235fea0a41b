//! Fuzzes the GGUF pre-flight check (`src/gguf_header.rs`, compiled in directly so the target
//! builds in seconds, without the engine): it must never panic, hang or allocate in proportion
//! to a claimed size, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../src/gguf_header.rs"]
mod gguf_header;

fuzz_target!(|data: &[u8]| {
    if let Ok(summary) = gguf_header::check_gguf_bytes(data) {
        // Accepted headers describe no more tensors than the bytes can hold.
        assert!(summary.tensor_count <= data.len() as u64 / 24);
    }
});
