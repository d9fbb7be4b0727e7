//! The original 32-element block types: Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0.
//!
//! Layouts follow `ggml/src/ggml-common.h` and values `dequantize_row_*` in
//! `ggml/src/ggml-quants.c` at llama.cpp commit 0c1e57098bba43ac29e6e3b677cdceebdd22334f.
//! In the 4- and 5-bit types byte `j` of `qs` holds element `j` in its low nibble and element
//! `j + 16` in its high nibble; bit `i` of the little-endian `qh` word is bit 4 of element `i`.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::Block;
use crate::ggml_type::GgmlType;

/// Elements per block of every type in this file.
pub const QK: usize = 32;

/// `x = d * (q - 8)`, q in 0..16.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ4_0 {
    pub d: f16,
    pub qs: [u8; QK / 2],
}
const _: () = assert!(size_of::<BlockQ4_0>() == 18);

/// `x = d * q + m`, q in 0..16.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ4_1 {
    pub d: f16,
    pub m: f16,
    pub qs: [u8; QK / 2],
}
const _: () = assert!(size_of::<BlockQ4_1>() == 20);

/// `x = d * (q - 16)`, q in 0..32.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ5_0 {
    pub d: f16,
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}
const _: () = assert!(size_of::<BlockQ5_0>() == 22);

/// `x = d * q + m`, q in 0..32.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ5_1 {
    pub d: f16,
    pub m: f16,
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}
const _: () = assert!(size_of::<BlockQ5_1>() == 24);

/// `x = d * q`, q in -128..128 (the quantizer only writes -127..=127).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; QK],
}
const _: () = assert!(size_of::<BlockQ8_0>() == 34);

/// Element `i`'s 4-bit value from a 16-byte nibble array (see the module comment).
pub fn nibble(qs: &[u8; QK / 2], i: usize) -> u8 {
    if i < QK / 2 { qs[i] & 0x0F } else { qs[i - QK / 2] >> 4 }
}

/// Element `i`'s fifth bit, already shifted to bit 4.
pub fn high_bit(qh: [u8; 4], i: usize) -> u8 {
    (((u32::from_le_bytes(qh) >> i) & 1) << 4) as u8
}

impl Block for BlockQ4_0 {
    const TYPE: GgmlType = GgmlType::Q4_0;
    const ELEMS: usize = QK;
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (i, y) in out.iter_mut().enumerate() {
            *y = (i32::from(nibble(&self.qs, i)) - 8) as f32 * d;
        }
    }
}

impl Block for BlockQ4_1 {
    const TYPE: GgmlType = GgmlType::Q4_1;
    const ELEMS: usize = QK;
    fn dequantize(&self, out: &mut [f32]) {
        let (d, m) = (self.d.to_f32(), self.m.to_f32());
        for (i, y) in out.iter_mut().enumerate() {
            *y = f32::from(nibble(&self.qs, i)) * d + m;
        }
    }
}

impl Block for BlockQ5_0 {
    const TYPE: GgmlType = GgmlType::Q5_0;
    const ELEMS: usize = QK;
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (i, y) in out.iter_mut().enumerate() {
            let q = nibble(&self.qs, i) | high_bit(self.qh, i);
            *y = (i32::from(q) - 16) as f32 * d;
        }
    }
}

impl Block for BlockQ5_1 {
    const TYPE: GgmlType = GgmlType::Q5_1;
    const ELEMS: usize = QK;
    fn dequantize(&self, out: &mut [f32]) {
        let (d, m) = (self.d.to_f32(), self.m.to_f32());
        for (i, y) in out.iter_mut().enumerate() {
            let q = nibble(&self.qs, i) | high_bit(self.qh, i);
            *y = f32::from(q) * d + m;
        }
    }
}

impl Block for BlockQ8_0 {
    const TYPE: GgmlType = GgmlType::Q8_0;
    const ELEMS: usize = QK;
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (y, &q) in out.iter_mut().zip(&self.qs) {
            *y = f32::from(q) * d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nibble_and_high_bit_order() {
        let mut qs = [0u8; 16];
        qs[3] = 0xA5;
        assert_eq!(nibble(&qs, 3), 0x5);
        assert_eq!(nibble(&qs, 19), 0xA);
        let qh = 0x8000_0001u32.to_le_bytes();
        assert_eq!(high_bit(qh, 0), 16);
        assert_eq!(high_bit(qh, 1), 0);
        assert_eq!(high_bit(qh, 31), 16);
    }

    #[test]
    fn q4_0_block_by_hand() {
        let mut b = BlockQ4_0::zeroed();
        b.d = f16::from_f32(0.5);
        b.qs[0] = 0xF0; // element 0 = 0 - 8, element 16 = 15 - 8
        let mut out = [0.0; QK];
        b.dequantize(&mut out);
        assert_eq!(out[0], -4.0);
        assert_eq!(out[16], 3.5);
        assert_eq!(out[1], -4.0);
    }
}
