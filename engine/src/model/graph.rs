//! The op sequence of one forward step, built once per context (bind groups included) in two
//! flavours: decode (one token, matvec kernels) and prefill (a batch, tiled matmul kernels).

use wllm_loaders::model::FfnActivation;

use super::GpuModel;
use super::context::{Buffers, Logits};
use crate::error::{EngineError, Result};
use crate::ops::argmax::{ArgmaxOps, argmax};
use crate::ops::attention::{AttentionArgs, attention};
use crate::ops::elementwise::{ElementwiseKey, elementwise};
use crate::ops::get_rows::get_rows;
use crate::ops::linear::{
    Epilogue, ExpertIds, Grouped, LinearIo, grouped_shape, linear as linear_op, linear_grouped, linear_ids,
};
use crate::ops::moe::{self, MoeShape};
use crate::ops::norm::{NormArgs, rms_norm};
use crate::ops::rope::{RopeArgs, rope_kv};
use crate::ops::{Grid, Op};
use crate::tensor::GpuWeight;

/// A run of ops, then possibly a hand-over to the CPU.
pub(crate) struct Segment {
    pub ops: Vec<Op>,
    /// After `ops`, the CPU runs this model layer's experts on `h` (the FFN-normed hidden
    /// state) and the sum lands in `a`; the next segment adds it to the residual.
    pub cpu_moe: Option<usize>,
}

pub(crate) struct Graph {
    /// Embedding lookup and every layer: one segment, or one more per layer whose experts run
    /// on the CPU.
    pub body_decode: Vec<Segment>,
    pub body_prefill: Vec<Segment>,
    /// Final norm of the batch's last row and the output head, into logits row 0.
    pub head_last: Vec<Op>,
    /// Final norm of every row and the output head, into logits rows 0..n.
    pub head_all: Vec<Op>,
    /// argmax(logits row 0) into tokens[0].
    pub argmax: ArgmaxOps,
}

impl Graph {
    /// The ops a step ends with after its body: the head the requested logits need (the last
    /// row's also for argmax alone), then argmax.
    pub fn tail(&self, logits: Logits, argmax: bool) -> impl Iterator<Item = &Op> {
        let head = match logits {
            Logits::All => Some(&self.head_all),
            Logits::Last => Some(&self.head_last),
            Logits::None if argmax => Some(&self.head_last),
            Logits::None => None,
        };
        head.into_iter().flatten().chain(self.argmax.ops.iter().filter(move |_| argmax))
    }
}

/// Bytes of logits a step of `n` rows reads back.
pub(crate) fn logit_bytes(logits: Logits, n: u32, n_vocab: u32) -> u64 {
    match logits {
        Logits::None => 0,
        Logits::Last => u64::from(n_vocab) * 4,
        Logits::All => u64::from(n) * u64::from(n_vocab) * 4,
    }
}

pub(crate) fn build(m: &GpuModel, b: &Buffers) -> Result<Graph> {
    Ok(Graph {
        body_decode: body(m, b, false)?,
        body_prefill: body(m, b, true)?,
        head_last: head(m, b, false)?,
        head_all: head(m, b, true)?,
        argmax: argmax(&m.gpu, &b.logits, 0, m.cfg.n_vocab, &b.tokens, 0)?,
    })
}

fn linear(
    m: &GpuModel,
    b: &Buffers,
    batched: bool,
    w: &GpuWeight,
    io: LinearIo<'_>,
    epi: Epilogue,
) -> Result<Vec<Op>> {
    linear_op(&m.gpu, w, &io, epi, &b.step, batched)
}

fn io<'a>(
    x: &'a wgpu::Buffer,
    x_stride: u32,
    y: &'a wgpu::Buffer,
    y_offset: u32,
    y_stride: u32,
) -> LinearIo<'a> {
    LinearIo { x, x_offset: 0, x_stride, y, y_offset, y_stride, bias: None, gate: None }
}

fn body(m: &GpuModel, b: &Buffers, batched: bool) -> Result<Vec<Segment>> {
    let mut segments = Vec::new();
    let gpu = &m.gpu;
    let c = &m.cfg;
    let e = c.n_embd;
    let (nq, nk, nv) = (c.n_embd_q(), c.n_embd_k(), c.n_embd_v());
    let qkv_stride = nq + nk + nv;
    let attn_w = c.n_head * c.head_dim_v;
    let post_norms = c.has_post_norms;
    // With CPU layers in front, the step starts from their hidden state, already in `x`.
    let mut ops = match (&m.token_embd, m.first_layer) {
        (Some(embd), 0) => get_rows(gpu, embd, &b.tokens, &b.x, e, c.embed_scale.unwrap_or(1.0))?,
        _ => Vec::new(),
    };
    for (i, l) in m.layers.iter().enumerate() {
        let il = m.first_layer as usize + i;
        // Pre-attention norm; with post-norms it also finishes the previous layer's FFN (a
        // CPU layer finishes its own).
        let prev_post = if i > 0 && post_norms {
            m.layers[i - 1].post_ffw_norm.as_ref().map(|w| (&b.a, w))
        } else {
            None
        };
        ops.push(rms_norm(
            gpu,
            &NormArgs {
                n: e,
                eps: c.rms_eps,
                x: &b.x,
                weight: &l.attn_norm,
                out: &b.h,
                post: prev_post,
                last_row_of: None,
            },
        )?);
        for p in &l.qkv {
            let mut o = io(&b.h, e, &b.qkv, p.row0, qkv_stride);
            o.bias = p.bias.as_ref();
            ops.extend(linear(m, b, batched, &p.w, o, Epilogue::Store)?);
        }
        let table = &b.rope_tables[if c.is_swa(il) { 1 } else { 0 }];
        ops.push(rope_kv(
            gpu,
            &RopeArgs {
                n_head: c.n_head,
                n_kv: c.n_head_kv,
                head_dim: c.head_dim,
                head_dim_v: c.head_dim_v,
                n_rot: c.rope_dim,
                neox: c.rope_layout == wllm_loaders::model::RopeLayout::Neox,
                ctx: b.n_ctx,
                eps: c.rms_eps,
                kv_f16: b.kv_f16,
                qkv: &b.qkv,
                k_cache: &b.k_cache[i],
                v_cache: &b.v_cache[i],
                table,
                step: &b.step,
                qk_norm: l.qk_norm.as_ref(),
            },
        )?);
        ops.push(attention(
            gpu,
            &AttentionArgs {
                n_head: c.n_head,
                n_kv: c.n_head_kv,
                head_dim: c.head_dim,
                head_dim_v: c.head_dim_v,
                ctx: b.n_ctx,
                window: if c.is_swa(il) { c.sliding_window } else { 0 },
                scale: c.attn_scale,
                kv_f16: b.kv_f16,
                qkv: &b.qkv,
                k_cache: &b.k_cache[i],
                v_cache: &b.v_cache[i],
                out: &b.attn,
                step: &b.step,
            },
        )?);
        if let Some(post) = &l.post_attn_norm {
            ops.extend(linear(m, b, batched, &l.wo, io(&b.attn, attn_w, &b.a, 0, e), Epilogue::Store)?);
            ops.push(rms_norm(
                gpu,
                &NormArgs {
                    n: e,
                    eps: c.rms_eps,
                    x: &b.x,
                    weight: &l.ffn_norm,
                    out: &b.h,
                    post: Some((&b.a, post)),
                    last_row_of: None,
                },
            )?);
        } else {
            ops.extend(linear(m, b, batched, &l.wo, io(&b.attn, attn_w, &b.x, 0, e), Epilogue::Add)?);
            ops.push(rms_norm(
                gpu,
                &NormArgs {
                    n: e,
                    eps: c.rms_eps,
                    x: &b.x,
                    weight: &l.ffn_norm,
                    out: &b.h,
                    post: None,
                    last_row_of: None,
                },
            )?);
        }
        match &l.ffn {
            super::GpuFfn::CpuMoe => {
                if post_norms {
                    return Err(EngineError::Unsupported("post-norms around MoE layers".into()));
                }
                segments.push(Segment { ops: std::mem::take(&mut ops), cpu_moe: Some(il) });
                // Whole batch: rows past the step's tokens are scratch nobody reads.
                ops.push(elementwise(gpu, ElementwiseKey::Add, &b.a, &b.x, b.n_batch * e)?);
            }
            super::GpuFfn::Dense { gate_up, down } => {
                let nff = c.n_ff;
                let silu = c.ffn_act == FfnActivation::Silu;
                match gate_up {
                    super::GateUp::Fused(w) => {
                        let pair = if silu { Epilogue::PairSilu } else { Epilogue::PairGelu };
                        ops.extend(linear(m, b, batched, w, io(&b.h, e, &b.u, 0, nff), pair)?);
                    }
                    super::GateUp::Split { gate, up } => {
                        let glu = if silu { Epilogue::GluSilu } else { Epilogue::GluGelu };
                        ops.extend(linear(m, b, batched, gate, io(&b.h, e, &b.g, 0, nff), Epilogue::Store)?);
                        let mut o = io(&b.h, e, &b.u, 0, nff);
                        o.gate = Some(&b.g);
                        ops.extend(linear(m, b, batched, up, o, glu)?);
                    }
                }
                let (dst, epi) = if post_norms { (&b.a, Epilogue::Store) } else { (&b.x, Epilogue::Add) };
                ops.extend(linear(m, b, batched, down, io(&b.u, nff, dst, 0, e), epi)?);
            }
            super::GpuFfn::Moe { router, gate_exps, up_exps, down_exps } => {
                let (Some(cfg), Some(mb), Some(mx)) = (&c.moe, &b.moe, &b.moe_bufs) else {
                    return Err(EngineError::InvalidArgument("MoE layer without MoE config".into()));
                };
                let (k, nff) = (cfg.n_expert_used, cfg.n_ff_expert);
                let shape = MoeShape {
                    n_expert: cfg.n_expert,
                    k,
                    n_embd: e,
                    scale: cfg.weights_scale,
                    renormalize: matches!(
                        cfg.gating,
                        wllm_loaders::model::ExpertGating::SoftmaxTopK { renormalize: true }
                    ),
                };
                ops.extend(linear(
                    m,
                    b,
                    batched,
                    router,
                    io(&b.h, e, &mx.router_logits, 0, cfg.n_expert),
                    Epilogue::Store,
                )?);
                ops.push(moe::route(gpu, &shape, &mx.router_logits, mb, &b.step)?);
                let gate_io = io(&b.h, e, &mx.g, 0, nff);
                let mut up_io = io(&b.h, e, &mx.u, 0, nff);
                up_io.gate = Some(&mx.g);
                let down_io = io(&mx.u, nff, &mx.y, 0, e);
                let glu = match c.ffn_act {
                    FfnActivation::Silu => Epilogue::GluSilu,
                    FfnActivation::GeluTanh => Epilogue::GluGelu,
                };
                let ex = |expert_rows, x_per_token| ExpertIds { ids: &mb.ids, k, expert_rows, x_per_token };
                if batched {
                    let (gate_rows, tile) = grouped_shape(gpu, nff);
                    let (down_rows, _) = grouped_shape(gpu, e);
                    ops.push(moe::plan(gpu, &shape, tile, (gate_rows, down_rows), mb, &b.step)?);
                    let g = |args_offset| Grouped {
                        pairs: &mb.pairs,
                        tiles: &mb.tiles,
                        args: &mb.args,
                        args_offset,
                    };
                    ops.extend(linear_grouped(
                        gpu,
                        gate_exps,
                        &gate_io,
                        Epilogue::Store,
                        &b.step,
                        &ex(nff, true),
                        &g(0),
                    )?);
                    ops.extend(linear_grouped(gpu, up_exps, &up_io, glu, &b.step, &ex(nff, true), &g(0))?);
                    ops.extend(linear_grouped(
                        gpu,
                        down_exps,
                        &down_io,
                        Epilogue::Store,
                        &b.step,
                        &ex(e, false),
                        &g(12),
                    )?);
                } else {
                    ops.extend(linear_ids(
                        gpu,
                        gate_exps,
                        &gate_io,
                        Epilogue::Store,
                        &b.step,
                        &ex(nff, true),
                    )?);
                    ops.extend(linear_ids(gpu, up_exps, &up_io, glu, &b.step, &ex(nff, true))?);
                    ops.extend(linear_ids(
                        gpu,
                        down_exps,
                        &down_io,
                        Epilogue::Store,
                        &b.step,
                        &ex(e, false),
                    )?);
                }
                let dst = if post_norms { &b.a } else { &b.x };
                if post_norms {
                    return Err(EngineError::Unsupported("post-norms around MoE layers".into()));
                }
                ops.push(moe::combine(gpu, &shape, mb, &mx.y, dst, &b.step)?);
            }
        }
    }
    segments.push(Segment { ops, cpu_moe: None });
    Ok(segments)
}

fn head(m: &GpuModel, b: &Buffers, all_rows: bool) -> Result<Vec<Op>> {
    let gpu = &m.gpu;
    let c = &m.cfg;
    let e = c.n_embd;
    let post = if c.has_post_norms {
        m.layers.last().and_then(|l| l.post_ffw_norm.as_ref()).map(|w| (&b.a, w))
    } else {
        None
    };
    let mut ops = vec![rms_norm(
        gpu,
        &NormArgs {
            n: e,
            eps: c.rms_eps,
            x: &b.x,
            weight: &m.output_norm,
            out: &b.h,
            post,
            last_row_of: if all_rows { None } else { Some(&b.step) },
        },
    )?];
    let o = io(&b.h, e, &b.logits, 0, c.n_vocab);
    if all_rows {
        ops.extend(linear(m, b, true, m.head()?, o, Epilogue::Store)?);
    } else {
        // One row (the last one, moved to row 0 by the norm) whatever the batch.
        for mut op in linear(m, b, false, m.head()?, o, Epilogue::Store)? {
            op.grid = Grid::Fixed(op.grid.dims(1));
            ops.push(op);
        }
    }
    Ok(ops)
}
