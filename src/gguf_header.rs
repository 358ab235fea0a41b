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

/// Skips one metadata value, checking every length on the way.
fn skip_value<R: Read>(
    r: &mut Reader<R>,
    value_type: u32,
    key: &str,
    depth: u32,
) -> Result<(), String> {
    if depth > MAX_NESTING {
        return Err(format!("metadata `{key}` nests arrays too deeply"));
    }
    match scalar_size(value_type)? {
        Some(n) => r.skip(n, key),
        None if value_type == 8 => r.skip_string(key),
        None => {
            let item_type = r.u32(key)?;
            let count = r.u64(key)?;
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
                        skip_value(r, item_type, key, depth + 1)?;
                    }
                    Ok(())
                }
            }
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
    for _ in 0..kv_count {
        let key = r.string("a metadata key", MAX_KEY_BYTES)?;
        let value_type = r.u32(&key)?;
        match (key.as_str(), value_type) {
            ("general.architecture", 8) => out.architecture = Some(r.string(&key, 256)?),
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
        for _ in 0..n_dims {
            let d = r.u64(&name)?;
            elements = elements
                .checked_mul(d)
                .filter(|_| d > 0)
                .ok_or_else(|| format!("tensor `{name}` has a zero or overflowing shape"))?;
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
    Ok(out)
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
