//! Processor settings a vision model's folder must have for the engine.
//!
//! mistralrs 0.8.1's image processors `unwrap()` some keys of `preprocessor_config.json` and
//! `processor_config.json` when the first image arrives; a missing key panics inside the engine
//! and leaves the runner dead. We check those keys at load and refuse the folder, naming the key.

use serde_json::Value;

/// `(file, dotted key)` pairs the engine's processor for `architecture` reads without a default.
fn required_keys(architecture: &str) -> &'static [(&'static str, &'static str)] {
    const PRE: &str = "preprocessor_config.json";
    const PROC: &str = "processor_config.json";
    match architecture {
        "Gemma3ForConditionalGeneration" => &[
            (PRE, "do_resize"),
            (PRE, "size.height"),
            (PRE, "size.width"),
            (PRE, "do_rescale"),
            (PRE, "rescale_factor"),
            (PRE, "do_normalize"),
        ],
        "Mistral3ForConditionalGeneration" => &[
            (PRE, "do_resize"),
            (PRE, "do_rescale"),
            (PRE, "rescale_factor"),
            (PRE, "do_normalize"),
            (PRE, "patch_size"),
            (PRE, "size"),
            (PRE, "default_to_square"),
            (PROC, "image_break_token"),
            (PROC, "image_end_token"),
            (PROC, "image_token"),
            (PROC, "patch_size"),
            (PROC, "spatial_merge_size"),
        ],
        "Qwen2VLForConditionalGeneration" | "Qwen2_5_VLForConditionalGeneration" => &[
            (PRE, "patch_size"),
            (PRE, "merge_size"),
            (PRE, "min_pixels"),
            (PRE, "max_pixels"),
        ],
        // Without `do_pad` the processor builds no pixel mask and panics on the first image.
        "Idefics3ForConditionalGeneration" => &[(PRE, "size"), (PRE, "do_pad")],
        // LLaVA-Next's processor reads them on every request, even a text-only one.
        "LlavaForConditionalGeneration" | "LlavaNextForConditionalGeneration" => {
            &[(PRE, "size"), (PRE, "crop_size"), (PRE, "rescale_factor")]
        }
        _ => &[],
    }
}

/// Keys the engine reads as `true` or fails on (it asserts `default_to_square`; Idefics3 has
/// no pixel mask without `do_pad`).
const MUST_BE_TRUE: &[&str] = &["default_to_square", "do_pad"];

fn lookup<'a>(value: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted
        .split('.')
        .try_fold(value, |v, key| v.get(key))
        .filter(|v| !v.is_null())
}

/// The first problem with a vision folder's processor files, as a message, if any.
/// `read` gives a file's JSON (`None` when the folder lacks it).
pub fn processor_problem(
    architecture: &str,
    read: impl Fn(&str) -> Option<Value>,
) -> Option<String> {
    for (file, key) in required_keys(architecture) {
        let Some(json) = read(file) else {
            return Some(format!(
                "{architecture} needs {file} (with `{key}`), which the folder lacks: copy it \
                 from the model's release"
            ));
        };
        match lookup(&json, key) {
            None => {
                return Some(format!(
                    "{file} lacks `{key}`, which the engine needs for {architecture} images \
                     (mistralrs 0.8.1 would crash on the first image): add it as in the \
                     model's Hugging Face release"
                ))
            }
            Some(v) if MUST_BE_TRUE.contains(key) && v != &Value::Bool(true) => {
                return Some(format!(
                    "{file} has `{key}: {v}`; the engine takes {architecture} images \
                     only with `true`"
                ))
            }
            Some(_) => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_the_missing_key_and_file() {
        let pre = json!({"do_resize": true, "do_rescale": true, "rescale_factor": 0.0039,
            "do_normalize": true, "patch_size": 16, "size": {"longest_edge": 1024}});
        let proc = json!({"image_break_token": "[IMG_BREAK]", "image_end_token": "[IMG_END]",
            "image_token": "[IMG]", "patch_size": 16, "spatial_merge_size": 2});
        let files = |pre: Value| {
            let proc = proc.clone();
            move |name: &str| match name {
                "preprocessor_config.json" => Some(pre.clone()),
                "processor_config.json" => Some(proc.clone()),
                _ => None,
            }
        };
        let why =
            processor_problem("Mistral3ForConditionalGeneration", files(pre.clone())).unwrap();
        assert!(
            why.contains("preprocessor_config.json lacks `default_to_square`"),
            "{why}"
        );
        let mut square = pre.clone();
        square["default_to_square"] = json!(false);
        let why =
            processor_problem("Mistral3ForConditionalGeneration", files(square.clone())).unwrap();
        assert!(why.contains("only with `true`"), "{why}");
        square["default_to_square"] = json!(true);
        assert_eq!(
            processor_problem("Mistral3ForConditionalGeneration", files(square)),
            None
        );
        let why = processor_problem("Gemma3ForConditionalGeneration", |_| None).unwrap();
        assert!(
            why.contains("needs preprocessor_config.json (with `do_resize`)"),
            "{why}"
        );
        let gemma = json!({"do_resize": true, "size": {"height": 896}, "do_rescale": true,
            "rescale_factor": 0.0039, "do_normalize": true});
        let why =
            processor_problem("Gemma3ForConditionalGeneration", |_| Some(gemma.clone())).unwrap();
        assert!(why.contains("lacks `size.width`"), "{why}");
        let idefics3 = json!({"size": {"longest_edge": 1536}, "do_pad": false});
        let why = processor_problem("Idefics3ForConditionalGeneration", |_| {
            Some(idefics3.clone())
        })
        .unwrap();
        assert!(why.contains("has `do_pad: false`"), "{why}");
        let llava_next = json!({"size": {"shortest_edge": 336}, "rescale_factor": 0.5});
        let why = processor_problem("LlavaNextForConditionalGeneration", |_| {
            Some(llava_next.clone())
        })
        .unwrap();
        assert!(why.contains("lacks `crop_size`"), "{why}");
        assert_eq!(processor_problem("LlamaForCausalLM", |_| None), None);
    }
}
