// Fused attention, used for prefill and decode: O = softmax(Q K^T * scale + mask) V with an
// online (flash-style) softmax, so the score matrix never exists. A row is one token and RB q
// heads of one kv group (GQA); a team of TEAM invocations owns a row, each holding HD / TEAM
// elements of each head's q and output accumulator, so every key and value it loads serves
// the RB heads. Keys are taken four at a time so one team reduction serves four scores. Masks:
// causal, plus a sliding window when P.window > 0. Each token carries its position and the
// cache row of its sequence's position 0, so rows of one dispatch may belong to different
// sequences (continuous batching); each row walks its own keys.
//
// TILED (prompts): a workgroup takes ROWS tokens of one head and stages their keys and values
// in workgroup memory, a tile at a time (see its main below).
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
#ifdef TEAM_SHUFFLE
// The team is an aligned run of TEAM lanes inside a subgroup (invocations fill subgroups in
// order of local index, as every driver we know does).
fn team_sum4(v: vec4<f32>, lid: u32) -> vec4<f32> {
    var s = v;
    for (var o = 1u; o < TEAM; o <<= 1u) {
        s += subgroupShuffleXor(s, o);
    }
    return s;
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

// Lane `lane`'s share of row (t, h)'s query, scaled.
fn load_q(t: u32, h: u32, lane: u32) -> array<vec4<f32>, CK> {
    var q: array<vec4<f32>, CK>;
    let qb = t * P.qkv_stride / 4u + h * Q_SPAN4;
    for (var c = 0u; c < CK; c++) {
        q[c] = QKV[qb + lane + c * TEAM] * P.scale;
    }
    return q;
}

// A row's online softmax: the largest score so far and the sum of exp(score - largest).
struct Running {
    m: f32,
    l: f32,
}

// Four scores folded into a row's softmax: the weights of the four keys' values, the factor
// that rescales what was accumulated before them, and the softmax after them.
struct Folded {
    p: vec4<f32>,
    corr: f32,
    run: Running,
}

// A sink starts the online softmax as a key of score Sinks[h] whose value is zero (split
// passes leave it to the reduction).
fn start_running(h: u32) -> Running {
#ifdef SINKS
#ifndef SPLIT
    return Running(Sinks[h], 1.0);
#endif
#endif
    return Running(NEG, 0.0);
}

// Folds four scores (NEG where masked) into `run`.
fn fold(s4: vec4<f32>, run: Running) -> Folded {
    let m_new = max(run.m, max(max(s4.x, s4.y), max(s4.z, s4.w)));
    let corr = exp(run.m - m_new);
    // Masked keys contribute nothing, even while every key so far was masked.
    let p = select(vec4<f32>(0.0), exp(s4 - vec4<f32>(m_new)), s4 > vec4<f32>(0.5 * NEG));
    return Folded(p, corr, Running(m_new, run.l * corr + p.x + p.y + p.z + p.w));
}

// The RB q heads of one kv group that a team serves together: each key and value it loads
// serves all of them (grouped-query attention).
alias Queries = array<array<vec4<f32>, CK>, RB>;
alias Outputs = array<array<vec4<f32>, CV>, RB>;
alias Runs = array<Running, RB>;

// Keys `lo + o .. lo + o + 3` of the rows of a token at `pos` whose cache rows start at
// `kbase`, read from the cache, folded into each head's softmax and output (keys past `pos`
// masked).
fn walk4(
    q: ptr<function, Queries>,
    acc: ptr<function, Outputs>,
    runs: ptr<function, Runs>,
    kbase: u32,
    lo: u32,
    o: u32,
    pos: u32,
    lid: u32,
) {
    let lane = lid % TEAM;
    var s: array<vec4<f32>, RB>;
    for (var k = 0u; k < 4u; k++) {
        let j = min(lo + o + k, pos);
        for (var c = 0u; c < CK; c++) {
            let key = load_k(kbase + j, lane + c * TEAM);
            for (var i = 0u; i < RB; i++) {
                s[i][k] += dot((*q)[i][c], key);
            }
        }
    }
    var folded: array<Folded, RB>;
    for (var i = 0u; i < RB; i++) {
        var s4 = team_sum4(s[i], lid);
        for (var k = 0u; k < 4u; k++) {
            if (lo + o + k > pos) {
                s4[k] = NEG;
            }
        }
        folded[i] = fold(s4, (*runs)[i]);
        (*runs)[i] = folded[i].run;
    }
    for (var c = 0u; c < CV; c++) {
        var v: array<vec4<f32>, 4>;
        for (var k = 0u; k < 4u; k++) {
            v[k] = load_v(kbase + min(lo + o + k, pos), lane + c * TEAM);
        }
        for (var i = 0u; i < RB; i++) {
            let f = folded[i];
            (*acc)[i][c] = (*acc)[i][c] * f.corr + f.p.x * v[0] + f.p.y * v[1] + f.p.z * v[2] + f.p.w * v[3];
        }
    }
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
#ifdef TILED
// Prompts: a workgroup takes ROWS consecutive tokens of one q head (a team of TEAM lanes per
// token). When they belong to one sequence, it stages their keys and values in tiles of
// TILE_KEYS in workgroup memory, so each cache row is read once per ROWS tokens instead of once
// per token; a long prompt so reads its cache ROWS times less. A block that straddles
// sequences (decode tokens of a batched step) walks each row's own keys from the cache.
var<workgroup> Kt: array<vec4<f32>, TILE_KEYS * HD4>;
var<workgroup> Vt: array<vec4<f32>, TILE_KEYS * HDV4>;

// Tile keys `kk .. kk + 3` (cache positions `j0 + kk ..`), folded into a row at `pos` that sees
// keys from `lo`.
fn tile4(
    q: ptr<function, Queries>,
    acc: ptr<function, Outputs>,
    runs: ptr<function, Runs>,
    j0: u32,
    kk: u32,
    lo: u32,
    pos: u32,
    lid: u32,
) {
    let lane = lid % TEAM;
    var s4 = vec4<f32>(0.0);
    for (var k = 0u; k < 4u; k++) {
        var s = 0.0;
        for (var c = 0u; c < CK; c++) {
            s += dot((*q)[0][c], Kt[(kk + k) * HD4 + lane + c * TEAM]);
        }
        s4[k] = s;
    }
    s4 = team_sum4(s4, lid);
    for (var k = 0u; k < 4u; k++) {
        let j = j0 + kk + k;
        if (j < lo || j > pos) {
            s4[k] = NEG;
        }
    }
    let f = fold(s4, (*runs)[0]);
    (*runs)[0] = f.run;
    for (var c = 0u; c < CV; c++) {
        var a = (*acc)[0][c] * f.corr;
        for (var k = 0u; k < 4u; k++) {
            a += f.p[k] * Vt[(kk + k) * HDV4 + lane + c * TEAM];
        }
        (*acc)[0][c] = a;
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wid.x;
    let first_t = wid.y * ROWS;
    if (first_t >= S.n_tokens) {
        return;
    }
    let last_t = min(first_t + ROWS, S.n_tokens) - 1u;
    let lane = lid % TEAM;
    let t = min(first_t + lid / TEAM, last_t);
    let g = h / (P.n_head / P.n_kv);
    let pos = Pos[t].x;
    let lo = key_lo(pos);
    // The block's keys, and whether its tokens share one sequence (uniform: from Pos alone).
    let base = Pos[first_t].y;
    var one_sequence = true;
    var k_first = 0xffffffffu;
    var k_last = 0u;
    var n_keys = 0u;
    for (var r = first_t; r <= last_t; r++) {
        let p = Pos[r];
        one_sequence = one_sequence && p.y == base;
        k_first = min(k_first, key_lo(p.x));
        k_last = max(k_last, p.x);
        n_keys = max(n_keys, p.x + 1u - key_lo(p.x));
    }

    // One head per team (RB is 1): the tile already shares each key among ROWS tokens.
    var q: Queries;
    q[0] = load_q(t, h, lane);
    var acc: Outputs;
    var runs: Runs;
    runs[0] = start_running(h);
    if (one_sequence) {
        let kbase = g * P.ctx + base;
        for (var j0 = k_first; j0 <= k_last; j0 += TILE_KEYS) {
            // The previous tile is spent before this one overwrites it.
            workgroupBarrier();
            for (var i = lid; i < TILE_KEYS * HD4; i += WG) {
                Kt[i] = load_k(kbase + min(j0 + i / HD4, k_last), i % HD4);
            }
            for (var i = lid; i < TILE_KEYS * HDV4; i += WG) {
                Vt[i] = load_v(kbase + min(j0 + i / HDV4, k_last), i % HDV4);
            }
            workgroupBarrier();
            for (var kk = 0u; kk < TILE_KEYS; kk += 4u) {
                tile4(&q, &acc, &runs, j0, kk, lo, pos, lid);
            }
        }
    } else {
        let kbase = g * P.ctx + Pos[t].y;
        for (var o = 0u; o < n_keys; o += 4u) {
            walk4(&q, &acc, &runs, kbase, lo, o, pos, lid);
        }
    }
    if (first_t + lid / TEAM > last_t) {
        return;
    }
    let inv = 1.0 / runs[0].l;
    for (var c = 0u; c < CV; c++) {
        store_row(t, h, lane + c * TEAM, acc[0][c], inv);
    }
}
#else
// A row is a token and RB q heads of one kv group, served by one team.
@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let rows_per_wg = WG / TEAM;
    let rows_per_token = P.n_head / RB;
    let n_rows = S.n_tokens * rows_per_token;
    let first_row = wid.x * rows_per_wg;
    if (first_row >= n_rows) {
        return;
    }
    let last_row = min(first_row + rows_per_wg, n_rows) - 1u;
    let lane = lid % TEAM;
    let row = min(first_row + lid / TEAM, last_row);
    let t = row / rows_per_token;
    let h0 = row % rows_per_token * RB;
    let g = h0 / (P.n_head / P.n_kv);
    let pos = Pos[t].x;
    let lo = key_lo(pos);
    // The workgroup walks as many keys as its longest row (barriers need a uniform trip count).
    var n_keys = 0u;
    for (var r = first_row; r <= last_row; r++) {
        let p = Pos[r / rows_per_token].x;
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

    var q: Queries;
    var acc: Outputs;
    var runs: Runs;
    for (var i = 0u; i < RB; i++) {
        q[i] = load_q(t, h0 + i, lane);
        runs[i] = start_running(h0 + i);
    }
    let kbase = g * P.ctx + Pos[t].y;
    for (var o = o_begin; o < o_end; o += 4u) {
        walk4(&q, &acc, &runs, kbase, lo, o, pos, lid);
    }
    if (first_row + lid / TEAM > last_row) {
        return;
    }
    for (var i = 0u; i < RB; i++) {
#ifdef SPLIT
        let at = ((t * P.n_head + h0 + i) * nwg.y + wid.y) * (HDV4 + 1u);
        for (var c = 0u; c < CV; c++) {
            Part[at + lane + c * TEAM] = acc[i][c];
        }
        if (lane == 0u) {
            Part[at + HDV4] = vec4<f32>(runs[i].m, runs[i].l, 0.0, 0.0);
        }
#else
        let inv = 1.0 / runs[i].l;
        for (var c = 0u; c < CV; c++) {
            store_row(t, h0 + i, lane + c * TEAM, acc[i][c], inv);
        }
#endif
    }
}
#endif
#endif
