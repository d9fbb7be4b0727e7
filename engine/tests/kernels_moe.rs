//! Mixture-of-experts kernels against the float64 reference. On the GPU, on every device
//! configuration: the router (softmax, top-k, weights) in both gating styles, the ids (decode)
//! and grouped (prompt batch) variants of the linear kernels over stacked experts, and the
//! weighted combine. Sizes are chosen not to divide the workgroups and tiles: 37-row experts,
//! 65 tokens against 64-token router workgroups, more pairs on one expert than a grouped tile
//! holds. On the CPU: the router on the same logits, and the routed expert FFNs of a real
//! (tiny) MoE model against the reference FFN on its dequantized weights.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::reference::{self, Gating};
use common::{Rng, check_close, dequant, gpus, random_weights};
use wllm_engine::Gpu;
use wllm_engine::cpu::CpuExperts;
use wllm_engine::cpu::ops::Activation;
use wllm_engine::ops::linear::{
    Epilogue, ExpertIds, Grouped, LinearIo, grouped_shape, linear_grouped, linear_ids,
};
use wllm_engine::ops::moe::{self, MoeBuffers, MoeShape};
use wllm_engine::tensor::GpuWeight;
use wllm_loaders::model::{
    ExpertGating, FfnActivation, FfnWeights, ModelWeights, MoeBiases, MoeConfig, TensorBytes, TensorMeta,
    TensorSource,
};
use wllm_loaders::{GgmlType, GgufFile, ModelConfig};

const TYPES: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q6_K,
    GgmlType::MXFP4,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
];

/// [`TYPES`], then the codebook types.
fn types() -> impl Iterator<Item = GgmlType> {
    TYPES.iter().copied().chain(wllm_loaders::quant::CODEBOOK_TYPES)
}

fn step(gpu: &Gpu, n_tokens: usize) -> wgpu::Buffer {
    gpu.uniform("step", &[0u32, n_tokens as u32, 0, 0])
}

/// Random logits, with some tokens rounded to a few levels so that ties occur.
fn router_logits(rng: &mut Rng, n_tokens: usize, n_expert: usize) -> Vec<f32> {
    let mut l = rng.vec(n_tokens * n_expert, 4.0);
    for (t, row) in l.chunks_mut(n_expert).enumerate() {
        if t % 3 == 1 {
            row.iter_mut().for_each(|v| *v = (*v * 0.5).round());
        }
    }
    l
}

/// One routing case: experts, experts used, tokens, and the router logits of every token.
struct RouterCase {
    n_expert: usize,
    k: usize,
    n_tok: usize,
    logits: Vec<f32>,
}

/// The routing cases both backends run: one expert, a few, many, k up to 16, one token, a few,
/// and one past a 64-token workgroup.
fn router_cases() -> Vec<RouterCase> {
    let mut rng = Rng::new(11);
    let mut out = Vec::new();
    for (n_expert, k) in [(1usize, 1usize), (3, 2), (8, 2), (60, 4), (128, 8), (40, 16)] {
        for n_tok in [1usize, 7, 65] {
            out.push(RouterCase { n_expert, k, n_tok, logits: router_logits(&mut rng, n_tok, n_expert) });
        }
    }
    out
}

/// The expert-weight scale a case runs with: models that renormalise use 1, the others scale.
fn weights_scale(renormalize: bool) -> f32 {
    if renormalize { 1.0 } else { 2.5 }
}

/// Checks routing results (`ids`, `weights`: `k` per token) against the reference.
fn check_routes(what: &str, c: &RouterCase, gating: Gating, scale: f32, ids: &[u32], weights: &[f32]) {
    let mut want = Vec::with_capacity(c.n_tok * c.k);
    for (t, row) in c.logits.chunks(c.n_expert).enumerate() {
        for (s, (e, w)) in reference::route(row, c.k, gating, scale as f64).into_iter().enumerate() {
            let i = t * c.k + s;
            assert_eq!(ids[i] as usize, e, "{what}: token {t} slot {s} (index {i}): expert");
            want.push(w);
        }
    }
    let magnitudes: Vec<f64> = want.iter().map(|w| w.abs()).collect();
    check_close(&format!("{what} {gating:?}"), &weights[..c.n_tok * c.k], &want, &magnitudes, 1e-5, 1e-7);
}

#[test]
fn gpu_router_top_k_and_weights() {
    let cases = router_cases();
    for (name, gpu) in gpus() {
        for c in &cases {
            let (n_expert, k, n_tok) = (c.n_expert, c.k, c.n_tok);
            let lb = gpu.storage_init("logits", bytemuck::cast_slice(&c.logits));
            let st = step(&gpu, n_tok);
            let mb = MoeBuffers::new(&gpu, n_tok as u32, n_expert as u32, k as u32, 8);
            // The two GPU variants, each with the gating styles it implements.
            let styles: [(bool, &[Gating]); 2] = [
                (false, &[Gating::SoftmaxThenTopK { renormalize: false }]),
                (true, &[Gating::SoftmaxThenTopK { renormalize: true }, Gating::TopKThenSoftmax]),
            ];
            for (renormalize, gatings) in styles {
                let scale = weights_scale(renormalize);
                let shape =
                    MoeShape { n_expert: n_expert as u32, k: k as u32, n_embd: 0, scale, renormalize };
                let op = moe::route(&gpu, &shape, &lb, &mb, &st).unwrap();
                gpu.run(&[op], n_tok as u32).unwrap();
                let ids: Vec<u32> = bytemuck::pod_collect_to_vec(&gpu.read_bytes(&mb.ids).unwrap());
                let got = gpu.read_f32(&mb.weights).unwrap();
                let what = format!("[{name}] route n_expert={n_expert} k={k} T={n_tok} renorm={renormalize}");
                for &gating in gatings {
                    check_routes(&what, c, gating, scale, &ids, &got);
                }
            }
        }
    }
}

/// The CPU router (what offloaded MoE layers use) on the GPU test's logits. Its one gating
/// style with renormalisation is also the top-k-then-softmax of Mixtral.
#[test]
fn cpu_router_top_k_and_weights() {
    for c in router_cases() {
        for renormalize in [false, true] {
            let scale = weights_scale(renormalize);
            let cfg = MoeConfig {
                n_expert: c.n_expert as u32,
                n_expert_used: c.k as u32,
                n_ff_expert: 1,
                gating: ExpertGating::SoftmaxTopK { renormalize },
                weights_scale: scale,
                shared_expert_ff: None,
            };
            let (mut ids, mut weights) = (Vec::new(), Vec::new());
            for row in c.logits.chunks(c.n_expert) {
                for r in wllm_engine::cpu::ops::route(&cfg, row).unwrap() {
                    ids.push(r.expert as u32);
                    weights.push(r.weight);
                }
            }
            let what = format!("route n_expert={} k={} T={} renorm={renormalize}", c.n_expert, c.k, c.n_tok);
            let gatings: &[Gating] = if renormalize {
                &[Gating::SoftmaxThenTopK { renormalize: true }, Gating::TopKThenSoftmax]
            } else {
                &[Gating::SoftmaxThenTopK { renormalize: false }]
            };
            for &gating in gatings {
                check_routes(&what, &c, gating, scale, &ids, &weights);
            }
        }
    }
    let cfg = MoeConfig {
        n_expert: 4,
        n_expert_used: 5,
        n_ff_expert: 1,
        gating: ExpertGating::SoftmaxTopK { renormalize: true },
        weights_scale: 1.0,
        shared_expert_ff: None,
    };
    assert!(wllm_engine::cpu::ops::route(&cfg, &[0.0; 4]).is_err(), "k=5 of 4 accepted");
    assert!(wllm_engine::cpu::ops::route(&MoeConfig { n_expert_used: 2, ..cfg }, &[0.0; 3]).is_err());
}

#[test]
fn gpu_routing_refuses_bad_shapes() {
    let Some((_, gpu)) = gpus().into_iter().next() else { return };
    let mb = MoeBuffers::new(&gpu, 1, 32, 17, 8);
    let lb = gpu.storage("logits", 32 * 4);
    let st = step(&gpu, 1);
    for (n_expert, k) in [(32u32, 17u32), (4, 5), (4, 0)] {
        let shape = MoeShape { n_expert, k, n_embd: 0, scale: 1.0, renormalize: true };
        assert!(moe::route(&gpu, &shape, &lb, &mb, &st).is_err(), "k={k} of {n_expert} accepted");
    }
    // Smaller tiles than the buffers were sized for would overrun them.
    let shape = MoeShape { n_expert: 32, k: 2, n_embd: 0, scale: 1.0, renormalize: true };
    assert!(moe::plan(&gpu, &shape, 4, (1, 1), &mb, &st).is_err());
    assert!(moe::plan(&gpu, &shape, 8, (1, 1), &mb, &st).is_ok());
    let shape = MoeShape { n_expert: 513, k: 2, n_embd: 0, scale: 1.0, renormalize: true };
    assert!(moe::plan(&gpu, &shape, 8, (1, 1), &mb, &st).is_err());
}

/// A stacked-experts weight: `n_expert` matrices of `rows x cols`, in ggml dims
/// [cols, rows, n_expert], uploaded so no expert straddles two buffers.
struct Experts {
    w: GpuWeight,
    /// Dequantized, [n_expert * rows][cols].
    f: Vec<f32>,
    rows: usize,
    cols: usize,
}

fn experts(gpu: &Gpu, t: GgmlType, n_expert: usize, rows: usize, cols: usize, rng: &mut Rng) -> Experts {
    let bytes = random_weights(t, n_expert * rows, cols, rng);
    let f = dequant(t, &bytes, n_expert * rows * cols);
    let meta = TensorMeta {
        name: format!("exps.{t}"),
        ggml_type: t,
        dims: vec![cols as u64, rows as u64, n_expert as u64],
    };
    let w = GpuWeight::upload_aligned(gpu, &TensorBytes { meta, bytes: bytes.into() }, rows as u64).unwrap();
    Experts { w, f, rows, cols }
}

/// k distinct experts per token; `skew` sends every token's first slot to expert 0 so one
/// expert gets more pairs than a grouped tile holds.
fn expert_ids(rng: &mut Rng, n_tok: usize, k: usize, n_expert: usize, skew: bool) -> Vec<u32> {
    let mut ids = Vec::with_capacity(n_tok * k);
    for _ in 0..n_tok {
        let mut row: Vec<u32> = Vec::with_capacity(k);
        while row.len() < k {
            let e = if skew && row.is_empty() { 0 } else { rng.below(n_expert as u64) as u32 };
            if !row.contains(&e) {
                row.push(e);
            }
        }
        ids.extend(row);
    }
    ids
}

/// y[pair][r] = sum_c W[expert(pair)][r][c] * x[row(pair)][c], row(pair) = pair / k for
/// per-token inputs, else the pair itself; and the sum of |products| for the error budget.
fn ids_reference(e: &Experts, ids: &[u32], k: usize, x: &[f32], x_per_token: bool) -> (Vec<f64>, Vec<f64>) {
    let (rows, cols) = (e.rows, e.cols);
    let (mut y, mut s) = (Vec::with_capacity(ids.len() * rows), Vec::with_capacity(ids.len() * rows));
    for (pair, &ex) in ids.iter().enumerate() {
        let xr = if x_per_token { pair / k } else { pair };
        let w = &e.f[ex as usize * rows * cols..][..rows * cols];
        let (py, ps) = reference::linear(w, &x[xr * cols..(xr + 1) * cols], rows, cols, 1);
        y.extend(py);
        s.extend(ps);
    }
    (y, s)
}

/// One ids (decode) or grouped (`batched`, prefill) product of stacked experts: which expert
/// each (token, slot) pair uses, and the epilogue's inputs: `gate` (laid out like y) for the
/// GLU epilogue, `bias` (one per row of each expert) for gpt-oss's biased experts.
#[derive(Clone, Copy)]
struct Product<'a> {
    ids: &'a [u32],
    k: usize,
    x_per_token: bool,
    gate: Option<&'a [f32]>,
    bias: Option<&'a [f32]>,
    batched: bool,
}

/// Runs one product and checks it against the reference.
fn check_experts(what: &str, gpu: &Gpu, e: &Experts, n_expert: usize, p: Product<'_>, rng: &mut Rng) {
    let Product { ids, k, x_per_token, gate, bias, batched } = p;
    let n_tok = ids.len() / k;
    let n_x = if x_per_token { n_tok } else { ids.len() };
    let x = rng.vec(n_x * e.cols, 1.0);
    let xb = gpu.storage_init("x", bytemuck::cast_slice(&x));
    // A sentinel in every output, so a pair the kernel skips cannot pass.
    let n_y = ids.len() * e.rows;
    let yb = gpu.storage_init("y", bytemuck::cast_slice(&vec![f32::NAN; n_y]));
    let gb = gate.map(|g| gpu.storage_init("gate", bytemuck::cast_slice(g)));
    let bb = bias.map(|b| gpu.storage_init("bias", bytemuck::cast_slice(b)));
    let io = LinearIo {
        x: &xb,
        x_offset: 0,
        x_stride: e.cols as u32,
        y: &yb,
        y_offset: 0,
        y_stride: e.rows as u32,
        bias: bb.as_ref(),
        gate: gb.as_ref(),
    };
    // gpt-oss's experts: biases (one per row of each expert) and its clamped SwiGLU.
    let act = if bias.is_some() { Activation::SwigluOai } else { Activation::Silu };
    let epi = match (gate, act) {
        (None, _) => Epilogue::Store,
        (Some(_), Activation::SwigluOai) => Epilogue::GluOai,
        (Some(_), _) => Epilogue::GluSilu,
    };
    let st = step(gpu, n_tok);
    // Sized for the kernel's own tile: the planner writes up to pairs / tile + n_expert tiles.
    let (row_tiles, tile) = grouped_shape(gpu, e.rows as u32);
    let mb = MoeBuffers::new(gpu, n_tok as u32, n_expert as u32, k as u32, tile);
    gpu.queue.write_buffer(&mb.ids, 0, bytemuck::cast_slice(ids));
    let ex = ExpertIds { ids: &mb.ids, k: k as u32, expert_rows: e.rows as u32, x_per_token };
    let ops = if batched {
        let shape =
            MoeShape { n_expert: n_expert as u32, k: k as u32, n_embd: 0, scale: 1.0, renormalize: true };
        let mut ops = vec![moe::plan(gpu, &shape, tile, (row_tiles, row_tiles), &mb, &st).unwrap()];
        let g = Grouped { pairs: &mb.pairs, tiles: &mb.tiles, args: &mb.args, args_offset: 0 };
        ops.extend(linear_grouped(gpu, &e.w, &io, epi, &st, &ex, &g).unwrap());
        ops
    } else {
        linear_ids(gpu, &e.w, &io, epi, &st, &ex).unwrap()
    };
    gpu.run(&ops, n_tok as u32).unwrap();
    let got = gpu.read_f32(&yb).unwrap();
    let (mut want, mut scale) = ids_reference(e, ids, k, &x, x_per_token);
    if let Some(b) = bias {
        for (i, w) in want.iter_mut().enumerate() {
            *w += b[ids[i / e.rows] as usize * e.rows + i % e.rows] as f64;
        }
    }
    if let Some(g) = gate {
        for i in 0..n_y {
            let a = reference::act(act, g[i] as f64);
            want[i] = reference::glu(act, g[i] as f64, want[i]);
            scale[i] = (scale[i] + 1.0) * (1.0 + a.abs());
        }
    }
    check_close(what, &got[..n_y], &want, &scale, 1e-5, 1e-6);
}

#[test]
fn gpu_ids_matvec_matches_reference() {
    for (name, gpu) in gpus() {
        let mut rng = Rng::new(12);
        for t in types() {
            let (n_expert, rows) = (5usize, 37usize);
            let cols = (t.block_size() as usize).max(32) * 3;
            let e = experts(&gpu, t, n_expert, rows, cols, &mut rng);
            for (n_tok, k) in [(1usize, 1usize), (1, 3), (3, 2)] {
                let ids = expert_ids(&mut rng, n_tok, k, n_expert, false);
                let what = format!("[{name}] ids {t} {n_expert}x{rows}x{cols} T={n_tok} k={k} ids={ids:?}");
                check_glu_and_bias_variants(&what, &gpu, &e, n_expert, &ids, k, false, &mut rng);
            }
        }
    }
}

/// The products one expert layout gets: plain stores with the token's and the pair's own input,
/// a SwiGLU on a gate, and gpt-oss's expert biases on a store and on its clamped GLU (gates
/// spread past the clamp).
#[allow(clippy::too_many_arguments)]
fn check_glu_and_bias_variants(
    what: &str,
    gpu: &Gpu,
    e: &Experts,
    n_expert: usize,
    ids: &[u32],
    k: usize,
    batched: bool,
    rng: &mut Rng,
) {
    let plain = Product { ids, k, x_per_token: true, gate: None, bias: None, batched };
    for x_per_token in [true, false] {
        let p = Product { x_per_token, ..plain };
        check_experts(&format!("{what} per_token={x_per_token}"), gpu, e, n_expert, p, rng);
    }
    let gate = rng.vec(ids.len() * e.rows, 2.0);
    let p = Product { gate: Some(&gate), ..plain };
    check_experts(&format!("{what} swiglu"), gpu, e, n_expert, p, rng);
    let bias = rng.vec(n_expert * e.rows, 1.0);
    let p = Product { bias: Some(&bias), ..plain };
    check_experts(&format!("{what} biased"), gpu, e, n_expert, p, rng);
    let gate = rng.vec(ids.len() * e.rows, 8.0);
    let p = Product { gate: Some(&gate), bias: Some(&bias), ..plain };
    check_experts(&format!("{what} biased swiglu_oai"), gpu, e, n_expert, p, rng);
}

#[test]
fn gpu_grouped_matmul_matches_reference() {
    for (name, gpu) in gpus() {
        let mut rng = Rng::new(13);
        for t in types() {
            let (n_expert, rows) = (6usize, 37usize);
            let cols = (t.block_size() as usize).max(32) * 2;
            let e = experts(&gpu, t, n_expert, rows, cols, &mut rng);
            // 40 tokens with every first slot on expert 0: 40 pairs of one expert, more than
            // a tile of either kernel shape (8 or 32 pairs).
            for (n_tok, k, skew) in [(1usize, 2usize, false), (9, 2, false), (40, 4, true)] {
                let ids = expert_ids(&mut rng, n_tok, k, n_expert, skew);
                let what = format!("[{name}] grouped {t} {n_expert}x{rows}x{cols} T={n_tok} k={k}");
                check_glu_and_bias_variants(&what, &gpu, &e, n_expert, &ids, k, true, &mut rng);
            }
        }
    }
}

#[test]
fn gpu_combine_adds_weighted_expert_outputs() {
    for (name, gpu) in gpus() {
        let mut rng = Rng::new(14);
        for (n_tok, k, n_embd) in [(1usize, 1usize, 32usize), (5, 3, 300)] {
            let weights = rng.vec(n_tok * k, 1.0);
            let y = rng.vec(n_tok * k * n_embd, 1.0);
            let x0 = rng.vec(n_tok * n_embd, 1.0);
            let mb = MoeBuffers::new(&gpu, n_tok as u32, 8, k as u32, 8);
            gpu.queue.write_buffer(&mb.weights, 0, bytemuck::cast_slice(&weights));
            let yb = gpu.storage_init("y", bytemuck::cast_slice(&y));
            let xb = gpu.storage_init("x", bytemuck::cast_slice(&x0));
            let st = step(&gpu, n_tok);
            let shape =
                MoeShape { n_expert: 8, k: k as u32, n_embd: n_embd as u32, scale: 1.0, renormalize: true };
            let op = moe::combine(&gpu, &shape, &mb, &yb, &xb, &st).unwrap();
            gpu.run(&[op], n_tok as u32).unwrap();
            let got = gpu.read_f32(&xb).unwrap();
            let (want, scale) = reference::moe_combine(&x0, &weights, &y, k, n_embd);
            check_close(
                &format!("[{name}] combine T={n_tok} k={k} n_embd={n_embd}"),
                &got[..n_tok * n_embd],
                &want,
                &scale,
                1e-6,
                1e-7,
            );
        }
    }
}

fn tiny_model(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/models").join(name)
}

/// A tensor of the model, dequantized.
fn dequantized(src: &GgufFile, meta: &TensorMeta) -> Vec<f32> {
    let t = TensorSource::bytes(src, &meta.name).unwrap();
    wllm_loaders::quant::dequantize(meta.ggml_type, &t.bytes, meta.n_elements() as usize).unwrap()
}

/// The routed experts' FFNs of tiny real MoE models (their quantized weights read in place) on
/// the CPU, against the reference: router logits, routing, gate and up products, the GLU and
/// the down product of each chosen expert, weighted and summed, in float64 on the dequantized
/// weights; gpt-oss's with its router and expert biases, clamped SwiGLU and MXFP4 experts.
#[test]
fn cpu_experts_match_the_reference_ffn() {
    cpu_experts_match_the_reference("tiny-qwen3moe-q4_k_m.gguf");
    cpu_experts_match_the_reference("tiny-gptoss-mxfp4.gguf");
}

fn cpu_experts_match_the_reference(model: &str) {
    let path = tiny_model(model);
    let file = GgufFile::open(&path).unwrap();
    let cfg = ModelConfig::from_gguf(&file).unwrap();
    let moe = cfg.moe.clone().expect("a MoE model");
    let act = match cfg.ffn_act {
        FfnActivation::Silu => Activation::Silu,
        FfnActivation::GeluTanh => Activation::GeluTanh,
        FfnActivation::SwigluOai => Activation::SwigluOai,
    };
    let ExpertGating::SoftmaxTopK { renormalize } = moe.gating;
    let gating = Gating::SoftmaxThenTopK { renormalize };
    let metas = ModelWeights::resolve(&cfg, &file).unwrap();
    let (e, nff, n_exp, k) =
        (cfg.n_embd as usize, moe.n_ff_expert as usize, moe.n_expert as usize, moe.n_expert_used as usize);
    let layers: Vec<u32> = (0..cfg.n_layer).collect();
    let src: Arc<dyn TensorSource> = Arc::new(GgufFile::open(&path).unwrap());
    let experts = CpuExperts::new(&cfg, src, &layers, 2).unwrap();
    let mut rng = Rng::new(15);
    let (mut checked, mut skipped) = (0, 0);
    for (il, layer) in metas.layers.iter().enumerate() {
        let FfnWeights::Moe { router, gate_exps, up_exps, down_exps, biases, .. } = &layer.ffn else {
            continue;
        };
        let router = dequantized(&file, router);
        let bias = |pick: fn(&MoeBiases<TensorMeta>) -> &TensorMeta| match biases {
            Some(b) => dequantized(&file, pick(b)),
            None => vec![0.0; n_exp * nff.max(e)],
        };
        let (router_b, gate_b, up_b, down_b) =
            (bias(|b| &b.router), bias(|b| &b.gate), bias(|b| &b.up), bias(|b| &b.down));
        let (gate, up, down) =
            (dequantized(&file, gate_exps), dequantized(&file, up_exps), dequantized(&file, down_exps));
        // One token (decode) and a batch (tokens grouped by expert).
        for n_tok in [1usize, 9] {
            let h = rng.vec(n_tok * e, 1.0);
            let mut got = Vec::new();
            experts.run(il, &h, &mut got).unwrap();
            assert_eq!(got.len(), n_tok * e, "layer {il} T={n_tok}: output length");
            for (t, ht) in h.chunks(e).enumerate() {
                let (logits, _) = reference::linear(&router, ht, n_exp, e, 1);
                let logits: Vec<f64> = logits.iter().zip(&router_b).map(|(l, b)| l + *b as f64).collect();
                // A token whose k-th and (k+1)-th logits are closer than the CPU's router
                // product resolves may take either expert; it is not held to one.
                let mut sorted = logits.clone();
                sorted.sort_by(|a, b| b.total_cmp(a));
                if k < n_exp && sorted[k - 1] - sorted[k] < 1e-3 {
                    skipped += 1;
                    continue;
                }
                let logits: Vec<f32> = logits.iter().map(|&l| l as f32).collect();
                let (mut want, mut scale) = (vec![0f64; e], vec![0f64; e]);
                for (x, w) in reference::route(&logits, k, gating, moe.weights_scale as f64) {
                    let (mut g, gs) = reference::linear(&gate[x * nff * e..][..nff * e], ht, nff, e, 1);
                    let (mut u, us) = reference::linear(&up[x * nff * e..][..nff * e], ht, nff, e, 1);
                    for j in 0..nff {
                        g[j] += gate_b[x * nff + j] as f64;
                        u[j] += up_b[x * nff + j] as f64;
                    }
                    let a: Vec<f64> = g.iter().zip(&u).map(|(&g, &u)| reference::glu(act, g, u)).collect();
                    // What the activation's error scales with: its own size and each input's
                    // rounding carried through the product with the other.
                    let a_scale: Vec<f64> = (0..nff)
                        .map(|j| a[j].abs() + gs[j] * (u[j].abs() + us[j]) + us[j] * (g[j].abs() + gs[j]))
                        .collect();
                    let down_x = &down[x * e * nff..][..e * nff];
                    let (y, _) = reference::linear(down_x, &a, e, nff, 1);
                    let (_, ys) = reference::linear(down_x, &a_scale, e, nff, 1);
                    for c in 0..e {
                        want[c] += w * (y[c] + down_b[x * e + c] as f64);
                        scale[c] += w.abs() * ys[c];
                    }
                }
                let what = format!("{model} layer {il} experts T={n_tok} token {t}");
                check_close(&what, &got[t * e..(t + 1) * e], &want, &scale, 1e-4, 1e-6);
                checked += 1;
            }
        }
    }
    eprintln!("{checked} tokens checked, {skipped} with a top-{k} margin under 1e-3 skipped");
    assert!(checked >= 10 && skipped * 4 <= checked, "{checked} tokens checked, {skipped} skipped");
}
