//! Decode (one to four tokens) of Q4_K and Q6_K rows in the 16-row packed layout
//! (`quant::packed`) on AVX-512 VNNI: lane `r` of every vector is row `r` of a group, so each
//! `vpdpbusd` multiplies 4 quant bytes of 16 rows with 4 activation bytes broadcast from
//! memory, and the scales meet the integer sums once per sub-block for all 16 rows at once.
//!
//! The i16 activations are split into a signed high and an unsigned low byte as in
//! `quant::vnni`, so the integers summed are exactly those of the i16 path.

use std::arch::x86_64::*;

use wllm_loaders::GgmlType;

use super::packed::{
    AT_DMIN, AT_HIGH, AT_LOW, AT_QS, GROUP_BLOCK, GROUP_ROWS, Q6K_AT_QH, Q6K_AT_QL, Q6K_AT_SCALES,
    Q6K_GROUP_BLOCK,
};
use super::vnni::SplitX;
use crate::cpu::linear::{OutPtr, WeightView};

/// How far ahead of the super-block being multiplied the stream is prefetched into L2.
const AHEAD: usize = 8 * GROUP_BLOCK;

/// Prefetches the super-block `ahead` bytes into `run` (`len` bytes long) into L2.
#[inline(always)]
fn prefetch(run: &[u8], at: usize, len: usize) {
    if at + len <= run.len() {
        for line in (0..len).step_by(64) {
            // SAFETY: SSE is baseline on x86-64; the address is inside the slice.
            unsafe { _mm_prefetch::<_MM_HINT_T1>(run.as_ptr().add(at + line).cast()) };
        }
    }
}

/// Rows `r0..r1` (whole groups) of the packed Q4_K or Q6_K matrix `w` against the `T` tokens `x`,
/// each built in element order ([`SplitX::natural`]), into `out` (token-major, as `w.rows`).
///
/// # Safety
/// The CPU must have the features `quant::vnni::available` checks.
pub(crate) unsafe fn rows<const T: usize>(
    w: WeightView<'_>,
    r0: usize,
    r1: usize,
    x: [&SplitX<'_>; T],
    out: OutPtr<'_>,
) {
    let rb = w.row_bytes();
    assert!(r0.is_multiple_of(GROUP_ROWS) && (r1 - r0).is_multiple_of(GROUP_ROWS), "rows {r0}..{r1}");
    let block = if w.ty == GgmlType::Q6_K { Q6K_GROUP_BLOCK } else { GROUP_BLOCK };
    assert!(x.iter().all(|x| x.blocks() * block >= GROUP_ROWS * rb), "activations shorter than the row");
    for g in (r0..r1).step_by(GROUP_ROWS) {
        let group = &w.bytes[g * rb..(g + GROUP_ROWS) * rb];
        let run = &w.bytes[g * rb..r1 * rb];
        // SAFETY: the caller's guarantee.
        let sums = unsafe {
            match w.ty {
                GgmlType::Q4_K => group_dot(group, run, x),
                GgmlType::Q6_K => q6k_group_dot(group, run, x),
                ty => unreachable!("{ty} has no packed kernel"),
            }
        };
        for (t, sum) in sums.into_iter().enumerate() {
            // SAFETY: rows `r0..r1` of every token's output are this task's alone; 16 floats
            // into a 16-float slice.
            unsafe { _mm512_storeu_ps(out.slice(t * w.rows + g, GROUP_ROWS).as_mut_ptr(), sum) };
        }
    }
}

/// The 16 rows of one group against each token of `x`; `run` (starting with the group) bounds
/// the prefetch.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
fn group_dot<const T: usize>(group: &[u8], run: &[u8], x: [&SplitX<'_>; T]) -> [__m512; T] {
    // SAFETY: every load reads inside a slice bounds-checked just before (a 2304-byte
    // super-block, a 512-byte activation block, 16-byte rows of a 256-byte stack array).
    unsafe {
        let nibble = _mm512_set1_epi8(0x0F);
        let top = _mm512_set1_epi8(0x30);
        let mut acc = [_mm512_setzero_ps(); T];
        let mut acc_min = [_mm512_setzero_ps(); T];
        for (i, blk) in group.chunks_exact(GROUP_BLOCK).enumerate() {
            prefetch(run, i * GROUP_BLOCK + AHEAD, GROUP_BLOCK);
            let blk: &[u8; GROUP_BLOCK] = blk.try_into().expect("one super-block");
            let xb: [&[u8; 512]; T] = std::array::from_fn(|t| x[t].block(i));
            let load = |at: usize| _mm512_loadu_si512(blk[at..at + 64].as_ptr().cast());
            // Scales and minimums of sub-blocks 0-3 and 4-7, a byte per (sub-block, row).
            let (low0, low1, high) = (load(AT_LOW), load(AT_LOW + 64), load(AT_HIGH));
            let fields = [
                _mm512_or_si512(
                    _mm512_and_si512(low0, nibble),
                    _mm512_and_si512(_mm512_slli_epi16::<4>(high), top),
                ),
                _mm512_or_si512(
                    _mm512_and_si512(low1, nibble),
                    _mm512_and_si512(_mm512_slli_epi16::<2>(high), top),
                ),
                _mm512_or_si512(
                    _mm512_and_si512(_mm512_srli_epi16::<4>(low0), nibble),
                    _mm512_and_si512(high, top),
                ),
                _mm512_or_si512(
                    _mm512_and_si512(_mm512_srli_epi16::<4>(low1), nibble),
                    _mm512_and_si512(_mm512_srli_epi16::<2>(high), top),
                ),
            ];
            let mut unpacked = [0u8; 256];
            for (k, f) in fields.into_iter().enumerate() {
                _mm512_storeu_si512(unpacked[64 * k..64 * k + 64].as_mut_ptr().cast(), f);
            }
            let lanes =
                |at: usize| _mm512_cvtepu8_epi32(_mm_loadu_si128(unpacked[at..at + 16].as_ptr().cast()));
            let mut dot = [_mm512_setzero_ps(); T];
            for c in 0..4 {
                let mut sums = [[_mm512_setzero_si512(); 4]; T];
                for step in 0..8 {
                    let q = load(AT_QS + 64 * (8 * c + step));
                    let even = _mm512_and_si512(q, nibble);
                    let odd = _mm512_and_si512(_mm512_srli_epi16::<4>(q), nibble);
                    let at = 64 * c + 4 * step;
                    for t in 0..T {
                        let bcast = |at: usize| {
                            _mm512_set1_epi32(i32::from_le_bytes(
                                xb[t][at..at + 4].try_into().expect("4 bytes"),
                            ))
                        };
                        let s = &mut sums[t];
                        s[0] = _mm512_dpbusd_epi32(s[0], even, bcast(at));
                        s[1] = _mm512_dpbusd_epi32(s[1], bcast(256 + at), even);
                        s[2] = _mm512_dpbusd_epi32(s[2], odd, bcast(at + 32));
                        s[3] = _mm512_dpbusd_epi32(s[3], bcast(256 + at + 32), odd);
                    }
                }
                let (scale_even, scale_odd) = (lanes(32 * c), lanes(32 * c + 16));
                for t in 0..T {
                    // A sub-block's lane: 32 products of 15 · 32767 at most, times a scale
                    // below 64, two sub-blocks: below 2^31.
                    let s = &sums[t];
                    let even = _mm512_add_epi32(_mm512_slli_epi32::<8>(s[0]), s[1]);
                    let odd = _mm512_add_epi32(_mm512_slli_epi32::<8>(s[2]), s[3]);
                    let pair = _mm512_add_epi32(
                        _mm512_mullo_epi32(even, scale_even),
                        _mm512_mullo_epi32(odd, scale_odd),
                    );
                    dot[t] = _mm512_add_ps(dot[t], _mm512_cvtepi32_ps(pair));
                }
            }
            let half = |at: usize| _mm512_cvtph_ps(_mm256_loadu_si256(blk[at..at + 32].as_ptr().cast()));
            let (d, dmin) = (half(0), half(AT_DMIN));
            for t in 0..T {
                // Σ min · Σ q over the sub-blocks: at most 8 · 63 · 32 · 32767, inside i32.
                let sums = &x[t].wide_sums()[8 * i..8 * i + 8];
                let mut mins = _mm512_setzero_si512();
                for (j, &sum) in sums.iter().enumerate() {
                    mins = _mm512_add_epi32(
                        mins,
                        _mm512_mullo_epi32(lanes(128 + 16 * j), _mm512_set1_epi32(sum)),
                    );
                }
                let xd = _mm512_set1_ps(x[t].wide_d(i));
                acc[t] = _mm512_fmadd_ps(dot[t], _mm512_mul_ps(d, xd), acc[t]);
                acc_min[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(mins), _mm512_mul_ps(dmin, xd), acc_min[t]);
            }
        }
        std::array::from_fn(|t| _mm512_sub_ps(acc[t], acc_min[t]))
    }
}

/// The 16 rows of one Q6_K group against each token of `x`. The quants are taken unsigned
/// (0..64) and their offset of 32 comes off per block through the activations' 16-element
/// sums. A sub-block's high-byte sum (16 products of 63 · 128 at most) and low-byte sum (of
/// 63 · 255) are scaled apart, so that 16 sub-blocks times an i8 scale stay inside i32.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
fn q6k_group_dot<const T: usize>(group: &[u8], run: &[u8], x: [&SplitX<'_>; T]) -> [__m512; T] {
    // SAFETY: every load reads inside a slice bounds-checked just before (a 3360-byte
    // super-block, a 512-byte activation block, 16 sums of a block's 16).
    unsafe {
        let nibble = _mm512_set1_epi8(0x0F);
        let top = _mm512_set1_epi8(0x30);
        let mut acc = [_mm512_setzero_ps(); T];
        for (i, blk) in group.chunks_exact(Q6K_GROUP_BLOCK).enumerate() {
            prefetch(run, i * Q6K_GROUP_BLOCK + AHEAD, Q6K_GROUP_BLOCK);
            let blk: &[u8; Q6K_GROUP_BLOCK] = blk.try_into().expect("one super-block");
            let xb: [&[u8; 512]; T] = std::array::from_fn(|t| x[t].block(i));
            let load = |at: usize| _mm512_loadu_si512(blk[at..at + 64].as_ptr().cast());
            let scale = |j: usize| {
                let at = Q6K_AT_SCALES + 16 * j;
                _mm512_cvtepi8_epi32(_mm_loadu_si128(blk[at..at + 16].as_ptr().cast()))
            };
            let mut high_sum = [_mm512_setzero_si512(); T];
            let mut low_sum = [_mm512_setzero_si512(); T];
            for n in 0..2 {
                for h in 0..2 {
                    for quarter in 0..2 {
                        // Sub-blocks of the low nibbles (elements 128n + 32h + 16·quarter..)
                        // and of the high nibbles (64 further on).
                        let mut sums = [[_mm512_setzero_si512(); 4]; T];
                        for step in 0..4 {
                            let t_step = 4 * quarter + step;
                            let ql = load(Q6K_AT_QL + 64 * (16 * n + 8 * h + t_step));
                            let qh = load(Q6K_AT_QH + 64 * (8 * n + t_step));
                            let (qh_low, qh_high) = if h == 0 {
                                (_mm512_slli_epi16::<4>(qh), qh)
                            } else {
                                (_mm512_slli_epi16::<2>(qh), _mm512_srli_epi16::<2>(qh))
                            };
                            let low =
                                _mm512_or_si512(_mm512_and_si512(ql, nibble), _mm512_and_si512(qh_low, top));
                            let high = _mm512_or_si512(
                                _mm512_and_si512(_mm512_srli_epi16::<4>(ql), nibble),
                                _mm512_and_si512(qh_high, top),
                            );
                            let at = 128 * n + 32 * h + 4 * t_step;
                            for t in 0..T {
                                let bcast = |at: usize| {
                                    _mm512_set1_epi32(i32::from_le_bytes(
                                        xb[t][at..at + 4].try_into().expect("4 bytes"),
                                    ))
                                };
                                let s = &mut sums[t];
                                s[0] = _mm512_dpbusd_epi32(s[0], low, bcast(at));
                                s[1] = _mm512_dpbusd_epi32(s[1], bcast(256 + at), low);
                                s[2] = _mm512_dpbusd_epi32(s[2], high, bcast(at + 64));
                                s[3] = _mm512_dpbusd_epi32(s[3], bcast(256 + at + 64), high);
                            }
                        }
                        let j = 8 * n + 2 * h + quarter;
                        let (scale_low, scale_high) = (scale(j), scale(j + 4));
                        for t in 0..T {
                            let s = &sums[t];
                            high_sum[t] = _mm512_add_epi32(
                                high_sum[t],
                                _mm512_add_epi32(
                                    _mm512_mullo_epi32(s[0], scale_low),
                                    _mm512_mullo_epi32(s[2], scale_high),
                                ),
                            );
                            low_sum[t] = _mm512_add_epi32(
                                low_sum[t],
                                _mm512_add_epi32(
                                    _mm512_mullo_epi32(s[1], scale_low),
                                    _mm512_mullo_epi32(s[3], scale_high),
                                ),
                            );
                        }
                    }
                }
            }
            let d = _mm512_cvtph_ps(_mm256_loadu_si256(blk[..32].as_ptr().cast()));
            for t in 0..T {
                // Σ scale · Σ q over the 16 sub-blocks: at most 16 · 128 · 16 · 32767.
                let sums16 = x[t].sums16(i);
                let mut offset = _mm512_setzero_si512();
                for (j, &sum) in sums16.iter().enumerate() {
                    offset = _mm512_add_epi32(offset, _mm512_mullo_epi32(scale(j), _mm512_set1_epi32(sum)));
                }
                let whole = _mm512_fmadd_ps(
                    _mm512_cvtepi32_ps(high_sum[t]),
                    _mm512_set1_ps(256.0),
                    _mm512_cvtepi32_ps(low_sum[t]),
                );
                let dot = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(offset), _mm512_set1_ps(32.0), whole);
                acc[t] = _mm512_fmadd_ps(dot, _mm512_mul_ps(d, _mm512_set1_ps(x[t].wide_d(i))), acc[t]);
            }
        }
        acc
    }
}
