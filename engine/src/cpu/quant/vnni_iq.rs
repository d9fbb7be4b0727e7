//! Decode (one to four tokens) of the codebook types IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS and
//! IQ3_S on AVX-512 VNNI.
//!
//! The i16 path builds a run's 32 weights with scalar table reads (four grid entries, four
//! sign masks), about 15 cycles per run, four times the multiply-adds' worth: a 7B-shaped
//! IQ2_XXS file decoded at half of llama.cpp's speed. Here the weights stay bytes, each its
//! signed grid value (at most 62 in magnitude) plus 64, a valid operand on either side of
//! `vpdpbusd`; the i16 activations are split into a signed high and an unsigned low byte as in
//! `quant::vnni`, and the bias comes off through sums of the activations, so the integers
//! summed are exactly `Σ value · x` of the i16 path. A super-block's grid values come from byte
//! tables (`vpermi2b`, with AVX-512 VBMI: IQ2_XXS, IQ3_XXS, IQ3_S) or from gathers of whole
//! entries (the others), its signs from computed masks. A run's (or half-run's) odd multiplier
//! meets the integer sums once per lane, and the super-block meets the floats once.

use std::arch::x86_64::*;

use wllm_loaders::GgmlType;
use wllm_loaders::quant::iq_grids::{IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID, IQ3S_GRID, IQ3XXS_GRID};

use super::int::f16_from_bits;
use super::iq::{Codebook, Iq2S, Iq2Xs, Iq2Xxs, Iq3S, Iq3Xxs};
use super::vnni::{Planes, SplitX};
use crate::cpu::linear::{OutPtr, WeightView, each_row};

/// Whether `ty` has a kernel here.
pub(crate) fn covers(ty: GgmlType) -> bool {
    use GgmlType::*;
    // The IQ1 types' one gather per 64 weights costs as much as their scalar reads on the
    // i16 path, or more (4096 x 4096 on 2 threads: IQ1_S 0.89 vs 0.72 ms, IQ1_M 1.05-1.19 vs
    // 1.21-1.30 for one token and no better for four), so they stay there.
    matches!(ty, IQ2_XXS | IQ2_XS | IQ2_S | IQ3_XXS | IQ3_S)
}

/// A super-block as four vectors of 64 biased weight bytes (element order) and, for each, the
/// odd multiplier of each of its 16 four-byte lanes (lane `l` holds weights `4l..4l + 4`).
type Weights = [(__m512i, __m512i); 4];

/// How a codebook type's super-block becomes [`Weights`].
trait Gathered: Codebook {
    /// # Safety
    /// The CPU must have the features [`rows`] enables; `b` is one whole block.
    unsafe fn weights(b: &[u8]) -> Weights;
}

/// Rows `r0..r1` of `w` (a type [`covers`] names) against the `T` tokens `x`, into `out`
/// (token-major): by the table kernel when `x` is in the type's plane order
/// ([`SplitX::planes`]), otherwise by gathers, `x` then in element order with the
/// four-element sums ([`SplitX::natural`]).
///
/// # Safety
/// The CPU must have the features `quant::vnni::available` checks, and AVX-512 VBMI
/// ([`planes_available`]) for a plane order.
pub(crate) unsafe fn rows<const T: usize>(
    w: WeightView<'_>,
    r0: usize,
    r1: usize,
    x: [&SplitX<'_>; T],
    out: OutPtr<'_>,
) {
    use GgmlType::*;
    let planes = x.iter().all(|x| plane_order(w.ty).is_some_and(|order| x.is_planes(order)));
    let blocks = w.row_bytes() / w.ty.type_size() as usize;
    assert!(
        x.iter().all(|x| x.blocks() >= blocks && (planes || x.has_sums4())),
        "activations shorter than the row, or without their sums"
    );
    // SAFETY (every arm): the caller's guarantee.
    match w.ty {
        IQ2_XXS if planes => each_row(w, r0, r1, out, |row| unsafe { planes_row::<Iq2Xxs, T>(row, x) }),
        IQ3_XXS if planes => each_row(w, r0, r1, out, |row| unsafe { planes_row::<Iq3Xxs, T>(row, x) }),
        IQ3_S if planes => each_row(w, r0, r1, out, |row| unsafe { planes_row::<Iq3S, T>(row, x) }),
        IQ2_XXS => each_row(w, r0, r1, out, |row| unsafe { row_dot::<Iq2Xxs, T>(row, x) }),
        IQ2_XS => each_row(w, r0, r1, out, |row| unsafe { row_dot::<Iq2Xs, T>(row, x) }),
        IQ2_S => each_row(w, r0, r1, out, |row| unsafe { row_dot::<Iq2S, T>(row, x) }),
        IQ3_XXS => each_row(w, r0, r1, out, |row| unsafe { row_dot::<Iq3Xxs, T>(row, x) }),
        IQ3_S => each_row(w, r0, r1, out, |row| unsafe { row_dot::<Iq3S, T>(row, x) }),
        ty => unreachable!("{ty} has no VNNI codebook kernel"),
    }
}

/// One row of whole blocks against each token of `x`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
fn row_dot<C: Gathered, const T: usize>(row: &[u8], x: [&SplitX<'_>; T]) -> [f32; T] {
    // SAFETY: the loads read 64 bytes at `64 k` and `256 + 64 k` (k < 4) of a 512-byte
    // activation block and 16 sums at `16 k` of a block's 64; `weights` gets one whole block.
    unsafe {
        let mut acc = [_mm512_setzero_ps(); T];
        for (i, b) in row.chunks_exact(C::BYTES).enumerate() {
            let weights = C::weights(b);
            let d = f16_from_bits(C::d_bits(b)) * C::UNIT;
            for t in 0..T {
                let (xb, x4) = (x[t].block(i), x[t].sums4(i));
                let load = |at: usize| _mm512_loadu_si512(xb[at..at + 64].as_ptr().cast());
                let mut sum = _mm512_setzero_si512();
                for (k, &(bytes, mul)) in weights.iter().enumerate() {
                    // A lane: four products of |value| <= 62 with |x| <= 32767 (8.1e6), times a
                    // multiplier <= 31, four vectors: 1.0e9 < 2^31.
                    let hi = _mm512_dpbusd_epi32(_mm512_setzero_si512(), bytes, load(64 * k));
                    let lo = _mm512_dpbusd_epi32(_mm512_setzero_si512(), load(256 + 64 * k), bytes);
                    let bias =
                        _mm512_slli_epi32::<6>(_mm512_loadu_si512(x4[16 * k..16 * k + 16].as_ptr().cast()));
                    let value = _mm512_sub_epi32(_mm512_add_epi32(_mm512_slli_epi32::<8>(hi), lo), bias);
                    sum = _mm512_add_epi32(sum, _mm512_mullo_epi32(value, mul));
                }
                acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_set1_ps(d * x[t].wide_d(i)), acc[t]);
            }
        }
        acc.map(|a| _mm512_reduce_add_ps(a))
    }
}

/// Where vector `k`'s lanes take their multipliers from: run `2k + l / 8` of eight per-run
/// values, which sit in the 32-bit lanes `first + stride · run` of `values`; or half-run
/// `4k + l / 4` of sixteen (lanes `0..16` of `per_half`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
fn spread_runs(values: __m512i, first: i32, stride: i32) -> [__m512i; 4] {
    std::array::from_fn(|k| {
        let (a, b) = (first + stride * 2 * k as i32, first + stride * (2 * k as i32 + 1));
        _mm512_permutexvar_epi32(_mm512_setr_epi32(a, a, a, a, a, a, a, a, b, b, b, b, b, b, b, b), values)
    })
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
fn spread_halves(per_half: __m512i) -> [__m512i; 4] {
    std::array::from_fn(|k| {
        let h = 4 * k as i32;
        let (a, b, c, d) = (h, h + 1, h + 2, h + 3);
        _mm512_permutexvar_epi32(_mm512_setr_epi32(a, a, a, a, b, b, b, b, c, c, c, c, d, d, d, d), per_half)
    })
}

/// `2 s + 1` of each 32-bit lane's low four bits.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
fn odd(s: __m512i) -> __m512i {
    let s = _mm512_and_si512(s, _mm512_set1_epi32(15));
    _mm512_or_si512(_mm512_add_epi32(s, s), _mm512_set1_epi32(1))
}

/// Grid bytes with the bits of `negative` (one per byte) as signs, plus 64.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
fn signed_bits(grid: __m512i, negative: u64) -> __m512i {
    let bias = _mm512_set1_epi8(64);
    _mm512_mask_sub_epi8(_mm512_add_epi8(grid, bias), negative, bias, grid)
}

/// Eight entries of a u64 table by the eight 64-bit lanes of `idx`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn gather64(table: &'static [u64], idx: __m512i) -> __m512i {
    // SAFETY: the caller masks every index below the table's length.
    unsafe { _mm512_i64gather_epi64::<8>(idx, table.as_ptr().cast()) }
}

/// Sixteen entries of a u32 table by the sixteen 32-bit lanes of `idx`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn gather32(table: &'static [u32], idx: __m512i) -> __m512i {
    // SAFETY: as `gather64`.
    unsafe { _mm512_i32gather_epi32::<4>(idx, table.as_ptr().cast()) }
}

/// The negative bits of eight groups (bit `8 m + j`: weight `j` of the group in 64-bit lane
/// `m`) from the 7-bit sign fields in the lanes' low bits; the eighth sign is the field's
/// parity. Computed, not looked up: a gather of the eight masks cost more than the grid's.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
fn negative7(fields: __m512i) -> u64 {
    let field = _mm512_and_si512(fields, _mm512_set1_epi64(127));
    let mut parity = _mm512_xor_si512(field, _mm512_srli_epi64::<4>(field));
    parity = _mm512_xor_si512(parity, _mm512_srli_epi64::<2>(parity));
    parity = _mm512_xor_si512(parity, _mm512_srli_epi64::<1>(parity));
    let sign = _mm512_or_si512(field, _mm512_slli_epi64::<7>(_mm512_and_si512(parity, _mm512_set1_epi64(1))));
    // Each lane's sign byte in all eight of its bytes, then one bit per byte.
    // (`vpshufb` indexes within each 128-bit lane: its odd 64-bit lane starts at byte 8.)
    let odd = 0x0808_0808_0808_0808;
    let spread = _mm512_shuffle_epi8(sign, _mm512_setr_epi64(0, odd, 0, odd, 0, odd, 0, odd));
    _mm512_test_epi8_mask(spread, _mm512_set1_epi64(0x8040_2010_0804_0201u64 as i64))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
fn load512(b: &[u8], at: usize) -> __m512i {
    // SAFETY: a bounds-checked slice of 64 bytes.
    unsafe { _mm512_loadu_si512(b[at..at + 64].as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
fn load128(b: &[u8], at: usize) -> __m128i {
    // SAFETY: a bounds-checked slice of 16 bytes.
    unsafe { _mm_loadu_si128(b[at..at + 16].as_ptr().cast()) }
}

#[inline(always)]
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

#[inline(always)]
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// Eight bytes at `at` as the eight 64-bit lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
fn bytes_to_lanes64(b: &[u8], at: usize) -> __m512i {
    _mm512_cvtepu8_epi64(_mm_cvtsi64_si128(u64_at(b, at) as i64))
}

/// Per-half multipliers from eight bytes of two nibbles each (low nibble first half).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
fn nibble_halves(b: &[u8], at: usize) -> [__m512i; 4] {
    let bytes = bytes_to_lanes64(b, at);
    let both = _mm512_or_si512(bytes, _mm512_slli_epi64::<32>(bytes));
    let nibbles = _mm512_srlv_epi32(both, _mm512_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4));
    spread_halves(odd(nibbles))
}

/// The eight 64-bit lanes of vector `k` of a super-block whose runs keep a 64-bit word each
/// (lanes `r` of `words`): run `2k`'s word four times, then run `2k + 1`'s.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
fn run_words(words: __m512i, k: usize) -> __m512i {
    let (a, b) = (2 * k as i64, 2 * k as i64 + 1);
    _mm512_permutexvar_epi64(_mm512_setr_epi64(a, a, a, a, b, b, b, b), words)
}

impl Gathered for Iq2Xxs {
    /// Per run at `2 + 8 r`: four grid index bytes, then four 7-bit sign fields and the scale.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
    unsafe fn weights(b: &[u8]) -> Weights {
        // SAFETY: the caller's features; indices are bytes (256 entries).
        unsafe {
            let words = load512(b, 2);
            let muls = spread_runs(odd(_mm512_srli_epi32::<28>(words)), 1, 2);
            std::array::from_fn(|k| {
                let run = run_words(words, k);
                let idx = _mm512_and_si512(
                    _mm512_srlv_epi64(run, _mm512_setr_epi64(0, 8, 16, 24, 0, 8, 16, 24)),
                    _mm512_set1_epi64(255),
                );
                let negative =
                    negative7(_mm512_srlv_epi64(run, _mm512_setr_epi64(32, 39, 46, 53, 32, 39, 46, 53)));
                (signed_bits(gather64(&IQ2XXS_GRID, idx), negative), muls[k])
            })
        }
    }
}

impl Gathered for Iq3Xxs {
    /// Eight index bytes per run at 2 (four-value entries), and at 66 a u32 per run: four
    /// 7-bit sign fields and the scale.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
    unsafe fn weights(b: &[u8]) -> Weights {
        // SAFETY: the caller's features; indices are bytes (256 entries).
        unsafe {
            let aux = _mm256_loadu_si256(b[66..98].as_ptr().cast());
            let muls = spread_runs(odd(_mm512_castsi256_si512(_mm256_srli_epi32::<28>(aux))), 0, 1);
            let words = _mm512_cvtepu32_epi64(aux);
            std::array::from_fn(|k| {
                let grid = gather32(&IQ3XXS_GRID, _mm512_cvtepu8_epi32(load128(b, 2 + 16 * k)));
                let fields =
                    _mm512_srlv_epi64(run_words(words, k), _mm512_setr_epi64(0, 7, 14, 21, 0, 7, 14, 21));
                (signed_bits(grid, negative7(fields)), muls[k])
            })
        }
    }
}

impl Gathered for Iq2Xs {
    /// A u16 per group at 2 (9-bit grid index, 7-bit sign field), a scale byte per run at 66.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
    unsafe fn weights(b: &[u8]) -> Weights {
        // SAFETY: the caller's features; indices masked to 9 bits, fields to 7.
        unsafe {
            let muls = nibble_halves(b, 66);
            std::array::from_fn(|k| {
                let groups = _mm512_cvtepu16_epi64(load128(b, 2 + 16 * k));
                let grid = gather64(&IQ2XS_GRID, _mm512_and_si512(groups, _mm512_set1_epi64(511)));
                (signed_bits(grid, negative7(_mm512_srli_epi64::<9>(groups))), muls[k])
            })
        }
    }
}

impl Gathered for Iq2S {
    /// Low index bytes at 2, sign bytes at 34, two high index bits per group at 66 (a byte
    /// per run), a scale byte per run at 74.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
    unsafe fn weights(b: &[u8]) -> Weights {
        // SAFETY: the caller's features; indices are 10 bits (1024 entries).
        unsafe {
            let muls = nibble_halves(b, 74);
            std::array::from_fn(|k| {
                let high = _mm512_set1_epi64(i64::from(u16::from_le_bytes([b[66 + 2 * k], b[67 + 2 * k]])));
                let high = _mm512_and_si512(
                    _mm512_srlv_epi64(high, _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14)),
                    _mm512_set1_epi64(3),
                );
                let idx = _mm512_or_si512(bytes_to_lanes64(b, 2 + 8 * k), _mm512_slli_epi64::<8>(high));
                (signed_bits(gather64(&IQ2S_GRID, idx), u64_at(b, 34 + 8 * k)), muls[k])
            })
        }
    }
}

impl Gathered for Iq3S {
    /// Low index bytes at 2 (four-value entries), one high bit per entry at 66, sign bytes at
    /// 74, a scale nibble per run at 106.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
    unsafe fn weights(b: &[u8]) -> Weights {
        // SAFETY: the caller's features; indices are 9 bits (512 entries).
        unsafe {
            let scales = _mm512_srlv_epi32(
                _mm512_set1_epi32(u32_at(b, 106) as i32),
                _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 0, 0, 0, 0, 0, 0, 0),
            );
            let muls = spread_runs(odd(scales), 0, 1);
            std::array::from_fn(|k| {
                let high = u16::from_le_bytes([b[66 + 2 * k], b[67 + 2 * k]]);
                let idx = _mm512_or_si512(
                    _mm512_cvtepu8_epi32(load128(b, 2 + 16 * k)),
                    _mm512_maskz_set1_epi32(high, 256),
                );
                (signed_bits(gather32(&IQ3S_GRID, idx), u64_at(b, 74 + 8 * k)), muls[k])
            })
        }
    }
}

/// A grid as byte tables, one per value position in an entry: byte `i` of table `j` is
/// value `j` of entry `i`, so one value of 64 entries is a few `vpermi2b` lookups.
#[repr(align(64))]
struct ByteTables<const J: usize, const N: usize>([[u8; N]; J]);

/// The byte tables of a grid whose entries hold their `J` values in bytes.
macro_rules! byte_tables {
    ($grid:expr, $j:literal, $n:literal) => {{
        let mut tables = [[0u8; $n]; $j];
        let mut i = 0;
        while i < $n {
            let mut j = 0;
            while j < $j {
                tables[j][i] = ($grid[i] as u64 >> (8 * j)) as u8;
                j += 1;
            }
            i += 1;
        }
        ByteTables(tables)
    }};
}

static IQ2XXS_TABLES: ByteTables<8, 256> = byte_tables!(IQ2XXS_GRID, 8, 256);
static IQ3XXS_TABLES: ByteTables<4, 256> = byte_tables!(IQ3XXS_GRID, 4, 256);
static IQ3S_TABLES: ByteTables<4, 512> = byte_tables!(IQ3S_GRID, 4, 512);

/// Whether this CPU runs the table kernels (byte permutes, AVX-512 VBMI, besides the features
/// `quant::vnni::available` checks).
pub(crate) fn planes_available() -> bool {
    is_x86_feature_detected!("avx512vbmi")
}

/// The plane order `ty`'s table kernel reads its activations in, where it has one.
pub(crate) fn plane_order(ty: GgmlType) -> Option<Planes> {
    match ty {
        GgmlType::IQ2_XXS => Some(Planes::Eight),
        GgmlType::IQ3_XXS | GgmlType::IQ3_S => Some(Planes::Four),
        _ => None,
    }
}

/// A super-block as four vectors of biased weight bytes in a plane order ([`Planes`]), and
/// the multipliers of their lanes (the same for all four: a lane holds one run's weights).
type PlaneWeights = ([__m512i; 4], __m512i);

/// How a codebook type's super-block becomes [`PlaneWeights`] through byte tables.
trait Planed: Codebook {
    /// # Safety
    /// The CPU must have the features [`planes_row`] enables; `b` is one whole block.
    unsafe fn planes(b: &[u8]) -> PlaneWeights;
}

/// One row of a type [`plane_order`] names against each token of `x`, in that plane order.
///
/// No gathers: the grid indices look up each value position of their entries in a byte table
/// ([`ByteTables`]), so the weights come out in planes (one value of many entries) and the
/// activations were laid out to match. The lanes of `vpdpbusd` then each sum one run's
/// weights, so the run multipliers and the bias meet the sums once per super-block.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi,avx2,fma,f16c")]
fn planes_row<C: Planed, const T: usize>(row: &[u8], x: [&SplitX<'_>; T]) -> [f32; T] {
    let mut acc = [_mm512_setzero_ps(); T];
    for (i, b) in row.chunks_exact(C::BYTES).enumerate() {
        // SAFETY: the features are this function's; `b` is one block.
        let (weights, muls) = unsafe { C::planes(b) };
        let d = f16_from_bits(C::d_bits(b)) * C::UNIT;
        for t in 0..T {
            let xb = x[t].block(i);
            let (mut hi, mut lo) = (_mm512_setzero_si512(), _mm512_setzero_si512());
            for (q, &u) in weights.iter().enumerate() {
                hi = _mm512_dpbusd_epi32(hi, u, load512(xb, 64 * q));
                lo = _mm512_dpbusd_epi32(lo, load512(xb, 256 + 64 * q), u);
            }
            // A lane: 16 products of |value| <= 62 with |x| <= 32767 (3.3e7), times a
            // multiplier <= 31: 1.0e9 < 2^31 (the biased high sums: 16 · 126 · 128 · 256).
            // SAFETY: 16 i32 of a 16-element array.
            let sums = unsafe { _mm512_loadu_si512(x[t].lane_sums(i).as_ptr().cast()) };
            let value = _mm512_sub_epi32(
                _mm512_add_epi32(_mm512_slli_epi32::<8>(hi), lo),
                _mm512_slli_epi32::<6>(sums),
            );
            let sum = _mm512_mullo_epi32(value, muls);
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_set1_ps(d * x[t].wide_d(i)), acc[t]);
        }
    }
    acc.map(|a| _mm512_reduce_add_ps(a))
}

/// Byte `k` of the result: byte `idx[k]` of a 256-byte table (`upper`: bit 7 of each index).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi,avx2,fma,f16c")]
fn lookup256(table: &[u8], idx: __m512i, upper: __mmask64) -> __m512i {
    let part = |at: usize| load512(table, at);
    let low = _mm512_permutex2var_epi8(part(0), idx, part(64));
    let high = _mm512_permutex2var_epi8(part(128), idx, part(192));
    _mm512_mask_blend_epi8(upper, low, high)
}

/// The 32 groups' sign bytes (bit `j`: value `j` negative) from a super-block's eight run
/// words of IQ2_XXS and IQ3_XXS: four 7-bit fields each, the eighth sign their parity.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi,avx2,fma,f16c")]
fn signs7(aux: __m256i) -> __m256i {
    let field = |shift: i32, mask: i32| {
        _mm256_and_si256(_mm256_sllv_epi32(aux, _mm256_set1_epi32(shift)), _mm256_set1_epi32(mask))
    };
    // Field `l` of a run word moved to byte `l` (from bit 7 l to bit 8 l).
    let bytes = _mm256_or_si256(
        _mm256_or_si256(field(0, 0x7F), field(1, 0x7F00)),
        _mm256_or_si256(field(2, 0x7F_0000), field(3, 0x7F00_0000)),
    );
    // Bit 0 of each byte becomes its parity: the shifts pull in the next byte's bits only
    // above the bits each step keeps.
    let mut parity = _mm256_xor_si256(bytes, _mm256_srli_epi32::<4>(bytes));
    parity = _mm256_xor_si256(parity, _mm256_srli_epi32::<2>(parity));
    parity = _mm256_xor_si256(parity, _mm256_srli_epi32::<1>(parity));
    let top = _mm256_slli_epi32::<7>(_mm256_and_si256(parity, _mm256_set1_epi32(0x0101_0101)));
    _mm256_or_si256(bytes, top)
}

/// Per four-value entry (byte `e`), the four signs of its values: the low or the high half of
/// group `e / 2`'s sign byte.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi,avx2,fma,f16c")]
fn entry_signs(groups: __m256i) -> __m512i {
    let words = _mm512_cvtepu8_epi16(groups);
    _mm512_or_si512(
        _mm512_and_si512(words, _mm512_set1_epi16(0x0F)),
        _mm512_and_si512(_mm512_slli_epi16::<4>(words), _mm512_set1_epi16(0x0F00)),
    )
}

/// Four planes of 64 four-value entries, the signs of plane `j` in bit `j` of `signs`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi,avx2,fma,f16c")]
fn signed_planes(plane: impl Fn(usize) -> __m512i, signs: __m512i) -> [__m512i; 4] {
    std::array::from_fn(|j| signed_bits(plane(j), _mm512_test_epi8_mask(signs, _mm512_set1_epi8(1 << j))))
}

/// Lane `l` of four-value planes holds entries `4 l..4 l + 4`: run `l / 2`'s, of the eight
/// per-run multipliers in lanes `0..8` of `per_run`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi,avx2,fma,f16c")]
fn entry_lanes(per_run: __m512i) -> __m512i {
    _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7), per_run)
}

impl Planed for Iq2Xxs {
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi,avx2,fma,f16c")]
    unsafe fn planes(b: &[u8]) -> PlaneWeights {
        // The 32 index bytes to the low half, the eight run words to the high one.
        let split = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
        let words = _mm512_permutexvar_epi32(split, load512(b, 2));
        let aux = _mm512_extracti64x4_epi64::<1>(words);
        let upper = _mm512_movepi8_mask(words);
        let signs = signs7(aux);
        let signs = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(signs), signs);
        // Lane `l` holds groups `4 (l % 8)..`: run `l % 8`.
        let muls = _mm512_permutexvar_epi32(
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7),
            odd(_mm512_castsi256_si512(_mm256_srli_epi32::<28>(aux))),
        );
        let weights = std::array::from_fn(|q| {
            let plane = |j: usize| lookup256(&IQ2XXS_TABLES.0[j], words, upper);
            let pair = _mm512_inserti64x4::<1>(plane(2 * q), _mm512_castsi512_si256(plane(2 * q + 1)));
            let bit = |j: usize| _mm512_set1_epi8(1 << j);
            let which = _mm512_mask_blend_epi8(0xFFFF_FFFF_0000_0000, bit(2 * q), bit(2 * q + 1));
            signed_bits(pair, _mm512_test_epi8_mask(signs, which))
        });
        (weights, muls)
    }
}

impl Planed for Iq3Xxs {
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi,avx2,fma,f16c")]
    unsafe fn planes(b: &[u8]) -> PlaneWeights {
        let idx = load512(b, 2);
        let upper = _mm512_movepi8_mask(idx);
        // SAFETY: 32 bytes of the block.
        let aux = unsafe { _mm256_loadu_si256(b[66..98].as_ptr().cast()) };
        let muls = entry_lanes(odd(_mm512_castsi256_si512(_mm256_srli_epi32::<28>(aux))));
        let plane = |j: usize| lookup256(&IQ3XXS_TABLES.0[j], idx, upper);
        (signed_planes(plane, entry_signs(signs7(aux))), muls)
    }
}

impl Planed for Iq3S {
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi,avx2,fma,f16c")]
    unsafe fn planes(b: &[u8]) -> PlaneWeights {
        let idx = load512(b, 2);
        let (upper, ninth) = (_mm512_movepi8_mask(idx), u64_at(b, 66));
        let scales = _mm512_srlv_epi32(
            _mm512_set1_epi32(u32_at(b, 106) as i32),
            _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 0, 0, 0, 0, 0, 0, 0),
        );
        let plane = |j: usize| {
            let table = &IQ3S_TABLES.0[j];
            _mm512_mask_blend_epi8(
                ninth,
                lookup256(&table[..256], idx, upper),
                lookup256(&table[256..], idx, upper),
            )
        };
        // SAFETY: 32 bytes of the block.
        let signs = unsafe { _mm256_loadu_si256(b[74..106].as_ptr().cast()) };
        (signed_planes(plane, entry_signs(signs)), entry_lanes(odd(scales)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::quant::int::{Groupings, QuantX};
    use crate::cpu::quant::vnni::Sums;

    /// Every kernel here, the gathered ones of the table types too (which `linear` only takes
    /// on CPUs without VBMI), against the float64 sum of the dequantized weights times the wide
    /// activations: the integers are exact, so only f32 rounding of the per-super-block
    /// terms separates them.
    #[test]
    fn kernels_sum_exactly_what_the_weights_and_activations_hold() {
        if !(super::super::vnni::available() && planes_available()) {
            eprintln!("skipped: no AVX-512 VNNI and VBMI");
            return;
        }
        let (rows, cols, tokens) = (5usize, 768usize, 3usize);
        let mut state = 9u64;
        let x: Vec<f32> = (0..cols * tokens)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
                    * if state.is_multiple_of(7) { 9.0 } else { 1.0 }
            })
            .collect();
        let xq = QuantX::new(&x, tokens, cols, Groupings { fine: false, wide: true }).unwrap();
        let sums = Sums { of16: false, of4: true };
        let natural: Vec<SplitX<'_>> = (0..tokens).map(|t| SplitX::natural(&xq, t, sums).unwrap()).collect();
        let planes = |order| -> Vec<SplitX<'_>> {
            (0..tokens).map(|t| SplitX::planes(&xq, t, order).unwrap()).collect()
        };
        use GgmlType::*;
        for ty in [IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S] {
            let mut bytes = vec![0u8; ty.bytes_for((rows * cols) as u64).unwrap() as usize];
            wllm_loaders::synthetic::random_blocks(ty, 5, 0, &mut bytes);
            let weights = wllm_loaders::quant::dequantize(ty, &bytes, rows * cols).unwrap();
            let w = WeightView::new(ty, rows, cols, &bytes).unwrap();
            let want: Vec<f64> = (0..tokens)
                .flat_map(|t| {
                    let wide = xq.token(t).wide().unwrap();
                    let weights = &weights;
                    (0..rows).map(move |r| {
                        (0..cols)
                            .map(|c| {
                                let xv = f64::from(wide.q[c / 32][c % 32]) * f64::from(wide.d[c / 256]);
                                f64::from(weights[r * cols + c]) * xv
                            })
                            .sum::<f64>()
                    })
                })
                .collect();
            let mut kernels: Vec<(&str, Vec<f32>)> = Vec::new();
            let mut run = |name, f: &dyn Fn(OutPtr<'_>)| {
                let mut got = vec![f32::NAN; rows * tokens];
                f(OutPtr::new(&mut got));
                kernels.push((name, got));
            };
            let [a, b, c] = [&natural[0], &natural[1], &natural[2]];
            // SAFETY: the features were checked above.
            run("gathered", &|out| unsafe { super::rows(w, 0, rows, [a, b, c], out) });
            if let Some(order) = plane_order(ty) {
                let x = planes(order);
                let [a, b, c] = [&x[0], &x[1], &x[2]];
                // SAFETY: as above.
                run("planes", &|out| unsafe { super::rows(w, 0, rows, [a, b, c], out) });
            }
            for (name, got) in kernels {
                for (i, (&g, &e)) in got.iter().zip(&want).enumerate() {
                    let bound = 1e-5 * want.iter().fold(0f64, |m, v| m.max(v.abs())) + 1e-6;
                    assert!((f64::from(g) - e).abs() <= bound, "{ty} {name}: index {i}: got {g} want {e}");
                }
            }
        }
    }
}
