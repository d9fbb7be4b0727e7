//! AVX2+FMA+F16C (8 lanes) and AVX-512 F/BW/VL/DQ (16 lanes).

use std::arch::x86_64::*;

use super::Simd;

#[derive(Copy, Clone, Debug)]
pub(crate) struct Avx2(());

#[derive(Copy, Clone, Debug)]
pub(crate) struct Avx512(());

/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c,bmi1,bmi2,lzcnt,popcnt")]
pub(crate) unsafe fn with_avx2<R>(f: impl FnOnce(Avx2) -> R) -> R {
    f(Avx2(()))
}

/// # Safety
/// The CPU must have AVX-512 F/BW/VL/DQ besides AVX2, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,bmi1,bmi2,lzcnt,popcnt")]
pub(crate) unsafe fn with_avx512<R>(f: impl FnOnce(Avx512) -> R) -> R {
    f(Avx512(()))
}

const NEAREST: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

// SAFETY (every `unsafe` block below): a token exists only inside `with_avx2`/`with_avx512`,
// which the dispatcher enters only after run-time detection of these features.

/// The byte-vector methods, the same SSE code for both widths.
macro_rules! bytes_sse {
    () => {
        type B = __m128i;
        #[inline(always)]
        fn bload(self, b: &[u8]) -> __m128i {
            assert!(b.len() >= 16);
            unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
        }
        #[inline(always)]
        fn bsplat(self, v: u8) -> __m128i {
            unsafe { _mm_set1_epi8(v as i8) }
        }
        #[inline(always)]
        fn bfrom_u64(self, lo: u64, hi: u64) -> __m128i {
            unsafe { _mm_set_epi64x(hi as i64, lo as i64) }
        }
        #[inline(always)]
        fn band(self, a: __m128i, b: __m128i) -> __m128i {
            unsafe { _mm_and_si128(a, b) }
        }
        #[inline(always)]
        fn bor(self, a: __m128i, b: __m128i) -> __m128i {
            unsafe { _mm_or_si128(a, b) }
        }
        #[inline(always)]
        fn bshr(self, a: __m128i, n: u32) -> __m128i {
            // 16-bit lanes shift bits across the byte boundary; the mask clears them.
            unsafe {
                _mm_and_si128(
                    _mm_srl_epi16(a, _mm_cvtsi32_si128(n as i32)),
                    _mm_set1_epi8((0xFFu32 >> n) as u8 as i8),
                )
            }
        }
        #[inline(always)]
        fn bshl(self, a: __m128i, n: u32) -> __m128i {
            unsafe {
                _mm_and_si128(
                    _mm_sll_epi16(a, _mm_cvtsi32_si128(n as i32)),
                    _mm_set1_epi8((0xFFu32 << n) as u8 as i8),
                )
            }
        }
        #[inline(always)]
        fn blut(self, table: __m128i, idx: __m128i) -> __m128i {
            // SSSE3, implied by AVX2.
            unsafe { _mm_shuffle_epi8(table, idx) }
        }
    };
}

#[inline(always)]
fn f16_scalar(h: u16) -> f32 {
    unsafe { _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(h)))) }
}

impl Simd for Avx2 {
    type F = __m256;
    const N: usize = 8;

    #[inline(always)]
    fn zero(self) -> __m256 {
        unsafe { _mm256_setzero_ps() }
    }
    #[inline(always)]
    fn splat(self, v: f32) -> __m256 {
        unsafe { _mm256_set1_ps(v) }
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> __m256 {
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: __m256) {
        unsafe { _mm256_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn load_f16(self, p: *const u16) -> __m256 {
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
    }
    #[inline(always)]
    unsafe fn store_f16(self, p: *mut u16, v: __m256) {
        unsafe { _mm_storeu_si128(p.cast(), _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v)) }
    }
    #[inline(always)]
    fn add(self, a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    fn sub(self, a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_sub_ps(a, b) }
    }
    #[inline(always)]
    fn mul(self, a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_mul_ps(a, b) }
    }
    #[inline(always)]
    fn div(self, a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_div_ps(a, b) }
    }
    #[inline(always)]
    fn max(self, a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_max_ps(a, b) }
    }
    #[inline(always)]
    fn min(self, a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_min_ps(a, b) }
    }
    #[inline(always)]
    fn fma(self, a: __m256, b: __m256, c: __m256) -> __m256 {
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn round(self, v: __m256) -> __m256 {
        unsafe { _mm256_round_ps::<NEAREST>(v) }
    }
    #[inline(always)]
    fn pow2i(self, n: __m256) -> __m256 {
        unsafe {
            let e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
            _mm256_castsi256_ps(_mm256_slli_epi32::<23>(e))
        }
    }
    #[inline(always)]
    fn sum(self, v: __m256) -> f32 {
        unsafe {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
        }
    }
    #[inline(always)]
    fn f16(self, h: u16) -> f32 {
        f16_scalar(h)
    }

    bytes_sse!();
    #[inline(always)]
    fn widen_u8(self, b: __m128i, i: usize) -> __m256 {
        unsafe {
            let b = if i == 0 { b } else { _mm_unpackhi_epi64(b, b) };
            _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b))
        }
    }
    #[inline(always)]
    fn widen_i8(self, b: __m128i, i: usize) -> __m256 {
        unsafe {
            let b = if i == 0 { b } else { _mm_unpackhi_epi64(b, b) };
            _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b))
        }
    }
}

impl Simd for Avx512 {
    type F = __m512;
    const N: usize = 16;

    #[inline(always)]
    fn zero(self) -> __m512 {
        unsafe { _mm512_setzero_ps() }
    }
    #[inline(always)]
    fn splat(self, v: f32) -> __m512 {
        unsafe { _mm512_set1_ps(v) }
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> __m512 {
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: __m512) {
        unsafe { _mm512_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn load_f16(self, p: *const u16) -> __m512 {
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())) }
    }
    #[inline(always)]
    unsafe fn store_f16(self, p: *mut u16, v: __m512) {
        unsafe { _mm256_storeu_si256(p.cast(), _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v)) }
    }
    #[inline(always)]
    fn add(self, a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    fn sub(self, a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_sub_ps(a, b) }
    }
    #[inline(always)]
    fn mul(self, a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_mul_ps(a, b) }
    }
    #[inline(always)]
    fn div(self, a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_div_ps(a, b) }
    }
    #[inline(always)]
    fn max(self, a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_max_ps(a, b) }
    }
    #[inline(always)]
    fn min(self, a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_min_ps(a, b) }
    }
    #[inline(always)]
    fn fma(self, a: __m512, b: __m512, c: __m512) -> __m512 {
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn round(self, v: __m512) -> __m512 {
        unsafe { _mm512_roundscale_ps::<NEAREST>(v) }
    }
    #[inline(always)]
    fn pow2i(self, n: __m512) -> __m512 {
        unsafe {
            let e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
            _mm512_castsi512_ps(_mm512_slli_epi32::<23>(e))
        }
    }
    #[inline(always)]
    fn sum(self, v: __m512) -> f32 {
        unsafe { _mm512_reduce_add_ps(v) }
    }
    #[inline(always)]
    fn f16(self, h: u16) -> f32 {
        f16_scalar(h)
    }

    bytes_sse!();
    #[inline(always)]
    fn widen_u8(self, b: __m128i, _i: usize) -> __m512 {
        unsafe { _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(b)) }
    }
    #[inline(always)]
    fn widen_i8(self, b: __m128i, _i: usize) -> __m512 {
        unsafe { _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b)) }
    }
}
