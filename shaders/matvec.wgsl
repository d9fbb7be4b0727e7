// Dequantizing matrix-vector product for decode: Y[t, r] = sum_c W[r, c] * X[t, c].
// A workgroup computes NR consecutive rows; its WG invocations stride over the 32-element runs
// of the row, so each run of X is loaded once and used for all NR rows.
// Epilogues (structure, by define): ACC adds into Y (residual), BIAS adds B[r], GLU_SILU /
// GLU_GELU multiply by act(G[t, r]) (the gate computed by an earlier matvec).
// IDS (mixture of experts): z indexes (token, slot) pairs; the weight is a stack of experts of
// P.expert_rows rows and the pair's expert is read from Ids on the GPU. X row = pair / x_div
// (x_div = k reads the token's input, 1 reads the pair's own row), Y row = pair.

#include "quant.wgsl"
#include "reduce.wgsl"

struct Params {
    ncols: u32,
    nrows: u32,
    row_bytes: u32,
    // Output row of this weight's first row (weights split across buffers).
    y_row0: u32,
    x_offset: u32,
    x_stride: u32,
    y_offset: u32,
    y_stride: u32,
    expert_rows: u32,
    x_div: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> W: array<u32>;
@group(0) @binding(1) var<storage, read> X: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> Y: array<f32>;
@group(0) @binding(3) var<uniform> P: Params;
#ifdef BIAS
@group(0) @binding(4) var<storage, read> B: array<f32>;
#endif
#ifdef GLU
@group(0) @binding(5) var<storage, read> G: array<f32>;
#endif
#ifdef IDS
@group(0) @binding(7) var<storage, read> Ids: array<u32>;
#endif

override WG: u32 = 64u;
// Rows per workgroup, 1..4.
override NR: u32 = 2u;

#include "activation.wgsl"

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
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
    let group = wid.x + wid.y * nwg.x;
    let row0 = group * NR;
#ifdef IDS
    let pair = wid.z;
    let expert_row0 = Ids[pair] * P.expert_rows;
    // Experts are never split across parts; this part may not hold the pair's expert.
    if (expert_row0 < P.y_row0 || expert_row0 >= P.y_row0 + P.nrows) {
        return;
    }
    let w_row0 = expert_row0 - P.y_row0;
    let nrows = P.expert_rows;
    let x0 = (P.x_offset + (pair / P.x_div) * P.x_stride) / 4u;
    let y0 = P.y_offset + pair * P.y_stride;
#else
    let t = wid.z;
    let w_row0 = 0u;
    let nrows = P.nrows;
    let x0 = (P.x_offset + t * P.x_stride) / 4u;
    let y0 = P.y_offset + t * P.y_stride + P.y_row0;
#endif
    if (row0 >= nrows) {
        return;
    }
    let units = P.ncols / 32u;
    let upb = QK / 32u;
    var acc = vec4<f32>(0.0);
    for (var u = lid; u < units; u += WG) {
        var xv: Unit;
        for (var i = 0u; i < 8u; i++) {
            xv[i] = X[x0 + u * 8u + i];
        }
        let boff = (u / upb) * BLOCK_BYTES;
        let sub = u % upb;
        for (var r = 0u; r < NR; r++) {
            // Rows past the end recompute the last row; their results are never written.
            let row = w_row0 + min(row0 + r, nrows - 1u);
            let w = dq32(row * P.row_bytes + boff, sub);
            var s = 0.0;
            for (var i = 0u; i < 8u; i++) {
                s += dot(w[i], xv[i]);
            }
            acc[r] += s;
        }
    }
    let tot = wg_sum4(acc, lid);
    if (lid < NR && row0 + lid < nrows) {
        let row = row0 + lid;
        var v = tot[lid];
        let yi = y0 + row;
#ifdef BIAS
        v += B[P.y_row0 + row];
#endif
#ifdef ACC
        v += Y[yi];
#endif
#ifdef GLU
        v *= act(G[yi]);
#endif
        Y[yi] = v;
    }
}
