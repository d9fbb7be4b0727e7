// Small element-wise ops on f32 rows.
//   ADD:      Y[i] += X[i]
//   GLU_SILU / GLU_GELU: Y[i] = act(G[i]) * Y[i]
//   SOFTCAP:  Y[i] = cap * tanh(Y[i] / cap)
//   ADD_GATED: Y[i] += sigmoid(G[i / row]) * X[i] (a shared expert scaled by its per-token gate)

struct Params {
    n: u32,
    cap: f32,
    row: u32,
    _pad2: u32,
}

#ifndef SOFTCAP
@group(0) @binding(0) var<storage, read> X: array<f32>;
#endif
@group(0) @binding(1) var<storage, read_write> Y: array<f32>;
@group(0) @binding(2) var<uniform> P: Params;
#ifdef ADD_GATED
@group(0) @binding(3) var<storage, read> G: array<f32>;
// (pos0, n_tokens, _, _): only the step's rows are updated.
@group(0) @binding(4) var<uniform> S: vec4<u32>;
#endif

override WG: u32 = 256u;

#include "activation.wgsl"

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= P.n) {
        return;
    }
#ifdef ADD_GATED
    if (i >= S.y * P.row) {
        return;
    }
#endif
#ifdef ADD
    Y[i] += X[i];
#endif
#ifdef ADD_GATED
    Y[i] += X[i] / (1.0 + exp(-G[i / P.row]));
#endif
#ifdef GLU
    Y[i] = act(X[i]) * Y[i];
#endif
#ifdef SOFTCAP
    // Clamped so that no tanh implementation overflows exp(); tanh(15) is 1 in f32.
    Y[i] = P.cap * tanh(clamp(Y[i] / P.cap, -15.0, 15.0));
#endif
}
