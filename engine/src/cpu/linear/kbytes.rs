//! Weight rows as one byte per weight plus a scale and an offset per group of 32 (16 for
//! Q6_K): what the integer prefill kernels (`gemm_int`, `gemm_amx`) multiply, unpacked once
//! per panel of rows. Every type whose values are small integers times a per-group scale
//! (plus a per-group offset) fits: the legacy 32-element types, the 4- to 6-bit K-quants and
//! the 16-entry tables (IQ4_NL, IQ4_XS, MXFP4), whose entries are integers.

use std::arch::x86_64::*;

use wllm_loaders::GgmlType;
use wllm_loaders::quant::{KVALUES_IQ4NL, KVALUES_MXFP4, e8m0_to_fp32_half, iq4xs_scale};

use super::WeightView;

/// Whether the integer prefill kernels read `ty` weights.
pub(super) fn reads(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(ty, Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | IQ4_NL | MXFP4 | Q4_K | Q5_K | Q6_K | IQ4_XS)
}

/// Weights sharing one scale.
pub(super) fn group(ty: GgmlType) -> usize {
    if ty == GgmlType::Q6_K { 16 } else { 32 }
}

/// Whether the bytes are signed values (offset 0) rather than unsigned ones with an offset.
pub(super) fn signed(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(ty, Q6_K | Q8_0 | IQ4_NL | IQ4_XS | MXFP4)
}

/// Row `row` of `w` (a type [`reads`] accepts) as one byte per weight in `q` (`w.cols`
/// bytes), so that weight `e` is `q[e] · scale + offset` with the scale and offset of group
/// `g = e / group`, written to `scale[g · stride + lane]` and `offset[g · stride + lane]`.
/// Unsigned types give their stored values (nibbles, five bits) with the zero point folded
/// into the offset (Q4_0's `-8 d`, Q4_1's `m`, Q4_K's `-dmin · m`); signed ones give i8
/// values (Q8_0's bytes, Q6_K's values less 32, the tables' entries) and offset 0.
#[target_feature(enable = "avx2,f16c")]
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
    let groups = w.cols / group(w.ty);
    let last = (groups.max(1) - 1) * stride + lane;
    assert!(lane < stride && scale.len() > last && offset.len() > last);
    let (scale, offset) = (scale.as_mut_ptr(), offset.as_mut_ptr());
    let mut put = |g: usize, s: f32, o: f32| {
        debug_assert!(g < groups);
        // SAFETY: g < groups, so `g · stride + lane <= last`, inside both (asserted above).
        unsafe {
            *scale.add(g * stride + lane) = s;
            *offset.add(g * stride + lane) = o;
        }
    };
    // One loop per type, each over blocks of a known size (no match or length checks per
    // block); measured about even with the match per block it replaced.
    macro_rules! each_block {
        ($size:literal, |$b:ident| $block:expr) => {
            for (g, ($b, out)) in bytes.chunks_exact($size).zip(q.chunks_exact_mut(32)).enumerate() {
                let (values, s, o): (__m256i, f32, f32) = $block;
                store32(out, values);
                put(g, s, o);
            }
        };
    }
    let fifth = |at: &[u8]| fifth_bits(u32::from_le_bytes(at.try_into().expect("4 bytes")));
    match w.ty {
        GgmlType::Q4_K => q4_q5_k(bytes, q, &mut put, false),
        GgmlType::Q5_K => q4_q5_k(bytes, q, &mut put, true),
        GgmlType::Q6_K => q6_k(bytes, q, &mut put),
        GgmlType::IQ4_XS => iq4_xs(bytes, q, &mut put),
        GgmlType::Q4_0 => each_block!(18, |b| {
            let d = f16_at(b, 0);
            (nibbles(&b[2..18]), d, -8.0 * d)
        }),
        GgmlType::Q4_1 => each_block!(20, |b| (nibbles(&b[4..20]), f16_at(b, 0), f16_at(b, 2))),
        GgmlType::Q5_0 => each_block!(22, |b| {
            let d = f16_at(b, 0);
            (_mm256_or_si256(nibbles(&b[6..22]), fifth(&b[2..6])), d, -16.0 * d)
        }),
        GgmlType::Q5_1 => {
            each_block!(24, |b| (
                _mm256_or_si256(nibbles(&b[8..24]), fifth(&b[4..8])),
                f16_at(b, 0),
                f16_at(b, 2)
            ))
        }
        GgmlType::Q8_0 => each_block!(34, |b| (load32(&b[2..34]), f16_at(b, 0), 0.0)),
        GgmlType::IQ4_NL => {
            each_block!(18, |b| (table(&KVALUES_IQ4NL, nibbles(&b[2..18])), f16_at(b, 0), 0.0))
        }
        GgmlType::MXFP4 => {
            each_block!(17, |b| (table(&KVALUES_MXFP4, nibbles(&b[1..17])), e8m0_to_fp32_half(b[0]), 0.0))
        }
        ty => unreachable!("{ty} is not a type kbytes reads"),
    }
}

/// Whether [`panel`] unpacks `ty`: the 32-weight block types that open each block with an f16
/// scale (and, for Q4_1 and Q5_1, an f16 minimum after it).
pub(super) fn by_panel(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(ty, Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | IQ4_NL)
}

/// Rows `first..first + n` (`n <= 16`) of `w`, a type [`by_panel`] accepts, as [`row`] unpacks
/// them with `(stride, lane) = (16, r)` for row `first + r`, whose bytes go to
/// `q[r · q_stride..]`. It walks the rows group by group: one gather and two conversions take
/// a group's 16 scales and offsets, where `row` converted and stored each on its own, and
/// the loop keeps no per-row state (Q4_1 1536×576 at 8 tokens on AMX, one thread: `row`
/// was about half of the call). `before_group(g)` runs before group `g` (the caller's
/// prefetches, spread over the panel).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,f16c")]
pub(super) fn panel(
    w: WeightView<'_>,
    first: usize,
    n: usize,
    q: &mut [u8],
    q_stride: usize,
    scale: &mut [f32],
    offset: &mut [f32],
    mut before_group: impl FnMut(usize),
) {
    let (rb, k) = (w.row_bytes(), w.cols);
    let groups = k / 32;
    assert!(by_panel(w.ty) && n <= 16 && k.is_multiple_of(32));
    assert!(n == 0 || ((first + n) * rb <= w.bytes.len() && q.len() >= (n - 1) * q_stride + k));
    assert!(scale.len() >= groups * 16 && offset.len() >= groups * 16 && 16 * rb < i32::MAX as usize);
    let rows = w.bytes[first * rb..].as_ptr();
    let lanes = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(rb as i32),
    );
    let mask = ((1u32 << n) - 1) as u16;
    let fifth = |at: *const u8| {
        // SAFETY: 4 bytes of a block (the caller of `each_group` points inside one).
        fifth_bits(u32::from_le_bytes(unsafe { *at.cast::<[u8; 4]>() }))
    };
    let half = |v: __m512i| _mm512_cvtph_ps(_mm512_cvtepi32_epi16(v));
    // Per group: each row's values from its block at `b`, then the 16 rows' scale words
    // (their first four bytes) gathered and turned into scales and offsets.
    macro_rules! each_group {
        ($size:literal, |$b:ident| $values:expr, |$words:ident| $scales:expr) => {
            for g in 0..groups {
                before_group(g);
                for r in 0..n {
                    // SAFETY: block g of row first + r lies inside the rows asserted above,
                    // and its 32 values inside `q` (n - 1 rows of `q_stride`, then k).
                    unsafe {
                        let $b = rows.add(r * rb + g * $size);
                        let values: __m256i = $values;
                        _mm256_storeu_si256(q.as_mut_ptr().add(r * q_stride + 32 * g).cast(), values);
                    }
                }
                // SAFETY: the lanes of the mask are rows inside the asserted range; scale and
                // offset hold 16 lanes per group.
                unsafe {
                    let $words = _mm512_mask_i32gather_epi32::<1>(
                        _mm512_setzero_si512(),
                        mask,
                        lanes,
                        rows.add(g * $size).cast(),
                    );
                    let (s, o): (__m512, __m512) = $scales;
                    _mm512_storeu_ps(scale.as_mut_ptr().add(16 * g), s);
                    _mm512_storeu_ps(offset.as_mut_ptr().add(16 * g), o);
                }
            }
        };
    }
    let low = |words: __m512i| half(words);
    let high = |words: __m512i| half(_mm512_srli_epi32::<16>(words));
    let times = |d: __m512, f: f32| _mm512_mul_ps(d, _mm512_set1_ps(f));
    // SAFETY (each `values`): the block's bytes from `b` on are inside it.
    match w.ty {
        GgmlType::Q4_0 => each_group!(18, |b| nibbles_at(b.add(2)), |words| {
            let d = low(words);
            (d, times(d, -8.0))
        }),
        GgmlType::Q4_1 => each_group!(20, |b| nibbles_at(b.add(4)), |words| (low(words), high(words))),
        GgmlType::Q5_0 => {
            each_group!(22, |b| _mm256_or_si256(nibbles_at(b.add(6)), fifth(b.add(2))), |words| {
                let d = low(words);
                (d, times(d, -16.0))
            })
        }
        GgmlType::Q5_1 => {
            each_group!(24, |b| _mm256_or_si256(nibbles_at(b.add(8)), fifth(b.add(4))), |words| {
                (low(words), high(words))
            })
        }
        GgmlType::Q8_0 => each_group!(34, |b| _mm256_loadu_si256(b.add(2).cast()), |words| {
            (low(words), _mm512_setzero_ps())
        }),
        GgmlType::IQ4_NL => each_group!(18, |b| table(&KVALUES_IQ4NL, nibbles_at(b.add(2))), |words| {
            (low(words), _mm512_setzero_ps())
        }),
        ty => unreachable!("{ty} is not a type `panel` unpacks"),
    }
}

/// [`nibbles`] of the 16 bytes at `p`.
///
/// # Safety
/// `p` must be valid for reading 16 bytes.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn nibbles_at(p: *const u8) -> __m256i {
    // SAFETY: the caller's guarantee.
    nibbles(unsafe { std::slice::from_raw_parts(p, 16) })
}

/// Q4_K and Q5_K: 8 sub-blocks of 32 nibbles with 6-bit scales and minimums; Q5_K adds a
/// fifth bit per weight, bit `s` of `qh[l]` for element `l` of sub-block `s`.
#[target_feature(enable = "avx2,f16c")]
fn q4_q5_k(bytes: &[u8], q: &mut [u8], put: &mut impl FnMut(usize, f32, f32), five: bool) {
    let (size, quants_at) = if five { (176, 48) } else { (144, 16) };
    for (i, b) in bytes.chunks_exact(size).enumerate() {
        let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
        let (scales, mins) = crate::cpu::quant::kquants_scales_mins(b[4..16].try_into().expect("12 bytes"));
        for j in 0..8 {
            put(
                8 * i + j,
                d * f32::from((scales >> (8 * j)) as u8),
                -dmin * f32::from((mins >> (8 * j)) as u8),
            );
        }
        let qh = if five { load32(&b[16..48]) } else { _mm256_setzero_si256() };
        let out = &mut q[256 * i..256 * (i + 1)];
        for c in 0..4 {
            let quants = load32(&b[quants_at + 32 * c..quants_at + 32 * (c + 1)]);
            let (lo_bit, hi_bit) = (bit_of(qh, 2 * c as i64), bit_of(qh, 2 * c as i64 + 1));
            store32(&mut out[64 * c..64 * c + 32], _mm256_or_si256(low(quants), lo_bit));
            store32(&mut out[64 * c + 32..64 * c + 64], _mm256_or_si256(high(quants), hi_bit));
        }
    }
}

#[target_feature(enable = "avx2,f16c")]
fn q6_k(bytes: &[u8], q: &mut [u8], put: &mut impl FnMut(usize, f32, f32)) {
    for (i, b) in bytes.chunks_exact(210).enumerate() {
        let d = f16_at(b, 208);
        for s in 0..16 {
            put(16 * i + s, d * f32::from(b[192 + s] as i8), 0.0);
        }
        let out = &mut q[256 * i..256 * (i + 1)];
        for n in 0..2 {
            let (ql_a, ql_b) = (load32(&b[64 * n..64 * n + 32]), load32(&b[64 * n + 32..64 * n + 64]));
            let qh = load32(&b[128 + 32 * n..160 + 32 * n]);
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

/// IQ4_XS: IQ4_NL's table per 32-element run, each run with its own 6-bit scale.
#[target_feature(enable = "avx2,f16c")]
fn iq4_xs(bytes: &[u8], q: &mut [u8], put: &mut impl FnMut(usize, f32, f32)) {
    for (i, b) in bytes.chunks_exact(136).enumerate() {
        let d = f16_at(b, 0);
        let scales_h = u16::from_le_bytes([b[2], b[3]]);
        let scales_l: &[u8; 4] = b[4..8].try_into().expect("4 bytes");
        for r in 0..8 {
            // ggml rounds the run scale to f32 before the table value multiplies it.
            put(8 * i + r, d * iq4xs_scale(scales_h, scales_l, r) as f32, 0.0);
            let values = table(&KVALUES_IQ4NL, nibbles(&b[8 + 16 * r..24 + 16 * r]));
            store32(&mut q[256 * i + 32 * r..256 * i + 32 * (r + 1)], values);
        }
    }
}

/// The f16 at byte `i` of `b`, converted by the instruction rather than the 256 KiB table
/// (with the unchecked scale stores, Q4_1 1536×576 at 8 tokens on AMX: 0.169 -> 0.158 ms).
#[target_feature(enable = "f16c")]
fn f16_at(b: &[u8], i: usize) -> f32 {
    let bits = u16::from_le_bytes([b[i], b[i + 1]]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
}

/// 16 bytes of nibble pairs as 32 values: the low nibbles (elements 0..16), then the high.
#[target_feature(enable = "avx2,f16c")]
fn nibbles(b: &[u8]) -> __m256i {
    assert!(b.len() >= 16);
    // SAFETY: 16 bytes, checked above.
    let v = unsafe { _mm_loadu_si128(b.as_ptr().cast()) };
    let mask = _mm_set1_epi8(0x0F);
    _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16::<4>(v), mask), _mm_and_si128(v, mask))
}

/// Each of 32 values (0..=15) replaced by its entry of a 16-entry table.
#[target_feature(enable = "avx2,f16c")]
fn table(entries: &[i8; 16], values: __m256i) -> __m256i {
    // SAFETY: 16 bytes.
    let t = unsafe { _mm_loadu_si128(entries.as_ptr().cast()) };
    _mm256_shuffle_epi8(_mm256_set_m128i(t, t), values)
}

/// The bits of `qh` as 32 bytes: 0x10 in byte `j` where bit `j` is set (Q5_0/Q5_1's fifth bits).
#[target_feature(enable = "avx2,f16c")]
fn fifth_bits(qh: u32) -> __m256i {
    // Byte j takes byte j / 8 of qh, then tests its bit j % 8.
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(qh as i32),
        _mm256_setr_epi64x(0, 0x0101_0101_0101_0101, 0x0202_0202_0202_0202, 0x0303_0303_0303_0303),
    );
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201_u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

/// Bit `s` of each of 32 bytes, as 0x10.
#[target_feature(enable = "avx2,f16c")]
fn bit_of(bytes: __m256i, s: i64) -> __m256i {
    let shifted = _mm256_srl_epi16(bytes, _mm_set_epi64x(0, s));
    _mm256_slli_epi16::<4>(_mm256_and_si256(shifted, _mm256_set1_epi8(1)))
}

/// 32 bytes.
#[target_feature(enable = "avx2,f16c")]
fn load32(b: &[u8]) -> __m256i {
    assert!(b.len() >= 32);
    // SAFETY: 32 bytes, checked above.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

#[target_feature(enable = "avx2,f16c")]
fn store32(out: &mut [u8], v: __m256i) {
    assert!(out.len() >= 32);
    // SAFETY: 32 bytes of room, checked above.
    unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), v) }
}

/// The low and the high nibbles of 32 bytes.
#[target_feature(enable = "avx2,f16c")]
fn low(b: __m256i) -> __m256i {
    _mm256_and_si256(b, _mm256_set1_epi8(0x0F))
}
#[target_feature(enable = "avx2,f16c")]
fn high(b: __m256i) -> __m256i {
    _mm256_and_si256(_mm256_srli_epi16::<4>(b), _mm256_set1_epi8(0x0F))
}
