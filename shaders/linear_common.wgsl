// Bindings and parameters shared by the linear-layer kernels (matvec, linear_lane, matmul).
// Weights are in the GPU layout of quant.wgsl; activations are f32 rows.

struct Params {
    ncols: u32,
    nrows: u32,
    // Blocks per row, and the first metadata word of this buffer (see repack.rs).
    nb: u32,
    meta_off: u32,
    // Output row of this weight's first row (weights split across buffers).
    y_row0: u32,
    x_offset: u32,
    x_stride: u32,
    y_offset: u32,
    y_stride: u32,
    // IDS variants: rows per expert, and (token, slot) pairs per input row.
    expert_rows: u32,
    x_div: u32,
    _pad: u32,
}

struct Step {
    pos0: u32,
    n_tokens: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> Q: array<vec4<u32>>;
@group(0) @binding(10) var<storage, read> M: array<u32>;
@group(0) @binding(1) var<storage, read> X: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> Y: array<f32>;
@group(0) @binding(3) var<uniform> P: Params;
#ifdef BIAS
@group(0) @binding(4) var<storage, read> B: array<f32>;
#endif
#ifdef GLU
@group(0) @binding(5) var<storage, read> G: array<f32>;
#endif

#include "quant.wgsl"
#include "activation.wgsl"

#ifdef GLU_PAIR
// The weight's first half of rows are gates, the second half the matching ups.
fn store_pair(yi: u32, gate: f32, up: f32) {
    Y[yi] = act(gate) * glu_up(up);
}
#endif

// First bias row of the pair's expert (IDS variants: biases are stacked like the experts).
var<private> expert_brow0: u32 = 0u;

// The epilogue: bias, residual add, GLU gate; `row` counts rows of the whole weight (of the
// whole expert stack for IDS variants).
fn store(yi: u32, row: u32, acc: f32) {
    var v = acc;
#ifdef BIAS
    v += B[row];
#endif
#ifdef ACC
    v += Y[yi];
#endif
#ifdef GLU
    v = glu_up(v) * act(G[yi]);
#endif
    Y[yi] = v;
}
