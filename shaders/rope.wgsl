// Per token and head of the packed QKV rows (q heads optionally followed by gate logits): optional per-head RMS norm of q and k (qwen3,
// gemma3), rotary position embedding of q and k, then k and v written into the KV cache.
// One workgroup per (head slot, token); slots are the q heads, then the k heads, then the v
// heads. Each invocation owns two elements of the head. The cos/sin table was computed on the
// CPU in double precision: table[pos * n_rot/2 + i] = (cos, sin) of pos * freq_scale * base^(-2i/n_rot).
// Each token carries its own position and the cache row of its sequence's position 0, so one
// dispatch serves tokens of many sequences (continuous batching).

#include "reduce.wgsl"
#include "kv_layout.wgsl"

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
// Each side of the cache: f32, f16 (K_F16/V_F16), or quantized (K_QUANT/V_QUANT: Q8_0, or
// Q4_0 with K_Q4/V_Q4) as rows of u32 words: the quants, then the f16 block scales two per word.
#ifdef K_QUANT
@group(0) @binding(1) var<storage, read_write> Kc: array<u32>;
#else
#ifdef K_F16
@group(0) @binding(1) var<storage, read_write> Kc: array<f16>;
#else
@group(0) @binding(1) var<storage, read_write> Kc: array<f32>;
#endif
#endif
#ifdef V_QUANT
@group(0) @binding(2) var<storage, read_write> Vc: array<u32>;
#else
#ifdef V_F16
@group(0) @binding(2) var<storage, read_write> Vc: array<f16>;
#else
@group(0) @binding(2) var<storage, read_write> Vc: array<f32>;
#endif
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

struct QuantPair {
    words: array<u32, 16>,
    scales: u32,
}

// Rounds half away from zero, as C's roundf (WGSL's round goes to even).
fn round_away(x: f32) -> f32 {
    return sign(x) * floor(abs(x) + 0.5);
}

// Q8_0 scale of the block at QKV[x0..]: d = max|x| / 127 (llama.cpp's), quants round(x / d).
fn q8_scale(x0: u32) -> f32 {
    var amax = 0.0;
    for (var i = 0u; i < 32u; i++) {
        amax = max(amax, abs(QKV[x0 + i]));
    }
    return amax / 127.0;
}

// Q4_0 inverse scale of the block at QKV[x0..], as `quantize_q4_0_block` in kv_type.rs: of 21
// grids that put the largest magnitude at -7 to -9, the one whose quants leave the smallest
// error at their least-squares scale. Returns (inverse scale of the grid, that scale).
fn q4_grid(x0: u32) -> vec2<f32> {
    var vmax = 0.0;
    for (var i = 0u; i < 32u; i++) {
        let x = QKV[x0 + i];
        if (abs(x) > abs(vmax)) {
            vmax = x;
        }
    }
    var best = vec2<f32>(0.0);
    if (vmax == 0.0) {
        return best;
    }
    var best_score = -1.0;
    for (var step = -10; step <= 10; step++) {
        let inv = -(8.0 + 0.1 * f32(step)) / vmax;
        var sum_xq = 0.0;
        var sum_qq = 0.0;
        for (var i = 0u; i < 32u; i++) {
            let x = QKV[x0 + i];
            let l = clamp(round_away(x * inv), -8.0, 7.0);
            sum_xq += x * l;
            sum_qq += l * l;
        }
        let score = sum_xq * sum_xq / sum_qq;
        if (sum_qq > 0.0 && score > best_score) {
            best_score = score;
            best = vec2<f32>(inv, sum_xq / sum_qq);
        }
    }
    return best;
}

// Blocks 2p and 2p + 1 (when the row has it) of the row at QKV[src..]: Q8_0 as llama.cpp
// quantizes, Q4_0 by `q4_grid`. Q8_0 words hold four consecutive quants as bytes, Q4_0 words
// eight as nibbles (the quant + 8), the first element lowest.
fn quantize_pair(src: u32, dim: u32, p: u32, q4: bool) -> QuantPair {
    var out: QuantPair;
    var d = vec2<f32>(0.0);
    let bw = block_words(q4);
    let n_blocks = min(2u, dim / 32u - 2u * p);
    for (var b = 0u; b < n_blocks; b++) {
        let x0 = src + (2u * p + b) * 32u;
        var inv = 0.0;
        if (q4) {
            let grid = q4_grid(x0);
            inv = grid.x;
            d[b] = grid.y;
        } else {
            d[b] = q8_scale(x0);
            inv = select(0.0, 1.0 / d[b], d[b] != 0.0);
        }
        for (var w = 0u; w < bw; w++) {
            var word = 0u;
            if (q4) {
                for (var i = 0u; i < 8u; i++) {
                    let q = u32(clamp(round_away(QKV[x0 + 8u * w + i] * inv), -8.0, 7.0) + 8.0);
                    word |= q << (4u * i);
                }
            } else {
                for (var i = 0u; i < 4u; i++) {
                    let q = clamp(i32(round_away(QKV[x0 + 4u * w + i] * inv)), -127, 127);
                    word |= (bitcast<u32>(q) & 0xffu) << (8u * i);
                }
            }
            out.words[b * bw + w] = word;
        }
    }
    out.scales = pack2x16float(d);
    return out;
}

// K of kv head `g` at cache row `crow`, from QKV[src..].
fn store_k_row(g: u32, crow: u32, src: u32, lid: u32) {
#ifdef K_QUANT
    let rw = row_words(P.hd, K_IS_Q4);
    let row0 = (g * P.ctx + crow) * rw;
    let bw = block_words(K_IS_Q4);
    for (var p = lid; p < (P.hd / 32u + 1u) / 2u; p += WG) {
        let qp = quantize_pair(src, P.hd, p, K_IS_Q4);
        for (var i = 0u; i < min(2u, P.hd / 32u - 2u * p) * bw; i++) {
            Kc[row0 + 2u * p * bw + i] = qp.words[i];
        }
        Kc[row0 + P.hd / 32u * bw + p] = qp.scales;
    }
#endif
}

// V of kv head `h` at cache row `crow`, from QKV[src..].
fn store_v_row(h: u32, crow: u32, src: u32, lid: u32) {
#ifdef V_QUANT
    let rw = row_words(P.hd_v, V_IS_Q4);
    let row0 = (h * P.ctx + crow) * rw;
    let bw = block_words(V_IS_Q4);
    for (var p = lid; p < (P.hd_v / 32u + 1u) / 2u; p += WG) {
        let qp = quantize_pair(src, P.hd_v, p, V_IS_Q4);
        for (var i = 0u; i < min(2u, P.hd_v / 32u - 2u * p) * bw; i++) {
            Vc[row0 + 2u * p * bw + i] = qp.words[i];
        }
        Vc[row0 + P.hd_v / 32u * bw + p] = qp.scales;
    }
#else
    let dst = (h * P.ctx + crow) * P.hd_v;
    for (var e = lid; e < P.hd_v; e += WG) {
#ifdef V_F16
        Vc[dst + e] = f16(QKV[src + e]);
#else
        Vc[dst + e] = QKV[src + e];
#endif
    }
#endif
}

// The orthonormal Walsh-Hadamard transform, in place, of each K_ROT- (or V_ROT-) element
// block of the `dim` values at QKV[base..]: a quantized side is stored rotated, which spreads
// a head's outlier channels over the block (q turns with K, so scores are unchanged; the
// attention output turns back). Every invocation of the workgroup must call it.
fn hadamard_head(base: u32, dim: u32, block: u32, lid: u32) {
    for (var h = 1u; h < block; h *= 2u) {
        storageBarrier();
        for (var p = lid; p < dim / 2u; p += WG) {
            let i = (p / h) * 2u * h + p % h;
            let a = QKV[base + i];
            let b = QKV[base + i + h];
            QKV[base + i] = a + b;
            QKV[base + i + h] = a - b;
        }
    }
    storageBarrier();
    let scale = inverseSqrt(f32(block));
    for (var e = lid; e < dim; e += WG) {
        QKV[base + e] *= scale;
    }
    storageBarrier();
}

// One element of a float K row; a quantized K goes through QKV and `store_k_row`.
fn store_k(idx: u32, v: f32) {
#ifndef K_QUANT
#ifdef K_F16
    Kc[idx] = f16(v);
#else
    Kc[idx] = v;
#endif
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
        if (V_ROT > 0u) {
            hadamard_head(src, P.hd_v, V_ROT, lid);
        }
        store_v_row(h, crow, src, lid);
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
    if (live) {
        var y0 = x0;
        var y1 = x1;
        if (rotate) {
            // Pair i turns at frequency i in both layouts.
            let cs = Tab[pos * (P.n_rot / 2u) + i];
            y0 = x0 * cs.x - x1 * cs.y;
            y1 = x0 * cs.y + x1 * cs.x;
        }
        let dst = ((slot - P.n_head) * P.ctx + crow) * P.hd;
        if (is_k && !K_QUANTIZED) {
            store_k(dst + e0, y0);
            store_k(dst + e1, y1);
        } else {
            QKV[base + e0] = y0;
            QKV[base + e1] = y1;
        }
    }
    if (K_ROT > 0u) {
        hadamard_head(base, P.hd, K_ROT, lid);
    }
    // A quantized row needs every element of its blocks: k goes back to QKV, and the
    // workgroup quantizes it from there once all of it is written.
    if (is_k && K_QUANTIZED) {
        storageBarrier();
        store_k_row(slot - P.n_head, crow, base, lid);
    }
}
