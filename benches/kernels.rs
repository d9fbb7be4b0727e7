//! Kernel throughput on whatever adapter wllm picks (`WLLM_BACKEND` to choose one):
//! linear layers per weight type as matrix-vector products (GB/s of weight bytes) and as
//! 64-token matrix products (FLOP/s, shown by criterion as elem/s), decode attention (GB/s of
//! KV cache read), prompt attention by rows and by tiles (query-key pairs/s), MoE routing (tokens/s), the Gated DeltaNet's elementwise ops (GB/s of the
//! bytes they move), and the device's buffer-copy bandwidth as the
//! yardstick for the GB/s figures, with the load ceiling of a row-per-lane kernel (experiment 1)
//! between the two.
//!
//! Sample counts are small so `cargo bench` finishes in minutes on a software adapter.

use std::sync::Arc;
use std::time::{Duration, Instant};
use wllm::engine::tensor::GPU_TYPES;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use wllm::engine::ops::Op;
use wllm::engine::ops::attention::{AttentionArgs, attention, attention_tiled};
use wllm::engine::ops::delta_net::{ConvArgs, GateArgs, conv, gated_norm, qk_norm_gates};
use wllm::engine::ops::linear::{Epilogue, LinearIo, linear};
use wllm::engine::ops::moe::{MoeBuffers, MoeShape, plan, route};
use wllm::engine::tensor::GpuWeight;
use wllm::engine::{CacheTypes, DeviceOptions, Gpu, KvType};
use wllm::loaders::GgmlType;
use wllm::loaders::model::{DeltaNetConfig, KeyHeadMap, TensorBytes, TensorMeta};

/// Dispatches recorded into one pass per submission: enough to hide submission overhead,
/// few enough that one submission stays short.
const REPS_PER_SUBMIT: u64 = 16;

fn gpu() -> Option<Arc<Gpu>> {
    match Gpu::new(&DeviceOptions::default()) {
        Ok(g) => Some(g),
        Err(e) => {
            eprintln!("no GPU adapter, kernel benches skipped: {e}");
            None
        }
    }
}

/// Calls `submit(reps)` until `iters` repetitions have run, at most REPS_PER_SUBMIT at a time,
/// and returns the wall time (each call waits for its submission).
fn time_submits(iters: u64, mut submit: impl FnMut(u64)) -> Duration {
    let start = Instant::now();
    let mut left = iters;
    while left > 0 {
        let reps = left.min(REPS_PER_SUBMIT);
        submit(reps);
        left -= reps;
    }
    start.elapsed()
}

/// Runs `ops` `iters` times (for a batch of `n_tokens`) and returns the GPU-bound wall time.
fn time_ops(gpu: &Gpu, ops: &[Op], n_tokens: u32, iters: u64) -> Duration {
    time_submits(iters, |reps| {
        let all: Vec<Op> = (0..reps).flat_map(|_| ops.iter().cloned()).collect();
        gpu.run(&all, n_tokens).expect("dispatch");
    })
}

/// Weights with bounded, finite scales whatever the block layout (timing does not depend on
/// the values, but NaNs or denormals could on some adapters).
fn weight(gpu: &Gpu, t: GgmlType, rows: usize, cols: usize) -> GpuWeight {
    let n = t.bytes_for((rows * cols) as u64).expect("whole blocks") as usize;
    let bytes: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8 & 0x3f).collect();
    let meta = TensorMeta { name: format!("w.{t}"), ggml_type: t, dims: vec![cols as u64, rows as u64] };
    GpuWeight::upload(gpu, &TensorBytes { meta, bytes: bytes.into() }).expect("upload")
}

fn linear_ops(gpu: &Gpu, w: &GpuWeight, rows: usize, cols: usize, n_tok: u32) -> Vec<Op> {
    let x = gpu.storage("x", (cols * n_tok as usize) as u64 * 4);
    let y = gpu.storage("y", (rows * n_tok as usize) as u64 * 4);
    let step = gpu.uniform("step", &[0u32, n_tok, 0, 0]);
    let io = LinearIo {
        x: &x,
        x_offset: 0,
        x_stride: cols as u32,
        y: &y,
        y_offset: 0,
        y_stride: rows as u32,
        bias: None,
        gate: None,
    };
    linear(gpu, w, &io, Epilogue::Store, &step, n_tok > 1).expect("linear op")
}

fn configure<'c>(
    c: &'c mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'c, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    g
}

fn copy_bandwidth(c: &mut Criterion) {
    let Some(gpu) = gpu() else { return };
    let size = gpu.max_binding().min(64 << 20);
    let mk = |label| {
        gpu.device.create_buffer(&wllm::wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wllm::wgpu::BufferUsages::COPY_SRC | wllm::wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    };
    let (a, b) = (mk("copy.src"), mk("copy.dst"));
    let mut g = configure(c, "copy");
    g.throughput(Throughput::BytesDecimal(size));
    g.bench_function(BenchmarkId::new("buffer", format!("{}MiB", size >> 20)), |bench| {
        bench.iter(|| {
            let mut enc = gpu.device.create_command_encoder(&Default::default());
            enc.copy_buffer_to_buffer(&a, 0, &b, 0, size);
            gpu.queue.submit([enc.finish()]);
            gpu.wait().expect("copy");
        })
    });
    g.finish();
}

fn matvec(c: &mut Criterion) {
    let Some(gpu) = gpu() else { return };
    let (rows, cols) = (4096, 4096);
    let mut g = configure(c, "matvec_4096x4096");
    for &t in GPU_TYPES {
        let w = weight(&gpu, t, rows, cols);
        let ops = linear_ops(&gpu, &w, rows, cols, 1);
        g.throughput(Throughput::BytesDecimal(w.n_bytes()));
        g.bench_function(t.name(), |b| b.iter_custom(|iters| time_ops(&gpu, &ops, 1, iters)));
    }
    g.finish();
}

fn matmul(c: &mut Criterion) {
    let Some(gpu) = gpu() else { return };
    let (rows, cols, n_tok) = (4096, 4096, 64u32);
    let mut g = configure(c, "matmul_4096x4096_t64");
    for &t in &[GgmlType::F16, GgmlType::Q8_0, GgmlType::Q4_K] {
        let w = weight(&gpu, t, rows, cols);
        let ops = linear_ops(&gpu, &w, rows, cols, n_tok);
        // Elements are floating-point operations: criterion's elem/s reads as FLOP/s.
        g.throughput(Throughput::Elements(2 * rows as u64 * cols as u64 * n_tok as u64));
        g.bench_function(t.name(), |b| b.iter_custom(|iters| time_ops(&gpu, &ops, n_tok, iters)));
    }
    g.finish();
}

fn attention_decode(c: &mut Criterion) {
    let Some(gpu) = gpu() else { return };
    // A Llama-3-8B layer: 32 query heads sharing 8 KV heads of 128.
    let (n_head, n_kv, hd, n_ctx) = (32u32, 8u32, 128u32, 4096u32);
    let qkv = gpu.storage("qkv", ((n_head + 2 * n_kv) * hd) as u64 * 4);
    let out = gpu.storage("out", (n_head * hd) as u64 * 4);
    let mut g = configure(c, "attention_decode_32q8kv_d128");
    let f16 = if gpu.caps.f16 { KvType::F16 } else { KvType::F32 };
    for (ty, past) in
        [f16, KvType::Q8_0, KvType::Q4_0].into_iter().flat_map(|t| [512u32, 4095].map(|p| (t, p)))
    {
        let cache = CacheTypes { k: ty, v: ty };
        let row = ty.gpu_row_bytes(hd);
        let (k, v) =
            (gpu.storage("k", (n_kv * n_ctx) as u64 * row), gpu.storage("v", (n_kv * n_ctx) as u64 * row));
        let step = gpu.uniform("step", &[past, 1u32, 0, 0]);
        let positions = gpu.storage_init("positions", bytemuck::cast_slice(&[past, 0u32]));
        let args = AttentionArgs {
            n_head,
            n_kv,
            head_dim: hd,
            head_dim_v: hd,
            ctx: n_ctx,
            window: 0,
            scale: 1.0 / (hd as f32).sqrt(),
            cache,
            qkv: &qkv,
            k_cache: &k,
            v_cache: &v,
            out: &out,
            step: &step,
            positions: &positions,
            sinks: None,
            gated: false,
        };
        let ops = [attention(&gpu, &args).expect("attention op")];
        let kv_read = (past as u64 + 1) * n_kv as u64 * 2 * row;
        g.throughput(Throughput::BytesDecimal(kv_read));
        g.bench_function(BenchmarkId::new(format!("{ty}_kv"), past + 1), |b| {
            b.iter_custom(|iters| time_ops(&gpu, &ops, 1, iters))
        });
    }
    g.finish();
}

fn attention_prompt(c: &mut Criterion) {
    let Some(gpu) = gpu() else { return };
    // A SmolLM2-135M layer (9 query heads sharing 3 KV heads of 64) and a Llama-3-8B one, a
    // 128-token chunk after `past` cached positions.
    let n_tok = 128u32;
    let mut g = configure(c, "attention_prompt_128");
    for (n_head, n_kv, hd) in [(9u32, 3u32, 64u32), (32, 8, 128)] {
        for past in [0u32, 2048] {
            let n_ctx = past + n_tok;
            let ty = if gpu.caps.f16 { KvType::F16 } else { KvType::F32 };
            let row = ty.gpu_row_bytes(hd);
            let (k, v) = (
                gpu.storage("k", (n_kv * n_ctx) as u64 * row),
                gpu.storage("v", (n_kv * n_ctx) as u64 * row),
            );
            let qkv = gpu.storage("qkv", ((n_head + 2 * n_kv) * hd * n_tok) as u64 * 4);
            let out = gpu.storage("out", (n_head * hd * n_tok) as u64 * 4);
            let step = gpu.uniform("step", &[past, n_tok, 0, 0]);
            let pos: Vec<[u32; 2]> = (past..n_ctx).map(|p| [p, 0]).collect();
            let positions = gpu.storage_init("positions", bytemuck::cast_slice(&pos));
            let args = AttentionArgs {
                n_head,
                n_kv,
                head_dim: hd,
                head_dim_v: hd,
                ctx: n_ctx,
                window: 0,
                scale: 1.0 / (hd as f32).sqrt(),
                cache: CacheTypes { k: ty, v: ty },
                qkv: &qkv,
                k_cache: &k,
                v_cache: &v,
                out: &out,
                step: &step,
                positions: &positions,
                sinks: None,
                gated: false,
            };
            let pairs: u64 = (past as u64..n_ctx as u64).map(|p| p + 1).sum::<u64>() * n_head as u64;
            g.throughput(Throughput::Elements(pairs));
            for (form, op) in [("rows", attention(&gpu, &args)), ("tiled", attention_tiled(&gpu, &args))] {
                let ops = [op.expect("attention op")];
                g.bench_function(BenchmarkId::new(format!("{form}_{n_head}q{n_kv}kv_d{hd}"), past), |b| {
                    b.iter_custom(|iters| time_ops(&gpu, &ops, n_tok, iters))
                });
            }
        }
    }
    g.finish();
}

fn moe_routing(c: &mut Criterion) {
    let Some(gpu) = gpu() else { return };
    // Qwen3-30B-A3B: 128 experts, 8 per token.
    let (n_expert, k, n_embd, n_ff, n_tok) = (128u32, 8u32, 2048u32, 768u32, 256u32);
    let (_, tile) = wllm::engine::ops::linear::grouped_shape(&gpu, 1);
    let bufs = MoeBuffers::new(&gpu, n_tok, n_expert, k, tile);
    let logits: Vec<f32> = (0..n_tok * n_expert).map(|i| ((i * 2654435761) % 1000) as f32 / 250.0).collect();
    let logits = gpu.storage_init("router.logits", bytemuck::cast_slice(&logits));
    let step = gpu.uniform("step", &[0u32, n_tok, 0, 0]);
    let shape = MoeShape { n_expert, k, n_embd, scale: 1.0, renormalize: true };
    let row_tiles = (
        wllm::engine::ops::linear::grouped_shape(&gpu, n_ff).0,
        wllm::engine::ops::linear::grouped_shape(&gpu, n_embd).0,
    );
    let route_op = route(&gpu, &shape, &logits, &bufs, &step).expect("route op");
    let plan_op = plan(&gpu, &shape, tile, row_tiles, &bufs, &step).expect("plan op");
    let mut g = configure(c, "moe_128x8");
    g.throughput(Throughput::Elements(n_tok as u64));
    let route_only = [route_op.clone()];
    g.bench_function(BenchmarkId::new("route", n_tok), |b| {
        b.iter_custom(|iters| time_ops(&gpu, &route_only, n_tok, iters))
    });
    let both = [route_op, plan_op];
    g.bench_function(BenchmarkId::new("route_and_group", n_tok), |b| {
        b.iter_custom(|iters| time_ops(&gpu, &both, n_tok, iters))
    });
    g.finish();
}

/// Experiment 1, the load ceiling: the most a row-per-lane kernel could stream on this adapter.
/// Each invocation only adds up the words of two rows of a 4096x4096 Q4_K weight (vec4 loads,
/// the layout and access pattern of linear_lane.wgsl, no dequantizing), so its GB/s bounds the
/// Q4_K matvec from above; compare both with copy/buffer. The sums are checked on the CPU first.
const CEILING_WGSL: &str = "
@group(0) @binding(0) var<storage, read> W: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> S: array<u32>;
override ROW_VEC4: u32 = 1u;
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r0 = wid.x * 128u + lid;
    let r1 = r0 + 64u;
    var a = vec4<u32>(0u);
    var b = vec4<u32>(0u);
    for (var k = 0u; k < ROW_VEC4; k++) {
        a += W[r0 * ROW_VEC4 + k];
        b += W[r1 * ROW_VEC4 + k];
    }
    S[r0] = a.x + a.y + a.z + a.w;
    S[r1] = b.x + b.y + b.z + b.w;
}
";

fn load_ceiling(c: &mut Criterion) {
    use wllm::wgpu;
    let Some(gpu) = gpu() else { return };
    let rows = 4096usize;
    let row_bytes = GgmlType::Q4_K.bytes_for(4096).expect("whole blocks") as usize;
    let words: Vec<u32> = (0..rows * row_bytes / 4).map(|i| (i as u32).wrapping_mul(2654435761)).collect();
    let w = gpu.storage_init("ceiling.w", bytemuck::cast_slice(&words));
    let sums = gpu.storage("ceiling.sums", rows as u64 * 4);
    let module = gpu.device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("ceiling"),
        source: wgpu::ShaderSource::Wgsl(CEILING_WGSL.into()),
    });
    let row_vec4 = (row_bytes / 16) as f64;
    let pipeline = gpu.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("ceiling"),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: wgpu::PipelineCompilationOptions {
            constants: &[("ROW_VEC4", row_vec4)],
            ..Default::default()
        },
        cache: None,
    });
    let bind = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("ceiling"),
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[
            wgpu::BindGroupEntry { binding: 0, resource: w.as_entire_binding() },
            wgpu::BindGroupEntry { binding: 1, resource: sums.as_entire_binding() },
        ],
    });
    let run = |reps: u64| {
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind, &[]);
            for _ in 0..reps {
                pass.dispatch_workgroups((rows / 128) as u32, 1, 1);
            }
        }
        gpu.queue.submit([enc.finish()]);
        gpu.wait().expect("ceiling");
    };
    run(1);
    let got = gpu.read_f32(&sums).expect("read sums");
    let per_row = row_bytes / 4;
    for (r, g) in got.iter().enumerate() {
        let want = words[r * per_row..(r + 1) * per_row].iter().fold(0u32, |a, &x| a.wrapping_add(x));
        assert_eq!(g.to_bits(), want, "ceiling kernel: row {r} sum differs from the CPU's");
    }
    let mut g = configure(c, "load_ceiling_4096x4096");
    g.throughput(Throughput::BytesDecimal((rows * row_bytes) as u64));
    g.bench_function("Q4_K_bytes", |b| b.iter_custom(|iters| time_submits(iters, &run)));
    g.finish();
}

fn delta_net_elementwise(c: &mut Criterion) {
    let Some(gpu) = gpu() else { return };
    // A Qwen3-Next / Qwen3.5 DeltaNet layer: 16 key heads, 32 value heads of 128, 4 taps.
    let d = DeltaNetConfig {
        conv_kernel: 4,
        n_k_heads: 16,
        n_v_heads: 32,
        head_dim: 128,
        key_heads: KeyHeadMap::Tiled,
        fused_beta_alpha: false,
    };
    let (ch, nv, vd) = (d.conv_channels() as u64, d.n_v_heads as u64, d.value_dim() as u64);
    let max_tok = 64u32;
    let rows = |label, width: u64| gpu.storage(label, width * max_tok as u64 * 4);
    let (conv_in, conv_out, o, z) = (rows("conv_in", ch), rows("conv_out", ch), rows("o", vd), rows("z", vd));
    let (beta_alpha, gates) = (rows("beta_alpha", 2 * nv), rows("gates", 2 * nv));
    let weight = gpu.storage("conv.weight", ch * 4 * 4);
    let state = gpu.storage("conv.state", ch * 3 * 4);
    let (dt_bias, a) = (gpu.storage("dt_bias", nv * 4), gpu.storage("a", nv * 4));
    let norm_w = gpu.storage("ssm_norm", 128 * 4);
    let mut g = configure(c, "delta_net_16k32v_d128");
    for n_tok in [1u32, max_tok] {
        // One prompt run at position 100 of sequence 0.
        let positions: Vec<u32> = (0..n_tok).flat_map(|t| [100 + t, 0]).collect();
        let positions = gpu.storage_init("positions", bytemuck::cast_slice(&positions));
        let step = gpu.uniform("step", &[0u32, n_tok, 0, 0]);
        let conv_ops = conv(
            &gpu,
            &ConvArgs {
                dims: &d,
                n_ctx: 4096,
                n_seq: 1,
                input: &conv_in,
                weight: &weight,
                state: &state,
                out: &conv_out,
                step: &step,
                positions: &positions,
            },
        )
        .expect("conv ops");
        let gate_ops = qk_norm_gates(
            &gpu,
            &GateArgs {
                dims: &d,
                eps: 1e-6,
                conv_out: &conv_out,
                beta_alpha: &beta_alpha,
                group: d.n_v_heads,
                dt_bias: &dt_bias,
                a: &a,
                gates: &gates,
                step: &step,
            },
        )
        .expect("gate op");
        let norm_ops = vec![gated_norm(&gpu, &d, 1e-6, &o, &z, &norm_w, &step).expect("gated norm op")];
        for (name, ops) in [("conv", conv_ops), ("qk_norm_gates", gate_ops), ("gated_norm", norm_ops)] {
            let bytes: u64 = ops.iter().map(|op| op.traffic.0 + op.traffic.1 * n_tok as u64).sum();
            g.throughput(Throughput::BytesDecimal(bytes));
            g.bench_function(BenchmarkId::new(name, format!("t{n_tok}")), |b| {
                b.iter_custom(|iters| time_ops(&gpu, &ops, n_tok, iters))
            });
        }
    }
    g.finish();
}

criterion_group!(
    kernels,
    copy_bandwidth,
    load_ceiling,
    matvec,
    matmul,
    attention_decode,
    attention_prompt,
    moe_routing,
    delta_net_elementwise
);
criterion_main!(kernels);
