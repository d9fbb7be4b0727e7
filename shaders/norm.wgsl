// RMS normalisation, one workgroup per token row (LAST_ROW: only the batch's last row, written
// as row 0, for the output head of a prompt; ROWS: the rows listed in Rows, written in list
// order, for the output head of a step that carries several sequences).
//   default:  Out[t] = X[t] / rms(X[t]) * Wn
//   POST_ADD: X[t] += A[t] / rms(A[t]) * Wp (Gemma's post-norm before the residual add),
//             then Out[t] = X[t] / rms(X[t]) * Wn for the next block.

#include "reduce.wgsl"

struct Params {
    n: u32,
    x_stride: u32,
    out_stride: u32,
    eps: f32,
}

@group(0) @binding(0) var<storage, read_write> X: array<f32>;
@group(0) @binding(1) var<storage, read> Wn: array<f32>;
@group(0) @binding(2) var<storage, read_write> Out: array<f32>;
@group(0) @binding(3) var<uniform> P: Params;
#ifdef LAST_ROW
struct Step {
    pos0: u32,
    n_tokens: u32,
    _pad0: u32,
    _pad1: u32,
}
@group(0) @binding(6) var<uniform> S: Step;
#endif
#ifdef ROWS
@group(0) @binding(6) var<storage, read> Rows: array<u32>;
#endif
#ifdef POST_ADD
@group(0) @binding(4) var<storage, read> A: array<f32>;
@group(0) @binding(5) var<storage, read> Wp: array<f32>;
#endif

override WG: u32 = 64u;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
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
#ifdef LAST_ROW
    let t = S.n_tokens - 1u;
    let t_out = 0u;
#else
#ifdef ROWS
    let t = Rows[wid.x];
    let t_out = wid.x;
#else
    let t = wid.x;
    let t_out = t;
#endif
#endif
    let xo = t * P.x_stride;
#ifdef POST_ADD
    var sa = 0.0;
    for (var i = lid; i < P.n; i += WG) {
        let a = A[xo + i];
        sa += a * a;
    }
    let ra = inverseSqrt(wg_sum(sa, lid) / f32(P.n) + P.eps);
    for (var i = lid; i < P.n; i += WG) {
        X[xo + i] += A[xo + i] * ra * Wp[i];
    }
#endif
    var s = 0.0;
    for (var i = lid; i < P.n; i += WG) {
        let x = X[xo + i];
        s += x * x;
    }
    let r = inverseSqrt(wg_sum(s, lid) / f32(P.n) + P.eps);
    let oo = t_out * P.out_stride;
    for (var i = lid; i < P.n; i += WG) {
        Out[oo + i] = X[xo + i] * r * Wn[i];
    }
}
