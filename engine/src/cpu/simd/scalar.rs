//! The one-lane "vector": the reference path, and the tail of every vector loop.

use super::Simd;

#[derive(Copy, Clone, Debug)]
pub(crate) struct Scalar(());

#[inline(always)]
pub(crate) fn with_scalar<R>(f: impl FnOnce(Scalar) -> R) -> R {
    f(Scalar(()))
}

impl Scalar {
    /// Scalar code is valid on every CPU, so this token may be made anywhere.
    pub(crate) const fn token() -> Scalar {
        Scalar(())
    }
}

impl Simd for Scalar {
    type F = f32;
    const N: usize = 1;

    #[inline(always)]
    fn zero(self) -> f32 {
        0.0
    }
    #[inline(always)]
    fn splat(self, v: f32) -> f32 {
        v
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> f32 {
        // SAFETY: the caller guarantees one readable f32.
        unsafe { p.read_unaligned() }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: f32) {
        // SAFETY: the caller guarantees one writable f32.
        unsafe { p.write_unaligned(v) }
    }
    #[inline(always)]
    unsafe fn load_f16(self, p: *const u16) -> f32 {
        // SAFETY: the caller guarantees one readable u16.
        half::f16::from_bits(unsafe { p.read_unaligned() }).to_f32()
    }
    #[inline(always)]
    unsafe fn store_f16(self, p: *mut u16, v: f32) {
        // SAFETY: the caller guarantees one writable u16.
        unsafe { p.write_unaligned(half::f16::from_f32(v).to_bits()) }
    }
    #[inline(always)]
    fn add(self, a: f32, b: f32) -> f32 {
        a + b
    }
    #[inline(always)]
    fn sub(self, a: f32, b: f32) -> f32 {
        a - b
    }
    #[inline(always)]
    fn mul(self, a: f32, b: f32) -> f32 {
        a * b
    }
    #[inline(always)]
    fn div(self, a: f32, b: f32) -> f32 {
        a / b
    }
    #[inline(always)]
    fn max(self, a: f32, b: f32) -> f32 {
        a.max(b)
    }
    #[inline(always)]
    fn min(self, a: f32, b: f32) -> f32 {
        a.min(b)
    }
    #[inline(always)]
    fn fma(self, a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
    #[inline(always)]
    fn round(self, v: f32) -> f32 {
        v.round_ties_even()
    }
    #[inline(always)]
    fn pow2i(self, n: f32) -> f32 {
        f32::from_bits(((n as i32 + 127) as u32) << 23)
    }
    #[inline(always)]
    fn sum(self, v: f32) -> f32 {
        v
    }
    #[inline(always)]
    fn f16(self, h: u16) -> f32 {
        half::f16::from_bits(h).to_f32()
    }

    type B = [u8; 16];
    #[inline(always)]
    fn bload(self, b: &[u8]) -> [u8; 16] {
        let mut o = [0; 16];
        o.copy_from_slice(&b[..16]);
        o
    }
    #[inline(always)]
    fn bsplat(self, v: u8) -> [u8; 16] {
        [v; 16]
    }
    #[inline(always)]
    fn bfrom_u64(self, lo: u64, hi: u64) -> [u8; 16] {
        (u128::from(lo) | (u128::from(hi) << 64)).to_le_bytes()
    }
    #[inline(always)]
    fn band(self, a: [u8; 16], b: [u8; 16]) -> [u8; 16] {
        std::array::from_fn(|i| a[i] & b[i])
    }
    #[inline(always)]
    fn bor(self, a: [u8; 16], b: [u8; 16]) -> [u8; 16] {
        std::array::from_fn(|i| a[i] | b[i])
    }
    #[inline(always)]
    fn bshr(self, a: [u8; 16], n: u32) -> [u8; 16] {
        a.map(|v| v >> n)
    }
    #[inline(always)]
    fn bshl(self, a: [u8; 16], n: u32) -> [u8; 16] {
        a.map(|v| v << n)
    }
    #[inline(always)]
    fn blut(self, table: [u8; 16], idx: [u8; 16]) -> [u8; 16] {
        idx.map(|i| table[usize::from(i)])
    }
    #[inline(always)]
    fn widen_u8(self, b: [u8; 16], i: usize) -> f32 {
        f32::from(b[i])
    }
    #[inline(always)]
    fn widen_i8(self, b: [u8; 16], i: usize) -> f32 {
        f32::from(b[i] as i8)
    }
}
