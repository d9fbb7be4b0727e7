//! Quantize-on-load: a [`TensorSource`] that presents another source's float weight matrices
//! as Q8_0 or Q4_K, so an F32/F16/BF16 model (a safetensors directory, an F16 GGUF) runs
//! through the quantized kernels without a conversion step on disk.

use std::borrow::Cow;

use rayon::prelude::*;

use super::weights::{TensorBytes, TensorMeta, TensorSource};
use crate::ggml_type::GgmlType;
use crate::quant::{Op, QuantError, dequantize_row, quantize_row};

/// Rows quantized per rayon task: enough to amortise the scratch buffers, few enough that a
/// small matrix still spreads over every core.
const ROWS_PER_TASK: usize = 16;

/// Wraps `inner`, quantizing each eligible tensor when its bytes are asked for (one tensor at
/// a time, rows in parallel), so at no point is more than one quantized tensor held beyond
/// what the caller keeps.
///
/// Eligible: F32/F16/BF16 tensors of two or more dims (matrices, and stacked experts as
/// matrices of rows) whose row length is a whole number of blocks. Left as stored, as
/// llama.cpp's `llama-quantize` leaves them: 1-D tensors (norms, biases, RoPE factors) and
/// the MoE router (`ffn_gate_inp`), whose small logit differences pick the experts. A Q4_K
/// request falls back to Q8_0 for rows that are not a multiple of 256 but are of 32 (as
/// llama-quantize falls back to a smaller block type); rows that fit neither stay float.
/// Every such decision is logged when the tensor's bytes are produced.
pub struct QuantizingSource<S> {
    inner: S,
    target: GgmlType,
}

impl<S: TensorSource> QuantizingSource<S> {
    /// `target` must be Q8_0 or Q4_K, the types with a CPU quantizer.
    pub fn new(inner: S, target: GgmlType) -> Result<Self, QuantError> {
        if !matches!(target, GgmlType::Q8_0 | GgmlType::Q4_K) {
            return Err(QuantError::Unsupported { ty: target, op: Op::Quantization });
        }
        Ok(QuantizingSource { inner, target })
    }

    pub fn target(&self) -> GgmlType {
        self.target
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The type `m` is presented as, and why it is not `target` when it is not (at warning
    /// level where the user gets less quantization than asked for).
    fn plan(&self, m: &TensorMeta) -> (GgmlType, Option<(log::Level, &'static str)>) {
        let is_float = matches!(m.ggml_type, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16);
        if !is_float || m.dims.len() < 2 || m.n_elements() == 0 {
            return (m.ggml_type, None);
        }
        if m.name.ends_with("ffn_gate_inp.weight") {
            let why = "the expert router stays float, as llama-quantize keeps it";
            return (m.ggml_type, Some((log::Level::Info, why)));
        }
        let row = m.dim(0);
        if row.is_multiple_of(self.target.block_size()) {
            (self.target, None)
        } else if self.target == GgmlType::Q4_K && row.is_multiple_of(GgmlType::Q8_0.block_size()) {
            (GgmlType::Q8_0, Some((log::Level::Warn, "rows are not a multiple of 256: Q8_0 instead of Q4_K")))
        } else {
            (m.ggml_type, Some((log::Level::Warn, "rows are not a multiple of 32: left unquantized")))
        }
    }
}

impl<S: TensorSource> TensorSource for QuantizingSource<S> {
    fn release(&self, name: &str) {
        self.inner.release(name)
    }
    fn meta(&self, name: &str) -> Option<TensorMeta> {
        let mut m = self.inner.meta(name)?;
        m.ggml_type = self.plan(&m).0;
        Some(m)
    }

    fn bytes(&self, name: &str) -> Option<TensorBytes<'_>> {
        let t = self.inner.bytes(name)?;
        let (ty, note) = self.plan(&t.meta);
        if let Some((level, note)) = note {
            log::log!(
                level,
                "quantize on load to {}: {} ({} {:?}): {note}",
                self.target,
                name,
                t.meta.ggml_type,
                t.meta.dims
            );
        }
        if ty == t.meta.ggml_type {
            return Some(t);
        }
        match quantize_tensor(&t, ty) {
            Ok(bytes) => {
                let meta = TensorMeta { ggml_type: ty, ..t.meta };
                Some(TensorBytes { meta, bytes: Cow::Owned(bytes) })
            }
            Err(e) => {
                // Only a source whose bytes disagree with its own meta gets here; handing the
                // float bytes on would mislabel them, so the tensor is reported missing.
                log::error!("quantize on load to {}: {name}: {e}", self.target);
                None
            }
        }
    }
}

/// Quantizes a float tensor row by row, rows spread over rayon's pool.
pub fn quantize_tensor(t: &TensorBytes<'_>, ty: GgmlType) -> Result<Vec<u8>, QuantError> {
    let src_ty = t.meta.ggml_type;
    let cols = t.meta.dim(0) as usize;
    let n = t.meta.n_elements() as usize;
    let too_large = QuantError::TooLarge { ty, n_elements: n };
    let src_row = src_ty.bytes_for(cols as u64).ok_or(too_large.clone())? as usize;
    let dst_row = ty.bytes_for(cols as u64).ok_or(too_large.clone())? as usize;
    if cols == 0 || !cols.is_multiple_of(ty.block_size() as usize) {
        return Err(QuantError::PartialBlock { ty, n_elements: cols, block_size: ty.block_size() as usize });
    }
    let rows = n / cols;
    let expected = rows * src_row;
    if t.bytes.len() != expected {
        return Err(QuantError::ByteLength { ty: src_ty, n_elements: n, expected, actual: t.bytes.len() });
    }
    let mut out = vec![0u8; rows.checked_mul(dst_row).ok_or(too_large)?];
    out.par_chunks_mut(dst_row * ROWS_PER_TASK)
        .zip(t.bytes.par_chunks(src_row * ROWS_PER_TASK))
        .try_for_each(|(dst, src)| {
            let mut x = vec![0f32; cols];
            let mut q = Vec::with_capacity(dst_row);
            for (d, s) in dst.chunks_exact_mut(dst_row).zip(src.chunks_exact(src_row)) {
                dequantize_row(src_ty, s, &mut x)?;
                q.clear();
                quantize_row(ty, &x, &mut q)?;
                d.copy_from_slice(&q);
            }
            Ok(())
        })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use half::{bf16, f16};

    use super::*;
    use crate::quant::dequantize;

    struct Mem(HashMap<String, (TensorMeta, Vec<u8>)>);

    impl Mem {
        fn new(tensors: &[(&str, GgmlType, &[u64], Vec<u8>)]) -> Mem {
            Mem(tensors
                .iter()
                .map(|(n, ty, dims, b)| {
                    let meta = TensorMeta { name: n.to_string(), ggml_type: *ty, dims: dims.to_vec() };
                    (n.to_string(), (meta, b.clone()))
                })
                .collect())
        }
    }

    impl TensorSource for Mem {
        fn meta(&self, name: &str) -> Option<TensorMeta> {
            self.0.get(name).map(|(m, _)| m.clone())
        }
        fn bytes(&self, name: &str) -> Option<TensorBytes<'_>> {
            self.0.get(name).map(|(m, b)| TensorBytes { meta: m.clone(), bytes: Cow::Borrowed(b) })
        }
    }

    fn values(n: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.5) * 0.2).collect()
    }

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn quantizes_matrices_and_leaves_the_rest() {
        let w = values(256 * 37);
        let e = values(64 * 3);
        let src = Mem::new(&[
            ("blk.0.attn_q.weight", GgmlType::F32, &[256, 37], f32_bytes(&w)),
            ("blk.0.attn_norm.weight", GgmlType::F32, &[256], f32_bytes(&w[..256])),
            ("blk.0.ffn_gate_inp.weight", GgmlType::F32, &[64, 3], f32_bytes(&e)),
            ("odd.weight", GgmlType::F32, &[48, 4], f32_bytes(&w[..192])),
            ("token_embd.weight", GgmlType::F32, &[64, 3], f32_bytes(&e)),
        ]);
        let q = QuantizingSource::new(src, GgmlType::Q4_K).unwrap();
        assert_eq!(q.meta("blk.0.attn_q.weight").unwrap().ggml_type, GgmlType::Q4_K);
        assert_eq!(q.meta("blk.0.attn_norm.weight").unwrap().ggml_type, GgmlType::F32);
        assert_eq!(q.meta("blk.0.ffn_gate_inp.weight").unwrap().ggml_type, GgmlType::F32);
        assert_eq!(q.meta("odd.weight").unwrap().ggml_type, GgmlType::F32);
        // 64-element rows: Q8_0 instead of Q4_K.
        assert_eq!(q.meta("token_embd.weight").unwrap().ggml_type, GgmlType::Q8_0);
        assert!(q.meta("absent").is_none() && q.bytes("absent").is_none());

        let t = q.bytes("blk.0.attn_q.weight").unwrap();
        assert_eq!(t.meta, q.meta("blk.0.attn_q.weight").unwrap());
        assert_eq!(t.bytes.len() as u64, t.meta.n_bytes());
        // Row by row, exactly what the single-row quantizer produces.
        let mut want = Vec::new();
        for row in w.chunks(256) {
            quantize_row(GgmlType::Q4_K, row, &mut want).unwrap();
        }
        assert!(t.bytes[..] == want[..]);
        let t = q.bytes("token_embd.weight").unwrap();
        let back = dequantize(GgmlType::Q8_0, &t.bytes, e.len()).unwrap();
        let err = back.iter().zip(&e).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(err < 1e-3, "Q8_0 round trip off by {err}");
        assert!(matches!(q.bytes("blk.0.attn_norm.weight").unwrap().bytes, Cow::Borrowed(_)));
    }

    #[test]
    fn half_precision_sources() {
        let w = values(32 * 5);
        let h: Vec<u8> = w.iter().flat_map(|v| f16::from_f32(*v).to_le_bytes()).collect();
        let b: Vec<u8> = w.iter().flat_map(|v| bf16::from_f32(*v).to_le_bytes()).collect();
        let src = Mem::new(&[
            ("h.weight", GgmlType::F16, &[32, 5], h),
            ("b.weight", GgmlType::BF16, &[32, 5], b),
            ("already.weight", GgmlType::Q8_0, &[32, 1], vec![0u8; 34]),
        ]);
        let q = QuantizingSource::new(src, GgmlType::Q8_0).unwrap();
        for name in ["h.weight", "b.weight"] {
            let t = q.bytes(name).unwrap();
            assert_eq!(t.meta.ggml_type, GgmlType::Q8_0);
            let back = dequantize(GgmlType::Q8_0, &t.bytes, w.len()).unwrap();
            let err = back.iter().zip(&w).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(err < 2e-3, "{name}: off by {err}");
        }
        assert_eq!(q.bytes("already.weight").unwrap().meta.ggml_type, GgmlType::Q8_0);
    }

    #[test]
    fn refuses_types_without_a_quantizer_and_bad_bytes() {
        let err = QuantizingSource::new(Mem::new(&[]), GgmlType::Q6_K).err().unwrap();
        assert_eq!(err.to_string(), "Q6_K quantization is not implemented");
        // A source whose bytes are shorter than its meta says: missing, not mislabelled.
        let src = Mem::new(&[("short.weight", GgmlType::F32, &[32, 2], vec![0u8; 100])]);
        let q = QuantizingSource::new(src, GgmlType::Q8_0).unwrap();
        assert!(q.bytes("short.weight").is_none());
    }
}
