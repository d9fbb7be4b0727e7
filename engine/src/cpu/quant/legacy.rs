//! Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, MXFP4 and IQ4_NL: 32-element blocks whose byte `j` of `qs`
//! holds element `j` in its low nibble and `j + 16` in its high nibble (layouts: ggml-common.h
//! at llama.cpp 0c1e570; see `wllm_loaders::quant::legacy`).

use wllm_loaders::quant::{KVALUES_IQ4NL, KVALUES_MXFP4, e8m0_to_fp32_half};

use super::{Blocks, emit, emit_i8, f16_at, table_codes};
use crate::cpu::simd::Simd;

pub(crate) struct Q4_0;
pub(crate) struct Q4_1;
pub(crate) struct Q5_0;
pub(crate) struct Q5_1;
pub(crate) struct Q8_0;
pub(crate) struct Mxfp4;
pub(crate) struct Iq4Nl;

/// `SPREAD[b]` has bit 4 of byte `i` set where `b` has bit `i`: eight fifth bits of Q5 values.
const SPREAD: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut b = 0;
    while b < 256 {
        let mut i = 0;
        while i < 8 {
            if (b >> i) & 1 == 1 {
                t[b] |= 0x10 << (8 * i);
            }
            i += 1;
        }
        b += 1;
    }
    t
};

/// The 32 five-bit values of a Q5 block: nibbles of `qs` plus the bits of `qh`.
#[inline(always)]
fn q5_values<S: Simd>(s: S, qs: &[u8], qh: u32) -> (S::B, S::B) {
    let sp = |shift: u32| SPREAD[((qh >> shift) & 0xFF) as usize];
    let q = s.bload(qs);
    let lo = s.bor(s.band(q, s.bsplat(0x0F)), s.bfrom_u64(sp(0), sp(8)));
    let hi = s.bor(s.bshr(q, 4), s.bfrom_u64(sp(16), sp(24)));
    (lo, hi)
}

impl Blocks for Q4_0 {
    const ELEMS: usize = 32;
    const BYTES: usize = 18;
    #[inline(always)]
    fn decode<S: Simd>(s: S, b: &[u8], sink: &mut impl FnMut(usize, S::F)) {
        let (eight, d) = (s.splat(8.0), s.splat(f16_at(s, b, 0)));
        let q = s.bload(&b[2..]);
        let f = |v| s.mul(s.sub(v, eight), d);
        emit(s, s.band(q, s.bsplat(0x0F)), 0, sink, f);
        emit(s, s.bshr(q, 4), 16, sink, f);
    }
}

impl Blocks for Q4_1 {
    const ELEMS: usize = 32;
    const BYTES: usize = 20;
    #[inline(always)]
    fn decode<S: Simd>(s: S, b: &[u8], sink: &mut impl FnMut(usize, S::F)) {
        let (d, m) = (s.splat(f16_at(s, b, 0)), s.splat(f16_at(s, b, 2)));
        let q = s.bload(&b[4..]);
        let f = |v| s.add(s.mul(v, d), m);
        emit(s, s.band(q, s.bsplat(0x0F)), 0, sink, f);
        emit(s, s.bshr(q, 4), 16, sink, f);
    }
}

impl Blocks for Q5_0 {
    const ELEMS: usize = 32;
    const BYTES: usize = 22;
    #[inline(always)]
    fn decode<S: Simd>(s: S, b: &[u8], sink: &mut impl FnMut(usize, S::F)) {
        let (sixteen, d) = (s.splat(16.0), s.splat(f16_at(s, b, 0)));
        let (lo, hi) = q5_values(s, &b[6..], u32::from_le_bytes([b[2], b[3], b[4], b[5]]));
        let f = |v| s.mul(s.sub(v, sixteen), d);
        emit(s, lo, 0, sink, f);
        emit(s, hi, 16, sink, f);
    }
}

impl Blocks for Q5_1 {
    const ELEMS: usize = 32;
    const BYTES: usize = 24;
    #[inline(always)]
    fn decode<S: Simd>(s: S, b: &[u8], sink: &mut impl FnMut(usize, S::F)) {
        let (d, m) = (s.splat(f16_at(s, b, 0)), s.splat(f16_at(s, b, 2)));
        let (lo, hi) = q5_values(s, &b[8..], u32::from_le_bytes([b[4], b[5], b[6], b[7]]));
        let f = |v| s.add(s.mul(v, d), m);
        emit(s, lo, 0, sink, f);
        emit(s, hi, 16, sink, f);
    }
}

impl Blocks for Q8_0 {
    const ELEMS: usize = 32;
    const BYTES: usize = 34;
    #[inline(always)]
    fn decode<S: Simd>(s: S, b: &[u8], sink: &mut impl FnMut(usize, S::F)) {
        let d = s.splat(f16_at(s, b, 0));
        let f = |v| s.mul(v, d);
        emit_i8(s, s.bload(&b[2..]), 0, sink, f);
        emit_i8(s, s.bload(&b[18..]), 16, sink, f);
    }
}

impl Blocks for Mxfp4 {
    const ELEMS: usize = 32;
    const BYTES: usize = 17;
    #[inline(always)]
    fn decode<S: Simd>(s: S, b: &[u8], sink: &mut impl FnMut(usize, S::F)) {
        let d = s.splat(e8m0_to_fp32_half(b[0]));
        table_codes(s, &KVALUES_MXFP4, &b[1..17], 0, sink, |v| s.mul(v, d));
    }
}

impl Blocks for Iq4Nl {
    const ELEMS: usize = 32;
    const BYTES: usize = 18;
    #[inline(always)]
    fn decode<S: Simd>(s: S, b: &[u8], sink: &mut impl FnMut(usize, S::F)) {
        let d = s.splat(f16_at(s, b, 0));
        table_codes(s, &KVALUES_IQ4NL, &b[2..18], 0, sink, |v| s.mul(v, d));
    }
}
