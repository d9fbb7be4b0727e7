//! MXFP4 (OCP microscaling FP4): 32 E2M1 values sharing one E8M0 power-of-two scale.
//!
//! Layout follows `block_mxfp4` in `ggml/src/ggml-common.h` and values `dequantize_row_mxfp4`
//! in `ggml/src/ggml-quants.c` at llama.cpp commit 0c1e57098bba43ac29e6e3b677cdceebdd22334f.
//! Nibbles are ordered like Q4_0: byte `j` holds element `j` (low) and `j + 16` (high).

use bytemuck::{Pod, Zeroable};

use super::Block;
use super::legacy::nibble;
use crate::ggml_type::GgmlType;

pub const QK_MXFP4: usize = 32;

/// The E2M1 values doubled, indexed by the 4-bit code (sign in bit 3). ggml halves the
/// scale instead so the table stays integral.
pub const KVALUES_MXFP4: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// `x = 2^(e - 128) * KVALUES_MXFP4[q]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockMxfp4 {
    pub e: u8,
    pub qs: [u8; QK_MXFP4 / 2],
}
const _: () = assert!(size_of::<BlockMxfp4>() == 17);

/// Half of the E8M0 scale `2^(e - 127)`, i.e. `2^(e - 128)`, built from its bits.
///
/// `e` 0 and 1 give f32 subnormals, which need the mantissa bit rather than the exponent.
/// (`e` = 255 is a NaN in E8M0; ggml, and so this, reads it as `2^127`.)
pub fn e8m0_to_fp32_half(e: u8) -> f32 {
    let bits = if e < 2 { 0x0020_0000u32 << e } else { u32::from(e - 1) << 23 };
    f32::from_bits(bits)
}

impl Block for BlockMxfp4 {
    const TYPE: GgmlType = GgmlType::MXFP4;
    const ELEMS: usize = QK_MXFP4;
    fn dequantize(&self, out: &mut [f32]) {
        let d = e8m0_to_fp32_half(self.e);
        for (i, y) in out.iter_mut().enumerate() {
            *y = f32::from(KVALUES_MXFP4[usize::from(nibble(&self.qs, i))]) * d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e8m0_half_scale() {
        assert_eq!(e8m0_to_fp32_half(127), 0.5);
        assert_eq!(e8m0_to_fp32_half(128), 1.0);
        assert_eq!(e8m0_to_fp32_half(2), 2f32.powi(-126));
        assert_eq!(e8m0_to_fp32_half(1), 2f32.powi(-127));
        assert_eq!(e8m0_to_fp32_half(0), 2f32.powi(-128));
        assert_eq!(e8m0_to_fp32_half(255), 2f32.powi(127));
    }
}
