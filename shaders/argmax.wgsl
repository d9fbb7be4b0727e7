// Greedy sampling on the GPU: index of the largest logit (the lowest index wins ties, as in
// llama.cpp). Stage one reduces chunks to (value, index) pairs; stage two (STAGE2) reduces
// those and writes the token id where the next step's embedding lookup reads it.

struct Params {
    n: u32,
    chunk: u32,
    logits_offset: u32,
    out_index: u32,
}

@group(0) @binding(0) var<storage, read> L: array<f32>;
@group(0) @binding(1) var<storage, read_write> Part: array<vec2<u32>>;
@group(0) @binding(2) var<storage, read_write> Tok: array<u32>;
@group(0) @binding(3) var<uniform> P: Params;

override WG: u32 = 256u;

var<workgroup> bv: array<f32, 256>;
var<workgroup> bi: array<u32, 256>;

fn better(v: f32, i: u32, w: f32, j: u32) -> bool {
    return v > w || (v == w && i < j);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    var best_v = -3.4e38;
    var best_i = 0xFFFFFFFFu;
#ifdef STAGE2
    for (var k = lid; k < P.n; k += WG) {
        let e = Part[k];
        let v = bitcast<f32>(e.x);
        if (better(v, e.y, best_v, best_i)) {
            best_v = v;
            best_i = e.y;
        }
    }
#else
    let start = wid.x * P.chunk;
    let end = min(start + P.chunk, P.n);
    for (var k = start + lid; k < end; k += WG) {
        let v = L[P.logits_offset + k];
        if (better(v, k, best_v, best_i)) {
            best_v = v;
            best_i = k;
        }
    }
#endif
    bv[lid] = best_v;
    bi[lid] = best_i;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s && better(bv[lid + s], bi[lid + s], bv[lid], bi[lid])) {
            bv[lid] = bv[lid + s];
            bi[lid] = bi[lid + s];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
#ifdef STAGE2
        Tok[P.out_index] = bi[0];
#else
        Part[wid.x] = vec2<u32>(bitcast<u32>(bv[0]), bi[0]);
#endif
    }
}
