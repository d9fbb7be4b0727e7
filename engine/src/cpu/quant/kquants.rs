//! The k-quant super-blocks of 256 elements (layouts: ggml-common.h at llama.cpp 0c1e570; see
//! `wllm_loaders::quant::kquants` for the element order, which these loops walk in storage
//! order: 128-element halves of 2-bit planes, 64-element chunks of 4-bit planes), and IQ4_XS,
//! whose super-block is eight IQ4_NL runs with 6-bit scales.

use wllm_loaders::quant::{KVALUES_IQ4NL, iq4xs_scale};

use super::{Blocks, emit, f16_at, table_codes};
use crate::cpu::simd::Simd;

pub(crate) struct Q2K;
pub(crate) struct Q3K;
pub(crate) struct Q4K;
pub(crate) struct Q5K;
pub(crate) struct Q6K;
pub(crate) struct Iq4Xs;

/// Scale and min of sub-block `j` of Q4_K/Q5_K (the 6-bit packing of `get_scale_min_k4`).
#[inline(always)]
pub(super) fn scale_min(j: usize, sc: &[u8]) -> (u8, u8) {
    if j < 4 {
        (sc[j] & 63, sc[j + 4] & 63)
    } else {
        ((sc[j + 4] & 0x0F) | ((sc[j - 4] >> 6) << 4), (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4))
    }
}

/// All eight [`scale_min`] pairs at once, scale (or minimum) `j` in byte `j` of the first (or
/// second) word: the 6-bit fields gathered with word-wide masks rather than byte by byte.
#[inline(always)]
pub(crate) fn scales_mins(sc: &[u8; 12]) -> (u64, u64) {
    let word = |i: usize| u32::from_le_bytes([sc[4 * i], sc[4 * i + 1], sc[4 * i + 2], sc[4 * i + 3]]);
    let (low_scales, low_mins, high) = (word(0), word(1), word(2));
    let top = |w: u32| ((w >> 6) & 0x0303_0303) << 4;
    let scales =
        (low_scales & 0x3F3F_3F3F) as u64 | ((((high & 0x0F0F_0F0F) | top(low_scales)) as u64) << 32);
    let mins =
        (low_mins & 0x3F3F_3F3F) as u64 | (((((high >> 4) & 0x0F0F_0F0F) | top(low_mins)) as u64) << 32);
    (scales, mins)
}

/// Signed scale `k` of Q3_K (6 bits biased by 32; the packing of `q3k_scale`).
#[inline(always)]
fn q3_scale(k: usize, sc: &[u8]) -> i8 {
    let low = if k < 8 { sc[k] & 0x0F } else { sc[k - 8] >> 4 };
    let high = (sc[8 + k % 4] >> (2 * (k / 4))) & 3;
    (low | (high << 4)) as i8 - 32
}

impl Blocks for Q2K {
    const ELEMS: usize = 256;
    const BYTES: usize = 84;
    #[inline(always)]
    fn decode<S: Simd>(s: S, b: &[u8], sink: &mut impl FnMut(usize, S::F)) {
        let (d, dmin) = (f16_at(s, b, 80), f16_at(s, b, 82));
        let (scales, qs) = (&b[..16], &b[16..80]);
        for half in 0..2 {
            for sh in 0..4 {
                for g in 0..2 {
                    let sc = scales[half * 8 + sh * 2 + g];
                    let dl = d * f32::from(sc & 0x0F);
                    let ml = dmin * f32::from(sc >> 4);
                    let (dl, ml) = (s.splat(dl), s.splat(ml));
                    let q = s.band(s.bshr(s.bload(&qs[32 * half + 16 * g..]), 2 * sh as u32), s.bsplat(3));
                    emit(s, q, half * 128 + sh * 32 + g * 16, sink, |v| s.sub(s.mul(dl, v), ml));
                }
            }
        }
    }
}

impl Blocks for Q3K {
    const ELEMS: usize = 256;
    const BYTES: usize = 110;
    #[inline(always)]
    fn decode<S: Simd>(s: S, b: &[u8], sink: &mut impl FnMut(usize, S::F)) {
        let four = s.splat(4.0);
        let d = f16_at(s, b, 108);
        let (hmask, qs, scales) = (&b[..32], &b[32..96], &b[96..108]);
        for half in 0..2 {
            for sh in 0..4 {
                for g in 0..2 {
                    let dl = s.splat(d * f32::from(q3_scale(half * 8 + sh * 2 + g, scales)));
                    let low = s.band(s.bshr(s.bload(&qs[32 * half + 16 * g..]), 2 * sh as u32), s.bsplat(3));
                    let high = s.band(s.bshr(s.bload(&hmask[16 * g..]), (half * 4 + sh) as u32), s.bsplat(1));
                    // `low - 4 * (1 - high)`: a clear hmask bit means the value is 4 lower.
                    let q = s.bor(low, s.bshl(high, 2));
                    emit(s, q, half * 128 + sh * 32 + g * 16, sink, |v| s.mul(dl, s.sub(v, four)));
                }
            }
        }
    }
}

impl Blocks for Q4K {
    const ELEMS: usize = 256;
    const BYTES: usize = 144;
    #[inline(always)]
    fn decode<S: Simd>(s: S, b: &[u8], sink: &mut impl FnMut(usize, S::F)) {
        let (d, dmin) = (f16_at(s, b, 0), f16_at(s, b, 2));
        let (scales, qs) = (&b[4..16], &b[16..144]);
        for chunk in 0..4 {
            let (s1, m1) = scale_min(2 * chunk, scales);
            let (s2, m2) = scale_min(2 * chunk + 1, scales);
            let (d1, m1) = (d * f32::from(s1), dmin * f32::from(m1));
            let (d2, m2) = (d * f32::from(s2), dmin * f32::from(m2));
            let (d1, m1, d2, m2) = (s.splat(d1), s.splat(m1), s.splat(d2), s.splat(m2));
            for h in 0..2 {
                let q = s.bload(&qs[32 * chunk + 16 * h..]);
                let at = 64 * chunk + 16 * h;
                emit(s, s.band(q, s.bsplat(0x0F)), at, sink, |v| s.sub(s.mul(d1, v), m1));
                emit(s, s.bshr(q, 4), at + 32, sink, |v| s.sub(s.mul(d2, v), m2));
            }
        }
    }
}

impl Blocks for Q5K {
    const ELEMS: usize = 256;
    const BYTES: usize = 176;
    #[inline(always)]
    fn decode<S: Simd>(s: S, b: &[u8], sink: &mut impl FnMut(usize, S::F)) {
        let (d, dmin) = (f16_at(s, b, 0), f16_at(s, b, 2));
        let (scales, qh, qs) = (&b[4..16], &b[16..48], &b[48..176]);
        for chunk in 0..4 {
            let (s1, m1) = scale_min(2 * chunk, scales);
            let (s2, m2) = scale_min(2 * chunk + 1, scales);
            let (d1, m1) = (d * f32::from(s1), dmin * f32::from(m1));
            let (d2, m2) = (d * f32::from(s2), dmin * f32::from(m2));
            let (d1, m1, d2, m2) = (s.splat(d1), s.splat(m1), s.splat(d2), s.splat(m2));
            let bit = |h, b: usize| s.bshl(s.band(s.bshr(h, b as u32), s.bsplat(1)), 4);
            for h in 0..2 {
                let q = s.bload(&qs[32 * chunk + 16 * h..]);
                let hb = s.bload(&qh[16 * h..]);
                let at = 64 * chunk + 16 * h;
                let lo = s.bor(s.band(q, s.bsplat(0x0F)), bit(hb, 2 * chunk));
                let hi = s.bor(s.bshr(q, 4), bit(hb, 2 * chunk + 1));
                emit(s, lo, at, sink, |v| s.sub(s.mul(d1, v), m1));
                emit(s, hi, at + 32, sink, |v| s.sub(s.mul(d2, v), m2));
            }
        }
    }
}

impl Blocks for Q6K {
    const ELEMS: usize = 256;
    const BYTES: usize = 210;
    #[inline(always)]
    fn decode<S: Simd>(s: S, b: &[u8], sink: &mut impl FnMut(usize, S::F)) {
        let s32 = s.splat(32.0);
        let d = f16_at(s, b, 208);
        let (ql, qh, scales) = (&b[..128], &b[128..192], &b[192..208]);
        for half in 0..2 {
            for quarter in 0..4 {
                let shift = if quarter < 2 { 0 } else { 4 };
                for g in 0..2 {
                    let ds = s.splat(d * f32::from(scales[half * 8 + quarter * 2 + g] as i8));
                    let low = s.bload(&ql[64 * half + 32 * (quarter % 2) + 16 * g..]);
                    let low = s.band(s.bshr(low, shift), s.bsplat(0x0F));
                    let high =
                        s.band(s.bshr(s.bload(&qh[32 * half + 16 * g..]), 2 * quarter as u32), s.bsplat(3));
                    let q = s.bor(low, s.bshl(high, 4));
                    emit(s, q, half * 128 + quarter * 32 + g * 16, sink, |v| s.mul(ds, s.sub(v, s32)));
                }
            }
        }
    }
}

impl Blocks for Iq4Xs {
    const ELEMS: usize = 256;
    const BYTES: usize = 136;
    #[inline(always)]
    fn decode<S: Simd>(s: S, b: &[u8], sink: &mut impl FnMut(usize, S::F)) {
        let d = f16_at(s, b, 0);
        let scales_h = u16::from_le_bytes([b[2], b[3]]);
        let scales_l = b[4..8].try_into().expect("four bytes");
        for r in 0..8 {
            // The run scale rounded to f32 first, as the oracle does.
            let dl = s.splat(d * iq4xs_scale(scales_h, scales_l, r) as f32);
            table_codes(s, &KVALUES_IQ4NL, &b[8 + 16 * r..], 32 * r, sink, |v| s.mul(v, dl));
        }
    }
}

#[cfg(test)]
mod scale_tests {
    #[test]
    fn scales_mins_unpacks_like_scale_min() {
        let mut state = 0x1234_5678u32;
        for _ in 0..200 {
            let sc: [u8; 12] = std::array::from_fn(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 24) as u8
            });
            let (scales, mins) = super::scales_mins(&sc);
            for j in 0..8 {
                let got = ((scales >> (8 * j)) as u8, (mins >> (8 * j)) as u8);
                assert_eq!(got, super::scale_min(j, &sc), "sub-block {j} of {sc:?}");
            }
        }
    }
}
