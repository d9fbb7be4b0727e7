//! The k-quant super-blocks of 256 elements: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and Q8_K.
//!
//! Layouts follow `ggml/src/ggml-common.h` and values `dequantize_row_*` in
//! `ggml/src/ggml-quants.c` at llama.cpp commit 0c1e57098bba43ac29e6e3b677cdceebdd22334f.
//!
//! Each `dequantize` is written per element `i` rather than in ggml's pointer-walking loops so
//! that the index arithmetic reads the same as in a shader thread that owns one element:
//! the sub-block scale is `i / 16` (Q2_K, Q3_K, Q6_K) or `i / 32` (Q4_K, Q5_K), and the
//! low-bit planes are laid out in 128-element halves (2-bit planes: 32 bytes, 4 shifts) or
//! 64-element chunks (4-bit planes: 32 bytes, low then high nibble).

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::Block;
use crate::ggml_type::GgmlType;

/// Elements per super-block.
pub const QK_K: usize = 256;
/// Bytes of packed 6-bit scales and mins in Q4_K and Q5_K (and of Q3_K's 6-bit scales).
pub const K_SCALE_SIZE: usize = 12;

/// `x = d * sc * q - dmin * m`, q in 0..4, 4-bit `sc` (low) and `m` (high) per 16 elements.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ2K {
    pub scales: [u8; QK_K / 16],
    pub qs: [u8; QK_K / 4],
    pub d: f16,
    pub dmin: f16,
}
const _: () = assert!(size_of::<BlockQ2K>() == 84);

/// `x = d * (sc - 32) * (q - 4 * !hbit)`, q in 0..4, 6-bit `sc` per 16 elements.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ3K {
    pub hmask: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 4],
    pub scales: [u8; K_SCALE_SIZE],
    pub d: f16,
}
const _: () = assert!(size_of::<BlockQ3K>() == 110);

/// `x = d * sc * q - dmin * m`, q in 0..16, 6-bit `sc` and `m` per 32 elements.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ4K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; K_SCALE_SIZE],
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(size_of::<BlockQ4K>() == 144);

/// `x = d * sc * q - dmin * m`, q in 0..32, 6-bit `sc` and `m` per 32 elements.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ5K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; K_SCALE_SIZE],
    pub qh: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(size_of::<BlockQ5K>() == 176);

/// `x = d * sc * (q - 32)`, q in 0..64, signed 8-bit `sc` per 16 elements.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ6K {
    pub ql: [u8; QK_K / 2],
    pub qh: [u8; QK_K / 4],
    pub scales: [i8; QK_K / 16],
    pub d: f16,
}
const _: () = assert!(size_of::<BlockQ6K>() == 210);

/// `x = d * q`. ggml's intermediate type for activations in k-quant dot products; `bsums`
/// holds the sum of each 16 quants.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; QK_K],
    pub bsums: [i16; QK_K / 16],
}
const _: () = assert!(size_of::<BlockQ8K>() == 292);

/// Scale and min of sub-block `j` (0..8) of Q4_K/Q5_K, each 6 bits.
///
/// Sub-blocks 0..4 keep both in the low 6 bits of bytes `j` and `j + 4`; sub-blocks 4..8 keep
/// their low 4 bits in the nibbles of byte `j + 4` and their top 2 bits in the spare top bits
/// of bytes `j - 4` (scale) and `j` (min).
pub fn get_scale_min_k4(j: usize, scales: &[u8; K_SCALE_SIZE]) -> (u8, u8) {
    if j < 4 {
        (scales[j] & 63, scales[j + 4] & 63)
    } else {
        let sc = (scales[j + 4] & 0x0F) | ((scales[j - 4] >> 6) << 4);
        let m = (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4);
        (sc, m)
    }
}

/// Signed scale of sub-block `k` (0..16) of Q3_K: 6 bits stored with a bias of 32.
///
/// The low 4 bits are the nibbles of bytes 0..8 (low nibbles for `k < 8`, high for the rest);
/// the top 2 bits are the 2-bit field `k / 4` of byte `8 + k % 4`.
pub fn q3k_scale(k: usize, scales: &[u8; K_SCALE_SIZE]) -> i8 {
    let low = if k < 8 { scales[k] & 0x0F } else { scales[k - 8] >> 4 };
    let high = (scales[8 + k % 4] >> (2 * (k / 4))) & 3;
    (low | (high << 4)) as i8 - 32
}

/// Element `i`'s 2-bit field from a 64-byte plane: 128-element halves of 32 bytes, each byte
/// holding elements `l`, `l + 32`, `l + 64`, `l + 96` of its half at shifts 0, 2, 4, 6.
pub fn crumb(qs: &[u8; QK_K / 4], i: usize) -> u8 {
    let (half, r) = (i / 128, i % 128);
    (qs[32 * half + r % 32] >> (2 * (r / 32))) & 3
}

/// Element `i`'s 4-bit field from a 128-byte plane: 64-element chunks of 32 bytes, elements
/// `l` and `l + 32` of a chunk in the low and high nibble of byte `l`.
pub fn nibble(qs: &[u8; QK_K / 2], i: usize) -> u8 {
    let (chunk, r) = (i / 64, i % 64);
    let byte = qs[32 * chunk + r % 32];
    if r < 32 { byte & 0x0F } else { byte >> 4 }
}

impl Block for BlockQ2K {
    const TYPE: GgmlType = GgmlType::Q2_K;
    const ELEMS: usize = QK_K;
    fn dequantize(&self, out: &mut [f32]) {
        let (d, dmin) = (self.d.to_f32(), self.dmin.to_f32());
        for (i, y) in out.iter_mut().enumerate() {
            let sc = self.scales[i / 16];
            let dl = d * f32::from(sc & 0x0F);
            let ml = dmin * f32::from(sc >> 4);
            *y = dl * f32::from(crumb(&self.qs, i)) - ml;
        }
    }
}

impl Block for BlockQ3K {
    const TYPE: GgmlType = GgmlType::Q3_K;
    const ELEMS: usize = QK_K;
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (i, y) in out.iter_mut().enumerate() {
            let dl = d * f32::from(q3k_scale(i / 16, &self.scales));
            // hmask byte `i % 32` holds bit 2 of the elements `i % 32 + 32 * b` at bit `b`; a
            // clear bit means the value is 4 lower.
            let high_set = (self.hmask[i % 32] >> (i / 32)) & 1 != 0;
            let q = i32::from(crumb(&self.qs, i)) - if high_set { 0 } else { 4 };
            *y = dl * q as f32;
        }
    }
}

impl Block for BlockQ4K {
    const TYPE: GgmlType = GgmlType::Q4_K;
    const ELEMS: usize = QK_K;
    fn dequantize(&self, out: &mut [f32]) {
        let (d, dmin) = (self.d.to_f32(), self.dmin.to_f32());
        for (i, y) in out.iter_mut().enumerate() {
            let (sc, m) = get_scale_min_k4(i / 32, &self.scales);
            let (d1, m1) = (d * f32::from(sc), dmin * f32::from(m));
            *y = d1 * f32::from(nibble(&self.qs, i)) - m1;
        }
    }
}

impl Block for BlockQ5K {
    const TYPE: GgmlType = GgmlType::Q5_K;
    const ELEMS: usize = QK_K;
    fn dequantize(&self, out: &mut [f32]) {
        let (d, dmin) = (self.d.to_f32(), self.dmin.to_f32());
        for (i, y) in out.iter_mut().enumerate() {
            let (sc, m) = get_scale_min_k4(i / 32, &self.scales);
            let (d1, m1) = (d * f32::from(sc), dmin * f32::from(m));
            // qh byte `i % 32` holds bit 4 of the elements `i % 32 + 32 * b` at bit `b`.
            let high = ((self.qh[i % 32] >> (i / 32)) & 1) << 4;
            *y = d1 * f32::from(nibble(&self.qs, i) | high) - m1;
        }
    }
}

impl Block for BlockQ6K {
    const TYPE: GgmlType = GgmlType::Q6_K;
    const ELEMS: usize = QK_K;
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (i, y) in out.iter_mut().enumerate() {
            // Low 4 bits: 128-element halves of 64 bytes; quarter `r / 32` of a half reads
            // bytes `l` (quarters 0, 2) or `l + 32` (quarters 1, 3), low nibble for quarters
            // 0, 1 and high nibble for 2, 3. High 2 bits: the 2-bit planes, like Q2_K.
            let (half, r) = (i / 128, i % 128);
            let quarter = r / 32;
            let byte = self.ql[64 * half + 32 * (quarter % 2) + r % 32];
            let low = if quarter < 2 { byte & 0x0F } else { byte >> 4 };
            let q = i32::from(low | (crumb(&self.qh, i) << 4)) - 32;
            *y = d * f32::from(self.scales[i / 16]) * q as f32;
        }
    }
}

impl Block for BlockQ8K {
    const TYPE: GgmlType = GgmlType::Q8_K;
    const ELEMS: usize = QK_K;
    fn dequantize(&self, out: &mut [f32]) {
        for (y, &q) in out.iter_mut().zip(&self.qs) {
            *y = self.d * f32::from(q);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_min_k4_round_trips_the_packing() {
        // Pack 6-bit values the way quantize_row_q4_K_ref does and read them back.
        let ls: [u8; 8] = [1, 63, 17, 32, 45, 2, 60, 33];
        let lm: [u8; 8] = [62, 0, 5, 48, 19, 63, 7, 40];
        let mut s = [0u8; K_SCALE_SIZE];
        for j in 0..8 {
            if j < 4 {
                s[j] = ls[j];
                s[j + 4] = lm[j];
            } else {
                s[j + 4] = (ls[j] & 0x0F) | ((lm[j] & 0x0F) << 4);
                s[j - 4] |= (ls[j] >> 4) << 6;
                s[j] |= (lm[j] >> 4) << 6;
            }
        }
        for j in 0..8 {
            assert_eq!(get_scale_min_k4(j, &s), (ls[j], lm[j]), "sub-block {j}");
        }
    }

    #[test]
    fn q3k_scale_round_trips_the_packing() {
        // quantize_row_q3_K_ref's packing of 16 biased 6-bit scales.
        let want: [i8; 16] = [-32, 31, 0, -1, 5, -7, 12, 30, -20, 3, 9, -31, 1, 17, -9, 22];
        let mut s = [0u8; K_SCALE_SIZE];
        for (j, &w) in want.iter().enumerate() {
            let l = (i32::from(w) + 32) as u8;
            if j < 8 {
                s[j] = l & 0x0F;
            } else {
                s[j - 8] |= (l & 0x0F) << 4;
            }
            s[8 + j % 4] |= (l >> 4) << (2 * (j / 4));
        }
        for (k, &w) in want.iter().enumerate() {
            assert_eq!(q3k_scale(k, &s), w, "scale {k}");
        }
    }

    #[test]
    fn plane_element_order() {
        let mut qs2 = [0u8; QK_K / 4];
        qs2[32 + 5] = 0b11_10_01_00;
        assert_eq!(
            [crumb(&qs2, 128 + 5), crumb(&qs2, 160 + 5), crumb(&qs2, 192 + 5), crumb(&qs2, 224 + 5)],
            [0, 1, 2, 3]
        );
        let mut qs4 = [0u8; QK_K / 2];
        qs4[64 + 7] = 0x9C;
        assert_eq!((nibble(&qs4, 128 + 7), nibble(&qs4, 160 + 7)), (0xC, 0x9));
    }

    #[test]
    fn q8k_block_by_hand() {
        let mut b = BlockQ8K::zeroed();
        b.d = 0.25;
        b.qs[0] = -128;
        b.qs[255] = 127;
        let mut out = [1.0; QK_K];
        b.dequantize(&mut out);
        assert_eq!((out[0], out[1], out[255]), (-32.0, 0.0, 31.75));
    }
}
