// The gated delta rule of a Gated DeltaNet layer (Qwen3.5, Qwen3-Next), per value head h with
// a square state S (key dim i × value dim j, stored as rows j holding S[·][j]):
//   S ← exp(g)·S;  S += k ⊗ beta·(v − Sᵀk);  o = Sᵀq / √d
// RECURRENT walks each sequence run token by token (the decode step, one read and one write of
// the state per token). The three CHUNK_* passes are the chunked parallel form over chunks of at
// most 64 tokens, with G_t the cumulative log-decay inside a chunk, D_ts = exp(G_t − G_s),
// A_ts = beta_t D_ts (k_t·k_s) for s < t and T = (I + A)⁻¹:
//   CHUNK_PREPARE (a workgroup per chunk and head): G, A, U = T·diag(beta)·V,
//     W = T·diag(beta·exp(G))·K and M_ts = D_ts (q_t·k_s) for s ≤ t, none of which needs the state;
//   CHUNK_STATE (a workgroup per run, head and block of value columns, walking the run's chunks
//     in order): delta = U − W·S0, the inter-chunk output exp(G_t)·S0ᵀq_t, and
//     S ← exp(G_last)·S0 + Σ_s D_last,s k_s ⊗ delta_s;
//   CHUNK_OUTPUT (a workgroup per token and head): o_t += Σ_{s≤t} M_ts delta_s.
//
// A step may carry several sequences: a token starts a run when it is the step's first or its
// predecessor is not the previous position of the same state slot. A run whose first position is
// 0 starts from a zero state, whatever the slot holds. Chunks are aligned to positions (a chunk
// starts at a run's start or at a position that is a multiple of 64), so every pass finds a
// token's chunk from the positions alone. Workgroups are launched per token and exit unless
// their token starts the run or chunk they own.

struct Params {
    n_k_heads: u32,
    n_v_heads: u32,
    n_ctx: u32,
    n_seq: u32,
    // Value head h reads key head h / (n_v_heads / n_k_heads) when set, else h % n_k_heads.
    grouped: u32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
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
// Per token: (position in its sequence, cache row of the sequence's position 0 = slot · n_ctx).
@group(0) @binding(6) var<storage, read> Pos: array<vec2<u32>>;

const CHUNK: u32 = 64u;

fn conv_stride() -> u32 {
    return (2u * P.n_k_heads + P.n_v_heads) * HEAD_DIM;
}

fn key_head(h: u32) -> u32 {
    if (P.grouped != 0u) {
        return h / (P.n_v_heads / P.n_k_heads);
    }
    return h % P.n_k_heads;
}

fn q_at(t: u32, kh: u32) -> u32 {
    return t * conv_stride() + kh * HEAD_DIM;
}

fn k_at(t: u32, kh: u32) -> u32 {
    return t * conv_stride() + (P.n_k_heads + kh) * HEAD_DIM;
}

fn v_at(t: u32, h: u32) -> u32 {
    return t * conv_stride() + 2u * P.n_k_heads * HEAD_DIM + h * HEAD_DIM;
}

fn slot_of(t: u32) -> u32 {
    return Pos[t].y / P.n_ctx;
}

// Token t (> 0) follows token t − 1 in the same sequence.
fn continues(t: u32) -> bool {
    return slot_of(t) == slot_of(t - 1u) && Pos[t].x == Pos[t - 1u].x + 1u;
}

fn starts_run(t: u32) -> bool {
    return t == 0u || !continues(t);
}

fn starts_chunk(t: u32) -> bool {
    return starts_run(t) || Pos[t].x % CHUNK == 0u;
}

// Tokens in the chunk that starts at token t.
fn chunk_len(t: u32) -> u32 {
    var len = 1u;
    loop {
        let u = t + len;
        if (len >= CHUNK || u >= S.n_tokens || !continues(u) || Pos[u].x % CHUNK == 0u) {
            break;
        }
        len += 1u;
    }
    return len;
}

// Flat workgroup index over x and y (grids fold large counts into y).
fn flat_group(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

#ifdef RECURRENT
// A team of TEAM invocations owns one state row (value dim j), each holding ELEMS of its key
// elements, lane l the elements l, l + TEAM, ... so neighbouring lanes read neighbouring floats.
// One team sum per token gives row·k, row·q and k·q at once: the updated row is
// row' = exp(g)·row + delta·k, hence row'·q = exp(g)·(row·q) + delta·(k·q).

@group(0) @binding(0) var<storage, read> Conv: array<f32>;
@group(0) @binding(1) var<storage, read> Gates: array<f32>;
@group(0) @binding(2) var<storage, read_write> State: array<f32>;
@group(0) @binding(3) var<storage, read_write> Out: array<f32>;

const ELEMS: u32 = (HEAD_DIM + TEAM - 1u) / TEAM;

override WG: u32 = 128u;

#ifdef TEAM_SUBGROUP
fn team_sum(v: vec4<f32>, lane: u32, lid: u32) -> vec4<f32> {
    return subgroupAdd(v);
}
#else
var<workgroup> red: array<vec4<f32>, 256>;
fn team_sum(v: vec4<f32>, lane: u32, lid: u32) -> vec4<f32> {
    red[lid] = v;
    workgroupBarrier();
    for (var s = TEAM / 2u; s > 0u; s >>= 1u) {
        if (lane < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let total = red[lid - lane];
    workgroupBarrier();
    return total;
}
#endif

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let rows = WG / TEAM;
    let blocks = (HEAD_DIM + rows - 1u) / rows;
    let flat = flat_group(wid, nwg);
    let t0 = wid.z;
    if (flat >= P.n_v_heads * blocks || t0 >= S.n_tokens || !starts_run(t0)) {
        return;
    }
    let slot = slot_of(t0);
    if (slot >= P.n_seq) {
        return;
    }
    let h = flat / blocks;
    let lane = lid % TEAM;
    let j = (flat % blocks) * rows + lid / TEAM;
    // Rows past the head's end (HEAD_DIM not a multiple of the rows per workgroup) redo the
    // last row so the team sums stay workgroup-wide, and store nothing.
    let live = j < HEAD_DIM;
    let row = min(j, HEAD_DIM - 1u);
    let kh = key_head(h);
    let nv = P.n_v_heads;
    let base = ((slot * nv + h) * HEAD_DIM + row) * HEAD_DIM;
    let fresh = Pos[t0].x == 0u;

    var s_row: array<f32, ELEMS>;
    for (var e = 0u; e < ELEMS; e++) {
        let i = lane + e * TEAM;
        s_row[e] = select(0.0, State[base + min(i, HEAD_DIM - 1u)], i < HEAD_DIM && !fresh);
    }
    var k: array<f32, ELEMS>;
    var t = t0;
    loop {
        var dots = vec4<f32>(0.0);
        let kb = k_at(t, kh);
        let qb = q_at(t, kh);
        for (var e = 0u; e < ELEMS; e++) {
            let i = lane + e * TEAM;
            let inside = i < HEAD_DIM;
            let ii = min(i, HEAD_DIM - 1u);
            let kv = select(0.0, Conv[kb + ii], inside);
            let qv = select(0.0, Conv[qb + ii], inside);
            k[e] = kv;
            dots += vec4<f32>(s_row[e] * kv, s_row[e] * qv, kv * qv, 0.0);
        }
        dots = team_sum(dots, lane, lid);
        let beta = Gates[t * 2u * nv + h];
        let decay = exp(Gates[t * 2u * nv + nv + h]);
        let delta = beta * (Conv[v_at(t, h) + row] - decay * dots.x);
        for (var e = 0u; e < ELEMS; e++) {
            s_row[e] = decay * s_row[e] + delta * k[e];
        }
        if (live && lane == 0u) {
            Out[(t * nv + h) * HEAD_DIM + row] = (decay * dots.y + delta * dots.z) * P.scale;
        }
        t += 1u;
        if (t >= S.n_tokens || !continues(t)) {
            break;
        }
    }
    if (live) {
        for (var e = 0u; e < ELEMS; e++) {
            let i = lane + e * TEAM;
            if (i < HEAD_DIM) {
                State[base + i] = s_row[e];
            }
        }
    }
}
#endif

#ifdef CHUNK_PREPARE
// 256 invocations: for the C × C dot products invocation lid owns row t = lid / 4 and columns
// s = lid % 4 + 4m (m < 16), with K and Q staged through workgroup memory TILE key dims at a
// time. A is kept strictly lower triangular (row t at t(t−1)/2) so it fits beside the tiles.
// The solve runs forward substitution down each of the 2·HEAD_DIM columns of [V | exp(G)·K]
// independently, one column per invocation.

@group(0) @binding(0) var<storage, read> Conv: array<f32>;
@group(0) @binding(1) var<storage, read> Gates: array<f32>;
// Per (token, head): [U | W], 2·HEAD_DIM.
@group(0) @binding(7) var<storage, read_write> Solved: array<f32>;
// Per (token, head): M_ts for s ≤ t, CHUNK entries.
@group(0) @binding(8) var<storage, read_write> Mqk: array<f32>;
// Per (token, head): G_t.
@group(0) @binding(9) var<storage, read_write> Gcum: array<f32>;
// Per token: the step index of its chunk's first token.
@group(0) @binding(10) var<storage, read_write> ChunkStart: array<u32>;

const TILE: u32 = 8u;

var<workgroup> a_low: array<f32, 2016>;
var<workgroup> g_w: array<f32, 64>;
var<workgroup> beta_w: array<f32, 64>;
var<workgroup> k_tile: array<f32, 512>;
var<workgroup> q_tile: array<f32, 512>;

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let h = flat_group(wid, nwg);
    let t0 = wid.z;
    if (h >= P.n_v_heads || t0 >= S.n_tokens || !starts_chunk(t0)) {
        return;
    }
    let nv = P.n_v_heads;
    let len = chunk_len(t0);
    let kh = key_head(h);
    if (lid == 0u) {
        var acc = 0.0;
        for (var t = 0u; t < len; t++) {
            acc += Gates[(t0 + t) * 2u * nv + nv + h];
            g_w[t] = acc;
            Gcum[(t0 + t) * nv + h] = acc;
            beta_w[t] = Gates[(t0 + t) * 2u * nv + h];
        }
    }
    if (h == 0u && lid < len) {
        ChunkStart[t0 + lid] = t0;
    }

    let tr = lid / 4u;
    let sc = lid % 4u;
    var kk: array<f32, 16>;
    var qk: array<f32, 16>;
    for (var m = 0u; m < 16u; m++) {
        kk[m] = 0.0;
        qk[m] = 0.0;
    }
    for (var i0 = 0u; i0 < HEAD_DIM; i0 += TILE) {
        for (var e = lid; e < CHUNK * TILE; e += 256u) {
            let t = e / TILE;
            let i = i0 + e % TILE;
            let inside = t < len && i < HEAD_DIM;
            let tt = t0 + min(t, len - 1u);
            let ii = min(i, HEAD_DIM - 1u);
            k_tile[e] = select(0.0, Conv[k_at(tt, kh) + ii], inside);
            q_tile[e] = select(0.0, Conv[q_at(tt, kh) + ii], inside);
        }
        workgroupBarrier();
        for (var m = 0u; m < 16u; m++) {
            let s = sc + 4u * m;
            for (var x = 0u; x < TILE; x++) {
                let ks = k_tile[s * TILE + x];
                kk[m] += k_tile[tr * TILE + x] * ks;
                qk[m] += q_tile[tr * TILE + x] * ks;
            }
        }
        workgroupBarrier();
    }
    if (tr < len) {
        for (var m = 0u; m < 16u; m++) {
            let s = sc + 4u * m;
            if (s <= tr) {
                let d = exp(g_w[tr] - g_w[s]);
                if (s < tr) {
                    a_low[tr * (tr - 1u) / 2u + s] = beta_w[tr] * d * kk[m];
                }
                Mqk[((t0 + tr) * nv + h) * CHUNK + s] = d * qk[m];
            }
        }
    }
    workgroupBarrier();

    for (var c = lid; c < 2u * HEAD_DIM; c += 256u) {
        var x: array<f32, 64>;
        for (var t = 0u; t < len; t++) {
            let tok = t0 + t;
            var b: f32;
            if (c < HEAD_DIM) {
                b = beta_w[t] * Conv[v_at(tok, h) + c];
            } else {
                b = beta_w[t] * exp(g_w[t]) * Conv[k_at(tok, kh) + c - HEAD_DIM];
            }
            let arow = t * (t - 1u) / 2u;
            for (var s = 0u; s < t; s++) {
                b -= a_low[arow + s] * x[s];
            }
            x[t] = b;
            Solved[(tok * nv + h) * 2u * HEAD_DIM + c] = b;
        }
    }
}
#endif

#ifdef CHUNK_STATE
// The state block S[·][j] of COLS value columns lives in workgroup memory for the whole run,
// key dim major (s_blk[i·COLS + jj]), so neighbouring invocations, which own neighbouring
// columns, read neighbouring words. Per chunk: every (token, column) pair takes W_t·S[·][j] and
// q_t·S[·][j] against the chunk's starting state; then each (key dim, column) element is
// rewritten from its own old value and the chunk's deltas, so no element is read by one
// invocation and written by another.

@group(0) @binding(0) var<storage, read> Conv: array<f32>;
@group(0) @binding(2) var<storage, read_write> State: array<f32>;
@group(0) @binding(3) var<storage, read_write> Out: array<f32>;
// U is replaced by delta, which CHUNK_OUTPUT reads.
@group(0) @binding(7) var<storage, read_write> Solved: array<f32>;
@group(0) @binding(9) var<storage, read> Gcum: array<f32>;

override WG: u32 = 256u;

var<workgroup> s_blk: array<f32, HEAD_DIM * COLS>;
var<workgroup> d_blk: array<f32, 64 * COLS>;
var<workgroup> decay_w: array<f32, 64>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let blocks = (HEAD_DIM + COLS - 1u) / COLS;
    let flat = flat_group(wid, nwg);
    let t0 = wid.z;
    if (flat >= P.n_v_heads * blocks || t0 >= S.n_tokens || !starts_run(t0)) {
        return;
    }
    let slot = slot_of(t0);
    if (slot >= P.n_seq) {
        return;
    }
    let nv = P.n_v_heads;
    let h = flat / blocks;
    let j0 = (flat % blocks) * COLS;
    let kh = key_head(h);
    let base = (slot * nv + h) * HEAD_DIM * HEAD_DIM;
    let fresh = Pos[t0].x == 0u;
    for (var e = lid; e < HEAD_DIM * COLS; e += WG) {
        // Read in rows of the stored state (neighbouring key dims), written across s_blk.
        let jj = e / HEAD_DIM;
        let i = e % HEAD_DIM;
        let j = j0 + jj;
        s_blk[i * COLS + jj] = select(0.0, State[base + min(j, HEAD_DIM - 1u) * HEAD_DIM + i], j < HEAD_DIM && !fresh);
    }
    workgroupBarrier();

    var tc = t0;
    loop {
        let len = chunk_len(tc);
        let last = (tc + len - 1u) * nv + h;
        for (var p = lid; p < len * COLS; p += WG) {
            let t = p / COLS;
            let jj = p % COLS;
            let j = j0 + jj;
            let tok = tc + t;
            let row = (tok * nv + h) * 2u * HEAD_DIM;
            let qb = q_at(tok, kh);
            var ws = 0.0;
            var qs = 0.0;
            for (var i = 0u; i < HEAD_DIM; i++) {
                let sv = s_blk[i * COLS + jj];
                ws += Solved[row + HEAD_DIM + i] * sv;
                qs += Conv[qb + i] * sv;
            }
            var delta = 0.0;
            if (j < HEAD_DIM) {
                delta = Solved[row + j] - ws;
                Solved[row + j] = delta;
                Out[(tok * nv + h) * HEAD_DIM + j] = exp(Gcum[tok * nv + h]) * qs * P.scale;
            }
            d_blk[t * COLS + jj] = delta;
        }
        if (lid < len) {
            decay_w[lid] = exp(Gcum[last] - Gcum[(tc + lid) * nv + h]);
        }
        workgroupBarrier();
        let g_last = exp(Gcum[last]);
        for (var e = lid; e < HEAD_DIM * COLS; e += WG) {
            let i = e / COLS;
            let jj = e % COLS;
            var acc = g_last * s_blk[e];
            for (var s = 0u; s < len; s++) {
                acc += decay_w[s] * Conv[k_at(tc + s, kh) + i] * d_blk[s * COLS + jj];
            }
            s_blk[e] = acc;
        }
        workgroupBarrier();
        tc += len;
        if (tc >= S.n_tokens || !continues(tc)) {
            break;
        }
    }
    for (var e = lid; e < HEAD_DIM * COLS; e += WG) {
        let jj = e / HEAD_DIM;
        let i = e % HEAD_DIM;
        if (j0 + jj < HEAD_DIM) {
            State[base + (j0 + jj) * HEAD_DIM + i] = s_blk[i * COLS + jj];
        }
    }
}
#endif

#ifdef CHUNK_OUTPUT
// Adds the intra-chunk part to the inter-chunk output CHUNK_STATE wrote; invocations run over
// value dims, so the deltas are read in rows.

@group(0) @binding(3) var<storage, read_write> Out: array<f32>;
@group(0) @binding(7) var<storage, read> Solved: array<f32>;
@group(0) @binding(8) var<storage, read> Mqk: array<f32>;
@group(0) @binding(10) var<storage, read> ChunkStart: array<u32>;

override WG: u32 = 128u;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let h = flat_group(wid, nwg);
    let t = wid.z;
    if (h >= P.n_v_heads || t >= S.n_tokens || slot_of(t) >= P.n_seq) {
        return;
    }
    let nv = P.n_v_heads;
    let tc = ChunkStart[t];
    let m_row = (t * nv + h) * CHUNK;
    for (var j = lid; j < HEAD_DIM; j += WG) {
        var acc = 0.0;
        for (var s = 0u; s <= t - tc; s++) {
            acc += Mqk[m_row + s] * Solved[((tc + s) * nv + h) * 2u * HEAD_DIM + j];
        }
        let o = (t * nv + h) * HEAD_DIM + j;
        Out[o] += acc * P.scale;
    }
}
#endif
