// Dequantizing matrix-matrix product for prefill: Y[t, r] = sum_c W[r, c] * X[t, c] for a
// batch of tokens. A workgroup owns a BR x BT tile of Y; for each 32-wide slice of the shared
// dimension it dequantizes BR weight runs and loads BT token runs into workgroup memory once,
// then every invocation accumulates a TR x TT block from there. Epilogues as in matvec.wgsl.

#include "quant.wgsl"

struct Params {
    ncols: u32,
    nrows: u32,
    row_bytes: u32,
    y_row0: u32,
    x_offset: u32,
    x_stride: u32,
    y_offset: u32,
    y_stride: u32,
}

struct Step {
    pos0: u32,
    n_tokens: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> W: array<u32>;
@group(0) @binding(1) var<storage, read> X: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> Y: array<f32>;
@group(0) @binding(3) var<uniform> P: Params;
#ifdef BIAS
@group(0) @binding(4) var<storage, read> B: array<f32>;
#endif
#ifdef GLU
@group(0) @binding(5) var<storage, read> G: array<f32>;
#endif
@group(0) @binding(6) var<uniform> S: Step;

#include "activation.wgsl"

// Tile shape. Workgroup memory holds (BR + BT) * 32 floats.
const BR: u32 = TILE_ROWS;
const BT: u32 = TILE_TOKENS;
const TR: u32 = 4u;
const TT: u32 = 4u;
const NTHREADS: u32 = (BR / TR) * (BT / TT);

var<workgroup> Ws: array<vec4<f32>, BR * 8u>;
var<workgroup> Xs: array<vec4<f32>, BT * 8u>;

@compute @workgroup_size(NTHREADS)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r_base = wid.x * BR;
    let t_base = wid.y * BT;
    let tr = lid % (BR / TR);
    let tt = lid / (BR / TR);
    let units = P.ncols / 32u;
    let upb = QK / 32u;
    var acc: array<array<f32, TT>, TR>;
    for (var i = 0u; i < TR; i++) {
        for (var j = 0u; j < TT; j++) {
            acc[i][j] = 0.0;
        }
    }
    for (var u = 0u; u < units; u++) {
        let boff = (u / upb) * BLOCK_BYTES;
        let sub = u % upb;
        for (var r = lid; r < BR; r += NTHREADS) {
            let row = min(r_base + r, P.nrows - 1u);
            let w = dq32(row * P.row_bytes + boff, sub);
            for (var i = 0u; i < 8u; i++) {
                Ws[r * 8u + i] = w[i];
            }
        }
        for (var k = lid; k < BT * 8u; k += NTHREADS) {
            let t = t_base + k / 8u;
            var v = vec4<f32>(0.0);
            if (t < S.n_tokens) {
                v = X[(P.x_offset + t * P.x_stride) / 4u + u * 8u + k % 8u];
            }
            Xs[k] = v;
        }
        workgroupBarrier();
        for (var k = 0u; k < 8u; k++) {
            var a: array<vec4<f32>, TR>;
            for (var i = 0u; i < TR; i++) {
                a[i] = Ws[(tr + i * (BR / TR)) * 8u + k];
            }
            for (var j = 0u; j < TT; j++) {
                let b = Xs[(tt + j * (BT / TT)) * 8u + k];
                for (var i = 0u; i < TR; i++) {
                    acc[i][j] += dot(a[i], b);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < TR; i++) {
        let row = r_base + tr + i * (BR / TR);
        if (row >= P.nrows) {
            continue;
        }
        for (var j = 0u; j < TT; j++) {
            let t = t_base + tt + j * (BT / TT);
            if (t >= S.n_tokens) {
                continue;
            }
            var v = acc[i][j];
            let yi = P.y_offset + t * P.y_stride + P.y_row0 + row;
#ifdef BIAS
            v += B[P.y_row0 + row];
#endif
#ifdef ACC
            v += Y[yi];
#endif
#ifdef GLU
            v *= act(G[yi]);
#endif
            Y[yi] = v;
        }
    }
}
