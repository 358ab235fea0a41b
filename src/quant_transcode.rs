//! Lossless re-encoding of GGUF blocks that the engine's CPU kernels only run in scalar code.
//!
//! candle 0.10 has no SIMD dot product for `Q5_0` (it always takes `vec_dot_unopt`), and Gemma 3
//! GGUF files store every matrix whose rows are 640 wide (q, k, v, gate, up) as `Q5_0`, since
//! 640 is not a multiple of the 256-wide k-quant blocks. A `Q5_0` block is a scale `d` and 32
//! five-bit integers `q - 16` in −16..=15; a `Q8_0` block is a scale and 32 `i8`. Copying the
//! scale and widening the integers gives a `Q8_0` block with exactly the same values, whose dot
//! product with the `Q8_0` activations is the same integer sum times the same scales — and runs
//! the AVX2 kernel. It reads 12 more bytes per 32 weights.

use std::borrow::Cow;

use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::Device;

const BLOCK: usize = 32;
const Q5_0_BYTES: usize = 22;
const Q8_0_BYTES: usize = 34;

/// The same matrix with `Q5_0` blocks re-encoded as `Q8_0`; other types are returned as they are.
pub fn widen_scalar_blocks(q: QTensor) -> candle_core::Result<QTensor> {
    if q.dtype() != GgmlDType::Q5_0 {
        return Ok(q);
    }
    let data = q.data()?;
    let widened = q5_0_to_q8_0(&data)?;
    // Borrowed on purpose: candle 0.10's `from_data` reinterprets the bytes as a slice of
    // blocks before copying them, and with `Cow::Owned` that slice outlives its buffer.
    let storage = QStorage::from_data(Cow::Borrowed(&widened), &Device::Cpu, GgmlDType::Q8_0)?;
    QTensor::new(storage, q.shape().clone())
}

/// Raw `Q5_0` blocks to raw `Q8_0` blocks (ggml layout: `d: f16`, `qh: u32`, `qs: [u8; 16]`).
pub fn q5_0_to_q8_0(blocks: &[u8]) -> candle_core::Result<Vec<u8>> {
    if !blocks.len().is_multiple_of(Q5_0_BYTES) {
        candle_core::bail!(
            "Q5_0 data of {} bytes is not a whole number of blocks",
            blocks.len()
        );
    }
    let mut out = Vec::with_capacity(blocks.len() / Q5_0_BYTES * Q8_0_BYTES);
    for b in blocks.chunks_exact(Q5_0_BYTES) {
        out.extend_from_slice(&b[0..2]);
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        let qs = &b[6..22];
        let mut values = [0i8; BLOCK];
        for j in 0..BLOCK / 2 {
            let high0 = (((qh >> j) << 4) & 0x10) as u8;
            let high1 = ((qh >> (j + 12)) & 0x10) as u8;
            values[j] = ((qs[j] & 0x0F) | high0) as i8 - 16;
            values[j + BLOCK / 2] = ((qs[j] >> 4) | high1) as i8 - 16;
        }
        out.extend(values.iter().map(|&v| v as u8));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Tensor;

    #[test]
    fn widening_keeps_every_value() {
        let n = 64 * 640;
        let values: Vec<f32> = (0..n)
            .map(|i| ((i * 7919 % 1013) as f32 - 506.0) / 97.0)
            .collect();
        let t = Tensor::from_vec(values, (64, 640), &Device::Cpu).unwrap();
        let q5 = QTensor::quantize(&t, GgmlDType::Q5_0).unwrap();
        let before: Vec<f32> = q5
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let q8 = widen_scalar_blocks(q5).unwrap();
        assert_eq!(q8.dtype(), GgmlDType::Q8_0);
        assert_eq!(q8.shape().dims(), &[64, 640]);
        let after: Vec<f32> = q8
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(before, after);
    }

    #[test]
    fn widened_matrix_multiplies_the_same() {
        use candle_core::quantized::QMatMul;
        use candle_core::Module;
        let w: Vec<f32> = (0..256 * 640)
            .map(|i| ((i * 104_729 % 2003) as f32 - 1001.0) / 3000.0)
            .collect();
        let w = Tensor::from_vec(w, (256, 640), &Device::Cpu).unwrap();
        let x = Tensor::randn(0f32, 1.0, (1, 5, 640), &Device::Cpu).unwrap();
        let q5 = QMatMul::from_qtensor(QTensor::quantize(&w, GgmlDType::Q5_0).unwrap()).unwrap();
        let q8 = QTensor::quantize(&w, GgmlDType::Q5_0).unwrap();
        let q8 = QMatMul::from_qtensor(widen_scalar_blocks(q8).unwrap()).unwrap();
        let a: Vec<f32> = q5
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let b: Vec<f32> = q8
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        // Same integer sums and scales; only the float accumulation order differs.
        for (a, b) in a.iter().zip(&b) {
            assert!((a - b).abs() <= 1e-4 * (1.0 + a.abs()), "{a} vs {b}");
        }
    }

    #[test]
    fn other_types_pass_through() {
        let t = Tensor::ones((4, 256), candle_core::DType::F32, &Device::Cpu).unwrap();
        let q = QTensor::quantize(&t, GgmlDType::Q4K).unwrap();
        assert_eq!(widen_scalar_blocks(q).unwrap().dtype(), GgmlDType::Q4K);
    }

    #[test]
    fn partial_blocks_are_refused() {
        assert!(q5_0_to_q8_0(&[0u8; 23]).is_err());
    }
}
