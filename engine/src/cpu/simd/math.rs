//! exp, SiLU and tanh-GELU on vectors, accurate to a few f32 ulps.
//!
//! exp uses Cephes' `expf` reduction and polynomial: `x = n ln2 + r` with `ln2` split in two
//! so `r` is exact, `e^r` by a degree-7 polynomial on |r| <= ln2/2, then scaled by `2^n`.

use super::Simd;

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Inputs are clamped so that `2^n` stays a normal f32; e^-87 and e^88 are as good as 0 and
/// infinity for softmax and the activations.
const EXP_LO: f32 = -87.0;
const EXP_HI: f32 = 88.0;
/// sqrt(2 / pi), the tanh-GELU constant.
const GELU_K: f32 = 0.797_884_6;

#[inline(always)]
pub(crate) fn exp<S: Simd>(s: S, x: S::F) -> S::F {
    let x = s.min(s.max(x, s.splat(EXP_LO)), s.splat(EXP_HI));
    let n = s.round(s.mul(x, s.splat(LOG2E)));
    let r = s.fma(n, s.splat(-LN2_HI), x);
    let r = s.fma(n, s.splat(-LN2_LO), r);
    let mut p = s.splat(1.987_569_1e-4);
    p = s.fma(p, r, s.splat(1.398_199_9e-3));
    p = s.fma(p, r, s.splat(8.333_452e-3));
    p = s.fma(p, r, s.splat(4.166_579_6e-2));
    p = s.fma(p, r, s.splat(1.666_666_5e-1));
    p = s.fma(p, r, s.splat(0.5));
    let y = s.fma(p, s.mul(r, r), s.add(r, s.splat(1.0)));
    s.mul(y, s.pow2i(n))
}

/// `x * sigmoid(x)`.
#[inline(always)]
pub(crate) fn silu<S: Simd>(s: S, x: S::F) -> S::F {
    let e = exp(s, s.sub(s.zero(), x));
    s.div(x, s.add(s.splat(1.0), e))
}

/// gpt-oss's gate: with `g = min(x, limit)`, `g * sigmoid(alpha g)`.
#[inline(always)]
pub(crate) fn silu_oai<S: Simd>(s: S, x: S::F) -> S::F {
    use wllm_loaders::model::{SWIGLU_OAI_ALPHA, SWIGLU_OAI_LIMIT};
    let g = s.min(x, s.splat(SWIGLU_OAI_LIMIT));
    let e = exp(s, s.mul(s.splat(-SWIGLU_OAI_ALPHA), g));
    s.div(g, s.add(s.splat(1.0), e))
}

/// gpt-oss's up value: `clamp(x, -limit, limit) + 1`.
#[inline(always)]
pub(crate) fn up_oai<S: Simd>(s: S, x: S::F) -> S::F {
    use wllm_loaders::model::SWIGLU_OAI_LIMIT;
    let c = s.max(s.min(x, s.splat(SWIGLU_OAI_LIMIT)), s.splat(-SWIGLU_OAI_LIMIT));
    s.add(c, s.splat(1.0))
}

/// `0.5 x (1 + tanh(k (x + 0.044715 x^3)))`, computed as `x * sigmoid(2 k (x + 0.044715 x^3))`
/// (the same function; no cancellation near 0).
#[inline(always)]
pub(crate) fn gelu_tanh<S: Simd>(s: S, x: S::F) -> S::F {
    let x3 = s.mul(s.mul(x, x), x);
    let u = s.mul(s.splat(-2.0 * GELU_K), s.fma(x3, s.splat(0.044_715), x));
    s.div(x, s.add(s.splat(1.0), exp(s, u)))
}
