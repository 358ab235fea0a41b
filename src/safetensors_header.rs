//! A bounds-checked read of a `.safetensors` file's header, done before the engine maps it.
//!
//! A SafeTensors file is an 8-byte header length, a JSON header naming each tensor's dtype,
//! shape and byte range, then the data. The engine maps the file and slices it by those
//! ranges; here the header length is capped and checked against the file, and every tensor's
//! range must match its shape and lie inside the data, the ranges together tiling the data
//! exactly (the format's own rule). Nothing is allocated beyond the header itself.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use serde_json::Value;

/// The format's own limit on the header (the `safetensors` crate refuses larger ones).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Dimensions a tensor may have.
const MAX_DIMS: usize = 8;

/// What we learn from a valid file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafetensorsSummary {
    pub tensor_count: usize,
    pub data_bytes: u64,
}

/// Bits per element of a SafeTensors dtype.
fn dtype_bits(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "F4" => 4,
        "F6_E2M3" | "F6_E3M2" => 6,
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 8,
        "U16" | "I16" | "F16" | "BF16" => 16,
        "U32" | "I32" | "F32" => 32,
        "U64" | "I64" | "F64" | "C64" => 64,
        _ => return None,
    })
}

/// Checks the `.safetensors` file at `path`.
pub fn check_safetensors_file(path: &Path) -> Result<SafetensorsSummary, String> {
    let mut file = File::open(path).map_err(|e| format!("cannot open the file: {e}"))?;
    let len = file
        .metadata()
        .map_err(|e| format!("cannot read the file's size: {e}"))?
        .len();
    let mut prefix = [0u8; 8];
    if len < 8 {
        return Err(format!(
            "the file has {len} bytes, too few for a SafeTensors header"
        ));
    }
    file.read_exact(&mut prefix)
        .map_err(|e| format!("cannot read the header length: {e}"))?;
    let header_len = header_length(prefix, len)?;
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header)
        .map_err(|e| format!("cannot read the header: {e}"))?;
    check_header(&header, len - 8 - header_len)
}

/// Checks a SafeTensors file held in memory (the fuzz target's entry point).
pub fn check_safetensors_bytes(bytes: &[u8]) -> Result<SafetensorsSummary, String> {
    let len = bytes.len() as u64;
    let prefix: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("the file has {len} bytes, too few for a SafeTensors header"))?;
    let header_len = header_length(prefix, len)?;
    check_header(&bytes[8..8 + header_len as usize], len - 8 - header_len)
}

/// The header's length from the first 8 bytes, checked against the cap and the file.
fn header_length(prefix: [u8; 8], file_len: u64) -> Result<u64, String> {
    let n = u64::from_le_bytes(prefix);
    if n > MAX_HEADER_BYTES {
        return Err(format!(
            "the header claims {n} bytes, past the format's limit of {MAX_HEADER_BYTES} \
             (not a SafeTensors file, or a corrupted one)"
        ));
    }
    if n > file_len - 8 {
        return Err(format!(
            "the header claims {n} bytes but the file has {} after the length (truncated?)",
            file_len - 8
        ));
    }
    Ok(n)
}

/// Checks the JSON header against the `data_bytes` that follow it.
fn check_header(header: &[u8], data_bytes: u64) -> Result<SafetensorsSummary, String> {
    let text = std::str::from_utf8(header).map_err(|_| "the header is not UTF-8 text")?;
    // serde_json bounds its own recursion (128 levels), so deep nesting is an error here.
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("the header is not valid JSON: {e}"))?;
    let entries = value
        .as_object()
        .ok_or("the header is not a JSON object of tensors")?;
    let mut ranges: Vec<(u64, u64, &str)> = Vec::with_capacity(entries.len());
    for (name, entry) in entries {
        if name == "__metadata__" {
            let ok = entry
                .as_object()
                .is_some_and(|m| m.values().all(Value::is_string));
            if !ok {
                return Err("`__metadata__` must map names to strings".into());
            }
            continue;
        }
        ranges.push(tensor_range(name, entry)?);
    }
    ranges.sort_unstable();
    let mut expected_start = 0;
    for (start, end, name) in &ranges {
        if *start != expected_start {
            return Err(format!(
                "tensor `{name}` starts at byte {start} of the data, expected {expected_start} \
                 (tensors must cover the data without gaps or overlaps)"
            ));
        }
        expected_start = *end;
    }
    if expected_start != data_bytes {
        return Err(format!(
            "the tensors cover {expected_start} bytes but the file holds {data_bytes} bytes of \
             data (truncated or corrupted)"
        ));
    }
    Ok(SafetensorsSummary {
        tensor_count: ranges.len(),
        data_bytes,
    })
}

/// One tensor's `(start, end, name)` in the data, checked against its dtype and shape.
fn tensor_range<'a>(name: &'a str, entry: &Value) -> Result<(u64, u64, &'a str), String> {
    let bad = |why: &str| format!("tensor `{name}`: {why}");
    let dtype = entry["dtype"]
        .as_str()
        .ok_or_else(|| bad("no `dtype` string"))?;
    let bits = dtype_bits(dtype).ok_or_else(|| bad(&format!("unknown dtype {dtype:?}")))?;
    let shape = entry["shape"]
        .as_array()
        .ok_or_else(|| bad("no `shape` list"))?;
    if shape.len() > MAX_DIMS {
        return Err(bad(&format!(
            "{} dimensions (at most {MAX_DIMS})",
            shape.len()
        )));
    }
    let mut elements: u64 = 1;
    for d in shape {
        let d = d
            .as_u64()
            .ok_or_else(|| bad("the shape holds something other than a whole number"))?;
        elements = elements
            .checked_mul(d)
            .ok_or_else(|| bad("the shape overflows"))?;
    }
    let bytes = elements
        .checked_mul(bits)
        .filter(|b| b % 8 == 0)
        .map(|b| b / 8)
        .ok_or_else(|| bad("the shape does not fill whole bytes, or overflows"))?;
    let offsets = entry["data_offsets"]
        .as_array()
        .filter(|o| o.len() == 2)
        .ok_or_else(|| bad("`data_offsets` must be [start, end]"))?;
    let (Some(start), Some(end)) = (offsets[0].as_u64(), offsets[1].as_u64()) else {
        return Err(bad("`data_offsets` must be whole numbers"));
    };
    if end < start || end - start != bytes {
        return Err(bad(&format!(
            "`data_offsets` [{start}, {end}] do not hold its {elements} {dtype} elements \
             ({bytes} bytes)"
        )));
    }
    Ok((start, end, name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn file(header: &Value, data_bytes: usize) -> Vec<u8> {
        let text = header.to_string();
        let mut b = (text.len() as u64).to_le_bytes().to_vec();
        b.extend(text.as_bytes());
        b.extend(vec![0u8; data_bytes]);
        b
    }

    fn two_tensors() -> Value {
        json!({
            "__metadata__": {"format": "pt"},
            "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
            "b": {"dtype": "BF16", "shape": [4], "data_offsets": [24, 32]},
        })
    }

    #[test]
    fn a_valid_file_and_every_truncation() {
        let good = file(&two_tensors(), 32);
        assert_eq!(
            check_safetensors_bytes(&good).unwrap(),
            SafetensorsSummary {
                tensor_count: 2,
                data_bytes: 32
            }
        );
        for cut in 0..good.len() {
            assert!(check_safetensors_bytes(&good[..cut]).is_err(), "cut {cut}");
        }
        // The file reader agrees with the in-memory one.
        let path = std::env::temp_dir().join(format!("pcai-st-{}.safetensors", std::process::id()));
        std::fs::write(&path, &good).unwrap();
        assert!(check_safetensors_file(&path).is_ok());
        std::fs::write(&path, &good[..good.len() - 1]).unwrap();
        assert!(check_safetensors_file(&path)
            .unwrap_err()
            .contains("truncated"));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn hostile_headers_are_refused() {
        let mut huge = file(&two_tensors(), 32);
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(check_safetensors_bytes(&huge)
            .unwrap_err()
            .contains("limit"));
        let cases = [
            (
                json!({"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]}}),
                "do not hold",
            ),
            (
                json!({"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [8, 32]}}),
                "expected 0",
            ),
            (
                json!({"a": {"dtype": "Q9", "shape": [1], "data_offsets": [0, 1]}}),
                "unknown dtype",
            ),
            (
                json!({"a": {"dtype": "F32", "shape": [4294967296u64, 4294967296u64, 4], "data_offsets": [0, 4]}}),
                "overflows",
            ),
            (
                json!({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}),
                "whole number",
            ),
            (
                json!({"a": {"dtype": "F32", "shape": [1,1,1,1,1,1,1,1,1], "data_offsets": [0, 4]}}),
                "dimensions",
            ),
            (
                json!({"a": {"dtype": "F4", "shape": [3], "data_offsets": [0, 2]}}),
                "whole bytes",
            ),
            (
                json!({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}),
                "do not hold",
            ),
            (json!({"__metadata__": {"x": 1}}), "__metadata__"),
            (json!([1, 2]), "not a JSON object"),
            (json!({"a": 5}), "no `dtype`"),
        ];
        for (header, needle) in cases {
            let e = check_safetensors_bytes(&file(&header, 32)).unwrap_err();
            assert!(e.contains(needle), "{header}: {e}");
        }
        // Overlapping ranges, and data past the last tensor.
        let overlap = json!({
            "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
        });
        assert!(check_safetensors_bytes(&file(&overlap, 12))
            .unwrap_err()
            .contains("gaps or overlaps"));
        assert!(check_safetensors_bytes(&file(&two_tensors(), 40))
            .unwrap_err()
            .contains("holds 40 bytes"));
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let mut b = (deep.len() as u64).to_le_bytes().to_vec();
        b.extend(deep.as_bytes());
        assert!(check_safetensors_bytes(&b).unwrap_err().contains("JSON"));
    }
}
