// Greedy sampling on the GPU: index of the largest logit (the lowest index wins ties, as in
// llama.cpp). Stage one reduces chunks to (value, index) pairs; stage two (STAGE2) reduces
// those and writes the token id where the next step's embedding lookup reads it.
//
// A row holding a NaN or an infinity has no meaningful argmax (NaN compares false, so it would
// silently lose). Such a row yields a marker instead of a token id: 0xFFFFFFFF when it holds a
// NaN, 0xFFFFFFFE when it holds an infinity (engine/src/finite.rs turns these into an error).
// Non-finite values are found from their bits, which no compiler may assume away.

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

const MARK_NAN: u32 = 0xFFFFFFFFu;
const MARK_INF: u32 = 0xFFFFFFFEu;

var<workgroup> bv: array<f32, 256>;
var<workgroup> bi: array<u32, 256>;
// Bit 0: a NaN was seen; bit 1: an infinity.
var<workgroup> bad: atomic<u32>;

fn better(v: f32, i: u32, w: f32, j: u32) -> bool {
    return v > w || (v == w && i < j);
}

/// 1 for NaN, 2 for an infinity, 0 for a finite value.
fn non_finite(v: f32) -> u32 {
    let b = bitcast<u32>(v);
    if ((b & 0x7F800000u) != 0x7F800000u) {
        return 0u;
    }
    return select(2u, 1u, (b & 0x007FFFFFu) != 0u);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    if (lid == 0u) {
        atomicStore(&bad, 0u);
    }
    workgroupBarrier();
    // The lowest finite value: any element of the range beats a lane that saw none.
    var best_v = -3.4028235e38;
    var best_i = 0xFFFFFFFFu;
    var flags = 0u;
#ifdef STAGE2
    for (var k = lid; k < P.n; k += WG) {
        let e = Part[k];
        if (e.y == MARK_NAN) {
            flags |= 1u;
        } else if (e.y == MARK_INF) {
            flags |= 2u;
        } else {
            let v = bitcast<f32>(e.x);
            if (better(v, e.y, best_v, best_i)) {
                best_v = v;
                best_i = e.y;
            }
        }
    }
#else
    let start = wid.x * P.chunk;
    let end = min(start + P.chunk, P.n);
    for (var k = start + lid; k < end; k += WG) {
        let v = L[P.logits_offset + k];
        flags |= non_finite(v);
        if (better(v, k, best_v, best_i)) {
            best_v = v;
            best_i = k;
        }
    }
#endif
    if (flags != 0u) {
        atomicOr(&bad, flags);
    }
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
        let f = atomicLoad(&bad);
        var idx = bi[0];
        if ((f & 1u) != 0u) {
            idx = MARK_NAN;
        } else if (f != 0u) {
            idx = MARK_INF;
        }
#ifdef STAGE2
        Tok[P.out_index] = idx;
#else
        Part[wid.x] = vec2<u32>(bitcast<u32>(bv[0]), idx);
#endif
    }
}
