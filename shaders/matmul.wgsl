// Dequantizing matrix-matrix product for prefill: Y[t, r] = sum_c W[r, c] * X[t, c] for a
// batch of tokens. A workgroup owns a BR x BT tile of Y; for each 32-wide slice of the shared
// dimension it dequantizes BR weight runs and loads BT token runs into workgroup memory once,
// then every invocation accumulates a TR x TT block from there. Epilogues as in matvec.wgsl.
// IDS (mixture of experts, dispatched indirectly): y indexes tiles of (token, slot) pairs that
// all use one expert, as grouped by moe.wgsl's PLAN; rows come from that expert's slice.

#include "linear_common.wgsl"

@group(0) @binding(6) var<uniform> S: Step;
#ifdef IDS
@group(0) @binding(7) var<storage, read> Pairs: array<u32>;
@group(0) @binding(8) var<storage, read> Tiles: array<vec4<u32>>;
#endif

// Tile shape. Workgroup memory holds (BR + BT) * 32 floats.
const BR: u32 = TILE_ROWS;
const BT: u32 = TILE_TOKENS;
const TR: u32 = 4u;
const TT: u32 = 4u;
const NTHREADS: u32 = (BR / TR) * (BT / TT);

var<private> tile_start: u32;
var<private> tile_t_base: u32;

// Input row and output offset of the tile's j-th column (token, or pair for IDS).
fn x_row(j: u32) -> u32 {
#ifdef IDS
    return Pairs[tile_start + j] / P.x_div;
#else
    return tile_t_base + j;
#endif
}

// Row offset of the bias for this weight part.
fn y_brow0() -> u32 {
#ifdef IDS
    return expert_brow0;
#else
    return P.y_row0;
#endif
}

fn y_index(j: u32) -> u32 {
#ifdef IDS
    return P.y_offset + Pairs[tile_start + j] * P.y_stride;
#else
    return P.y_offset + (tile_t_base + j) * P.y_stride + P.y_row0;
#endif
}

var<workgroup> Ws: array<vec4<f32>, BR * 8u>;
var<workgroup> Xs: array<vec4<f32>, BT * 8u>;

@compute @workgroup_size(NTHREADS)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    meta_off = P.meta_off;
    let r_base = wid.x * BR;
#ifdef IDS
    let tile = Tiles[wid.y];
    let expert_row0 = tile.x * P.expert_rows;
    expert_brow0 = expert_row0;
    if (expert_row0 < P.y_row0 || expert_row0 >= P.y_row0 + P.nrows) {
        return;
    }
    let w_row0 = expert_row0 - P.y_row0;
    let nrows = P.expert_rows;
    let n_cols_t = tile.z;
    tile_start = tile.y;
#else
    let t_base = wid.y * BT;
    let w_row0 = 0u;
    let nrows = P.nrows;
    let n_cols_t = min(BT, S.n_tokens - min(t_base, S.n_tokens));
    tile_t_base = t_base;
#endif
#ifdef GLU_PAIR
    // Tiles cover BR/2 output rows: tile rows [0, BR/2) are their gates, [BR/2, BR) their ups.
    let out_rows = nrows / 2u;
    let o_base = wid.x * (BR / 2u);
    if (o_base >= out_rows) {
        return;
    }
#else
    if (r_base >= nrows) {
        return;
    }
#endif
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
        let blk = u / upb;
        let sub = u % upb;
        for (var r = lid; r < BR; r += NTHREADS) {
#ifdef GLU_PAIR
            let o = min(o_base + r % (BR / 2u), out_rows - 1u);
            let row = w_row0 + o + (r / (BR / 2u)) * out_rows;
#else
            let row = w_row0 + min(r_base + r, nrows - 1u);
#endif
            let w = dq32(row * P.nb + blk, sub);
            for (var i = 0u; i < 8u; i++) {
                Ws[r * 8u + i] = w[i];
            }
        }
        for (var k = lid; k < BT * 8u; k += NTHREADS) {
            let j = k / 8u;
            var v = vec4<f32>(0.0);
            if (j < n_cols_t) {
                v = X[(P.x_offset + x_row(j) * P.x_stride) / 4u + u * 8u + k % 8u];
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
#ifdef GLU_PAIR
    // Thread rows i and i + TR/2 are the gate and up of the same output row.
    for (var i = 0u; i < TR / 2u; i++) {
        let row = o_base + tr + i * (BR / TR);
        if (row >= out_rows) {
            continue;
        }
        for (var j = 0u; j < TT; j++) {
            let c = tt + j * (BT / TT);
            if (c >= n_cols_t) {
                continue;
            }
            store_pair(y_index(c) + row, acc[i][j], acc[i + TR / 2u][j]);
        }
    }
}
#else
    for (var i = 0u; i < TR; i++) {
        let row = r_base + tr + i * (BR / TR);
        if (row >= nrows) {
            continue;
        }
        for (var j = 0u; j < TT; j++) {
            let c = tt + j * (BT / TT);
            if (c >= n_cols_t) {
                continue;
            }
            store(y_index(c) + row, y_brow0() + row, acc[i][j]);
        }
    }
}
#endif
