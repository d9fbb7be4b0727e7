//! A context: one sequence's KV cache, scratch buffers and prebuilt step graph on top of a
//! shared model. Each step is recorded into one command encoder and one compute pass and
//! submitted once; only the sampled token (or the logits asked for) is read back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wllm_loaders::ModelConfig;

use super::GpuModel;
use super::graph::{self, Graph, logit_bytes};
use crate::cpu::CpuExperts;
use crate::error::{EngineError, Result};
use crate::gpu::ops::Op;
use crate::gpu::ops::attention::partials_bytes;
pub use crate::gpu::ops::logprob::NO_TARGET;
use crate::gpu::ops::moe::MoeBuffers;
use crate::gpu::profile::{Phase, Profiler};
use crate::kv_type::{CacheRequest, CacheTypes};
use crate::layers::{RopeTable, SeqSpan, logit_rows, token_positions};

mod pending;
mod recurrent;
pub use pending::PendingStep;
use recurrent::{DeltaNetBuffers, delta_net_bytes};

#[derive(Clone, Debug)]
pub struct ContextOptions {
    /// Maximum number of positions (prompt + generated).
    pub n_ctx: u32,
    /// Largest batch of tokens processed in one step.
    pub n_batch: u32,
    /// Sequences the KV cache holds, `n_ctx` positions each (continuous batching).
    pub n_seq: u32,
    /// Element types of K and V (default: f16 where the adapter has it, else f32).
    pub cache: CacheRequest,
}

impl Default for ContextOptions {
    fn default() -> Self {
        ContextOptions { n_ctx: 4096, n_batch: 256, n_seq: 1, cache: CacheRequest::default() }
    }
}

/// Which logits a step returns.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Logits {
    None,
    /// The last position of the batch.
    Last,
    /// Every position of the batch.
    All,
}

pub(crate) struct Buffers {
    /// Positions per sequence.
    pub n_ctx: u32,
    /// Sequences the cache holds; sequence `s` owns cache rows `s · n_ctx ..`.
    pub n_seq: u32,
    pub n_batch: u32,
    /// Rows the logits buffer holds; batches that want every row's logits are cut to this.
    pub logit_rows: u32,
    pub cache: CacheTypes,
    pub tokens: wgpu::Buffer,
    pub step: wgpu::Buffer,
    /// Per token: (position, cache row of its sequence's position 0).
    pub positions: wgpu::Buffer,
    /// Rows whose logits a multi-sequence step returns, and a step uniform that counts them.
    pub head_rows: wgpu::Buffer,
    pub head_step: wgpu::Buffer,
    pub x: wgpu::Buffer,
    pub h: wgpu::Buffer,
    pub qkv: wgpu::Buffer,
    pub attn: wgpu::Buffer,
    pub g: wgpu::Buffer,
    pub u: wgpu::Buffer,
    pub a: wgpu::Buffer,
    pub logits: wgpu::Buffer,
    /// Per logits row: the token whose log-probability a scoring step reads, and that value.
    pub targets: wgpu::Buffer,
    pub scores: wgpu::Buffer,
    /// Per GPU layer; `None` for Gated DeltaNet layers, which keep states instead.
    pub k_cache: Vec<Option<wgpu::Buffer>>,
    pub v_cache: Vec<Option<wgpu::Buffer>>,
    /// RoPE (cos, sin) tables, indexed by [`RopeTable`].
    pub rope_tables: Vec<wgpu::Buffer>,
    pub read_tokens: wgpu::Buffer,
    pub read_logits: wgpu::Buffer,
    /// Readback of `h` for experts on the CPU (models with `--cpu-moe` layers only).
    pub read_hidden: Option<wgpu::Buffer>,
    /// Routing state and expert activations, for models with MoE layers.
    pub moe: Option<MoeBuffers>,
    pub moe_bufs: Option<MoeScratch>,
    /// Per token, the shared expert's gate logit (models with shared experts).
    pub shared_gate: Option<wgpu::Buffer>,
    /// States and activations of the GPU's Gated DeltaNet layers, if any.
    pub delta_net: Option<DeltaNetBuffers>,
    /// Partial softmaxes of split decode attention, and the splits (contexts deep enough to
    /// split; see [`decode_splits`]).
    pub attn_partials: Option<(wgpu::Buffer, u32)>,
}

/// Splits of a one-token step's attention over a context of `n_ctx` positions per sequence:
/// one per 1024 positions, at most 32 (1: not split). Each split's share is computed from the
/// step's own depth, so a shallow step spreads its few keys the same way.
pub fn decode_splits(n_ctx: u32) -> u32 {
    (n_ctx / 1024).clamp(1, 32)
}

impl Buffers {
    /// GPU layer `i`'s K and V caches.
    pub fn kv(&self, i: usize) -> Result<(&wgpu::Buffer, &wgpu::Buffer)> {
        match (self.k_cache.get(i), self.v_cache.get(i)) {
            (Some(Some(k)), Some(Some(v))) => Ok((k, v)),
            _ => Err(EngineError::InvalidArgument(format!("GPU layer {i} has no KV cache"))),
        }
    }
}

pub(crate) struct MoeScratch {
    pub router_logits: wgpu::Buffer,
    /// Per (token, slot) pair: gate, GLU output, and expert output rows.
    pub g: wgpu::Buffer,
    pub u: wgpu::Buffer,
    pub y: wgpu::Buffer,
}

/// Wall-clock time spent in steps, split by kind.
#[derive(Copy, Clone, Debug, Default)]
pub struct StepTimings {
    pub prompt_tokens: u64,
    pub prompt_time: Duration,
    pub decode_tokens: u64,
    pub decode_time: Duration,
}

pub struct Context {
    model: Arc<GpuModel>,
    bufs: Buffers,
    graph: Graph,
    n_past: u32,
    pub timings: StepTimings,
    /// When set, every step is timed per dispatch.
    profiler: Option<Profiler>,
    /// Experts of the model's `cpu_moe_layers`.
    cpu_experts: Option<CpuExperts>,
    /// The experts' output, reused between steps.
    expert_out: Vec<f32>,
    /// Per sequence: how many tokens its recurrent states hold (models with DeltaNet layers;
    /// sequence 0 is also the single-sequence API's). `u32::MAX` after a failed step.
    state_pos: Vec<u32>,
}

/// Whether a GPU layer keeps a KV cache (DeltaNet layers keep states instead).
fn attends(l: &super::GpuLayer) -> bool {
    l.delta_net.is_none()
}

/// What a step starts from.
#[derive(Copy, Clone)]
enum Input<'a> {
    Tokens(&'a [u32]),
    /// Rows of `n_embd`: the residual stream after the layers that ran elsewhere.
    Hidden(&'a [f32]),
}

/// What a step reads back: logits (and the device's greedy pick), per-row log-probabilities
/// of given targets, or the final-norm hidden state.
#[derive(Copy, Clone)]
enum Readout<'a> {
    Logits(Logits, bool),
    /// One id per row of the step ([`NO_TARGET`] where there is none).
    Scores(&'a [u32]),
    Hidden,
}

/// What a step produced.
#[derive(Clone, Debug, Default)]
pub struct StepOutput {
    /// Row-major logits of the rows asked for.
    pub logits: Vec<f32>,
    /// argmax of the last row, when asked for.
    pub token: Option<u32>,
}

/// Device memory a context takes, by kind; what [`Context::new`] allocates and what memory
/// plans count.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct ContextBytes {
    /// K and V caches of every GPU layer.
    pub kv: u64,
    /// Activations, logits, readback buffers, RoPE tables and routing state.
    pub scratch: u64,
    /// The largest single K or V buffer (one binding per layer).
    pub kv_binding: u64,
}

impl ContextBytes {
    pub fn total(&self) -> u64 {
        self.kv + self.scratch
    }
}

/// Buffer sizes of a context over `n_layers` GPU layers (see [`ContextBytes`]).
struct Sizes {
    logit_rows: u64,
    k_bytes: u64,
    v_bytes: u64,
    n_ff: u64,
    qkv: u64,
}

impl Sizes {
    /// `kv_rows`: cache positions per kv head, over every sequence.
    fn new(c: &ModelConfig, kv_rows: u64, n_batch: u32, cache: CacheTypes) -> Sizes {
        let nb = n_batch as u64;
        let vocab_bytes = c.n_vocab as u64 * 4;
        Sizes {
            // Logits for every row of a full batch, but no more than 64 MiB at once.
            logit_rows: nb.min((64u64 << 20) / vocab_bytes.max(1)).max(1),
            k_bytes: c.n_head_kv as u64 * kv_rows * cache.k.gpu_row_bytes(c.head_dim),
            v_bytes: c.n_head_kv as u64 * kv_rows * cache.v.gpu_row_bytes(c.head_dim_v),
            // Dense layers, and a MoE layer's shared expert, use the FFN scratch.
            n_ff: c.n_ff.max(c.moe.as_ref().map_or(0, |m| m.n_ff_expert.max(m.shared_expert_ff.unwrap_or(0))))
                as u64,
            qkv: graph::packed_qkv(c) as u64,
        }
    }
}

/// What a context of `n_ctx` positions (over all its `n_seq` sequences) and `n_batch`-token
/// steps over `n_layers` GPU layers allocates on the device.
/// `cpu_moe`: some layers hand their hidden state to CPU experts (one more readback buffer).
pub fn context_bytes(
    c: &ModelConfig,
    n_layers: u32,
    n_ctx: u32,
    n_batch: u32,
    n_seq: u32,
    cache: CacheTypes,
    cpu_moe: bool,
) -> ContextBytes {
    let n_batch = n_batch.min(n_ctx).max(1);
    let s = Sizes::new(c, n_ctx as u64, n_batch, cache);
    let (nb, e, f) = (n_batch as u64, c.n_embd as u64, 4u64);
    let mut scratch = nb * 4 // tokens
        + 16 // step
        + nb * 8 + nb * 4 + 16 // positions, head rows, head step
        + 3 * nb * e * f // x, h, block_out
        + nb * s.qkv * f
        + nb * (c.n_head * c.head_dim_v) as u64 * f
        + 2 * nb * s.n_ff * f
        + 2 * s.logit_rows * c.n_vocab as u64 * f // logits + readback
        + 2 * s.logit_rows * f // score targets and values
        + 16
        // two RoPE tables, over one sequence's positions
        + 2 * (n_ctx / n_seq.max(1)) as u64 * (c.rope_dim as u64 / 2) * 8;
    if cpu_moe {
        scratch += nb * e * f;
    }
    if let Some(m) = &c.moe {
        let pairs = nb * m.n_expert_used as u64;
        scratch += nb * m.n_expert as u64 * f + 2 * pairs * m.n_ff_expert as u64 * f + pairs * e * f;
        // Routing state: ids and weights per pair, per-expert counts and tile lists.
        scratch += pairs * 8 * 2 + m.n_expert as u64 * 64 + 4096;
        if m.shared_expert_ff.is_some() {
            scratch += nb * f;
        }
    }
    // The GPU holds the last `n_layers` layers; DeltaNet layers keep each sequence's states
    // (and a checkpoint of sequence 0's) instead of K and V.
    let layers = (c.n_layer - n_layers.min(c.n_layer)) as usize..c.n_layer as usize;
    let attention = layers.clone().filter(|&il| !c.is_recurrent(il)).count() as u64;
    let (states, delta_scratch) = delta_net_bytes(c, layers, n_batch, n_seq.max(1));
    let splits = decode_splits(n_ctx);
    if attention > 0 && splits > 1 {
        scratch += partials_bytes(c.n_head, c.head_dim_v, splits, 1);
    }
    ContextBytes {
        kv: attention * (s.k_bytes + s.v_bytes) + states,
        scratch: scratch + delta_scratch,
        kv_binding: if attention > 0 { s.k_bytes.max(s.v_bytes) } else { 0 },
    }
}

impl Context {
    pub fn new(model: Arc<GpuModel>, opts: &ContextOptions) -> Result<Context> {
        Self::with_cpu_experts(model, opts, None)
    }

    /// A context whose model keeps some layers' experts on the CPU, which `experts` runs.
    pub fn with_cpu_experts(
        model: Arc<GpuModel>,
        opts: &ContextOptions,
        experts: Option<CpuExperts>,
    ) -> Result<Context> {
        if let Some(&il) =
            model.cpu_moe_layers.iter().find(|&&il| !experts.as_ref().is_some_and(|x| x.has(il as usize)))
        {
            return Err(EngineError::InvalidArgument(format!(
                "layer {il} keeps its experts on the CPU, but none were given for it"
            )));
        }
        let gpu = &model.gpu;
        let c = &model.cfg;
        if opts.n_ctx == 0 || opts.n_batch == 0 {
            return Err(EngineError::InvalidArgument("context and batch sizes must be positive".into()));
        }
        let n_ctx = opts.n_ctx;
        let n_seq = opts.n_seq.max(1);
        let kv_rows = n_ctx as u64 * n_seq as u64;
        if kv_rows > u32::MAX as u64 {
            return Err(EngineError::InvalidArgument(format!("{n_seq} sequences of {n_ctx} positions")));
        }
        // One sequence's steps never exceed its context; several sequences' may.
        let n_batch = if n_seq == 1 { opts.n_batch.min(n_ctx) } else { opts.n_batch };
        let cache = opts.cache.for_gpu(gpu.caps.f16);
        if model.layers.iter().any(attends) {
            cache.check_dims(c.head_dim, c.head_dim_v)?;
        }
        let f = 4u64;
        let nb = n_batch as u64;
        let e = c.n_embd as u64;
        let Sizes { logit_rows, k_bytes, v_bytes, n_ff, qkv } = Sizes::new(c, kv_rows, n_batch, cache);
        let vocab_bytes = c.n_vocab as u64 * f;
        if k_bytes.max(v_bytes) > gpu.max_binding() {
            return Err(EngineError::Unsupported(format!(
                "{n_seq} sequence(s) of {n_ctx} positions need {} MiB per layer of KV cache, more than one {} MiB binding on this adapter; use a smaller context or fewer parallel sequences",
                k_bytes.max(v_bytes) >> 20,
                gpu.max_binding() >> 20
            )));
        }
        // Both tables are bound by index; one no layer reads is the global one again.
        let tables = [RopeTable::Global, RopeTable::Sliding]
            .map(|t| if model.plan.uses_table(t) { t } else { RopeTable::Global })
            .map(|t| gpu.storage_init("rope.table", bytemuck::cast_slice(&model.plan.rope.table(t, n_ctx))))
            .into();
        let bufs = Buffers {
            n_ctx,
            n_seq,
            n_batch,
            logit_rows: logit_rows as u32,
            cache,
            tokens: gpu.storage("tokens", nb * 4),
            step: gpu.uniform("step", &[0u32; 4]),
            positions: gpu.storage("positions", nb * 8),
            head_rows: gpu.storage("head.rows", nb * 4),
            head_step: gpu.uniform("head.step", &[0u32; 4]),
            x: gpu.storage("x", nb * e * f),
            h: gpu.storage("h", nb * e * f),
            qkv: gpu.storage("qkv", nb * qkv * f),
            attn: gpu.storage("attn", nb * (c.n_head * c.head_dim_v) as u64 * f),
            g: gpu.storage("ffn.gate", nb * n_ff * f),
            u: gpu.storage("ffn.up", nb * n_ff * f),
            a: gpu.storage("block_out", nb * e * f),
            logits: gpu.storage("logits", logit_rows * vocab_bytes),
            targets: gpu.storage("score.targets", logit_rows * 4),
            scores: gpu.storage("scores", logit_rows * 4),
            k_cache: model
                .layers
                .iter()
                .map(|l| attends(l).then(|| gpu.storage("k_cache", k_bytes)))
                .collect(),
            v_cache: model
                .layers
                .iter()
                .map(|l| attends(l).then(|| gpu.storage("v_cache", v_bytes)))
                .collect(),
            rope_tables: tables,
            read_tokens: gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("read.tokens"),
                size: 16,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            read_logits: gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("read.logits"),
                size: logit_rows * vocab_bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            read_hidden: (!model.cpu_moe_layers.is_empty()).then(|| {
                gpu.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("read.hidden"),
                    size: nb * e * f,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            }),
            moe: None,
            moe_bufs: None,
            shared_gate: c
                .moe
                .as_ref()
                .and_then(|m| m.shared_expert_ff)
                .map(|_| gpu.storage("moe.shared_gate", nb * f)),
            delta_net: DeltaNetBuffers::new(gpu, c, model.first_layer, n_batch, n_seq),
            attn_partials: (gpu.tuning.split_decode_attention
                && model.layers.iter().any(attends)
                && decode_splits(n_ctx) > 1)
                .then(|| {
                    let splits = decode_splits(n_ctx);
                    (
                        gpu.storage("attention.partials", partials_bytes(c.n_head, c.head_dim_v, splits, 1)),
                        splits,
                    )
                }),
        };
        let mut bufs = bufs;
        if let Some(m) = &c.moe {
            let pairs = nb * m.n_expert_used as u64;
            bufs.moe = Some(MoeBuffers::new(
                gpu,
                n_batch,
                m.n_expert,
                m.n_expert_used,
                crate::gpu::ops::linear::grouped_shape(gpu, 1).1,
            ));
            bufs.moe_bufs = Some(MoeScratch {
                router_logits: gpu.storage("moe.router_logits", nb * m.n_expert as u64 * f),
                g: gpu.storage("moe.gate", pairs * m.n_ff_expert as u64 * f),
                u: gpu.storage("moe.up", pairs * m.n_ff_expert as u64 * f),
                y: gpu.storage("moe.out", pairs * e * f),
            });
        }
        if let Some(d) = &bufs.delta_net {
            let state = d.dims.state_len() as u64 * 4 * n_seq as u64;
            if state > gpu.max_binding() {
                return Err(EngineError::Unsupported(format!(
                    "{n_seq} sequence(s) need {} MiB of DeltaNet state per layer, more than one {} MiB binding on this adapter; use fewer parallel sequences",
                    state >> 20,
                    gpu.max_binding() >> 20
                )));
            }
        }
        let graph = graph::build(&model, &bufs)?;
        Ok(Context {
            model,
            bufs,
            graph,
            n_past: 0,
            timings: StepTimings::default(),
            profiler: None,
            cpu_experts: experts,
            expert_out: Vec::new(),
            state_pos: vec![0; n_seq as usize],
        })
    }

    pub fn model(&self) -> &Arc<GpuModel> {
        &self.model
    }

    /// Bytes of every buffer this context allocated, as [`context_bytes`] predicts them.
    pub fn device_bytes(&self) -> ContextBytes {
        let b = &self.bufs;
        let (states, delta_scratch) = b.delta_net.as_ref().map_or((0, 0), |d| d.bytes());
        let kv: u64 = b.k_cache.iter().chain(&b.v_cache).flatten().map(|x| x.size()).sum::<u64>() + states;
        let mut scratch: u64 = [
            &b.tokens,
            &b.step,
            &b.positions,
            &b.head_rows,
            &b.head_step,
            &b.x,
            &b.h,
            &b.qkv,
            &b.attn,
            &b.g,
            &b.u,
            &b.a,
            &b.logits,
            &b.targets,
            &b.scores,
            &b.read_tokens,
            &b.read_logits,
        ]
        .iter()
        .map(|x| x.size())
        .sum();
        scratch += b.rope_tables.iter().map(|x| x.size()).sum::<u64>();
        scratch += b.read_hidden.as_ref().map_or(0, |x| x.size());
        scratch += b.shared_gate.as_ref().map_or(0, |x| x.size()) + delta_scratch;
        scratch += b.attn_partials.as_ref().map_or(0, |(x, _)| x.size());
        if let Some(m) = &b.moe {
            scratch +=
                [&m.ids, &m.weights, &m.pairs, &m.tiles, &m.args].iter().map(|x| x.size()).sum::<u64>();
        }
        if let Some(m) = &b.moe_bufs {
            scratch += [&m.router_logits, &m.g, &m.u, &m.y].iter().map(|x| x.size()).sum::<u64>();
        }
        let kv_binding = b.k_cache.iter().chain(&b.v_cache).flatten().map(|x| x.size()).max().unwrap_or(0);
        ContextBytes { kv, scratch, kv_binding }
    }
    pub fn n_past(&self) -> u32 {
        self.n_past
    }
    /// Positions per sequence.
    pub fn n_ctx(&self) -> u32 {
        self.bufs.n_ctx
    }
    /// Sequences the cache holds.
    pub fn n_seq(&self) -> u32 {
        self.bufs.n_seq
    }
    /// Times every following step per dispatch (see [`Profiler`]).
    pub fn enable_profiling(&mut self) {
        self.profiler = Some(Profiler::new(&self.model.gpu));
    }

    /// Stops timing: later steps run without the profiler's waits again.
    pub fn disable_profiling(&mut self) {
        self.profiler = None;
    }

    /// The profiler, to take its summary.
    pub fn profiler_mut(&mut self) -> Option<&mut Profiler> {
        self.profiler.as_mut()
    }

    pub fn profiler(&self) -> Option<&Profiler> {
        self.profiler.as_ref()
    }

    /// Forgets the sequence (the KV cache is simply overwritten from position 0, and a step at
    /// position 0 starts recurrent states afresh).
    pub fn clear(&mut self) {
        self.n_past = 0;
        self.state_pos[0] = 0;
        if let Some(d) = &mut self.bufs.delta_net {
            d.checkpoint_at = None;
        }
    }

    /// Keeps positions `0..n` at most, so the next step continues from there, and returns how
    /// many it kept. Recurrent states (DeltaNet layers) cannot be cut back: with them it keeps
    /// the whole sequence, or goes back to the checkpoint when that lies at or before `n`, or
    /// else to nothing; the caller evaluates the tokens between what was kept and `n` again.
    pub fn truncate(&mut self, n: u32) -> u32 {
        let Some(d) = &mut self.bufs.delta_net else {
            self.n_past = self.n_past.min(n);
            return self.n_past;
        };
        if n >= self.n_past && self.state_pos[0] == self.n_past {
            return self.n_past;
        }
        let kept = match d.checkpoint_at {
            Some(at) if at <= n && at <= self.n_past => {
                let gpu = &self.model.gpu;
                let mut enc = gpu
                    .device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("state.restore") });
                d.copy_checkpoint(&mut enc, false);
                gpu.queue.submit([enc.finish()]);
                at
            }
            _ => {
                d.checkpoint_at = None;
                0
            }
        };
        self.n_past = kept;
        self.state_pos[0] = kept;
        kept
    }

    /// Whether this context's layers carry recurrent states, which cannot be truncated.
    pub fn has_recurrent_state(&self) -> bool {
        self.bufs.delta_net.is_some()
    }

    /// Checks that `seq`'s recurrent states hold exactly the tokens before `pos0` (or that the
    /// step starts the sequence over at 0), so a state never meets tokens it does not match.
    fn check_state_pos(&self, seq: u32, pos0: u32) -> Result<()> {
        let held = self.state_pos.get(seq as usize).copied();
        if self.bufs.delta_net.is_none() || pos0 == 0 || held == Some(pos0) {
            return Ok(());
        }
        let held = match held {
            Some(u32::MAX) => "is left over from a step that failed".to_string(),
            Some(n) => format!("holds {n} tokens"),
            None => "does not exist".to_string(),
        };
        Err(EngineError::InvalidArgument(format!(
            "sequence {seq} continues at position {pos0}, but its recurrent state {held}; a recurrent \
             model cannot rewind, so evaluate the sequence again from position 0"
        )))
    }

    /// Saves sequence 0's recurrent states as the checkpoint a later truncation may return to.
    fn take_checkpoint(&mut self) {
        let Some(d) = &mut self.bufs.delta_net else { return };
        let gpu = &self.model.gpu;
        let mut enc =
            gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("state.save") });
        d.copy_checkpoint(&mut enc, true);
        gpu.queue.submit([enc.finish()]);
        d.checkpoint_at = Some(self.n_past);
    }

    /// Token input needs the embedding (no CPU layers in front) and ids inside the vocabulary.
    pub(super) fn check_token_input(&self, tokens: &[u32]) -> Result<()> {
        if self.model.first_layer > 0 {
            return Err(EngineError::InvalidArgument(
                "this context starts after CPU layers; feed it their hidden state".into(),
            ));
        }
        let n_vocab = self.model.cfg.n_vocab;
        match tokens.iter().find(|&&t| t >= n_vocab) {
            Some(bad) => Err(EngineError::InvalidArgument(format!(
                "token id {bad} is outside the vocabulary of {n_vocab}"
            ))),
            None => Ok(()),
        }
    }

    /// Feeds `tokens` at the current position. Returns the logits asked for (of the last
    /// batch only for `Logits::Last`) and, if `argmax`, the greedy next token.
    pub fn eval(&mut self, tokens: &[u32], logits: Logits, argmax: bool) -> Result<StepOutput> {
        self.check_token_input(tokens)?;
        self.eval_input(Input::Tokens(tokens), logits, argmax)
    }

    /// Like [`eval`](Self::eval), from the hidden state (`n` rows of `n_embd`) that the layers
    /// before `first_layer` left, for a model whose first layers run elsewhere.
    pub fn eval_hidden(&mut self, hidden: &[f32], logits: Logits, argmax: bool) -> Result<StepOutput> {
        self.check_hidden_input(hidden)?;
        self.eval_input(Input::Hidden(hidden), logits, argmax)
    }

    fn eval_input(&mut self, input: Input<'_>, logits: Logits, argmax: bool) -> Result<StepOutput> {
        let mut values = Vec::new();
        self.run_input(input, Readout::Logits(logits, argmax), &mut values)
    }

    /// Feeds `tokens` and returns, per token, the log-probability of `targets[i]` after it
    /// (the log-softmax and the gather run on the device; one float per token comes back).
    /// A target of [`NO_TARGET`] gives 0.
    pub fn score(&mut self, tokens: &[u32], targets: &[u32]) -> Result<Vec<f32>> {
        self.check_token_input(tokens)?;
        self.check_targets(tokens.len(), targets)?;
        let mut values = Vec::new();
        self.run_input(Input::Tokens(tokens), Readout::Scores(targets), &mut values)?;
        Ok(values)
    }

    /// Like [`score`](Self::score), from the hidden state the layers before `first_layer` left.
    pub fn score_hidden(&mut self, hidden: &[f32], targets: &[u32]) -> Result<Vec<f32>> {
        self.check_hidden_input(hidden)?;
        self.check_targets(hidden.len() / self.model.cfg.n_embd as usize, targets)?;
        let mut values = Vec::new();
        self.run_input(Input::Hidden(hidden), Readout::Scores(targets), &mut values)?;
        Ok(values)
    }

    /// Feeds `tokens` and returns the final-norm hidden state of each (what the output head
    /// reads), `n_embd` values per token, row-major.
    pub fn final_hidden(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        self.check_token_input(tokens)?;
        let mut values = Vec::new();
        self.run_input(Input::Tokens(tokens), Readout::Hidden, &mut values)?;
        Ok(values)
    }

    /// Like [`final_hidden`](Self::final_hidden), from the hidden state the CPU layers left.
    pub fn final_hidden_from(&mut self, hidden: &[f32]) -> Result<Vec<f32>> {
        self.check_hidden_input(hidden)?;
        let mut values = Vec::new();
        self.run_input(Input::Hidden(hidden), Readout::Hidden, &mut values)?;
        Ok(values)
    }

    fn check_hidden_input(&self, hidden: &[f32]) -> Result<()> {
        let e = self.model.cfg.n_embd as usize;
        if self.model.first_layer == 0 || !hidden.len().is_multiple_of(e) {
            return Err(EngineError::InvalidArgument(format!(
                "hidden input of {} values for a context whose first layer is {} (rows of {e})",
                hidden.len(),
                self.model.first_layer
            )));
        }
        Ok(())
    }

    fn check_targets(&self, n_tokens: usize, targets: &[u32]) -> Result<()> {
        let n_vocab = self.model.cfg.n_vocab;
        if targets.len() != n_tokens {
            return Err(EngineError::InvalidArgument(format!(
                "{} score targets for {n_tokens} tokens",
                targets.len()
            )));
        }
        match targets.iter().find(|&&t| t >= n_vocab && t != NO_TARGET) {
            Some(bad) => Err(EngineError::InvalidArgument(format!(
                "target id {bad} is outside the vocabulary of {n_vocab}"
            ))),
            None => Ok(()),
        }
    }

    /// Runs `input` in steps no larger than the readout allows, appending score or hidden
    /// values to `values`; logits and the greedy pick come back in the output.
    fn run_input(
        &mut self,
        input: Input<'_>,
        readout: Readout<'_>,
        values: &mut Vec<f32>,
    ) -> Result<StepOutput> {
        let e = self.model.cfg.n_embd as usize;
        let n_tokens = match input {
            Input::Tokens(t) => t.len(),
            Input::Hidden(h) => h.len() / e,
        };
        if n_tokens == 0 {
            return Err(EngineError::InvalidArgument("no tokens to evaluate".into()));
        }
        let total = self.n_past as usize + n_tokens;
        if total > self.bufs.n_ctx as usize {
            return Err(EngineError::ContextOverflow { n_tokens: total, n_ctx: self.bufs.n_ctx as usize });
        }
        let mut out = StepOutput::default();
        let chunk = match readout {
            Readout::Logits(Logits::All, _) | Readout::Scores(_) => self.bufs.logit_rows,
            // Hidden rows come back through the logits' readback buffer.
            Readout::Hidden => {
                let fit = self.bufs.read_logits.size() / (e as u64 * 4);
                (fit.min(self.bufs.n_batch as u64) as u32).max(1)
            }
            Readout::Logits(..) => self.bufs.n_batch,
        } as usize;
        let n_chunks = n_tokens.div_ceil(chunk);
        for i in 0..n_chunks {
            let last = i + 1 == n_chunks;
            let rows = i * chunk..((i + 1) * chunk).min(n_tokens);
            let want = match readout {
                Readout::Logits(Logits::All, argmax) => Readout::Logits(Logits::All, argmax && last),
                Readout::Logits(Logits::Last, argmax) if last => Readout::Logits(Logits::Last, argmax),
                Readout::Logits(_, argmax) => Readout::Logits(Logits::None, argmax && last),
                Readout::Scores(t) => Readout::Scores(&t[rows.clone()]),
                Readout::Hidden => Readout::Hidden,
            };
            let part = match input {
                Input::Tokens(t) => Input::Tokens(&t[rows]),
                Input::Hidden(h) => Input::Hidden(&h[rows.start * e..rows.end * e]),
            };
            let r = self.step(part, want, values)?;
            out.logits.extend_from_slice(&r.logits);
            out.token = r.token;
        }
        // Decode steps (one token) take none: copying every state per token would cost more
        // than the step.
        if n_tokens > 1 {
            self.take_checkpoint();
        }
        Ok(out)
    }

    fn step(&mut self, input: Input<'_>, readout: Readout<'_>, values: &mut Vec<f32>) -> Result<StepOutput> {
        let (logits, argmax) = match readout {
            Readout::Logits(l, a) => (l, a),
            Readout::Scores(_) => (Logits::All, false),
            Readout::Hidden => (Logits::None, false),
        };
        let start = Instant::now();
        let gpu = self.model.gpu.clone();
        let n = match input {
            Input::Tokens(t) => {
                gpu.queue.write_buffer(&self.bufs.tokens, 0, bytemuck::cast_slice(t));
                t.len() as u32
            }
            Input::Hidden(h) => {
                gpu.queue.write_buffer(&self.bufs.x, 0, bytemuck::cast_slice(h));
                (h.len() / self.model.cfg.n_embd as usize) as u32
            }
        };
        self.write_step(n)?;
        if argmax && logits == Logits::All {
            return Err(EngineError::InvalidArgument("argmax with all-row logits".into()));
        }
        // Segments before the last hand over to CPU experts; the last carries on to the head.
        let n_segments = if n == 1 { self.graph.body_decode.len() } else { self.graph.body_prefill.len() };
        for i in 0..n_segments - 1 {
            self.cpu_segment(i, n)?;
        }
        let body = if n == 1 { &self.graph.body_decode } else { &self.graph.body_prefill };
        let body = &body[n_segments - 1].ops;
        let mut ops: Vec<&Op> = body.iter().collect();
        // What comes back: the logits, or one value per row (a score, or a hidden row).
        let (logit_bytes, value_src, value_bytes) = match readout {
            Readout::Logits(..) => {
                ops.extend(self.graph.tail(logits, argmax));
                (logit_bytes(logits, n, self.model.cfg.n_vocab), None, 0)
            }
            Readout::Scores(targets) => {
                gpu.queue.write_buffer(&self.bufs.targets, 0, bytemuck::cast_slice(targets));
                ops.extend(self.graph.tail(Logits::All, false));
                ops.push(&self.graph.score);
                (0, Some(&self.bufs.scores), n as u64 * 4)
            }
            Readout::Hidden => {
                ops.extend(&self.graph.hidden_all);
                (0, Some(&self.bufs.h), n as u64 * self.model.cfg.n_embd as u64 * 4)
            }
        };
        let bufs = &self.bufs;
        let copies = |enc: &mut wgpu::CommandEncoder| {
            if logit_bytes > 0 {
                enc.copy_buffer_to_buffer(&bufs.logits, 0, &bufs.read_logits, 0, logit_bytes);
            }
            if let Some(src) = value_src {
                enc.copy_buffer_to_buffer(src, 0, &bufs.read_logits, 0, value_bytes);
            }
            if argmax {
                enc.copy_buffer_to_buffer(&bufs.tokens, 0, &bufs.read_tokens, 0, 4);
            }
        };
        match self.profiler.as_mut() {
            Some(p) => {
                let phase = if n == 1 { Phase::Decode } else { Phase::Prefill };
                p.run(&gpu, &ops, n, phase, copies)?;
            }
            None => {
                let mut enc = gpu
                    .device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("step") });
                {
                    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some("step"),
                        timestamp_writes: None,
                    });
                    for op in &ops {
                        op.record(&mut pass, n);
                    }
                }
                copies(&mut enc);
                gpu.queue.submit([enc.finish()]);
            }
        }
        let mut out = StepOutput::default();
        let n_vocab = self.model.cfg.n_vocab;
        let last_pos = self.n_past + n - 1;
        if logit_bytes > 0 {
            out.logits = read_f32(&gpu, &self.bufs.read_logits, logit_bytes)?;
            let first = if logits == Logits::All { self.n_past } else { last_pos };
            crate::finite::check_logits(&out.logits, n_vocab, first)?;
        }
        if argmax {
            let v = read_f32(&gpu, &self.bufs.read_tokens, 4)?;
            out.token = Some(crate::finite::check_token(v[0].to_bits(), n_vocab, last_pos)?);
        }
        if value_bytes > 0 {
            let v = read_f32(&gpu, &self.bufs.read_logits, value_bytes)?;
            if let Readout::Scores(_) = readout {
                // A non-finite score means a non-finite logit in its row.
                if let Some(r) = v.iter().position(|x| !x.is_finite()) {
                    let what = if v[r].is_nan() { "NaN" } else { "inf" };
                    return Err(EngineError::NonFiniteLogits {
                        what,
                        position: (self.n_past as usize + r) as u64,
                    });
                }
            }
            values.extend_from_slice(&v);
        }
        if logit_bytes == 0 && !argmax && value_bytes == 0 {
            gpu.wait()?;
        }
        self.n_past += n;
        let dt = start.elapsed();
        if n == 1 {
            self.timings.decode_tokens += 1;
            self.timings.decode_time += dt;
        } else {
            self.timings.prompt_tokens += n as u64;
            self.timings.prompt_time += dt;
        }
        Ok(out)
    }
}

impl Context {
    /// The step uniform and the per-token positions of `n` tokens of this context's own
    /// sequence, from its current position.
    /// Refused when this sequence's recurrent states do not hold exactly the tokens so far.
    pub(crate) fn write_step(&mut self, n: u32) -> Result<()> {
        self.check_state_pos(0, self.n_past)?;
        if self.n_past == 0
            && let Some(d) = &mut self.bufs.delta_net
        {
            d.checkpoint_at = None;
        }
        self.state_pos[0] = self.n_past + n;
        let queue = &self.model.gpu.queue;
        queue.write_buffer(&self.bufs.step, 0, bytemuck::cast_slice(&[self.n_past, n, 0, 0]));
        let positions: Vec<[u32; 2]> = (self.n_past..self.n_past + n).map(|p| [p, 0]).collect();
        queue.write_buffer(&self.bufs.positions, 0, bytemuck::cast_slice(&positions));
        Ok(())
    }

    /// One step over several sequences (continuous batching): `tokens` holds each span's
    /// tokens in span order, at most `n_batch` in all. Returns, row-major, the logits of the
    /// last token of every span that asks for them. Sequences' positions are the caller's to
    /// track; this context's own single-sequence position is left alone.
    pub fn step_seqs(&mut self, tokens: &[u32], spans: &[SeqSpan]) -> Result<Vec<f32>> {
        self.check_token_input(tokens)?;
        self.seqs_input(Input::Tokens(tokens), spans)
    }

    /// Like [`step_seqs`](Self::step_seqs), from the hidden state the CPU layers left.
    pub fn eval_hidden_seqs(&mut self, hidden: &[f32], spans: &[SeqSpan]) -> Result<Vec<f32>> {
        let e = self.model.cfg.n_embd as usize;
        if self.model.first_layer == 0 || !hidden.len().is_multiple_of(e) {
            return Err(EngineError::InvalidArgument(format!(
                "hidden input of {} values for a context whose first layer is {} (rows of {e})",
                hidden.len(),
                self.model.first_layer
            )));
        }
        self.seqs_input(Input::Hidden(hidden), spans)
    }

    fn seqs_input(&mut self, input: Input<'_>, spans: &[SeqSpan]) -> Result<Vec<f32>> {
        let b = &self.bufs;
        let positions = token_positions(spans, b.n_seq, b.n_ctx)?;
        let n = positions.len() as u32;
        let e = self.model.cfg.n_embd as usize;
        let given = match input {
            Input::Tokens(t) => t.len(),
            Input::Hidden(h) => h.len() / e,
        };
        if n == 0 || given != n as usize || n > b.n_batch {
            return Err(EngineError::InvalidArgument(format!(
                "a step of {given} tokens for spans of {n} (at most {} per step)",
                b.n_batch
            )));
        }
        for s in spans {
            self.check_state_pos(s.seq, s.pos0)?;
        }
        for s in spans {
            self.state_pos[s.seq as usize] = s.pos0 + s.len;
        }
        let b = &self.bufs;
        let rows = logit_rows(spans);
        let k = rows.len() as u32;
        if k > b.logit_rows {
            return Err(EngineError::InvalidArgument(format!(
                "{k} sequences want logits; a step returns at most {}",
                b.logit_rows
            )));
        }
        let gpu = self.model.gpu.clone();
        match input {
            Input::Tokens(t) => gpu.queue.write_buffer(&b.tokens, 0, bytemuck::cast_slice(t)),
            Input::Hidden(h) => gpu.queue.write_buffer(&b.x, 0, bytemuck::cast_slice(h)),
        }
        gpu.queue.write_buffer(&b.step, 0, bytemuck::cast_slice(&[0, n, 0, 0]));
        gpu.queue.write_buffer(&b.positions, 0, bytemuck::cast_slice(&positions));
        if k > 0 {
            gpu.queue.write_buffer(&b.head_rows, 0, bytemuck::cast_slice(&rows));
            gpu.queue.write_buffer(&b.head_step, 0, bytemuck::cast_slice(&[0, k, 0, 0]));
        }
        // Segments before the last hand over to CPU experts; the last carries on to the head.
        let body = if n == 1 { &self.graph.body_decode } else { &self.graph.body_prefill };
        let n_segments = body.len();
        for i in 0..n_segments - 1 {
            self.cpu_segment(i, n)?;
        }
        let body = if n == 1 { &self.graph.body_decode } else { &self.graph.body_prefill };
        let bufs = &self.bufs;
        let logit_bytes = k as u64 * self.model.cfg.n_vocab as u64 * 4;
        let mut enc =
            gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("step.seqs") });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("step.seqs"),
                timestamp_writes: None,
            });
            for op in &body[n_segments - 1].ops {
                op.record(&mut pass, n);
            }
            if k > 0 {
                for op in &self.graph.head_listed {
                    op.record(&mut pass, k);
                }
            }
        }
        if logit_bytes > 0 {
            enc.copy_buffer_to_buffer(&bufs.logits, 0, &bufs.read_logits, 0, logit_bytes);
        }
        gpu.queue.submit([enc.finish()]);
        if logit_bytes == 0 {
            gpu.wait()?;
            return Ok(Vec::new());
        }
        let logits = read_f32(&gpu, &self.bufs.read_logits, logit_bytes)?;
        let n_vocab = self.model.cfg.n_vocab;
        for (i, row) in logits.chunks_exact(n_vocab as usize).enumerate() {
            let pos = positions[rows[i] as usize][0];
            crate::finite::check_logits(row, n_vocab, pos)?;
        }
        Ok(logits)
    }

    /// Runs segment `i` of the step's body on the GPU, then its layer's experts on the CPU,
    /// leaving their output in `a` for the next segment.
    fn cpu_segment(&mut self, i: usize, n: u32) -> Result<()> {
        let gpu = self.model.gpu.clone();
        let body = if n == 1 { &self.graph.body_decode } else { &self.graph.body_prefill };
        let seg = &body[i];
        let (Some(il), Some(read), Some(experts)) = (seg.cpu_moe, &self.bufs.read_hidden, &self.cpu_experts)
        else {
            return Err(EngineError::InvalidArgument("a CPU hand-over without CPU experts".into()));
        };
        let bytes = n as u64 * self.model.cfg.n_embd as u64 * 4;
        let h = &self.bufs.h;
        let copy = |enc: &mut wgpu::CommandEncoder| enc.copy_buffer_to_buffer(h, 0, read, 0, bytes);
        match self.profiler.as_mut() {
            Some(p) => {
                let phase = if n == 1 { Phase::Decode } else { Phase::Prefill };
                let ops: Vec<&Op> = seg.ops.iter().collect();
                p.run(&gpu, &ops, n, phase, copy)?;
            }
            None => {
                let mut enc = gpu
                    .device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("step.part") });
                {
                    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some("step.part"),
                        timestamp_writes: None,
                    });
                    for op in &seg.ops {
                        op.record(&mut pass, n);
                    }
                }
                copy(&mut enc);
                gpu.queue.submit([enc.finish()]);
            }
        }
        let hidden = read_f32(&gpu, read, bytes)?;
        experts.run(il, &hidden, &mut self.expert_out)?;
        gpu.queue.write_buffer(&self.bufs.a, 0, bytemuck::cast_slice(&self.expert_out));
        Ok(())
    }
}

/// Maps a readback buffer, copies out `bytes` bytes as f32, and unmaps it.
fn read_f32(gpu: &crate::gpu::device::Gpu, buf: &wgpu::Buffer, bytes: u64) -> Result<Vec<f32>> {
    let slice = buf.slice(0..bytes);
    let (tx, rx) = std::sync::mpsc::channel();
    slice.map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    gpu.wait()?;
    rx.recv().map_err(|e| EngineError::gpu("readback", e))?.map_err(|e| EngineError::gpu("readback", e))?;
    let v = {
        let view = slice.get_mapped_range().map_err(|e| EngineError::gpu("readback", e))?;
        bytemuck::pod_collect_to_vec::<u8, f32>(&view)
    };
    buf.unmap();
    Ok(v)
}
