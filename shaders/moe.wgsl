// Mixture-of-experts routing, all on the GPU so the forward pass never waits on the host.
//   ROUTE:   per token, softmax over the router logits, top-k experts (ties: lowest index),
//            weights renormalised over the k (RENORM) and scaled: Ids/Wt[t * k + s].
//   PLAN:    (prefill) one workgroup groups the (token, slot) pairs by expert into Pairs,
//            cuts them into tiles of at most TILE pairs of one expert, and writes the indirect
//            dispatch sizes of the grouped matmuls.
//   COMBINE: X[t] += sum_s Wt[t * k + s] * Y[t * k + s].

struct Params {
    n_expert: u32,
    k: u32,
    n_embd: u32,
    scale: f32,
    // PLAN: row tiles of the two grouped matmul shapes (gate/up, down) and the pair count.
    row_tiles_a: u32,
    row_tiles_b: u32,
    n_pairs: u32,
    _pad: u32,
}

struct Step {
    pos0: u32,
    n_tokens: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<uniform> S: Step;
@group(0) @binding(2) var<storage, read_write> Ids: array<u32>;

#ifdef ROUTE
@group(0) @binding(3) var<storage, read> L: array<f32>;
@group(0) @binding(4) var<storage, read_write> Wt: array<f32>;

const MAX_K: u32 = 16u;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = gid.x;
    if (t >= S.n_tokens) {
        return;
    }
    let base = t * P.n_expert;
    var mx = L[base];
    for (var e = 1u; e < P.n_expert; e++) {
        mx = max(mx, L[base + e]);
    }
    var sum = 0.0;
    for (var e = 0u; e < P.n_expert; e++) {
        sum += exp(L[base + e] - mx);
    }
    var chosen: array<u32, MAX_K>;
    var prob: array<f32, MAX_K>;
    var total = 0.0;
    for (var s = 0u; s < P.k; s++) {
        var best = 0xFFFFFFFFu;
        var best_l = -3.4e38;
        for (var e = 0u; e < P.n_expert; e++) {
            var taken = false;
            for (var j = 0u; j < s; j++) {
                taken = taken || chosen[j] == e;
            }
            let l = L[base + e];
            if (!taken && (best == 0xFFFFFFFFu || l > best_l)) {
                best = e;
                best_l = l;
            }
        }
        chosen[s] = best;
        prob[s] = exp(best_l - mx) / sum;
        total += prob[s];
    }
    for (var s = 0u; s < P.k; s++) {
        var w = prob[s];
#ifdef RENORM
        w = w / total;
#endif
        Ids[t * P.k + s] = chosen[s];
        Wt[t * P.k + s] = w * P.scale;
    }
}
#endif

#ifdef PLAN
@group(0) @binding(3) var<storage, read_write> Pairs: array<u32>;
@group(0) @binding(4) var<storage, read_write> Tiles: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read_write> Args: array<u32>;

const MAX_EXPERTS: u32 = 512u;
var<workgroup> counts: array<atomic<u32>, MAX_EXPERTS>;
var<workgroup> offsets: array<u32, MAX_EXPERTS>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32) {
    let n_pairs = S.n_tokens * P.k;
    for (var e = lid; e < P.n_expert; e += 256u) {
        atomicStore(&counts[e], 0u);
    }
    workgroupBarrier();
    for (var s = lid; s < n_pairs; s += 256u) {
        atomicAdd(&counts[Ids[s]], 1u);
    }
    workgroupBarrier();
    if (lid == 0u) {
        var off = 0u;
        var n_tiles = 0u;
        for (var e = 0u; e < P.n_expert; e++) {
            let c = atomicLoad(&counts[e]);
            offsets[e] = off;
            var start = 0u;
            while (start < c) {
                Tiles[n_tiles] = vec4<u32>(e, off + start, min(TILE, c - start), 0u);
                n_tiles += 1u;
                start += TILE;
            }
            off += c;
            atomicStore(&counts[e], 0u);
        }
        Args[0] = P.row_tiles_a;
        Args[1] = n_tiles;
        Args[2] = 1u;
        Args[3] = P.row_tiles_b;
        Args[4] = n_tiles;
        Args[5] = 1u;
    }
    workgroupBarrier();
    for (var s = lid; s < n_pairs; s += 256u) {
        let e = Ids[s];
        let at = atomicAdd(&counts[e], 1u);
        Pairs[offsets[e] + at] = s;
    }
}
#endif

#ifdef COMBINE
@group(0) @binding(3) var<storage, read> Wt: array<f32>;
@group(0) @binding(4) var<storage, read> Y: array<f32>;
@group(0) @binding(5) var<storage, read_write> X: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let i = gid.x;
    let t = wid.y;
    if (i >= P.n_embd) {
        return;
    }
    var acc = 0.0;
    for (var s = 0u; s < P.k; s++) {
        let slot = t * P.k + s;
        acc += Wt[slot] * Y[slot * P.n_embd + i];
    }
    X[t * P.n_embd + i] += acc;
}
#endif
