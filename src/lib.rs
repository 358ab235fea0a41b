//! Native core of pcai-inference: loading, request building (`PcaiRequest`, our `RequestLike`),
//! device choice, the token bridge and error mapping. Python holds the user-facing API.

pub mod chat_template;
pub mod codec;
pub mod config_json;
pub mod cpu;
pub mod device;
pub mod engine_lifetime;
pub mod failure;
pub mod generation;
pub mod gguf_content;
pub mod gguf_header;
pub mod gguf_tokenizer;
pub(crate) mod logging_bridge;
pub mod media;
pub mod model;
pub mod output_constraint;
pub mod params;
pub mod processor_requirements;
mod python_api;
mod python_errors;
pub mod request;
pub mod runtime;
pub mod safetensors_folder;
pub mod safetensors_header;
pub mod sampling;
pub mod text_stream;

use pyo3::prelude::*;

/// The exact mistralrs version this build pins (see Cargo.toml).
pub const MISTRALRS_VERSION: &str = "0.8.1";

/// The engine patches this build carries, as `crate version/patch file` (see `build.rs`).
pub fn engine_patches() -> Vec<&'static str> {
    env!("PCAI_ENGINE_PATCHES")
        .split(';')
        .filter(|p| !p.is_empty())
        .collect()
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    logging_bridge::install();
    engine_lifetime::limit_malloc_arenas();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("MISTRALRS_VERSION", MISTRALRS_VERSION)?;
    m.add_class::<python_api::NativeModel>()?;
    m.add_class::<python_api::NativeGeneration>()?;
    m.add_class::<python_api::NativeTokenizer>()?;
    m.add_function(wrap_pyfunction!(python_api::build_features, m)?)?;
    m.add_function(wrap_pyfunction!(python_api::resolve_device_name, m)?)?;
    m.add_function(wrap_pyfunction!(python_api::cpu_kernels, m)?)?;
    m.add_function(wrap_pyfunction!(python_api::engine_patches, m)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn pinned_mistralrs_version_matches_cargo_toml() {
        let toml = include_str!("../Cargo.toml");
        assert!(toml.contains(&format!("mistralrs = \"={}\"", super::MISTRALRS_VERSION)));
    }
}
