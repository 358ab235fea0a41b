//! Checks a Hugging Face `config.json` before the engine builds a model from it.
//!
//! The engine sizes buffers from these numbers (position tables from
//! `max_position_embeddings`, caches from the head counts), divides by them, and indexes with
//! them; a zero, a negative or an absurd value becomes a panic or a multi-gigabyte allocation
//! there. Here each number it reads must be a whole number in a sane range, the head counts
//! must divide as attention needs, and the model class must be one the engine has.

use serde_json::Value;

/// The largest `config.json` (or other model JSON) read, by `safetensors_folder`: real ones
/// are a few kilobytes.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// Model classes (`architectures[0]`) mistralrs 0.8.1 builds from SafeTensors: its text
/// loaders' and its multimodal loaders' `from_causal_lm_name` lists.
pub const SUPPORTED_CLASSES: &[&str] = &[
    "MistralForCausalLM",
    "MixtralForCausalLM",
    "GemmaForCausalLM",
    "Gemma2ForCausalLM",
    "PhiForCausalLM",
    "Phi3ForCausalLM",
    "LlamaForCausalLM",
    "Qwen2ForCausalLM",
    "Starcoder2ForCausalLM",
    "PhiMoEForCausalLM",
    "DeepseekV2ForCausalLM",
    "DeepseekV3ForCausalLM",
    "Qwen3ForCausalLM",
    "Glm4ForCausalLM",
    "Glm4MoeLiteForCausalLM",
    "Glm4MoeForCausalLM",
    "Qwen3MoeForCausalLM",
    "SmolLM3ForCausalLM",
    "GraniteMoeHybridForCausalLM",
    "GptOssForCausalLM",
    "Qwen3NextForCausalLM",
    "Phi3VForCausalLM",
    "Idefics2ForConditionalGeneration",
    "LlavaNextForConditionalGeneration",
    "LlavaForConditionalGeneration",
    "MllamaForConditionalGeneration",
    "Qwen2VLForConditionalGeneration",
    "Idefics3ForConditionalGeneration",
    "MiniCPMO",
    "Phi4MMForCausalLM",
    "Qwen2_5_VLForConditionalGeneration",
    "Gemma3ForConditionalGeneration",
    "Gemma3ForCausalLM",
    "Mistral3ForConditionalGeneration",
    "Llama4ForConditionalGeneration",
    "Gemma3nForConditionalGeneration",
    "Gemma4ForConditionalGeneration",
    "Qwen3VLForConditionalGeneration",
    "Qwen3VLMoeForConditionalGeneration",
    "Qwen3_5ForConditionalGeneration",
    "Qwen3_5MoeForConditionalGeneration",
    "VoxtralForConditionalGeneration",
    "VoxtralRealtimeForConditionalGeneration",
];

pub fn is_supported_class(class: &str) -> bool {
    SUPPORTED_CLASSES.contains(&class)
}

/// Whole-number settings: the smallest and largest value each may take. `null` means the
/// engine's default (as in some published configs' `head_dim`); a list gives one value per
/// layer (Gemma 3n's `intermediate_size`), each in range. Expert counts may be 0 (a dense
/// model of a mixture-of-experts family, e.g. Granite 4.0 micro).
const SIZES: &[(&str, u64, u64)] = &[
    ("hidden_size", 1, 1 << 20),
    ("intermediate_size", 1, 1 << 22),
    ("num_hidden_layers", 1, 4_096),
    ("num_attention_heads", 1, 1 << 16),
    ("num_key_value_heads", 1, 1 << 16),
    ("head_dim", 1, 1 << 16),
    ("vocab_size", 1, 1 << 24),
    ("max_position_embeddings", 1, 1 << 24),
    ("num_local_experts", 0, 1 << 16),
    ("num_experts", 0, 1 << 16),
    ("num_experts_per_tok", 0, 1 << 16),
    ("image_size", 1, 1 << 16),
    ("patch_size", 1, 1 << 16),
    ("spatial_merge_size", 1, 1 << 10),
    ("sliding_window", 1, 1 << 24),
];

/// At most this many characters of a refused value go into a message.
const SHOWN_VALUE_CHARS: usize = 60;

fn shown(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(SHOWN_VALUE_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

/// Real-number settings that must be finite and positive.
const POSITIVE_REALS: &[&str] = &["rms_norm_eps", "layer_norm_eps", "rope_theta"];

/// How deep sub-configurations (`text_config`, `vision_config`, ...) are checked.
const MAX_DEPTH: usize = 4;

/// Checks a parsed `config.json`: its model class names (not whether the engine has it; see
/// `is_supported_class`) and the numbers of it and its sub-configurations.
pub fn check_config(config: &Value) -> Result<(), String> {
    let object = config
        .as_object()
        .ok_or("config.json is not a JSON object")?;
    match object.get("architectures") {
        Some(Value::Array(list)) if list.first().is_some_and(Value::is_string) => {}
        _ => {
            return Err("config.json names no `architectures` (a list of model class names)".into())
        }
    }
    check_numbers(config, "config.json", 0)
}

fn check_numbers(config: &Value, place: &str, depth: usize) -> Result<(), String> {
    let Some(object) = config.as_object() else {
        return Ok(());
    };
    let bad = |key: &str, why: String| format!("{place}: `{key}` {why}");
    let size = |key: &str| object.get(key).and_then(Value::as_u64);
    for (key, min, max) in SIZES {
        let Some(value) = object.get(*key) else {
            continue;
        };
        let in_range = |v: &Value| v.as_u64().is_some_and(|v| (*min..=*max).contains(&v));
        let ok = match value {
            Value::Null => true,
            Value::Array(per_layer) => !per_layer.is_empty() && per_layer.iter().all(in_range),
            single => in_range(single),
        };
        if !ok {
            return Err(bad(
                key,
                format!(
                    "is {}; it must be a whole number from {min} to {max} (or a list of them, one per layer)",
                    shown(value)
                ),
            ));
        }
    }
    for key in POSITIVE_REALS {
        if let Some(value) = object.get(*key) {
            if !value.as_f64().is_some_and(|v| v.is_finite() && v > 0.0) {
                return Err(bad(
                    key,
                    format!("is {value}; it must be a positive number"),
                ));
            }
        }
    }
    if let (Some(heads), Some(kv)) = (size("num_attention_heads"), size("num_key_value_heads")) {
        if kv > heads || heads % kv != 0 {
            return Err(format!(
                "{place}: {heads} attention heads cannot share {kv} key/value heads (the number \
                 of heads must be a multiple of the key/value heads)"
            ));
        }
    }
    if let (Some(hidden), Some(heads), None) = (
        size("hidden_size"),
        size("num_attention_heads"),
        object.get("head_dim").filter(|v| !v.is_null()),
    ) {
        if hidden % heads != 0 {
            return Err(format!(
                "{place}: hidden_size {hidden} does not split into {heads} attention heads \
                 (and no head_dim is given)"
            ));
        }
    }
    if let (Some(image), Some(patch)) = (size("image_size"), size("patch_size")) {
        if patch > image {
            return Err(format!(
                "{place}: patch_size {patch} is larger than image_size {image}"
            ));
        }
    }
    if depth < MAX_DEPTH {
        for (key, value) in object {
            if key.ends_with("_config") && value.is_object() {
                check_numbers(value, &format!("{place} {key}"), depth + 1)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn llama() -> Value {
        json!({
            "architectures": ["LlamaForCausalLM"],
            "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100,
            "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
            "sliding_window": null,
            "vision_config": {"image_size": 56, "patch_size": 14, "hidden_size": 32},
        })
    }

    fn with(key: &str, value: Value) -> Value {
        let mut c = llama();
        c[key] = value;
        c
    }

    #[test]
    fn a_sane_config_passes() {
        check_config(&llama()).unwrap();
        // Real shapes: per-layer sizes (Gemma 3n), dense models of expert families
        // (Granite 4.0 micro), defaults left null.
        check_config(&with("intermediate_size", json!([128, 256]))).unwrap();
        check_config(&with("num_local_experts", json!(0))).unwrap();
        check_config(&with("head_dim", Value::Null)).unwrap();
        assert!(is_supported_class("LlamaForCausalLM"));
        assert!(!is_supported_class("BertModel"));
    }

    #[test]
    fn absurd_numbers_are_refused() {
        let cases = [
            ("num_attention_heads", json!(0), "from 1 to"),
            ("hidden_size", json!(-64), "from 1 to"),
            ("vocab_size", json!(1e30), "from 1 to"),
            ("max_position_embeddings", json!(1u64 << 40), "from 1 to"),
            ("num_hidden_layers", json!("2"), "from 1 to"),
            ("sliding_window", json!(0), "from 1 to"),
            ("rms_norm_eps", json!(-1.0), "positive"),
            ("rope_theta", json!("big"), "positive"),
            ("num_key_value_heads", json!(3), "multiple"),
            ("num_key_value_heads", json!(8), "multiple"),
        ];
        for (key, value, needle) in cases {
            let e = check_config(&with(key, value.clone())).unwrap_err();
            assert!(e.contains(key) || e.contains("heads"), "{key}={value}: {e}");
            assert!(e.contains(needle), "{key}={value}: {e}");
        }
        let e = check_config(&with("intermediate_size", json!([128, 0]))).unwrap_err();
        assert!(e.contains("one per layer"), "{e}");
        let e = check_config(&with("intermediate_size", json!(vec![0; 1000]))).unwrap_err();
        assert!(e.len() < 300, "{e}");
        let e = check_config(&with("hidden_size", json!(66))).unwrap_err();
        assert!(e.contains("does not split"), "{e}");
        let mut c = llama();
        c["vision_config"]["patch_size"] = json!(0);
        let e = check_config(&c).unwrap_err();
        assert!(
            e.contains("vision_config") && e.contains("patch_size"),
            "{e}"
        );
        c["vision_config"]["patch_size"] = json!(112);
        assert!(check_config(&c)
            .unwrap_err()
            .contains("larger than image_size"));
        assert!(check_config(&json!([1]))
            .unwrap_err()
            .contains("not a JSON object"));
        assert!(check_config(&json!({"architectures": []}))
            .unwrap_err()
            .contains("no `architectures`"));
    }
}
