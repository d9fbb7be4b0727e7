//! [`IDot`] for AVX2 (a block in two 16-lane halves) and AVX-512 BW (a block in one register).

use std::arch::x86_64::*;

use super::int::IDot;
use super::x86::{Avx2, Avx512};

// SAFETY (every `unsafe` block below): a token exists only inside `with_avx2`/`with_avx512`,
// which the dispatcher enters only after run-time detection of these features; loads read
// exactly the bytes of the array references they are given.

impl IDot for Avx512 {
    type W = __m512i;
    type I = __m512i;

    #[inline(always)]
    fn w_i8(self, b: &[u8; 32]) -> __m512i {
        unsafe { _mm512_cvtepi8_epi16(_mm256_loadu_si256(b.as_ptr().cast())) }
    }
    #[inline(always)]
    fn w_u8(self, b: &[u8; 32]) -> __m512i {
        unsafe { _mm512_cvtepu8_epi16(_mm256_loadu_si256(b.as_ptr().cast())) }
    }
    #[inline(always)]
    fn w_nibbles(self, b: &[u8; 16]) -> __m512i {
        unsafe {
            let q = _mm_loadu_si128(b.as_ptr().cast());
            let m = _mm_set1_epi8(0x0F);
            let (lo, hi) = (_mm_and_si128(q, m), _mm_and_si128(_mm_srli_epi16::<4>(q), m));
            _mm512_cvtepu8_epi16(_mm256_set_m128i(hi, lo))
        }
    }
    #[inline(always)]
    fn w_table(self, table: &[i8; 16], b: &[u8; 16]) -> __m512i {
        unsafe {
            let (lo, hi) = table_bytes(table, b);
            _mm512_cvtepi8_epi16(_mm256_set_m128i(hi, lo))
        }
    }
    #[inline(always)]
    fn w_and(self, w: __m512i, mask: i16) -> __m512i {
        unsafe { _mm512_and_si512(w, _mm512_set1_epi16(mask)) }
    }
    #[inline(always)]
    fn w_or(self, a: __m512i, b: __m512i) -> __m512i {
        unsafe { _mm512_or_si512(a, b) }
    }
    #[inline(always)]
    fn w_shr(self, w: __m512i, n: u32) -> __m512i {
        unsafe { _mm512_srl_epi16(w, _mm_cvtsi32_si128(n as i32)) }
    }
    #[inline(always)]
    fn w_shl(self, w: __m512i, n: u32) -> __m512i {
        unsafe { _mm512_sll_epi16(w, _mm_cvtsi32_si128(n as i32)) }
    }
    #[inline(always)]
    fn w_sub(self, w: __m512i, v: i16) -> __m512i {
        unsafe { _mm512_sub_epi16(w, _mm512_set1_epi16(v)) }
    }
    #[inline(always)]
    fn w_add_bits(self, w: __m512i, bits: u32, v: i16) -> __m512i {
        unsafe { _mm512_mask_add_epi16(w, bits, w, _mm512_set1_epi16(v)) }
    }
    #[inline(always)]
    fn w_mul2(self, w: __m512i, a: i16, b: i16) -> __m512i {
        unsafe {
            let s = _mm512_mask_blend_epi16(0xFFFF_0000, _mm512_set1_epi16(a), _mm512_set1_epi16(b));
            _mm512_mullo_epi16(w, s)
        }
    }
    #[inline(always)]
    fn madd(self, w: __m512i, x: &[i16; 32]) -> __m512i {
        unsafe { _mm512_madd_epi16(w, _mm512_loadu_si512(x.as_ptr().cast())) }
    }
    #[inline(always)]
    fn acc(self, i: __m512i, scale: f32, acc: __m512) -> __m512 {
        unsafe { _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), _mm512_set1_ps(scale), acc) }
    }
    #[inline(always)]
    fn i_zero(self) -> __m512i {
        unsafe { _mm512_setzero_si512() }
    }
    #[inline(always)]
    fn w_mul(self, w: __m512i, v: i16) -> __m512i {
        unsafe { _mm512_mullo_epi16(w, _mm512_set1_epi16(v)) }
    }
    #[inline(always)]
    fn madd_acc(self, acc: __m512i, w: __m512i, x: &[i16; 32]) -> __m512i {
        unsafe { _mm512_add_epi32(acc, self.madd(w, x)) }
    }
    #[inline(always)]
    fn bytes_dot8(self, bytes: u64, sums: &[i32; 8]) -> __m512i {
        unsafe { _mm512_zextsi256_si512(bytes_dot8(bytes, sums)) }
    }
}

/// Eight bytes times eight i32s, lane-wise.
#[inline(always)]
fn bytes_dot8(bytes: u64, sums: &[i32; 8]) -> __m256i {
    unsafe {
        let b = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(bytes as i64));
        _mm256_mullo_epi32(b, _mm256_loadu_si256(sums.as_ptr().cast()))
    }
}

/// The table values of the low and of the high nibbles of `b`, as signed bytes.
#[inline(always)]
fn table_bytes(table: &[i8; 16], b: &[u8; 16]) -> (__m128i, __m128i) {
    unsafe {
        let t = _mm_loadu_si128(table.as_ptr().cast());
        let q = _mm_loadu_si128(b.as_ptr().cast());
        let m = _mm_set1_epi8(0x0F);
        (
            _mm_shuffle_epi8(t, _mm_and_si128(q, m)),
            _mm_shuffle_epi8(t, _mm_and_si128(_mm_srli_epi16::<4>(q), m)),
        )
    }
}

/// Applies `f` to both halves of a block.
#[inline(always)]
fn both(w: [__m256i; 2], f: impl Fn(__m256i) -> __m256i) -> [__m256i; 2] {
    [f(w[0]), f(w[1])]
}

impl IDot for Avx2 {
    type W = [__m256i; 2];
    type I = __m256i;

    #[inline(always)]
    fn w_i8(self, b: &[u8; 32]) -> [__m256i; 2] {
        unsafe {
            let p = b.as_ptr().cast::<__m128i>();
            [_mm256_cvtepi8_epi16(_mm_loadu_si128(p)), _mm256_cvtepi8_epi16(_mm_loadu_si128(p.add(1)))]
        }
    }
    #[inline(always)]
    fn w_u8(self, b: &[u8; 32]) -> [__m256i; 2] {
        unsafe {
            let p = b.as_ptr().cast::<__m128i>();
            [_mm256_cvtepu8_epi16(_mm_loadu_si128(p)), _mm256_cvtepu8_epi16(_mm_loadu_si128(p.add(1)))]
        }
    }
    #[inline(always)]
    fn w_nibbles(self, b: &[u8; 16]) -> [__m256i; 2] {
        unsafe {
            let q = _mm_loadu_si128(b.as_ptr().cast());
            let m = _mm_set1_epi8(0x0F);
            [
                _mm256_cvtepu8_epi16(_mm_and_si128(q, m)),
                _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(q), m)),
            ]
        }
    }
    #[inline(always)]
    fn w_table(self, table: &[i8; 16], b: &[u8; 16]) -> [__m256i; 2] {
        unsafe {
            let (lo, hi) = table_bytes(table, b);
            [_mm256_cvtepi8_epi16(lo), _mm256_cvtepi8_epi16(hi)]
        }
    }
    #[inline(always)]
    fn w_and(self, w: [__m256i; 2], mask: i16) -> [__m256i; 2] {
        both(w, |h| unsafe { _mm256_and_si256(h, _mm256_set1_epi16(mask)) })
    }
    #[inline(always)]
    fn w_or(self, a: [__m256i; 2], b: [__m256i; 2]) -> [__m256i; 2] {
        unsafe { [_mm256_or_si256(a[0], b[0]), _mm256_or_si256(a[1], b[1])] }
    }
    #[inline(always)]
    fn w_shr(self, w: [__m256i; 2], n: u32) -> [__m256i; 2] {
        both(w, |h| unsafe { _mm256_srl_epi16(h, _mm_cvtsi32_si128(n as i32)) })
    }
    #[inline(always)]
    fn w_shl(self, w: [__m256i; 2], n: u32) -> [__m256i; 2] {
        both(w, |h| unsafe { _mm256_sll_epi16(h, _mm_cvtsi32_si128(n as i32)) })
    }
    #[inline(always)]
    fn w_sub(self, w: [__m256i; 2], v: i16) -> [__m256i; 2] {
        both(w, |h| unsafe { _mm256_sub_epi16(h, _mm256_set1_epi16(v)) })
    }
    #[inline(always)]
    fn w_add_bits(self, w: [__m256i; 2], bits: u32, v: i16) -> [__m256i; 2] {
        unsafe {
            // Lane i of a half tests bit i of that half's 16 bits.
            let sel = _mm256_setr_epi16(
                1,
                2,
                4,
                8,
                16,
                32,
                64,
                128,
                256,
                512,
                1024,
                2048,
                4096,
                8192,
                16384,
                i16::MIN,
            );
            let half = |h: __m256i, b: u32| {
                let hit = _mm256_cmpeq_epi16(_mm256_and_si256(_mm256_set1_epi16(b as u16 as i16), sel), sel);
                _mm256_add_epi16(h, _mm256_and_si256(hit, _mm256_set1_epi16(v)))
            };
            [half(w[0], bits & 0xFFFF), half(w[1], bits >> 16)]
        }
    }
    #[inline(always)]
    fn w_mul2(self, w: [__m256i; 2], a: i16, b: i16) -> [__m256i; 2] {
        unsafe {
            [_mm256_mullo_epi16(w[0], _mm256_set1_epi16(a)), _mm256_mullo_epi16(w[1], _mm256_set1_epi16(b))]
        }
    }
    #[inline(always)]
    fn madd(self, w: [__m256i; 2], x: &[i16; 32]) -> __m256i {
        unsafe {
            let p = x.as_ptr().cast::<__m256i>();
            _mm256_add_epi32(
                _mm256_madd_epi16(w[0], _mm256_loadu_si256(p)),
                _mm256_madd_epi16(w[1], _mm256_loadu_si256(p.add(1))),
            )
        }
    }
    #[inline(always)]
    fn acc(self, i: __m256i, scale: f32, acc: __m256) -> __m256 {
        unsafe { _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), _mm256_set1_ps(scale), acc) }
    }
    #[inline(always)]
    fn i_zero(self) -> __m256i {
        unsafe { _mm256_setzero_si256() }
    }
    #[inline(always)]
    fn w_mul(self, w: [__m256i; 2], v: i16) -> [__m256i; 2] {
        both(w, |h| unsafe { _mm256_mullo_epi16(h, _mm256_set1_epi16(v)) })
    }
    #[inline(always)]
    fn madd_acc(self, acc: __m256i, w: [__m256i; 2], x: &[i16; 32]) -> __m256i {
        unsafe { _mm256_add_epi32(acc, self.madd(w, x)) }
    }
    #[inline(always)]
    fn bytes_dot8(self, bytes: u64, sums: &[i32; 8]) -> __m256i {
        bytes_dot8(bytes, sums)
    }
}
