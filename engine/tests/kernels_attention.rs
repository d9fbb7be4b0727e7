//! RMSNorm (plain, Gemma post-norm, last row only), RoPE with q/k norms into the KV cache, fused
//! attention (causal, sliding window, grouped-query heads, f16 and f32 caches, prefill then
//! decode), argmax and the element-wise ops, each against a float64 CPU reference on every
//! device configuration, with the failing index in the message.

mod common;

use common::{Rng, check_close, gpus};
use wllm_engine::Gpu;
use wllm_engine::layers::{RopeSpec, RopeTable};
use wllm_engine::ops::argmax::argmax;
use wllm_engine::ops::attention::{AttentionArgs, attention};
use wllm_engine::ops::elementwise::{ElementwiseKey, elementwise, softcap};
use wllm_engine::ops::norm::{NormArgs, rms_norm};
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

#[test]
fn rms_norm_plain_post_and_last_row() {
    for (name, gpu) in gpus() {
        let mut rng = Rng::new(3);
        for (n, rows) in [(576usize, 5usize), (640, 1), (100, 3), (2048, 2)] {
            let eps = 1e-6;
            let x = rng.vec(n * rows, 2.0);
            let a = rng.vec(n * rows, 3.0);
            let w = rng.vec(n, 1.0);
            let wp = rng.vec(n, 1.0);
            for (post, last) in [(false, false), (true, false), (false, true), (true, true)] {
                let xb = f32s(&gpu, "x", &x);
                let ab = f32s(&gpu, "a", &a);
                let wb = f32s(&gpu, "w", &w);
                let wpb = f32s(&gpu, "wp", &wp);
                let out = gpu.storage("out", (n * rows * 4) as u64);
                let step = gpu.uniform("step", &[0u32, rows as u32, 0, 0]);
                let op = rms_norm(
                    &gpu,
                    &NormArgs {
                        n: n as u32,
                        eps,
                        x: &xb,
                        weight: &wb,
                        out: &out,
                        post: post.then_some((&ab, &wpb)),
                        last_row_of: last.then_some(&step),
                    },
                )
                .unwrap();
                gpu.run(&[op], rows as u32).unwrap();
                // The residual after the post-norm add, then its norm.
                let mut resid: Vec<f32> = x.clone();
                if post {
                    for r in 0..rows {
                        let pa = rms_ref(&a[r * n..(r + 1) * n], &wp, eps);
                        for i in 0..n {
                            resid[r * n + i] = (x[r * n + i] as f64 + pa[i]) as f32;
                        }
                    }
                }
                let rows_out: Vec<usize> = if last { vec![rows - 1] } else { (0..rows).collect() };
                let mut want = Vec::new();
                for &r in &rows_out {
                    want.extend(rms_ref(&resid[r * n..(r + 1) * n], &w, eps));
                }
                let got = gpu.read_f32(&out).unwrap();
                let scale: Vec<f64> = want.iter().map(|v| v.abs().max(1.0)).collect();
                let what = format!("{name} rms_norm n={n} rows={rows} post={post} last={last}");
                check_close(&what, &got[..want.len()], &want, &scale, 1e-4, 1e-5);
                if post {
                    // Only the rows it normalises get their residual updated (the head needs
                    // no other).
                    let got_x: Vec<f32> = rows_out
                        .iter()
                        .flat_map(|&r| gpu.read_f32(&xb).unwrap()[r * n..(r + 1) * n].to_vec())
                        .collect();
                    let want_x: Vec<f64> = rows_out
                        .iter()
                        .flat_map(|&r| resid[r * n..(r + 1) * n].iter().map(|&v| v as f64))
                        .collect();
                    let scale: Vec<f64> = want_x.iter().map(|v| v.abs().max(1.0)).collect();
                    check_close(&format!("{what} residual"), &got_x, &want_x, &scale, 1e-5, 1e-5);
                }
            }
        }
    }
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

#[test]
fn argmax_finds_the_first_largest_logit() {
    for (name, gpu) in gpus() {
        let mut rng = Rng::new(5);
        for n in [1usize, 7, 4096, 4097, 262_144 + 7] {
            let mut v = rng.vec(n, 10.0);
            let at = rng.below(n as u64) as usize;
            v[at] = 50.0;
            let logits = f32s(&gpu, "logits", &v);
            let tokens = gpu.storage("tokens", 16);
            let ops = argmax(&gpu, &logits, 0, n as u32, &tokens, 1).unwrap();
            gpu.run(&ops.ops, 1).unwrap();
            let got = gpu.read_f32(&tokens).unwrap()[1].to_bits() as usize;
            assert_eq!(got, at, "{name}: argmax of {n} logits");
        }
    }
}

/// A name, the values put into random logits, and the marker the kernel must write.
type NonFiniteCase = (&'static str, Vec<(usize, f32)>, u32);

/// A row holding a NaN or an infinity yields the kernel's markers, never a token id: NaN
/// compares false, so without them a NaN row chose token 0 or 0xFFFFFFFF silently.
#[test]
fn argmax_marks_non_finite_rows() {
    use wllm_engine::finite::{ARGMAX_INF, ARGMAX_NAN};
    for (name, gpu) in gpus() {
        let mut rng = Rng::new(6);
        for n in [1usize, 7, 4097, 49_152] {
            let cases: [NonFiniteCase; 5] = [
                ("all NaN", (0..n).map(|i| (i, f32::NAN)).collect(), ARGMAX_NAN),
                ("one NaN", vec![(n - 1, f32::NAN)], ARGMAX_NAN),
                ("+inf", vec![(n / 2, f32::INFINITY)], ARGMAX_INF),
                ("-inf", vec![(0, f32::NEG_INFINITY)], ARGMAX_INF),
                ("NaN and inf", vec![(0, f32::INFINITY), (n - 1, f32::NAN)], ARGMAX_NAN),
            ];
            for (what, put, want) in cases {
                let mut v = rng.vec(n, 10.0);
                for (i, x) in put {
                    v[i] = x;
                }
                let logits = f32s(&gpu, "logits", &v);
                let tokens = gpu.storage("tokens", 16);
                let ops = argmax(&gpu, &logits, 0, n as u32, &tokens, 1).unwrap();
                gpu.run(&ops.ops, 1).unwrap();
                let got = gpu.read_f32(&tokens).unwrap()[1].to_bits();
                assert_eq!(got, want, "{name}: {what} in {n} logits");
            }
        }
    }
}

#[test]
fn elementwise_add_and_glu() {
    for (name, gpu) in gpus() {
        let mut rng = Rng::new(9);
        let n = 1000usize;
        let x = rng.vec(n, 4.0);
        let y = rng.vec(n, 2.0);
        for op in [ElementwiseKey::Add, ElementwiseKey::GluSilu, ElementwiseKey::GluGelu] {
            let xb = f32s(&gpu, "x", &x);
            let yb = f32s(&gpu, "y", &y);
            // Only the first n - 3 elements: the tail must stay as it was.
            let m = n - 3;
            let o = elementwise(&gpu, op, &xb, &yb, m as u32).unwrap();
            gpu.run(&[o], 1).unwrap();
            let want: Vec<f64> = (0..n)
                .map(|i| {
                    let (a, b) = (x[i] as f64, y[i] as f64);
                    if i >= m {
                        return b;
                    }
                    match op {
                        ElementwiseKey::Add => a + b,
                        ElementwiseKey::GluSilu => a / (1.0 + (-a).exp()) * b,
                        ElementwiseKey::GluGelu => {
                            let g = 0.5
                                * a
                                * (1.0 + (0.797_884_560_802_865_4 * (a + 0.044715 * a * a * a)).tanh());
                            g * b
                        }
                        ElementwiseKey::Softcap => unreachable!("softcap has its own test"),
                    }
                })
                .collect();
            let got = gpu.read_f32(&yb).unwrap();
            let scale: Vec<f64> = want.iter().map(|v| v.abs().max(1.0)).collect();
            check_close(&format!("{name} {op:?}"), &got, &want, &scale, 1e-5, 1e-6);
        }
    }
}

#[test]
fn softcap_squashes_logits_into_the_cap() {
    for (name, gpu) in gpus() {
        let mut rng = Rng::new(10);
        let n = 777usize;
        // Far past the cap on both sides, and a few exactly at zero and at huge magnitudes.
        let mut y = rng.vec(n, 120.0);
        y[0] = 0.0;
        y[1] = 1e30;
        y[2] = -1e30;
        for cap in [8.0f32, 30.0] {
            let yb = f32s(&gpu, "logits", &y);
            let m = n - 5;
            let o = softcap(&gpu, &yb, cap, m as u32).unwrap();
            gpu.run(&[o], 1).unwrap();
            let want: Vec<f64> = (0..n)
                .map(|i| if i >= m { y[i] as f64 } else { cap as f64 * (y[i] as f64 / cap as f64).tanh() })
                .collect();
            let got = gpu.read_f32(&yb).unwrap();
            let scale: Vec<f64> = want.iter().map(|v| v.abs().max(1.0)).collect();
            check_close(&format!("{name} softcap {cap}"), &got, &want, &scale, 1e-5, 1e-6);
        }
    }
}
