//! The few byte-level conversions that turn Hugging Face tensors into their GGUF form. Inputs
//! come straight from a map and may be unaligned, so everything is read with `from_le_bytes`.

use half::{bf16, f16};

use super::dtype::Dtype;

/// Widens F32/F16/BF16 elements to little-endian f32, adding `shift` to each.
pub(super) fn to_f32(dtype: Dtype, bytes: &[u8], shift: f32) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() / elem_size(dtype) * 4);
    let mut push = |v: f32| out.extend_from_slice(&(v + shift).to_le_bytes());
    match dtype {
        Dtype::F16 => bytes.chunks_exact(2).for_each(|c| push(f16::from_le_bytes([c[0], c[1]]).to_f32())),
        Dtype::BF16 => bytes.chunks_exact(2).for_each(|c| push(bf16::from_le_bytes([c[0], c[1]]).to_f32())),
        _ => bytes.chunks_exact(4).for_each(|c| push(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
    }
    out
}

fn elem_size(dtype: Dtype) -> usize {
    (dtype.bits() / 8).max(1) as usize
}

/// Concatenates equal-sized expert matrices into one `[n_expert, rows, cols]` tensor.
pub(super) fn stack(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        out.extend_from_slice(p);
    }
    out
}

/// From `[n_expert, 2 * half_rows, cols]` bytes, the first or second half of each expert's
/// rows, as `[n_expert, half_rows, cols]`. `half_bytes` is one expert's half.
pub(super) fn fused_half(bytes: &[u8], n_expert: usize, half_bytes: usize, second: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(n_expert * half_bytes);
    let skip = if second { half_bytes } else { 0 };
    for expert in bytes.chunks_exact(2 * half_bytes).take(n_expert) {
        out.extend_from_slice(&expert[skip..skip + half_bytes]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floats(b: &[u8]) -> Vec<f32> {
        b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
    }

    #[test]
    fn widens_with_shift() {
        let h: Vec<u8> = [0.5f32, -2.0].iter().flat_map(|v| f16::from_f32(*v).to_le_bytes()).collect();
        assert_eq!(floats(&to_f32(Dtype::F16, &h, 1.0)), vec![1.5, -1.0]);
        let b: Vec<u8> = [0.25f32, 3.0].iter().flat_map(|v| bf16::from_f32(*v).to_le_bytes()).collect();
        assert_eq!(floats(&to_f32(Dtype::BF16, &b, 0.0)), vec![0.25, 3.0]);
        // Unaligned input.
        let mut f = vec![9u8];
        f.extend_from_slice(&7.0f32.to_le_bytes());
        assert_eq!(floats(&to_f32(Dtype::F32, &f[1..], 0.0)), vec![7.0]);
    }

    #[test]
    fn splits_fused_rows() {
        // Two experts, each rows [g0, g1, u0, u1] of one byte.
        let bytes = [1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(fused_half(&bytes, 2, 2, false), vec![1, 2, 5, 6]);
        assert_eq!(fused_half(&bytes, 2, 2, true), vec![3, 4, 7, 8]);
        assert_eq!(stack(&[&[1, 2], &[3, 4]]), vec![1, 2, 3, 4]);
    }
}
