//! NEON (4 lanes), always present on aarch64.

use std::arch::aarch64::*;

use super::Simd;

#[derive(Copy, Clone, Debug)]
pub(crate) struct Neon(());

/// # Safety
/// The CPU must have NEON.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn with_neon<R>(f: impl FnOnce(Neon) -> R) -> R {
    f(Neon(()))
}

// SAFETY (every `unsafe` block below): a token exists only inside `with_neon`, which the
// dispatcher enters only after run-time detection of NEON.

impl Simd for Neon {
    type F = float32x4_t;
    const N: usize = 4;

    #[inline(always)]
    fn zero(self) -> float32x4_t {
        unsafe { vdupq_n_f32(0.0) }
    }
    #[inline(always)]
    fn splat(self, v: f32) -> float32x4_t {
        unsafe { vdupq_n_f32(v) }
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> float32x4_t {
        unsafe { vld1q_f32(p) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: float32x4_t) {
        unsafe { vst1q_f32(p, v) }
    }
    #[inline(always)]
    unsafe fn load_f16(self, p: *const u16) -> float32x4_t {
        // Half conversion instructions need the optional FP16 extension; four scalar
        // conversions keep this path baseline NEON.
        let mut v = [0f32; 4];
        for (i, v) in v.iter_mut().enumerate() {
            *v = half::f16::from_bits(unsafe { p.add(i).read_unaligned() }).to_f32();
        }
        unsafe { vld1q_f32(v.as_ptr()) }
    }
    #[inline(always)]
    unsafe fn store_f16(self, p: *mut u16, v: float32x4_t) {
        let mut a = [0f32; 4];
        unsafe { vst1q_f32(a.as_mut_ptr(), v) };
        for (i, a) in a.iter().enumerate() {
            unsafe { p.add(i).write_unaligned(half::f16::from_f32(*a).to_bits()) };
        }
    }
    #[inline(always)]
    fn add(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        unsafe { vaddq_f32(a, b) }
    }
    #[inline(always)]
    fn sub(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        unsafe { vsubq_f32(a, b) }
    }
    #[inline(always)]
    fn mul(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        unsafe { vmulq_f32(a, b) }
    }
    #[inline(always)]
    fn div(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        unsafe { vdivq_f32(a, b) }
    }
    #[inline(always)]
    fn max(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        unsafe { vmaxq_f32(a, b) }
    }
    #[inline(always)]
    fn min(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        unsafe { vminq_f32(a, b) }
    }
    #[inline(always)]
    fn fma(self, a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
        unsafe { vfmaq_f32(c, a, b) }
    }
    #[inline(always)]
    fn round(self, v: float32x4_t) -> float32x4_t {
        unsafe { vrndnq_f32(v) }
    }
    #[inline(always)]
    fn pow2i(self, n: float32x4_t) -> float32x4_t {
        unsafe {
            let e = vaddq_s32(vcvtnq_s32_f32(n), vdupq_n_s32(127));
            vreinterpretq_f32_s32(vshlq_n_s32::<23>(e))
        }
    }
    #[inline(always)]
    fn sum(self, v: float32x4_t) -> f32 {
        unsafe { vaddvq_f32(v) }
    }
    #[inline(always)]
    fn f16(self, h: u16) -> f32 {
        half::f16::from_bits(h).to_f32()
    }

    type B = uint8x16_t;
    #[inline(always)]
    fn bload(self, b: &[u8]) -> uint8x16_t {
        assert!(b.len() >= 16);
        unsafe { vld1q_u8(b.as_ptr()) }
    }
    #[inline(always)]
    fn bsplat(self, v: u8) -> uint8x16_t {
        unsafe { vdupq_n_u8(v) }
    }
    #[inline(always)]
    fn bfrom_u64(self, lo: u64, hi: u64) -> uint8x16_t {
        unsafe { vreinterpretq_u8_u64(vcombine_u64(vcreate_u64(lo), vcreate_u64(hi))) }
    }
    #[inline(always)]
    fn band(self, a: uint8x16_t, b: uint8x16_t) -> uint8x16_t {
        unsafe { vandq_u8(a, b) }
    }
    #[inline(always)]
    fn bor(self, a: uint8x16_t, b: uint8x16_t) -> uint8x16_t {
        unsafe { vorrq_u8(a, b) }
    }
    #[inline(always)]
    fn bshr(self, a: uint8x16_t, n: u32) -> uint8x16_t {
        // A negative count shifts right.
        unsafe { vshlq_u8(a, vdupq_n_s8(-(n as i8))) }
    }
    #[inline(always)]
    fn bshl(self, a: uint8x16_t, n: u32) -> uint8x16_t {
        unsafe { vshlq_u8(a, vdupq_n_s8(n as i8)) }
    }
    #[inline(always)]
    fn blut(self, table: uint8x16_t, idx: uint8x16_t) -> uint8x16_t {
        unsafe { vqtbl1q_u8(table, idx) }
    }
    #[inline(always)]
    fn widen_u8(self, b: uint8x16_t, i: usize) -> float32x4_t {
        unsafe {
            let h = if i < 2 { vmovl_u8(vget_low_u8(b)) } else { vmovl_high_u8(b) };
            let w = if i % 2 == 0 { vmovl_u16(vget_low_u16(h)) } else { vmovl_high_u16(h) };
            vcvtq_f32_u32(w)
        }
    }
    #[inline(always)]
    fn widen_i8(self, b: uint8x16_t, i: usize) -> float32x4_t {
        unsafe {
            let b = vreinterpretq_s8_u8(b);
            let h = if i < 2 { vmovl_s8(vget_low_s8(b)) } else { vmovl_high_s8(b) };
            let w = if i % 2 == 0 { vmovl_s16(vget_low_s16(h)) } else { vmovl_high_s16(h) };
            vcvtq_f32_s32(w)
        }
    }
}
