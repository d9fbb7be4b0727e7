// Small element-wise ops on f32 rows.
//   ADD:      Y[i] += X[i]
//   GLU_SILU / GLU_GELU: Y[i] = act(G[i]) * Y[i]
//   SOFTCAP:  Y[i] = cap * tanh(Y[i] / cap)

struct Params {
    n: u32,
    cap: f32,
    _pad1: u32,
    _pad2: u32,
}

#ifndef SOFTCAP
@group(0) @binding(0) var<storage, read> X: array<f32>;
#endif
@group(0) @binding(1) var<storage, read_write> Y: array<f32>;
@group(0) @binding(2) var<uniform> P: Params;

override WG: u32 = 256u;

#include "activation.wgsl"

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= P.n) {
        return;
    }
#ifdef ADD
    Y[i] += X[i];
#endif
#ifdef GLU
    Y[i] = act(X[i]) * Y[i];
#endif
#ifdef SOFTCAP
    // Clamped so that no tanh implementation overflows exp(); tanh(15) is 1 in f32.
    Y[i] = P.cap * tanh(clamp(Y[i] / P.cap, -15.0, 15.0));
#endif
}
