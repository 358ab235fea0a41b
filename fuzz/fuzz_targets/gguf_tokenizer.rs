//! Fuzzes our GGUF tokenizer conversion (`src/gguf_tokenizer.rs`, compiled in directly) and
//! the Hugging Face tokenizer built from it: any vocabulary that passes the loader's checks
//! (ids inside the vocabulary, arrays of one length) converts to a tokenizer or to an error,
//! and the tokenizer encodes and decodes without panicking.
//!
//! The input is read as: one byte choosing the tokenizer model, one choosing the byte-level
//! pre-tokenizer, one of flags, then newline-separated token texts; token types and scores
//! come from the texts' bytes, merges pair each token with the next.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../src/gguf_tokenizer.rs"]
mod gguf_tokenizer;

use gguf_tokenizer::GgufVocab;

const MODELS: [&str; 4] = ["llama", "gemma3", "gpt2", "bert"];
const PRE: [&str; 6] = [
    "default",
    "llama3",
    "qwen2",
    "gpt-2",
    "deepseek-llm",
    "no-such",
];
const TYPES: [i32; 6] = [1, 2, 3, 4, 5, 6];

fuzz_target!(|data: &[u8]| {
    let [model, pre, flags, rest @ ..] = data else {
        return;
    };
    let tokens: Vec<String> = String::from_utf8_lossy(rest)
        .split('\n')
        .take(4096)
        .map(str::to_owned)
        .collect();
    let n = tokens.len();
    let vocab = GgufVocab {
        model: MODELS[*model as usize % MODELS.len()].to_owned(),
        pre: Some(PRE[*pre as usize % PRE.len()].to_owned()),
        scores: tokens.iter().map(|t| -(t.len() as f32)).collect(),
        token_types: tokens
            .iter()
            .map(|t| TYPES[t.bytes().next().unwrap_or(0) as usize % TYPES.len()])
            .collect(),
        merges: tokens
            .windows(2)
            .map(|w| format!("{} {}", w[0], w[1]))
            .collect(),
        bos_id: (flags & 1 != 0).then_some(0),
        eos_id: (flags & 2 != 0).then_some((n - 1) as u32),
        unk_id: (flags & 4 != 0).then_some((n / 2) as u32),
        add_bos: flags & 8 != 0,
        add_eos: flags & 16 != 0,
        add_space_prefix: flags & 32 != 0,
        tokens,
    };
    let Ok(tokenizer) = vocab.to_tokenizer() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    for sample in [&text[..], "Hello, world! 123 \u{1F600} \n\t", ""] {
        if let Ok(encoding) = tokenizer.encode_fast(sample, true) {
            let _ = tokenizer.decode(encoding.get_ids(), false);
        }
    }
});
