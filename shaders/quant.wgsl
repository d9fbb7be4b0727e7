// Quant inner blocks. Exactly one WTYPE_* is defined per variant. Each type provides
//   const QK: u32           elements per block (32 or 256; the float types use 32-element units)
//   const BLOCK_BYTES: u32  bytes per block
//   fn dq32(blk: u32, u: u32) -> array<vec4<f32>, 8>
// which dequantizes the u-th run of 32 consecutive elements of the block starting at byte `blk`.
// out[i] holds elements 4i..4i+3 of the run. Layouts follow ggml-common.h at llama.cpp 0c1e570.

#include "common.wgsl"

alias Unit = array<vec4<f32>, 8>;

#ifdef WTYPE_F32
const QK: u32 = 32u;
const BLOCK_BYTES: u32 = 128u;
fn dq32(blk: u32, u: u32) -> Unit {
    var out: Unit;
    let w = blk >> 2u;
    for (var i = 0u; i < 8u; i++) {
        out[i] = bitcast<vec4<f32>>(vec4<u32>(W[w + 4u * i], W[w + 4u * i + 1u], W[w + 4u * i + 2u], W[w + 4u * i + 3u]));
    }
    return out;
}
#endif

#ifdef WTYPE_F16
const QK: u32 = 32u;
const BLOCK_BYTES: u32 = 64u;
fn dq32(blk: u32, u: u32) -> Unit {
    var out: Unit;
    let w = blk >> 2u;
    for (var i = 0u; i < 8u; i++) {
        out[i] = vec4<f32>(unpack2x16float(W[w + 2u * i]), unpack2x16float(W[w + 2u * i + 1u]));
    }
    return out;
}
#endif

#ifdef WTYPE_BF16
const QK: u32 = 32u;
const BLOCK_BYTES: u32 = 64u;
fn dq32(blk: u32, u: u32) -> Unit {
    var out: Unit;
    let w = blk >> 2u;
    for (var i = 0u; i < 8u; i++) {
        let a = W[w + 2u * i];
        let b = W[w + 2u * i + 1u];
        out[i] = bitcast<vec4<f32>>(vec4<u32>(a << 16u, a & 0xFFFF0000u, b << 16u, b & 0xFFFF0000u));
    }
    return out;
}
#endif

#ifdef WTYPE_Q4_0
const QK: u32 = 32u;
const BLOCK_BYTES: u32 = 18u;
fn dq32(blk: u32, u: u32) -> Unit {
    var out: Unit;
    let d = w_f16(blk);
    for (var i = 0u; i < 4u; i++) {
        let q = w_u32(blk + 2u + 4u * i);
        out[i] = (lo_nibbles(q) - 8.0) * d;
        out[i + 4u] = (hi_nibbles(q) - 8.0) * d;
    }
    return out;
}
#endif

#ifdef WTYPE_Q4_1
const QK: u32 = 32u;
const BLOCK_BYTES: u32 = 20u;
fn dq32(blk: u32, u: u32) -> Unit {
    var out: Unit;
    let d = w_f16(blk);
    let m = w_f16(blk + 2u);
    for (var i = 0u; i < 4u; i++) {
        let q = w_u32(blk + 4u + 4u * i);
        out[i] = lo_nibbles(q) * d + m;
        out[i + 4u] = hi_nibbles(q) * d + m;
    }
    return out;
}
#endif

#ifdef WTYPE_Q5_0
const QK: u32 = 32u;
const BLOCK_BYTES: u32 = 22u;
fn dq32(blk: u32, u: u32) -> Unit {
    var out: Unit;
    let d = w_f16(blk);
    let qh = w_u32(blk + 2u);
    for (var i = 0u; i < 4u; i++) {
        let q = w_u32(blk + 6u + 4u * i);
        out[i] = (lo_nibbles(q) + 16.0 * bits4(qh, 4u * i) - 16.0) * d;
        out[i + 4u] = (hi_nibbles(q) + 16.0 * bits4(qh, 16u + 4u * i) - 16.0) * d;
    }
    return out;
}
#endif

#ifdef WTYPE_Q5_1
const QK: u32 = 32u;
const BLOCK_BYTES: u32 = 24u;
fn dq32(blk: u32, u: u32) -> Unit {
    var out: Unit;
    let d = w_f16(blk);
    let m = w_f16(blk + 2u);
    let qh = w_u32(blk + 4u);
    for (var i = 0u; i < 4u; i++) {
        let q = w_u32(blk + 8u + 4u * i);
        out[i] = (lo_nibbles(q) + 16.0 * bits4(qh, 4u * i)) * d + m;
        out[i + 4u] = (hi_nibbles(q) + 16.0 * bits4(qh, 16u + 4u * i)) * d + m;
    }
    return out;
}
#endif

#ifdef WTYPE_Q8_0
const QK: u32 = 32u;
const BLOCK_BYTES: u32 = 34u;
fn dq32(blk: u32, u: u32) -> Unit {
    var out: Unit;
    let d = w_f16(blk);
    for (var i = 0u; i < 8u; i++) {
        out[i] = sbytes4(w_u32(blk + 2u + 4u * i)) * d;
    }
    return out;
}
#endif

#ifdef WTYPE_MXFP4
const QK: u32 = 32u;
const BLOCK_BYTES: u32 = 17u;
var<private> KV_MXFP4: array<f32, 16> = array<f32, 16>(0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 0.0, -1.0, -2.0, -3.0, -4.0, -6.0, -8.0, -12.0);
fn dq32(blk: u32, u: u32) -> Unit {
    var out: Unit;
    let e = w_u8(blk);
    // E8M0 exponent, halved: 2^(e - 128); e < 2 gives the subnormal values ggml uses.
    var d: f32;
    if (e < 2u) {
        d = bitcast<f32>(0x00200000u << e);
    } else {
        d = bitcast<f32>((e - 1u) << 23u);
    }
    for (var i = 0u; i < 4u; i++) {
        let q = w_u32(blk + 1u + 4u * i);
        let lo = (vec4<u32>(q) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(0xFu);
        let hi = (vec4<u32>(q) >> vec4<u32>(4u, 12u, 20u, 28u)) & vec4<u32>(0xFu);
        out[i] = vec4<f32>(KV_MXFP4[lo.x], KV_MXFP4[lo.y], KV_MXFP4[lo.z], KV_MXFP4[lo.w]) * d;
        out[i + 4u] = vec4<f32>(KV_MXFP4[hi.x], KV_MXFP4[hi.y], KV_MXFP4[hi.z], KV_MXFP4[hi.w]) * d;
    }
    return out;
}
#endif

// ---- K-quants: 256-element super-blocks, eight 32-element runs each ----

#ifdef WTYPE_Q2_K
const QK: u32 = 256u;
const BLOCK_BYTES: u32 = 84u;
// scales[16] @0 (low nibble scale, high nibble min), qs[64] @16, d @80, dmin @82.
// Run u: half n = u/4 of 128 elements, 2-bit plane j = u%4; two 16-element sub-blocks.
fn dq32(blk: u32, u: u32) -> Unit {
    var out: Unit;
    let d = w_f16(blk + 80u);
    let dmin = w_f16(blk + 82u);
    let n = u >> 2u;
    let j = u & 3u;
    let sc = w_u16(blk + n * 8u + 2u * j);
    let shift = 2u * j;
    for (var h = 0u; h < 2u; h++) {
        let s = (sc >> (8u * h)) & 0xFFu;
        let dl = d * f32(s & 0xFu);
        let ml = dmin * f32(s >> 4u);
        for (var i = 0u; i < 4u; i++) {
            let q = w_u32(blk + 16u + n * 32u + 16u * h + 4u * i);
            let v = vec4<f32>((vec4<u32>(q) >> (vec4<u32>(0u, 8u, 16u, 24u) + vec4<u32>(shift))) & vec4<u32>(3u));
            out[4u * h + i] = dl * v - ml;
        }
    }
    return out;
}
#endif

#ifdef WTYPE_Q3_K
const QK: u32 = 256u;
const BLOCK_BYTES: u32 = 110u;
// hmask[32] @0, qs[64] @32, scales[12] @96 (sixteen 6-bit scales), d @108.
fn q3k_scale(blk: u32, i: u32) -> f32 {
    let lo = (w_u8(blk + 96u + (i & 7u)) >> (4u * (i >> 3u))) & 0xFu;
    let hi = (w_u8(blk + 104u + (i & 3u)) >> (2u * (i >> 2u))) & 3u;
    return f32(i32(lo | (hi << 4u)) - 32);
}
fn dq32(blk: u32, u: u32) -> Unit {
    var out: Unit;
    let d = w_f16(blk + 108u);
    let n = u >> 2u;
    let j = u & 3u;
    let shift = 2u * j;
    let mbit = 4u * n + j;
    for (var h = 0u; h < 2u; h++) {
        let dl = d * q3k_scale(blk, n * 8u + 2u * j + h);
        for (var i = 0u; i < 4u; i++) {
            let l = 16u * h + 4u * i;
            let q = w_u32(blk + 32u + n * 32u + l);
            let hm = w_u32(blk + l);
            let v = vec4<f32>((vec4<u32>(q) >> (vec4<u32>(0u, 8u, 16u, 24u) + vec4<u32>(shift))) & vec4<u32>(3u));
            let m = vec4<f32>((vec4<u32>(hm) >> (vec4<u32>(0u, 8u, 16u, 24u) + vec4<u32>(mbit))) & vec4<u32>(1u));
            out[4u * h + i] = dl * (v - 4.0 + 4.0 * m);
        }
    }
    return out;
}
#endif

#ifdef WTYPE_Q4_K
const QK: u32 = 256u;
const BLOCK_BYTES: u32 = 144u;
#define KQ_SCALE_MIN
#endif
#ifdef WTYPE_Q5_K
const QK: u32 = 256u;
const BLOCK_BYTES: u32 = 176u;
#define KQ_SCALE_MIN
#endif

#ifdef KQ_SCALE_MIN
// Q4_K/Q5_K: d @0, dmin @2, scales[12] @4 packing eight 6-bit (scale, min) pairs.
fn kq_scale_min(blk: u32, j: u32) -> vec2<f32> {
    var sc: u32;
    var m: u32;
    if (j < 4u) {
        sc = w_u8(blk + 4u + j) & 63u;
        m = w_u8(blk + 8u + j) & 63u;
    } else {
        sc = (w_u8(blk + 8u + j) & 0xFu) | ((w_u8(blk + j) >> 6u) << 4u);
        m = (w_u8(blk + 8u + j) >> 4u) | ((w_u8(blk + 4u + j) >> 6u) << 4u);
    }
    return vec2<f32>(w_f16(blk) * f32(sc), w_f16(blk + 2u) * f32(m));
}
#endif

#ifdef WTYPE_Q4_K
// qs[128] @16: 64-element group p = u/2 uses bytes 32p..32p+31, low nibbles for even u.
fn dq32(blk: u32, u: u32) -> Unit {
    var out: Unit;
    let dm = kq_scale_min(blk, u);
    let base = blk + 16u + (u >> 1u) * 32u;
    let shift = 4u * (u & 1u);
    for (var i = 0u; i < 8u; i++) {
        let q = w_u32(base + 4u * i);
        let v = vec4<f32>((vec4<u32>(q) >> (vec4<u32>(0u, 8u, 16u, 24u) + vec4<u32>(shift))) & vec4<u32>(0xFu));
        out[i] = dm.x * v - dm.y;
    }
    return out;
}
#endif

#ifdef WTYPE_Q5_K
// qh[32] @16 (bit u of byte l is the fifth bit of element l of run u), qs[128] @48.
fn dq32(blk: u32, u: u32) -> Unit {
    var out: Unit;
    let dm = kq_scale_min(blk, u);
    let base = blk + 48u + (u >> 1u) * 32u;
    let shift = 4u * (u & 1u);
    for (var i = 0u; i < 8u; i++) {
        let q = w_u32(base + 4u * i);
        let h = w_u32(blk + 16u + 4u * i);
        let v = vec4<f32>((vec4<u32>(q) >> (vec4<u32>(0u, 8u, 16u, 24u) + vec4<u32>(shift))) & vec4<u32>(0xFu));
        let hb = vec4<f32>((vec4<u32>(h) >> (vec4<u32>(0u, 8u, 16u, 24u) + vec4<u32>(u))) & vec4<u32>(1u));
        out[i] = dm.x * (v + 16.0 * hb) - dm.y;
    }
    return out;
}
#endif

#ifdef WTYPE_Q6_K
const QK: u32 = 256u;
const BLOCK_BYTES: u32 = 210u;
// ql[128] @0, qh[64] @128, scales[16] (int8) @192, d @208.
// Run u: half n = u/4, quarter j = u%4; element l of the run takes the low (j<2) or high
// nibble of ql[64n + 32(j&1) + l] and bits 2j..2j+1 of qh[32n + l]; scale 8n + 2j + l/16.
fn dq32(blk: u32, u: u32) -> Unit {
    var out: Unit;
    let d = w_f16(blk + 208u);
    let n = u >> 2u;
    let j = u & 3u;
    let ql_base = blk + 64u * n + 32u * (j & 1u);
    let qh_base = blk + 128u + 32u * n;
    let lshift = 4u * (j >> 1u);
    let hshift = 2u * j;
    let sc = w_u16(blk + 192u + 8u * n + 2u * j);
    let s0 = d * f32(extractBits(bitcast<i32>(sc), 0u, 8u));
    let s1 = d * f32(extractBits(bitcast<i32>(sc), 8u, 8u));
    for (var i = 0u; i < 8u; i++) {
        let ql = w_u32(ql_base + 4u * i);
        let qh = w_u32(qh_base + 4u * i);
        let lo = (vec4<u32>(ql) >> (vec4<u32>(0u, 8u, 16u, 24u) + vec4<u32>(lshift))) & vec4<u32>(0xFu);
        let hi = (vec4<u32>(qh) >> (vec4<u32>(0u, 8u, 16u, 24u) + vec4<u32>(hshift))) & vec4<u32>(3u);
        let q = vec4<f32>(lo | (hi << vec4<u32>(4u))) - 32.0;
        out[i] = q * select(s1, s0, i < 4u);
    }
    return out;
}
#endif
