//! The few vector operations the CPU kernels are written in, one implementation per
//! instruction set. Kernels are generic `#[inline(always)]` functions over [`Simd`]; the
//! [`dispatch!`](crate::cpu::simd::dispatch) macro instantiates one inside a
//! `#[target_feature]` function for the [`Isa`](crate::cpu::Isa) in hand, so the compiler
//! also auto-vectorizes the plain loops (dequantization) for that instruction set.
//!
//! The implementing types are zero-sized tokens that only exist inside those functions, which
//! is what makes the methods safe to call.

pub(crate) mod int;
pub(crate) mod math;
#[cfg(target_arch = "aarch64")]
pub(crate) mod neon;
mod scalar;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86;
#[cfg(target_arch = "x86_64")]
mod x86_int;

pub(crate) use scalar::{Scalar, with_scalar};

pub(crate) trait Simd: Copy + Send + Sync + 'static {
    /// A vector of `N` f32 lanes.
    type F: Copy;
    const N: usize;

    fn zero(self) -> Self::F;
    fn splat(self, v: f32) -> Self::F;
    /// # Safety
    /// `p` must be valid for reading `N` f32 (no alignment needed).
    unsafe fn load(self, p: *const f32) -> Self::F;
    /// # Safety
    /// `p` must be valid for writing `N` f32 (no alignment needed).
    unsafe fn store(self, p: *mut f32, v: Self::F);
    /// # Safety
    /// `p` must be valid for reading `N` u16 (no alignment needed).
    unsafe fn load_f16(self, p: *const u16) -> Self::F;
    /// # Safety
    /// `p` must be valid for writing `N` u16 (no alignment needed).
    unsafe fn store_f16(self, p: *mut u16, v: Self::F);

    fn add(self, a: Self::F, b: Self::F) -> Self::F;
    fn sub(self, a: Self::F, b: Self::F) -> Self::F;
    fn mul(self, a: Self::F, b: Self::F) -> Self::F;
    fn div(self, a: Self::F, b: Self::F) -> Self::F;
    fn max(self, a: Self::F, b: Self::F) -> Self::F;
    fn min(self, a: Self::F, b: Self::F) -> Self::F;
    /// `a * b + c` with one rounding.
    fn fma(self, a: Self::F, b: Self::F, c: Self::F) -> Self::F;
    /// Round to the nearest integer, ties to even.
    fn round(self, v: Self::F) -> Self::F;
    /// `2^n` for integer-valued `n` in -126..=127.
    fn pow2i(self, n: Self::F) -> Self::F;
    fn sum(self, v: Self::F) -> f32;
    /// One IEEE half to f32.
    fn f16(self, h: u16) -> f32;

    /// Sixteen bytes, for unpacking quantized blocks.
    type B: Copy;
    /// The first 16 bytes of `b`.
    fn bload(self, b: &[u8]) -> Self::B;
    fn bsplat(self, v: u8) -> Self::B;
    /// Bytes 0..8 from `lo`, 8..16 from `hi` (little-endian).
    fn bfrom_u64(self, lo: u64, hi: u64) -> Self::B;
    fn band(self, a: Self::B, b: Self::B) -> Self::B;
    fn bor(self, a: Self::B, b: Self::B) -> Self::B;
    /// Each byte shifted right by `n` (0..8), zeros shifted in.
    fn bshr(self, a: Self::B, n: u32) -> Self::B;
    /// Each byte shifted left by `n` (0..8), zeros shifted in.
    fn bshl(self, a: Self::B, n: u32) -> Self::B;
    /// Byte `i` is `table[idx[i]]`; every index must be below 16. The decode of the table
    /// formats (IQ4, MXFP4): one shuffle maps sixteen 4-bit codes to their values.
    fn blut(self, table: Self::B, idx: Self::B) -> Self::B;
    /// Bytes `i·N .. (i+1)·N` (`i < 16 / N`) as unsigned integers in f32.
    fn widen_u8(self, b: Self::B, i: usize) -> Self::F;
    /// Bytes `i·N .. (i+1)·N` as signed integers in f32.
    fn widen_i8(self, b: Self::B, i: usize) -> Self::F;

    /// The first `N` elements of `s`.
    #[inline(always)]
    fn ld(self, s: &[f32]) -> Self::F {
        assert!(s.len() >= Self::N);
        // SAFETY: checked just above.
        unsafe { self.load(s.as_ptr()) }
    }
    #[inline(always)]
    fn st(self, s: &mut [f32], v: Self::F) {
        assert!(s.len() >= Self::N);
        // SAFETY: checked just above.
        unsafe { self.store(s.as_mut_ptr(), v) }
    }
}

/// Runs `$body` with `$s` bound to the [`Simd`] token of `$isa`, compiled for its features.
macro_rules! dispatch {
    ($isa:expr, |$s:ident| $body:expr) => {{
        let isa: $crate::cpu::Isa = $isa;
        #[cfg(target_arch = "x86_64")]
        {
            if isa.is_avx512() {
                // SAFETY: an `Isa` of this kind exists only when the CPU has these features.
                unsafe {
                    $crate::cpu::simd::x86::with_avx512(
                        #[inline(always)]
                        |$s| $body,
                    )
                }
            } else if isa.is_avx2() {
                // SAFETY: as above.
                unsafe {
                    $crate::cpu::simd::x86::with_avx2(
                        #[inline(always)]
                        |$s| $body,
                    )
                }
            } else {
                $crate::cpu::simd::with_scalar(|$s| $body)
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            if isa.is_neon() {
                // SAFETY: an `Isa` of this kind exists only when the CPU has NEON.
                unsafe {
                    $crate::cpu::simd::neon::with_neon(
                        #[inline(always)]
                        |$s| $body,
                    )
                }
            } else {
                $crate::cpu::simd::with_scalar(|$s| $body)
            }
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            let _ = isa;
            $crate::cpu::simd::with_scalar(|$s| $body)
        }
    }};
}
pub(crate) use dispatch;

/// `sum(a[i] * b[i])` over the common length.
#[inline(always)]
pub(crate) fn dot<S: Simd>(s: S, a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [s.zero(); 4];
    let mut i = 0;
    while i + 4 * S::N <= n {
        for (j, acc) in acc.iter_mut().enumerate() {
            let o = i + j * S::N;
            *acc = s.fma(s.ld(&a[o..]), s.ld(&b[o..]), *acc);
        }
        i += 4 * S::N;
    }
    while i + S::N <= n {
        acc[0] = s.fma(s.ld(&a[i..]), s.ld(&b[i..]), acc[0]);
        i += S::N;
    }
    let mut t = s.sum(s.add(s.add(acc[0], acc[1]), s.add(acc[2], acc[3])));
    for k in i..n {
        t += a[k] * b[k];
    }
    t
}

/// `y[i] += a * x[i]` over the common length.
#[inline(always)]
pub(crate) fn axpy<S: Simd>(s: S, a: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let va = s.splat(a);
    let mut i = 0;
    while i + S::N <= n {
        let v = s.fma(va, s.ld(&x[i..]), s.ld(&y[i..]));
        s.st(&mut y[i..], v);
        i += S::N;
    }
    for k in i..n {
        y[k] = a.mul_add(x[k], y[k]);
    }
}

/// `x[i] *= a`.
#[inline(always)]
pub(crate) fn scale<S: Simd>(s: S, a: f32, x: &mut [f32]) {
    let va = s.splat(a);
    let mut chunks = x.chunks_exact_mut(S::N);
    for c in &mut chunks {
        let v = s.mul(s.ld(c), va);
        s.st(c, v);
    }
    for v in chunks.into_remainder() {
        *v *= a;
    }
}
