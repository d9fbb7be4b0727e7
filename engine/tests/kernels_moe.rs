//! Mixture-of-experts kernels against CPU references: the router (softmax, top-k, weights)
//! in both gating styles, the ids (decode) and grouped (prompt batch) variants of the linear
//! kernels over stacked experts, and the weighted combine. Sizes are chosen not to divide the
//! workgroups and tiles: 37-row experts, 65 tokens against 64-token router workgroups, more
//! pairs on one expert than a grouped tile holds.

mod common;

use common::{Rng, check_close, dequant, gpus, random_weights};
use wllm_engine::Gpu;
use wllm_engine::ops::linear::{
    Epilogue, ExpertIds, Grouped, LinearIo, grouped_shape, linear_grouped, linear_ids,
};
use wllm_engine::ops::moe::{self, MoeBuffers, MoeShape};
use wllm_engine::tensor::GpuWeight;
use wllm_loaders::GgmlType;
use wllm_loaders::model::{ExpertGating, MoeConfig, TensorBytes, TensorMeta};

const TYPES: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q6_K,
    GgmlType::MXFP4,
];

fn step(gpu: &Gpu, n_tokens: usize) -> wgpu::Buffer {
    gpu.uniform("step", &[0u32, n_tokens as u32, 0, 0])
}

/// How router logits become expert weights, written out independently of the engine.
#[derive(Copy, Clone, Debug)]
enum Gating {
    /// qwen3moe: softmax over all experts, top k, optionally renormalised over the k.
    SoftmaxThenTopK { renormalize: bool },
    /// mixtral: top k logits, softmax over just those.
    TopKThenSoftmax,
}

/// (expert, weight) per slot in f64; ties go to the lower expert index.
fn route_reference(logits: &[f32], k: usize, gating: Gating, scale: f64) -> Vec<(u32, f64)> {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    // partial_cmp, not total_cmp: the kernel compares with `>`, for which -0 == +0.
    order.sort_by(|&a, &b| {
        logits[b].partial_cmp(&logits[a]).unwrap_or(std::cmp::Ordering::Equal).then(a.cmp(&b))
    });
    let chosen = &order[..k];
    let max = logits[order[0]] as f64;
    let exp = |e: usize| (logits[e] as f64 - max).exp();
    let weights: Vec<f64> = match gating {
        Gating::SoftmaxThenTopK { renormalize } => {
            let all: f64 = (0..logits.len()).map(exp).sum();
            let picked: f64 = chosen.iter().map(|&e| exp(e)).sum();
            let denom = if renormalize { picked } else { all };
            chosen.iter().map(|&e| exp(e) / denom).collect()
        }
        Gating::TopKThenSoftmax => {
            let sum: f64 = chosen.iter().map(|&e| exp(e)).sum();
            chosen.iter().map(|&e| exp(e) / sum).collect()
        }
    };
    chosen.iter().zip(weights).map(|(&e, w)| (e as u32, w * scale)).collect()
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

#[test]
fn router_top_k_and_weights() {
    for (name, gpu) in gpus() {
        let mut rng = Rng::new(11);
        for (n_expert, k) in [(1usize, 1usize), (3, 2), (8, 2), (60, 4), (128, 8), (40, 16)] {
            for n_tok in [1usize, 7, 65] {
                let logits = router_logits(&mut rng, n_tok, n_expert);
                let lb = gpu.storage_init("logits", bytemuck::cast_slice(&logits));
                let st = step(&gpu, n_tok);
                let mb = MoeBuffers::new(&gpu, n_tok as u32, n_expert as u32, k as u32, 8);
                // The two GPU variants, each with the gating styles it implements.
                let styles: [(bool, &[Gating]); 2] = [
                    (false, &[Gating::SoftmaxThenTopK { renormalize: false }]),
                    (true, &[Gating::SoftmaxThenTopK { renormalize: true }, Gating::TopKThenSoftmax]),
                ];
                for (renormalize, gatings) in styles {
                    let scale = if renormalize { 1.0 } else { 2.5 };
                    let shape =
                        MoeShape { n_expert: n_expert as u32, k: k as u32, n_embd: 0, scale, renormalize };
                    let op = moe::route(&gpu, &shape, &lb, &mb, &st).unwrap();
                    gpu.run(&[op], n_tok as u32).unwrap();
                    let ids: Vec<u32> = bytemuck::pod_collect_to_vec(&gpu.read_bytes(&mb.ids).unwrap());
                    let got = gpu.read_f32(&mb.weights).unwrap();
                    let what =
                        format!("[{name}] route n_expert={n_expert} k={k} T={n_tok} renorm={renormalize}");
                    for &gating in gatings {
                        let mut want = Vec::with_capacity(n_tok * k);
                        for (t, row) in logits.chunks(n_expert).enumerate() {
                            for (s, (e, w)) in
                                route_reference(row, k, gating, scale as f64).into_iter().enumerate()
                            {
                                let i = t * k + s;
                                assert_eq!(ids[i], e, "{what}: token {t} slot {s} (index {i}): expert");
                                want.push(w);
                            }
                        }
                        let scale: Vec<f64> = want.iter().map(|w| w.abs()).collect();
                        check_close(
                            &format!("{what} {gating:?}"),
                            &got[..n_tok * k],
                            &want,
                            &scale,
                            1e-5,
                            1e-7,
                        );
                    }
                    // The engine's CPU router agrees (it is what offloaded layers use).
                    let cfg = MoeConfig {
                        n_expert: n_expert as u32,
                        n_expert_used: k as u32,
                        n_ff_expert: 1,
                        gating: ExpertGating::SoftmaxTopK { renormalize },
                        weights_scale: scale,
                    };
                    for (t, row) in logits.chunks(n_expert).enumerate() {
                        let cpu = wllm_engine::cpu::ops::route(&cfg, row).unwrap();
                        for (s, r) in cpu.iter().enumerate() {
                            let i = t * k + s;
                            assert_eq!(ids[i] as usize, r.expert, "{what}: CPU router, token {t} slot {s}");
                            let d = (got[i] - r.weight).abs();
                            assert!(
                                d <= 1e-5 * r.weight.abs() + 1e-7,
                                "{what}: CPU router weight at {i}: {d}"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn routing_refuses_bad_shapes() {
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
    let mut y = vec![0f64; ids.len() * rows];
    let mut s = vec![0f64; ids.len() * rows];
    for (pair, &ex) in ids.iter().enumerate() {
        let xr = if x_per_token { pair / k } else { pair };
        let x = &x[xr * cols..(xr + 1) * cols];
        for r in 0..rows {
            let w = &e.f[(ex as usize * rows + r) * cols..][..cols];
            for c in 0..cols {
                let p = w[c] as f64 * x[c] as f64;
                y[pair * rows + r] += p;
                s[pair * rows + r] += p.abs();
            }
        }
    }
    (y, s)
}

fn silu(g: f64) -> f64 {
    g / (1.0 + (-g).exp())
}

/// Runs one ids or grouped product with the given epilogue and checks it. `gate` (laid out
/// like y) is given for the GLU epilogue.
#[allow(clippy::too_many_arguments)]
fn check_experts(
    what: &str,
    gpu: &Gpu,
    e: &Experts,
    n_expert: usize,
    ids: &[u32],
    k: usize,
    x_per_token: bool,
    gate: Option<&[f32]>,
    batched: bool,
    rng: &mut Rng,
) {
    let n_tok = ids.len() / k;
    let n_x = if x_per_token { n_tok } else { ids.len() };
    let x = rng.vec(n_x * e.cols, 1.0);
    let xb = gpu.storage_init("x", bytemuck::cast_slice(&x));
    // A sentinel in every output, so a pair the kernel skips cannot pass.
    let n_y = ids.len() * e.rows;
    let yb = gpu.storage_init("y", bytemuck::cast_slice(&vec![f32::NAN; n_y]));
    let gb = gate.map(|g| gpu.storage_init("gate", bytemuck::cast_slice(g)));
    let io = LinearIo {
        x: &xb,
        x_offset: 0,
        x_stride: e.cols as u32,
        y: &yb,
        y_offset: 0,
        y_stride: e.rows as u32,
        bias: None,
        gate: gb.as_ref(),
    };
    let epi = if gate.is_some() { Epilogue::GluSilu } else { Epilogue::Store };
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
    if let Some(g) = gate {
        for i in 0..n_y {
            let a = silu(g[i] as f64);
            want[i] *= a;
            scale[i] = (scale[i] + 1.0) * (1.0 + a.abs());
        }
    }
    check_close(what, &got[..n_y], &want, &scale, 1e-5, 1e-6);
}

#[test]
fn ids_matvec_matches_cpu() {
    for (name, gpu) in gpus() {
        let mut rng = Rng::new(12);
        for &t in TYPES {
            let (n_expert, rows) = (5usize, 37usize);
            let cols = (t.block_size() as usize).max(32) * 3;
            let e = experts(&gpu, t, n_expert, rows, cols, &mut rng);
            for (n_tok, k) in [(1usize, 1usize), (1, 3), (3, 2)] {
                let ids = expert_ids(&mut rng, n_tok, k, n_expert, false);
                for x_per_token in [true, false] {
                    let what = format!(
                        "[{name}] ids {t} {n_expert}x{rows}x{cols} T={n_tok} k={k} per_token={x_per_token} ids={ids:?}"
                    );
                    check_experts(&what, &gpu, &e, n_expert, &ids, k, x_per_token, None, false, &mut rng);
                }
                let gate = rng.vec(ids.len() * rows, 2.0);
                let what = format!("[{name}] ids swiglu {t} T={n_tok} k={k} ids={ids:?}");
                check_experts(&what, &gpu, &e, n_expert, &ids, k, true, Some(&gate), false, &mut rng);
            }
        }
    }
}

#[test]
fn grouped_matmul_matches_cpu() {
    for (name, gpu) in gpus() {
        let mut rng = Rng::new(13);
        for &t in TYPES {
            let (n_expert, rows) = (6usize, 37usize);
            let cols = (t.block_size() as usize).max(32) * 2;
            let e = experts(&gpu, t, n_expert, rows, cols, &mut rng);
            // 40 tokens with every first slot on expert 0: 40 pairs of one expert, more than
            // a tile of either kernel shape (8 or 32 pairs).
            for (n_tok, k, skew) in [(1usize, 2usize, false), (9, 2, false), (40, 4, true)] {
                let ids = expert_ids(&mut rng, n_tok, k, n_expert, skew);
                for x_per_token in [true, false] {
                    let what = format!(
                        "[{name}] grouped {t} {n_expert}x{rows}x{cols} T={n_tok} k={k} per_token={x_per_token}"
                    );
                    check_experts(&what, &gpu, &e, n_expert, &ids, k, x_per_token, None, true, &mut rng);
                }
                let gate = rng.vec(ids.len() * rows, 2.0);
                let what = format!("[{name}] grouped swiglu {t} T={n_tok} k={k}");
                check_experts(&what, &gpu, &e, n_expert, &ids, k, true, Some(&gate), true, &mut rng);
            }
        }
    }
}

#[test]
fn combine_adds_weighted_expert_outputs() {
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
            let mut want = vec![0f64; n_tok * n_embd];
            let mut scale = vec![0f64; n_tok * n_embd];
            for t in 0..n_tok {
                for i in 0..n_embd {
                    let mut acc = x0[t * n_embd + i] as f64;
                    let mut s = acc.abs();
                    for slot in 0..k {
                        let p = weights[t * k + slot] as f64 * y[(t * k + slot) * n_embd + i] as f64;
                        acc += p;
                        s += p.abs();
                    }
                    want[t * n_embd + i] = acc;
                    scale[t * n_embd + i] = s;
                }
            }
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
