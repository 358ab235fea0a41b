//! A local Hugging Face model folder (`config.json`, `*.safetensors`, `tokenizer.json`): what
//! it is, checked before the engine reads it, and the engine loader that takes it.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::config_json::{check_config, is_supported_class, MAX_CONFIG_BYTES, SUPPORTED_CLASSES};
use crate::failure::{Failure, FailureKind, Outcome};
use crate::processor_requirements::processor_problem;
use crate::safetensors_header::check_safetensors_file;

/// What we read from a model folder ourselves.
#[derive(Debug)]
pub struct FolderModel {
    pub dir: PathBuf,
    /// `architectures[0]` of `config.json`, e.g. `LlamaForCausalLM`.
    pub architecture: String,
    /// The chat template (`tokenizer_config.json` or `chat_template.jinja`), if any.
    pub chat_template: Option<String>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    /// `tokenizer_config.json`'s `add_bos_token`.
    pub add_bos: bool,
    /// End-of-sequence ids from `config.json` and `generation_config.json`.
    pub eos_ids: Vec<u32>,
    /// The model takes images: `config.json` has a `vision_config`.
    pub takes_images: bool,
    /// The model takes audio (Voxtral: a Mistral-native `params.json` with an audio encoder).
    pub takes_audio: bool,
    /// What the model's image processor can take without failing inside the engine.
    pub image_geometry: ImageGeometry,
}

/// Image sizes a model's processor takes without failing inside the engine. mistralrs 0.8.1's
/// Qwen-VL processor panics (and the runner dies with it) on images it resizes to a single
/// image token or to a zero-pixel side, and its Pixtral (Mistral 3) processor on images it
/// scales to a zero-pixel side, so we refuse those images first, with their own math.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ImageGeometry {
    Any,
    /// Qwen2-VL / Qwen2.5-VL `smart_resize`: sides to multiples of `factor` (patch x merge),
    /// the pixel count kept within `min_pixels..=max_pixels`, aspect ratio at most 200.
    QwenSmartResize {
        factor: u64,
        min_pixels: u64,
        max_pixels: u64,
    },
    /// Pixtral (Mistral 3): an image larger than `max_width x max_height` is scaled down to fit,
    /// each side floored.
    PixtralFit {
        max_width: u64,
        max_height: u64,
    },
}

/// The most images one request may carry, where the engine's processor takes fewer than any
/// number: LLaVA's and LLaVA-Next's take one (a second panicked inside the engine).
pub fn max_images_per_request(architecture: &str) -> Option<usize> {
    match architecture {
        "LlavaForConditionalGeneration" | "LlavaNextForConditionalGeneration" => Some(1),
        _ => None,
    }
}

impl ImageGeometry {
    /// From `config.json` and `preprocessor_config.json`.
    fn of(architecture: &str, preprocessor: Option<&serde_json::Value>) -> Self {
        let qwen = matches!(
            architecture,
            "Qwen2VLForConditionalGeneration" | "Qwen2_5_VLForConditionalGeneration"
        );
        let read = |key: &str| preprocessor.and_then(|p| p[key].as_u64());
        if architecture == "Mistral3ForConditionalGeneration" {
            let size = |key: &str| preprocessor.and_then(|p| p["size"][key].as_u64());
            let fit = match (size("longest_edge"), size("width"), size("height")) {
                (Some(edge), _, _) => Some((edge, edge)),
                (None, Some(width), Some(height)) => Some((width, height)),
                _ => None,
            };
            return match fit {
                Some((max_width, max_height)) => Self::PixtralFit {
                    max_width,
                    max_height,
                },
                None => Self::Any,
            };
        }
        match (
            qwen,
            read("patch_size"),
            read("merge_size"),
            read("min_pixels"),
            read("max_pixels"),
        ) {
            (true, Some(patch), Some(merge), Some(min_pixels), Some(max_pixels)) => {
                Self::QwenSmartResize {
                    factor: patch * merge,
                    min_pixels,
                    max_pixels,
                }
            }
            // Without these keys the engine's processor fails cleanly, naming the key.
            _ => Self::Any,
        }
    }

    /// Why the model cannot take a `width x height` image, if it cannot.
    pub fn refuse(&self, width: u32, height: u32) -> Option<String> {
        let (w, h) = (u64::from(width), u64::from(height));
        let (factor, min_pixels, max_pixels) = match *self {
            Self::Any => return None,
            Self::PixtralFit {
                max_width,
                max_height,
            } => {
                let ratio = (w as f64 / max_width as f64).max(h as f64 / max_height as f64);
                let shrinks = ratio > 1.0
                    && ((w as f64 / ratio).floor() < 1.0 || (h as f64 / ratio).floor() < 1.0);
                return shrinks.then(|| {
                    format!(
                        "is {width} x {height} pixels; fitted to this model's {max_width} x \
                         {max_height} pixels one side would shrink to nothing: crop it closer \
                         to square"
                    )
                });
            }
            Self::QwenSmartResize {
                factor,
                min_pixels,
                max_pixels,
            } => (factor, min_pixels, max_pixels),
        };
        if w < factor || h < factor {
            return Some(format!(
                "is {width} x {height} pixels; this model needs at least {factor} pixels on each \
                 side (its patch geometry): enlarge the image"
            ));
        }
        if w.max(h) as f64 > 200.0 * w.min(h) as f64 {
            return Some(format!(
                "is {width} x {height} pixels; this model takes aspect ratios up to 200:1: \
                 crop or pad the image"
            ));
        }
        let f = factor as f64;
        let (mut hb, mut wb) = (
            (h as f64 / f).round() as u64 * factor,
            (w as f64 / f).round() as u64 * factor,
        );
        if hb * wb > max_pixels {
            let beta = ((h * w) as f64 / max_pixels as f64).sqrt();
            hb = (h as f64 / beta / f).floor() as u64 * factor;
            wb = (w as f64 / beta / f).floor() as u64 * factor;
        } else if hb * wb < min_pixels {
            let beta = (min_pixels as f64 / (h * w) as f64).sqrt();
            hb = (h as f64 * beta / f).ceil() as u64 * factor;
            wb = (w as f64 * beta / f).ceil() as u64 * factor;
        }
        if hb == 0 || wb == 0 {
            return Some(format!(
                "is {width} x {height} pixels; fitted to this model's {max_pixels}-pixel budget one \
                 side would shrink to nothing: crop it closer to square"
            ));
        }
        if hb == factor && wb == factor {
            return Some(format!(
                "is {width} x {height} pixels, which this model resizes to one image token \
                 ({factor} x {factor}); mistralrs 0.8.1 fails on that: give an image with a \
                 side of at least {} pixels",
                factor * 3 / 2
            ));
        }
        None
    }
}

/// The architecture name we give Mistral-native Voxtral folders (`params.json`, no `architectures`).
pub const VOXTRAL: &str = "Voxtral";

/// Architectures the engine only loads through its multimodal loader, even text-only ones.
pub fn uses_multimodal_loader(architecture: &str) -> bool {
    matches!(
        architecture,
        "Gemma3ForCausalLM" | "Gemma3ForConditionalGeneration"
    )
}

fn format_error(dir: &Path, why: impl std::fmt::Display) -> Failure {
    Failure::new(
        FailureKind::ModelFormat,
        format!("{}: {why}", dir.display()),
    )
}

fn read_json(dir: &Path, name: &str) -> Outcome<Option<Value>> {
    let path = dir.join(name);
    if !path.is_file() {
        return Ok(None);
    }
    let size = std::fs::metadata(&path)
        .map_err(|e| format_error(dir, format!("{name}: {e}")))?
        .len();
    if size > MAX_CONFIG_BYTES {
        return Err(format_error(
            dir,
            format!("{name} has {size} bytes, more than a model file of its kind has (corrupted?)"),
        ));
    }
    let text =
        std::fs::read_to_string(&path).map_err(|e| format_error(dir, format!("{name}: {e}")))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| format_error(dir, format!("{name} is not valid JSON: {e}")))
}

/// A token given as a string or as an `AddedToken` object (`{"content": ...}`).
fn token_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

fn ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|i| vec![i as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_u64)
            .map(|i| i as u32)
            .collect(),
        _ => Vec::new(),
    }
}

/// Reads and checks a model folder: every problem a user can fix is named here, before the
/// engine sees the folder.
pub fn inspect_folder(dir: &Path) -> Outcome<FolderModel> {
    if !dir.is_dir() {
        return Err(Failure::new(
            FailureKind::ModelNotFound,
            format!("no model folder at {}; check the path", dir.display()),
        ));
    }
    // Mistral-native folders (Voxtral) describe the model in params.json instead.
    let params = read_json(dir, "params.json")?
        .filter(|p| p["multimodal"]["whisper_model_args"].is_object());
    let config =
        match (read_json(dir, "config.json")?, &params) {
            (Some(config), _) => config,
            (None, Some(_)) => serde_json::json!({"architectures": [VOXTRAL]}),
            (None, None) => return Err(format_error(
                dir,
                "the folder holds no model: a Hugging Face SafeTensors folder needs config.json \
                 (with *.safetensors and tokenizer.json), and it holds no .gguf model file either",
            )),
        };
    check_config(&config).map_err(|why| format_error(dir, why))?;
    let architecture = config["architectures"]
        .get(0)
        .and_then(Value::as_str)
        .ok_or_else(|| format_error(dir, "config.json names no `architectures`"))?
        .to_owned();
    if !is_supported_class(&architecture) && architecture != VOXTRAL {
        return Err(Failure::new(
            FailureKind::UnsupportedModel,
            format!(
                "{}: the model class `{architecture}` (config.json's `architectures`) is not one \
                 this engine runs; it runs {}",
                dir.display(),
                SUPPORTED_CLASSES.join(", ")
            ),
        ));
    }
    let mut weights: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format_error(dir, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    weights.sort();
    for file in &weights {
        check_safetensors_file(file).map_err(|why| {
            format_error(
                dir,
                format!(
                    "{} is not a usable SafeTensors file: {why}",
                    file.file_name().unwrap_or_default().to_string_lossy()
                ),
            )
        })?;
    }
    if weights.is_empty() {
        return Err(format_error(
            dir,
            "the folder holds no .safetensors weights (PyTorch .bin checkpoints are not supported; \
             convert them to SafeTensors)",
        ));
    }
    if !dir.join("tokenizer.json").is_file() {
        return Err(format_error(
            dir,
            "the folder has no tokenizer.json (a fast Hugging Face tokenizer is needed; save one \
             with `AutoTokenizer.from_pretrained(...).save_pretrained(folder)`)",
        ));
    }
    let tok_config = read_json(dir, "tokenizer_config.json")?.unwrap_or(Value::Null);
    let generation = read_json(dir, "generation_config.json")?.unwrap_or(Value::Null);
    let chat_template = match &tok_config["chat_template"] {
        Value::String(s) => Some(s.clone()),
        // A list of named templates: the default one, else the first.
        Value::Array(list) => list
            .iter()
            .find(|t| t["name"] == "default")
            .or_else(|| list.first())
            .and_then(|t| t["template"].as_str())
            .map(str::to_owned),
        _ => None,
    }
    .or_else(|| std::fs::read_to_string(dir.join("chat_template.jinja")).ok());
    let mut eos_ids = ids(generation.get("eos_token_id"));
    for id in ids(config.get("eos_token_id")) {
        if !eos_ids.contains(&id) {
            eos_ids.push(id);
        }
    }
    let takes_images = config.get("vision_config").is_some_and(|v| v.is_object());
    let preprocessor = read_json(dir, "preprocessor_config.json")?;
    if takes_images {
        let processor = read_json(dir, "processor_config.json")?;
        let read = |name: &str| match name {
            "preprocessor_config.json" => preprocessor.clone(),
            "processor_config.json" => processor.clone(),
            _ => None,
        };
        if let Some(why) = processor_problem(&architecture, read) {
            return Err(format_error(dir, why));
        }
    }
    let image_geometry = ImageGeometry::of(&architecture, preprocessor.as_ref());
    let takes_audio = architecture == VOXTRAL;
    Ok(FolderModel {
        dir: dir.to_path_buf(),
        architecture,
        chat_template,
        bos_token: token_text(&tok_config["bos_token"]),
        eos_token: token_text(&tok_config["eos_token"]),
        add_bos: tok_config["add_bos_token"].as_bool().unwrap_or(false),
        eos_ids,
        takes_images,
        takes_audio,
        image_geometry,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qwen_images_the_engine_would_fail_on_are_refused() {
        let preprocessor = serde_json::json!({
            "patch_size": 14, "merge_size": 2, "min_pixels": 784, "max_pixels": 3136
        });
        let g = ImageGeometry::of("Qwen2_5_VLForConditionalGeneration", Some(&preprocessor));
        assert_eq!(
            g,
            ImageGeometry::QwenSmartResize {
                factor: 28,
                min_pixels: 784,
                max_pixels: 3136
            }
        );
        for (w, h) in [(56, 56), (56, 28), (80, 48), (84, 28), (640, 480)] {
            assert_eq!(g.refuse(w, h), None, "{w} x {h}");
        }
        let why = |w, h| g.refuse(w, h).unwrap();
        assert!(why(16, 16).contains("at least 28 pixels on each side"));
        assert!(why(28, 28).contains("one image token"));
        assert!(why(40, 40).contains("one image token"));
        assert!(why(140, 28).contains("shrink to nothing"));
        assert!(why(6000, 28).contains("aspect ratios up to 200:1"));
        // Other models, or Qwen without the processor keys: the engine's own checks apply.
        assert_eq!(
            ImageGeometry::of("Gemma3ForConditionalGeneration", Some(&preprocessor)),
            ImageGeometry::Any
        );
        assert_eq!(
            ImageGeometry::of("Qwen2VLForConditionalGeneration", None),
            ImageGeometry::Any
        );
    }

    #[test]
    fn pixtral_images_that_shrink_to_nothing_are_refused() {
        let preprocessor = serde_json::json!({"size": {"longest_edge": 1540}, "patch_size": 14});
        let g = ImageGeometry::of("Mistral3ForConditionalGeneration", Some(&preprocessor));
        assert_eq!(
            g,
            ImageGeometry::PixtralFit {
                max_width: 1540,
                max_height: 1540
            }
        );
        for (w, h) in [(1, 1), (16, 16), (1540, 2), (3000, 2), (640, 480)] {
            assert_eq!(g.refuse(w, h), None, "{w} x {h}");
        }
        assert!(g.refuse(4000, 1).unwrap().contains("shrink to nothing"));
        assert!(g.refuse(1, 4000).unwrap().contains("shrink to nothing"));
    }

    /// A SafeTensors file with no tensors: the 8-byte length of the header `{}`, then it.
    const EMPTY_SAFETENSORS: &str = "\u{2}\0\0\0\0\0\0\0{}";

    fn folder(files: &[(&str, &str)]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "pcai-folder-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        dir
    }

    #[test]
    fn reads_what_the_engine_does_not() {
        let dir = folder(&[
            (
                "config.json",
                r#"{"architectures":["LlamaForCausalLM"],"eos_token_id":[2,7]}"#,
            ),
            ("generation_config.json", r#"{"eos_token_id":9}"#),
            (
                "tokenizer_config.json",
                r#"{"add_bos_token":true,"bos_token":{"content":"<s>"},"eos_token":"</s>",
                    "chat_template":[{"name":"tool_use","template":"T"},{"name":"default","template":"D"}]}"#,
            ),
            ("tokenizer.json", "{}"),
            ("model.safetensors", EMPTY_SAFETENSORS),
        ]);
        let m = inspect_folder(&dir).unwrap();
        assert_eq!(m.architecture, "LlamaForCausalLM");
        assert_eq!(m.eos_ids, vec![9, 2, 7]);
        assert_eq!(m.bos_token.as_deref(), Some("<s>"));
        assert_eq!(m.eos_token.as_deref(), Some("</s>"));
        assert!(m.add_bos);
        assert_eq!(m.chat_template.as_deref(), Some("D"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn names_what_is_missing() {
        let dir = folder(&[("README.md", "hi")]);
        let e = inspect_folder(&dir).unwrap_err().to_string();
        assert!(e.contains("config.json"), "{e}");
        std::fs::write(dir.join("config.json"), r#"{"architectures":["X"]}"#).unwrap();
        let e = inspect_folder(&dir).unwrap_err();
        assert_eq!(e.kind, FailureKind::UnsupportedModel);
        assert!(e.message.contains("`X`"), "{e}");
        std::fs::write(
            dir.join("config.json"),
            r#"{"architectures":["LlamaForCausalLM"]}"#,
        )
        .unwrap();
        let e = inspect_folder(&dir).unwrap_err().to_string();
        assert!(e.contains(".safetensors"), "{e}");
        std::fs::write(dir.join("model.safetensors"), "").unwrap();
        let e = inspect_folder(&dir).unwrap_err().to_string();
        assert!(e.contains("too few for a SafeTensors header"), "{e}");
        std::fs::write(dir.join("model.safetensors"), EMPTY_SAFETENSORS).unwrap();
        let e = inspect_folder(&dir).unwrap_err().to_string();
        assert!(e.contains("tokenizer.json"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
