//! One-token Q4_K decode on AVX-512 VNNI: the weights' nibbles stay bytes, and the i16
//! activations are split into a signed high byte and an unsigned low byte
//! (`x = 256 · hi + lo`), so `vpdpbusd` multiplies 64 of them per instruction at full i16
//! precision: the integers summed are exactly those of the i16 path.
//!
//! The i16 kernel spends, per 32 weights, a widening to i16, a multiply by the sub-block scale
//! (broadcast from a general register) and a multiply-add; here 64 weights take two
//! `vpdpbusd` and a shift, and the scales meet the sums once per 16 lanes (`vpmulld`), so a
//! super-block needs about half the instructions.

use std::arch::x86_64::*;

use super::int::{QuantX, f16_at};
use crate::cpu::linear::{OutPtr, WeightView};

/// Q4_K bytes per super-block and where its quants start.
const BLOCK: usize = 144;
const QS: usize = 16;

/// One token's activations in the byte form: per super-block the 256 high bytes then the 256
/// low bytes, each in the order the Q4_K nibble vectors take them (sub-blocks 0, 2, 1, 3,
/// 4, 6, 5, 7: a 64-byte load holds two 32-byte runs, whose low nibbles are sub-blocks `2c`
/// of runs `c` and `c + 1`, and whose high nibbles are the odd ones).
pub(crate) struct SplitX {
    bytes: Vec<[u8; 512]>,
    /// The i16 scale of each super-block.
    d: Vec<f32>,
    /// `Σ q` of each 32-element sub-block, for the minimums.
    sums: Vec<i32>,
}

const ORDER: [usize; 8] = [0, 2, 1, 3, 4, 6, 5, 7];

impl SplitX {
    /// Token 0 of `xq`, when its rows are whole super-blocks.
    pub(crate) fn new(xq: &QuantX) -> Option<SplitX> {
        let wide = xq.token(0).wide()?;
        let bytes = wide
            .q
            .chunks_exact(8)
            .map(|sub| {
                let mut out = [0u8; 512];
                for (p, &j) in ORDER.iter().enumerate() {
                    for (e, &v) in sub[j].iter().enumerate() {
                        let [lo, hi] = v.to_le_bytes();
                        out[32 * p + e] = hi;
                        out[256 + 32 * p + e] = lo;
                    }
                }
                out
            })
            .collect();
        Some(SplitX { bytes, d: wide.d.to_vec(), sums: wide.sum.to_vec() })
    }
}

/// Whether this CPU runs [`rows`].
pub(crate) fn available() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vnni")
        && is_x86_feature_detected!("avx2")
}

/// Row length from which rows are multiplied [`BLOCKED_ROWS`] at a time (see
/// `matvec::BLOCKED_FROM`).
const BLOCKED_FROM: usize = 8193;

/// Eight rows per pass: a 7B model's down projections (4096 x 14336) took 47 ms per token
/// with four, 40 ms with eight (2 threads; one thread 17.3 vs 14.1 GB/s, row by row 8.5).
const BLOCKED_ROWS: usize = 8;

/// Rows `r0..r1` of the Q4_K weight `w` against `x`, into `out`.
///
/// # Safety
/// The CPU must have the features [`available`] checks.
pub(crate) unsafe fn rows(w: WeightView<'_>, r0: usize, r1: usize, x: &SplitX, out: OutPtr<'_>) {
    let rb = w.row_bytes();
    assert!(x.d.len() * BLOCK >= rb, "activations shorter than the row");
    let row = |r: usize| &w.bytes[r * rb..(r + 1) * rb];
    let mut r = r0;
    if w.cols >= BLOCKED_FROM {
        while r + BLOCKED_ROWS <= r1 {
            // SAFETY: the caller's guarantee.
            let ys = unsafe { group::<BLOCKED_ROWS>(std::array::from_fn(|i| row(r + i)), x) };
            for (i, y) in ys.into_iter().enumerate() {
                out.write(r + i, y);
            }
            r += BLOCKED_ROWS;
        }
    }
    for r in r..r1 {
        // SAFETY: as above.
        out.write(r, unsafe { group::<1>([row(r)], x) }[0]);
    }
}

/// The lanes of sub-blocks `a` (0..8) and `b` (8..16) in a 16-lane i32 vector.
const fn pair(a: i32, b: i32) -> [i32; 16] {
    [a, a, a, a, a, a, a, a, b, b, b, b, b, b, b, b]
}

/// `R` rows of whole super-blocks against `x`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
fn group<const R: usize>(rows: [&[u8]; R], x: &SplitX) -> [f32; R] {
    // Sub-blocks of the four nibble vectors, in the lanes `vpdpbusd` sums them into.
    let pairs = [pair(0, 2), pair(1, 3), pair(4, 6), pair(5, 7)];
    // SAFETY: every load reads inside a slice bounds-checked just before (64 bytes of a
    // 144-byte block or of a 512-byte activation block, 8 sums of a super-block's 8).
    unsafe {
        let pairs = pairs.map(|p| _mm512_loadu_si512(p.as_ptr().cast()));
        let nibble = _mm512_set1_epi8(0x0F);
        let mut acc = [_mm512_setzero_ps(); R];
        let mut acc_min = [_mm256_setzero_ps(); R];
        for (i, xb) in x.bytes.iter().enumerate().take(rows[0].len() / BLOCK) {
            let load = |at: usize| _mm512_loadu_si512(xb[at..at + 64].as_ptr().cast());
            let hi = [load(0), load(64), load(128), load(192)];
            let lo = [load(256), load(320), load(384), load(448)];
            let sums = _mm256_loadu_si256(x.sums[8 * i..8 * i + 8].as_ptr().cast());
            let xd = x.d[i];
            for r in 0..R {
                let b: &[u8; BLOCK] = rows[r][BLOCK * i..BLOCK * (i + 1)].try_into().expect("one block");
                let (scales, mins) = super::kquants::scales_mins(b[4..16].try_into().expect("12 bytes"));
                let scales = _mm512_cvtepu8_epi32(_mm_cvtsi64_si128(scales as i64));
                let q0 = _mm512_loadu_si512(b[QS..QS + 64].as_ptr().cast());
                let q1 = _mm512_loadu_si512(b[QS + 64..QS + 128].as_ptr().cast());
                let w = [
                    _mm512_and_si512(q0, nibble),
                    _mm512_and_si512(_mm512_srli_epi16::<4>(q0), nibble),
                    _mm512_and_si512(q1, nibble),
                    _mm512_and_si512(_mm512_srli_epi16::<4>(q1), nibble),
                ];
                let mut dot = _mm512_setzero_si512();
                for k in 0..4 {
                    // Lanes: 4 products of 15 · 255 at most, so |256 · high + low| < 2^21,
                    // times a scale below 64, four vectors: inside i32.
                    let high = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[k], hi[k]);
                    let whole = _mm512_dpbusd_epi32(_mm512_slli_epi32::<8>(high), lo[k], w[k]);
                    let scale = _mm512_permutexvar_epi32(pairs[k], scales);
                    dot = _mm512_add_epi32(dot, _mm512_mullo_epi32(whole, scale));
                }
                let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
                acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_set1_ps(d * xd), acc[r]);
                let mins = _mm256_mullo_epi32(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(mins as i64)), sums);
                acc_min[r] =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(mins), _mm256_set1_ps(-dmin * xd), acc_min[r]);
            }
        }
        std::array::from_fn(|r| {
            _mm512_reduce_add_ps(acc[r]) + _mm512_reduce_add_ps(_mm512_zextps256_ps512(acc_min[r]))
        })
    }
}
