//! A bounds-checked read of a GGUF file's header, done before the engine sees the file.
//!
//! The engine trusts the counts and offsets in the header: a truncated or corrupted file can
//! make it allocate gigabytes, panic, or fault on a memory map past the end of the file.
//! Here every length is checked against the bytes that are really there, nothing is allocated
//! in proportion to a claimed size, and every tensor must lie inside the file.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

/// What we learn from a valid header.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct GgufSummary {
    pub version: u32,
    pub architecture: Option<String>,
    pub tensor_count: u64,
    /// Entries of `tokenizer.ggml.tokens`, when the file has a vocabulary.
    pub vocab_size: Option<u64>,
    /// Integer metadata the model check reads (`{arch}.block_count`, ...): key and value,
    /// `None` for an integer array (per-layer values).
    hyperparameters: Vec<(String, Option<u64>)>,
    /// Rows of the token embedding table (`token_embd.weight`'s second dimension).
    embedding_rows: Option<u64>,
    /// Whether the file has its own output head (`output.weight`) rather than a tied one.
    has_output_head: bool,
    /// Whether the file has long-context RoPE factors (`rope_factors_long.weight`).
    has_rope_factors: bool,
}

impl GgufSummary {
    /// The `{architecture}.{name}` hyperparameter: `None` when absent, `Some(None)` for an
    /// integer array (per-layer values).
    fn hyperparameter(&self, architecture: &str, name: &str) -> Option<Option<u64>> {
        let key = format!("{architecture}.{name}");
        self.hyperparameters
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
    }
}

/// Architectures the engine loads from GGUF (mistralrs 0.8.1's `GGUFArchitecture` that its
/// GGUF pipeline builds), and `gemma3`, which we convert for its SafeTensors loader.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &[
    "gemma3",
    "llama",
    "mistral3",
    "phi2",
    "phi3",
    "qwen2",
    "qwen3",
    "qwen3moe",
    "starcoder2",
];

/// Whether the engine can run a GGUF model of this architecture (matched as the engine does,
/// ignoring case).
pub fn is_supported_architecture(architecture: &str) -> bool {
    SUPPORTED_ARCHITECTURES.contains(&architecture.to_ascii_lowercase().as_str())
}

/// Hyperparameters every supported architecture has, each a positive integer at most this.
const REQUIRED_HYPERPARAMETERS: &[(&str, u64)] = &[
    ("block_count", 4_096),
    ("embedding_length", 1 << 20),
    ("attention.head_count", 1 << 16),
    ("context_length", 1 << 24),
];

/// Integer metadata read when present, for `unsupported_layout`.
const OPTIONAL_HYPERPARAMETERS: &[&str] = &["rope.dimension_count"];

/// Token-id metadata the loaders read (the engine indexes the vocabulary with them); each
/// must name an entry of it. Other ids (padding, separator, end of turn) are only hints:
/// converters write -1 or the vocabulary size there, and llama.cpp ignores such values, so
/// they are skipped here and ignored later.
const TOKEN_ID_KEYS: &[&str] = &[
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.unknown_token_id",
];

/// Tokenizer arrays that hold one entry per token.
const PER_TOKEN_ARRAYS: &[&str] = &["tokenizer.ggml.scores", "tokenizer.ggml.token_type"];

/// The most tokens a vocabulary may have (the largest real ones have about 262,000).
const MAX_VOCAB: u64 = 1 << 24;

/// Checks what loading a model needs beyond a well-formed file: a supported architecture
/// (checked by the caller first, with `is_supported_architecture`), a vocabulary, and the
/// architecture's hyperparameters, present, positive and not absurd.
pub fn check_model_metadata(summary: &GgufSummary) -> Result<(), String> {
    let architecture = summary
        .architecture
        .as_deref()
        .ok_or("the GGUF metadata lacks `general.architecture`")?;
    let vocab = summary
        .vocab_size
        .ok_or("the GGUF metadata lacks `tokenizer.ggml.tokens` (the file has no vocabulary)")?;
    for (name, max) in REQUIRED_HYPERPARAMETERS {
        let key = format!("{architecture}.{name}");
        let value = summary
            .hyperparameter(architecture, name)
            .ok_or_else(|| format!("the GGUF metadata lacks `{key}` (an integer)"))?;
        if let Some(v) = value {
            if v == 0 || v > *max {
                return Err(format!(
                    "the GGUF metadata's `{key}` = {v} is out of range (1 to {max})"
                ));
            }
        }
    }
    if let Some(rows) = summary.embedding_rows {
        if rows < vocab {
            return Err(format!(
                "the token embedding table has {rows} rows but the vocabulary has {vocab} tokens"
            ));
        }
    }
    Ok(())
}

/// Why the engine would compute a well-formed file of a supported architecture wrongly, or
/// fail on it mid-generation, if it would: layouts of later models its code does not read.
pub fn unsupported_layout(summary: &GgufSummary) -> Option<String> {
    if summary.architecture.as_deref() != Some("phi3") {
        return None;
    }
    let value = |name: &str| summary.hyperparameter("phi3", name).flatten();
    if summary.has_rope_factors {
        return Some(
            "it has long-context RoPE factors (`rope_factors_long`/`rope_factors_short`, as \
             Phi-3-mini-128k, Phi-3.5-mini and Phi-4-mini have), which the engine's Phi-3 \
             model does not apply"
                .into(),
        );
    }
    if !summary.has_output_head {
        return Some(
            "its output head is tied to the token embedding (no `output.weight`), which the \
             engine's Phi-3 model cannot read"
                .into(),
        );
    }
    if let (Some(rope), Some(hidden), Some(heads)) = (
        value("rope.dimension_count"),
        value("embedding_length"),
        value("attention.head_count"),
    ) {
        if rope < hidden / heads {
            return Some(format!(
                "it rotates {rope} of each head's {} dimensions, and the engine's Phi-3 model \
                 rotates whole heads",
                hidden / heads
            ));
        }
    }
    None
}

const MAGIC: &[u8; 4] = b"GGUF";
const MAX_DIMS: u32 = 4;
const MAX_NESTING: u32 = 4;
const MAX_KEY_BYTES: u64 = 65_536;

struct Reader<R> {
    inner: R,
    pos: u64,
    len: u64,
}

impl<R: Read> Reader<R> {
    fn remaining(&self) -> u64 {
        self.len - self.pos
    }

    fn bytes<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        if self.remaining() < N as u64 {
            return Err(format!("the file ends inside {what} (truncated?)"));
        }
        let mut buf = [0u8; N];
        self.inner
            .read_exact(&mut buf)
            .map_err(|e| format!("cannot read {what}: {e}"))?;
        self.pos += N as u64;
        Ok(buf)
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.bytes::<4>(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.bytes::<8>(what)?))
    }

    fn skip(&mut self, n: u64, what: &str) -> Result<(), String> {
        if self.remaining() < n {
            return Err(format!(
                "{what} claims {n} bytes but only {} remain (truncated or corrupted file)",
                self.remaining()
            ));
        }
        // Read past (metadata only; the tensor data is never read here).
        let skipped = std::io::copy(&mut (&mut self.inner).take(n), &mut std::io::sink())
            .map_err(|e| format!("cannot read {what}: {e}"))?;
        if skipped != n {
            return Err(format!("the file ends inside {what} (truncated?)"));
        }
        self.pos += n;
        Ok(())
    }

    fn string(&mut self, what: &str, max: u64) -> Result<String, String> {
        let n = self.u64(what)?;
        if n > max || n > self.remaining() {
            return Err(format!(
                "{what} claims a length of {n} bytes, more than the file holds"
            ));
        }
        let mut buf = vec![0u8; n as usize];
        self.inner
            .read_exact(&mut buf)
            .map_err(|e| format!("cannot read {what}: {e}"))?;
        self.pos += n;
        String::from_utf8(buf).map_err(|_| format!("{what} is not valid UTF-8"))
    }

    fn skip_string(&mut self, what: &str) -> Result<(), String> {
        let n = self.u64(what)?;
        self.skip(n, what)
    }
}

/// Whether `key` is one of the `{arch}.*` hyperparameters the model check reads.
fn is_hyperparameter(key: &str) -> bool {
    key.split_once('.').is_some_and(|(_, name)| {
        REQUIRED_HYPERPARAMETERS
            .iter()
            .any(|(required, _)| *required == name)
            || OPTIONAL_HYPERPARAMETERS.contains(&name)
    })
}

/// Size in bytes of one scalar of a metadata value type; `None` for strings and arrays.
fn scalar_size(value_type: u32) -> Result<Option<u64>, String> {
    Ok(match value_type {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        8 | 9 => None,
        t => return Err(format!("unknown metadata value type {t}")),
    })
}

/// Reads an integer metadata value of type `value_type`: `Ok(None)` if the type is not an
/// integer type, `Err` for a negative value.
fn read_integer<R: Read>(
    r: &mut Reader<R>,
    value_type: u32,
    key: &str,
) -> Result<Option<u64>, String> {
    let negative = || format!("metadata `{key}` is negative");
    Ok(Some(match value_type {
        0 => u64::from(r.bytes::<1>(key)?[0]),
        1 => u64::try_from(i8::from_le_bytes(r.bytes::<1>(key)?)).map_err(|_| negative())?,
        2 => u64::from(u16::from_le_bytes(r.bytes::<2>(key)?)),
        3 => u64::try_from(i16::from_le_bytes(r.bytes::<2>(key)?)).map_err(|_| negative())?,
        4 => u64::from(r.u32(key)?),
        5 => u64::try_from(i32::from_le_bytes(r.bytes::<4>(key)?)).map_err(|_| negative())?,
        10 => r.u64(key)?,
        11 => u64::try_from(i64::from_le_bytes(r.bytes::<8>(key)?)).map_err(|_| negative())?,
        _ => return Ok(None),
    }))
}

fn is_integer_type(value_type: u32) -> bool {
    matches!(value_type, 0..=5 | 10 | 11)
}

/// Skips one metadata value, checking every length on the way.
fn skip_value<R: Read>(
    r: &mut Reader<R>,
    value_type: u32,
    key: &str,
    depth: u32,
) -> Result<(), String> {
    // Nesting is bounded in `skip_items`, the only way down.
    match scalar_size(value_type)? {
        Some(n) => r.skip(n, key),
        None if value_type == 8 => r.skip_string(key),
        None => {
            let item_type = r.u32(key)?;
            let count = r.u64(key)?;
            skip_items(r, item_type, count, key, depth + 1)
        }
    }
}

/// Skips `count` array items of `item_type`, checking every length on the way.
fn skip_items<R: Read>(
    r: &mut Reader<R>,
    item_type: u32,
    count: u64,
    key: &str,
    depth: u32,
) -> Result<(), String> {
    if depth > MAX_NESTING {
        return Err(format!("metadata `{key}` nests arrays too deeply"));
    }
    match scalar_size(item_type)? {
        Some(n) => {
            let total = count
                .checked_mul(n)
                .ok_or_else(|| format!("metadata `{key}` has an absurd array length"))?;
            r.skip(total, key)
        }
        None => {
            // Each string or array item needs at least 8 bytes of length.
            if count.saturating_mul(8) > r.remaining() {
                return Err(format!(
                    "metadata `{key}` claims {count} items, more than the file holds"
                ));
            }
            for _ in 0..count {
                skip_value(r, item_type, key, depth)?;
            }
            Ok(())
        }
    }
}

/// (elements per block, bytes per block) of a ggml tensor type.
fn ggml_block(t: u32) -> Option<(u64, u64)> {
    Some(match t {
        0 => (1, 4),
        1 | 30 => (1, 2),
        2 => (32, 18),
        3 => (32, 20),
        6 => (32, 22),
        7 => (32, 24),
        8 => (32, 34),
        9 => (32, 36),
        10 => (256, 84),
        11 => (256, 110),
        12 => (256, 144),
        13 => (256, 176),
        14 => (256, 210),
        15 => (256, 292),
        16 => (256, 66),
        17 => (256, 74),
        18 => (256, 98),
        19 => (256, 50),
        20 => (32, 18),
        21 => (256, 110),
        22 => (256, 82),
        23 => (256, 136),
        24 => (1, 1),
        25 => (1, 2),
        26 => (1, 4),
        27 | 28 => (1, 8),
        29 => (256, 56),
        34 => (256, 54),
        35 => (256, 66),
        39 => (32, 17),
        _ => return None,
    })
}

/// Reads and checks the header of the GGUF file at `path`.
pub fn read_gguf_header(path: &Path) -> Result<GgufSummary, String> {
    let file = File::open(path).map_err(|e| format!("cannot open the file: {e}"))?;
    let len = file
        .metadata()
        .map_err(|e| format!("cannot read the file's size: {e}"))?
        .len();
    check_gguf(BufReader::with_capacity(1 << 16, file), len)
}

/// Checks a GGUF file held in memory (the fuzz target's entry point).
pub fn check_gguf_bytes(bytes: &[u8]) -> Result<GgufSummary, String> {
    check_gguf(bytes, bytes.len() as u64)
}

/// Checks the GGUF header read from `input`, a file of `len` bytes.
fn check_gguf(input: impl Read, len: u64) -> Result<GgufSummary, String> {
    let mut r = Reader {
        inner: input,
        pos: 0,
        len,
    };
    let magic = r
        .bytes::<4>("the magic number")
        .map_err(|_| "the file is too short to be a GGUF model (fewer than 4 bytes)".to_string())?;
    if &magic != MAGIC {
        return Err(format!(
            "not a GGUF file: it starts with {magic:02x?}, a GGUF file starts with \"GGUF\""
        ));
    }
    let mut out = GgufSummary {
        version: r.u32("the version")?,
        ..Default::default()
    };
    if !(2..=3).contains(&out.version) {
        return Err(format!(
            "unsupported GGUF version {} (versions 2 and 3 are supported)",
            out.version
        ));
    }
    out.tensor_count = r.u64("the tensor count")?;
    let kv_count = r.u64("the metadata count")?;
    // Each metadata entry takes at least 12 bytes, each tensor entry at least 24.
    if kv_count.saturating_mul(12) > r.remaining()
        || out.tensor_count.saturating_mul(24) > r.remaining()
    {
        return Err(format!(
            "the header claims {kv_count} metadata entries and {} tensors, more than the file holds",
            out.tensor_count
        ));
    }
    let mut alignment: u64 = 32;
    let mut token_ids: Vec<(String, u64)> = Vec::new();
    let mut per_token: Vec<(String, u64)> = Vec::new();
    for _ in 0..kv_count {
        let key = r.string("a metadata key", MAX_KEY_BYTES)?;
        let value_type = r.u32(&key)?;
        match (key.as_str(), value_type) {
            ("general.architecture", 8) => out.architecture = Some(r.string(&key, 256)?),
            ("general.architecture", t) => {
                return Err(format!(
                    "metadata `general.architecture` must be a string (type 8), it has type {t}"
                ))
            }
            ("tokenizer.ggml.tokens", 9) => {
                let (item_type, count) = (r.u32(&key)?, r.u64(&key)?);
                if item_type != 8 {
                    return Err(format!(
                        "metadata `{key}` must be an array of strings, it holds type {item_type}"
                    ));
                }
                if count == 0 || count > MAX_VOCAB {
                    return Err(format!(
                        "metadata `{key}` has {count} tokens (1 to {MAX_VOCAB} allowed)"
                    ));
                }
                skip_items(&mut r, item_type, count, &key, 1)?;
                out.vocab_size = Some(count);
            }
            (k, 9) if PER_TOKEN_ARRAYS.contains(&k) => {
                let (item_type, count) = (r.u32(&key)?, r.u64(&key)?);
                skip_items(&mut r, item_type, count, &key, 1)?;
                per_token.push((key, count));
            }
            (k, t) if TOKEN_ID_KEYS.contains(&k) => match read_integer(&mut r, t, &key)? {
                Some(id) => token_ids.push((key, id)),
                None => {
                    return Err(format!(
                        "metadata `{key}` must be an integer token id, it has type {t}"
                    ))
                }
            },
            (k, t) if is_integer_type(t) && is_hyperparameter(k) => {
                let value = read_integer(&mut r, t, &key)?;
                out.hyperparameters.push((key, value));
            }
            (k, 9) if is_hyperparameter(k) => {
                let (item_type, count) = (r.u32(&key)?, r.u64(&key)?);
                if !is_integer_type(item_type) || count == 0 {
                    return Err(format!(
                        "metadata `{key}` must be an integer or a non-empty integer array"
                    ));
                }
                skip_items(&mut r, item_type, count, &key, 1)?;
                out.hyperparameters.push((key, None));
            }
            ("general.alignment", 4) => {
                alignment = u64::from(r.u32(&key)?);
                if alignment == 0 || !alignment.is_power_of_two() {
                    return Err(format!(
                        "general.alignment {alignment} is not a power of two"
                    ));
                }
            }
            _ => skip_value(&mut r, value_type, &key, 0)?,
        }
    }
    let mut data_end: u64 = 0;
    for _ in 0..out.tensor_count {
        let name = r.string("a tensor name", MAX_KEY_BYTES)?;
        let n_dims = r.u32(&name)?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(format!(
                "tensor `{name}` has {n_dims} dimensions (1 to 4 allowed)"
            ));
        }
        let mut elements: u64 = 1;
        let mut dims = [0u64; MAX_DIMS as usize];
        let dims = &mut dims[..n_dims as usize];
        for slot in dims.iter_mut() {
            let d = r.u64(&name)?;
            *slot = d;
            elements = elements
                .checked_mul(d)
                .filter(|_| d > 0)
                .ok_or_else(|| format!("tensor `{name}` has a zero or overflowing shape"))?;
        }
        match name.as_str() {
            "token_embd.weight" if dims.len() == 2 => out.embedding_rows = Some(dims[1]),
            "output.weight" => out.has_output_head = true,
            "rope_factors_long.weight" | "rope_factors_short.weight" => out.has_rope_factors = true,
            _ => {}
        }
        let ggml_type = r.u32(&name)?;
        let (block, block_bytes) = ggml_block(ggml_type)
            .ok_or_else(|| format!("tensor `{name}` has unknown ggml type {ggml_type}"))?;
        if !elements.is_multiple_of(block) {
            return Err(format!(
                "tensor `{name}` has {elements} elements, not a multiple of its block size {block}"
            ));
        }
        let offset = r.u64(&name)?;
        if !offset.is_multiple_of(alignment) {
            return Err(format!(
                "tensor `{name}` is not aligned to {alignment} bytes"
            ));
        }
        let end = (elements / block)
            .checked_mul(block_bytes)
            .and_then(|bytes| bytes.checked_add(offset))
            .ok_or_else(|| format!("tensor `{name}` has an overflowing size"))?;
        data_end = data_end.max(end);
    }
    let data_start = r.pos.div_ceil(alignment) * alignment;
    let needed = data_start
        .checked_add(data_end)
        .ok_or_else(|| "tensor data extends past any possible file size".to_string())?;
    if needed > len {
        return Err(format!(
            "the file is truncated: its tensors need {needed} bytes but the file has {len}"
        ));
    }
    check_vocabulary(&out, &token_ids, &per_token)?;
    Ok(out)
}

/// Token ids inside the vocabulary, per-token arrays as long as it.
fn check_vocabulary(
    out: &GgufSummary,
    token_ids: &[(String, u64)],
    per_token: &[(String, u64)],
) -> Result<(), String> {
    let Some(vocab) = out.vocab_size else {
        if let Some((key, _)) = token_ids.first().or(per_token.first()) {
            return Err(format!(
                "metadata `{key}` refers to a vocabulary, but the file has no `tokenizer.ggml.tokens`"
            ));
        }
        return Ok(());
    };
    for (key, id) in token_ids {
        if *id >= vocab {
            return Err(format!(
                "metadata `{key}` = {id} is outside the vocabulary of {vocab} tokens"
            ));
        }
    }
    for (key, count) in per_token {
        if *count != vocab {
            return Err(format!(
                "metadata `{key}` has {count} entries but the vocabulary has {vocab} tokens"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gguf_string(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }

    /// A minimal valid GGUF: one metadata string, one F32 tensor of 8 elements.
    fn tiny_gguf() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(b"GGUF");
        b.extend(3u32.to_le_bytes());
        b.extend(1u64.to_le_bytes()); // tensors
        b.extend(2u64.to_le_bytes()); // kv
        gguf_string(&mut b, "general.architecture");
        b.extend(8u32.to_le_bytes());
        gguf_string(&mut b, "llama");
        gguf_string(&mut b, "tokenizer.ggml.tokens");
        b.extend(9u32.to_le_bytes());
        b.extend(8u32.to_le_bytes());
        b.extend(2u64.to_le_bytes());
        gguf_string(&mut b, "a");
        gguf_string(&mut b, "b");
        gguf_string(&mut b, "w");
        b.extend(1u32.to_le_bytes());
        b.extend(8u64.to_le_bytes());
        b.extend(0u32.to_le_bytes()); // F32
        b.extend(0u64.to_le_bytes());
        while b.len() % 32 != 0 {
            b.push(0);
        }
        b.extend([0u8; 32]);
        b
    }

    /// Writes `bytes` to a temporary file, checks it, and removes the file.
    fn check(bytes: &[u8]) -> Result<GgufSummary, String> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "pcai-gguf-test-{}-{}.gguf",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        File::create(&path).unwrap().write_all(bytes).unwrap();
        let result = read_gguf_header(&path);
        std::fs::remove_file(&path).unwrap();
        // The in-memory check (the fuzz target's) agrees with the file check.
        assert_eq!(check_gguf_bytes(bytes), result);
        result
    }

    #[test]
    fn reads_a_valid_header() {
        let s = check(&tiny_gguf()).unwrap();
        assert_eq!(s.architecture.as_deref(), Some("llama"));
        assert_eq!(s.tensor_count, 1);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let full = tiny_gguf();
        for cut in 0..full.len() {
            assert!(check(&full[..cut]).is_err(), "cut at {cut} was accepted");
        }
    }

    /// A metadata value for `build`.
    enum V<'a> {
        Str(&'a str),
        U32(u32),
        I32(i32),
        Strs(&'a [&'a str]),
        F32s(usize),
    }

    /// A GGUF with these metadata entries and one F32 tensor `name` of `dims`.
    fn build(kvs: &[(&str, V)], name: &str, dims: &[u64]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(b"GGUF");
        b.extend(3u32.to_le_bytes());
        b.extend(1u64.to_le_bytes());
        b.extend((kvs.len() as u64).to_le_bytes());
        for (key, value) in kvs {
            gguf_string(&mut b, key);
            match value {
                V::Str(s) => {
                    b.extend(8u32.to_le_bytes());
                    gguf_string(&mut b, s);
                }
                V::U32(v) => {
                    b.extend(4u32.to_le_bytes());
                    b.extend(v.to_le_bytes());
                }
                V::I32(v) => {
                    b.extend(5u32.to_le_bytes());
                    b.extend(v.to_le_bytes());
                }
                V::Strs(items) => {
                    b.extend(9u32.to_le_bytes());
                    b.extend(8u32.to_le_bytes());
                    b.extend((items.len() as u64).to_le_bytes());
                    for item in *items {
                        gguf_string(&mut b, item);
                    }
                }
                V::F32s(n) => {
                    b.extend(9u32.to_le_bytes());
                    b.extend(6u32.to_le_bytes());
                    b.extend((*n as u64).to_le_bytes());
                    b.extend(std::iter::repeat_n(0u8, 4 * n));
                }
            }
        }
        gguf_string(&mut b, name);
        b.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            b.extend(d.to_le_bytes());
        }
        b.extend(0u32.to_le_bytes()); // F32
        b.extend(0u64.to_le_bytes());
        while b.len() % 32 != 0 {
            b.push(0);
        }
        b.extend(std::iter::repeat_n(
            0u8,
            4 * dims.iter().product::<u64>() as usize,
        ));
        b
    }

    /// A small but complete llama model header: vocabulary of 3, every hyperparameter.
    fn model_kvs<'a>() -> Vec<(&'a str, V<'a>)> {
        vec![
            ("general.architecture", V::Str("llama")),
            ("tokenizer.ggml.model", V::Str("llama")),
            ("tokenizer.ggml.tokens", V::Strs(&["<s>", "</s>", "a"])),
            ("tokenizer.ggml.scores", V::F32s(3)),
            ("tokenizer.ggml.bos_token_id", V::U32(0)),
            ("tokenizer.ggml.eos_token_id", V::U32(1)),
            ("llama.block_count", V::U32(1)),
            ("llama.embedding_length", V::U32(2)),
            ("llama.attention.head_count", V::U32(1)),
            ("llama.context_length", V::U32(16)),
        ]
    }

    fn with(
        kvs: Vec<(&'static str, V<'static>)>,
        key: &str,
        value: V<'static>,
    ) -> Vec<(&'static str, V<'static>)> {
        let mut kvs: Vec<_> = kvs.into_iter().filter(|(k, _)| *k != key).collect();
        let key: &'static str = Box::leak(key.to_string().into_boxed_str());
        kvs.push((key, value));
        kvs
    }

    fn without(kvs: Vec<(&'static str, V<'static>)>, key: &str) -> Vec<(&'static str, V<'static>)> {
        kvs.into_iter().filter(|(k, _)| *k != key).collect()
    }

    fn model_check(kvs: &[(&str, V)], embedding: &[u64]) -> Result<GgufSummary, String> {
        let s = check(&build(kvs, "token_embd.weight", embedding))?;
        check_model_metadata(&s)?;
        Ok(s)
    }

    #[test]
    fn phi3_layouts_the_engine_cannot_compute_are_named() {
        let phi3 = |rope: u64, output: bool, factors: bool| GgufSummary {
            architecture: Some("phi3".into()),
            hyperparameters: vec![
                ("phi3.embedding_length".into(), Some(64)),
                ("phi3.attention.head_count".into(), Some(2)),
                ("phi3.rope.dimension_count".into(), Some(rope)),
            ],
            has_output_head: output,
            has_rope_factors: factors,
            ..Default::default()
        };
        assert_eq!(unsupported_layout(&phi3(32, true, false)), None);
        let why = unsupported_layout(&phi3(32, true, true)).unwrap();
        assert!(why.contains("long-context RoPE factors"), "{why}");
        let why = unsupported_layout(&phi3(32, false, false)).unwrap();
        assert!(why.contains("tied"), "{why}");
        let why = unsupported_layout(&phi3(24, true, false)).unwrap();
        assert!(why.contains("rotates 24 of each head's 32"), "{why}");
        for (rope, output, factors) in [(32, true, true), (32, false, false), (24, true, false)] {
            let why = unsupported_layout(&phi3(rope, output, factors)).unwrap();
            assert!(
                !why.contains("  ") && why.ends_with(char::is_alphabetic),
                "{why}"
            );
        }
        let mut llama = phi3(24, false, true);
        llama.architecture = Some("llama".into());
        assert_eq!(unsupported_layout(&llama), None);
        // The flags come from the tensor names of the header.
        let rope_kvs = with(model_kvs(), "llama.rope.dimension_count", V::U32(2));
        let s = check(&build(&rope_kvs, "output.weight", &[2, 3])).unwrap();
        assert!(s.has_output_head && !s.has_rope_factors);
        assert!(s
            .hyperparameters
            .contains(&("llama.rope.dimension_count".into(), Some(2))));
        let s = check(&build(&model_kvs(), "rope_factors_long.weight", &[1])).unwrap();
        assert!(s.has_rope_factors && !s.has_output_head);
    }

    #[test]
    fn a_complete_model_header_passes_the_model_check() {
        let s = model_check(&model_kvs(), &[2, 3]).unwrap();
        assert_eq!(s.vocab_size, Some(3));
        assert!(is_supported_architecture("LLaMA"));
        assert!(!is_supported_architecture("rwkv"));
    }

    #[test]
    fn token_ids_must_be_inside_the_vocabulary() {
        for key in [
            "tokenizer.ggml.bos_token_id",
            "tokenizer.ggml.unknown_token_id",
        ] {
            let e = model_check(&with(model_kvs(), key, V::U32(3)), &[2, 3]).unwrap_err();
            assert!(
                e.contains(key) && e.contains("outside the vocabulary of 3"),
                "{e}"
            );
        }
        // Hints the loaders never read may hold anything converters write.
        for value in [V::I32(-1), V::U32(3), V::U32(u32::MAX)] {
            model_check(
                &with(model_kvs(), "tokenizer.ggml.padding_token_id", value),
                &[2, 3],
            )
            .unwrap();
        }
        let e = model_check(
            &with(model_kvs(), "tokenizer.ggml.eos_token_id", V::I32(-1)),
            &[2, 3],
        )
        .unwrap_err();
        assert!(e.contains("negative"), "{e}");
        let e = model_check(
            &with(model_kvs(), "tokenizer.ggml.eos_token_id", V::Str("1")),
            &[2, 3],
        )
        .unwrap_err();
        assert!(e.contains("must be an integer token id"), "{e}");
        let no_vocab = without(model_kvs(), "tokenizer.ggml.tokens");
        let e = model_check(&no_vocab, &[2, 3]).unwrap_err();
        assert!(e.contains("no `tokenizer.ggml.tokens`"), "{e}");
    }

    #[test]
    fn metadata_of_the_wrong_type_or_length() {
        let e = model_check(
            &with(model_kvs(), "tokenizer.ggml.scores", V::F32s(2)),
            &[2, 3],
        )
        .unwrap_err();
        assert!(e.contains("2 entries but the vocabulary has 3"), "{e}");
        let e = model_check(
            &with(model_kvs(), "general.architecture", V::U32(1)),
            &[2, 3],
        )
        .unwrap_err();
        assert!(e.contains("must be a string"), "{e}");
        let e = model_check(
            &with(model_kvs(), "tokenizer.ggml.tokens", V::Strs(&[])),
            &[2, 3],
        )
        .unwrap_err();
        assert!(e.contains("0 tokens"), "{e}");
    }

    #[test]
    fn hyperparameters_must_be_present_and_sane() {
        let e = model_check(&without(model_kvs(), "llama.block_count"), &[2, 3]).unwrap_err();
        assert!(e.contains("lacks `llama.block_count`"), "{e}");
        let e = model_check(
            &with(model_kvs(), "llama.attention.head_count", V::U32(0)),
            &[2, 3],
        )
        .unwrap_err();
        assert!(e.contains("out of range"), "{e}");
        let e = model_check(
            &with(model_kvs(), "llama.context_length", V::U32(u32::MAX)),
            &[2, 3],
        )
        .unwrap_err();
        assert!(
            e.contains("`llama.context_length` = 4294967295 is out of range"),
            "{e}"
        );
        let e = model_check(&model_kvs(), &[2, 2]).unwrap_err();
        assert!(e.contains("2 rows but the vocabulary has 3"), "{e}");
    }

    #[test]
    fn wrong_magic_and_absurd_counts() {
        let mut bad = tiny_gguf();
        bad[0] = b'X';
        assert!(check(&bad).unwrap_err().contains("not a GGUF file"));
        let mut huge = tiny_gguf();
        huge[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(check(&huge)
            .unwrap_err()
            .contains("more than the file holds"));
    }
}
