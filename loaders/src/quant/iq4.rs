//! IQ4_NL and IQ4_XS: 4-bit codes that index a fixed non-linear table of 16 signed values.
//!
//! Layouts follow `block_iq4_nl` / `block_iq4_xs` and the table `kvalues_iq4nl` in
//! `ggml/src/ggml-common.h`, values `dequantize_row_iq4_nl` / `dequantize_row_iq4_xs` in
//! `ggml/src/ggml-quants.c` at llama.cpp commit 0c1e57098bba43ac29e6e3b677cdceebdd22334f.
//! Nibbles are ordered like Q4_0 within each 32 elements: byte `j` of a run's 16 bytes holds
//! element `j` (low) and `j + 16` (high).

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::Block;
use super::kquants::QK_K;
use super::legacy::nibble;
use crate::ggml_type::GgmlType;

pub const QK4_NL: usize = 32;

/// The table both types index: denser near zero, where most weights are. The values are
/// integers, so a dot product can stay in integers until the block scale.
pub const KVALUES_IQ4NL: [i8; 16] =
    [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/// `x = d * KVALUES_IQ4NL[q]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockIq4Nl {
    pub d: f16,
    pub qs: [u8; QK4_NL / 2],
}
const _: () = assert!(size_of::<BlockIq4Nl>() == 18);

/// A 256-element super-block of eight 32-element runs; run `r` has the 6-bit scale
/// `ls = (scales_l nibble r) | (bits 2r..2r+2 of scales_h) << 4` and
/// `x = d * (ls - 32) * KVALUES_IQ4NL[q]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockIq4Xs {
    pub d: f16,
    pub scales_h: u16,
    pub scales_l: [u8; QK_K / 64],
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(size_of::<BlockIq4Xs>() == 136);

/// Run `r`'s scale of an IQ4_XS block, `ls - 32` (in -32..32).
pub fn iq4xs_scale(scales_h: u16, scales_l: &[u8; QK_K / 64], r: usize) -> i32 {
    let lo = (scales_l[r / 2] >> (4 * (r % 2))) & 0x0F;
    let hi = (scales_h >> (2 * r)) & 3;
    (i32::from(lo) | (i32::from(hi) << 4)) - 32
}

impl Block for BlockIq4Nl {
    const TYPE: GgmlType = GgmlType::IQ4_NL;
    const ELEMS: usize = QK4_NL;
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (i, y) in out.iter_mut().enumerate() {
            *y = d * f32::from(KVALUES_IQ4NL[usize::from(nibble(&self.qs, i))]);
        }
    }
}

impl Block for BlockIq4Xs {
    const TYPE: GgmlType = GgmlType::IQ4_XS;
    const ELEMS: usize = QK_K;
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (r, run) in out.chunks_exact_mut(32).enumerate() {
            // ggml rounds the run scale to f32 before the table value multiplies it.
            let dl = d * iq4xs_scale(self.scales_h, &self.scales_l, r) as f32;
            let qs: &[u8; 16] = self.qs[16 * r..16 * r + 16].try_into().expect("16 bytes per run");
            for (i, y) in run.iter_mut().enumerate() {
                *y = dl * f32::from(KVALUES_IQ4NL[usize::from(nibble(qs, i))]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iq4xs_scales_take_low_nibbles_then_high_bit_pairs() {
        // Run 0: low nibble of byte 0, bits 0..2 of scales_h; run 7: high nibble of byte 3,
        // bits 14..16.
        let scales_l = [0x3A, 0, 0, 0xF0];
        assert_eq!(iq4xs_scale(0b10, &scales_l, 0), 0xA + (2 << 4) - 32);
        assert_eq!(iq4xs_scale(0b10, &scales_l, 1), 3 - 32);
        assert_eq!(iq4xs_scale(0xC000, &scales_l, 7), 63 - 32);
        assert_eq!(iq4xs_scale(0, &[0; 4], 5), -32);
    }

    #[test]
    fn iq4nl_values_are_the_table_times_d() {
        let mut qs = [0u8; 16];
        qs[0] = 0xF0;
        qs[15] = 0x78;
        let b = BlockIq4Nl { d: f16::from_f32(0.5), qs };
        let mut y = [0f32; 32];
        b.dequantize(&mut y);
        assert_eq!((y[0], y[16], y[15], y[31]), (-63.5, 56.5, 0.5, -5.0));
    }
}
