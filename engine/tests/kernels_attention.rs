//! Attention as a layer runs it, against the float64 reference: per-head q/k norms and RoPE,
//! K and V into the cache, then causal attention over the cache (sliding window, grouped-query
//! heads, f32, f16, Q8_0 and Q4_0 caches), for a prompt followed by decode steps and a second batch. The
//! GPU runs `rope_kv` then `attention` on every device configuration; the CPU runs
//! `rms_norm_in_place`, `rope_in_place` and `attention` on every instruction set. Both are given
//! the same packed q|k|v rows and held to the same reference outputs.

mod common;

use common::{Rng, check_close, gpus, reference};
use wllm_engine::cpu::Isa;
use wllm_engine::cpu::ops::{Attention, KvLayer, KvRows, Rope, rms_norm_in_place, rope_in_place};
use wllm_engine::kv_type::{hadamard_in_place, k_rotation, quantize_cpu_row, v_rotation};
use wllm_engine::layers::{RopeSpec, RopeTable};
use wllm_engine::ops::attention::{
    AttentionArgs, attention, attention_split, attention_tiled, partials_bytes,
};
use wllm_engine::ops::hadamard::{Gate, hadamard64};
use wllm_engine::ops::rope::{RopeArgs, rope_kv};
use wllm_engine::wgpu;
use wllm_engine::{CacheRequest, CacheTypes, Gpu, KvType};
use wllm_loaders::GgmlType;
use wllm_loaders::model::{RopeLayout, Yarn};
use wllm_loaders::quant::dequantize;

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
/// query attending to the keys its position sees, K and V held exactly.
fn reference_steps(c: &Attn, qkv: &[f32], norms: &[f32]) -> Vec<Vec<f64>> {
    reference_steps_in(c, qkv, norms, CacheTypes::F32, false)
}

/// What a cache of type `ty` gives back for a row: quantized types through the cache's
/// quantizer (as f32, the way the kernels compute them), float ones exactly (their rounding
/// is in the tolerance). With `rotation`, the row is stored turned by the Walsh-Hadamard
/// transform of that block and turned back when read (what rotating q, or the output, with
/// it amounts to).
fn stored(ty: KvType, row: Vec<f64>, rotation: Option<u32>) -> Vec<f64> {
    let ggml = match ty {
        KvType::Q8_0 => GgmlType::Q8_0,
        KvType::Q4_0 => GgmlType::Q4_0,
        KvType::F32 | KvType::F16 => return row,
    };
    let mut x: Vec<f32> = row.iter().map(|&v| v as f32).collect();
    if let Some(b) = rotation {
        hadamard_in_place(&mut x, b as usize);
    }
    let mut q = vec![0u8; ty.cpu_row_bytes(x.len() as u32) as usize];
    quantize_cpu_row(ty, &x, &mut q);
    let mut back = dequantize(ggml, &q, x.len()).unwrap();
    if let Some(b) = rotation {
        hadamard_in_place(&mut back, b as usize);
    }
    back.into_iter().map(f64::from).collect()
}

/// [`reference_steps`] with K and V as a cache of `cache` holds them, rotated as the GPU's
/// layer steps store a quantized side when `rotated`.
fn reference_steps_in(
    c: &Attn,
    qkv: &[f32],
    norms: &[f32],
    cache: CacheTypes,
    rotated: bool,
) -> Vec<Vec<f64>> {
    let k_rot = k_rotation(cache.k, c.hd).filter(|_| rotated);
    let v_rot = v_rotation(cache.v, c.hd).filter(|_| rotated);
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
                (0..c.n_kv as usize)
                    .map(|g| stored(cache.k, rotated(&row[nq + g * hd..][..hd], &norms[hd..], pos), k_rot))
                    .collect(),
            );
            values.push(
                (0..c.n_kv as usize)
                    .map(|g| {
                        stored(
                            cache.v,
                            row[nq + nk + g * hd..][..hd].iter().map(|&v| v as f64).collect(),
                            v_rot,
                        )
                    })
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

/// The budget of a cache: f16 rounds K and V to 11 bits, which the reference does not model.
/// Quantized sides are in the reference as stored; Q4_0's grid search may still pick another
/// of two near-equal grids for a block when the f32 sums of the GPU and the CPU round apart
/// (one in a few thousand blocks), which moves an output by up to about 1e-3.
fn tolerance(cache: CacheTypes) -> f64 {
    if cache.k == KvType::F16 || cache.v == KvType::F16 {
        4e-3
    } else if cache.k == KvType::Q4_0 || cache.v == KvType::Q4_0 {
        2e-3
    } else {
        2e-4
    }
}

/// Every type on both sides, and two mixes (the f16 ones only where the adapter has f16).
fn cache_types(has_f16: bool) -> Vec<CacheTypes> {
    let same = |t| CacheTypes { k: t, v: t };
    let mut out = vec![same(KvType::F32), same(KvType::Q8_0), same(KvType::Q4_0)];
    out.push(CacheTypes { k: KvType::Q4_0, v: KvType::Q8_0 });
    if has_f16 {
        out.insert(1, same(KvType::F16));
        out.push(CacheTypes { k: KvType::Q8_0, v: KvType::F16 });
    }
    out
}

#[test]
fn gpu_rope_and_attention_prefill_then_decode() {
    for (name, gpu) in gpus() {
        for c in CONFIGS {
            let (qkv, norms) = inputs(&c);
            for cache in cache_types(gpu.caps.f16) {
                let want = reference_steps_in(&c, &qkv, &norms, cache, true);
                run_gpu_case(name, &gpu, &c, cache, &qkv, &norms, &want);
            }
        }
    }
}

fn run_gpu_case(
    name: &str,
    gpu: &Gpu,
    c: &Attn,
    cache: CacheTypes,
    qkv_all: &[f32],
    norms: &[f32],
    want: &[Vec<f64>],
) {
    let stride = c.stride();
    let max_n = *c.steps.iter().max().unwrap();
    let GpuLayer { qkv, out, step, positions, rope, forms } = GpuLayer::new(gpu, c, cache, 1, max_n, norms);
    let mut pos0 = 0u32;
    for (&n, want) in c.steps.iter().zip(want) {
        let rows = &qkv_all[pos0 as usize * stride..(pos0 + n) as usize * stride];
        gpu.queue.write_buffer(&qkv, 0, bytemuck::cast_slice(rows));
        gpu.queue.write_buffer(&step, 0, bytemuck::cast_slice(&[pos0, n, 0, 0]));
        let pos: Vec<[u32; 2]> = (pos0..pos0 + n).map(|p| [p, 0]).collect();
        gpu.queue.write_buffer(&positions, 0, bytemuck::cast_slice(&pos));
        gpu.run(std::slice::from_ref(&rope), n).unwrap();
        // RoPE rotated q in place and wrote the cache; every form reads them as they are.
        for (form, ops) in &forms {
            gpu.run(ops, n).unwrap();
            let got = gpu.read_f32(&out).unwrap();
            let tol = tolerance(cache);
            let what = format!("[{name}] {form} attention {c:?} cache {cache:?} step pos0={pos0} n={n}");
            check_close(&what, &got[..want.len()], want, &vec![1.0; want.len()], tol, tol);
        }
        pos0 += n;
    }
}

/// A layer's attention on the GPU for configuration `c`: the buffers a step writes and reads,
/// RoPE writing the cache (of `n_seq` sequences), and the prompt-capable forms of attention,
/// each with what follows it in a layer: rows walking the cache, and tiles shared by a block of
/// tokens.
struct GpuLayer {
    qkv: wgpu::Buffer,
    out: wgpu::Buffer,
    step: wgpu::Buffer,
    positions: wgpu::Buffer,
    rope: wllm_engine::ops::Op,
    forms: Vec<(&'static str, Vec<wllm_engine::ops::Op>)>,
}

impl GpuLayer {
    fn new(gpu: &Gpu, c: &Attn, cache: CacheTypes, n_seq: u32, max_n: u32, norms: &[f32]) -> GpuLayer {
        let rows = n_seq * c.ctx;
        let k_cache = gpu.storage("k", (c.n_kv * rows) as u64 * cache.k.gpu_row_bytes(c.hd));
        let v_cache = gpu.storage("v", (c.n_kv * rows) as u64 * cache.v.gpu_row_bytes(c.hd));
        let table =
            gpu.storage_init("table", bytemuck::cast_slice(&c.rope().table(RopeTable::Global, c.ctx)));
        let nb = gpu.storage_init("qk_norm", bytemuck::cast_slice(norms));
        let max_n = max_n as usize;
        let qkv = gpu.storage("qkv", (max_n * c.stride() * 4) as u64);
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
                cache,
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
        let args = AttentionArgs {
            n_head: c.n_head,
            n_kv: c.n_kv,
            head_dim: c.hd,
            head_dim_v: c.hd,
            ctx: rows,
            window: c.window,
            scale: c.scale(),
            cache,
            qkv: &qkv,
            k_cache: &k_cache,
            v_cache: &v_cache,
            out: &out,
            step: &step,
            positions: &positions,
            sinks: sink_buf.as_ref(),
            gated: c.gated,
        };
        let forms =
            [("rows", attention(gpu, &args).unwrap()), ("tiled", attention_tiled(gpu, &args).unwrap())]
                .into_iter()
                .map(|(form, op)| (form, with_turn_back(gpu, c, cache, &qkv, &out, vec![op])))
                .collect();
        GpuLayer { qkv, out, step, positions, rope, forms }
    }
}

/// `ops` followed by what a layer runs after attention over a rotated V cache: the output
/// turned back (and gated).
fn with_turn_back(
    gpu: &Gpu,
    c: &Attn,
    cache: CacheTypes,
    qkv: &wgpu::Buffer,
    out: &wgpu::Buffer,
    mut ops: Vec<wllm_engine::ops::Op>,
) -> Vec<wllm_engine::ops::Op> {
    if v_rotation(cache.v, c.hd).is_some() {
        let gate = c.gated.then(|| Gate { qkv, qkv_stride: c.stride() as u32, head_dim: c.hd });
        ops.push(hadamard64(gpu, out, c.n_head * c.hd, gate).unwrap());
    }
    ops
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
    let cache = CacheRequest::default().for_gpu(gpu.caps.f16);
    let max_n = n_seq * *c.steps.iter().max().unwrap();
    let GpuLayer { qkv, out, step, positions, rope, forms } =
        GpuLayer::new(gpu, c, cache, n_seq, max_n, norms);
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
        gpu.run(std::slice::from_ref(&rope), n).unwrap();
        for (form, ops) in &forms {
            gpu.run(ops, n).unwrap();
            let got = gpu.read_f32(&out).unwrap();
            let mut at = 0;
            for &(s, i) in &parts {
                let want = &wants[s as usize][i as usize];
                let tol = tolerance(cache);
                let what =
                    format!("[{name}] {form} {c:?} sequence {s} of {n_seq}, its step {i} in dispatch {k}");
                check_close(&what, &got[at..at + want.len()], want, &vec![1.0; want.len()], tol, tol);
                at += want.len();
            }
        }
    }
}

/// One side of the CPU's KV cache of one layer, `[kv head][position]` rows.
enum Side {
    F32(Vec<f32>),
    F16(Vec<u16>),
    Q8_0(Vec<u8>),
    Q4_0(Vec<u8>),
}

fn q8_len(x: &[f32]) -> usize {
    KvType::Q8_0.cpu_row_bytes(x.len() as u32) as usize
}

fn q4_len(x: &[f32]) -> usize {
    KvType::Q4_0.cpu_row_bytes(x.len() as u32) as usize
}

impl Side {
    fn new(ty: KvType, rows: usize, dim: usize) -> Side {
        let bytes = rows * ty.cpu_row_bytes(dim as u32) as usize;
        match ty {
            KvType::F32 => Side::F32(vec![0.0; rows * dim]),
            KvType::F16 => Side::F16(vec![0; rows * dim]),
            KvType::Q8_0 => Side::Q8_0(vec![0; bytes]),
            KvType::Q4_0 => Side::Q4_0(vec![0; bytes]),
        }
    }
    /// Stores `x` as row `row`.
    fn store(&mut self, row: usize, x: &[f32]) {
        let quantized = |ty: KvType| {
            let mut q = vec![0u8; ty.cpu_row_bytes(x.len() as u32) as usize];
            quantize_cpu_row(ty, x, &mut q);
            q
        };
        match self {
            Side::F32(c) => c[row * x.len()..][..x.len()].copy_from_slice(x),
            Side::F16(c) => {
                for (d, &v) in c[row * x.len()..][..x.len()].iter_mut().zip(x) {
                    *d = half::f16::from_f32(v).to_bits();
                }
            }
            Side::Q8_0(c) => c[row * q8_len(x)..][..q8_len(x)].copy_from_slice(&quantized(KvType::Q8_0)),
            Side::Q4_0(c) => c[row * q4_len(x)..][..q4_len(x)].copy_from_slice(&quantized(KvType::Q4_0)),
        }
    }
    fn rows(&self) -> KvRows<'_> {
        match self {
            Side::F32(c) => KvRows::F32(c),
            Side::F16(c) => KvRows::F16(c),
            Side::Q8_0(c) => KvRows::Q8_0(c),
            Side::Q4_0(c) => KvRows::Q4_0(c),
        }
    }
}

#[test]
fn cpu_rope_and_attention_prefill_then_decode() {
    for c in CONFIGS.into_iter().filter(|c| !c.gated) {
        cpu_steps(c, &cache_types(true));
    }
}

/// The CPU walks the query heads of a KV head together (2 to 8 of them; quantized caches a
/// block converted at a time): groups of 5 and 7, and head sizes that leave a tail past the
/// last whole vector. A 70-token prompt of 128-element heads takes the prompt tiles' scoring
/// compiled for that size (64 is `SHORT`'s, any other the general one).
#[test]
fn cpu_grouped_heads_with_ragged_head_sizes() {
    let plain = [KvType::F32, KvType::F16].map(|t| CacheTypes { k: t, v: t });
    cpu_steps(Attn { n_head: 10, n_kv: 2, hd: 40, n_rot: 40, ..SHORT }, &plain);
    cpu_steps(
        Attn { n_head: 4, n_kv: 2, hd: 128, n_rot: 128, ctx: 140, steps: &[70, 1, 64, 1], ..SHORT },
        &plain,
    );
    let gpt_oss_like = Attn { n_head: 14, n_kv: 2, hd: 24, n_rot: 24, window: 9, sinks: true, ..SHORT };
    cpu_steps(gpt_oss_like, &plain);
    cpu_steps(
        Attn { n_head: 7, n_kv: 1, hd: 36, n_rot: 20, ctx: 140, steps: &[70, 1, 64, 1], ..SHORT },
        &plain,
    );
    let quantized =
        [(KvType::Q8_0, KvType::Q8_0), (KvType::Q4_0, KvType::F16)].map(|(k, v)| CacheTypes { k, v });
    cpu_steps(
        Attn { n_head: 7, n_kv: 1, hd: 32, n_rot: 32, ctx: 140, steps: &[70, 1, 64, 1], ..SHORT },
        &quantized,
    );
}

/// Every step of `c` through the CPU's RoPE and attention, against the float64 reference,
/// with each of `caches`, on every instruction set.
fn cpu_steps(c: Attn, caches: &[CacheTypes]) {
    {
        let (qkv, norms) = inputs(&c);
        let (hd, stride, nq, nk) = (c.hd as usize, c.stride(), c.nq(), c.nk());
        let spec = c.rope();
        let table = spec.table(RopeTable::Global, c.ctx);
        let half = c.n_rot as usize / 2;
        let rope = Rope { n_rot: c.n_rot as usize, layout: spec.layout };
        for isa in Isa::available() {
            for &cache in caches {
                let want = reference_steps_in(&c, &qkv, &norms, cache, false);
                let rows = c.n_kv as usize * c.ctx as usize;
                let (mut k_side, mut v_side) = (Side::new(cache.k, rows, hd), Side::new(cache.v, rows, hd));
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
                            let at = g * c.ctx as usize + pos;
                            k_side.store(at, &heads[nq + g * hd..][..hd]);
                            v_side.store(at, &row[nq + nk + g * hd..][..hd]);
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
                    let kv = KvLayer { k: k_side.rows(), v: v_side.rows() };
                    wllm_engine::cpu::ops::attention(isa, &a, &q, kv, sinks.as_deref(), &mut got).unwrap();
                    let tol = tolerance(cache);
                    let what = format!("[{isa}] attention {c:?} cache {cache:?} step pos0={pos0} n={n}");
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
    let kv = KvLayer { k: KvRows::F32(&k), v: KvRows::F32(&v) };
    let mut out = vec![0f32; 32];
    assert!(wllm_engine::cpu::ops::attention(isa, &a, &[0.0; 32], kv, None, &mut out).is_ok());
    // Heads that do not group, a ragged q, a short output, past the context, a short cache.
    let bad = Attention { n_kv: 3, ..a };
    assert!(wllm_engine::cpu::ops::attention(isa, &bad, &[0.0; 32], kv, None, &mut out).is_err());
    assert!(wllm_engine::cpu::ops::attention(isa, &a, &[0.0; 31], kv, None, &mut out).is_err());
    assert!(wllm_engine::cpu::ops::attention(isa, &a, &[0.0; 32], kv, None, &mut out[..31]).is_err());
    let late = Attention { pos0: 4, ..a };
    assert!(wllm_engine::cpu::ops::attention(isa, &late, &[0.0; 32], kv, None, &mut out).is_err());
    let short = KvLayer { k: KvRows::F32(&k[8..]), v: KvRows::F32(&v) };
    assert!(wllm_engine::cpu::ops::attention(isa, &a, &[0.0; 32], short, None, &mut out).is_err());
    // A quantized cache needs heads of whole 32-element blocks, and whole rows.
    let blocks = vec![0u8; 2 * 4 * 34];
    let q8 = KvLayer { k: KvRows::Q8_0(&blocks), v: KvRows::F32(&v) };
    assert!(wllm_engine::cpu::ops::attention(isa, &a, &[0.0; 32], q8, None, &mut out).is_err());
    let wide = Attention { n_head: 2, n_kv: 1, head_dim: 32, head_dim_v: 32, n_ctx: 2, ..a };
    let (kq, vq) = (vec![0u8; 2 * 34], vec![0u8; 2 * 18]);
    let ok = KvLayer { k: KvRows::Q8_0(&kq), v: KvRows::Q4_0(&vq) };
    let mut out64 = vec![0f32; 64];
    assert!(wllm_engine::cpu::ops::attention(isa, &wide, &[0.0; 64], ok, None, &mut out64).is_ok());
    let short_q = KvLayer { k: KvRows::Q8_0(&kq[..67]), v: KvRows::Q4_0(&vq) };
    assert!(wllm_engine::cpu::ops::attention(isa, &wide, &[0.0; 64], short_q, None, &mut out64).is_err());
}

/// A random cache of `rows` positions per kv head, the query rows of the last `n_tokens`
/// positions, and per-head sinks.
struct DeepCase {
    n_head: u32,
    n_kv: u32,
    hd: u32,
    rows: u32,
    n_tokens: u32,
    window: u32,
    keys: Vec<f32>,
    values: Vec<f32>,
    /// Packed rows as the attention kernels read them (q, then unused k|v slots).
    qkv: Vec<f32>,
    sinks: Option<Vec<f32>>,
}

impl DeepCase {
    fn new(rows: u32, n_tokens: u32, window: u32, with_sinks: bool) -> DeepCase {
        let (n_head, n_kv, hd) = (8u32, 2u32, 64u32);
        let mut rng = Rng::new(rows as u64 * 31 + n_tokens as u64 + window as u64);
        let cells = (n_kv * rows * hd) as usize;
        let keys = rng.vec(cells, 1.0);
        let values = rng.vec(cells, 1.0);
        let stride = rope_qkv_stride(n_head, n_kv, hd);
        let mut qkv = vec![0f32; stride * n_tokens as usize];
        for row in qkv.chunks_exact_mut(stride) {
            row[..(n_head * hd) as usize].copy_from_slice(&rng.vec((n_head * hd) as usize, 1.0));
        }
        let sinks = with_sinks.then(|| rng.vec(n_head as usize, 2.0));
        DeepCase { n_head, n_kv, hd, rows, n_tokens, window, keys, values, qkv, sinks }
    }

    fn scale(&self) -> f32 {
        1.0 / (self.hd as f32).sqrt()
    }

    /// Positions of the query rows: the last `n_tokens` of the cache.
    fn positions(&self) -> Vec<[u32; 2]> {
        (self.rows - self.n_tokens..self.rows).map(|p| [p, 0]).collect()
    }

    /// The float64 outputs of every (token, head) row.
    fn reference(&self) -> Vec<f64> {
        let hd = self.hd as usize;
        let stride = rope_qkv_stride(self.n_head, self.n_kv, self.hd);
        let mut want = Vec::new();
        for (t, [pos, _]) in self.positions().into_iter().enumerate() {
            let seen = reference::visible(pos as usize, self.window as usize);
            for h in 0..self.n_head as usize {
                let g = h / (self.n_head / self.n_kv) as usize;
                let row = |x: &[f32], p: usize| -> Vec<f64> {
                    x[(g * self.rows as usize + p) * hd..][..hd].iter().map(|&v| v as f64).collect()
                };
                let ks: Vec<Vec<f64>> = seen.clone().map(|p| row(&self.keys, p)).collect();
                let vs: Vec<Vec<f64>> = seen.clone().map(|p| row(&self.values, p)).collect();
                let qh: Vec<f64> = self.qkv[t * stride + h * hd..][..hd].iter().map(|&v| v as f64).collect();
                let ks: Vec<&[f64]> = ks.iter().map(|k| &k[..]).collect();
                let vs: Vec<&[f64]> = vs.iter().map(|v| &v[..]).collect();
                let sink = self.sinks.as_ref().map(|s| s[h] as f64);
                want.extend(reference::attention_sink(&qh, &ks, &vs, self.scale() as f64, sink));
            }
        }
        want
    }

    /// Runs the forms `make` builds over this case uploaded with a `ty` cache, and checks each
    /// against `want`.
    fn check(
        &self,
        name: &str,
        gpu: &Gpu,
        ty: KvType,
        want: &[f64],
        make: impl Fn(&AttentionArgs<'_>) -> Vec<(String, Vec<wllm_engine::ops::Op>)>,
    ) {
        let upload = |x: &[f32]| match ty {
            KvType::F16 => {
                let h: Vec<u16> = x.iter().map(|&v| half::f16::from_f32(v).to_bits()).collect();
                gpu.storage_init("cache", bytemuck::cast_slice(&h))
            }
            _ => gpu.storage_init("cache", bytemuck::cast_slice(x)),
        };
        let (k_cache, v_cache) = (upload(&self.keys), upload(&self.values));
        let qkv = gpu.storage_init("qkv", bytemuck::cast_slice(&self.qkv));
        let out = gpu.storage("out", (self.n_tokens * self.n_head * self.hd) as u64 * 4);
        let first = self.rows - self.n_tokens;
        let step = gpu.uniform("step", &[first, self.n_tokens, 0, 0]);
        let positions = gpu.storage_init("positions", bytemuck::cast_slice(&self.positions()));
        let sinks = self.sinks.as_ref().map(|s| gpu.storage_init("sinks", bytemuck::cast_slice(s)));
        let args = AttentionArgs {
            n_head: self.n_head,
            n_kv: self.n_kv,
            head_dim: self.hd,
            head_dim_v: self.hd,
            ctx: self.rows,
            window: self.window,
            scale: self.scale(),
            cache: CacheTypes { k: ty, v: ty },
            qkv: &qkv,
            k_cache: &k_cache,
            v_cache: &v_cache,
            out: &out,
            step: &step,
            positions: &positions,
            sinks: sinks.as_ref(),
            gated: false,
        };
        let tol = if ty == KvType::F16 { 4e-3 } else { 2e-4 };
        for (form, ops) in make(&args) {
            gpu.run(&ops, self.n_tokens).unwrap();
            let got = gpu.read_f32(&out).unwrap();
            let what = format!(
                "[{name}] {form}: {} tokens at depth {} (window {}, sinks {}, {ty})",
                self.n_tokens,
                first,
                self.window,
                self.sinks.is_some()
            );
            check_close(&what, &got, want, &vec![1.0; want.len()], tol, tol);
        }
    }
}

/// The cache types the deep cases run with: f32, and f16 where the adapter has it.
fn deep_cache_types(gpu: &Gpu) -> Vec<KvType> {
    if gpu.caps.f16 { vec![KvType::F32, KvType::F16] } else { vec![KvType::F32] }
}

/// One-token steps at depths 1, 4097 and 32768 over a cache of random keys and values, the
/// split (flash-decoding) passes and the whole kernel against the float64 reference: grouped
/// heads, a sliding window, sinks, f32 and f16 caches, and more splits than a shallow step has
/// key groups.
#[test]
fn gpu_decode_attention_split_along_the_keys_at_depth() {
    let cases: [(u32, u32, bool, u32); 5] = [
        (1, 0, false, 8),
        (4097, 0, true, 4),
        (4097, 300, false, 32),
        (32768, 0, false, 32),
        (32768, 5000, true, 7),
    ];
    for (name, gpu) in gpus() {
        for (depth, window, with_sinks, splits) in cases {
            let case = DeepCase::new(depth, 1, window, with_sinks);
            let want = case.reference();
            for ty in deep_cache_types(&gpu) {
                case.check(name, &gpu, ty, &want, |args| {
                    let partials = gpu.storage("partials", partials_bytes(case.n_head, case.hd, splits, 1));
                    let split = attention_split(&gpu, args, splits, &partials, 1).unwrap().to_vec();
                    vec![
                        (format!("{splits} splits"), split),
                        ("whole".into(), vec![attention(&gpu, args).unwrap()]),
                    ]
                });
            }
        }
    }
}

/// The prompt chunks at depth both backends' prompt kernels are checked on: (cached positions,
/// chunk tokens, window, sinks). Chunks end inside a block of 16 and one is shorter than a
/// CPU tile; windows are shorter and longer than a chunk.
const PROMPT_CASES: [(u32, u32, u32, bool); 7] = [
    (0, 37, 0, false),
    (0, 16, 5, true),
    (4097, 20, 0, true),
    (4097, 33, 300, false),
    (32768, 3, 0, false),
    (32768, 17, 0, false),
    (32768, 40, 5000, true),
];

/// Prompt chunks after 0, 4097 and 32768 cached positions, the tiled kernel (keys staged in
/// workgroup memory, shared by 16 tokens) and the row walk against the float64 reference:
/// chunks that end inside a block of 16, windows shorter and longer than a chunk, sinks.
#[test]
fn gpu_prompt_attention_tiled_at_depth() {
    for (name, gpu) in gpus() {
        for (depth, n_tokens, window, with_sinks) in PROMPT_CASES {
            let case = DeepCase::new(depth + n_tokens, n_tokens, window, with_sinks);
            let want = case.reference();
            for ty in deep_cache_types(&gpu) {
                case.check(name, &gpu, ty, &want, |args| {
                    vec![
                        ("tiled".into(), vec![attention_tiled(&gpu, args).unwrap()]),
                        ("rows".into(), vec![attention(&gpu, args).unwrap()]),
                    ]
                });
            }
        }
    }
}

fn rope_qkv_stride(n_head: u32, n_kv: u32, hd: u32) -> usize {
    wllm_engine::ops::rope::qkv_stride(n_head, n_kv, hd, hd, false) as usize
}

/// One-token steps deep in the cache: with two or more threads the CPU splits each KV
/// head's walk along the keys and merges the parts (windows, sinks).
const DECODE_CASES: [(u32, u32, u32, bool); 4] =
    [(4097, 1, 0, true), (4097, 1, 300, false), (32768, 1, 0, false), (32768, 1, 5000, true)];

/// Prompt chunks after 0, 4097 and 32768 cached positions through the CPU kernel (its
/// tiles of query rows walking the keys together), and single decode tokens there
/// (walks split along the keys), against the float64 reference on every instruction set:
/// chunks that end inside a tile, windows shorter and longer than a chunk, sinks, f32 and f16
/// caches.
#[test]
fn cpu_prompt_attention_tiled_at_depth() {
    for (depth, n_tokens, window, with_sinks) in PROMPT_CASES.into_iter().chain(DECODE_CASES) {
        let case = DeepCase::new(depth + n_tokens, n_tokens, window, with_sinks);
        let want = case.reference();
        let (hd, nq) = (case.hd as usize, (case.n_head * case.hd) as usize);
        let stride = rope_qkv_stride(case.n_head, case.n_kv, case.hd);
        let q: Vec<f32> = case.qkv.chunks_exact(stride).flat_map(|row| row[..nq].iter().copied()).collect();
        for ty in [KvType::F32, KvType::F16] {
            let rows = (case.n_kv * case.rows) as usize;
            let (mut k_side, mut v_side) = (Side::new(ty, rows, hd), Side::new(ty, rows, hd));
            for row in 0..rows {
                k_side.store(row, &case.keys[row * hd..][..hd]);
                v_side.store(row, &case.values[row * hd..][..hd]);
            }
            let a = Attention {
                n_head: case.n_head as usize,
                n_kv: case.n_kv as usize,
                head_dim: hd,
                head_dim_v: hd,
                n_ctx: case.rows as usize,
                scale: case.scale(),
                window: window as usize,
                pos0: depth as usize,
            };
            let kv = KvLayer { k: k_side.rows(), v: v_side.rows() };
            let tol = if ty == KvType::F16 { 4e-3 } else { 2e-4 };
            for isa in Isa::available() {
                let mut got = vec![f32::NAN; n_tokens as usize * nq];
                wllm_engine::cpu::ops::attention(isa, &a, &q, kv, case.sinks.as_deref(), &mut got).unwrap();
                let what = format!(
                    "[{isa}] {n_tokens} tokens at depth {depth} (window {window}, sinks {with_sinks}, {ty})"
                );
                check_close(&what, &got, &want, &vec![1.0; want.len()], tol, tol);
            }
        }
    }
}
