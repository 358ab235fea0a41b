//! A Hugging Face tokenizer built from a GGUF file's tokenizer metadata.
//!
//! The engine turns `tokenizer.ggml.model = "llama"` (SentencePiece) vocabularies into a
//! Unigram model, which segments differently from SentencePiece-BPE. We build a BPE model with
//! byte fallback instead, whose merges are ranked by the score of the merged piece, as
//! SentencePiece and llama.cpp merge.

use serde_json::{json, Value};
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::{AddedToken, Tokenizer};

/// The tables of a BPE model, built directly: through `tokenizer.json` text, the parse of a
/// 262,144-token vocabulary and its half a million merges took a second and about 270 MiB of
/// transient memory.
struct BpeTables {
    vocab: Vocab,
    merges: BpeMerges,
    unk: Option<String>,
    byte_fallback: bool,
    ignore_merges: bool,
}

/// A BPE model's merges, in rank order.
enum BpeMerges {
    /// As the GGUF file spells them (byte-level vocabularies).
    Text(Vec<(String, String)>),
    /// As the ids each joins and the id it makes (our SentencePiece conversion, which knows
    /// them: no half a million strings to copy and look up again; tokenizers patch 0002).
    Ids(Vec<((u32, u32), u32)>),
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
/// Every digit on its own, before GPT-2's regex runs on the rest (llama.cpp's two-step split
/// for SmolLM, StarCoder and others; their tokenizer.json: `Digits` then `ByteLevel`).
const DIGIT_SPLIT: &str = r"\p{N}";

/// The split regexes (applied in turn) for a `tokenizer.ggml.pre` name, and whether whole
/// words found in the vocabulary skip the merges (Llama 3's `ignore_merges`).
fn byte_level_split(pre: &str) -> Option<(&'static [&'static str], bool)> {
    let found: (&'static [&'static str], bool) =
        match pre {
            "llama3" | "llama-v3" | "llama-bpe" | "smaug-bpe" | "falcon3" | "dbrx" => {
                (&[LLAMA3_SPLIT], true)
            }
            "qwen2" | "deepseek-r1-qwen" | "megrez" => (&[QWEN2_SPLIT], false),
            "default" | "gpt2" | "gpt-2" | "phi-2" | "stablelm2" | "olmo" | "jina-es"
            | "jina-de" => (&[GPT2_SPLIT], false),
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone"
            | "minerva-7b" => (&[DIGIT_SPLIT, GPT2_SPLIT], false),
            _ => return None,
        };
    Some(found)
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
    /// the merged piece's score (higher first), then by id. Ids are `vocab`'s, which keeps the
    /// first of duplicate spellings (as merges given as text would find them).
    fn spm_merges(&self, vocab: &Vocab) -> Vec<((u32, u32), u32)> {
        // (score, piece id, left, right, merged)
        let mut merges: Vec<(f32, u32, u32, u32, u32)> = Vec::new();
        for (id, piece) in self.tokens.iter().enumerate() {
            if self.token_types.get(id).copied().unwrap_or(TOKEN_NORMAL) != TOKEN_NORMAL {
                continue;
            }
            let score = self.scores.get(id).copied().unwrap_or(0.0);
            let merged = vocab.get(piece.as_str()).copied().unwrap_or(id as u32);
            for (split, _) in piece.char_indices().skip(1) {
                let (l, r) = piece.split_at(split);
                if let (Some(&li), Some(&ri)) = (vocab.get(l), vocab.get(r)) {
                    merges.push((score, id as u32, li, ri, merged));
                }
            }
        }
        merges.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        merges
            .into_iter()
            .map(|(_, _, l, r, merged)| ((l, r), merged))
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

    /// Whether `to_tokenizer` knows this kind of vocabulary, checked before the (slower)
    /// conversion, which the load runs on another thread.
    pub fn check_convertible(&self) -> Result<(), String> {
        match self.model.as_str() {
            "llama" | "gemma" | "gemma3" => Ok(()),
            "gpt2" => {
                self.byte_level_split()?;
                self.byte_level_merges().map(drop)
            }
            other => Err(unknown_model(other)),
        }
    }

    /// The split regexes and `ignore_merges` of a byte-level vocabulary.
    fn byte_level_split(&self) -> Result<(&'static [&'static str], bool), String> {
        let pre = self.pre.as_deref().unwrap_or("default");
        byte_level_split(pre).ok_or_else(|| {
            format!("the byte-level BPE pre-tokenizer `{pre}` is not known to this version")
        })
    }

    /// A byte-level vocabulary's merges, as pairs.
    fn byte_level_merges(&self) -> Result<Vec<(&str, &str)>, String> {
        self.merges
            .iter()
            .map(|m| {
                m.split_once(' ')
                    .ok_or_else(|| format!("malformed merge `{m}`"))
            })
            .collect()
    }

    /// The tokenizer.
    pub fn to_tokenizer(&self) -> Result<Tokenizer, String> {
        let (skeleton, tables) = self.skeleton_and_tables()?;
        let text = serde_json::to_string(&skeleton).map_err(|e| e.to_string())?;
        let mut tokenizer = Tokenizer::from_bytes(text.as_bytes()).map_err(|e| e.to_string())?;
        let bpe = match tables.merges {
            BpeMerges::Text(merges) => BPE::builder().vocab_and_merges(tables.vocab, merges),
            BpeMerges::Ids(merges) => BPE::builder().vocab_and_merge_ids(tables.vocab, merges),
        };
        let mut bpe = bpe
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
                let vocab = self.vocab();
                let tables = BpeTables {
                    merges: BpeMerges::Ids(self.spm_merges(&vocab)),
                    vocab,
                    unk,
                    byte_fallback: true,
                    ignore_merges: false,
                };
                (skeleton, tables)
            }
            "gpt2" => {
                let (splits, ignore_merges) = self.byte_level_split()?;
                let mut pretokenizers: Vec<Value> = splits
                    .iter()
                    .map(|s| {
                        json!({"type": "Split", "pattern": {"Regex": s}, "behavior": "Isolated", "invert": false})
                    })
                    .collect();
                pretokenizers.push(json!(
                    {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
                ));
                let merges: Vec<(String, String)> = self
                    .byte_level_merges()?
                    .into_iter()
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .collect();
                let skeleton = json!({
                    "version": "1.0",
                    "truncation": null,
                    "padding": null,
                    "added_tokens": [],
                    "normalizer": null,
                    "pre_tokenizer": {"type": "Sequence", "pretokenizers": pretokenizers},
                    "post_processor": self.post_processor(),
                    "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
                    "model": empty_bpe(),
                });
                let tables = BpeTables {
                    vocab: self.vocab(),
                    merges: BpeMerges::Text(merges),
                    unk: None,
                    byte_fallback: false,
                    ignore_merges,
                };
                (skeleton, tables)
            }
            other => return Err(unknown_model(other)),
        };
        Ok(tokenizer)
    }
}

fn unknown_model(model: &str) -> String {
    format!("GGUF tokenizer model `{model}` cannot be converted by this version")
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

    /// GPT-2's byte-level alphabet, in byte order.
    fn byte_level_alphabet() -> Vec<String> {
        let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let mut next = 0x100u32;
        (0..=255u8)
            .map(|b| {
                let c = if printable(b) {
                    char::from(b)
                } else {
                    next += 1;
                    char::from_u32(next - 1).unwrap()
                };
                c.to_string()
            })
            .collect()
    }

    /// A byte-level vocabulary: the alphabet, a few merges, special and user-defined tokens,
    /// and a normal token spelling the marker byte, a special token's text and more ("ÿ" is 0xFF).
    fn byte_level_toy() -> GgufVocab {
        let mut tokens = byte_level_alphabet();
        let mut types = vec![TOKEN_NORMAL; tokens.len()];
        for (t, ty) in [
            ("Ġa", TOKEN_NORMAL),
            ("ab", TOKEN_NORMAL),
            ("Ġab", TOKEN_NORMAL),
            ("ÿ<|end|>!", TOKEN_NORMAL),
            ("<|end|>", TOKEN_CONTROL),
            ("<|user|>", TOKEN_USER_DEFINED),
            ("ĊĊ", TOKEN_USER_DEFINED),
        ] {
            tokens.push(t.to_string());
            types.push(ty);
        }
        let n = tokens.len();
        GgufVocab {
            model: "gpt2".into(),
            pre: Some("gpt2".into()),
            tokens,
            scores: vec![0.0; n],
            token_types: types,
            merges: vec!["Ġ a".into(), "a b".into(), "Ġa b".into()],
            bos_id: None,
            eos_id: Some(n as u32 - 3),
            unk_id: None,
            add_bos: false,
            add_eos: false,
            add_space_prefix: false,
        }
    }

    /// The engine's token bytes (engine patch mistralrs-core 0018, computed from the shared
    /// tokenizer) equal those of llguidance's token trie, built from a copy, for every id.
    fn assert_engine_token_bytes_match_the_trie(vocab: &GgufVocab) {
        let tokens =
            mistralrs::core::LlgFactory::new(std::sync::Arc::new(vocab.to_tokenizer().unwrap()))
                .unwrap();
        let env = tokens.tok_env(&[]).unwrap();
        let trie = env.tok_trie();
        let n = vocab.tokens.len() as u32;
        let mut extended = 0;
        for id in 0..n + 2 {
            assert_eq!(tokens.token(id), trie.token(id), "bytes of token {id}");
            for special in [false, true] {
                assert_eq!(
                    tokens.decode_ext(&[id], special),
                    trie.decode_ext(&[id], special),
                    "decoding token {id}"
                );
            }
            let has = trie.has_extensions(trie.token(id));
            assert_eq!(tokens.has_extensions(id), has, "extensions of token {id}");
            extended += usize::from(has);
        }
        // Both answers occur.
        assert!(extended > 0 && extended < n as usize);
    }

    #[test]
    fn engine_token_bytes_match_the_trie_with_byte_fallback() {
        assert_engine_token_bytes_match_the_trie(&toy());
    }

    #[test]
    fn engine_token_bytes_match_the_trie_byte_level() {
        let vocab = byte_level_toy();
        assert_engine_token_bytes_match_the_trie(&vocab);
        let tokens =
            mistralrs::core::LlgFactory::new(std::sync::Arc::new(vocab.to_tokenizer().unwrap()))
                .unwrap();
        // A normal token spells the marker and `<|end|>`: the special token has an extension.
        let end = vocab.tokens.iter().position(|t| t == "<|end|>").unwrap() as u32;
        assert!(tokens.has_extensions(end));
    }
}
