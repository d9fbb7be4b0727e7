// Fused attention, used for prefill and decode: O = softmax(Q K^T * scale + mask) V with an
// online (flash-style) softmax, so the score matrix never exists. A row is one (token, q head);
// a team of TEAM invocations owns a row, each holding HD / TEAM elements of q and of the output
// accumulator. Keys are taken four at a time so one team reduction serves four scores. Rows of
// a workgroup are consecutive, so the q heads that share a kv head (GQA) read the same cache
// lines together. Masks: causal, plus a sliding window when P.window > 0. Each token carries
// its position and the cache row of its sequence's position 0, so rows of one dispatch may
// belong to different sequences (continuous batching); each row walks its own keys.
//
// SPLIT (decode, flash-decoding): the keys are split along y over num_workgroups.y workgroups,
// each writing its rows' partial softmax (unnormalised output, running max and sum) to Part;
// REDUCE then combines a row's splits (and its sink) into O. A deep decode so runs on
// (row groups x splits) workgroups instead of one per row group.

struct Params {
    n_head: u32,
    n_kv: u32,
    ctx: u32,
    qkv_stride: u32,
    o_stride: u32,
    window: u32,
    scale: f32,
    // SPLIT and REDUCE: the splits (num_workgroups.y of the SPLIT pass).
    splits: u32,
}

// pos0 is unused: each token's position comes from Pos.
struct Step {
    pos0: u32,
    n_tokens: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> QKV: array<vec4<f32>>;
// Each side of the cache: f32, f16 (K_F16/V_F16), or quantized (K_QUANT/V_QUANT: Q8_0, or Q4_0
// with K_Q4/V_Q4) as rows of u32 words, the quants then the f16 block scales two per word (as
// rope.wgsl writes them).
#ifdef K_QUANT
@group(0) @binding(1) var<storage, read> Kc: array<u32>;
#else
#ifdef K_F16
@group(0) @binding(1) var<storage, read> Kc: array<vec4<f16>>;
#else
@group(0) @binding(1) var<storage, read> Kc: array<vec4<f32>>;
#endif
#endif
#ifdef V_QUANT
@group(0) @binding(2) var<storage, read> Vc: array<u32>;
#else
#ifdef V_F16
@group(0) @binding(2) var<storage, read> Vc: array<vec4<f16>>;
#else
@group(0) @binding(2) var<storage, read> Vc: array<vec4<f32>>;
#endif
#endif
@group(0) @binding(3) var<storage, read_write> O: array<vec4<f32>>;
@group(0) @binding(4) var<uniform> P: Params;
@group(0) @binding(5) var<uniform> S: Step;
// Per token: (position in its sequence, cache row of the sequence's position 0).
@group(0) @binding(6) var<storage, read> Pos: array<vec2<u32>>;
#ifdef SINKS
// One logit per q head that joins the softmax denominator with no value (gpt-oss).
@group(0) @binding(7) var<storage, read> Sinks: array<f32>;
#endif
// Per (row, split): HDV4 vec4s of unnormalised output, then (max, sum, 0, 0).
#ifdef SPLIT
@group(0) @binding(8) var<storage, read_write> Part: array<vec4<f32>>;
#endif
#ifdef REDUCE
@group(0) @binding(8) var<storage, read> Part: array<vec4<f32>>;
#endif

#include "kv_layout.wgsl"

const HD4: u32 = HEAD_DIM / 4u;
// vec4s between q heads: with an output gate (Qwen3.5) each query is followed by its head's
// gate logits, and the output is multiplied by their sigmoid.
#ifdef GATED
const Q_SPAN4: u32 = 2u * HD4;
#else
const Q_SPAN4: u32 = HD4;
#endif
const HDV4: u32 = HEAD_DIM_V / 4u;
// vec4 chunks of q/k and of v per invocation.
const CK: u32 = HD4 / TEAM;
const CV: u32 = HDV4 / TEAM;
const NEG: f32 = -3.0e38;

override WG: u32 = 64u;

#ifdef TEAM_SUBGROUP
fn team_sum4(v: vec4<f32>, lid: u32) -> vec4<f32> {
    return subgroupAdd(v);
}
#else
var<workgroup> tred: array<vec4<f32>, 256>;
fn team_sum4(v: vec4<f32>, lid: u32) -> vec4<f32> {
    tred[lid] = v;
    workgroupBarrier();
    let first = lid - lid % TEAM;
    var s = vec4<f32>(0.0);
    for (var i = 0u; i < TEAM; i++) {
        s += tred[first + i];
    }
    workgroupBarrier();
    return s;
}
#endif

// Elements 4c..4c+3 of a quantized row whose words start at `quants`, scales at `scales`:
// `word` holds them (Q8_0: the whole word; Q4_0: its half `c % 2`).
fn dequant4(word: u32, scale_word: u32, c: u32, q4: bool) -> vec4<f32> {
    let block = c / 8u;
    let d = unpack2x16float(scale_word)[block % 2u];
    if (q4) {
        let n = word >> (16u * (c % 2u));
        let q = (vec4<u32>(n) >> vec4<u32>(0u, 4u, 8u, 12u)) & vec4<u32>(15u);
        return (vec4<f32>(q) - vec4<f32>(8.0)) * d;
    }
    let q = bitcast<vec4<i32>>(vec4<u32>(word) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u);
    return vec4<f32>(q) * d;
}

// vec4 `c` of cache row `row` (row = kv head · ctx + position).
fn load_k(row: u32, c: u32) -> vec4<f32> {
#ifdef K_QUANT
    let base = row * row_words(HEAD_DIM, K_IS_Q4);
    let word = Kc[base + select(c, c / 2u, K_IS_Q4)];
    let scales = Kc[base + quant_words(HEAD_DIM, K_IS_Q4) + c / 16u];
    return dequant4(word, scales, c, K_IS_Q4);
#else
    return vec4<f32>(Kc[row * HD4 + c]);
#endif
}
fn load_v(row: u32, c: u32) -> vec4<f32> {
#ifdef V_QUANT
    let base = row * row_words(HEAD_DIM_V, V_IS_Q4);
    let word = Vc[base + select(c, c / 2u, V_IS_Q4)];
    let scales = Vc[base + quant_words(HEAD_DIM_V, V_IS_Q4) + c / 16u];
    return dequant4(word, scales, c, V_IS_Q4);
#else
    return vec4<f32>(Vc[row * HDV4 + c]);
#endif
}

// First key a query at `pos` sees.
fn key_lo(pos: u32) -> u32 {
    if (P.window > 0u && pos + 1u > P.window) {
        return pos + 1u - P.window;
    }
    return 0u;
}

// Stores row `row`'s output `acc / l`, times the sigmoid of its gate logits when gated.
fn store_row(t: u32, h: u32, c: u32, acc: vec4<f32>, inv: f32) {
    let ob = t * P.o_stride / 4u + h * HDV4;
#ifdef GATED
#ifndef GATE_AFTER
    // GATE_AFTER: the output is still rotated (a rotated V cache); the kernel that turns it
    // back applies the gate.
    let gate = QKV[t * P.qkv_stride / 4u + h * Q_SPAN4 + HD4 + c];
    O[ob + c] = acc * inv / (vec4<f32>(1.0) + exp(-gate));
    return;
#endif
#endif
    O[ob + c] = acc * inv;
}

#ifdef REDUCE
// One workgroup per row (token, q head): the splits' partial softmaxes, rescaled to their
// common maximum and summed.
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wid.x;
    if (row >= S.n_tokens * P.n_head) {
        return;
    }
    let t = row / P.n_head;
    let h = row % P.n_head;
    let stride = HDV4 + 1u;
    let first = row * P.splits * stride;
    var big = NEG;
#ifdef SINKS
    big = Sinks[h];
#endif
    for (var s = 0u; s < P.splits; s++) {
        big = max(big, Part[first + s * stride + HDV4].x);
    }
    var total = 0.0;
#ifdef SINKS
    total = exp(Sinks[h] - big);
#endif
    for (var s = 0u; s < P.splits; s++) {
        let ml = Part[first + s * stride + HDV4];
        total += ml.y * exp(ml.x - big);
    }
    let inv = 1.0 / total;
    for (var c = lid; c < HDV4; c += WG) {
        var acc = vec4<f32>(0.0);
        for (var s = 0u; s < P.splits; s++) {
            let at = first + s * stride;
            acc += Part[at + c] * exp(Part[at + HDV4].x - big);
        }
        store_row(t, h, c, acc, inv);
    }
}
#else
@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let rows_per_wg = WG / TEAM;
    let n_rows = S.n_tokens * P.n_head;
    let first_row = wid.x * rows_per_wg;
    if (first_row >= n_rows) {
        return;
    }
    let last_row = min(first_row + rows_per_wg, n_rows) - 1u;
    let lane = lid % TEAM;
    let row = min(first_row + lid / TEAM, last_row);
    let t = row / P.n_head;
    let h = row % P.n_head;
    let g = h / (P.n_head / P.n_kv);
    let pos = Pos[t].x;
    let lo = key_lo(pos);
    // The workgroup walks as many keys as its longest row (barriers need a uniform trip count).
    var n_keys = 0u;
    for (var r = first_row; r <= last_row; r++) {
        let p = Pos[r / P.n_head].x;
        n_keys = max(n_keys, p + 1u - key_lo(p));
    }

#ifdef SPLIT
    // This split's share of the keys, in whole groups of four.
    let chunk = ((n_keys + nwg.y - 1u) / nwg.y + 3u) / 4u * 4u;
    let o_begin = min(wid.y * chunk, n_keys);
    let o_end = min(o_begin + chunk, n_keys);
#else
    let o_begin = 0u;
    let o_end = n_keys;
#endif

    var q: array<vec4<f32>, CK>;
    let qb = t * P.qkv_stride / 4u + h * Q_SPAN4;
    for (var c = 0u; c < CK; c++) {
        q[c] = QKV[qb + lane + c * TEAM] * P.scale;
    }
    var acc: array<vec4<f32>, CV>;
    for (var c = 0u; c < CV; c++) {
        acc[c] = vec4<f32>(0.0);
    }
    // A sink starts the online softmax as a key of score Sinks[h] whose value is zero (split:
    // the reduction adds it).
    var m = NEG;
    var l = 0.0;
#ifdef SINKS
#ifndef SPLIT
    m = Sinks[h];
    l = 1.0;
#endif
#endif
    let kbase = g * P.ctx + Pos[t].y;
    for (var o = o_begin; o < o_end; o += 4u) {
        var s4 = vec4<f32>(0.0);
        for (var k = 0u; k < 4u; k++) {
            let j = min(lo + o + k, pos);
            var s = 0.0;
            for (var c = 0u; c < CK; c++) {
                s += dot(q[c], load_k(kbase + j, lane + c * TEAM));
            }
            s4[k] = s;
        }
        s4 = team_sum4(s4, lid);
        for (var k = 0u; k < 4u; k++) {
            if (lo + o + k > pos) {
                s4[k] = NEG;
            }
        }
        let m_new = max(m, max(max(s4.x, s4.y), max(s4.z, s4.w)));
        let corr = exp(m - m_new);
        // Masked keys contribute nothing, even while every key so far was masked.
        let p = select(vec4<f32>(0.0), exp(s4 - vec4<f32>(m_new)), s4 > vec4<f32>(0.5 * NEG));
        l = l * corr + p.x + p.y + p.z + p.w;
        for (var c = 0u; c < CV; c++) {
            var a = acc[c] * corr;
            for (var k = 0u; k < 4u; k++) {
                let j = min(lo + o + k, pos);
                a += p[k] * load_v(kbase + j, lane + c * TEAM);
            }
            acc[c] = a;
        }
        m = m_new;
    }
    if (first_row + lid / TEAM > last_row) {
        return;
    }
#ifdef SPLIT
    let at = ((t * P.n_head + h) * nwg.y + wid.y) * (HDV4 + 1u);
    for (var c = 0u; c < CV; c++) {
        Part[at + lane + c * TEAM] = acc[c];
    }
    if (lane == 0u) {
        Part[at + HDV4] = vec4<f32>(m, l, 0.0, 0.0);
    }
#else
    let inv = 1.0 / l;
    for (var c = 0u; c < CV; c++) {
        store_row(t, h, lane + c * TEAM, acc[c], inv);
    }
#endif
}
#endif
