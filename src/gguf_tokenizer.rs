//! A Hugging Face tokenizer built from a GGUF file's tokenizer metadata.
//!
//! The engine turns `tokenizer.ggml.model = "llama"` (SentencePiece) vocabularies into a
//! Unigram model, which segments differently from SentencePiece-BPE. We build a BPE model with
//! byte fallback instead, whose merges are ranked by the score of the merged piece, as
//! SentencePiece and llama.cpp merge.

use std::collections::HashMap;

use serde_json::{json, Value};
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::{AddedToken, Tokenizer};

/// The tables of a BPE model, built directly: through `tokenizer.json` text, the parse of a
/// 262,144-token vocabulary and its half a million merges took a second and about 270 MiB of
/// transient memory.
struct BpeTables {
    vocab: Vocab,
    merges: Vec<(String, String)>,
    unk: Option<String>,
    byte_fallback: bool,
    ignore_merges: bool,
}

/// `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_attr` ordering).
pub const TOKEN_NORMAL: i32 = 1;
pub const TOKEN_UNKNOWN: i32 = 2;
pub const TOKEN_CONTROL: i32 = 3;
pub const TOKEN_USER_DEFINED: i32 = 4;
pub const TOKEN_BYTE: i32 = 6;

/// The tokenizer part of a GGUF file's metadata.
pub struct GgufVocab {
    pub model: String,
    /// `tokenizer.ggml.pre`: which pre-tokenizer a byte-level BPE vocabulary expects.
    pub pre: Option<String>,
    pub tokens: Vec<String>,
    pub scores: Vec<f32>,
    pub token_types: Vec<i32>,
    pub merges: Vec<String>,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub unk_id: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub add_space_prefix: bool,
}

const SPACE: &str = "\u{2581}";

/// Pre-tokenizer regexes of byte-level BPE vocabularies, by `tokenizer.ggml.pre` (the same
/// expressions llama.cpp and the models' own tokenizer.json files use).
const GPT2_SPLIT: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The split regex for a `tokenizer.ggml.pre` name, and whether whole words found in the
/// vocabulary skip the merges (Llama 3's `ignore_merges`).
fn byte_level_split(pre: &str) -> Option<(&'static str, bool)> {
    Some(match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "smaug-bpe" | "falcon3" | "dbrx" => {
            (LLAMA3_SPLIT, true)
        }
        "qwen2" | "deepseek-r1-qwen" | "megrez" => (QWEN2_SPLIT, false),
        "default" | "gpt2" | "gpt-2" | "phi-2" | "stablelm2" | "olmo" | "jina-es" | "jina-de" => {
            (GPT2_SPLIT, false)
        }
        _ => return None,
    })
}

/// Token texts that end a turn in the common chat formats; the model's EOS is added to them.
const END_OF_TURN_TEXTS: &[&str] = &[
    "<end_of_turn>",
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|endoftext|>",
    "<|eom_id|>",
    "</s>",
    "<eos>",
];

impl GgufVocab {
    /// The ids that end generation: EOS plus the end-of-turn control tokens of the vocabulary.
    pub fn end_of_generation_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.eos_id.into_iter().collect();
        for (i, (t, ty)) in self.tokens.iter().zip(&self.token_types).enumerate() {
            if *ty == TOKEN_CONTROL
                && END_OF_TURN_TEXTS.contains(&t.as_str())
                && !ids.contains(&(i as u32))
            {
                ids.push(i as u32);
            }
        }
        ids
    }

    fn vocab(&self) -> Vocab {
        let mut m = Vocab::with_capacity(self.tokens.len());
        for (i, t) in self.tokens.iter().enumerate() {
            // Duplicate spellings keep the first id, as SentencePiece does.
            m.entry(t.clone()).or_insert(i as u32);
        }
        m
    }

    /// Control, user-defined and unknown tokens, matched in the text before the model runs.
    fn added_tokens(&self) -> Vec<AddedToken> {
        self.tokens
            .iter()
            .zip(&self.token_types)
            .filter(|(_, ty)| matches!(**ty, TOKEN_CONTROL | TOKEN_USER_DEFINED | TOKEN_UNKNOWN))
            .map(|(t, ty)| {
                AddedToken::from(t.clone(), *ty != TOKEN_USER_DEFINED)
                    .single_word(false)
                    .lstrip(false)
                    .rstrip(false)
                    .normalized(false)
            })
            .collect()
    }

    /// SentencePiece-BPE merges: every split of a normal piece into two known pieces, ranked by
    /// the merged piece's score (higher first), then by id.
    fn spm_merges(&self) -> Vec<(String, String)> {
        let index: HashMap<&str, usize> = self
            .tokens
            .iter()
            .enumerate()
            .rev()
            .map(|(i, t)| (t.as_str(), i))
            .collect();
        let mut merges: Vec<(f32, usize, usize, usize)> = Vec::new();
        for (id, piece) in self.tokens.iter().enumerate() {
            if self.token_types.get(id).copied().unwrap_or(TOKEN_NORMAL) != TOKEN_NORMAL {
                continue;
            }
            for (split, _) in piece.char_indices().skip(1) {
                let (l, r) = piece.split_at(split);
                if let (Some(&li), Some(&ri)) = (index.get(l), index.get(r)) {
                    merges.push((self.scores.get(id).copied().unwrap_or(0.0), id, li, ri));
                }
            }
        }
        merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        merges
            .into_iter()
            .map(|(_, _, l, r)| (self.tokens[l].clone(), self.tokens[r].clone()))
            .collect()
    }

    /// Adds BOS (and EOS) around the text when the model asks for them.
    fn post_processor(&self) -> Value {
        let bos = self.bos_id.filter(|_| self.add_bos);
        let eos = self.eos_id.filter(|_| self.add_eos);
        let mut special = serde_json::Map::new();
        let mut piece = |id: u32| {
            let t = self.tokens[id as usize].clone();
            special.insert(t.clone(), json!({"id": t, "ids": [id], "tokens": [t]}));
            json!({"SpecialToken": {"id": t, "type_id": 0}})
        };
        let (bos, eos) = (bos.map(&mut piece), eos.map(&mut piece));
        let seq = |id: &str, type_id: u32| json!({"Sequence": {"id": id, "type_id": type_id}});
        let around = |inner: Value| {
            bos.iter()
                .cloned()
                .chain([inner])
                .chain(eos.iter().cloned())
                .collect::<Vec<_>>()
        };
        let single = around(seq("A", 0));
        let mut pair = single.clone();
        pair.extend(around(seq("B", 1)));
        json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": special})
    }

    /// The tokenizer.
    pub fn to_tokenizer(&self) -> Result<Tokenizer, String> {
        let (skeleton, tables) = self.skeleton_and_tables()?;
        let text = serde_json::to_string(&skeleton).map_err(|e| e.to_string())?;
        let mut tokenizer = Tokenizer::from_bytes(text.as_bytes()).map_err(|e| e.to_string())?;
        let mut bpe = BPE::builder()
            .vocab_and_merges(tables.vocab, tables.merges)
            .fuse_unk(tables.unk.is_some())
            .byte_fallback(tables.byte_fallback)
            .ignore_merges(tables.ignore_merges);
        if let Some(unk) = tables.unk {
            bpe = bpe.unk_token(unk);
        }
        tokenizer.with_model(bpe.build().map_err(|e| format!("BPE model: {e}"))?);
        // After the model: an added token in the vocabulary keeps its id there.
        tokenizer.add_tokens(&self.added_tokens());
        Ok(tokenizer)
    }

    /// `tokenizer.json` without the model's tables and the added tokens, and those tables.
    fn skeleton_and_tables(&self) -> Result<(Value, BpeTables), String> {
        let unk = self.unk_id.map(|i| self.tokens[i as usize].clone());
        let tokenizer = match self.model.as_str() {
            "llama" | "gemma" | "gemma3" => {
                let mut normalizers = Vec::new();
                if self.add_space_prefix {
                    normalizers.push(json!({"type": "Prepend", "prepend": SPACE}));
                }
                normalizers
                    .push(json!({"type": "Replace", "pattern": {"String": " "}, "content": SPACE}));
                let mut decoders = vec![
                    json!({"type": "Replace", "pattern": {"String": SPACE}, "content": " "}),
                    json!({"type": "ByteFallback"}),
                    json!({"type": "Fuse"}),
                ];
                if self.add_space_prefix {
                    decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
                }
                let skeleton = json!({
                    "version": "1.0",
                    "truncation": null,
                    "padding": null,
                    "added_tokens": [],
                    "normalizer": {"type": "Sequence", "normalizers": normalizers},
                    "pre_tokenizer": null,
                    "post_processor": self.post_processor(),
                    "decoder": {"type": "Sequence", "decoders": decoders},
                    "model": empty_bpe(),
                });
                let tables = BpeTables {
                    vocab: self.vocab(),
                    merges: self.spm_merges(),
                    unk,
                    byte_fallback: true,
                    ignore_merges: false,
                };
                (skeleton, tables)
            }
            "gpt2" => {
                let pre = self.pre.as_deref().unwrap_or("default");
                let (split, ignore_merges) = byte_level_split(pre).ok_or_else(|| {
                    format!("the byte-level BPE pre-tokenizer `{pre}` is not known to this version")
                })?;
                let merges: Vec<(String, String)> = self
                    .merges
                    .iter()
                    .map(|m| match m.split_once(' ') {
                        Some((a, b)) => Ok((a.to_string(), b.to_string())),
                        None => Err(format!("malformed merge `{m}`")),
                    })
                    .collect::<Result<_, _>>()?;
                let skeleton = json!({
                    "version": "1.0",
                    "truncation": null,
                    "padding": null,
                    "added_tokens": [],
                    "normalizer": null,
                    "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                        {"type": "Split", "pattern": {"Regex": split}, "behavior": "Isolated", "invert": false},
                        {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
                    ]},
                    "post_processor": self.post_processor(),
                    "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
                    "model": empty_bpe(),
                });
                let tables = BpeTables {
                    vocab: self.vocab(),
                    merges,
                    unk: None,
                    byte_fallback: false,
                    ignore_merges,
                };
                (skeleton, tables)
            }
            other => {
                return Err(format!(
                    "GGUF tokenizer model `{other}` cannot be converted by this version"
                ))
            }
        };
        Ok(tokenizer)
    }
}

/// A BPE model without tables, replaced by `to_tokenizer`.
fn empty_bpe() -> Value {
    json!({"type": "BPE", "vocab": {}, "merges": []})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> GgufVocab {
        let tokens: Vec<String> = [
            "<pad>",
            "<eos>",
            "<bos>",
            "<unk>",
            "<end_of_turn>",
            "▁",
            "a",
            "b",
            "▁a",
            "ab",
            "▁ab",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain((0..=255u8).map(|b| format!("<0x{b:02X}>")))
        .collect();
        let n = tokens.len();
        let mut types = vec![TOKEN_NORMAL; n];
        for (i, t) in types.iter_mut().enumerate().take(5) {
            *t = if i == 3 { TOKEN_UNKNOWN } else { TOKEN_CONTROL };
        }
        for t in types.iter_mut().skip(11) {
            *t = TOKEN_BYTE;
        }
        let mut scores = vec![0.0f32; n];
        scores[8] = -1.0; // "▁a"
        scores[9] = -2.0; // "ab"
        scores[10] = -0.5; // "▁ab"
        GgufVocab {
            model: "llama".into(),
            pre: None,
            tokens,
            scores,
            token_types: types,
            merges: vec![],
            bos_id: Some(2),
            eos_id: Some(1),
            unk_id: Some(3),
            add_bos: true,
            add_eos: false,
            add_space_prefix: false,
        }
    }

    #[test]
    fn builds_a_working_bpe_with_byte_fallback() {
        let v = toy();
        let tok = v.to_tokenizer().unwrap();
        let ids = tok.encode(" ab a", true).unwrap().get_ids().to_vec();
        assert_eq!(ids, vec![2, 10, 8]);
        // "é" is not in the vocabulary: its two UTF-8 bytes become byte tokens.
        let ids = tok.encode("é", false).unwrap().get_ids().to_vec();
        assert_eq!(ids, vec![11 + 0xC3, 11 + 0xA9]);
        assert_eq!(tok.decode(&ids, false).unwrap(), "é");
        assert_eq!(tok.decode(&[10, 8], false).unwrap(), " ab a");
    }

    #[test]
    fn end_of_generation_includes_end_of_turn() {
        assert_eq!(toy().end_of_generation_ids(), vec![1, 4]);
    }
}
