// Fused attention, used for prefill and decode: O = softmax(Q K^T * scale + mask) V with an
// online (flash-style) softmax, so the score matrix never exists. A row is one (token, q head);
// a team of TEAM invocations owns a row, each holding HD / TEAM elements of q and of the output
// accumulator. Keys are taken four at a time so one team reduction serves four scores. Rows of
// a workgroup are consecutive, so the q heads that share a kv head (GQA) read the same cache
// lines together. Masks: causal, plus a sliding window when P.window > 0.

struct Params {
    n_head: u32,
    n_kv: u32,
    ctx: u32,
    qkv_stride: u32,
    o_stride: u32,
    window: u32,
    scale: f32,
    _pad: u32,
}

struct Step {
    pos0: u32,
    n_tokens: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> QKV: array<vec4<f32>>;
#ifdef KV_F16
@group(0) @binding(1) var<storage, read> Kc: array<vec4<f16>>;
@group(0) @binding(2) var<storage, read> Vc: array<vec4<f16>>;
#else
@group(0) @binding(1) var<storage, read> Kc: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> Vc: array<vec4<f32>>;
#endif
@group(0) @binding(3) var<storage, read_write> O: array<vec4<f32>>;
@group(0) @binding(4) var<uniform> P: Params;
@group(0) @binding(5) var<uniform> S: Step;

const HD4: u32 = HEAD_DIM / 4u;
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

fn load_k(i: u32) -> vec4<f32> {
    return vec4<f32>(Kc[i]);
}
fn load_v(i: u32) -> vec4<f32> {
    return vec4<f32>(Vc[i]);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
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
    let pos = S.pos0 + t;
    var lo = 0u;
    if (P.window > 0u && pos + 1u > P.window) {
        lo = pos + 1u - P.window;
    }
    // The key range the whole workgroup walks (barriers need a uniform trip count).
    let pos_first = S.pos0 + first_row / P.n_head;
    let pos_last = S.pos0 + last_row / P.n_head;
    var lo_wg = 0u;
    if (P.window > 0u && pos_first + 1u > P.window) {
        lo_wg = pos_first + 1u - P.window;
    }
    let hi_wg = pos_last + 1u;

    var q: array<vec4<f32>, CK>;
    let qb = t * P.qkv_stride / 4u + h * HD4;
    for (var c = 0u; c < CK; c++) {
        q[c] = QKV[qb + lane + c * TEAM] * P.scale;
    }
    var acc: array<vec4<f32>, CV>;
    for (var c = 0u; c < CV; c++) {
        acc[c] = vec4<f32>(0.0);
    }
    var m = NEG;
    var l = 0.0;
    let kbase = g * P.ctx;
    for (var j0 = lo_wg; j0 < hi_wg; j0 += 4u) {
        var s4 = vec4<f32>(0.0);
        for (var k = 0u; k < 4u; k++) {
            let j = min(j0 + k, hi_wg - 1u);
            let kb = (kbase + j) * HD4;
            var s = 0.0;
            for (var c = 0u; c < CK; c++) {
                s += dot(q[c], load_k(kb + lane + c * TEAM));
            }
            s4[k] = s;
        }
        s4 = team_sum4(s4, lid);
        for (var k = 0u; k < 4u; k++) {
            let j = j0 + k;
            if (j < lo || j > pos) {
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
                let j = min(j0 + k, hi_wg - 1u);
                a += p[k] * load_v((kbase + j) * HDV4 + lane + c * TEAM);
            }
            acc[c] = a;
        }
        m = m_new;
    }
    if (first_row + lid / TEAM > last_row) {
        return;
    }
    let ob = t * P.o_stride / 4u + h * HDV4;
    let inv = 1.0 / l;
    for (var c = 0u; c < CV; c++) {
        O[ob + lane + c * TEAM] = acc[c] * inv;
    }
}
