// Dequantizing matrix-vector product for decode on GPUs: Y[t, r] = sum_c W[r, c] * X[t, c].
// A workgroup computes NR consecutive rows; its WG invocations stride over the 32-element runs
// of the row (consecutive invocations read consecutive blocks, so loads coalesce), each run of
// X is loaded once for all NR rows, and a workgroup reduction sums the partial dots.
// IDS (mixture of experts): z indexes (token, slot) pairs; the weight is a stack of experts of
// P.expert_rows rows and the pair's expert is read from Ids on the GPU. X row = pair / x_div
// (x_div = k reads the token's input, 1 reads the pair's own row), Y row = pair.

#include "linear_common.wgsl"
#include "reduce.wgsl"

#ifdef IDS
@group(0) @binding(7) var<storage, read> Ids: array<u32>;
#endif

override WG: u32 = 64u;
// Rows per workgroup, 1..4.
override NR: u32 = 2u;

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
    meta_off = P.meta_off;
    let group = wid.x + wid.y * nwg.x;
#ifdef GLU_PAIR
    // One output row per workgroup: weight rows `group` (gate) and `group + half` (up).
    let row0 = group;
#else
    let row0 = group * NR;
#endif
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
    let brow0 = expert_row0;
#else
    let t = wid.z;
    let w_row0 = 0u;
    let nrows = P.nrows;
    let x0 = (P.x_offset + t * P.x_stride) / 4u;
    let y0 = P.y_offset + t * P.y_stride + P.y_row0;
    let brow0 = P.y_row0;
#endif
#ifdef GLU_PAIR
    let out_rows = nrows / 2u;
    if (row0 >= out_rows) {
        return;
    }
#else
    if (row0 >= nrows) {
        return;
    }
#endif
    let units = P.ncols / 32u;
    let upb = QK / 32u;
    var acc = vec4<f32>(0.0);
    for (var u = lid; u < units; u += WG) {
        var xv: Unit;
        for (var i = 0u; i < 8u; i++) {
            xv[i] = X[x0 + u * 8u + i];
        }
        let one = vec4<f32>(1.0);
        let xs = vec2<f32>(dot(xv[0] + xv[1] + xv[2] + xv[3], one), dot(xv[4] + xv[5] + xv[6] + xv[7], one));
        for (var r = 0u; r < NR; r++) {
#ifdef GLU_PAIR
            let row = w_row0 + row0 + r * out_rows;
#else
            // Rows past the end recompute the last row; their results are never written.
            let row = w_row0 + min(row0 + r, nrows - 1u);
#endif
            acc[r] += qdot32(row * P.nb + u / upb, u % upb, xv, xs);
        }
    }
    let tot = wg_sum4(acc, lid);
#ifdef GLU_PAIR
    if (lid == 0u) {
        store_pair(y0 + row0, tot.x, tot.y);
    }
#else
    if (lid < NR && row0 + lid < nrows) {
        store(y0 + row0 + lid, brow0 + row0 + lid, tot[lid]);
    }
#endif
}
