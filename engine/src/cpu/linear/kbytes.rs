//! Q4_K and Q6_K rows as one byte per weight plus a scale and an offset per group: what the
//! integer prefill kernels (`gemm_int`, `gemm_amx`) multiply, unpacked once per panel of rows.

use std::arch::x86_64::*;

use wllm_loaders::GgmlType;

use super::WeightView;
use crate::cpu::quant::int::f16_at;

/// Whether the integer prefill kernels read `ty` weights.
pub(super) fn reads(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q4_K | GgmlType::Q6_K)
}

/// Weights sharing one scale.
pub(super) fn group(ty: GgmlType) -> usize {
    if ty == GgmlType::Q6_K { 16 } else { 32 }
}

/// Whether the bytes are signed (Q6_K's values less 32) rather than unsigned (Q4_K's nibbles).
pub(super) fn signed(ty: GgmlType) -> bool {
    ty == GgmlType::Q6_K
}

/// Row `row` of `w` (Q4_K or Q6_K) as one byte per weight in `q` (`w.cols` bytes), so that
/// weight `e` is `q[e] · scale + offset` with the scale and offset of group `g = e / group`,
/// written to `scale[g · stride + lane]` and `offset[g · stride + lane]`. Q4_K's bytes are its
/// nibbles (0..=15) and its offsets the minimums; Q6_K's are its values less 32 as i8, offset 0.
#[target_feature(enable = "avx2")]
pub(super) fn row(
    w: WeightView<'_>,
    row: usize,
    q: &mut [u8],
    scale: &mut [f32],
    offset: &mut [f32],
    (stride, lane): (usize, usize),
) {
    let rb = w.row_bytes();
    let bytes = &w.bytes[row * rb..(row + 1) * rb];
    let q = &mut q[..w.cols];
    if w.ty == GgmlType::Q4_K {
        for (i, b) in bytes.chunks_exact(144).enumerate() {
            let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
            let (scales, mins) =
                crate::cpu::quant::kquants_scales_mins(b[4..16].try_into().expect("12 bytes"));
            for j in 0..8 {
                scale[(8 * i + j) * stride + lane] = d * f32::from((scales >> (8 * j)) as u8);
                offset[(8 * i + j) * stride + lane] = -dmin * f32::from((mins >> (8 * j)) as u8);
            }
            let out = &mut q[256 * i..256 * (i + 1)];
            for c in 0..4 {
                let quants = load32(&b[16 + 32 * c..48 + 32 * c]);
                store32(&mut out[64 * c..64 * c + 32], low(quants));
                store32(&mut out[64 * c + 32..64 * c + 64], high(quants));
            }
        }
        return;
    }
    for (i, b) in bytes.chunks_exact(210).enumerate() {
        let d = f16_at(b, 208);
        for s in 0..16 {
            scale[(16 * i + s) * stride + lane] = d * f32::from(b[192 + s] as i8);
            offset[(16 * i + s) * stride + lane] = 0.0;
        }
        let out = &mut q[256 * i..256 * (i + 1)];
        for n in 0..2 {
            let (ql_a, ql_b) = (load32(&b[64 * n..64 * n + 32]), load32(&b[64 * n + 32..64 * n + 64]));
            let qh = load32(&b[128 + 32 * n..160 + 32 * n]);
            // SAFETY: AVX2 is enabled on this function.
            let top = |shifted: __m256i| _mm256_and_si256(shifted, _mm256_set1_epi8(0x30));
            let quarters = [
                (low(ql_a), top(_mm256_slli_epi16::<4>(qh))),
                (low(ql_b), top(_mm256_slli_epi16::<2>(qh))),
                (high(ql_a), top(qh)),
                (high(ql_b), top(_mm256_srli_epi16::<2>(qh))),
            ];
            for (g, (nibbles, bits)) in quarters.into_iter().enumerate() {
                let at = 128 * n + 32 * g;
                let values = _mm256_sub_epi8(_mm256_or_si256(nibbles, bits), _mm256_set1_epi8(32));
                store32(&mut out[at..at + 32], values);
            }
        }
    }
}

/// 32 bytes.
#[inline(always)]
fn load32(b: &[u8]) -> __m256i {
    assert!(b.len() >= 32);
    // SAFETY: 32 bytes, checked above; AVX is enabled wherever this inlines.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

#[inline(always)]
fn store32(out: &mut [u8], v: __m256i) {
    assert!(out.len() >= 32);
    // SAFETY: 32 bytes of room, checked above; AVX is enabled wherever this inlines.
    unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), v) }
}

/// The low and the high nibbles of 32 bytes.
#[inline(always)]
fn low(b: __m256i) -> __m256i {
    // SAFETY: inlined into AVX2 code only.
    unsafe { _mm256_and_si256(b, _mm256_set1_epi8(0x0F)) }
}
#[inline(always)]
fn high(b: __m256i) -> __m256i {
    // SAFETY: as above.
    unsafe { _mm256_and_si256(_mm256_srli_epi16::<4>(b), _mm256_set1_epi8(0x0F)) }
}
