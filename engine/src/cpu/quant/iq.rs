//! The codebook types IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS and IQ3_S (layouts and
//! values: `wllm_loaders::quant::iq_grid`). Each type only says where a run's grid indices,
//! signs and scales are; both CPU paths share what follows from that.
//!
//! A 32-weight run becomes 32 bytes (grid values with their signs applied; for IQ1
//! `8 · grid ± 1` plus a bias of 16) and one odd integer multiplier per 16 weights: weight `i`
//! is `d · UNIT · mul[i / 16] · (byte[i] - BIAS)`. Every one of these products is exact in f32
//! (at most 22 significant bits: an 11-bit f16, a 4- or 5-bit multiplier, a 6-bit grid value),
//! as are the oracle's, so the values match it bit for bit whatever the order of the
//! multiplications.

use wllm_loaders::quant::iq_grid::{iq1m_d, iq1m_half_scale, iq2s_index, iq3s_index};
use wllm_loaders::quant::iq_grids::{IQ1S_GRID, IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID, IQ3S_GRID, IQ3XXS_GRID};

use super::{Blocks, emit_i8};
use crate::cpu::simd::Simd;

pub(crate) struct Iq2Xxs;
pub(crate) struct Iq2Xs;
pub(crate) struct Iq2S;
pub(crate) struct Iq3Xxs;
pub(crate) struct Iq3S;
pub(crate) struct Iq1S;
pub(crate) struct Iq1M;

/// Elements per block.
const QK: usize = 256;

/// One 32-weight run as integers: weight `i` is `d · UNIT · mul[i / 16]` times byte `i % 8` of
/// `q[i / 8]` as an i8, less `BIAS`.
pub(crate) struct Run {
    pub(crate) q: [u64; 4],
    pub(crate) mul: [i16; 2],
}

/// Where a codebook type keeps its runs.
pub(crate) trait Codebook: 'static {
    /// Bytes per 256-element block.
    const BYTES: usize;
    /// The power of two that turns `d · mul · byte` into the weight.
    const UNIT: f32;
    /// Whether the two 16-weight halves of a run have their own multipliers.
    const HALVES: bool;
    /// What every byte holds above its value.
    const BIAS: i16 = 0;
    /// The bits of the block's f16 scale `d`; `b` is one block.
    fn d_bits(b: &[u8]) -> u16;
    /// Run `r` (0..8) of block `b`.
    fn run(b: &[u8], r: usize) -> Run;
}

/// `0x01` in every byte: the low bit of eight packed bytes.
const LOW_BITS: u64 = 0x0101_0101_0101_0101;

/// Byte `j` is `0xFF` where bit `j` of `signs` is set.
const fn spread(signs: u8) -> u64 {
    let mut m = 0u64;
    let mut j = 0;
    while j < 8 {
        if (signs >> j) & 1 == 1 {
            m |= 0xFF << (8 * j);
        }
        j += 1;
    }
    m
}

/// The negation masks of the sign bytes of IQ2_S and IQ3_S.
static SIGN_MASK: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut s = 0;
    while s < 256 {
        t[s] = spread(s as u8);
        s += 1;
    }
    t
};

/// The negation masks of the 7-bit sign fields of IQ2_XXS, IQ2_XS and IQ3_XXS, whose eighth
/// sign is their parity ([`wllm_loaders::quant::iq_signs`]): one load instead of two.
pub(crate) static SIGN_MASK7: [u64; 128] = {
    let mut t = [0u64; 128];
    let mut s = 0;
    while s < 128 {
        t[s] = spread(s as u8 | (((s as u32).count_ones() as u8 & 1) << 7));
        s += 1;
    }
    t
};

/// `table[i]` by a scalar load. With AVX-512 on, LLVM's SLP vectorizer turns the eight IQ3_S
/// lookups of a run, and the four of IQ1_S, into gathers, which ran those matvecs 1.7x and
/// 1.2x slower on a Sapphire Rapids core; a volatile read is an ordinary load that it may not
/// merge. (The IQ2 and IQ3_XXS lookups ran as fast or faster gathered, 1.5x for IQ2_XS.)
#[inline(always)]
fn scalar_entry<T: Copy, const N: usize>(table: &'static [T; N], i: usize) -> T {
    // SAFETY: a reference into the table is valid and aligned for one read.
    unsafe { std::ptr::read_volatile(&table[i]) }
}

/// Eight grid values (bytes in 1..128), negated where `mask` has `0xFF`: two's complement per
/// byte, `(g ^ 0xFF) + 1`, which never carries into the next byte because no value is 0.
#[inline(always)]
fn signed(grid: u64, mask: u64) -> u64 {
    (grid ^ mask).wrapping_add(mask & LOW_BITS)
}

/// An IQ3 group of eight: two four-value grid entries.
#[inline(always)]
fn pair(lo: u32, hi: u32) -> u64 {
    u64::from(lo) | (u64::from(hi) << 32)
}

/// The IQ1 grid with every byte `g` (-1..=1) as `8 · (g + 2)`: at least 8, so that adding
/// the offset ±1 to eight of them at once cannot carry or borrow across bytes.
static IQ1_GRID_X8: [u64; 2048] = {
    let mut t = [0u64; 2048];
    let mut i = 0;
    while i < 2048 {
        let mut j = 0;
        while j < 8 {
            let g = (IQ1S_GRID[i] >> (8 * j)) as u8 as i8;
            t[i] |= (8 * (g + 2) as u64) << (8 * j);
            j += 1;
        }
        i += 1;
    }
    t
};

/// Eight IQ1 weights `8 · g ± 1` (minus when the bit `negative` is 1), biased by 16: bytes
/// 7..=25.
#[inline(always)]
fn iq1_bytes(idx: usize, negative: u32) -> u64 {
    scalar_entry(&IQ1_GRID_X8, idx) + LOW_BITS - u64::from(negative & 1) * (2 * LOW_BITS)
}

/// The odd multiplier `2s + 1` of a 4-bit (or narrower) scale `s`.
#[inline(always)]
fn odd(s: u32) -> i16 {
    (2 * (s & 0xF) + 1) as i16
}

#[inline(always)]
fn at<const N: usize>(b: &[u8], i: usize) -> &[u8; N] {
    b[i..i + N].try_into().expect("in-block range")
}

#[inline(always)]
fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes(*at(b, i))
}

#[inline(always)]
fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes(*at(b, i))
}

impl Codebook for Iq2Xxs {
    const BYTES: usize = 66;
    const UNIT: f32 = 0.125;
    const HALVES: bool = false;
    #[inline(always)]
    fn d_bits(b: &[u8]) -> u16 {
        u16_at(b, 0)
    }
    /// Four 8-bit grid indices, then four 7-bit sign fields and the scale in the top 4 bits.
    #[inline(always)]
    fn run(b: &[u8], r: usize) -> Run {
        let b: &[u8; 66] = b.try_into().expect("one IQ2_XXS block");
        let (idx, aux) = (u32_at(b, 2 + 8 * r), u32_at(b, 6 + 8 * r));
        let q = std::array::from_fn(|l| {
            let grid = IQ2XXS_GRID[((idx >> (8 * l)) & 0xFF) as usize];
            signed(grid, SIGN_MASK7[((aux >> (7 * l)) & 127) as usize])
        });
        Run { q, mul: [odd(aux >> 28); 2] }
    }
}

impl Codebook for Iq2Xs {
    const BYTES: usize = 74;
    const UNIT: f32 = 0.125;
    const HALVES: bool = true;
    #[inline(always)]
    fn d_bits(b: &[u8]) -> u16 {
        u16_at(b, 0)
    }
    /// A u16 per group: 9-bit grid index, 7-bit sign field; a scale byte per run.
    #[inline(always)]
    fn run(b: &[u8], r: usize) -> Run {
        let b: &[u8; 74] = b.try_into().expect("one IQ2_XS block");
        let q = std::array::from_fn(|l| {
            let v = u16_at(b, 2 + 2 * (4 * r + l));
            signed(IQ2XS_GRID[usize::from(v & 511)], SIGN_MASK7[usize::from(v >> 9)])
        });
        let s = u32::from(b[66 + r]);
        Run { q, mul: [odd(s), odd(s >> 4)] }
    }
}

impl Codebook for Iq2S {
    const BYTES: usize = 82;
    const UNIT: f32 = 0.125;
    const HALVES: bool = true;
    #[inline(always)]
    fn d_bits(b: &[u8]) -> u16 {
        u16_at(b, 0)
    }
    /// 10-bit grid indices (`qs` at 2, `qh` at 66), sign bytes at 34, a scale byte per run at 74.
    #[inline(always)]
    fn run(b: &[u8], r: usize) -> Run {
        let b: &[u8; 82] = b.try_into().expect("one IQ2_S block");
        let q = std::array::from_fn(|l| {
            let grid = IQ2S_GRID[iq2s_index(at(b, 2), at(b, 66), r, l) & 1023];
            signed(grid, SIGN_MASK[usize::from(b[34 + 4 * r + l])])
        });
        let s = u32::from(b[74 + r]);
        Run { q, mul: [odd(s), odd(s >> 4)] }
    }
}

impl Codebook for Iq3Xxs {
    const BYTES: usize = 98;
    const UNIT: f32 = 0.25;
    const HALVES: bool = false;
    #[inline(always)]
    fn d_bits(b: &[u8]) -> u16 {
        u16_at(b, 0)
    }
    /// Eight 8-bit indices of four-value entries, and at 66 a u32 per run: four 7-bit sign
    /// fields and the scale in the top 4 bits.
    #[inline(always)]
    fn run(b: &[u8], r: usize) -> Run {
        let b: &[u8; 98] = b.try_into().expect("one IQ3_XXS block");
        let aux = u32_at(b, 66 + 4 * r);
        let q = std::array::from_fn(|l| {
            let grid = |k: usize| IQ3XXS_GRID[usize::from(b[2 + 8 * r + 2 * l + k])];
            signed(pair(grid(0), grid(1)), SIGN_MASK7[((aux >> (7 * l)) & 127) as usize])
        });
        Run { q, mul: [odd(aux >> 28); 2] }
    }
}

impl Codebook for Iq3S {
    const BYTES: usize = 110;
    const UNIT: f32 = 1.0;
    const HALVES: bool = false;
    #[inline(always)]
    fn d_bits(b: &[u8]) -> u16 {
        u16_at(b, 0)
    }
    /// 9-bit indices of four-value entries (`qs` at 2, `qh` at 66), sign bytes at 74, a 4-bit
    /// scale per run at 106.
    #[inline(always)]
    fn run(b: &[u8], r: usize) -> Run {
        let b: &[u8; 110] = b.try_into().expect("one IQ3_S block");
        let q = std::array::from_fn(|l| {
            let grid =
                |k: usize| scalar_entry(&IQ3S_GRID, iq3s_index(at(b, 2), at(b, 66), r, 2 * l + k) & 511);
            signed(pair(grid(0), grid(1)), SIGN_MASK[usize::from(b[74 + 4 * r + l])])
        });
        let s = u32::from(b[106 + r / 2] >> (4 * (r % 2)));
        Run { q, mul: [odd(s); 2] }
    }
}

impl Codebook for Iq1S {
    const BYTES: usize = 50;
    const UNIT: f32 = 0.125;
    const HALVES: bool = false;
    const BIAS: i16 = 16;
    #[inline(always)]
    fn d_bits(b: &[u8]) -> u16 {
        u16_at(b, 0)
    }
    /// 8 low index bits per group at 2, and at 34 a u16 per run: three high bits per group, a
    /// 3-bit scale and the offset's sign.
    #[inline(always)]
    fn run(b: &[u8], r: usize) -> Run {
        let b: &[u8; 50] = b.try_into().expect("one IQ1_S block");
        let qh = u16_at(b, 34 + 2 * r);
        let q = std::array::from_fn(|l| {
            let idx = usize::from(b[2 + 4 * r + l]) | (usize::from((qh >> (3 * l)) & 7) << 8);
            iq1_bytes(idx, u32::from(qh >> 15))
        });
        Run { q, mul: [odd(u32::from(qh >> 12) & 7); 2] }
    }
}

/// The four u16 scale words of an IQ1_M block, at 48 (as `iq1m_scale_words` of the loaders,
/// which is not inlined across the crate boundary: a call per run).
#[inline(always)]
fn iq1m_words(b: &[u8]) -> [u16; 4] {
    [0, 1, 2, 3].map(|i| u16_at(b, 48 + 2 * i))
}

impl Codebook for Iq1M {
    const BYTES: usize = 56;
    const UNIT: f32 = 0.125;
    const HALVES: bool = true;
    const BIAS: i16 = 16;
    /// Spread over the top nibbles of the four scale words at 48.
    #[inline(always)]
    fn d_bits(b: &[u8]) -> u16 {
        iq1m_d(iq1m_words(b)).to_bits()
    }
    /// `qs` at 0; at 32 a nibble per group, three high index bits and the offset's sign (as
    /// `iq1m_group`); 3-bit scales per 16 weights at 48.
    #[inline(always)]
    fn run(b: &[u8], r: usize) -> Run {
        let b: &[u8; 56] = b.try_into().expect("one IQ1_M block");
        let qh = u32::from(u16_at(b, 32 + 2 * r));
        let q = std::array::from_fn(|l| {
            let nibble = qh >> (4 * l);
            let idx = usize::from(b[4 * r + l]) | (((nibble & 7) as usize) << 8);
            iq1_bytes(idx, nibble >> 3)
        });
        let sc = iq1m_words(b);
        Run { q, mul: [0, 1].map(|h| odd(u32::from(iq1m_half_scale(sc, r, h)))) }
    }
}

impl<C: Codebook> Blocks for C {
    const ELEMS: usize = QK;
    const BYTES: usize = C::BYTES;
    #[inline(always)]
    fn decode<S: Simd>(s: S, b: &[u8], sink: &mut impl FnMut(usize, S::F)) {
        let d = s.f16(C::d_bits(b));
        let bias = s.splat(f32::from(C::BIAS));
        for r in 0..QK / 32 {
            let run = C::run(b, r);
            for h in 0..2 {
                let scale = s.splat(d * f32::from(run.mul[h]) * C::UNIT);
                let q = s.bfrom_u64(run.q[2 * h], run.q[2 * h + 1]);
                let value = |v| if C::BIAS == 0 { v } else { s.sub(v, bias) };
                emit_i8(s, q, 32 * r + 16 * h, sink, |v| s.mul(value(v), scale));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seven_bit_masks_carry_the_parity_sign() {
        for s in 0..128u32 {
            let want = spread(wllm_loaders::quant::iq_signs(s));
            assert_eq!(SIGN_MASK7[s as usize], want, "{s}");
        }
    }

    #[test]
    fn signs_negate_each_byte() {
        let grid = 0x2B19_0808_2B19_082Bu64;
        let got = signed(grid, SIGN_MASK[0b1000_0101]).to_le_bytes().map(|v| v as i8);
        assert_eq!(got, [-43, 8, -25, 43, 8, 8, 25, -43]);
    }

    #[test]
    fn iq1_bytes_are_eight_grid_plus_minus_one() {
        for idx in [0, 1, 777, 2047] {
            let grid = IQ1S_GRID[idx].to_le_bytes().map(|g| i16::from(g as i8));
            let values = |negative| iq1_bytes(idx, negative).to_le_bytes().map(|v| i16::from(v) - 16);
            assert_eq!(values(0), grid.map(|g| 8 * g + 1), "{idx}");
            assert_eq!(values(1), grid.map(|g| 8 * g - 1), "{idx}");
        }
    }
}
