// The orthonormal Walsh-Hadamard transform of 64-element blocks of f32 rows, in place: the
// attention output of a V cache stored rotated (see rope.wgsl) turns back, the transform being
// its own inverse. One workgroup per block; a step's token t owns X[t * P.row ..]. With GATED
// (Qwen3.5) the turned output is then multiplied by the sigmoid of its gate logits, which
// follow each q head in the packed QKV rows: the gate applies to the output as it really is.

struct Params {
    // Floats per token; a multiple of 64.
    row: u32,
    // GATED: floats per token of the packed QKV rows, and the head size.
    qkv_stride: u32,
    head_dim: u32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read_write> X: array<f32>;
@group(0) @binding(1) var<uniform> P: Params;
#ifdef GATED
@group(0) @binding(2) var<storage, read> QKV: array<f32>;
#endif

var<workgroup> block: array<f32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let at = wid.y * P.row + wid.x * 64u + lid;
    block[lid] = X[at];
    for (var h = 1u; h < 64u; h *= 2u) {
        workgroupBarrier();
        let mine = block[lid];
        let other = block[lid ^ h];
        workgroupBarrier();
        // The lower element of a pair takes the sum, the upper one the difference.
        block[lid] = select(mine + other, other - mine, (lid & h) != 0u);
    }
    workgroupBarrier();
    var y = block[lid] * 0.125;
#ifdef GATED
    let e = wid.x * 64u + lid;
    let head = e / P.head_dim;
    let gate = QKV[wid.y * P.qkv_stride + (2u * head + 1u) * P.head_dim + e % P.head_dim];
    y = y / (1.0 + exp(-gate));
#endif
    X[at] = y;
}
