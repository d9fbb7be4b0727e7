//! Attention as a layer runs it, against the float64 reference: per-head q/k norms and RoPE,
//! K and V into the cache, then causal attention over the cache (sliding window, grouped-query
//! heads, f16 and f32 caches), for a prompt followed by decode steps and a second batch. The
//! GPU runs `rope_kv` then `attention` on every device configuration; the CPU runs
//! `rms_norm_in_place`, `rope_in_place` and `attention` on every instruction set. Both are given
//! the same packed q|k|v rows and held to the same reference outputs.

mod common;

use common::{Rng, check_close, gpus, reference};
use wllm_engine::Gpu;
use wllm_engine::cpu::Isa;
use wllm_engine::cpu::ops::{Attention, KvLayer, Rope, rms_norm_in_place, rope_in_place};
use wllm_engine::layers::{RopeSpec, RopeTable};
use wllm_engine::ops::attention::{AttentionArgs, attention};
use wllm_engine::ops::rope::{RopeArgs, rope_kv};
use wllm_loaders::model::{RopeLayout, Yarn};

const EPS: f32 = 1e-6;
const BASE: f32 = 10000.0;

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
    /// Positions in the cache.
    ctx: u32,
    /// Tokens per step, run one after the other.
    steps: &'static [u32],
    /// RoPE frequency factors, rising from 1 at the highest frequency towards 8 at the lowest.
    factors: bool,
    /// gpt-oss: YaRN scaling (factor 4 from a 16-position training context) and attention sinks.
    yarn: bool,
    sinks: bool,
    /// Qwen3.5: each q head is followed by its output-gate logits, and the output is multiplied
    /// by their sigmoid (GPU only: the CPU splits the gate out before its attention kernel).
    gated: bool,
}

impl Attn {
    fn nq(&self) -> usize {
        (self.n_head * self.hd) as usize
    }
    fn nk(&self) -> usize {
        (self.n_kv * self.hd) as usize
    }
    /// Floats of the q rows (with their gate logits when gated).
    fn q_width(&self) -> usize {
        if self.gated { 2 * self.nq() } else { self.nq() }
    }
    fn stride(&self) -> usize {
        self.q_width() + 2 * self.nk()
    }
    fn total(&self) -> usize {
        self.steps.iter().sum::<u32>() as usize
    }
    fn scale(&self) -> f32 {
        1.0 / (self.hd as f32).sqrt()
    }
    fn rope(&self) -> RopeSpec {
        let half = self.n_rot as usize / 2;
        RopeSpec {
            n_rot: self.n_rot,
            layout: if self.neox { RopeLayout::Neox } else { RopeLayout::Normal },
            bases: [BASE, BASE],
            freq_scale: if self.yarn { 0.25 } else { 1.0 },
            factors: self.factors.then(|| (0..half).map(|i| 1.0 + 7.0 * (i as f32 / half as f32)).collect()),
            yarn: self.yarn.then_some(Yarn {
                orig_ctx: 16,
                beta_fast: 32.0,
                beta_slow: 1.0,
                attn_factor: 1.0,
            }),
        }
    }
}

/// A 13-token prompt, three decode steps, then a second small batch, without RoPE factors.
/// The other configurations change the fields they name.
const SHORT: Attn = Attn {
    n_head: 9,
    n_kv: 3,
    hd: 64,
    n_rot: 64,
    neox: false,
    qk_norm: false,
    window: 0,
    ctx: 40,
    steps: &[13, 1, 1, 1, 4],
    factors: false,
    yarn: false,
    sinks: false,
    gated: false,
};

const CONFIGS: [Attn; 8] = [
    SHORT,
    Attn { n_head: 4, n_kv: 1, neox: true, qk_norm: true, ..SHORT },
    Attn { n_head: 4, n_kv: 2, hd: 32, n_rot: 16, neox: true, window: 5, ..SHORT },
    Attn { n_head: 2, n_kv: 2, hd: 128, n_rot: 128, qk_norm: true, window: 7, ..SHORT },
    Attn { n_head: 8, n_kv: 4, hd: 256, n_rot: 256, neox: true, qk_norm: true, ..SHORT },
    // Past the CPU kernel's 64-key blocks (its online softmax rescales between them), with a
    // window wider than one block, partial rotation and RoPE factors.
    Attn {
        n_head: 4,
        n_kv: 2,
        n_rot: 32,
        qk_norm: true,
        window: 100,
        ctx: 140,
        steps: &[70, 1, 64, 1],
        factors: true,
        ..SHORT
    },
    // gpt-oss's layer: NeoX YaRN RoPE, sinks, a window shorter than the prompt.
    Attn { n_head: 8, n_kv: 2, neox: true, window: 6, yarn: true, sinks: true, ..SHORT },
    // Qwen3.5's gated attention: q/k norms, partial NeoX rotation, an output gate.
    Attn { n_head: 4, n_kv: 2, hd: 64, n_rot: 16, neox: true, qk_norm: true, gated: true, ..SHORT },
];

/// Random packed q|k|v rows for every token of every step, and q-norm then k-norm weights.
fn inputs(c: &Attn) -> (Vec<f32>, Vec<f32>) {
    inputs_seeded(c, 0)
}

/// As [`inputs`], a different draw per `seed` (another sequence of the same shape).
fn inputs_seeded(c: &Attn, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut rng = Rng::new(11 + c.hd as u64 + c.window as u64 + 1000 * seed);
    let qkv = rng.vec(c.total() * c.stride(), 1.5);
    let norms = rng.vec(2 * c.hd as usize, 1.0);
    (qkv, norms)
}

/// Per-head sink logits of a configuration with sinks, large enough to take a real share.
fn sinks(c: &Attn) -> Option<Vec<f32>> {
    c.sinks.then(|| Rng::new(5).vec(c.n_head as usize, 3.0))
}

/// The reference output rows of every step: q and k normed (with `qk_norm`) and rotated, each
/// query attending to the keys its position sees.
fn reference_steps(c: &Attn, qkv: &[f32], norms: &[f32]) -> Vec<Vec<f64>> {
    let (hd, stride, nq, nk) = (c.hd as usize, c.stride(), c.q_width(), c.nk());
    let q_span = if c.gated { 2 * hd } else { hd };
    let spec = c.rope();
    let norm = |x: &[f32], w: &[f32]| -> Vec<f64> {
        if c.qk_norm { reference::rms_norm(x, w, EPS) } else { x.iter().map(|&v| v as f64).collect() }
    };
    let rotated =
        |x: &[f32], w: &[f32], pos: usize| reference::rope(&norm(x, w), pos, &spec, RopeTable::Global);
    // Indexed [position][kv head].
    let mut keys: Vec<Vec<Vec<f64>>> = Vec::new();
    let mut values: Vec<Vec<Vec<f64>>> = Vec::new();
    let mut out = Vec::new();
    let mut pos0 = 0usize;
    let sinks = sinks(c);
    for &n in c.steps {
        let mut want = Vec::new();
        for t in 0..n as usize {
            let pos = pos0 + t;
            let row = &qkv[pos * stride..(pos + 1) * stride];
            keys.push(
                (0..c.n_kv as usize).map(|g| rotated(&row[nq + g * hd..][..hd], &norms[hd..], pos)).collect(),
            );
            values.push(
                (0..c.n_kv as usize)
                    .map(|g| row[nq + nk + g * hd..][..hd].iter().map(|&v| v as f64).collect())
                    .collect(),
            );
            let seen = reference::visible(pos, c.window as usize);
            for h in 0..c.n_head as usize {
                let q = rotated(&row[h * q_span..][..hd], &norms[..hd], pos);
                let g = h / (c.n_head / c.n_kv) as usize;
                let ks: Vec<&[f64]> = seen.clone().map(|p| &keys[p][g][..]).collect();
                let vs: Vec<&[f64]> = seen.clone().map(|p| &values[p][g][..]).collect();
                let sink = sinks.as_ref().map(|s| s[h] as f64);
                let o = reference::attention_sink(&q, &ks, &vs, c.scale() as f64, sink);
                match c.gated {
                    false => want.extend(o),
                    true => {
                        let gate = &row[h * q_span + hd..][..hd];
                        want.extend(o.iter().zip(gate).map(|(o, &g)| o / (1.0 + (-(g as f64)).exp())));
                    }
                }
            }
        }
        out.push(want);
        pos0 += n as usize;
    }
    out
}

/// The budget of a cache type: f16 rounds K and V to 11 bits.
fn tolerance(kv_f16: bool) -> f64 {
    if kv_f16 { 4e-3 } else { 2e-4 }
}

#[test]
fn gpu_rope_and_attention_prefill_then_decode() {
    for (name, gpu) in gpus() {
        for c in CONFIGS {
            let (qkv, norms) = inputs(&c);
            let want = reference_steps(&c, &qkv, &norms);
            for kv_f16 in [false, gpu.caps.f16] {
                run_gpu_case(name, &gpu, &c, kv_f16, &qkv, &norms, &want);
                if !gpu.caps.f16 {
                    break;
                }
            }
        }
    }
}

fn run_gpu_case(
    name: &str,
    gpu: &Gpu,
    c: &Attn,
    kv_f16: bool,
    qkv_all: &[f32],
    norms: &[f32],
    want: &[Vec<f64>],
) {
    let stride = c.stride();
    let elem = if kv_f16 { 2 } else { 4 };
    let k_cache = gpu.storage("k", (c.n_kv * c.ctx * c.hd) as u64 * elem);
    let v_cache = gpu.storage("v", (c.n_kv * c.ctx * c.hd) as u64 * elem);
    let table = gpu.storage_init("table", bytemuck::cast_slice(&c.rope().table(RopeTable::Global, c.ctx)));
    let nb = gpu.storage_init("qk_norm", bytemuck::cast_slice(norms));
    let max_n = *c.steps.iter().max().unwrap() as usize;
    let qkv = gpu.storage("qkv", (max_n * stride * 4) as u64);
    let out = gpu.storage("out", (max_n * c.nq() * 4) as u64);
    let step = gpu.uniform("step", &[0u32; 4]);
    let positions = gpu.storage("positions", (max_n * 8) as u64);
    let sink_buf = sinks(c).map(|s| gpu.storage_init("sinks", bytemuck::cast_slice(&s)));
    let rope = rope_kv(
        gpu,
        &RopeArgs {
            n_head: c.n_head,
            n_kv: c.n_kv,
            head_dim: c.hd,
            head_dim_v: c.hd,
            n_rot: c.n_rot,
            neox: c.neox,
            ctx: c.ctx,
            eps: EPS,
            kv_f16,
            qkv: &qkv,
            k_cache: &k_cache,
            v_cache: &v_cache,
            table: &table,
            positions: &positions,
            qk_norm: c.qk_norm.then_some(&nb),
            gated: c.gated,
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
            ctx: c.ctx,
            window: c.window,
            scale: c.scale(),
            kv_f16,
            qkv: &qkv,
            k_cache: &k_cache,
            v_cache: &v_cache,
            out: &out,
            step: &step,
            positions: &positions,
            sinks: sink_buf.as_ref(),
            gated: c.gated,
        },
    )
    .unwrap();
    let ops = [rope, attn];
    let mut pos0 = 0u32;
    for (&n, want) in c.steps.iter().zip(want) {
        let rows = &qkv_all[pos0 as usize * stride..(pos0 + n) as usize * stride];
        gpu.queue.write_buffer(&qkv, 0, bytemuck::cast_slice(rows));
        gpu.queue.write_buffer(&step, 0, bytemuck::cast_slice(&[pos0, n, 0, 0]));
        let pos: Vec<[u32; 2]> = (pos0..pos0 + n).map(|p| [p, 0]).collect();
        gpu.queue.write_buffer(&positions, 0, bytemuck::cast_slice(&pos));
        gpu.run(&ops, n).unwrap();
        let got = gpu.read_f32(&out).unwrap();
        let tol = tolerance(kv_f16);
        let what = format!("[{name}] attention {c:?} kv_f16={kv_f16} step pos0={pos0} n={n}");
        check_close(&what, &got[..want.len()], want, &vec![1.0; want.len()], tol, tol);
        pos0 += n;
    }
}

/// Continuous batching: three sequences share one cache (rows `s · ctx ..`), and each step
/// carries step k of every sequence in one dispatch, sequence 1 running one step behind the
/// others (so a step mixes a prompt chunk with decode tokens). Each sequence's rows must match
/// its own reference, as if it ran alone.
#[test]
fn gpu_attention_of_several_sequences_in_one_dispatch() {
    const N_SEQ: u32 = 3;
    for (name, gpu) in gpus() {
        for c in CONFIGS {
            let seqs: Vec<_> = (0..N_SEQ as u64)
                .map(|s| {
                    let (qkv, norms) = inputs_seeded(&c, s);
                    let want = reference_steps(&c, &qkv, &norms);
                    (qkv, norms, want)
                })
                .collect();
            // One weight set per dispatch: the sequences share the q/k norms of sequence 0.
            let norms = &seqs[0].1;
            let wants: Vec<Vec<Vec<f64>>> =
                (0..N_SEQ as u64).map(|s| reference_steps(&c, &seqs[s as usize].0, norms)).collect();
            run_gpu_multi(
                name,
                &gpu,
                &c,
                N_SEQ,
                &seqs.iter().map(|s| &s.0[..]).collect::<Vec<_>>(),
                norms,
                &wants,
            );
        }
    }
}

fn run_gpu_multi(
    name: &str,
    gpu: &Gpu,
    c: &Attn,
    n_seq: u32,
    qkv_all: &[&[f32]],
    norms: &[f32],
    wants: &[Vec<Vec<f64>>],
) {
    let stride = c.stride();
    let kv_f16 = gpu.caps.f16;
    let elem = if kv_f16 { 2 } else { 4 };
    let rows = n_seq * c.ctx;
    let k_cache = gpu.storage("k", (c.n_kv * rows * c.hd) as u64 * elem);
    let v_cache = gpu.storage("v", (c.n_kv * rows * c.hd) as u64 * elem);
    let table = gpu.storage_init("table", bytemuck::cast_slice(&c.rope().table(RopeTable::Global, c.ctx)));
    let nb = gpu.storage_init("qk_norm", bytemuck::cast_slice(norms));
    let max_n = n_seq as usize * *c.steps.iter().max().unwrap() as usize;
    let qkv = gpu.storage("qkv", (max_n * stride * 4) as u64);
    let out = gpu.storage("out", (max_n * c.nq() * 4) as u64);
    let step = gpu.uniform("step", &[0u32; 4]);
    let positions = gpu.storage("positions", (max_n * 8) as u64);
    let sink_buf = sinks(c).map(|s| gpu.storage_init("sinks", bytemuck::cast_slice(&s)));
    let rope = rope_kv(
        gpu,
        &RopeArgs {
            n_head: c.n_head,
            n_kv: c.n_kv,
            head_dim: c.hd,
            head_dim_v: c.hd,
            n_rot: c.n_rot,
            neox: c.neox,
            ctx: rows,
            eps: EPS,
            kv_f16,
            qkv: &qkv,
            k_cache: &k_cache,
            v_cache: &v_cache,
            table: &table,
            positions: &positions,
            qk_norm: c.qk_norm.then_some(&nb),
            gated: c.gated,
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
            ctx: rows,
            window: c.window,
            scale: c.scale(),
            kv_f16,
            qkv: &qkv,
            k_cache: &k_cache,
            v_cache: &v_cache,
            out: &out,
            step: &step,
            positions: &positions,
            sinks: sink_buf.as_ref(),
            gated: c.gated,
        },
    )
    .unwrap();
    let ops = [rope, attn];
    // Sequence s runs its step (k - lag(s)) in dispatch k.
    let lag = |s: u32| u32::from(s == 1);
    let n_steps = c.steps.len() as u32 + 1;
    let starts: Vec<u32> = std::iter::once(0)
        .chain(c.steps.iter().scan(0, |a, &n| {
            *a += n;
            Some(*a)
        }))
        .collect();
    for k in 0..n_steps {
        let (mut rows_in, mut pos, mut parts) = (Vec::new(), Vec::new(), Vec::new());
        for s in 0..n_seq {
            let Some(i) = k.checked_sub(lag(s)).filter(|&i| (i as usize) < c.steps.len()) else { continue };
            let (p0, n) = (starts[i as usize], c.steps[i as usize]);
            rows_in.extend_from_slice(&qkv_all[s as usize][p0 as usize * stride..(p0 + n) as usize * stride]);
            pos.extend((p0..p0 + n).map(|p| [p, s * c.ctx]));
            parts.push((s, i));
        }
        let n = pos.len() as u32;
        gpu.queue.write_buffer(&qkv, 0, bytemuck::cast_slice(&rows_in));
        gpu.queue.write_buffer(&step, 0, bytemuck::cast_slice(&[0, n, 0, 0]));
        gpu.queue.write_buffer(&positions, 0, bytemuck::cast_slice(&pos));
        gpu.run(&ops, n).unwrap();
        let got = gpu.read_f32(&out).unwrap();
        let mut at = 0;
        for (s, i) in parts {
            let want = &wants[s as usize][i as usize];
            let tol = tolerance(kv_f16);
            let what = format!("[{name}] {c:?} sequence {s} of {n_seq}, its step {i} in dispatch {k}");
            check_close(&what, &got[at..at + want.len()], want, &vec![1.0; want.len()], tol, tol);
            at += want.len();
        }
    }
}

/// The CPU's KV cache of one layer, `[kv head][position][dim]`, as f32 or as f16 bits.
enum Cache {
    F32 { k: Vec<f32>, v: Vec<f32> },
    F16 { k: Vec<u16>, v: Vec<u16> },
}

impl Cache {
    fn new(len: usize, f16: bool) -> Cache {
        if f16 {
            Cache::F16 { k: vec![0; len], v: vec![0; len] }
        } else {
            Cache::F32 { k: vec![0.0; len], v: vec![0.0; len] }
        }
    }
    fn store(&mut self, at: usize, k: &[f32], v: &[f32]) {
        let bits = |x: &[f32]| x.iter().map(|&a| half::f16::from_f32(a).to_bits()).collect::<Vec<u16>>();
        match self {
            Cache::F32 { k: kc, v: vc } => {
                kc[at..at + k.len()].copy_from_slice(k);
                vc[at..at + v.len()].copy_from_slice(v);
            }
            Cache::F16 { k: kc, v: vc } => {
                kc[at..at + k.len()].copy_from_slice(&bits(k));
                vc[at..at + v.len()].copy_from_slice(&bits(v));
            }
        }
    }
    fn layer(&self) -> KvLayer<'_> {
        match self {
            Cache::F32 { k, v } => KvLayer::F32 { k, v },
            Cache::F16 { k, v } => KvLayer::F16 { k, v },
        }
    }
}

#[test]
fn cpu_rope_and_attention_prefill_then_decode() {
    for c in CONFIGS.into_iter().filter(|c| !c.gated) {
        let (qkv, norms) = inputs(&c);
        let want = reference_steps(&c, &qkv, &norms);
        let (hd, stride, nq, nk) = (c.hd as usize, c.stride(), c.nq(), c.nk());
        let spec = c.rope();
        let table = spec.table(RopeTable::Global, c.ctx);
        let half = c.n_rot as usize / 2;
        let rope = Rope { n_rot: c.n_rot as usize, layout: spec.layout };
        for isa in Isa::available() {
            for kv_f16 in [false, true] {
                let mut cache = Cache::new(c.n_kv as usize * c.ctx as usize * hd, kv_f16);
                let mut pos0 = 0usize;
                for (&n, want) in c.steps.iter().zip(&want) {
                    // What the CPU layers do between the QKV projection and attention.
                    let mut q = Vec::with_capacity(n as usize * nq);
                    for t in 0..n as usize {
                        let pos = pos0 + t;
                        let row = &qkv[pos * stride..(pos + 1) * stride];
                        let cs = &table[pos * half..(pos + 1) * half];
                        let mut heads = row[..nq + nk].to_vec();
                        for (i, head) in heads.chunks_mut(hd).enumerate() {
                            if c.qk_norm {
                                let w = if i < c.n_head as usize { &norms[..hd] } else { &norms[hd..] };
                                rms_norm_in_place(isa, head, w, EPS).unwrap();
                            }
                            rope_in_place(rope, head, cs).unwrap();
                        }
                        q.extend_from_slice(&heads[..nq]);
                        for g in 0..c.n_kv as usize {
                            let at = (g * c.ctx as usize + pos) * hd;
                            cache.store(at, &heads[nq + g * hd..][..hd], &row[nq + nk + g * hd..][..hd]);
                        }
                    }
                    let a = Attention {
                        n_head: c.n_head as usize,
                        n_kv: c.n_kv as usize,
                        head_dim: hd,
                        head_dim_v: hd,
                        n_ctx: c.ctx as usize,
                        scale: c.scale(),
                        window: c.window as usize,
                        pos0,
                    };
                    let mut got = vec![f32::NAN; n as usize * nq];
                    let sinks = sinks(&c);
                    wllm_engine::cpu::ops::attention(isa, &a, &q, cache.layer(), sinks.as_deref(), &mut got)
                        .unwrap();
                    let tol = tolerance(kv_f16);
                    let what = format!("[{isa}] attention {c:?} kv_f16={kv_f16} step pos0={pos0} n={n}");
                    check_close(&what, &got, want, &vec![1.0; want.len()], tol, tol);
                    pos0 += n as usize;
                }
            }
        }
    }
}

#[test]
fn cpu_attention_refuses_bad_shapes() {
    let isa = Isa::best();
    let a = Attention {
        n_head: 4,
        n_kv: 2,
        head_dim: 8,
        head_dim_v: 8,
        n_ctx: 4,
        scale: 1.0,
        window: 0,
        pos0: 0,
    };
    let (k, v) = (vec![0f32; 2 * 4 * 8], vec![0f32; 2 * 4 * 8]);
    let kv = KvLayer::F32 { k: &k, v: &v };
    let mut out = vec![0f32; 32];
    assert!(wllm_engine::cpu::ops::attention(isa, &a, &[0.0; 32], kv, None, &mut out).is_ok());
    // Heads that do not group, a ragged q, a short output, past the context, a short cache.
    let bad = Attention { n_kv: 3, ..a };
    assert!(wllm_engine::cpu::ops::attention(isa, &bad, &[0.0; 32], kv, None, &mut out).is_err());
    assert!(wllm_engine::cpu::ops::attention(isa, &a, &[0.0; 31], kv, None, &mut out).is_err());
    assert!(wllm_engine::cpu::ops::attention(isa, &a, &[0.0; 32], kv, None, &mut out[..31]).is_err());
    let late = Attention { pos0: 4, ..a };
    assert!(wllm_engine::cpu::ops::attention(isa, &late, &[0.0; 32], kv, None, &mut out).is_err());
    let short = KvLayer::F32 { k: &k[1..], v: &v };
    assert!(wllm_engine::cpu::ops::attention(isa, &a, &[0.0; 32], short, None, &mut out).is_err());
}
