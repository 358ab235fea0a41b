//! What we read from a GGUF file's header ourselves: its vocabulary (for our tokenizer, which
//! the engine shares) and its chat template. The weights are read by the engine.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};

use crate::gguf_tokenizer::GgufVocab;

fn meta<'a>(c: &'a Content, key: &str) -> Result<&'a Value, String> {
    c.metadata
        .get(key)
        .ok_or_else(|| format!("the GGUF metadata lacks `{key}`"))
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
