//! Dequantization of whole rows for the CPU kernels, one zero-sized format type per ggml type.
//!
//! Quants are unpacked sixteen at a time in byte vectors (shifts and masks), widened to f32
//! vectors and scaled with the same f32 operations, in the same order, as
//! `wllm_loaders::quant` (the oracle), so values match it bit for bit. (Plain loops left to the
//! auto-vectorizer were vectorized across blocks, with gathers, and ran 5x slower.)

mod float;
pub(crate) mod int;
mod iq;
mod kquants;
mod legacy;
pub(crate) mod packed;
#[cfg(target_arch = "x86_64")]
pub(crate) mod vnni;
#[cfg(target_arch = "x86_64")]
pub(crate) mod vnni_iq;
#[cfg(target_arch = "x86_64")]
pub(crate) mod vnni_packed;

pub(crate) use kquants::scales_mins as kquants_scales_mins;

pub(crate) use float::{Bf16, F16, F32};
pub(crate) use iq::{Iq1M, Iq1S, Iq2S, Iq2Xs, Iq2Xxs, Iq3S, Iq3Xxs};
pub(crate) use kquants::{Iq4Xs, Q2K, Q3K, Q4K, Q5K, Q6K};
pub(crate) use legacy::{Iq4Nl, Mxfp4, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0};
use wllm_loaders::GgmlType;

use super::simd::Simd;

/// Elements a float format dequantizes at a time on its way to a dot product: 2 KiB of f32.
const SEG: usize = 512;

/// Accumulators per token in a dot product: four independent FMA chains hide the FMA latency
/// (one chain would limit a Q8_0 row to one block per four cycles).
pub(crate) const ACC: usize = 4;

/// The accumulator a vector at element `i` goes to: four chains for up to two tokens, two
/// beyond (four tokens x four chains would not fit AVX2's sixteen registers).
#[inline(always)]
fn slot<S: Simd, const T: usize>(i: usize) -> usize {
    (i / S::N) & if T <= 2 { ACC - 1 } else { 1 }
}

/// A weight storage format the CPU kernels read.
pub(crate) trait Fmt: 'static {
    /// Elements per block (1 for the float types, which have no blocks).
    const ELEMS: usize;
    /// Bytes per block.
    const BYTES: usize;
    /// Dequantizes whole blocks: `bytes` holds exactly the blocks of `out.len()` elements.
    fn dequant<S: Simd>(s: S, bytes: &[u8], out: &mut [f32]);

    /// `acc[t] += w · x[t]` lane-wise (`tail[t]` for what does not fill a vector) for one row
    /// `w` in `bytes`; each `x[t]` holds at least the row's elements. By default through an L1
    /// buffer; the block formats multiply straight from registers.
    #[inline(always)]
    fn dot<S: Simd, const T: usize>(
        s: S,
        bytes: &[u8],
        x: &[&[f32]; T],
        acc: &mut [[S::F; ACC]; T],
        tail: &mut [f32; T],
    ) {
        let k = bytes.len() / Self::BYTES * Self::ELEMS;
        let mut buf = [0f32; SEG];
        let mut off = 0;
        while off < k {
            let n = SEG.min(k - off);
            Self::dequant(
                s,
                &bytes[off / Self::ELEMS * Self::BYTES..(off + n) / Self::ELEMS * Self::BYTES],
                &mut buf[..n],
            );
            let mut i = 0;
            while i + S::N <= n {
                let w = s.ld(&buf[i..]);
                let a = slot::<S, T>(i);
                for t in 0..T {
                    acc[t][a] = s.fma(w, s.ld(&x[t][off + i..]), acc[t][a]);
                }
                i += S::N;
            }
            for j in i..n {
                for t in 0..T {
                    tail[t] = buf[j].mul_add(x[t][off + j], tail[t]);
                }
            }
            off += n;
        }
    }
}

/// A format of fixed-size blocks, unpacked a vector at a time.
pub(crate) trait Blocks: 'static {
    const ELEMS: usize;
    const BYTES: usize;
    /// Calls `sink(offset, values)` for every vector of the block in `b` (exactly `BYTES`),
    /// `offset` a multiple of `N` below `ELEMS`, each offset once.
    fn decode<S: Simd>(s: S, b: &[u8], sink: &mut impl FnMut(usize, S::F));
}

/// [`Fmt`] for a [`Blocks`] type: dequantization stores what `decode` yields, the dot
/// product multiplies it into the accumulators.
macro_rules! fmt_from_blocks {
    ($($t:ty),*) => {$(
        impl Fmt for $t {
            const ELEMS: usize = <$t as Blocks>::ELEMS;
            const BYTES: usize = <$t as Blocks>::BYTES;
            #[inline(always)]
            fn dequant<S: Simd>(s: S, bytes: &[u8], out: &mut [f32]) {
                for (b, o) in bytes.chunks_exact(<$t as Blocks>::BYTES).zip(out.chunks_exact_mut(<$t as Blocks>::ELEMS)) {
                    <$t as Blocks>::decode(s, b, &mut |off, v| s.st(&mut o[off..], v));
                }
            }
            #[inline(always)]
            fn dot<S: Simd, const T: usize>(
                s: S,
                bytes: &[u8],
                x: &[&[f32]; T],
                acc: &mut [[S::F; ACC]; T],
                _tail: &mut [f32; T],
            ) {
                let k = bytes.len() / <$t as Blocks>::BYTES * <$t as Blocks>::ELEMS;
                if x.iter().any(|x| x.len() < k) {
                    return;
                }
                for (i, b) in bytes.chunks_exact(<$t as Blocks>::BYTES).enumerate() {
                    let base = i * <$t as Blocks>::ELEMS;
                    <$t as Blocks>::decode(s, b, &mut |off, v| {
                        debug_assert!(off + S::N <= <$t as Blocks>::ELEMS);
                        let a = slot::<S, T>(base + off);
                        for t in 0..T {
                            // SAFETY: base + off + N <= k <= x[t].len() (checked above; `decode`
                            // keeps offsets inside the block).
                            let xv = unsafe { s.load(x[t].as_ptr().add(base + off)) };
                            acc[t][a] = s.fma(v, xv, acc[t][a]);
                        }
                    });
                }
            }
        }
    )*};
}
fmt_from_blocks!(Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Mxfp4, Iq4Nl, Q2K, Q3K, Q4K, Q5K, Q6K, Iq4Xs);
fmt_from_blocks!(Iq2Xxs, Iq2Xs, Iq2S, Iq3Xxs, Iq3S, Iq1S, Iq1M);

/// Whether the CPU kernels read weights of type `ty`.
pub fn is_supported(ty: GgmlType) -> bool {
    with_fmt!(ty, |F| listed::<F>(std::marker::PhantomData), false)
}

/// `true`: a `match_fmt!` body that only asks whether a type is listed.
pub(crate) fn listed<F>(_: std::marker::PhantomData<F>) -> bool {
    true
}

/// Runs `$body` with `$f` naming the format type listed for `$ty` (`GgmlType` variant =>
/// type in this module), or evaluates `$other` for a type not listed.
macro_rules! match_fmt {
    ($ty:expr, |$f:ident| $body:expr, $other:expr, [$($g:ident => $t:ident),* $(,)?]) => {{
        use wllm_loaders::GgmlType as G;
        match $ty {
            $(G::$g => {
                type $f = $crate::cpu::quant::$t;
                $body
            })*
            _ => $other,
        }
    }};
}
pub(crate) use match_fmt;

/// Runs `$body` with `$f` naming the [`Fmt`] type of `$ty`, or evaluates `$other` for a type
/// the CPU kernels do not read.
macro_rules! with_fmt {
    ($ty:expr, |$f:ident| $body:expr, $other:expr) => {
        $crate::cpu::quant::match_fmt!($ty, |$f| $body, $other, [
            F32 => F32, F16 => F16, BF16 => Bf16, Q4_0 => Q4_0, Q4_1 => Q4_1, Q5_0 => Q5_0,
            Q5_1 => Q5_1, Q8_0 => Q8_0, Q2_K => Q2K, Q3_K => Q3K, Q4_K => Q4K, Q5_K => Q5K,
            Q6_K => Q6K, MXFP4 => Mxfp4, IQ4_NL => Iq4Nl, IQ4_XS => Iq4Xs, IQ2_XXS => Iq2Xxs,
            IQ2_XS => Iq2Xs, IQ2_S => Iq2S, IQ3_XXS => Iq3Xxs, IQ3_S => Iq3S, IQ1_S => Iq1S,
            IQ1_M => Iq1M,
        ])
    };
}
pub(crate) use with_fmt;

/// An f16 stored little-endian at `b[at..at + 2]`.
#[inline(always)]
fn f16_at<S: Simd>(s: S, b: &[u8], at: usize) -> f32 {
    s.f16(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// Yields the 16 unsigned byte values of `b`, each through `f`, as elements `at..at + 16`.
#[inline(always)]
fn emit<S: Simd>(s: S, b: S::B, at: usize, sink: &mut impl FnMut(usize, S::F), f: impl Fn(S::F) -> S::F) {
    for i in 0..16 / S::N {
        sink(at + i * S::N, f(s.widen_u8(b, i)));
    }
}

/// The 32 values that the 4-bit codes in `qs` (16 bytes, element `j` low and `j + 16` high in
/// byte `j`) index in `table`, each through `f`, as elements `at..at + 32`: one byte shuffle
/// per 16 codes, not a load per element.
#[inline(always)]
fn table_codes<S: Simd>(
    s: S,
    table: &[i8; 16],
    qs: &[u8],
    at: usize,
    sink: &mut impl FnMut(usize, S::F),
    f: impl Fn(S::F) -> S::F,
) {
    let t = s.bload(bytemuck::cast_slice(table));
    let q = s.bload(qs);
    emit_i8(s, s.blut(t, s.band(q, s.bsplat(0x0F))), at, sink, &f);
    emit_i8(s, s.blut(t, s.bshr(q, 4)), at + 16, sink, &f);
}

/// [`emit`] for signed bytes.
#[inline(always)]
fn emit_i8<S: Simd>(s: S, b: S::B, at: usize, sink: &mut impl FnMut(usize, S::F), f: impl Fn(S::F) -> S::F) {
    for i in 0..16 / S::N {
        sink(at + i * S::N, f(s.widen_i8(b, i)));
    }
}
