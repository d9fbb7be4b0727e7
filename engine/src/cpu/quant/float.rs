//! F32, F16 and BF16 weights: any length, no blocks.

use super::Fmt;
use crate::cpu::simd::Simd;

pub(crate) struct F32;
pub(crate) struct F16;
pub(crate) struct Bf16;

impl Fmt for F32 {
    const ELEMS: usize = 1;
    const BYTES: usize = 4;
    #[inline(always)]
    fn dequant<S: Simd>(_s: S, bytes: &[u8], out: &mut [f32]) {
        for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
            *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
    }
}

impl Fmt for F16 {
    const ELEMS: usize = 1;
    const BYTES: usize = 2;
    #[inline(always)]
    fn dequant<S: Simd>(s: S, bytes: &[u8], out: &mut [f32]) {
        let n = out.len().min(bytes.len() / 2);
        let mut i = 0;
        while i + S::N <= n {
            // SAFETY: `2 * (i + N) <= bytes.len()`; the load is unaligned.
            let v = unsafe { s.load_f16(bytes.as_ptr().add(2 * i).cast()) };
            s.st(&mut out[i..], v);
            i += S::N;
        }
        for k in i..n {
            out[k] = s.f16(u16::from_le_bytes([bytes[2 * k], bytes[2 * k + 1]]));
        }
    }
}

impl Fmt for Bf16 {
    const ELEMS: usize = 1;
    const BYTES: usize = 2;
    #[inline(always)]
    fn dequant<S: Simd>(_s: S, bytes: &[u8], out: &mut [f32]) {
        // A plain shift, like the oracle: NaN payloads survive unchanged.
        for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            *o = f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16);
        }
    }
}
