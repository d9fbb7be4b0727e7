//! Row dot products on integers for the decode matvec: the weights' own integers against the
//! activations quantized to i16 in 32-element blocks ([`QuantX`]).
//!
//! The result is the exact dot product of the dequantized weights with the dequantized
//! activations, up to f32 rounding of the per-block sums. An i16 step is at most 1/65534 of its
//! block's largest magnitude, about 500 times finer than the 8-bit activations llama.cpp's CPU
//! backend multiplies with, so the logits stay within the fidelity budgets of the f32 path.

use wllm_loaders::quant::{KVALUES_IQ4NL, KVALUES_MXFP4, e8m0_to_fp32_half, iq4xs_scale};

use super::iq::Codebook;
use super::{Iq4Nl, Iq4Xs, Mxfp4, Q4_0, Q4_1, Q4K, Q5_0, Q5_1, Q5K, Q6K, Q8_0};
use crate::cpu::isa::Isa;
use crate::cpu::simd::int::IDot;
use crate::finite::all_finite;

/// Elements per activation block.
pub(crate) const QX: usize = 32;

/// `v` rounded to the nearest integer, ties to even, for |v| < 2^22: adding and taking away
/// 1.5 · 2^23 leaves no fraction bits, so the addition rounds as the FPU does (to nearest
/// even). `f32::round_ties_even` is a call into libm on baseline x86-64 (no SSE4.1), which
/// cost 1-2% of a 7B decode step.
#[inline(always)]
fn round_even(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (v + MAGIC) - MAGIC
}

/// Activations of one or more tokens quantized to i16, per 32-element block: `x ≈ d · q`.
pub(crate) struct QuantX {
    /// Blocks per token.
    blocks: usize,
    /// One scale per block.
    fine: Quantized,
    /// `d · Σ q` of each block: what a per-block offset or minimum multiplies.
    sum: Vec<f32>,
    /// One scale per super-block, when `k` is a multiple of [`QK`].
    wide: Option<Quantized>,
}

/// One token's blocks.
#[derive(Clone, Copy)]
pub(crate) struct XBlocks<'a> {
    pub(crate) q: &'a [[i16; QX]],
    pub(crate) d: &'a [f32],
    /// `d · Σ q` of each block.
    pub(crate) sum: &'a [f32],
    /// The same activations with one scale per 256 elements, for the super-block formats
    /// (empty when the row is not whole super-blocks).
    wide: WideBlocks<'a>,
}

/// Elements per activation super-block.
pub(crate) const QK: usize = 256;

/// Row length (elements) from which one token's rows are multiplied several at a time: its
/// i16 activations (16 KiB at 8192) no longer stay in a 32 KiB L1 cache next to the streaming
/// weights, and reading them from L2 for every row halved the rate (7B down projection,
/// 4096 x 14336 Q4_K on 2 threads: 15.9 GB/s row by row, 22.4 four rows at a time; 4096 x
/// 8192 was 28 vs 25, and 14336 x 4096 31 vs 15: interleaved runs of short rows share their
/// 4 KiB pages, where the hardware prefetcher loses track of them).
pub(crate) const LONG_ROWS_FROM: usize = 8193;

/// Activations quantized to i16 with one scale per `group` elements, kept in 32-element
/// blocks. With [`QK`] (the "wide" activations) a super-block's sub-block products share
/// one scale, so they add up as integers and meet the floats once per super-block; a step
/// is then 1/32767 of the super-block's largest magnitude, still over 100 times finer than
/// the 8-bit `Q8_K` activations llama.cpp multiplies K-quants with.
struct Quantized {
    q: Vec<[i16; QX]>,
    /// Per group.
    d: Vec<f32>,
    /// `Σ q` of each 32-element block.
    sum: Vec<i32>,
}

#[derive(Clone, Copy)]
pub(crate) struct WideBlocks<'a> {
    pub(crate) q: &'a [[i16; QX]],
    /// Per super-block.
    pub(crate) d: &'a [f32],
    pub(crate) sum: &'a [i32],
}

impl Quantized {
    /// `x` (finite, whole groups) in groups of `group` elements, a multiple of [`QX`].
    fn new(x: &[f32], group: usize) -> Quantized {
        let blocks = x.len() / QX;
        let mut out = Quantized {
            q: Vec::with_capacity(blocks),
            d: Vec::with_capacity(x.len() / group),
            sum: Vec::with_capacity(blocks),
        };
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512bw") {
            // SAFETY: the CPU has AVX-512 F and BW (checked just above).
            unsafe { out.extend_avx512(x, group) };
            return out;
        }
        out.extend(x, group);
        out
    }

    /// Appends the groups of `x`.
    fn extend(&mut self, x: &[f32], group: usize) {
        let out = self;
        for xs in x.chunks_exact(group) {
            let (d, inv) = i16_step(xs.iter().fold(0f32, |m, v| m.max(v.abs())));
            out.d.push(d);
            for xb in xs.chunks_exact(QX) {
                let mut q = [0i16; QX];
                for (q, v) in q.iter_mut().zip(xb) {
                    // |v · inv| <= 32767 up to one rounding; the cast saturates past it.
                    *q = round_even(v * inv) as i16;
                }
                out.sum.push(q.iter().map(|&v| i32::from(v)).sum());
                out.q.push(q);
            }
        }
    }
}

impl Quantized {
    /// [`Quantized::new`]'s groups on vectors, to the same integers: the conversion rounds to
    /// nearest even (the default rounding mode) and saturates as the scalar cast does. The
    /// scalar loop took a batched decode step's helper threads waiting a tenth of the step.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F and BW.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn extend_avx512(&mut self, x: &[f32], group: usize) {
        use std::arch::x86_64::*;
        for xs in x.chunks_exact(group) {
            let mut amax = _mm512_setzero_ps();
            for v in xs.chunks_exact(16) {
                // SAFETY: 16 floats.
                amax = _mm512_max_ps(amax, _mm512_abs_ps(unsafe { _mm512_loadu_ps(v.as_ptr()) }));
            }
            let (d, inv) = i16_step(_mm512_reduce_max_ps(amax));
            self.d.push(d);
            for xb in xs.chunks_exact(QX) {
                // SAFETY: the caller's guarantee.
                let (words, sum) = unsafe { block_i16(xb.try_into().expect("32 floats"), inv) };
                let mut q = [0i16; QX];
                // SAFETY: 32 i16 of room.
                unsafe { _mm512_storeu_si512(q.as_mut_ptr().cast(), words) };
                self.sum.push(sum);
                self.q.push(q);
            }
        }
    }
}

/// The step of a group whose largest magnitude is `amax`, and its inverse (0 for an all-zero
/// group): `(d, inv)` with `x ≈ d · q` and `q = round(x · inv)`.
#[inline(always)]
pub(crate) fn i16_step(amax: f32) -> (f32, f32) {
    (amax / 32767.0, if amax > 0.0 { 32767.0 / amax } else { 0.0 })
}

/// One block of 32 finite activations times `inv` (its group's [`i16_step`]), rounded to
/// nearest even (the default rounding mode) and saturated, as the scalar cast does: the 32
/// i16 and their sum.
///
/// # Safety
/// The CPU must have AVX-512 F and BW.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
pub(crate) unsafe fn block_i16(xb: &[f32; QX], inv: f32) -> (std::arch::x86_64::__m512i, i32) {
    use std::arch::x86_64::*;
    let scale = _mm512_set1_ps(inv);
    // SAFETY: 32 floats.
    let (first, second) = unsafe { (_mm512_loadu_ps(xb.as_ptr()), _mm512_loadu_ps(xb.as_ptr().add(16))) };
    let first = _mm512_cvtsepi32_epi16(_mm512_cvtps_epi32(_mm512_mul_ps(first, scale)));
    let second = _mm512_cvtsepi32_epi16(_mm512_cvtps_epi32(_mm512_mul_ps(second, scale)));
    // The saturated values, as the scalar sum sees them.
    let wide = _mm512_add_epi32(_mm512_cvtepi16_epi32(first), _mm512_cvtepi16_epi32(second));
    (_mm512_inserti64x4::<1>(_mm512_castsi256_si512(first), second), _mm512_reduce_add_epi32(wide))
}

impl QuantX {
    /// Quantizes `n_tok` rows of `k` elements (`k` a multiple of 32). `None` when an
    /// activation is not finite: the f32 path then carries the NaN or infinity through.
    /// `groupings` says which of the two the caller's formats read (a K-quant-only call skips
    /// the 32-element one; the wide one needs `k` a multiple of [`QK`]).
    pub(crate) fn new(x: &[f32], n_tok: usize, k: usize, groupings: Groupings) -> Option<QuantX> {
        debug_assert!(k.is_multiple_of(QX) && x.len() >= n_tok * k);
        let x = &x[..n_tok * k];
        // `f32::max` skips NaN, so finiteness is checked on its own.
        all_finite(x).then(|| QuantX::of_finite(x, k, groupings))
    }

    /// [`QuantX::new`] of activations known to be finite.
    pub(crate) fn of_finite(x: &[f32], k: usize, groupings: Groupings) -> QuantX {
        let fine = match groupings.fine {
            true => Quantized::new(x, QX),
            false => Quantized { q: Vec::new(), d: Vec::new(), sum: Vec::new() },
        };
        let sum = fine.d.iter().zip(&fine.sum).map(|(d, &s)| d * s as f32).collect();
        let wide = (groupings.wide && k.is_multiple_of(QK)).then(|| Quantized::new(x, QK));
        QuantX { blocks: k / QX, fine, sum, wide }
    }

    pub(crate) fn token(&self, t: usize) -> XBlocks<'_> {
        let r = t * self.blocks..(t + 1) * self.blocks;
        let wide = match &self.wide {
            Some(w) => {
                let supers = t * self.blocks / 8..(t + 1) * self.blocks / 8;
                WideBlocks { q: &w.q[r.clone()], d: &w.d[supers], sum: &w.sum[r.clone()] }
            }
            None => WideBlocks { q: &[], d: &[], sum: &[] },
        };
        if self.fine.q.is_empty() {
            return XBlocks { q: &[], d: &[], sum: &[], wide };
        }
        XBlocks { q: &self.fine.q[r.clone()], d: &self.fine.d[r.clone()], sum: &self.sum[r], wide }
    }
}

/// The activation groupings a call needs: per 32 elements (most formats) and per 256 (the
/// K-quants that sum sub-blocks as integers, [`activation_block`]).
#[derive(Clone, Copy, Default)]
pub(crate) struct Groupings {
    pub(crate) fine: bool,
    pub(crate) wide: bool,
}

impl Groupings {
    /// Adds what rows of `ty` read.
    pub(crate) fn with(self, isa: Isa, ty: wllm_loaders::GgmlType) -> Groupings {
        match activation_block(isa, ty) {
            QK => Groupings { wide: true, ..self },
            _ => Groupings { fine: true, ..self },
        }
    }
}

impl<'a> XBlocks<'a> {
    /// The wide activations, when the rows are whole super-blocks.
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn wide(self) -> Option<WideBlocks<'a>> {
        (!self.wide.d.is_empty()).then_some(self.wide)
    }
}

/// Per-token accumulators of one row: two FMA chains, and a scalar for the offset terms.
struct Acc<S: IDot, const T: usize> {
    v: [[S::F; 2]; T],
    tail: [f32; T],
}

impl<S: IDot, const T: usize> Acc<S, T> {
    #[inline(always)]
    fn new(s: S) -> Self {
        Acc { v: [[s.zero(); 2]; T], tail: [0.0; T] }
    }

    /// Adds `scale[t] · (w · q[b])` for activation block `b` of every token `t`, into chain
    /// `C` (a constant, so the chains stay in registers). `scale` includes the block's `d`.
    #[inline(always)]
    fn block<const C: usize>(&mut self, s: S, x: &[XBlocks<'_>; T], b: usize, w: S::W, scale: [f32; T]) {
        for t in 0..T {
            let a = &mut self.v[t][C];
            *a = s.acc(s.madd(w, &x[t].q[b]), scale[t], *a);
        }
    }

    /// [`Acc::block`] for a weight scale `d`: times each token's block scale.
    #[inline(always)]
    fn block_d<const C: usize>(&mut self, s: S, x: &[XBlocks<'_>; T], b: usize, w: S::W, d: f32) {
        self.block::<C>(s, x, b, w, std::array::from_fn(|t| d * x[t].d[b]));
    }

    /// Adds `m · Σ x[b]`: a block minimum (or offset) times the block's activation sum.
    #[inline(always)]
    fn offset(&mut self, x: &[XBlocks<'_>; T], b: usize, m: f32) {
        for (tail, x) in self.tail.iter_mut().zip(x) {
            *tail = m.mul_add(x.sum[b], *tail);
        }
    }

    #[inline(always)]
    fn finish(self, s: S) -> [f32; T] {
        std::array::from_fn(|t| s.sum(s.add(self.v[t][0], self.v[t][1])) + self.tail[t])
    }
}

#[inline(always)]
fn at<const N: usize>(b: &[u8], i: usize) -> &[u8; N] {
    b[i..i + N].try_into().expect("in-block range")
}

/// Every f16 as f32. A table load keeps the block scales off the vector ports, which the
/// unpacking keeps busy (a `vcvtph2ps` per scale cost more than the multiply-add per block).
static F16_TO_F32: [f32; 1 << 16] = {
    let mut t = [0f32; 1 << 16];
    let mut h = 0;
    while h < 1 << 16 {
        t[h] = f16_bits_to_f32(h as u16);
        h += 1;
    }
    t
};

const fn f16_bits_to_f32(h: u16) -> f32 {
    let sign = ((h as u32) & 0x8000) << 16;
    let exp = ((h >> 10) & 0x1F) as u32;
    let man = (h & 0x3FF) as u32;
    let bits = if exp == 0x1F {
        sign | 0x7F80_0000 | (man << 13)
    } else if exp != 0 {
        sign | ((exp + 112) << 23) | (man << 13)
    } else if man == 0 {
        sign
    } else {
        // Subnormal: shift the mantissa up to an implicit one, lowering the exponent.
        let mut e = 113u32;
        let mut m = man;
        while m & 0x400 == 0 {
            m <<= 1;
            e -= 1;
        }
        sign | (e << 23) | ((m & 0x3FF) << 13)
    };
    f32::from_bits(bits)
}

#[inline(always)]
fn half<S: IDot>(_: S, b: &[u8], i: usize) -> f32 {
    f16_at(b, i)
}

/// The f16 with these bits.
#[inline(always)]
pub(crate) fn f16_from_bits(bits: u16) -> f32 {
    F16_TO_F32[usize::from(bits)]
}

/// The f16 at byte `i` of `b`.
#[inline(always)]
pub(crate) fn f16_at(b: &[u8], i: usize) -> f32 {
    F16_TO_F32[usize::from(u16::from_le_bytes([b[i], b[i + 1]]))]
}

/// A weight format with an integer row dot product.
pub(crate) trait IntFmt: 'static {
    /// Whether [`IntFmt::rows`] multiplies its rows together rather than one by one.
    const ROW_BLOCKS: bool = false;

    /// `w · x[t]` for the row in `bytes` (whole blocks) and every token; each `x[t]` covers
    /// at least the row's elements.
    fn row<S: IDot, const T: usize>(s: S, bytes: &[u8], x: &[XBlocks<'_>; T]) -> [f32; T];

    /// `w_r · x` for `R` rows of the same length and one token. Formats with
    /// [`IntFmt::ROW_BLOCKS`] walk the rows side by side, so each activation block comes from
    /// memory once for all of them.
    #[inline(always)]
    fn rows<S: IDot, const R: usize>(s: S, rows: [&[u8]; R], x: &XBlocks<'_>) -> [f32; R] {
        rows.map(|row| Self::row::<S, 1>(s, row, &[*x])[0])
    }
}

/// The 32-element formats: one block per activation block, its integers from `ints`, scaled
/// by `d` (the f16 at byte 0 unless given) and, for the formats with a minimum, offset by the
/// f16 at 2.
macro_rules! legacy {
    ($t:ty, $bytes:expr, min: $min:expr, |$s:ident, $b:ident| $ints:expr) => {
        legacy!($t, $bytes, min: $min, d: half($s, $b, 0), |$s, $b| $ints);
    };
    ($t:ty, $bytes:expr, min: $min:expr, d: $d:expr, |$s:ident, $b:ident| $ints:expr) => {
        impl IntFmt for $t {
            #[inline(always)]
            fn row<S: IDot, const T: usize>($s: S, bytes: &[u8], x: &[XBlocks<'_>; T]) -> [f32; T] {
                /// One block into chain `C`.
                #[inline(always)]
                fn one<S: IDot, const T: usize, const C: usize>(
                    $s: S,
                    acc: &mut Acc<S, T>,
                    x: &[XBlocks<'_>; T],
                    i: usize,
                    $b: &[u8; $bytes],
                ) {
                    acc.block_d::<C>($s, x, i, $ints, $d);
                    if $min {
                        acc.offset(x, i, half($s, $b, 2));
                    }
                }
                let (blocks, _) = bytes.as_chunks::<{ $bytes }>();
                assert!(x.iter().all(|x| x.q.len() >= blocks.len()), "activations shorter than the row");
                let mut acc = Acc::<S, T>::new($s);
                let (pairs, rest) = blocks.as_chunks::<2>();
                for (p, [b0, b1]) in pairs.iter().enumerate() {
                    one::<S, T, 0>($s, &mut acc, x, 2 * p, b0);
                    one::<S, T, 1>($s, &mut acc, x, 2 * p + 1, b1);
                }
                if let [b] = rest {
                    one::<S, T, 0>($s, &mut acc, x, blocks.len() - 1, b);
                }
                acc.finish($s)
            }
        }
    };
}

legacy!(Q4_0, 18, min: false, |s, b| s.w_sub(s.w_nibbles(at(b, 2)), 8));
legacy!(Q4_1, 20, min: true, |s, b| s.w_nibbles(at(b, 4)));
legacy!(Q5_0, 22, min: false, |s, b| {
    s.w_sub(s.w_add_bits(s.w_nibbles(at(b, 6)), u32::from_le_bytes(*at(b, 2)), 16), 16)
});
legacy!(Q5_1, 24, min: true, |s, b| s.w_add_bits(s.w_nibbles(at(b, 8)), u32::from_le_bytes(*at(b, 4)), 16));
legacy!(Q8_0, 34, min: false, |s, b| s.w_i8(at(b, 2)));
// The table formats: codes through a byte shuffle. MXFP4's doubled E2M1 values are integers in
// -12..=12 and its scale the halved power of two, so the product is exact like the others'.
legacy!(Mxfp4, 17, min: false, d: e8m0_to_fp32_half(b[0]), |s, b| s.w_table(&KVALUES_MXFP4, at(b, 1)));
legacy!(Iq4Nl, 18, min: false, |s, b| s.w_table(&KVALUES_IQ4NL, at(b, 2)));

impl IntFmt for Iq4Xs {
    /// Eight IQ4_NL runs per super-block, each with its 6-bit signed scale (folded into the
    /// i16 weights: |value · scale| <= 127 · 32, so eight runs' products against the wide
    /// activations sum inside i32), times the block's f16 once per super-block.
    #[inline(always)]
    fn row<S: IDot, const T: usize>(s: S, bytes: &[u8], x: &[XBlocks<'_>; T]) -> [f32; T] {
        let (blocks, _) = bytes.as_chunks::<136>();
        assert!(x.iter().all(|x| x.wide.d.len() >= blocks.len()), "activations shorter than the row");
        let mut acc = Acc::<S, T>::new(s);
        for (i, b) in blocks.iter().enumerate() {
            let d = half(s, b, 0);
            let (scales_h, scales_l) = (u16::from_le_bytes(*at(b, 2)), at::<4>(b, 4));
            let mut dots = [s.i_zero(); T];
            for r in 0..8 {
                let scale = iq4xs_scale(scales_h, scales_l, r) as i16;
                let w = s.w_mul(s.w_table(&KVALUES_IQ4NL, at(b, 8 + 16 * r)), scale);
                for (dot, x) in dots.iter_mut().zip(x) {
                    *dot = s.madd_acc(*dot, w, &x.wide.q[8 * i + r]);
                }
            }
            for (t, x) in x.iter().enumerate() {
                acc.v[t][i % 2] = s.acc(dots[t], d * x.wide.d[i], acc.v[t][i % 2]);
            }
        }
        acc.finish(s)
    }
}

/// Q4_K and Q5_K: eight 32-element sub-blocks with 6-bit scales and minimums; sub-blocks
/// `2c` and `2c + 1` are the low and high nibbles of the same 32 bytes (`HIGH_BITS`: plus one
/// bit each from the shared 32 bytes of `qh`). Against the wide activations the sub-blocks'
/// products, each scaled by its integer scale (|q · scale| <= 31 · 63, so eight of them stay
/// inside i32), add up as integers and meet the floats once per super-block:
/// `d · Σ_j scale_j (q_j · x_j) - dmin · Σ_j min_j Σ x_j`, in the activations' units.
/// `R` rows against `T` tokens: each row's weights are unpacked once for all tokens, and each
/// token's activations loaded once for all rows.
#[inline(always)]
fn k4_rows<S: IDot, const R: usize, const T: usize, const BYTES: usize, const HIGH_BITS: bool>(
    s: S,
    rows: [&[u8]; R],
    x: &[XBlocks<'_>; T],
) -> [[f32; T]; R] {
    let blocks = rows.map(|bytes| bytes.as_chunks::<BYTES>().0);
    let n = blocks[0].len();
    assert!(blocks.iter().all(|b| b.len() == n), "rows of one length");
    assert!(x.iter().all(|x| x.wide.d.len() >= n), "activations shorter than the row");
    let qs_at = if HIGH_BITS { 48 } else { 16 };
    let mut acc: [Acc<S, T>; R] = std::array::from_fn(|_| Acc::new(s));
    for i in 0..n {
        let b = blocks.map(|blocks| &blocks[i]);
        let scales = b.map(|b| super::kquants::scales_mins(at(b, 4)));
        let mut dots = [[s.i_zero(); T]; R];
        for c in 0..4 {
            for r in 0..R {
                let scale = |j: usize| i16::from((scales[r].0 >> (8 * j)) as u8);
                let q = s.w_u8(at(b[r], qs_at + 32 * c));
                let (mut lo, mut hi) = (s.w_and(q, 0x0F), s.w_shr(q, 4));
                if HIGH_BITS {
                    let qh = s.w_u8(at(b[r], 16));
                    let bit = |n: u32| s.w_shl(s.w_and(s.w_shr(qh, n), 1), 4);
                    lo = s.w_or(lo, bit(2 * c as u32));
                    hi = s.w_or(hi, bit(2 * c as u32 + 1));
                }
                let (lo, hi) = (s.w_mul(lo, scale(2 * c)), s.w_mul(hi, scale(2 * c + 1)));
                for (dot, x) in dots[r].iter_mut().zip(x) {
                    *dot = s.madd_acc(*dot, lo, &x.wide.q[8 * i + 2 * c]);
                    *dot = s.madd_acc(*dot, hi, &x.wide.q[8 * i + 2 * c + 1]);
                }
            }
        }
        for r in 0..R {
            let (d, dmin) = (half(s, b[r], 0), half(s, b[r], 2));
            for (t, x) in x.iter().enumerate() {
                let xd = x.wide.d[i];
                let sums = x.wide.sum[8 * i..8 * i + 8].try_into().expect("eight sub-blocks");
                acc[r].v[t][0] = s.acc(dots[r][t], d * xd, acc[r].v[t][0]);
                acc[r].v[t][1] = s.acc(s.bytes_dot8(scales[r].1, sums), -dmin * xd, acc[r].v[t][1]);
            }
        }
    }
    acc.map(|acc| acc.finish(s))
}

impl IntFmt for Q4K {
    const ROW_BLOCKS: bool = true;
    #[inline(always)]
    fn row<S: IDot, const T: usize>(s: S, bytes: &[u8], x: &[XBlocks<'_>; T]) -> [f32; T] {
        k4_rows::<S, 1, T, 144, false>(s, [bytes], x)[0]
    }
    #[inline(always)]
    fn rows<S: IDot, const R: usize>(s: S, rows: [&[u8]; R], x: &XBlocks<'_>) -> [f32; R] {
        k4_rows::<S, R, 1, 144, false>(s, rows, &[*x]).map(|[y]| y)
    }
}

impl IntFmt for Q5K {
    const ROW_BLOCKS: bool = true;
    #[inline(always)]
    fn row<S: IDot, const T: usize>(s: S, bytes: &[u8], x: &[XBlocks<'_>; T]) -> [f32; T] {
        k4_rows::<S, 1, T, 176, true>(s, [bytes], x)[0]
    }
    #[inline(always)]
    fn rows<S: IDot, const R: usize>(s: S, rows: [&[u8]; R], x: &XBlocks<'_>) -> [f32; R] {
        k4_rows::<S, R, 1, 176, true>(s, rows, &[*x]).map(|[y]| y)
    }
}

/// Q6_K: two 128-element halves; quarter `g` of a half takes the low (g < 2) or high nibbles
/// of 32 `ql` bytes and bits `2g, 2g + 1` of the half's 32 `qh` bytes, with one signed 8-bit
/// scale per 16 elements (folded into the i16 weights: |(q - 32) · scale| <= 4096, so the
/// eight sub-blocks' products against the wide activations, 2 · 4096 · 32767 a lane each,
/// sum inside i32 and meet the floats once per super-block). `R` rows against `T` tokens, as
/// [`k4_rows`].
#[inline(always)]
fn q6k_rows<S: IDot, const R: usize, const T: usize>(
    s: S,
    rows: [&[u8]; R],
    x: &[XBlocks<'_>; T],
) -> [[f32; T]; R] {
    let blocks = rows.map(|bytes| bytes.as_chunks::<210>().0);
    let n = blocks[0].len();
    assert!(blocks.iter().all(|b| b.len() == n), "rows of one length");
    assert!(x.iter().all(|x| x.wide.d.len() >= n), "activations shorter than the row");
    let mut acc: [Acc<S, T>; R] = std::array::from_fn(|_| Acc::new(s));
    for i in 0..n {
        let b = blocks.map(|blocks| &blocks[i]);
        let mut dots = [[s.i_zero(); T]; R];
        for n in 0..2 {
            for r in 0..R {
                let sc = |k: usize| i16::from(b[r][192 + k] as i8);
                let (ql_a, ql_b) = (s.w_u8(at(b[r], 64 * n)), s.w_u8(at(b[r], 64 * n + 32)));
                let qh = s.w_u8(at(b[r], 128 + 32 * n));
                let quarters = [
                    s.w_or(s.w_and(ql_a, 0x0F), s.w_and(s.w_shl(qh, 4), 0x30)),
                    s.w_or(s.w_and(ql_b, 0x0F), s.w_and(s.w_shl(qh, 2), 0x30)),
                    s.w_or(s.w_shr(ql_a, 4), s.w_and(qh, 0x30)),
                    s.w_or(s.w_shr(ql_b, 4), s.w_and(s.w_shr(qh, 2), 0x30)),
                ];
                for (g, q) in quarters.into_iter().enumerate() {
                    let k = 8 * n + 2 * g;
                    let w = s.w_mul2(s.w_sub(q, 32), sc(k), sc(k + 1));
                    for (dot, x) in dots[r].iter_mut().zip(x) {
                        *dot = s.madd_acc(*dot, w, &x.wide.q[8 * i + 4 * n + g]);
                    }
                }
            }
        }
        for r in 0..R {
            let d = half(s, b[r], 208);
            for (t, x) in x.iter().enumerate() {
                acc[r].v[t][i % 2] = s.acc(dots[r][t], d * x.wide.d[i], acc[r].v[t][i % 2]);
            }
        }
    }
    acc.map(|acc| acc.finish(s))
}

impl IntFmt for Q6K {
    const ROW_BLOCKS: bool = true;
    #[inline(always)]
    fn row<S: IDot, const T: usize>(s: S, bytes: &[u8], x: &[XBlocks<'_>; T]) -> [f32; T] {
        q6k_rows::<S, 1, T>(s, [bytes], x)[0]
    }
    #[inline(always)]
    fn rows<S: IDot, const R: usize>(s: S, rows: [&[u8]; R], x: &XBlocks<'_>) -> [f32; R] {
        q6k_rows::<S, R, 1>(s, rows, &[*x]).map(|[y]| y)
    }
}

/// The codebook types: a run's 32 bytes as [`Codebook::run`] makes them, less the bias. Where
/// a run's halves have their own multipliers these go into the i16 weights (|w| <= 43 · 31),
/// otherwise into the run's scale.
impl<C: Codebook> IntFmt for C {
    #[inline(always)]
    fn row<S: IDot, const T: usize>(s: S, bytes: &[u8], x: &[XBlocks<'_>; T]) -> [f32; T] {
        let blocks = bytes.chunks_exact(C::BYTES);
        assert!(x.iter().all(|x| x.q.len() >= 8 * blocks.len()), "activations shorter than the row");
        let mut acc = Acc::<S, T>::new(s);
        for (i, b) in blocks.enumerate() {
            let d = F16_TO_F32[usize::from(C::d_bits(b))];
            for r in (0..8).step_by(2) {
                codebook_run::<S, T, C, 0>(s, &mut acc, x, 8 * i + r, b, r, d);
                codebook_run::<S, T, C, 1>(s, &mut acc, x, 8 * i + r + 1, b, r + 1, d);
            }
        }
        acc.finish(s)
    }
}

/// Run `r` of block `b` (scale `d`) against activation block `xb`, into chain `K`.
#[inline(always)]
fn codebook_run<S: IDot, const T: usize, C: Codebook, const K: usize>(
    s: S,
    acc: &mut Acc<S, T>,
    x: &[XBlocks<'_>; T],
    xb: usize,
    b: &[u8],
    r: usize,
    d: f32,
) {
    let run = C::run(b, r);
    let mut w = s.w_i8(&bytemuck::cast(run.q));
    if C::BIAS != 0 {
        w = s.w_sub(w, C::BIAS);
    }
    if C::HALVES {
        acc.block_d::<K>(s, x, xb, s.w_mul2(w, run.mul[0], run.mul[1]), d * C::UNIT);
    } else {
        acc.block_d::<K>(s, x, xb, w, d * f32::from(run.mul[0]) * C::UNIT);
    }
}

/// Runs `$body` with `$f` naming the [`IntFmt`] type of `$ty`, or evaluates `$other`.
macro_rules! with_int_fmt {
    ($ty:expr, |$f:ident| $body:expr, $other:expr) => {
        $crate::cpu::quant::match_fmt!($ty, |$f| $body, $other, [
            Q4_0 => Q4_0, Q4_1 => Q4_1, Q5_0 => Q5_0, Q5_1 => Q5_1, Q8_0 => Q8_0, Q4_K => Q4K,
            Q5_K => Q5K, Q6_K => Q6K, MXFP4 => Mxfp4, IQ4_NL => Iq4Nl, IQ4_XS => Iq4Xs,
            IQ2_XXS => Iq2Xxs, IQ2_XS => Iq2Xs, IQ2_S => Iq2S, IQ3_XXS => Iq3Xxs, IQ3_S => Iq3S,
            IQ1_S => Iq1S, IQ1_M => Iq1M,
        ])
    };
}
pub(crate) use with_int_fmt;

/// How many activations share one i16 scale in the integer dot product of `ty` on `isa`: 256
/// (a whole super-block) for the formats that sum their sub-blocks as integers (the codebook
/// types where their gathered VNNI kernels run), 32 otherwise.
pub fn activation_block(isa: Isa, ty: wllm_loaders::GgmlType) -> usize {
    use wllm_loaders::GgmlType::*;
    match ty {
        Q4_K | Q5_K | Q6_K | IQ4_XS => QK,
        #[cfg(target_arch = "x86_64")]
        _ if isa.is_avx512_vnni() && super::vnni_iq::covers(ty) => QK,
        _ => QX,
    }
}

/// Whether rows of `ty` have an integer dot product.
pub(crate) fn has_int_dot(ty: wllm_loaders::GgmlType) -> bool {
    with_int_fmt!(ty, |F| super::listed::<F>(std::marker::PhantomData), false)
}

#[cfg(test)]
mod tests {
    /// The vector quantizer gives the scalar one's integers, scales and sums, ties and
    /// saturation included, for both groupings.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_quantizer_matches_the_scalar_one() {
        use super::{QK, QX, Quantized};
        if !std::arch::is_x86_feature_detected!("avx512bw") {
            eprintln!("no AVX-512 BW: nothing to compare");
            return;
        }
        let mut x: Vec<f32> = (0..4 * QK).map(|i| ((i * 7919 % 1013) as f32 - 506.0) * 0.37).collect();
        // A block of zeros, one of ties (the largest is 32767 steps, the others half steps),
        // one whose largest is negative, and tiny and huge magnitudes.
        x[..QX].fill(0.0);
        for (i, v) in x[QX..2 * QX].iter_mut().enumerate() {
            *v = if i == 0 { 32767.0 } else { i as f32 + 0.5 };
        }
        x[2 * QX + 5] = -1e6;
        x[3 * QX + 1] = 1e-30;
        x[5 * QX..6 * QX].fill(3e38);
        for group in [QX, QK] {
            let mut scalar = Quantized { q: Vec::new(), d: Vec::new(), sum: Vec::new() };
            scalar.extend(&x, group);
            let mut vector = Quantized { q: Vec::new(), d: Vec::new(), sum: Vec::new() };
            // SAFETY: AVX-512 BW checked above.
            unsafe { vector.extend_avx512(&x, group) };
            for (b, (v, s)) in vector.q.iter().zip(&scalar.q).enumerate() {
                assert_eq!(v, s, "group {group}: block {b}");
            }
            assert_eq!(vector.q.len(), scalar.q.len());
            assert_eq!(vector.sum, scalar.sum, "group {group}: sums");
            let bits = |d: &[f32]| d.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&vector.d), bits(&scalar.d), "group {group}: scales");
        }
    }

    #[test]
    fn round_even_rounds_like_the_library() {
        for i in -70_000..70_000 {
            let v = i as f32 * 0.49 + 0.25 * (i % 3) as f32;
            assert_eq!(super::round_even(v), v.round_ties_even(), "{v}");
        }
        for v in [0.5f32, 1.5, 2.5, -0.5, -2.5, 32766.5, -32767.5] {
            assert_eq!(super::round_even(v), v.round_ties_even(), "{v}");
        }
    }

    #[test]
    fn f16_table_matches_the_half_crate() {
        for h in 0..=u16::MAX {
            let (got, want) = (super::F16_TO_F32[usize::from(h)], half::f16::from_bits(h).to_f32());
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{h:#06x}: {got} vs {want}"
            );
        }
    }
}
