//! RoPE with q/k norms into the KV cache and fused attention (causal, sliding window,
//! grouped-query heads, f16 and f32 caches, prefill then decode) against a float64 CPU
//! reference on every device configuration, with the failing index in the message.

mod common;

use common::{Rng, check_close, gpus};
use wllm_engine::Gpu;
use wllm_engine::layers::{RopeSpec, RopeTable};
use wllm_engine::ops::attention::{AttentionArgs, attention};
use wllm_engine::ops::rope::{RopeArgs, rope_kv};
use wllm_loaders::model::RopeLayout;

fn f32s(gpu: &Gpu, label: &str, v: &[f32]) -> wgpu::Buffer {
    gpu.storage_init(label, bytemuck::cast_slice(v))
}

fn rms_ref(x: &[f32], w: &[f32], eps: f32) -> Vec<f64> {
    let ss: f64 = x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / x.len() as f64;
    let r = 1.0 / (ss + eps as f64).sqrt();
    x.iter().zip(w).map(|(&v, &w)| v as f64 * r * w as f64).collect()
}

/// One attention configuration.
#[derive(Clone, Copy, Debug)]
struct Attn {
    n_head: u32,
    n_kv: u32,
    hd: u32,
    n_rot: u32,
    neox: bool,
    qk_norm: bool,
    window: u32,
}

/// q/k norm and RoPE of one head at `pos`, as the model defines them.
#[allow(clippy::too_many_arguments)]
fn rope_ref(x: &[f32], pos: u32, c: &Attn, base: f32, norm: Option<&[f32]>, eps: f32) -> Vec<f64> {
    let mut v: Vec<f64> = match norm {
        Some(w) => rms_ref(x, w, eps),
        None => x.iter().map(|&a| a as f64).collect(),
    };
    let half = (c.n_rot / 2) as usize;
    for i in 0..half {
        let theta = pos as f64 * (base as f64).powf(-2.0 * i as f64 / c.n_rot as f64);
        let (s, co) = theta.sin_cos();
        let (a, b) = if c.neox { (i, i + half) } else { (2 * i, 2 * i + 1) };
        let (x0, x1) = (v[a], v[b]);
        v[a] = x0 * co - x1 * s;
        v[b] = x0 * s + x1 * co;
    }
    v
}

#[test]
fn rope_and_attention_prefill_then_decode() {
    let configs = [
        Attn { n_head: 9, n_kv: 3, hd: 64, n_rot: 64, neox: false, qk_norm: false, window: 0 },
        Attn { n_head: 4, n_kv: 1, hd: 64, n_rot: 64, neox: true, qk_norm: true, window: 0 },
        Attn { n_head: 4, n_kv: 2, hd: 32, n_rot: 16, neox: true, qk_norm: false, window: 5 },
        Attn { n_head: 2, n_kv: 2, hd: 128, n_rot: 128, neox: false, qk_norm: true, window: 7 },
        Attn { n_head: 8, n_kv: 4, hd: 256, n_rot: 256, neox: true, qk_norm: true, window: 0 },
    ];
    for (name, gpu) in gpus() {
        for c in configs {
            for kv_f16 in [false, gpu.caps.f16] {
                run_attention_case(name, &gpu, c, kv_f16);
                if !gpu.caps.f16 {
                    break;
                }
            }
        }
    }
}

fn run_attention_case(name: &str, gpu: &Gpu, c: Attn, kv_f16: bool) {
    let mut rng = Rng::new(11 + c.hd as u64 + c.window as u64);
    let ctx = 40u32;
    let base = 10000.0f32;
    let eps = 1e-6f32;
    let scale = 1.0 / (c.hd as f32).sqrt();
    let (nq, nk) = ((c.n_head * c.hd) as usize, (c.n_kv * c.hd) as usize);
    let stride = nq + 2 * nk;
    let hd = c.hd as usize;
    // Prefill 13 tokens, then decode 3, then a second small batch of 4.
    let steps = [13u32, 1, 1, 1, 4];
    let total: u32 = steps.iter().sum();
    let qkv_all = rng.vec(total as usize * stride, 1.5);
    let norms = rng.vec(2 * hd, 1.0);
    let elem = if kv_f16 { 2 } else { 4 };
    let k_cache = gpu.storage("k", (c.n_kv * ctx * c.hd) as u64 * elem);
    let v_cache = gpu.storage("v", (c.n_kv * ctx * c.hd) as u64 * elem);
    let spec = RopeSpec {
        n_rot: c.n_rot,
        layout: RopeLayout::Neox,
        bases: [base, base],
        freq_scale: 1.0,
        factors: None,
    };
    let table = f32s(gpu, "table", bytemuck::cast_slice(&spec.table(RopeTable::Global, ctx)));
    let nb = f32s(gpu, "qk_norm", &norms);
    let max_n = *steps.iter().max().unwrap() as usize;
    let qkv = gpu.storage("qkv", (max_n * stride * 4) as u64);
    let out = gpu.storage("out", (max_n * nq * 4) as u64);
    let step = gpu.uniform("step", &[0u32; 4]);
    let rope = rope_kv(
        gpu,
        &RopeArgs {
            n_head: c.n_head,
            n_kv: c.n_kv,
            head_dim: c.hd,
            head_dim_v: c.hd,
            n_rot: c.n_rot,
            neox: c.neox,
            ctx,
            eps,
            kv_f16,
            qkv: &qkv,
            k_cache: &k_cache,
            v_cache: &v_cache,
            table: &table,
            step: &step,
            qk_norm: c.qk_norm.then_some(&nb),
        },
    )
    .unwrap();
    let attn = attention(
        gpu,
        &AttentionArgs {
            n_head: c.n_head,
            n_kv: c.n_kv,
            head_dim: c.hd,
            head_dim_v: c.hd,
            ctx,
            window: c.window,
            scale,
            kv_f16,
            qkv: &qkv,
            k_cache: &k_cache,
            v_cache: &v_cache,
            out: &out,
            step: &step,
        },
    )
    .unwrap();
    let ops = [rope, attn];
    // Reference K (after norm and RoPE) and V per position and kv head.
    let mut ks: Vec<Vec<f64>> = Vec::new();
    let mut vs: Vec<Vec<f64>> = Vec::new();
    let mut pos0 = 0u32;
    for &n in &steps {
        let rows = &qkv_all[pos0 as usize * stride..(pos0 + n) as usize * stride];
        gpu.queue.write_buffer(&qkv, 0, bytemuck::cast_slice(rows));
        gpu.queue.write_buffer(&step, 0, bytemuck::cast_slice(&[pos0, n, 0, 0]));
        gpu.run(&ops, n).unwrap();
        let got = gpu.read_f32(&out).unwrap();
        let mut want = Vec::new();
        for t in 0..n as usize {
            let pos = pos0 + t as u32;
            let row = &rows[t * stride..(t + 1) * stride];
            for g in 0..c.n_kv as usize {
                let k = &row[nq + g * hd..nq + (g + 1) * hd];
                ks.push(rope_ref(k, pos, &c, base, c.qk_norm.then_some(&norms[hd..]), eps));
                let v = &row[nq + nk + g * hd..nq + nk + (g + 1) * hd];
                vs.push(v.iter().map(|&a| a as f64).collect());
            }
            let lo = if c.window > 0 && pos + 1 > c.window { pos + 1 - c.window } else { 0 };
            for h in 0..c.n_head as usize {
                let q = rope_ref(
                    &row[h * hd..(h + 1) * hd],
                    pos,
                    &c,
                    base,
                    c.qk_norm.then_some(&norms[..hd]),
                    eps,
                );
                let g = h / (c.n_head / c.n_kv) as usize;
                let idx = |p: u32| p as usize * c.n_kv as usize + g;
                let scores: Vec<f64> = (lo..=pos)
                    .map(|p| q.iter().zip(&ks[idx(p)]).map(|(a, b)| a * b).sum::<f64>() * scale as f64)
                    .collect();
                let m = scores.iter().cloned().fold(f64::MIN, f64::max);
                let w: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                let z: f64 = w.iter().sum();
                let mut o = vec![0f64; hd];
                for (p, wi) in (lo..=pos).zip(&w) {
                    for (acc, v) in o.iter_mut().zip(&vs[idx(p)]) {
                        *acc += wi * v;
                    }
                }
                want.extend(o.iter().map(|v| v / z));
            }
        }
        let tol = if kv_f16 { 4e-3 } else { 2e-4 };
        let scale_v: Vec<f64> = vec![1.0; want.len()];
        let what = format!("{name} attention {c:?} kv_f16={kv_f16} step pos0={pos0} n={n}");
        check_close(&what, &got[..want.len()], &want, &scale_v, tol, tol);
        pos0 += n;
    }
}
