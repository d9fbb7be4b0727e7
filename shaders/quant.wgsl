// Quant inner blocks over the GPU layout written by engine/src/repack.rs: each block's quant
// bits ("payload", P4 vec4s) in `Q`, its scales and high bits ("meta", MW words) in `M`, both
// views of the same buffer, metadata starting at word `meta_off`. Exactly one WTYPE_* is
// defined per variant; each type provides
//   const QK: u32   elements per block (32 or 256; float types use 32-element runs)
//   const P4: u32   payload vec4s per block
//   const MW: u32   metadata words per block
//   fn dq32(blk: u32, u: u32) -> Unit
//   fn qdot32(blk: u32, u: u32, x: Unit, xs: vec2<f32>) -> f32
// dq32 dequantizes the u-th run of 32 consecutive elements of block `blk` (blocks counted
// row-major across the buffer); out[i] holds elements 4i..4i+3 of the run. qdot32 returns the
// dot product of that run with x, given xs = (sum of x[0..16], sum of x[16..32]); it applies
// scales and offsets once per (sub-)block instead of once per element, which is what matvec
// time is spent on. Block contents follow ggml-common.h at llama.cpp 0c1e570.

fn dot8(a: Unit, b: Unit) -> f32 {
    return dot(a[0], b[0]) + dot(a[1], b[1]) + dot(a[2], b[2]) + dot(a[3], b[3])
        + dot(a[4], b[4]) + dot(a[5], b[5]) + dot(a[6], b[6]) + dot(a[7], b[7]);
}

// Dot of the low (`s` = 0) or high (4) nibbles of a vec4 payload with 16 inputs.
fn nib16(v: vec4<u32>, s: u32, x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>) -> f32 {
    return dot(fields4(v.x, s, 0xFu), x0) + dot(fields4(v.y, s, 0xFu), x1) + dot(fields4(v.z, s, 0xFu), x2)
        + dot(fields4(v.w, s, 0xFu), x3);
}

// Dot of 16 unsigned values with 16 inputs: each byte of the payload vec4 `l` gives four bits
// from bit ls, the matching byte of `h` the bits above them (from bit hs, `hmask` wide).
fn hq16(l: vec4<u32>, h: vec4<u32>, ls: u32, hs: u32, hmask: u32, x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>) -> f32 {
    let sh = vec4<u32>(0u, 8u, 16u, 24u);
    let m4 = vec4<u32>(0xFu);
    let mh = vec4<u32>(hmask);
    let f = vec4<u32>(4u);
    return dot(vec4<f32>(((vec4<u32>(l.x) >> (sh + ls)) & m4) | (((vec4<u32>(h.x) >> (sh + hs)) & mh) << f)), x0)
        + dot(vec4<f32>(((vec4<u32>(l.y) >> (sh + ls)) & m4) | (((vec4<u32>(h.y) >> (sh + hs)) & mh) << f)), x1)
        + dot(vec4<f32>(((vec4<u32>(l.z) >> (sh + ls)) & m4) | (((vec4<u32>(h.z) >> (sh + hs)) & mh) << f)), x2)
        + dot(vec4<f32>(((vec4<u32>(l.w) >> (sh + ls)) & m4) | (((vec4<u32>(h.w) >> (sh + hs)) & mh) << f)), x3);
}

alias Unit = array<vec4<f32>, 8>;

var<private> meta_off: u32 = 0u;

fn bytes4(q: u32) -> vec4<u32> {
    return (vec4<u32>(q) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(0xFFu);
}

// Bits s..s+k of each byte of a word, as floats.
fn fields4(q: u32, s: u32, mask: u32) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(q) >> (vec4<u32>(0u, 8u, 16u, 24u) + vec4<u32>(s))) & vec4<u32>(mask));
}

fn sbytes4(q: u32) -> vec4<f32> {
    return vec4<f32>(bitcast<vec4<i32>>(vec4<u32>(q) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));
}

// Bits k..k+3 of `h` (one bit per element) as 0/1.
fn bits4(h: u32, k: u32) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(h) >> (vec4<u32>(k) + vec4<u32>(0u, 1u, 2u, 3u))) & vec4<u32>(1u));
}

fn meta_word(blk: u32, i: u32) -> u32 {
    return M[meta_off + blk * MW + i];
}

// Byte i of a block's metadata.
fn meta_byte(blk: u32, i: u32) -> u32 {
    return (meta_word(blk, i >> 2u) >> ((i & 3u) * 8u)) & 0xFFu;
}

// Types whose metadata is one f16 scale (Q4_0, Q8_0, IQ4_NL) or one exponent byte (MXFP4) pack
// two or four blocks' metadata into a word: padding it to a word would add up to 18% to the
// weights (MXFP4: 20 bytes for a 17-byte block), in memory and in what every token reads.
fn meta_half(blk: u32) -> u32 {
    return (M[meta_off + (blk >> 1u)] >> ((blk & 1u) * 16u)) & 0xFFFFu;
}
fn meta_quarter(blk: u32) -> u32 {
    return (M[meta_off + (blk >> 2u)] >> ((blk & 3u) * 8u)) & 0xFFu;
}

#ifdef WTYPE_F32
const QK: u32 = 32u;
const P4: u32 = 8u;
const MW: u32 = 1u;
fn dq32(blk: u32, u: u32) -> Unit {
    var out: Unit;
    for (var i = 0u; i < 8u; i++) {
        out[i] = bitcast<vec4<f32>>(Q[blk * P4 + i]);
    }
    return out;
}
fn qdot32(blk: u32, u: u32, x: Unit, xs: vec2<f32>) -> f32 {
    return dot8(dq32(blk, u), x);
}
#endif

#ifdef WTYPE_F16
const QK: u32 = 32u;
const P4: u32 = 4u;
const MW: u32 = 1u;
fn dq32(blk: u32, u: u32) -> Unit {
    var out: Unit;
    for (var i = 0u; i < 4u; i++) {
        let v = Q[blk * P4 + i];
        out[2u * i] = vec4<f32>(unpack2x16float(v.x), unpack2x16float(v.y));
        out[2u * i + 1u] = vec4<f32>(unpack2x16float(v.z), unpack2x16float(v.w));
    }
    return out;
}
fn qdot32(blk: u32, u: u32, x: Unit, xs: vec2<f32>) -> f32 {
    return dot8(dq32(blk, u), x);
}
#endif

#ifdef WTYPE_BF16
const QK: u32 = 32u;
const P4: u32 = 4u;
const MW: u32 = 1u;
fn dq32(blk: u32, u: u32) -> Unit {
    var out: Unit;
    for (var i = 0u; i < 4u; i++) {
        let v = Q[blk * P4 + i];
        out[2u * i] = bitcast<vec4<f32>>(vec4<u32>(v.x << 16u, v.x & 0xFFFF0000u, v.y << 16u, v.y & 0xFFFF0000u));
        out[2u * i + 1u] = bitcast<vec4<f32>>(vec4<u32>(v.z << 16u, v.z & 0xFFFF0000u, v.w << 16u, v.w & 0xFFFF0000u));
    }
    return out;
}
fn qdot32(blk: u32, u: u32, x: Unit, xs: vec2<f32>) -> f32 {
    return dot8(dq32(blk, u), x);
}
#endif

// ---- 32-element blocks: elements 0..15 are the low nibbles of the 16 payload bytes, 16..31
// the high nibbles (Q8_0: one byte each) ----

#ifdef WTYPE_Q4_0
const QK: u32 = 32u;
const P4: u32 = 1u;
// Metadata packed, see meta_half / meta_quarter.
const MW: u32 = 0u;
fn dq32(blk: u32, u: u32) -> Unit {
    var out: Unit;
    let d = unpack2x16float(meta_half(blk)).x;
    let v = Q[blk];
    for (var i = 0u; i < 4u; i++) {
        out[i] = (fields4(v[i], 0u, 0xFu) - 8.0) * d;
        out[i + 4u] = (fields4(v[i], 4u, 0xFu) - 8.0) * d;
    }
    return out;
}
fn qdot32(blk: u32, u: u32, x: Unit, xs: vec2<f32>) -> f32 {
    let d = unpack2x16float(meta_half(blk)).x;
    let v = Q[blk];
    let q = nib16(v, 0u, x[0], x[1], x[2], x[3]) + nib16(v, 4u, x[4], x[5], x[6], x[7]);
    return d * (q - 8.0 * (xs.x + xs.y));
}
#endif

#ifdef WTYPE_Q4_1
const QK: u32 = 32u;
const P4: u32 = 1u;
const MW: u32 = 1u;
fn dq32(blk: u32, u: u32) -> Unit {
    var out: Unit;
    let dm = unpack2x16float(meta_word(blk, 0u));
    let v = Q[blk];
    for (var i = 0u; i < 4u; i++) {
        out[i] = fields4(v[i], 0u, 0xFu) * dm.x + dm.y;
        out[i + 4u] = fields4(v[i], 4u, 0xFu) * dm.x + dm.y;
    }
    return out;
}
fn qdot32(blk: u32, u: u32, x: Unit, xs: vec2<f32>) -> f32 {
    let dm = unpack2x16float(meta_word(blk, 0u));
    let v = Q[blk];
    let q = nib16(v, 0u, x[0], x[1], x[2], x[3]) + nib16(v, 4u, x[4], x[5], x[6], x[7]);
    return dm.x * q + dm.y * (xs.x + xs.y);
}
#endif

#ifdef WTYPE_Q5_0
const QK: u32 = 32u;
const P4: u32 = 1u;
const MW: u32 = 2u;
fn dq32(blk: u32, u: u32) -> Unit {
    var out: Unit;
    let d = unpack2x16float(meta_word(blk, 0u)).x;
    let qh = meta_word(blk, 1u);
    let v = Q[blk];
    for (var i = 0u; i < 4u; i++) {
        out[i] = (fields4(v[i], 0u, 0xFu) + 16.0 * bits4(qh, 4u * i) - 16.0) * d;
        out[i + 4u] = (fields4(v[i], 4u, 0xFu) + 16.0 * bits4(qh, 16u + 4u * i) - 16.0) * d;
    }
    return out;
}
fn qdot32(blk: u32, u: u32, x: Unit, xs: vec2<f32>) -> f32 {
    return dot8(dq32(blk, u), x);
}
#endif

#ifdef WTYPE_Q5_1
const QK: u32 = 32u;
const P4: u32 = 1u;
const MW: u32 = 2u;
fn dq32(blk: u32, u: u32) -> Unit {
    var out: Unit;
    let dm = unpack2x16float(meta_word(blk, 0u));
    let qh = meta_word(blk, 1u);
    let v = Q[blk];
    for (var i = 0u; i < 4u; i++) {
        out[i] = (fields4(v[i], 0u, 0xFu) + 16.0 * bits4(qh, 4u * i)) * dm.x + dm.y;
        out[i + 4u] = (fields4(v[i], 4u, 0xFu) + 16.0 * bits4(qh, 16u + 4u * i)) * dm.x + dm.y;
    }
    return out;
}
fn qdot32(blk: u32, u: u32, x: Unit, xs: vec2<f32>) -> f32 {
    return dot8(dq32(blk, u), x);
}
#endif

#ifdef WTYPE_Q8_0
const QK: u32 = 32u;
const P4: u32 = 2u;
// Metadata packed, see meta_half / meta_quarter.
const MW: u32 = 0u;
fn dq32(blk: u32, u: u32) -> Unit {
    var out: Unit;
    let d = unpack2x16float(meta_half(blk)).x;
    let v0 = Q[blk * 2u];
    let v1 = Q[blk * 2u + 1u];
    for (var i = 0u; i < 4u; i++) {
        out[i] = sbytes4(v0[i]) * d;
        out[i + 4u] = sbytes4(v1[i]) * d;
    }
    return out;
}
fn qdot32(blk: u32, u: u32, x: Unit, xs: vec2<f32>) -> f32 {
    let d = unpack2x16float(meta_half(blk)).x;
    let v0 = Q[blk * 2u];
    let v1 = Q[blk * 2u + 1u];
    let q = dot(sbytes4(v0.x), x[0]) + dot(sbytes4(v0.y), x[1]) + dot(sbytes4(v0.z), x[2]) + dot(sbytes4(v0.w), x[3])
        + dot(sbytes4(v1.x), x[4]) + dot(sbytes4(v1.y), x[5]) + dot(sbytes4(v1.z), x[6]) + dot(sbytes4(v1.w), x[7]);
    return d * q;
}
#endif

#ifdef WTYPE_MXFP4
const QK: u32 = 32u;
const P4: u32 = 1u;
// Metadata packed, see meta_half / meta_quarter.
const MW: u32 = 0u;
// The E2M1 values doubled (0, 1, 2, 3, 4, 6, 8, 12, negated by bit 3) of four 4-bit codes,
// computed rather than looked up: a table in private memory is a per-lane gather on CPU-like
// adapters, several times slower than this arithmetic.
fn e2m1x2(code: vec4<u32>) -> vec4<f32> {
    let m = code & vec4<u32>(7u);
    // m >= 4: (2 + low bit) << (m / 2 - 1), i.e. 4, 6, 8, 12.
    let big = (vec4<u32>(2u) + (m & vec4<u32>(1u))) << (max(m >> vec4<u32>(1u), vec4<u32>(1u)) - vec4<u32>(1u));
    let mag = vec4<f32>(select(m, big, m >= vec4<u32>(4u)));
    return select(mag, -mag, (code & vec4<u32>(8u)) != vec4<u32>(0u));
}
// The E8M0 exponent as a scale, halved (the values above are doubled): 2^(e - 128); e < 2
// gives the subnormal values ggml uses.
fn e8m0_half(e: u32) -> f32 {
    if (e < 2u) {
        return bitcast<f32>(0x00200000u << e);
    }
    return bitcast<f32>((e - 1u) << 23u);
}
fn dq32(blk: u32, u: u32) -> Unit {
    var out: Unit;
    let d = e8m0_half(meta_quarter(blk));
    let v = Q[blk];
    for (var i = 0u; i < 4u; i++) {
        let w = vec4<u32>(v[i]) >> vec4<u32>(0u, 8u, 16u, 24u);
        out[i] = e2m1x2(w) * d;
        out[i + 4u] = e2m1x2(w >> vec4<u32>(4u)) * d;
    }
    return out;
}
fn qdot32(blk: u32, u: u32, x: Unit, xs: vec2<f32>) -> f32 {
    let v = Q[blk];
    var acc = 0.0;
    for (var i = 0u; i < 4u; i++) {
        let w = vec4<u32>(v[i]) >> vec4<u32>(0u, 8u, 16u, 24u);
        acc += dot(e2m1x2(w), x[i]) + dot(e2m1x2(w >> vec4<u32>(4u)), x[i + 4u]);
    }
    return acc * e8m0_half(meta_quarter(blk));
}
#endif

// ---- IQ4_NL and IQ4_XS: 4-bit codes into the kvalues_iq4nl table, nibbles ordered as in
// Q4_0 within every 32 elements. The table has no formula (unlike MXFP4's E2M1 values above),
// so it is four words of signed bytes picked with selects: an array indexed at run time would
// live in per-invocation memory, a per-lane gather on CPU-like adapters ----

#ifdef WTYPE_IQ4_NL
#define IQ4_TABLE
const QK: u32 = 32u;
const P4: u32 = 1u;
// Metadata packed, see meta_half / meta_quarter.
const MW: u32 = 0u;
#endif
#ifdef WTYPE_IQ4_XS
#define IQ4_TABLE
const QK: u32 = 256u;
const P4: u32 = 8u;
const MW: u32 = 2u;
#endif

#ifdef IQ4_TABLE
// kvalues_iq4nl, codes 4k..4k+3 in word k, lowest byte first.
const KV_IQ4NL: vec4<u32> = vec4<u32>(0xBFAD9881u, 0xF6EADDCFu, 0x26190D01u, 0x71594535u);
// The table values of the low (`s` = 0) or high (4) nibbles of a payload word: bits 3 and 2
// of a code pick the word, bits 1..0 the byte in it.
fn iq4_vals(q: u32, s: u32) -> vec4<f32> {
    let c = (vec4<u32>(q) >> (vec4<u32>(0u, 8u, 16u, 24u) + vec4<u32>(s))) & vec4<u32>(0xFu);
    let hi = (c & vec4<u32>(8u)) != vec4<u32>(0u);
    let mid = (c & vec4<u32>(4u)) != vec4<u32>(0u);
    let k = KV_IQ4NL;
    let w = select(select(vec4<u32>(k.x), vec4<u32>(k.y), mid), select(vec4<u32>(k.z), vec4<u32>(k.w), mid), hi);
    let top = w << (vec4<u32>(24u) - (c & vec4<u32>(3u)) * vec4<u32>(8u));
    return vec4<f32>(bitcast<vec4<i32>>(top) >> vec4<u32>(24u));
}
// The 32 elements of payload vec4 `v` times their scale `d`.
fn iq4_run(v: vec4<u32>, d: f32) -> Unit {
    var out: Unit;
    for (var i = 0u; i < 4u; i++) {
        out[i] = iq4_vals(v[i], 0u) * d;
        out[i + 4u] = iq4_vals(v[i], 4u) * d;
    }
    return out;
}
// The dot of payload vec4 `v`'s table values with x, before the scale.
fn iq4_dot(v: vec4<u32>, x: Unit) -> f32 {
    var acc = 0.0;
    for (var i = 0u; i < 4u; i++) {
        acc += dot(iq4_vals(v[i], 0u), x[i]) + dot(iq4_vals(v[i], 4u), x[i + 4u]);
    }
    return acc;
}
#endif

#ifdef WTYPE_IQ4_NL
fn dq32(blk: u32, u: u32) -> Unit {
    return iq4_run(Q[blk], unpack2x16float(meta_half(blk)).x);
}
fn qdot32(blk: u32, u: u32, x: Unit, xs: vec2<f32>) -> f32 {
    return unpack2x16float(meta_half(blk)).x * iq4_dot(Q[blk], x);
}
#endif

#ifdef WTYPE_IQ4_XS
// meta: d | scales_h << 16, scales_l[4]; payload: qs[128], run u in vec4 u. Run u's scale is
// d * (ls - 32) with ls = nibble u of scales_l | bits 2u..2u+1 of scales_h << 4, rounded to f32
// before it multiplies the table values (as ggml does).
fn iq4xs_scale(blk: u32, u: u32) -> f32 {
    let m0 = meta_word(blk, 0u);
    let ls = ((meta_word(blk, 1u) >> (4u * u)) & 0xFu) | (((m0 >> (16u + 2u * u)) & 3u) << 4u);
    return unpack2x16float(m0).x * f32(i32(ls) - 32);
}
fn dq32(blk: u32, u: u32) -> Unit {
    return iq4_run(Q[blk * P4 + u], iq4xs_scale(blk, u));
}
fn qdot32(blk: u32, u: u32, x: Unit, xs: vec2<f32>) -> f32 {
    return iq4xs_scale(blk, u) * iq4_dot(Q[blk * P4 + u], x);
}
#endif

// ---- K-quants: 256-element super-blocks, eight 32-element runs each ----

#ifdef WTYPE_Q2_K
const QK: u32 = 256u;
const P4: u32 = 4u;
const MW: u32 = 5u;
// meta: d|dmin, scales[16] (low nibble scale, high nibble min); payload: qs[64].
// Run u: half n = u/4 of 128 elements, 2-bit plane j = u%4; two 16-element sub-blocks.
fn dq32(blk: u32, u: u32) -> Unit {
    var out: Unit;
    let dm = unpack2x16float(meta_word(blk, 0u));
    let n = u >> 2u;
    let j = u & 3u;
    for (var h = 0u; h < 2u; h++) {
        let s = meta_byte(blk, 4u + n * 8u + 2u * j + h);
        let dl = dm.x * f32(s & 0xFu);
        let ml = dm.y * f32(s >> 4u);
        let v = Q[blk * P4 + 2u * n + h];
        for (var i = 0u; i < 4u; i++) {
            out[4u * h + i] = dl * fields4(v[i], 2u * j, 3u) - ml;
        }
    }
    return out;
}
fn qdot32(blk: u32, u: u32, x: Unit, xs: vec2<f32>) -> f32 {
    return dot8(dq32(blk, u), x);
}
#endif

#ifdef WTYPE_Q3_K
const QK: u32 = 256u;
const P4: u32 = 6u;
const MW: u32 = 4u;
// meta: d, pad, scales[12] (sixteen 6-bit scales); payload: hmask[32], qs[64].
fn q3k_scale(blk: u32, i: u32) -> f32 {
    let lo = (meta_byte(blk, 4u + (i & 7u)) >> (4u * (i >> 3u))) & 0xFu;
    let hi = (meta_byte(blk, 12u + (i & 3u)) >> (2u * (i >> 2u))) & 3u;
    return f32(i32(lo | (hi << 4u)) - 32);
}
fn dq32(blk: u32, u: u32) -> Unit {
    var out: Unit;
    let d = unpack2x16float(meta_word(blk, 0u)).x;
    let n = u >> 2u;
    let j = u & 3u;
    let mbit = 4u * n + j;
    for (var h = 0u; h < 2u; h++) {
        let dl = d * q3k_scale(blk, n * 8u + 2u * j + h);
        let q = Q[blk * P4 + 2u + 2u * n + h];
        let hm = Q[blk * P4 + h];
        for (var i = 0u; i < 4u; i++) {
            out[4u * h + i] = dl * (fields4(q[i], 2u * j, 3u) - 4.0 + 4.0 * fields4(hm[i], mbit, 1u));
        }
    }
    return out;
}
fn qdot32(blk: u32, u: u32, x: Unit, xs: vec2<f32>) -> f32 {
    return dot8(dq32(blk, u), x);
}
#endif

#ifdef WTYPE_Q4_K
#define KQ_SCALE_MIN
const QK: u32 = 256u;
const P4: u32 = 8u;
const MW: u32 = 4u;
#endif
#ifdef WTYPE_Q5_K
#define KQ_SCALE_MIN
const QK: u32 = 256u;
const P4: u32 = 10u;
const MW: u32 = 4u;
fn qdot32(blk: u32, u: u32, x: Unit, xs: vec2<f32>) -> f32 {
    return dot8(dq32(blk, u), x);
}
#endif

#ifdef KQ_SCALE_MIN
// meta: d, dmin, scales[12] packing eight 6-bit (scale, min) pairs.
fn kq_scale_min(blk: u32, j: u32) -> vec2<f32> {
    var sc: u32;
    var m: u32;
    if (j < 4u) {
        sc = meta_byte(blk, 4u + j) & 63u;
        m = meta_byte(blk, 8u + j) & 63u;
    } else {
        sc = (meta_byte(blk, 8u + j) & 0xFu) | ((meta_byte(blk, j) >> 6u) << 4u);
        m = (meta_byte(blk, 8u + j) >> 4u) | ((meta_byte(blk, 4u + j) >> 6u) << 4u);
    }
    let dm = unpack2x16float(meta_word(blk, 0u));
    return vec2<f32>(dm.x * f32(sc), dm.y * f32(m));
}

// Whole-block reads for kernels that walk a row block by block (linear_lane's decode loop):
// qdot32 reloads the scale words for every run and each payload byte for both of its nibbles;
// where every load is costly (software adapters fetch lane by lane) reading the metadata once
// per block and each byte once is what matters. Such types define GROUP_DOT and provide
//   const GROUPS: u32                      groups of two runs per block
//   fn group_runs(g: u32) -> vec2<u32>     the two runs of group g
//   fn block_meta(blk: u32) -> BlockMeta   what every group of the block reads, read once
//   fn gdot(blk, g, m, xa, xb, ha, hb)     the group's dot with the inputs of its two runs, given
//                                          the sums of their halves (as qdot32's xs)
// For Q4_K and Q5_K a group is runs 2g and 2g+1, which share the payload bytes 32g..32g+31
// (low and high nibbles).
#define GROUP_DOT
const GROUPS: u32 = 4u;
fn group_runs(g: u32) -> vec2<u32> {
    return vec2<u32>(2u * g, 2u * g + 1u);
}
fn kq_meta(blk: u32) -> vec4<u32> {
    let i = meta_off + blk * MW;
    return vec4<u32>(M[i], M[i + 1u], M[i + 2u], M[i + 3u]);
}
// Runs 2g and 2g+1: (d * scale, d * scale, dmin * min, dmin * min), decoded as kq_scale_min
// does from the meta words.
fn kq_group_scales(m: vec4<u32>, g: u32) -> vec4<f32> {
    let sh = vec2<u32>(16u * (g & 1u)) + vec2<u32>(0u, 8u);
    let a = vec2<u32>(m.y) >> sh;
    let b = vec2<u32>(m.z) >> sh;
    let c = vec2<u32>(m.w) >> sh;
    let low = g < 2u;
    let top = vec2<u32>(3u);
    let sc = select((c & vec2<u32>(15u)) | (((a >> vec2<u32>(6u)) & top) << vec2<u32>(4u)), a & vec2<u32>(63u), low);
    let mn = select(((c >> vec2<u32>(4u)) & vec2<u32>(15u)) | (((b >> vec2<u32>(6u)) & top) << vec2<u32>(4u)), b & vec2<u32>(63u), low);
    let dm = unpack2x16float(m.x);
    return vec4<f32>(dm.x * vec2<f32>(sc), dm.y * vec2<f32>(mn));
}
#endif

#ifdef WTYPE_Q4_K
// payload: qs[128]; 64-element group p = u/2 uses bytes 32p..32p+31, low nibbles for even u.
fn dq32(blk: u32, u: u32) -> Unit {
    var out: Unit;
    let dm = kq_scale_min(blk, u);
    let shift = 4u * (u & 1u);
    let base = blk * P4 + 2u * (u >> 1u);
    for (var h = 0u; h < 2u; h++) {
        let v = Q[base + h];
        for (var i = 0u; i < 4u; i++) {
            out[4u * h + i] = dm.x * fields4(v[i], shift, 0xFu) - dm.y;
        }
    }
    return out;
}
fn qdot32(blk: u32, u: u32, x: Unit, xs: vec2<f32>) -> f32 {
    let dm = kq_scale_min(blk, u);
    let shift = 4u * (u & 1u);
    let base = blk * P4 + 2u * (u >> 1u);
    let q = nib16(Q[base], shift, x[0], x[1], x[2], x[3]) + nib16(Q[base + 1u], shift, x[4], x[5], x[6], x[7]);
    return dm.x * q - dm.y * (xs.x + xs.y);
}

alias BlockMeta = vec4<u32>;
fn block_meta(blk: u32) -> BlockMeta {
    return kq_meta(blk);
}
fn nib32(v0: vec4<u32>, v1: vec4<u32>, s: u32, x: Unit) -> f32 {
    return nib16(v0, s, x[0], x[1], x[2], x[3]) + nib16(v1, s, x[4], x[5], x[6], x[7]);
}
fn gdot(blk: u32, g: u32, m: BlockMeta, xa: Unit, xb: Unit, ha: vec2<f32>, hb: vec2<f32>) -> f32 {
    let ds = kq_group_scales(m, g);
    let v0 = Q[blk * P4 + 2u * g];
    let v1 = Q[blk * P4 + 2u * g + 1u];
    return ds.x * nib32(v0, v1, 0u, xa) + ds.y * nib32(v0, v1, 4u, xb) - dot(ds.zw, vec2<f32>(ha.x + ha.y, hb.x + hb.y));
}
#endif

#ifdef WTYPE_Q5_K
// payload: qh[32] (bit u of byte l is the fifth bit of element l of run u), qs[128].
fn dq32(blk: u32, u: u32) -> Unit {
    var out: Unit;
    let dm = kq_scale_min(blk, u);
    let shift = 4u * (u & 1u);
    let base = blk * P4 + 2u + 2u * (u >> 1u);
    for (var h = 0u; h < 2u; h++) {
        let v = Q[base + h];
        let qh = Q[blk * P4 + h];
        for (var i = 0u; i < 4u; i++) {
            out[4u * h + i] = dm.x * (fields4(v[i], shift, 0xFu) + 16.0 * fields4(qh[i], u, 1u)) - dm.y;
        }
    }
    return out;
}
// The qh bytes serve every group, so they are read with the metadata.
struct BlockMeta {
    m: vec4<u32>,
    qh0: vec4<u32>,
    qh1: vec4<u32>,
}
fn block_meta(blk: u32) -> BlockMeta {
    return BlockMeta(kq_meta(blk), Q[blk * P4], Q[blk * P4 + 1u]);
}
fn gdot(blk: u32, g: u32, m: BlockMeta, xa: Unit, xb: Unit, ha: vec2<f32>, hb: vec2<f32>) -> f32 {
    let ds = kq_group_scales(m.m, g);
    let v0 = Q[blk * P4 + 2u + 2u * g];
    let v1 = Q[blk * P4 + 2u + 2u * g + 1u];
    let qa = hq16(v0, m.qh0, 0u, 2u * g, 1u, xa[0], xa[1], xa[2], xa[3]) + hq16(v1, m.qh1, 0u, 2u * g, 1u, xa[4], xa[5], xa[6], xa[7]);
    let qb = hq16(v0, m.qh0, 4u, 2u * g + 1u, 1u, xb[0], xb[1], xb[2], xb[3])
        + hq16(v1, m.qh1, 4u, 2u * g + 1u, 1u, xb[4], xb[5], xb[6], xb[7]);
    return ds.x * qa + ds.y * qb - dot(ds.zw, vec2<f32>(ha.x + ha.y, hb.x + hb.y));
}
#endif

#ifdef WTYPE_Q6_K
const QK: u32 = 256u;
const P4: u32 = 12u;
const MW: u32 = 5u;
// meta: d, pad, scales[16] (int8); payload: ql[128], qh[64].
// Run u: half n = u/4, quarter j = u%4; element l of the run takes the low (j<2) or high
// nibble of ql[64n + 32(j&1) + l] and bits 2j..2j+1 of qh[32n + l]; scale 8n + 2j + l/16.
fn dq32(blk: u32, u: u32) -> Unit {
    var out: Unit;
    let d = unpack2x16float(meta_word(blk, 0u)).x;
    let n = u >> 2u;
    let j = u & 3u;
    let lshift = 4u * (j >> 1u);
    for (var h = 0u; h < 2u; h++) {
        let sc = f32(extractBits(bitcast<i32>(meta_byte(blk, 4u + 8u * n + 2u * j + h)), 0u, 8u));
        let ql = Q[blk * P4 + 4u * n + 2u * (j & 1u) + h];
        let qh = Q[blk * P4 + 8u + 2u * n + h];
        for (var i = 0u; i < 4u; i++) {
            let lo = (vec4<u32>(ql[i]) >> (vec4<u32>(0u, 8u, 16u, 24u) + vec4<u32>(lshift))) & vec4<u32>(0xFu);
            let hi = (vec4<u32>(qh[i]) >> (vec4<u32>(0u, 8u, 16u, 24u) + vec4<u32>(2u * j))) & vec4<u32>(3u);
            out[4u * h + i] = (vec4<f32>(lo | (hi << vec4<u32>(4u))) - 32.0) * (d * sc);
        }
    }
    return out;
}
fn qdot32(blk: u32, u: u32, x: Unit, xs: vec2<f32>) -> f32 {
    return dot8(dq32(blk, u), x);
}

// Whole-block reads (see the K-quants above): group g is runs j and j + 2 of half n = g/2
// (j = g%2), which take the low and high nibbles of the same 32 ql bytes and bits 2j and
// 2j + 4 of the half's qh bytes; their scales are bytes 2j, 2j + 1 of scale words 2n, 2n + 1.
#define GROUP_DOT
const GROUPS: u32 = 4u;
struct BlockMeta {
    d: f32,
    scales: vec4<u32>,
}
fn group_runs(g: u32) -> vec2<u32> {
    let r = 4u * (g >> 1u) + (g & 1u);
    return vec2<u32>(r, r + 2u);
}
fn block_meta(blk: u32) -> BlockMeta {
    let i = meta_off + blk * MW;
    return BlockMeta(unpack2x16float(M[i]).x, vec4<u32>(M[i + 1u], M[i + 2u], M[i + 3u], M[i + 4u]));
}
// Signed bytes k and k + 1 of w.
fn sbyte_pair(w: u32, k: u32) -> vec2<f32> {
    let v = bitcast<i32>(w);
    return vec2<f32>(f32(extractBits(v, 8u * k, 8u)), f32(extractBits(v, 8u * k + 8u, 8u)));
}
fn gdot(blk: u32, g: u32, m: BlockMeta, xa: Unit, xb: Unit, ha: vec2<f32>, hb: vec2<f32>) -> f32 {
    let n = g >> 1u;
    let j = g & 1u;
    let l0 = Q[blk * P4 + 4u * n + 2u * j];
    let l1 = Q[blk * P4 + 4u * n + 2u * j + 1u];
    let h0 = Q[blk * P4 + 8u + 2u * n];
    let h1 = Q[blk * P4 + 8u + 2u * n + 1u];
    let hi = n == 1u;
    let sa = sbyte_pair(select(m.scales.x, m.scales.z, hi), 2u * j);
    let sb = sbyte_pair(select(m.scales.y, m.scales.w, hi), 2u * j);
    let qa = vec2<f32>(hq16(l0, h0, 0u, 2u * j, 3u, xa[0], xa[1], xa[2], xa[3]), hq16(l1, h1, 0u, 2u * j, 3u, xa[4], xa[5], xa[6], xa[7]));
    let qb = vec2<f32>(hq16(l0, h0, 4u, 2u * j + 4u, 3u, xb[0], xb[1], xb[2], xb[3]),
        hq16(l1, h1, 4u, 2u * j + 4u, 3u, xb[4], xb[5], xb[6], xb[7]));
    return m.d * (dot(sa, qa - 32.0 * ha) + dot(sb, qb - 32.0 * hb));
}
#endif

// ---- The codebook types (IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M): each group of
// 8 weights of a run is an index into a codebook of value patterns (8 bytes an entry; IQ3: two
// 4-byte entries), with 8 sign bits (IQ2/IQ3) or a shared offset of ±1/8 (IQ1, whose values are
// -1, 0, 1), and a scale per 16 or 32 weights. The codebook is a uniform buffer bound as GRID
// (engine/src/gpu/codebook.rs). Each type provides
//   struct IqRun                                  what one run reads, read once
//   fn iq_run(blk: u32, u: u32) -> IqRun
//   fn iq_vals(r: IqRun, l: u32) -> IqPair        group l's 8 values before the scale
//   fn iq_scale(r: IqRun, l: u32) -> f32          group l's scale
// Block layouts (meta / payload split) are in engine/src/gpu/repack.rs. ----

#ifdef WTYPE_IQ2_XXS
#define IQ_GRID
#define GRID64
const GRID_VEC4S: u32 = 128u;
const QK: u32 = 256u;
const P4: u32 = 4u;
// Metadata packed, see meta_half / meta_quarter.
const MW: u32 = 0u;
#endif
#ifdef WTYPE_IQ2_XS
#define IQ_GRID
#define GRID64
const GRID_VEC4S: u32 = 256u;
const QK: u32 = 256u;
const P4: u32 = 4u;
const MW: u32 = 3u;
#endif
#ifdef WTYPE_IQ2_S
#define IQ_GRID
#define GRID64
const GRID_VEC4S: u32 = 512u;
const QK: u32 = 256u;
const P4: u32 = 4u;
const MW: u32 = 5u;
#endif
#ifdef WTYPE_IQ3_XXS
#define IQ_GRID
const GRID_VEC4S: u32 = 64u;
const QK: u32 = 256u;
const P4: u32 = 6u;
const MW: u32 = 0u;
#endif
#ifdef WTYPE_IQ3_S
#define IQ_GRID
const GRID_VEC4S: u32 = 128u;
const QK: u32 = 256u;
const P4: u32 = 6u;
const MW: u32 = 4u;
#endif
#ifdef WTYPE_IQ1_S
#define IQ_GRID
#define GRID64
const GRID_VEC4S: u32 = 1024u;
const QK: u32 = 256u;
const P4: u32 = 3u;
const MW: u32 = 0u;
#endif
#ifdef WTYPE_IQ1_M
#define IQ_GRID
#define GRID64
const GRID_VEC4S: u32 = 1024u;
const QK: u32 = 256u;
const P4: u32 = 3u;
const MW: u32 = 2u;
#endif

#ifdef IQ_GRID
@group(0) @binding(11) var<uniform> GRID: array<vec4<u32>, GRID_VEC4S>;

alias IqPair = array<vec4<f32>, 2>;

// Word k of a block's payload.
fn pword(blk: u32, k: u32) -> u32 {
    return Q[blk * P4 + (k >> 2u)][k & 3u];
}
// Entry e of a codebook of 8-byte entries (two words), or of 4-byte ones.
fn grid64(e: u32) -> vec2<u32> {
    let v = GRID[e >> 1u];
    return select(v.xy, v.zw, (e & 1u) != 0u);
}
fn grid32(e: u32) -> u32 {
    return GRID[e >> 2u][e & 3u];
}
// Four unsigned bytes of `w` as floats, negated where bits 0..3 of `s` are set.
fn signed4(w: u32, s: u32) -> vec4<f32> {
    let v = vec4<f32>(bytes4(w));
    return select(v, -v, ((vec4<u32>(s) >> vec4<u32>(0u, 1u, 2u, 3u)) & vec4<u32>(1u)) != vec4<u32>(0u));
}
// The sign byte of a 7-bit sign field: the eighth sign makes the count of negatives even.
fn iq_signs(seven: u32) -> u32 {
    let s = seven & 127u;
    return s | ((countOneBits(s) & 1u) << 7u);
}
// An 8-byte entry with its sign byte.
fn signed8(g: vec2<u32>, s: u32) -> IqPair {
    return IqPair(signed4(g.x, s), signed4(g.y, s >> 4u));
}

fn dq32(blk: u32, u: u32) -> Unit {
    let r = iq_run(blk, u);
    var out: Unit;
    for (var l = 0u; l < 4u; l++) {
        let v = iq_vals(r, l);
        let s = iq_scale(r, l);
        out[2u * l] = v[0] * s;
        out[2u * l + 1u] = v[1] * s;
    }
    return out;
}
fn qdot32(blk: u32, u: u32, x: Unit, xs: vec2<f32>) -> f32 {
    let r = iq_run(blk, u);
    var acc = 0.0;
    for (var l = 0u; l < 4u; l++) {
        let v = iq_vals(r, l);
        acc += iq_scale(r, l) * (dot(v[0], x[2u * l]) + dot(v[1], x[2u * l + 1u]));
    }
    return acc;
}
#endif

#ifdef WTYPE_IQ2_XXS
// payload: per run two words, four 8-bit grid indices, then four 7-bit sign fields and the
// run's 4-bit scale s on top: x = d * (0.5 + s) * 0.25 * grid * sign.
struct IqRun {
    idx: u32,
    aux: u32,
    d: f32,
}
fn iq_run(blk: u32, u: u32) -> IqRun {
    let aux = pword(blk, 2u * u + 1u);
    let d = unpack2x16float(meta_half(blk)).x;
    return IqRun(pword(blk, 2u * u), aux, d * (0.5 + f32(aux >> 28u)) * 0.25);
}
fn iq_vals(r: IqRun, l: u32) -> IqPair {
    return signed8(grid64((r.idx >> (8u * l)) & 0xFFu), iq_signs(r.aux >> (7u * l)));
}
fn iq_scale(r: IqRun, l: u32) -> f32 {
    return r.d;
}
#endif

#ifdef WTYPE_IQ2_XS
// payload: per run two words of two u16 each, a 9-bit grid index and a 7-bit sign field;
// meta: d, scales[8] from byte 4 (a nibble per 16 weights).
struct IqRun {
    q: vec2<u32>,
    d: vec2<f32>,
}
fn iq2_half_scales(blk: u32, u: u32) -> vec2<f32> {
    let s = meta_byte(blk, 4u + u);
    let d = unpack2x16float(meta_word(blk, 0u)).x;
    return vec2<f32>(d * (0.5 + f32(s & 15u)) * 0.25, d * (0.5 + f32(s >> 4u)) * 0.25);
}
fn iq_run(blk: u32, u: u32) -> IqRun {
    return IqRun(vec2<u32>(pword(blk, 2u * u), pword(blk, 2u * u + 1u)), iq2_half_scales(blk, u));
}
fn iq_vals(r: IqRun, l: u32) -> IqPair {
    let q = (r.q[l >> 1u] >> (16u * (l & 1u))) & 0xFFFFu;
    return signed8(grid64(q & 511u), iq_signs(q >> 9u));
}
fn iq_scale(r: IqRun, l: u32) -> f32 {
    return r.d[l >> 1u];
}
#endif

#ifdef WTYPE_IQ2_S
// payload: grid index low bytes (run u: word u), sign bytes (word 8 + u); meta: d, qh[8] from
// byte 4 (two more index bits per group), scales[8] from byte 12 (as IQ2_XS).
struct IqRun {
    lo: u32,
    signs: u32,
    qh: u32,
    d: vec2<f32>,
}
fn iq_run(blk: u32, u: u32) -> IqRun {
    let s = meta_byte(blk, 12u + u);
    let d = unpack2x16float(meta_word(blk, 0u)).x;
    let dh = vec2<f32>(d * (0.5 + f32(s & 15u)) * 0.25, d * (0.5 + f32(s >> 4u)) * 0.25);
    return IqRun(pword(blk, u), pword(blk, 8u + u), meta_byte(blk, 4u + u), dh);
}
fn iq_vals(r: IqRun, l: u32) -> IqPair {
    let idx = ((r.lo >> (8u * l)) & 0xFFu) | ((r.qh << (8u - 2u * l)) & 0x300u);
    return signed8(grid64(idx), r.signs >> (8u * l));
}
fn iq_scale(r: IqRun, l: u32) -> f32 {
    return r.d[l >> 1u];
}
#endif

#ifdef WTYPE_IQ3_XXS
// payload: 8-bit indices of 4-byte entries (run u: words 2u, 2u + 1), then per run a word of
// four 7-bit sign fields and the 4-bit scale s on top (word 16 + u):
// x = d * (0.5 + s) * 0.5 * grid * sign.
struct IqRun {
    q: vec2<u32>,
    aux: u32,
    d: f32,
}
fn iq_run(blk: u32, u: u32) -> IqRun {
    let aux = pword(blk, 16u + u);
    let d = unpack2x16float(meta_half(blk)).x;
    return IqRun(vec2<u32>(pword(blk, 2u * u), pword(blk, 2u * u + 1u)), aux, d * (0.5 + f32(aux >> 28u)) * 0.5);
}
fn iq_vals(r: IqRun, l: u32) -> IqPair {
    let w = r.q[l >> 1u] >> (16u * (l & 1u));
    let s = iq_signs(r.aux >> (7u * l));
    return IqPair(signed4(grid32(w & 0xFFu), s), signed4(grid32((w >> 8u) & 0xFFu), s >> 4u));
}
fn iq_scale(r: IqRun, l: u32) -> f32 {
    return r.d;
}
#endif

#ifdef WTYPE_IQ3_S
// payload: index low bytes (run u: words 2u, 2u + 1), sign bytes (word 16 + u); meta: d,
// qh[8] from byte 4 (bit k: ninth bit of index k of the run), scales[4] from byte 12 (a nibble
// per run): x = d * (1 + 2s) * grid * sign.
struct IqRun {
    q: vec2<u32>,
    signs: u32,
    qh: u32,
    d: f32,
}
fn iq_run(blk: u32, u: u32) -> IqRun {
    let s = (meta_byte(blk, 12u + (u >> 1u)) >> (4u * (u & 1u))) & 15u;
    let d = unpack2x16float(meta_word(blk, 0u)).x * f32(1u + 2u * s);
    return IqRun(vec2<u32>(pword(blk, 2u * u), pword(blk, 2u * u + 1u)), pword(blk, 16u + u), meta_byte(blk, 4u + u), d);
}
fn iq_vals(r: IqRun, l: u32) -> IqPair {
    let w = r.q[l >> 1u] >> (16u * (l & 1u));
    let i0 = (w & 0xFFu) | (((r.qh >> (2u * l)) & 1u) << 8u);
    let i1 = ((w >> 8u) & 0xFFu) | (((r.qh >> (2u * l + 1u)) & 1u) << 8u);
    let s = r.signs >> (8u * l);
    return IqPair(signed4(grid32(i0), s), signed4(grid32(i1), s >> 4u));
}
fn iq_scale(r: IqRun, l: u32) -> f32 {
    return r.d;
}
#endif

#ifdef GRID64
// IQ1 values: an entry's signed bytes (-1, 0, 1) plus the group's offset of ±1/8.
fn iq1_vals(e: u32, negative: bool) -> IqPair {
    let g = grid64(e);
    let delta = select(0.125, -0.125, negative);
    return IqPair(sbytes4(g.x) + delta, sbytes4(g.y) + delta);
}
#endif

#ifdef WTYPE_IQ1_S
// payload: index low bytes (run u: word u), then per run a u16: three more bits per index,
// the 3-bit scale s in bits 12..14 and the offset's sign in bit 15: x = d * (2s + 1) * (grid ± 1/8).
struct IqRun {
    qs: u32,
    qh: u32,
    d: f32,
}
fn iq_run(blk: u32, u: u32) -> IqRun {
    let qh = (pword(blk, 8u + (u >> 1u)) >> (16u * (u & 1u))) & 0xFFFFu;
    let d = unpack2x16float(meta_half(blk)).x;
    return IqRun(pword(blk, u), qh, d * f32(2u * ((qh >> 12u) & 7u) + 1u));
}
fn iq_vals(r: IqRun, l: u32) -> IqPair {
    let idx = ((r.qs >> (8u * l)) & 0xFFu) | (((r.qh >> (3u * l)) & 7u) << 8u);
    return iq1_vals(idx, (r.qh & 0x8000u) != 0u);
}
fn iq_scale(r: IqRun, l: u32) -> f32 {
    return r.d;
}
#endif

#ifdef WTYPE_IQ1_M
// payload: index low bytes (run u: word u), then two bytes per run, one per 16 weights: for
// each of its groups of 8 three more index bits and the offset's sign; meta: four u16 scale
// words, a 3-bit scale per 16 weights in their low 12 bits, the block's f16 scale spread over
// their top nibbles.
struct IqRun {
    qs: u32,
    qh: u32,
    d: vec2<f32>,
}
fn iq_run(blk: u32, u: u32) -> IqRun {
    let m0 = meta_word(blk, 0u);
    let m1 = meta_word(blk, 1u);
    let bits = ((m0 >> 12u) & 0xFu) | ((m0 >> 24u) & 0xF0u) | ((m1 >> 4u) & 0xF00u) | ((m1 >> 16u) & 0xF000u);
    let d = unpack2x16float(bits).x;
    let sc = (select(m0, m1, u >= 4u) >> (16u * ((u >> 1u) & 1u) + 6u * (u & 1u))) & 0x3Fu;
    let dh = vec2<f32>(d * f32(2u * (sc & 7u) + 1u), d * f32(2u * (sc >> 3u) + 1u));
    let qh = (pword(blk, 8u + (u >> 1u)) >> (16u * (u & 1u))) & 0xFFFFu;
    return IqRun(pword(blk, u), qh, dh);
}
fn iq_vals(r: IqRun, l: u32) -> IqPair {
    let h = (r.qh >> (4u * l)) & 0xFu;
    return iq1_vals(((r.qs >> (8u * l)) & 0xFFu) | ((h & 7u) << 8u), (h & 8u) != 0u);
}
fn iq_scale(r: IqRun, l: u32) -> f32 {
    return r.d[l >> 1u];
}
#endif
