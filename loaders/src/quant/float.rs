//! The unquantized float types, as one-element "blocks" so they share the block code paths.

use half::{bf16, f16};

use super::Block;
use crate::ggml_type::GgmlType;

impl Block for f32 {
    const TYPE: GgmlType = GgmlType::F32;
    const ELEMS: usize = 1;
    fn dequantize(&self, out: &mut [f32]) {
        out[0] = *self;
    }
}

impl Block for f16 {
    const TYPE: GgmlType = GgmlType::F16;
    const ELEMS: usize = 1;
    fn dequantize(&self, out: &mut [f32]) {
        out[0] = self.to_f32();
    }
}

impl Block for bf16 {
    const TYPE: GgmlType = GgmlType::BF16;
    const ELEMS: usize = 1;
    fn dequantize(&self, out: &mut [f32]) {
        // A plain shift like ggml's `ggml_compute_bf16_to_fp32`; `bf16::to_f32` would also set
        // the quiet bit of a NaN, and the reference must reproduce every input bit.
        out[0] = f32::from_bits(u32::from(self.to_bits()) << 16);
    }
}
