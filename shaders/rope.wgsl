// Per token and head of the packed QKV rows (q heads optionally followed by gate logits): optional per-head RMS norm of q and k (qwen3,
// gemma3), rotary position embedding of q and k, then k and v written into the KV cache.
// One workgroup per (head slot, token); slots are the q heads, then the k heads, then the v
// heads. Each invocation owns two elements of the head. The cos/sin table was computed on the
// CPU in double precision: table[pos * n_rot/2 + i] = (cos, sin) of pos * freq_scale * base^(-2i/n_rot).
// Each token carries its own position and the cache row of its sequence's position 0, so one
// dispatch serves tokens of many sequences (continuous batching).

#include "reduce.wgsl"

struct Params {
    n_head: u32,
    n_kv: u32,
    hd: u32,
    hd_v: u32,
    n_rot: u32,
    // Cache rows per kv head (every sequence's positions).
    ctx: u32,
    qkv_stride: u32,
    eps: f32,
}

@group(0) @binding(0) var<storage, read_write> QKV: array<f32>;
#ifdef KV_F16
@group(0) @binding(1) var<storage, read_write> Kc: array<f16>;
@group(0) @binding(2) var<storage, read_write> Vc: array<f16>;
#else
@group(0) @binding(1) var<storage, read_write> Kc: array<f32>;
@group(0) @binding(2) var<storage, read_write> Vc: array<f32>;
#endif
@group(0) @binding(3) var<storage, read> Tab: array<vec2<f32>>;
@group(0) @binding(4) var<uniform> P: Params;
// Per token: (position in its sequence, cache row of the sequence's position 0).
@group(0) @binding(5) var<storage, read> Pos: array<vec2<u32>>;
#ifdef QK_NORM
// q-norm weights (hd) followed by k-norm weights (hd).
@group(0) @binding(6) var<storage, read> Nw: array<f32>;
#endif

override WG: u32 = 32u;

// Elements between q heads: with an output gate (Qwen3.5) each head's query is followed by as many
// gate logits, which stay where they are for the attention kernel.
#ifdef GATED
fn q_span() -> u32 { return 2u * P.hd; }
#else
fn q_span() -> u32 { return P.hd; }
#endif

fn store_kv(is_v: bool, idx: u32, v: f32) {
#ifdef KV_F16
    if (is_v) { Vc[idx] = f16(v); } else { Kc[idx] = f16(v); }
#else
    if (is_v) { Vc[idx] = v; } else { Kc[idx] = v; }
#endif
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
#ifdef HAS_SUBGROUPS
    @builtin(subgroup_size) sgs: u32,
    @builtin(subgroup_invocation_id) sgl: u32,
#endif
) {
#ifdef HAS_SUBGROUPS
    sg_size = sgs;
    sg_lane = sgl;
#endif
    let slot = wid.x;
    let t = wid.y;
    let pos = Pos[t].x;
    let crow = Pos[t].y + pos;
    let row = t * P.qkv_stride;
    if (slot >= P.n_head + P.n_kv) {
        // v head: copy into the cache.
        let h = slot - P.n_head - P.n_kv;
        let src = row + P.n_head * q_span() + P.n_kv * P.hd + h * P.hd_v;
        let dst = (h * P.ctx + crow) * P.hd_v;
        for (var e = lid; e < P.hd_v; e += WG) {
            store_kv(true, dst + e, QKV[src + e]);
        }
        return;
    }
    let is_k = slot >= P.n_head;
    var base: u32;
    if (is_k) {
        base = row + P.n_head * q_span() + (slot - P.n_head) * P.hd;
    } else {
        base = row + slot * q_span();
    }
    // Element pair owned by this invocation (WG * 2 >= hd).
    let i = lid;
    let live = 2u * i < P.hd;
    var e0: u32;
    var e1: u32;
    var rotate = false;
#ifdef NEOX
    let half = P.n_rot / 2u;
    if (i < half) {
        e0 = i;
        e1 = i + half;
        rotate = true;
    } else {
        e0 = P.n_rot + 2u * (i - half);
        e1 = e0 + 1u;
    }
#else
    e0 = 2u * i;
    e1 = e0 + 1u;
    rotate = e0 < P.n_rot;
#endif
    var x0 = 0.0;
    var x1 = 0.0;
    if (live) {
        x0 = QKV[base + e0];
        x1 = QKV[base + e1];
    }
#ifdef QK_NORM
    let ss = wg_sum(x0 * x0 + x1 * x1, lid);
    let r = inverseSqrt(ss / f32(P.hd) + P.eps);
    var nb = 0u;
    if (is_k) {
        nb = P.hd;
    }
    if (live) {
        x0 = x0 * r * Nw[nb + e0];
        x1 = x1 * r * Nw[nb + e1];
    }
#endif
    if (!live) {
        return;
    }
    var y0 = x0;
    var y1 = x1;
    if (rotate) {
        // Pair i turns at frequency i in both layouts.
        let cs = Tab[pos * (P.n_rot / 2u) + i];
        y0 = x0 * cs.x - x1 * cs.y;
        y1 = x0 * cs.y + x1 * cs.x;
    }
    if (is_k) {
        let dst = ((slot - P.n_head) * P.ctx + crow) * P.hd;
        store_kv(false, dst + e0, y0);
        store_kv(false, dst + e1, y1);
    } else {
        QKV[base + e0] = y0;
        QKV[base + e1] = y1;
    }
}
