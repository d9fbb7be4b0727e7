// Embedding lookup: Out[t, :] = dequant(W[ids[t], :]) * scale. A weight split across buffers
// is looked up with one dispatch per part; each skips the tokens whose row it does not hold.

struct Params {
    ncols: u32,
    nb: u32,
    meta_off: u32,
    // Rows [row0, row0 + nrows) live in this buffer.
    row0: u32,
    nrows: u32,
    out_stride: u32,
    scale: f32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> Q: array<vec4<u32>>;
@group(0) @binding(10) var<storage, read> M: array<u32>;
@group(0) @binding(1) var<storage, read> Ids: array<u32>;
@group(0) @binding(2) var<storage, read_write> Out: array<vec4<f32>>;
@group(0) @binding(3) var<uniform> P: Params;

#include "quant.wgsl"

override WG: u32 = 64u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    meta_off = P.meta_off;
    let t = wid.x;
    let id = Ids[t];
    if (id < P.row0 || id >= P.row0 + P.nrows) {
        return;
    }
    let row = id - P.row0;
    let units = P.ncols / 32u;
    let upb = QK / 32u;
    let o = t * P.out_stride / 4u;
    for (var u = lid; u < units; u += WG) {
        let w = dq32(row * P.nb + u / upb, u % upb);
        for (var i = 0u; i < 8u; i++) {
            Out[o + u * 8u + i] = w[i] * P.scale;
        }
    }
}
