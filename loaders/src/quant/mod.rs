//! CPU reference (de)quantization of ggml tensor data.
//!
//! This is the oracle the GPU kernels are tested against and the fallback for work kept on
//! the CPU, so it favours plain, exact code over speed: every value is computed with the same
//! f32 operations in the same order as ggml's scalar `dequantize_row_*`, which makes results
//! bit-identical to llama.cpp's (and to gguf-py's numpy port).
//!
//! Blocks are read from byte slices with `bytemuck::pod_read_unaligned`, so tensor data needs
//! no alignment. Like ggml's files, the layouts are little-endian.

mod error;
pub mod float;
pub mod iq4;
pub mod iq_grid;
pub mod iq_grids;
pub mod kquants;
pub mod legacy;
pub mod mxfp4;
mod quantize;

use bytemuck::Pod;
use half::{bf16, f16};

pub use error::{Op, QuantError};
pub use iq_grid::{
    BlockIq1M, BlockIq1S, BlockIq2S, BlockIq2Xs, BlockIq2Xxs, BlockIq3S, BlockIq3Xxs, CODEBOOK_TYPES,
    IQ1_DELTA, iq_signs,
};
pub use iq4::{BlockIq4Nl, BlockIq4Xs, KVALUES_IQ4NL, QK4_NL, iq4xs_scale};
pub use kquants::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, K_SCALE_SIZE, QK_K, get_scale_min_k4,
    q3k_scale,
};
pub use legacy::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0};
pub use mxfp4::{BlockMxfp4, KVALUES_MXFP4, QK_MXFP4, e8m0_to_fp32_half};
pub use quantize::{nearest_int, quantize_row, quantize_row_into};

use crate::ggml_type::GgmlType;

// The block structs mirror ggml's byte layout only on little-endian hosts, as ggml's own do.
const _: () = assert!(cfg!(target_endian = "little"), "ggml block layouts are little-endian");

/// One ggml block: `ELEMS` values stored in `size_of::<Self>()` bytes.
pub trait Block: Pod {
    const TYPE: GgmlType;
    const ELEMS: usize;
    /// Writes the block's values to `out` (exactly `ELEMS` long) in ggml's element order.
    fn dequantize(&self, out: &mut [f32]);
}

/// Runs `$f::<Block type of $ty>($args)`, or fails for types without a CPU reference.
macro_rules! with_block {
    ($ty:expr, $f:ident($($arg:expr),*)) => {
        match $ty {
            GgmlType::F32 => $f::<f32>($($arg),*),
            GgmlType::F16 => $f::<f16>($($arg),*),
            GgmlType::BF16 => $f::<bf16>($($arg),*),
            GgmlType::Q4_0 => $f::<BlockQ4_0>($($arg),*),
            GgmlType::Q4_1 => $f::<BlockQ4_1>($($arg),*),
            GgmlType::Q5_0 => $f::<BlockQ5_0>($($arg),*),
            GgmlType::Q5_1 => $f::<BlockQ5_1>($($arg),*),
            GgmlType::Q8_0 => $f::<BlockQ8_0>($($arg),*),
            GgmlType::Q2_K => $f::<BlockQ2K>($($arg),*),
            GgmlType::Q3_K => $f::<BlockQ3K>($($arg),*),
            GgmlType::Q4_K => $f::<BlockQ4K>($($arg),*),
            GgmlType::Q5_K => $f::<BlockQ5K>($($arg),*),
            GgmlType::Q6_K => $f::<BlockQ6K>($($arg),*),
            GgmlType::Q8_K => $f::<BlockQ8K>($($arg),*),
            GgmlType::MXFP4 => $f::<BlockMxfp4>($($arg),*),
            GgmlType::IQ4_NL => $f::<BlockIq4Nl>($($arg),*),
            GgmlType::IQ4_XS => $f::<BlockIq4Xs>($($arg),*),
            GgmlType::IQ2_XXS => $f::<BlockIq2Xxs>($($arg),*),
            GgmlType::IQ2_XS => $f::<BlockIq2Xs>($($arg),*),
            GgmlType::IQ2_S => $f::<BlockIq2S>($($arg),*),
            GgmlType::IQ3_XXS => $f::<BlockIq3Xxs>($($arg),*),
            GgmlType::IQ3_S => $f::<BlockIq3S>($($arg),*),
            GgmlType::IQ1_S => $f::<BlockIq1S>($($arg),*),
            GgmlType::IQ1_M => $f::<BlockIq1M>($($arg),*),
            ty => Err(QuantError::Unsupported { ty, op: Op::Dequantization }),
        }
    };
}

/// Whether [`dequantize_row`], [`dequantize`] and [`dot_row`] handle `ty`.
pub fn is_supported(ty: GgmlType) -> bool {
    fn elems<B: Block>() -> Result<usize, QuantError> {
        Ok(B::ELEMS)
    }
    with_block!(ty, elems()).is_ok()
}

/// Dequantizes `bytes`, which must hold exactly `out.len()` elements of `ty`, into `out`.
pub fn dequantize_row(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    with_block!(ty, dequantize_blocks(bytes, out))
}

/// Dequantizes `n_elements` of `ty` from `bytes` (exactly that many) into a new vector.
pub fn dequantize(ty: GgmlType, bytes: &[u8], n_elements: usize) -> Result<Vec<f32>, QuantError> {
    // Checked before allocating, so a bad count cannot ask for a huge buffer.
    with_block!(ty, check_lengths(bytes.len(), n_elements))?;
    let mut out = vec![0.0; n_elements];
    dequantize_row(ty, bytes, &mut out)?;
    Ok(out)
}

/// The dot product of one row of `ty` weights (`bytes`, exactly `x.len()` elements) with `x`.
///
/// Each block is dequantized exactly as [`dequantize_row`] does, its products summed in f32
/// in element order, and the block sums added in f32 in block order.
pub fn dot_row(ty: GgmlType, bytes: &[u8], x: &[f32]) -> Result<f32, QuantError> {
    with_block!(ty, dot_blocks(bytes, x))
}

fn check_lengths<B: Block>(n_bytes: usize, n_elements: usize) -> Result<(), QuantError> {
    let ty = B::TYPE;
    if !n_elements.is_multiple_of(B::ELEMS) {
        return Err(QuantError::PartialBlock { ty, n_elements, block_size: B::ELEMS });
    }
    let Some(expected) = (n_elements / B::ELEMS).checked_mul(size_of::<B>()) else {
        return Err(QuantError::TooLarge { ty, n_elements });
    };
    if expected != n_bytes {
        return Err(QuantError::ByteLength { ty, n_elements, expected, actual: n_bytes });
    }
    Ok(())
}

fn blocks<B: Block>(bytes: &[u8]) -> impl Iterator<Item = B> + '_ {
    bytes.chunks_exact(size_of::<B>()).map(bytemuck::pod_read_unaligned)
}

fn dequantize_blocks<B: Block>(bytes: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    check_lengths::<B>(bytes.len(), out.len())?;
    for (block, y) in blocks::<B>(bytes).zip(out.chunks_exact_mut(B::ELEMS)) {
        block.dequantize(y);
    }
    Ok(())
}

fn dot_blocks<B: Block>(bytes: &[u8], x: &[f32]) -> Result<f32, QuantError> {
    const { assert!(B::ELEMS <= QK_K) };
    check_lengths::<B>(bytes.len(), x.len())?;
    let mut w = [0f32; QK_K];
    let w = &mut w[..B::ELEMS];
    let mut total = 0f32;
    for (block, xs) in blocks::<B>(bytes).zip(x.chunks_exact(B::ELEMS)) {
        block.dequantize(w);
        total += w.iter().zip(xs).fold(0f32, |s, (a, b)| s + a * b);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout<B: Block>() -> Result<(), QuantError> {
        assert_eq!(size_of::<B>() as u64, B::TYPE.type_size(), "{} bytes per block", B::TYPE);
        assert_eq!(B::ELEMS as u64, B::TYPE.block_size(), "{} elements per block", B::TYPE);
        Ok(())
    }

    #[test]
    fn block_structs_match_the_type_table() {
        for ty in GgmlType::all() {
            let _ = with_block!(ty, layout());
        }
    }

    #[test]
    fn supported_types() {
        let supported: Vec<_> = GgmlType::all().filter(|&t| is_supported(t)).map(|t| t.name()).collect();
        assert_eq!(
            supported,
            [
                "F32", "F16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
                "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS",
                "IQ1_M", "BF16", "MXFP4"
            ]
        );
    }

    #[test]
    fn unsupported_type_is_named() {
        let err = dequantize(GgmlType::TQ1_0, &[0; 54], 256).unwrap_err();
        assert_eq!(err, QuantError::Unsupported { ty: GgmlType::TQ1_0, op: Op::Dequantization });
        assert_eq!(err.to_string(), "TQ1_0 dequantization is not implemented");
        let err = dot_row(GgmlType::I32, &[0; 4], &[1.0]).unwrap_err();
        assert_eq!(err.to_string(), "I32 dequantization is not implemented");
        let err = quantize_row(GgmlType::Q6_K, &[0.0; 256], &mut Vec::new()).unwrap_err();
        assert_eq!(err.to_string(), "Q6_K quantization is not implemented");
    }

    #[test]
    fn length_errors() {
        let bytes = [0u8; 2 * 144];
        let err = dequantize(GgmlType::Q4_K, &bytes, 300).unwrap_err();
        assert_eq!(err, QuantError::PartialBlock { ty: GgmlType::Q4_K, n_elements: 300, block_size: 256 });
        assert_eq!(err.to_string(), "Q4_K: 300 elements is not a whole number of 256-element blocks");

        let err = dequantize(GgmlType::Q4_K, &bytes[..287], 512).unwrap_err();
        assert_eq!(err.to_string(), "Q4_K: 512 elements take 288 bytes, got 287");
        let err = dequantize_row(GgmlType::Q4_K, &bytes, &mut [0.0; 256]).unwrap_err();
        assert_eq!(
            err,
            QuantError::ByteLength { ty: GgmlType::Q4_K, n_elements: 256, expected: 144, actual: 288 }
        );
        assert!(dot_row(GgmlType::Q8_0, &[0; 34], &[0.0; 33]).is_err());
        assert!(dot_row(GgmlType::F16, &[0; 3], &[0.0; 2]).is_err());
        assert!(quantize_row(GgmlType::Q8_0, &[0.0; 33], &mut Vec::new()).is_err());

        // A count whose byte size overflows is refused before anything is allocated.
        let err = dequantize(GgmlType::Q8_0, &bytes, usize::MAX / 32 * 32).unwrap_err();
        assert_eq!(err, QuantError::TooLarge { ty: GgmlType::Q8_0, n_elements: usize::MAX / 32 * 32 });
    }

    #[test]
    fn empty_input_is_fine() {
        assert_eq!(dequantize(GgmlType::Q4_K, &[], 0).unwrap(), Vec::<f32>::new());
        assert_eq!(dot_row(GgmlType::Q8_0, &[], &[]).unwrap(), 0.0);
    }

    #[test]
    fn unaligned_bytes() {
        let mut bytes = [0u8; 1 + 4 * 2];
        bytes[1..].copy_from_slice(bytemuck::cast_slice(&[1.5f32, -2.0]));
        assert_eq!(dequantize(GgmlType::F32, &bytes[1..], 2).unwrap(), [1.5, -2.0]);
    }

    #[test]
    fn dot_matches_dequantized_sum() {
        let mut q = Vec::new();
        let x: Vec<f32> = (0..512).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
        quantize_row(GgmlType::Q4_K, &x, &mut q).unwrap();
        let w = dequantize(GgmlType::Q4_K, &q, 512).unwrap();
        let want: f32 = w[..256].iter().zip(&x).fold(0.0, |s, (a, b)| s + a * b)
            + w[256..].iter().zip(&x[256..]).fold(0.0, |s, (a, b)| s + a * b);
        assert_eq!(dot_row(GgmlType::Q4_K, &q, &x).unwrap(), want);
    }

    #[test]
    fn q4_0_and_q8_0_round_trip_within_half_a_step() {
        let x: Vec<f32> = (0..96).map(|i| ((i * 53 % 97) as f32 - 40.0) / 17.0).collect();
        for (ty, steps) in [(GgmlType::Q4_0, 8.0f32), (GgmlType::Q8_0, 127.0)] {
            let mut q = vec![0u8; 3 * ty.type_size() as usize];
            quantize_row_into(ty, &x, &mut q).unwrap();
            let back = dequantize(ty, &q, x.len()).unwrap();
            for (b, (xs, ys)) in x.chunks(32).zip(back.chunks(32)).enumerate() {
                let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
                // Half a step, plus the f16 rounding of the scale carried to the block maximum.
                let budget = amax / steps * 0.5 + amax * 1e-3;
                for (i, (a, b2)) in xs.iter().zip(ys).enumerate() {
                    assert!((a - b2).abs() <= budget, "{ty} block {b} element {i}: {a} came back as {b2}");
                }
            }
            assert!(quantize_row_into(ty, &x, &mut q[1..]).is_err());
        }
    }
}
