// The Gated DeltaNet's elementwise ops around the delta rule (Qwen3.5, Qwen3-Next), one variant
// per define:
//   CONV:       Out[t][c] = silu(sum_j W[c][j] * input of t's sequence j - (taps-1) steps back),
//               one invocation per (token, channel). An input before the token's run in this
//               step comes from its sequence's State slot; one before position 0 is zero, so a
//               sequence that starts at position 0 never reads its slot's stale contents.
//   CONV_STATE: each run's last taps-1 inputs into its sequence's State slot (run after CONV,
//               which reads the old state). Only the invocations of a run's last token write,
//               and each walks its slot's rows oldest first: row r takes row r + len or newer,
//               which it has not written yet.
//   QK_GATES:   per token, workgroups 0..2nk L2-normalise the q and k heads of X in place
//               (x / sqrt(sum x^2 + eps)); workgroup 2nk writes the gates
//               [sigmoid(beta_h).., softplus(alpha_h + dt_h) * a_h..] from BA's groups of
//               r betas then r alphas.
//   GATED_NORM: O[row] = O[row] / rms(O[row]) * W * silu(Z[row]) per head row, in place.
// A step may carry several sequences: a token's run is the consecutive tokens before it with
// the same slot row (Pos.y) and consecutive positions (Pos.x).

#ifdef QK_GATES
#include "reduce.wgsl"
#endif
#ifdef GATED_NORM
#include "reduce.wgsl"
#endif

struct Params {
    channels: u32,
    taps: u32,
    n_ctx: u32,
    n_seq: u32,
    n_k_heads: u32,
    n_v_heads: u32,
    head_dim: u32,
    group: u32,
    eps: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// pos0 is unused: each token's position comes from Pos.
struct Step {
    pos0: u32,
    n_tokens: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(4) var<uniform> P: Params;
@group(0) @binding(5) var<uniform> S: Step;

#ifdef CONV
@group(0) @binding(0) var<storage, read> In: array<f32>;
@group(0) @binding(1) var<storage, read> W: array<f32>;
@group(0) @binding(2) var<storage, read> State: array<f32>;
@group(0) @binding(3) var<storage, read_write> Out: array<f32>;
#endif
#ifdef CONV_STATE
@group(0) @binding(0) var<storage, read> In: array<f32>;
@group(0) @binding(2) var<storage, read_write> State: array<f32>;
#endif
#ifdef QK_GATES
@group(0) @binding(0) var<storage, read_write> X: array<f32>;
@group(0) @binding(1) var<storage, read> BA: array<f32>;
@group(0) @binding(2) var<storage, read> DtBias: array<f32>;
@group(0) @binding(3) var<storage, read> A: array<f32>;
@group(0) @binding(7) var<storage, read_write> Gates: array<f32>;
#endif
#ifdef GATED_NORM
@group(0) @binding(0) var<storage, read_write> O: array<f32>;
@group(0) @binding(1) var<storage, read> Z: array<f32>;
@group(0) @binding(2) var<storage, read> Wn: array<f32>;
#endif
#ifdef CONV
#define CONV_ANY
#endif
#ifdef CONV_STATE
#define CONV_ANY
#endif
#ifdef CONV_ANY
// Per token: (position in its sequence, cache row of the sequence's position 0).
@group(0) @binding(6) var<storage, read> Pos: array<vec2<u32>>;
#endif

override WG: u32 = 64u;

fn silu(x: f32) -> f32 {
    return x / (1.0 + exp(-x));
}

#ifdef CONV_ANY
// How many of the (at most `limit`) tokens just before t continue t's run.
fn earlier_in_run(t: u32, limit: u32) -> u32 {
    let me = Pos[t];
    var m = 0u;
    while (m < limit && m < t) {
        let prev = Pos[t - m - 1u];
        if (prev.y != me.y || prev.x + m + 1u != me.x) {
            break;
        }
        m += 1u;
    }
    return m;
}

// Channel c of the input `back` positions before token t (position p), whose run has `m`
// earlier tokens in this step; older inputs come from the state block at `base`.
fn input_back(t: u32, back: u32, m: u32, p: u32, base: u32, has_slot: bool, c: u32) -> f32 {
    if (back <= m) {
        return In[(t - back) * P.channels + c];
    }
    if (back > p || !has_slot) {
        return 0.0;
    }
    // State rows are oldest first; the newest (row taps-2) is the run's position - 1.
    return State[base + (P.taps - 1u - (back - m)) * P.channels + c];
}
#endif

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
#ifndef CONV_ANY
    sg_size = sgs;
    sg_lane = sgl;
#endif
#endif
    let t = wid.y;
    if (t >= S.n_tokens) {
        return;
    }
#ifdef CONV_ANY
    let c = wid.x * WG + lid;
    if (c >= P.channels) {
        return;
    }
    let hist = P.taps - 1u;
    let me = Pos[t];
    let slot = me.y / P.n_ctx;
    // A slot past the buffer (bad positions) reads as zeros and is never written: clamped
    // accesses would land in another sequence's state.
    let has_slot = slot < P.n_seq;
    let base = slot * hist * P.channels;
    let m = earlier_in_run(t, hist);
#endif
#ifdef CONV
    var acc = 0.0;
    for (var j = 0u; j < P.taps; j++) {
        acc += W[c * P.taps + j] * input_back(t, hist - j, m, me.x, base, has_slot, c);
    }
    Out[t * P.channels + c] = silu(acc);
#endif
#ifdef CONV_STATE
    let next = Pos[min(t + 1u, S.n_tokens - 1u)];
    let last = t + 1u >= S.n_tokens || next.y != me.y || next.x != me.x + 1u;
    if (!last || !has_slot) {
        return;
    }
    // New row r holds the input of position p - (hist - 1 - r); rows in ascending order read
    // only old rows above the one being written.
    for (var r = 0u; r < hist; r++) {
        let v = input_back(t, hist - 1u - r, m, me.x, base, has_slot, c);
        State[base + r * P.channels + c] = v;
    }
#endif
#ifdef QK_GATES
    let nv = P.n_v_heads;
    let head = wid.x;
    if (head < 2u * P.n_k_heads) {
        // q heads then k heads: 2nk rows of head_dim side by side at the start of the token.
        let at = t * P.channels + head * P.head_dim;
        var ss = 0.0;
        for (var i = lid; i < P.head_dim; i += WG) {
            let x = X[at + i];
            ss += x * x;
        }
        let inv = inverseSqrt(wg_sum(ss, lid) + P.eps);
        for (var i = lid; i < P.head_dim; i += WG) {
            X[at + i] *= inv;
        }
        return;
    }
    let r = P.group;
    let row = t * 2u * nv;
    for (var h = lid; h < nv; h += WG) {
        let g0 = row + (h / r) * 2u * r + h % r;
        let b = BA[g0];
        let alpha = BA[g0 + r] + DtBias[h];
        // ln(1 + e^x): linear above 20 as ggml; a short series where e^x would vanish next to 1.
        let e = exp(alpha);
        var softplus = alpha;
        if (alpha <= 20.0) {
            softplus = select(log(1.0 + e), e * (1.0 - e * (0.5 - e / 3.0)), e < 1e-3);
        }
        Gates[row + h] = 1.0 / (1.0 + exp(-b));
        Gates[row + nv + h] = softplus * A[h];
    }
#endif
#ifdef GATED_NORM
    let hd = P.head_dim;
    let at = (t * P.n_v_heads + wid.x) * hd;
    var ss = 0.0;
    for (var i = lid; i < hd; i += WG) {
        let x = O[at + i];
        ss += x * x;
    }
    let inv = inverseSqrt(wg_sum(ss, lid) / f32(hd) + P.eps);
    for (var i = lid; i < hd; i += WG) {
        O[at + i] = O[at + i] * inv * Wn[i] * silu(Z[at + i]);
    }
#endif
}
