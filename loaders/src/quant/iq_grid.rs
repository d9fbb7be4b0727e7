//! The codebook ("grid") types IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS and IQ3_S: groups
//! of 8 (IQ3: 4) weights are one index into a fixed table of value patterns ([`super::iq_grids`]),
//! plus a sign bit per weight (IQ2/IQ3) or a shared offset (IQ1), and a small scale per 16 or
//! 32 weights.
//!
//! Layouts follow `block_iq*` in `ggml/src/ggml-common.h`, values `dequantize_row_iq*` in
//! `ggml/src/ggml-quants.c` at llama.cpp commit 0c1e57098bba43ac29e6e3b677cdceebdd22334f,
//! with the same f32 operations in the same order.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::Block;
use super::iq_grids::{IQ1S_GRID, IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID, IQ3S_GRID, IQ3XXS_GRID};
use super::kquants::QK_K;
use crate::ggml_type::GgmlType;

/// Every codebook type, in ggml's id order.
pub const CODEBOOK_TYPES: [GgmlType; 7] = [
    GgmlType::IQ2_XXS,
    GgmlType::IQ2_XS,
    GgmlType::IQ3_XXS,
    GgmlType::IQ1_S,
    GgmlType::IQ3_S,
    GgmlType::IQ2_S,
    GgmlType::IQ1_M,
];

/// The offset IQ1_S and IQ1_M add to (or, with the group's flag, subtract from) every grid value.
pub const IQ1_DELTA: f32 = 0.125;

/// The sign byte of a 7-bit IQ2/IQ3 sign field: bit 7 makes the number of negative weights in
/// the group of eight even (ggml's `ksigns_iq2xs` table holds these values).
pub fn iq_signs(seven: u32) -> u8 {
    let s = (seven & 127) as u8;
    s | (((s.count_ones() & 1) as u8) << 7)
}

/// Byte `j` (0..8) of grid entry `e`.
fn gbyte(e: u64, j: usize) -> u8 {
    (e >> (8 * j)) as u8
}

/// `±1`: negative where bit `j` of `signs` is set.
fn sign(signs: u8, j: usize) -> f32 {
    if signs & (1 << j) != 0 { -1.0 } else { 1.0 }
}

/// Eight weights `scale * grid[j] * sign(j)`.
fn signed8(y: &mut [f32], scale: f32, entry: u64, signs: u8) {
    for (j, y) in y[..8].iter_mut().enumerate() {
        *y = scale * f32::from(gbyte(entry, j)) * sign(signs, j);
    }
}

/// Eight weights from two 4-value IQ3 entries: `scale * grid[j] * sign(j)`.
fn signed4x2(y: &mut [f32], scale: f32, lo: u32, hi: u32, signs: u8) {
    let entry = u64::from(lo) | (u64::from(hi) << 32);
    signed8(y, scale, entry, signs);
}

/// IQ2_XXS, 2.06 bits per weight. Run `r` (32 weights) is the u16 words `4r..4r+4`: the low
/// word pair holds four 8-bit grid indices, the high one four 7-bit sign fields and, in its top
/// four bits, the run's scale `s`: `x = d * (0.5 + s) * 0.25 * grid * sign`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockIq2Xxs {
    pub d: f16,
    pub qs: [u16; QK_K / 8],
}
const _: () = assert!(size_of::<BlockIq2Xxs>() == 66);

/// Words `2k` and `2k + 1` of run `r`'s four u16 words, as ggml's `aux32`.
fn aux32(qs: &[u16], r: usize) -> [u32; 2] {
    let w = |i: usize| u32::from(qs[4 * r + 2 * i]) | (u32::from(qs[4 * r + 2 * i + 1]) << 16);
    [w(0), w(1)]
}

impl Block for BlockIq2Xxs {
    const TYPE: GgmlType = GgmlType::IQ2_XXS;
    const ELEMS: usize = QK_K;
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (r, run) in out.chunks_exact_mut(32).enumerate() {
            let [idx, aux] = aux32(&self.qs, r);
            let db = d * (0.5 + (aux >> 28) as f32) * 0.25;
            for (l, y) in run.chunks_exact_mut(8).enumerate() {
                let entry = IQ2XXS_GRID[((idx >> (8 * l)) & 0xFF) as usize];
                signed8(y, db, entry, iq_signs(aux >> (7 * l)));
            }
        }
    }
}

/// IQ2_XS, 2.31 bits per weight: every u16 of `qs` is a 9-bit grid index and a 7-bit sign
/// field for 8 weights; each 16 weights have a 4-bit scale `s` (low nibble of `scales[r]` for
/// the first half of run `r`): `x = d * (0.5 + s) * 0.25 * grid * sign`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockIq2Xs {
    pub d: f16,
    pub qs: [u16; QK_K / 8],
    pub scales: [u8; QK_K / 32],
}
const _: () = assert!(size_of::<BlockIq2Xs>() == 74);

/// The two 16-weight scales of IQ2_XS / IQ2_S run with scale byte `s`.
fn iq2_half_scales(d: f32, s: u8) -> [f32; 2] {
    [d * (0.5 + f32::from(s & 0xF)) * 0.25, d * (0.5 + f32::from(s >> 4)) * 0.25]
}

impl Block for BlockIq2Xs {
    const TYPE: GgmlType = GgmlType::IQ2_XS;
    const ELEMS: usize = QK_K;
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (r, run) in out.chunks_exact_mut(32).enumerate() {
            let db = iq2_half_scales(d, self.scales[r]);
            for (l, y) in run.chunks_exact_mut(8).enumerate() {
                let q = self.qs[4 * r + l];
                signed8(y, db[l / 2], IQ2XS_GRID[usize::from(q & 511)], iq_signs(u32::from(q >> 9)));
            }
        }
    }
}

/// IQ2_S, 2.56 bits per weight: 10-bit grid indices (low 8 bits in `qs[..32]`, two more per
/// index in `qh[r]`), sign bytes in `qs[32..]`, scales as IQ2_XS.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockIq2S {
    pub d: f16,
    pub qs: [u8; QK_K / 4],
    pub qh: [u8; QK_K / 32],
    pub scales: [u8; QK_K / 32],
}
const _: () = assert!(size_of::<BlockIq2S>() == 82);

/// Grid index `l` (0..4) of IQ2_S run `r`.
pub fn iq2s_index(qs: &[u8; QK_K / 4], qh: &[u8; QK_K / 32], r: usize, l: usize) -> usize {
    usize::from(qs[4 * r + l]) | ((usize::from(qh[r]) << (8 - 2 * l)) & 0x300)
}

impl Block for BlockIq2S {
    const TYPE: GgmlType = GgmlType::IQ2_S;
    const ELEMS: usize = QK_K;
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (r, run) in out.chunks_exact_mut(32).enumerate() {
            let db = iq2_half_scales(d, self.scales[r]);
            for (l, y) in run.chunks_exact_mut(8).enumerate() {
                let entry = IQ2S_GRID[iq2s_index(&self.qs, &self.qh, r, l)];
                signed8(y, db[l / 2], entry, self.qs[QK_K / 8 + 4 * r + l]);
            }
        }
    }
}

/// IQ3_XXS, 3.06 bits per weight: `qs[..64]` are 8-bit indices of 4-value grid entries, then a
/// u32 per run of four 7-bit sign fields and a 4-bit scale `s` on top:
/// `x = d * (0.5 + s) * 0.5 * grid * sign`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockIq3Xxs {
    pub d: f16,
    pub qs: [u8; 3 * QK_K / 8],
}
const _: () = assert!(size_of::<BlockIq3Xxs>() == 98);

impl Block for BlockIq3Xxs {
    const TYPE: GgmlType = GgmlType::IQ3_XXS;
    const ELEMS: usize = QK_K;
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (r, run) in out.chunks_exact_mut(32).enumerate() {
            let at = QK_K / 4 + 4 * r;
            let aux = u32::from_le_bytes(self.qs[at..at + 4].try_into().expect("4 bytes"));
            let db = d * (0.5 + (aux >> 28) as f32) * 0.5;
            for (l, y) in run.chunks_exact_mut(8).enumerate() {
                let grid = |k: usize| IQ3XXS_GRID[usize::from(self.qs[8 * r + 2 * l + k])];
                signed4x2(y, db, grid(0), grid(1), iq_signs(aux >> (7 * l)));
            }
        }
    }
}

/// IQ3_S, 3.44 bits per weight: 9-bit indices of 4-value grid entries (low 8 bits in `qs`, the
/// ninth in `qh`, one byte per run), a sign byte per 8 weights, and a 4-bit scale `s` per run
/// (two per byte of `scales`): `x = d * (1 + 2s) * grid * sign`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockIq3S {
    pub d: f16,
    pub qs: [u8; QK_K / 4],
    pub qh: [u8; QK_K / 32],
    pub signs: [u8; QK_K / 8],
    pub scales: [u8; QK_K / 64],
}
const _: () = assert!(size_of::<BlockIq3S>() == 110);

/// Grid index `k` (0..8) of IQ3_S run `r`: the ninth bit is bit `k` of `qh[r]`.
pub fn iq3s_index(qs: &[u8; QK_K / 4], qh: &[u8; QK_K / 32], r: usize, k: usize) -> usize {
    usize::from(qs[8 * r + k]) | (((usize::from(qh[r]) >> k) & 1) << 8)
}

impl Block for BlockIq3S {
    const TYPE: GgmlType = GgmlType::IQ3_S;
    const ELEMS: usize = QK_K;
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (r, run) in out.chunks_exact_mut(32).enumerate() {
            let s = (self.scales[r / 2] >> (4 * (r % 2))) & 0xF;
            let db = d * f32::from(1 + 2 * s);
            for (l, y) in run.chunks_exact_mut(8).enumerate() {
                let grid = |k: usize| IQ3S_GRID[iq3s_index(&self.qs, &self.qh, r, 2 * l + k)];
                signed4x2(y, db, grid(0), grid(1), self.signs[4 * r + l]);
            }
        }
    }
}

/// IQ1_S, 1.56 bits per weight: 11-bit indices of 8-value entries of {-1, 0, 1} (low 8 bits in
/// `qs`, three more per index in `qh[r]`), and per run a 3-bit scale `s` (bits 12..15 of
/// `qh[r]`) and the sign of the offset (bit 15): `x = d * (2s + 1) * (grid ± 0.125)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockIq1S {
    pub d: f16,
    pub qs: [u8; QK_K / 8],
    pub qh: [u16; QK_K / 32],
}
const _: () = assert!(size_of::<BlockIq1S>() == 50);

/// Byte `j` of IQ1 grid entry `e`, a signed value in -1..=1.
fn iq1_value(e: u64, j: usize) -> f32 {
    f32::from(gbyte(e, j) as i8)
}

fn iq1_delta(negative: bool) -> f32 {
    if negative { -IQ1_DELTA } else { IQ1_DELTA }
}

impl Block for BlockIq1S {
    const TYPE: GgmlType = GgmlType::IQ1_S;
    const ELEMS: usize = QK_K;
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (r, run) in out.chunks_exact_mut(32).enumerate() {
            let qh = self.qh[r];
            let dl = d * f32::from(2 * ((qh >> 12) & 7) + 1);
            let delta = iq1_delta(qh & 0x8000 != 0);
            for (l, y) in run.chunks_exact_mut(8).enumerate() {
                let idx = usize::from(self.qs[4 * r + l]) | (usize::from((qh >> (3 * l)) & 7) << 8);
                let entry = IQ1S_GRID[idx];
                for (j, y) in y.iter_mut().enumerate() {
                    *y = dl * (iq1_value(entry, j) + delta);
                }
            }
        }
    }
}

/// IQ1_M, 1.75 bits per weight, no f16 field: the block scale is an f16 spread over the top
/// nibbles of the four u16 words of `scales`, whose other bits are 3-bit scales per 16 weights.
/// `qh` has a byte per 16 weights: for each of its two groups of 8, three high index bits and
/// the offset's sign. `x = d * (2s + 1) * (grid ± 0.125)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockIq1M {
    pub qs: [u8; QK_K / 8],
    pub qh: [u8; QK_K / 16],
    pub scales: [u8; QK_K / 32],
}
const _: () = assert!(size_of::<BlockIq1M>() == 56);

/// The four u16 scale words of an IQ1_M block.
pub fn iq1m_scale_words(scales: &[u8; QK_K / 32]) -> [u16; 4] {
    std::array::from_fn(|i| u16::from_le_bytes([scales[2 * i], scales[2 * i + 1]]))
}

/// The block scale of IQ1_M: the f16 whose four nibbles are the top nibbles of the scale words.
pub fn iq1m_d(sc: [u16; 4]) -> f16 {
    f16::from_bits((sc[0] >> 12) | ((sc[1] >> 8) & 0x00F0) | ((sc[2] >> 4) & 0x0F00) | (sc[3] & 0xF000))
}

/// The 3-bit scale of half `h` (0, 1) of IQ1_M run `r`.
pub fn iq1m_half_scale(sc: [u16; 4], r: usize, h: usize) -> u16 {
    (sc[r / 2] >> (6 * (r % 2) + 3 * h)) & 7
}

/// Grid index and offset sign of group `l` (0..4) of IQ1_M run `r`.
pub fn iq1m_group(qs: &[u8; QK_K / 8], qh: &[u8; QK_K / 16], r: usize, l: usize) -> (usize, bool) {
    // Group l takes the low (even l) or high nibble of byte l / 2: three index bits, a sign.
    let nibble = qh[2 * r + l / 2] >> (4 * (l % 2));
    let (high, negative) = (nibble & 7, nibble & 8 != 0);
    (usize::from(qs[4 * r + l]) | (usize::from(high) << 8), negative)
}

impl Block for BlockIq1M {
    const TYPE: GgmlType = GgmlType::IQ1_M;
    const ELEMS: usize = QK_K;
    fn dequantize(&self, out: &mut [f32]) {
        let sc = iq1m_scale_words(&self.scales);
        let d = iq1m_d(sc).to_f32();
        for (r, run) in out.chunks_exact_mut(32).enumerate() {
            let dl = [0, 1].map(|h| d * f32::from(2 * iq1m_half_scale(sc, r, h) + 1));
            for (l, y) in run.chunks_exact_mut(8).enumerate() {
                let (idx, negative) = iq1m_group(&self.qs, &self.qh, r, l);
                let (entry, delta) = (IQ1S_GRID[idx], iq1_delta(negative));
                for (j, y) in y.iter_mut().enumerate() {
                    *y = dl[l / 2] * (iq1_value(entry, j) + delta);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_bytes_are_ggmls_table() {
        // A few entries of ksigns_iq2xs.
        assert_eq!([0, 1, 2, 3, 7, 127].map(iq_signs), [0, 129, 130, 3, 135, 255]);
        for s in 0..128 {
            assert_eq!(iq_signs(s).count_ones() % 2, 0, "{s}");
        }
    }

    #[test]
    fn iq1m_scale_is_spread_over_top_nibbles() {
        // 0x3C00 is 1.0 as f16.
        let sc = [0x0000, 0x0000, 0xC000, 0x3000];
        assert_eq!(iq1m_d(sc).to_f32(), 1.0);
        assert_eq!(iq1m_half_scale([0b101_011, 0, 0, 0], 0, 1), 0b101);
        assert_eq!(iq1m_half_scale([0b110_000_000_000, 0, 0, 0], 1, 1), 0b110);
    }

    #[test]
    fn iq2xxs_run_scale_and_signs() {
        let mut qs = [0u16; 32];
        // Run 0: grid indices 0 (all 8s) x4; sign field 0 = 1 (element 0 and 7 negative); s = 3.
        qs[2] = 1;
        qs[3] = 3 << 12;
        let b = BlockIq2Xxs { d: f16::from_f32(2.0), qs };
        let mut y = [0f32; 256];
        b.dequantize(&mut y);
        let db = 2.0 * 3.5 * 0.25;
        assert_eq!((y[0], y[1], y[7], y[8]), (-8.0 * db, 8.0 * db, -8.0 * db, 8.0 * db));
    }
}
