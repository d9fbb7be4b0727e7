//! The integer vocabulary of the decode matvec: 32 weights of one block as i16 lanes, multiplied
//! pairwise with 32 activations quantized to i16 and summed into i32 lanes, then scaled into
//! f32 accumulators once per block.
//!
//! Unpacking 4- and 8-bit weights to f32 costs a widening, a conversion and a scaling per
//! element; as i16 they only need the widening, and one multiply-add instruction takes 32 of
//! them. The f32 work is left with one conversion and one FMA per 32 elements.

use super::Simd;

/// A vector instruction set's integer dot products of 32-element blocks; its f32 accumulators
/// are the instruction set's [`Simd`] vectors.
pub(crate) trait IDot: Simd {
    /// 32 weights as i16 lanes, element `i` in lane `i`.
    type W: Copy;
    /// The i32 partial sums of one block: their total is the block's dot product.
    type I: Copy;

    /// 32 signed bytes.
    fn w_i8(self, b: &[u8; 32]) -> Self::W;
    /// 32 unsigned bytes.
    fn w_u8(self, b: &[u8; 32]) -> Self::W;
    /// The low nibbles of 16 bytes as elements 0..16, their high nibbles as 16..32.
    fn w_nibbles(self, b: &[u8; 16]) -> Self::W;
    /// [`IDot::w_nibbles`] through a table: each 4-bit code becomes `table[code]` (a byte
    /// shuffle, then sign extension).
    fn w_table(self, table: &[i8; 16], b: &[u8; 16]) -> Self::W;
    fn w_and(self, w: Self::W, mask: i16) -> Self::W;
    fn w_or(self, a: Self::W, b: Self::W) -> Self::W;
    /// Logical shift right of every lane by `n` (< 16).
    fn w_shr(self, w: Self::W, n: u32) -> Self::W;
    /// Shift left of every lane by `n` (< 16).
    fn w_shl(self, w: Self::W, n: u32) -> Self::W;
    fn w_sub(self, w: Self::W, v: i16) -> Self::W;
    /// Adds `v` to lane `i` where bit `i` of `bits` is set.
    fn w_add_bits(self, w: Self::W, bits: u32, v: i16) -> Self::W;
    /// Lanes 0..16 times `a`, lanes 16..32 times `b`; the products must fit in i16.
    fn w_mul2(self, w: Self::W, a: i16, b: i16) -> Self::W;

    /// Pairwise products of `w` and `x` summed into i32 lanes. With |w| <= 4096 and
    /// |x| <= 32767 no lane can overflow.
    fn madd(self, w: Self::W, x: &[i16; 32]) -> Self::I;
    /// `acc + f32(i) * scale`, lane-wise.
    fn acc(self, i: Self::I, scale: f32, acc: Self::F) -> Self::F;

    /// Zero i32 lanes.
    fn i_zero(self) -> Self::I;
    /// Every lane times `v`; the products must fit in i16.
    fn w_mul(self, w: Self::W, v: i16) -> Self::W;
    /// `acc` plus [`IDot::madd`]: for sums of blocks that share one activation scale.
    fn madd_acc(self, acc: Self::I, w: Self::W, x: &[i16; 32]) -> Self::I;
    /// i32 lanes whose total is `Σ_j bytes[j] · sums[j]` over the eight bytes of `bytes`
    /// (little-endian) and the eight `sums`; each product must fit in i32.
    fn bytes_dot8(self, bytes: u64, sums: &[i32; 8]) -> Self::I;
}
