//! One-token Q4_K and Q6_K decode on AVX-512 VNNI: the weights' quants stay bytes, and the
//! i16 activations are split into a signed high byte and an unsigned low byte
//! (`x = 256 · hi + lo`), so `vpdpbusd` multiplies 64 of them per instruction at full i16
//! precision: the integers summed are exactly those of the i16 path.
//!
//! The i16 kernels spend, per 32 weights, a widening to i16, a multiply by the sub-block scale
//! (broadcast from a general register) and a multiply-add; here 64 weights take two
//! `vpdpbusd` and a shift, and the scales meet the sums once per 16 lanes (`vpmulld`), so a
//! super-block needs about half the instructions.

use std::arch::x86_64::*;

use wllm_loaders::GgmlType;

use super::int::{LONG_ROWS_FROM, QuantX, WideBlocks, f16_at};
use crate::cpu::linear::{OutPtr, WeightView, prefetch_ahead};

/// One token's activations in the byte form: per super-block the 256 high bytes then the 256
/// low bytes, in the element order of the format's 64-byte quant vectors.
pub(crate) struct SplitX<'a> {
    bytes: Vec<[u8; 512]>,
    /// The i16 activations split: their scales, and sums for Q4_K's minimums.
    wide: WideBlocks<'a>,
    /// `Σ q` of each 16-element sub-block, for Q6_K's offset of 32 (empty for Q4_K).
    sums16: Vec<[i32; 16]>,
    /// `Σ q` of each four elements, for the codebook types' byte bias (empty unless asked).
    sums4: Vec<[i32; 64]>,
    /// In a plane order ([`SplitX::planes`]): which, and per super-block `Σ q` over the
    /// elements that meet each 32-bit lane of the four vectors.
    planes: Option<(Planes, Vec<[i32; 16]>)>,
}

/// How a plane order lays out a super-block's elements for the table kernels, whose weight
/// vectors hold one value position of many grid entries (a plane).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Planes {
    /// IQ2_XXS's eight-value entries: vector `q` holds elements `8 g + 2 q` (bytes `g` < 32),
    /// then `8 g + 2 q + 1`: byte `g` meets value `2 q` (or `2 q + 1`) of group `g`.
    Eight,
    /// The IQ3 types' four-value entries: vector `j` holds elements `4 e + j`: byte `e` meets
    /// value `j` of entry `e`.
    Four,
}

impl Planes {
    /// The element at byte `p` (0..256) of a super-block.
    fn element(self, p: usize) -> usize {
        match self {
            Planes::Eight => {
                let (q, half, g) = (p / 64, (p % 64) / 32, p % 32);
                8 * g + 2 * q + half
            }
            Planes::Four => 4 * (p % 64) + p / 64,
        }
    }
}

/// The sums an activation's byte form carries besides the bytes.
#[derive(Clone, Copy, Default)]
pub(crate) struct Sums {
    /// Of each 16 elements (the packed Q6_K kernel's).
    pub(crate) of16: bool,
    /// Of each 4 elements (the codebook kernels').
    pub(crate) of4: bool,
}

/// The 32-element sub-blocks of a super-block in the order a format's quant vectors hold them.
/// Q4_K: a 64-byte load holds two 32-byte runs, whose low nibbles are sub-blocks `2c` of runs
/// `c` and `c + 1`, and whose high nibbles are the odd ones. Q6_K: in order.
fn order(ty: GgmlType) -> [usize; 8] {
    match ty {
        GgmlType::Q4_K => [0, 2, 1, 3, 4, 6, 5, 7],
        _ => NATURAL,
    }
}

const NATURAL: [usize; 8] = [0, 1, 2, 3, 4, 5, 6, 7];

impl<'a> SplitX<'a> {
    /// Token 0 of `xq` for rows of `ty`, when they are whole super-blocks.
    pub(crate) fn new(xq: &'a QuantX, ty: GgmlType) -> Option<SplitX<'a>> {
        let x = Self::in_order(xq, 0, order(ty))?;
        Some(if ty == GgmlType::Q6_K { x.with_sums16() } else { x })
    }

    /// Token `t` of `xq` with the bytes in element order, for the packed layout's kernels and
    /// the codebook ones, with the `sums` they read.
    pub(crate) fn natural(xq: &'a QuantX, t: usize, sums: Sums) -> Option<SplitX<'a>> {
        let mut x = Self::in_order(xq, t, NATURAL)?;
        if sums.of16 {
            x = x.with_sums16();
        }
        if sums.of4 {
            let sum4 = |sub: &[[i16; 32]]| -> [i32; 64] {
                std::array::from_fn(|k| sub[k / 8][4 * (k % 8)..][..4].iter().map(|&v| i32::from(v)).sum())
            };
            x.sums4 = x.wide.q.chunks_exact(8).map(sum4).collect();
        }
        Some(x)
    }

    /// With the sums of each 16-element sub-block (Q6_K's).
    fn with_sums16(mut self) -> Self {
        let sum16 = |sub: &[[i16; 32]]| -> [i32; 16] {
            std::array::from_fn(|k| sub[k / 2][16 * (k % 2)..][..16].iter().map(|&v| i32::from(v)).sum())
        };
        self.sums16 = self.wide.q.chunks_exact(8).map(sum16).collect();
        self
    }

    /// Token `t` of `xq` in the plane order `planes`, with its lane sums.
    pub(crate) fn planes(xq: &'a QuantX, t: usize, planes: Planes) -> Option<SplitX<'a>> {
        let mut x = Self::with_elements(xq, t, |p| planes.element(p))?;
        let lane_sums = x
            .wide
            .q
            .chunks_exact(8)
            .map(|sub| {
                let mut sums = [0i32; 16];
                for p in 0..256 {
                    let e = planes.element(p);
                    sums[(p % 64) / 4] += i32::from(sub[e / 32][e % 32]);
                }
                sums
            })
            .collect();
        x.planes = Some((planes, lane_sums));
        Some(x)
    }

    /// Per lane of the four vectors of super-block `i`, `Σ q` of the elements it meets
    /// ([`SplitX::planes`]).
    pub(crate) fn lane_sums(&self, i: usize) -> &[i32; 16] {
        &self.planes.as_ref().expect("a plane order").1[i]
    }

    /// Whether this is the plane order `planes`.
    pub(crate) fn is_planes(&self, planes: Planes) -> bool {
        self.planes.as_ref().is_some_and(|(p, _)| *p == planes)
    }

    fn in_order(xq: &'a QuantX, t: usize, order: [usize; 8]) -> Option<SplitX<'a>> {
        Self::with_elements(xq, t, |p| 32 * order[p / 32] + p % 32)
    }

    /// Token `t` of `xq` with byte `p` of each super-block holding element `element(p)`.
    fn with_elements(xq: &'a QuantX, t: usize, element: impl Fn(usize) -> usize) -> Option<SplitX<'a>> {
        let wide = xq.token(t).wide()?;
        let bytes = wide
            .q
            .chunks_exact(8)
            .map(|sub| {
                let mut out = [0u8; 512];
                for p in 0..256 {
                    let e = element(p);
                    let [lo, hi] = sub[e / 32][e % 32].to_le_bytes();
                    out[p] = hi;
                    out[256 + p] = lo;
                }
                out
            })
            .collect();
        Some(SplitX { bytes, wide, sums16: Vec::new(), sums4: Vec::new(), planes: None })
    }

    /// Super-blocks held.
    pub(crate) fn blocks(&self) -> usize {
        self.bytes.len()
    }

    /// Super-block `i`: its 256 high bytes, then its 256 low bytes.
    pub(crate) fn block(&self, i: usize) -> &[u8; 512] {
        &self.bytes[i]
    }

    /// `Σ q` of each 32-element sub-block.
    pub(crate) fn wide_sums(&self) -> &[i32] {
        self.wide.sum
    }

    /// `Σ q` of each 16-element sub-block of super-block `i`.
    pub(crate) fn sums16(&self, i: usize) -> &[i32; 16] {
        &self.sums16[i]
    }

    /// `Σ q` of each four elements of super-block `i`.
    pub(crate) fn sums4(&self, i: usize) -> &[i32; 64] {
        &self.sums4[i]
    }

    /// Whether the four-element sums are held.
    pub(crate) fn has_sums4(&self) -> bool {
        self.sums4.len() == self.bytes.len()
    }

    /// The scale of super-block `i`.
    pub(crate) fn wide_d(&self, i: usize) -> f32 {
        self.wide.d[i]
    }
}

/// Whether this CPU runs [`rows`].
pub(crate) fn available() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vnni")
        && is_x86_feature_detected!("avx2")
}

/// Bytes of a Q4_K and of a Q6_K super-block.
const Q4K_BYTES: usize = 144;
const Q6K_BYTES: usize = 210;

/// Eight rows per pass: a 7B model's down projections (4096 x 14336) took 47 ms per token
/// with four, 40 ms with eight (2 threads; one thread 17.3 vs 14.1 GB/s, row by row 8.5).
const BLOCKED_ROWS: usize = 8;

/// Rows `r0..r1` of `w` (Q4_K or Q6_K) against `x`, built for that type, into `out`.
///
/// # Safety
/// The CPU must have the features [`available`] checks.
pub(crate) unsafe fn rows(w: WeightView<'_>, r0: usize, r1: usize, x: &SplitX<'_>, out: OutPtr<'_>) {
    match w.ty {
        // SAFETY: the caller's guarantee.
        GgmlType::Q4_K => unsafe { rows_of(w, r0, r1, x, out, q4k_group::<1>, q4k_group::<BLOCKED_ROWS>) },
        GgmlType::Q6_K => unsafe { rows_of(w, r0, r1, x, out, q6k_group::<1>, q6k_group::<BLOCKED_ROWS>) },
        ty => unreachable!("{ty} has no VNNI kernel"),
    }
}

/// [`rows`] with `one` and `group` the format's kernel for one row and for [`BLOCKED_ROWS`].
#[inline(always)]
unsafe fn rows_of(
    w: WeightView<'_>,
    r0: usize,
    r1: usize,
    x: &SplitX<'_>,
    out: OutPtr<'_>,
    one: unsafe fn([&[u8]; 1], &SplitX<'_>) -> [f32; 1],
    group: unsafe fn([&[u8]; BLOCKED_ROWS], &SplitX<'_>) -> [f32; BLOCKED_ROWS],
) {
    let rb = w.row_bytes();
    assert!(x.wide.d.len() * w.ty.type_size() as usize >= rb, "activations shorter than the row");
    let row = |r: usize| &w.bytes[r * rb..(r + 1) * rb];
    let mut r = r0;
    if w.cols >= LONG_ROWS_FROM {
        while r + BLOCKED_ROWS <= r1 {
            for i in 0..BLOCKED_ROWS {
                prefetch_ahead(w.bytes, (r + i) * rb, rb, (r1 - r0) * rb);
            }
            // SAFETY: the caller's guarantee.
            let ys = unsafe { group(std::array::from_fn(|i| row(r + i)), x) };
            for (i, y) in ys.into_iter().enumerate() {
                out.write(r + i, y);
            }
            r += BLOCKED_ROWS;
        }
    }
    for r in r..r1 {
        prefetch_ahead(w.bytes, r * rb, rb, (r1 - r0) * rb);
        // SAFETY: as above.
        out.write(r, unsafe { one([row(r)], x) }[0]);
    }
}

/// The lanes of sub-blocks `a` (0..8) and `b` (8..16) in a 16-lane i32 vector.
const fn pair(a: i32, b: i32) -> [i32; 16] {
    [a, a, a, a, a, a, a, a, b, b, b, b, b, b, b, b]
}

/// `R` rows of whole Q4_K super-blocks against `x`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
fn q4k_group<const R: usize>(rows: [&[u8]; R], x: &SplitX<'_>) -> [f32; R] {
    // Sub-blocks of the four nibble vectors, in the lanes `vpdpbusd` sums them into.
    let pairs = [pair(0, 2), pair(1, 3), pair(4, 6), pair(5, 7)];
    // SAFETY: every load reads inside a slice bounds-checked just before (64 bytes of a
    // 144-byte block or of a 512-byte activation block, 8 sums of a super-block's 8).
    unsafe {
        let pairs = pairs.map(|p| _mm512_loadu_si512(p.as_ptr().cast()));
        let nibble = _mm512_set1_epi8(0x0F);
        let mut acc = [_mm512_setzero_ps(); R];
        let mut acc_min = [_mm256_setzero_ps(); R];
        for (i, xb) in x.bytes.iter().enumerate().take(rows[0].len() / Q4K_BYTES) {
            let load = |at: usize| _mm512_loadu_si512(xb[at..at + 64].as_ptr().cast());
            let hi = [load(0), load(64), load(128), load(192)];
            let lo = [load(256), load(320), load(384), load(448)];
            let sums = _mm256_loadu_si256(x.wide.sum[8 * i..8 * i + 8].as_ptr().cast());
            let xd = x.wide.d[i];
            for r in 0..R {
                let b: &[u8; Q4K_BYTES] =
                    rows[r][Q4K_BYTES * i..Q4K_BYTES * (i + 1)].try_into().expect("one block");
                let (scales, mins) = super::kquants::scales_mins(b[4..16].try_into().expect("12 bytes"));
                let scales = _mm512_cvtepu8_epi32(_mm_cvtsi64_si128(scales as i64));
                let q0 = _mm512_loadu_si512(b[16..16 + 64].as_ptr().cast());
                let q1 = _mm512_loadu_si512(b[80..144].as_ptr().cast());
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

/// The lanes of 16-element sub-blocks `4m..4m + 4` (four lanes each) in a 16-lane i32 vector.
const fn quad(m: i32) -> [i32; 16] {
    let mut out = [0; 16];
    let mut l = 0;
    while l < 16 {
        out[l] = 4 * m + l as i32 / 4;
        l += 1;
    }
    out
}

/// `R` rows of whole Q6_K super-blocks against `x`. Half `n` of a block is one 64-byte load of
/// `ql` (its low nibbles are elements `128n..128n + 64`, its high nibbles the next 64) and 32
/// bytes of `qh` (two bits per element, shifted into place per 32-byte half). The quants are
/// taken unsigned (0..64) and the offset of 32 comes off once per block, through the
/// activations' 16-element sums; a lane of one vector holds at most 4 · 63 · 32767 · 128
/// (scales are i8), so two vectors share an i32 accumulator.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
fn q6k_group<const R: usize>(rows: [&[u8]; R], x: &SplitX<'_>) -> [f32; R] {
    let quads = [quad(0), quad(1), quad(2), quad(3)];
    // Per 16-bit lane: the first 256 bits (the first 32-byte half) and the second.
    let halves = |a: i16, b: i16| [[a; 16], [b; 16]];
    let (low_shift, high_shift) = (halves(4, 2), halves(0, 2));
    // SAFETY: every load reads inside a slice bounds-checked just before (64 or 32 bytes of a
    // 210-byte block, 16 of its scales, 64 bytes of a 512-byte activation block).
    unsafe {
        let quads = quads.map(|q| _mm512_loadu_si512(q.as_ptr().cast()));
        let low_shift = _mm512_loadu_si512(low_shift.as_ptr().cast());
        let high_shift = _mm512_loadu_si512(high_shift.as_ptr().cast());
        let (nibble, top) = (_mm512_set1_epi8(0x0F), _mm512_set1_epi8(0x30));
        let mut acc = [_mm512_setzero_ps(); R];
        for (i, xb) in x.bytes.iter().enumerate().take(rows[0].len() / Q6K_BYTES) {
            let load = |at: usize| _mm512_loadu_si512(xb[at..at + 64].as_ptr().cast());
            let hi = [load(0), load(64), load(128), load(192)];
            let lo = [load(256), load(320), load(384), load(448)];
            let sums16 = _mm512_loadu_si512(x.sums16[i].as_ptr().cast());
            let xd = x.wide.d[i];
            for r in 0..R {
                let b: &[u8; Q6K_BYTES] =
                    rows[r][Q6K_BYTES * i..Q6K_BYTES * (i + 1)].try_into().expect("one block");
                let scales = _mm512_cvtepi8_epi32(_mm_loadu_si128(b[192..208].as_ptr().cast()));
                let mut dots = [_mm512_setzero_si512(); 2];
                for n in 0..2 {
                    let ql = _mm512_loadu_si512(b[64 * n..64 * n + 64].as_ptr().cast());
                    let qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(
                        b[128 + 32 * n..160 + 32 * n].as_ptr().cast(),
                    ));
                    let w = [
                        _mm512_or_si512(
                            _mm512_and_si512(ql, nibble),
                            _mm512_and_si512(_mm512_sllv_epi16(qh, low_shift), top),
                        ),
                        _mm512_or_si512(
                            _mm512_and_si512(_mm512_srli_epi16::<4>(ql), nibble),
                            _mm512_and_si512(_mm512_srlv_epi16(qh, high_shift), top),
                        ),
                    ];
                    for (h, w) in w.into_iter().enumerate() {
                        let m = 2 * n + h;
                        let high = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, hi[m]);
                        let whole = _mm512_dpbusd_epi32(_mm512_slli_epi32::<8>(high), lo[m], w);
                        let scale = _mm512_permutexvar_epi32(quads[m], scales);
                        dots[h] = _mm512_add_epi32(dots[h], _mm512_mullo_epi32(whole, scale));
                    }
                }
                let d = f16_at(b, 208) * xd;
                let offset = _mm512_cvtepi32_ps(_mm512_mullo_epi32(scales, sums16));
                let sum = _mm512_add_ps(_mm512_cvtepi32_ps(dots[0]), _mm512_cvtepi32_ps(dots[1]));
                acc[r] = _mm512_fmadd_ps(
                    _mm512_fnmadd_ps(offset, _mm512_set1_ps(32.0), sum),
                    _mm512_set1_ps(d),
                    acc[r],
                );
            }
        }
        acc.map(|acc| _mm512_reduce_add_ps(acc))
    }
}
