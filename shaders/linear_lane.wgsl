// Linear layer with one output row per invocation (TR rows each) and TT tokens per workgroup:
// Y[t, r] = sum_c W[r, c] * X[t, c]. No workgroup memory, no barriers, no reduction. Each run
// of 32 inputs is loaded once per subgroup (lane i loads one vec4, subgroupBroadcast hands it
// to the others) and reused for every row of every lane. This is the shape that suits CPU-like
// adapters, where a subgroup is one SIMD register and a workgroup runs on one core; on GPUs the
// row-per-lane reads are not coalesced and matvec.wgsl / matmul.wgsl are used instead.
// IDS (mixture of experts): z indexes (token, slot) pairs, one per workgroup column, and the
// pair's expert (read from Ids on the GPU) picks the slice of the stacked weight.

#include "linear_common.wgsl"

// Types with whole-block reads (quant.wgsl GROUP_DOT) walk single-column rows block by block.
#ifdef GROUP_DOT
#ifndef TOKENS8
#define BLOCK_LOOP
#endif
#endif

#ifdef IDS
#ifdef IDS_TILES
@group(0) @binding(8) var<storage, read> Pairs: array<u32>;
@group(0) @binding(9) var<storage, read> Tiles: array<vec4<u32>>;
#else
@group(0) @binding(7) var<storage, read> Ids: array<u32>;
#endif
#endif
@group(0) @binding(6) var<uniform> S: Step;

override WG: u32 = 64u;
// Tokens (or expert pairs) per workgroup: 1, or 8 with TOKENS8.
#ifdef TOKENS8
const TT: u32 = 8u;
#else
const TT: u32 = 1u;
#endif

var<private> cols_start: u32;

// Input row of the workgroup's column c (a token, or a (token, slot) pair's input).
fn x_col(c: u32) -> u32 {
#ifdef IDS
#ifdef IDS_TILES
    return Pairs[cols_start + c] / P.x_div;
#else
    return cols_start / P.x_div;
#endif
#else
    return cols_start + c;
#endif
}

// Output offset of column c (row 0 of this weight part).
fn y_base(c: u32) -> u32 {
#ifdef IDS
#ifdef IDS_TILES
    return P.y_offset + Pairs[cols_start + c] * P.y_stride;
#else
    return P.y_offset + cols_start * P.y_stride;
#endif
#else
    return P.y_offset + (cols_start + c) * P.y_stride + P.y_row0;
#endif
}

fn bias_row0() -> u32 {
#ifdef IDS
    return expert_brow0;
#else
    return P.y_row0;
#endif
}

// Run u of column c of X is 8 vec4s. With subgroups, lane i of each group of 8 loads vec4 i
// once (`x_part`) and `x_run` broadcasts the others; without, every lane loads all 8.
fn x_base(c: u32, u: u32) -> u32 {
    return (P.x_offset + c * P.x_stride) / 4u + u * 8u;
}

fn x_part(c: u32, u: u32, lane: u32) -> vec4<f32> {
#ifdef X_BROADCAST
    return X[x_base(c, u) + (lane & 7u)];
#else
    return vec4<f32>(0.0);
#endif
}

fn x_run(mine: vec4<f32>, c: u32, u: u32) -> Unit {
    var xv: Unit;
#ifdef X_BROADCAST
    xv[0] = subgroupBroadcast(mine, 0u);
    xv[1] = subgroupBroadcast(mine, 1u);
    xv[2] = subgroupBroadcast(mine, 2u);
    xv[3] = subgroupBroadcast(mine, 3u);
    xv[4] = subgroupBroadcast(mine, 4u);
    xv[5] = subgroupBroadcast(mine, 5u);
    xv[6] = subgroupBroadcast(mine, 6u);
    xv[7] = subgroupBroadcast(mine, 7u);
#else
    let base = x_base(c, u);
    for (var i = 0u; i < 8u; i++) {
        xv[i] = X[base + i];
    }
#endif
    return xv;
}

// Sums of the two halves of a run, for the per-block offsets in qdot32.
fn halves(x: Unit) -> vec2<f32> {
    let one = vec4<f32>(1.0);
    return vec2<f32>(dot(x[0] + x[1] + x[2] + x[3], one), dot(x[4] + x[5] + x[6] + x[7], one));
}

// Column c of a pair of vec4 accumulators.
fn pick(a: vec4<f32>, b: vec4<f32>, c: u32) -> f32 {
    if (c < 4u) {
        return a[c];
    }
    return b[c - 4u];
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
#ifdef X_BROADCAST
    @builtin(subgroup_invocation_id) lane: u32,
#endif
) {
#ifndef X_BROADCAST
    let lane = 0u;
#endif
    meta_off = P.meta_off;
#ifdef IDS
#ifdef IDS_TILES
    // Up to TT pairs that all use one expert (grouped by moe.wgsl PLAN); tiles along y.
    let group = wid.x;
    let tile = Tiles[wid.y];
    let expert = tile.x;
    let n_cols = tile.z;
    cols_start = tile.y;
#else
    // One pair per workgroup, z = pair.
    let group = wid.x + wid.y * nwg.x;
    cols_start = wid.z;
    let expert = Ids[wid.z];
    let n_cols = 1u;
#endif
    let expert_row0 = expert * P.expert_rows;
    expert_brow0 = expert_row0;
    // Experts are never split across parts; this part may not hold the pair's expert.
    if (expert_row0 < P.y_row0 || expert_row0 >= P.y_row0 + P.nrows) {
        return;
    }
    let w_row0 = expert_row0 - P.y_row0;
    let nrows = P.expert_rows;
#else
    let group = wid.x + wid.y * nwg.x;
    cols_start = wid.z * TT;
    let n_cols = min(TT, S.n_tokens - min(cols_start, S.n_tokens));
    let w_row0 = 0u;
    let nrows = P.nrows;
#endif
#ifdef GLU_PAIR
    // One output row per invocation from two weight rows: its gate and its up projection.
    let out_rows = nrows / 2u;
    let row_base = group * WG;
    if (row_base >= out_rows || n_cols == 0u) {
        return;
    }
    let r0 = w_row0 + min(row_base + lid, out_rows - 1u);
    let r1 = r0 + out_rows;
#else
    let row_base = group * WG * 2u;
    if (row_base >= nrows || n_cols == 0u) {
        return;
    }
    // Two rows per invocation; rows past the end recompute the last row, never stored.
    let r0 = w_row0 + min(row_base + lid, nrows - 1u);
    let r1 = w_row0 + min(row_base + lid + WG, nrows - 1u);
#endif
    let units = P.ncols / 32u;
    let upb = QK / 32u;
    // Columns are spelled out rather than looped over: indexing accumulator arrays by a loop
    // counter sends them to memory on some compilers (lavapipe: 50% slower).
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var b0 = vec4<f32>(0.0);
    var b1 = vec4<f32>(0.0);
    let last = n_cols - 1u;
#ifdef BLOCK_LOOP
    // One column, block by block: the type reads each block's metadata and payload once.
    for (var blk = 0u; blk < P.nb; blk++) {
        let k0 = r0 * P.nb + blk;
        let k1 = r1 * P.nb + blk;
        let m0 = block_meta(k0);
        let m1 = block_meta(k1);
        for (var g = 0u; g < GROUPS; g++) {
            let u = vec2<u32>(blk * upb) + group_runs(g);
            let xa = x_run(x_part(x_col(0u), u.x, lane), x_col(0u), u.x);
            let xb = x_run(x_part(x_col(0u), u.y, lane), x_col(0u), u.y);
            let ha = halves(xa);
            let hb = halves(xb);
            a0.x += gdot(k0, g, m0, xa, xb, ha, hb);
            a1.x += gdot(k1, g, m1, xa, xb, ha, hb);
        }
    }
#else
    for (var u = 0u; u < units; u++) {
        let k0 = r0 * P.nb + u / upb;
        let k1 = r1 * P.nb + u / upb;
        let sub = u % upb;
#ifdef TOKENS8
        // Eight columns: dequantize each weight run once and reuse it.
        let w0 = dq32(k0, sub);
        let w1 = dq32(k1, sub);
        var xv = x_run(x_part(x_col(0u), u, lane), x_col(0u), u);
        a0.x += dot8(w0, xv);
        a1.x += dot8(w1, xv);
        xv = x_run(x_part(x_col(min(1u, last)), u, lane), x_col(min(1u, last)), u);
        a0.y += dot8(w0, xv);
        a1.y += dot8(w1, xv);
        xv = x_run(x_part(x_col(min(2u, last)), u, lane), x_col(min(2u, last)), u);
        a0.z += dot8(w0, xv);
        a1.z += dot8(w1, xv);
        xv = x_run(x_part(x_col(min(3u, last)), u, lane), x_col(min(3u, last)), u);
        a0.w += dot8(w0, xv);
        a1.w += dot8(w1, xv);
        xv = x_run(x_part(x_col(min(4u, last)), u, lane), x_col(min(4u, last)), u);
        b0.x += dot8(w0, xv);
        b1.x += dot8(w1, xv);
        xv = x_run(x_part(x_col(min(5u, last)), u, lane), x_col(min(5u, last)), u);
        b0.y += dot8(w0, xv);
        b1.y += dot8(w1, xv);
        xv = x_run(x_part(x_col(min(6u, last)), u, lane), x_col(min(6u, last)), u);
        b0.z += dot8(w0, xv);
        b1.z += dot8(w1, xv);
        xv = x_run(x_part(x_col(min(7u, last)), u, lane), x_col(min(7u, last)), u);
        b0.w += dot8(w0, xv);
        b1.w += dot8(w1, xv);
#else
        // One column: the quant type's own dot applies scales once per block.
        let xv = x_run(x_part(x_col(0u), u, lane), x_col(0u), u);
        let xs = halves(xv);
        a0.x += qdot32(k0, sub, xv, xs);
        a1.x += qdot32(k1, sub, xv, xs);
#endif
    }
#endif
#ifdef GLU_PAIR
    let row = row_base + lid;
    if (row < out_rows) {
        for (var c = 0u; c < n_cols; c++) {
            store_pair(y_base(c) + row, pick(a0, b0, c), pick(a1, b1, c));
        }
    }
#else
    let row0 = row_base + lid;
    let row1 = row0 + WG;
    for (var c = 0u; c < n_cols; c++) {
        if (row0 < nrows) {
            store(y_base(c) + row0, bias_row0() + row0, pick(a0, b0, c));
        }
        if (row1 < nrows) {
            store(y_base(c) + row1, bias_row0() + row1, pick(a1, b1, c));
        }
    }
#endif
}
