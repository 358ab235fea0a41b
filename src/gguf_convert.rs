//! GGUF files whose architecture the engine's GGUF loader lacks (Gemma 3 in mistralrs 0.8.1)
//! are loaded through the engine's SafeTensors loader for that architecture instead.
//!
//! Nothing is re-quantized: the quantized matrices are handed over as a UQFF artifact (the
//! engine's own serialization of a GGUF block matrix) with their values unchanged — byte for
//! byte, except `Q5_0` blocks, widened losslessly to `Q8_0` (`quant_transcode`) because the
//! engine has no vectorized `Q5_0` kernel — and only the small
//! unquantized tensors (norms) and the embedding table go into `model.safetensors`, in F32.
//! The result is cached next to other pcai-inference data, keyed by the file's identity.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{Device, Tensor};
use mistralrs_quant::{GgufMatMul, QuantMethod, QuantMethodConfig, QuantizedSerde};
use serde_json::json;

use crate::gguf_tokenizer::GgufVocab;
use crate::quant_transcode::widen_scalar_blocks;

/// Bumped whenever the converted layout changes, so stale caches are not reused.
const CONVERTER_VERSION: u32 = 3;

/// Architectures this module converts.
pub fn needs_conversion(architecture: &str) -> bool {
    architecture == "gemma3"
}

/// A converted model folder, ready for the engine's SafeTensors loader.
pub struct Converted {
    pub dir: PathBuf,
    /// File name of the UQFF artifact inside `dir`.
    pub uqff_file: String,
}

fn meta<'a>(c: &'a Content, key: &str) -> Result<&'a Value, String> {
    c.metadata
        .get(key)
        .ok_or_else(|| format!("the GGUF metadata lacks `{key}`"))
}

fn meta_u32(c: &Content, key: &str) -> Result<u32, String> {
    meta(c, key)?.to_u32().map_err(|e| format!("`{key}`: {e}"))
}

fn meta_f32(c: &Content, key: &str) -> Result<f32, String> {
    meta(c, key)?.to_f32().map_err(|e| format!("`{key}`: {e}"))
}

fn opt<T>(c: &Content, key: &str, f: impl Fn(&Value) -> candle_core::Result<T>) -> Option<T> {
    c.metadata.get(key).and_then(|v| f(v).ok())
}

/// A metadata array converted item by item; `None` when the key is absent.
fn array<T>(
    c: &Content,
    key: &str,
    item: impl Fn(&Value) -> candle_core::Result<T>,
) -> Result<Option<Vec<T>>, String> {
    let Some(v) = c.metadata.get(key) else {
        return Ok(None);
    };
    v.to_vec()
        .and_then(|items| {
            items
                .iter()
                .map(&item)
                .collect::<candle_core::Result<Vec<T>>>()
        })
        .map(Some)
        .map_err(|e| format!("`{key}`: {e}"))
}

/// The tokenizer metadata of a GGUF file.
pub fn read_vocab(c: &Content) -> Result<GgufVocab, String> {
    let tokens = array(c, "tokenizer.ggml.tokens", |v| v.to_string().cloned())?
        .ok_or("the GGUF metadata lacks `tokenizer.ggml.tokens`")?;
    let scores = array(c, "tokenizer.ggml.scores", Value::to_f32)?
        .unwrap_or_else(|| vec![0.0; tokens.len()]);
    let token_types = array(c, "tokenizer.ggml.token_type", Value::to_i32)?
        .unwrap_or_else(|| vec![crate::gguf_tokenizer::TOKEN_NORMAL; tokens.len()]);
    let merges = array(c, "tokenizer.ggml.merges", |v| v.to_string().cloned())?.unwrap_or_default();
    if scores.len() != tokens.len() || token_types.len() != tokens.len() {
        return Err("the GGUF tokenizer arrays have different lengths".into());
    }
    let id = |key: &str| -> Result<Option<u32>, String> {
        match opt(c, key, |v| v.to_u32()) {
            Some(i) if (i as usize) < tokens.len() => Ok(Some(i)),
            Some(i) => Err(format!(
                "`{key}` = {i} is outside the vocabulary of {}",
                tokens.len()
            )),
            None => Ok(None),
        }
    };
    let model = meta(c, "tokenizer.ggml.model")?
        .to_string()
        .map_err(|e| e.to_string())?
        .clone();
    Ok(GgufVocab {
        pre: opt(c, "tokenizer.ggml.pre", |v| v.to_string().cloned()),
        add_space_prefix: opt(c, "tokenizer.ggml.add_space_prefix", |v| v.to_bool())
            .unwrap_or(model == "llama"),
        model,
        bos_id: id("tokenizer.ggml.bos_token_id")?,
        eos_id: id("tokenizer.ggml.eos_token_id")?,
        unk_id: id("tokenizer.ggml.unknown_token_id")?,
        add_bos: opt(c, "tokenizer.ggml.add_bos_token", |v| v.to_bool()).unwrap_or(true),
        add_eos: opt(c, "tokenizer.ggml.add_eos_token", |v| v.to_bool()).unwrap_or(false),
        tokens,
        scores,
        token_types,
        merges,
    })
}

/// The chat template embedded in a GGUF file, if any.
pub fn chat_template(c: &Content) -> Option<String> {
    opt(c, "tokenizer.chat_template", |v| v.to_string().cloned())
}

/// Reads a GGUF header (after our own bounds check has passed).
pub fn read_content(path: &Path) -> Result<Content, String> {
    let mut f = BufReader::new(File::open(path).map_err(|e| e.to_string())?);
    Content::read(&mut f).map_err(|e| format!("cannot read the GGUF header: {e}"))
}

/// The Hugging Face `config.json` of a Gemma 3 text model, from GGUF metadata.
fn gemma3_config(c: &Content, vocab: &GgufVocab) -> Result<serde_json::Value, String> {
    let a = "gemma3";
    let hidden = meta_u32(c, &format!("{a}.embedding_length"))?;
    let heads = meta_u32(c, &format!("{a}.attention.head_count"))?;
    let layers = meta_u32(c, &format!("{a}.block_count"))?;
    let head_dim = meta_u32(c, &format!("{a}.attention.key_length")).unwrap_or(hidden / heads);
    // llama.cpp scales queries by 1/sqrt(head_dim), except for the 27B model (62 layers).
    let query_pre_attn_scalar = if layers == 62 {
        hidden / heads
    } else {
        head_dim
    };
    let rope_scaling = match opt(c, &format!("{a}.rope.scaling.factor"), |v| v.to_f32()) {
        Some(f) if f > 1.0 => json!({"rope_type": "linear", "factor": f}),
        _ => serde_json::Value::Null,
    };
    Ok(json!({
        "architectures": ["Gemma3ForCausalLM"],
        "model_type": "gemma3_text",
        "hidden_size": hidden,
        "intermediate_size": meta_u32(c, &format!("{a}.feed_forward_length"))?,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": meta_u32(c, &format!("{a}.attention.head_count_kv")).unwrap_or(heads),
        "head_dim": head_dim,
        "rms_norm_eps": meta_f32(c, &format!("{a}.attention.layer_norm_rms_epsilon")).unwrap_or(1e-6),
        "rope_theta": meta_f32(c, &format!("{a}.rope.freq_base")).unwrap_or(1_000_000.0),
        "rope_local_base_freq": 10000.0,
        "rope_scaling": rope_scaling,
        "sliding_window": meta_u32(c, &format!("{a}.attention.sliding_window")).unwrap_or(4096),
        "sliding_window_pattern": 6,
        "query_pre_attn_scalar": query_pre_attn_scalar,
        "max_position_embeddings": meta_u32(c, &format!("{a}.context_length")).unwrap_or(32768),
        "vocab_size": vocab.tokens.len(),
        "tie_word_embeddings": true,
        "hidden_activation": "gelu_pytorch_tanh",
        "attn_logit_softcapping": null,
        "final_logit_softcapping": null,
        "attention_bias": false,
        "bos_token_id": vocab.bos_id,
        "eos_token_id": vocab.eos_id,
        // A hint only (some converters write -1 or the vocabulary size): kept when it names a token.
        "pad_token_id": opt(c, "tokenizer.ggml.padding_token_id", |v| v.to_u32())
            .filter(|&id| (id as usize) < vocab.tokens.len()),
        "torch_dtype": "float32",
    }))
}

/// Where converted models are cached: `$PCAI_CACHE_DIR`, else the user's cache folder.
pub fn cache_root() -> PathBuf {
    if let Some(d) = std::env::var_os("PCAI_CACHE_DIR") {
        return PathBuf::from(d).join("gguf");
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("LOCALAPPDATA").map(PathBuf::from))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("pcai-inference").join("gguf")
}

/// FNV-1a: a stable key for the cache (std's hasher may change between Rust versions).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in *p {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
    }
    h
}

/// A key from the file's content, not its path: copies of one model share an entry. The
/// header (metadata and tensor table) and the last megabyte identify a GGUF file in practice.
fn cache_key(path: &Path) -> Result<String, String> {
    use std::io::{Read, Seek, SeekFrom};
    const SAMPLE: u64 = 1 << 20;
    let mut f = File::open(path).map_err(|e| e.to_string())?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    let mut head = Vec::new();
    (&mut f)
        .take(8 * SAMPLE)
        .read_to_end(&mut head)
        .map_err(|e| e.to_string())?;
    let mut tail = Vec::new();
    f.seek(SeekFrom::Start(len.saturating_sub(SAMPLE)))
        .map_err(|e| e.to_string())?;
    f.read_to_end(&mut tail).map_err(|e| e.to_string())?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let key = fnv1a(&[
        &head,
        &tail,
        &len.to_le_bytes(),
        &CONVERTER_VERSION.to_le_bytes(),
    ]);
    Ok(format!("{stem}-{key:016x}"))
}

/// Renames a finished `tmp` folder to `target`. Another process may have made `target` first
/// (it holds `marker` then); either folder is complete and identical, so ours is dropped.
pub fn move_into_place(tmp: &Path, target: &Path, marker: &str) -> Result<(), String> {
    if std::fs::rename(tmp, target).is_err() {
        let _ = std::fs::remove_dir_all(tmp);
        if !target.join(marker).is_file() {
            return Err(format!("cannot move {} into place", target.display()));
        }
    }
    Ok(())
}

/// How many converted models the cache keeps; the least recently used go first.
const MAX_CACHED_MODELS: usize = 4;

fn touch(marker: &Path) {
    if let Ok(f) = File::options().write(true).open(marker) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

/// Removes the least recently used entries beyond `MAX_CACHED_MODELS`.
fn evict(cache: &Path) {
    let Ok(entries) = std::fs::read_dir(cache) else {
        return;
    };
    let mut complete: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let marker = e.path().join(".complete");
            let used = std::fs::metadata(&marker).and_then(|m| m.modified()).ok()?;
            Some((used, e.path()))
        })
        .collect();
    complete.sort_by_key(|entry| std::cmp::Reverse(entry.0));
    for (_, dir) in complete.into_iter().skip(MAX_CACHED_MODELS) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

const UQFF_FILE: &str = "weights.uqff";

/// Converts (or finds in the cache) the engine folder for a Gemma 3 GGUF file.
pub fn convert_gemma3(path: &Path, cache: &Path) -> Result<Converted, String> {
    let dir = cache.join(cache_key(path)?);
    if dir.join(".complete").is_file() {
        touch(&dir.join(".complete"));
        return Ok(Converted {
            dir,
            uqff_file: UQFF_FILE.into(),
        });
    }
    std::fs::create_dir_all(cache)
        .map_err(|e| format!("cannot create {}: {e}", cache.display()))?;
    let tmp = cache.join(format!(
        ".{}.tmp-{}",
        dir.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    let result = write_gemma3(path, &tmp);
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    move_into_place(&tmp, &dir, ".complete")?;
    evict(cache);
    Ok(Converted {
        dir,
        uqff_file: UQFF_FILE.into(),
    })
}

fn write_gemma3(path: &Path, out: &Path) -> Result<(), String> {
    let mut reader = BufReader::new(File::open(path).map_err(|e| e.to_string())?);
    let content =
        Content::read(&mut reader).map_err(|e| format!("cannot read the GGUF header: {e}"))?;
    let vocab = read_vocab(&content)?;
    let config = gemma3_config(&content, &vocab)?;
    let layers = meta_u32(&content, "gemma3.block_count")? as usize;
    let err = |e: candle_core::Error| e.to_string();
    let mut load = |name: &str| {
        content
            .tensor(&mut reader, name, &Device::Cpu)
            .map_err(|e| format!("tensor `{name}`: {e}"))
    };

    // Unquantized tensors. llama.cpp stores Gemma's RMSNorm weights as (1 + w); HF stores w.
    let mut plain: HashMap<String, Tensor> = HashMap::new();
    let norm = |q: candle_core::quantized::QTensor| -> Result<Tensor, String> {
        (q.dequantize(&Device::Cpu).map_err(err)? - 1.0).map_err(err)
    };
    let embed = load("token_embd.weight")?;
    plain.insert(
        "model.embed_tokens.weight".into(),
        embed.dequantize(&Device::Cpu).map_err(err)?,
    );
    plain.insert(
        "model.norm.weight".into(),
        norm(load("output_norm.weight")?)?,
    );
    for i in 0..layers {
        for (gguf, hf) in [
            ("attn_norm", "input_layernorm"),
            ("post_attention_norm", "post_attention_layernorm"),
            ("ffn_norm", "pre_feedforward_layernorm"),
            ("post_ffw_norm", "post_feedforward_layernorm"),
            ("attn_q_norm", "self_attn.q_norm"),
            ("attn_k_norm", "self_attn.k_norm"),
        ] {
            let t = load(&format!("blk.{i}.{gguf}.weight"))?;
            plain.insert(format!("model.layers.{i}.{hf}.weight"), norm(t)?);
        }
    }
    candle_core::safetensors::save(&plain, out.join("model.safetensors")).map_err(err)?;
    drop(plain);

    // Quantized matrices, in the engine's ISQ layer order: lm_head, then per layer
    // q, k, v, o, gate, up, down. The tied lm_head is the embedding table itself.
    let mut artifacts: HashMap<String, Tensor> = HashMap::new();
    let mut add = |index: usize, q: candle_core::quantized::QTensor| -> Result<(), String> {
        let layer = GgufMatMul::new(QuantMethodConfig::Gguf {
            q_weight: Arc::new(q),
            b: None,
        })
        .map_err(err)?;
        let bytes = layer.serialize().map_err(err)?.into_owned();
        let n = bytes.len();
        artifacts.insert(
            index.to_string(),
            Tensor::from_vec(bytes, n, &Device::Cpu).map_err(err)?,
        );
        Ok(())
    };
    add(0, embed)?;
    for i in 0..layers {
        for (j, name) in [
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_output",
            "ffn_gate",
            "ffn_up",
            "ffn_down",
        ]
        .iter()
        .enumerate()
        {
            let q = load(&format!("blk.{i}.{name}.weight"))?;
            add(1 + 7 * i + j, widen_scalar_blocks(q).map_err(err)?)?;
        }
    }
    candle_core::safetensors::save(&artifacts, out.join(UQFF_FILE)).map_err(err)?;

    let write = |name: &str, text: &str| -> Result<(), String> {
        let mut f = File::create(out.join(name)).map_err(|e| format!("{name}: {e}"))?;
        f.write_all(text.as_bytes())
            .map_err(|e| format!("{name}: {e}"))
    };
    write("config.json", &config.to_string())?;
    write("tokenizer.json", &vocab.to_tokenizer_json()?)?;
    let mut tok_config = json!({
        "bos_token": vocab.bos_id.map(|i| vocab.tokens[i as usize].clone()),
        "eos_token": vocab.eos_id.map(|i| vocab.tokens[i as usize].clone()),
        "unk_token": vocab.unk_id.map(|i| vocab.tokens[i as usize].clone()),
        "add_bos_token": vocab.add_bos,
        "add_eos_token": vocab.add_eos,
    });
    if let Some(t) = opt(&content, "tokenizer.chat_template", |v| {
        v.to_string().cloned()
    }) {
        tok_config["chat_template"] = json!(t);
    }
    write("tokenizer_config.json", &tok_config.to_string())?;
    write(".complete", "")?;
    Ok(())
}
