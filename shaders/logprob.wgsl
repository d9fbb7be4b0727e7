// Log-probability of a chosen token under each row of logits: one workgroup per row reduces
// the row to its maximum and to the sum of exp(l - max), then writes
// log p(target) = l[target] - max - log(sum). Only these values leave the device, never the
// rows themselves. A row whose target is NO_TARGET (the last position of an input, which has
// no next token) writes 0.
//
// A row holding a NaN or +inf gives a non-finite result (a NaN term, or inf - inf, makes the
// sum NaN), which the host checks and reports with the row's position. -inf logits are
// ordinary: their exp is 0.

struct Params {
    n_vocab: u32,
    n_rows: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> L: array<f32>;
@group(0) @binding(1) var<storage, read> Target: array<u32>;
@group(0) @binding(2) var<storage, read_write> Out: array<f32>;
@group(0) @binding(3) var<uniform> P: Params;

override WG: u32 = 256u;

const NO_TARGET: u32 = 0xFFFFFFFFu;

var<workgroup> red: array<f32, 256>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wid.x;
    if (row >= P.n_rows) {
        return;
    }
    let base = row * P.n_vocab;
    var m = -3.4028235e38;
    for (var k = lid; k < P.n_vocab; k += WG) {
        m = max(m, L[base + k]);
    }
    red[lid] = m;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] = max(red[lid], red[lid + s]);
        }
        workgroupBarrier();
    }
    let row_max = red[0];
    // Every lane has read the maximum before any lane overwrites red[] with its sum.
    workgroupBarrier();
    var sum = 0.0;
    for (var k = lid; k < P.n_vocab; k += WG) {
        sum += exp(L[base + k] - row_max);
    }
    red[lid] = sum;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        let t = Target[row];
        if (t == NO_TARGET) {
            Out[row] = 0.0;
        } else if (t >= P.n_vocab) {
            // Cannot happen for ids the host checked; a NaN makes it loud if it does.
            Out[row] = bitcast<f32>(0x7FC00000u);
        } else {
            Out[row] = L[base + t] - row_max - log(red[0]);
        }
    }
}
