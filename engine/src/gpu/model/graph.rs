//! The op sequence of one forward step, built once per context (bind groups included) in two
//! flavours: decode (one token, matvec kernels) and prefill (a batch, tiled matmul kernels).

use std::sync::Arc;

use wllm_loaders::ModelConfig;
use wllm_loaders::model::{
    BetaAlpha, DeltaNetConfig, FfnActivation, FfnWeights, MoeBiases, MoeConfig, RopeLayout, SharedExpert,
};

use super::context::{Buffers, Logits};
use super::{GpuLayer, GpuMat, GpuModel, GpuVec};
use crate::error::{EngineError, Result};
use crate::gpu::ops::argmax::{ArgmaxOps, argmax};
use crate::gpu::ops::attention::{AttentionArgs, attention, attention_prefill, attention_split};
use crate::gpu::ops::delta_net::{self, ConvArgs, GateArgs};
use crate::gpu::ops::delta_rule::{DeltaRuleArgs, delta_rule};
use crate::gpu::ops::elementwise::{ElementwiseKey, add_gated, elementwise, softcap};
use crate::gpu::ops::get_rows::get_rows;
use crate::gpu::ops::hadamard::{Gate, hadamard64};
use crate::gpu::ops::linear::{
    Epilogue, ExpertIds, Grouped, LinearIo, grouped_shape, linear as linear_op, linear_grouped, linear_ids,
};
use crate::gpu::ops::logprob::logprob;
use crate::gpu::ops::moe::{self, MoeShape};
use crate::gpu::ops::norm::{NormArgs, rms_norm};
use crate::gpu::ops::rope::{RopeArgs, qkv_stride, rope_kv};
use crate::gpu::ops::{Grid, Op};
use crate::gpu::tensor::GpuWeight;
use crate::kv_type::v_rotation;
use crate::layers::{FfnPlan, LayerBackend, LayerPlan, RopeTable, Step, renormalizes, required};

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
    /// Final norm and output head of the rows listed in `head_rows`, into logits rows 0..k
    /// (recorded with k; a multi-sequence step's last token of each sequence).
    pub head_listed: Vec<Op>,
    /// argmax(logits row 0) into tokens[0].
    pub argmax: ArgmaxOps,
    /// After `head_all`: each row's log-probability of its target into `scores`.
    pub score: Op,
    /// The final norm of every row into `h`, without the head (`head_all`'s first op).
    pub hidden_all: Vec<Op>,
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
    let head_all = head(m, b, HeadRows::All)?;
    // `head` starts with the final norm: embeddings read its output and skip the head.
    let hidden_all = head_all[..1].to_vec();
    Ok(Graph {
        body_decode: body(m, b, false)?,
        body_prefill: body(m, b, true)?,
        head_last: head(m, b, HeadRows::Last)?,
        head_all,
        head_listed: head(m, b, HeadRows::Listed)?,
        argmax: argmax(&m.gpu, &b.logits, 0, m.cfg.n_vocab, &b.tokens, 0)?,
        score: logprob(&m.gpu, &b.logits, m.cfg.n_vocab, b.logit_rows, &b.targets, &b.scores)?,
        hidden_all,
    })
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

/// Floats per token of the packed [q (+ gate) | k | v] rows of the model's attention layers.
pub(crate) fn packed_qkv(c: &ModelConfig) -> u32 {
    crate::gpu::ops::rope::qkv_stride(c.n_head, c.n_head_kv, c.head_dim, c.head_dim_v, c.attn_output_gate)
}

/// Reads a vector from its first element: norm weights and the first bias of a stack.
fn whole(v: &GpuVec) -> Result<&wgpu::Buffer> {
    match v.offset {
        0 => Ok(&v.buffer),
        o => Err(EngineError::InvalidArgument(format!("a vector at offset {o} of its buffer read as whole"))),
    }
}

/// The GPU backend of the layer plan: records each step's dispatches for one flavour (decode or
/// prefill) of the step graph.
struct GraphBuilder<'a> {
    m: &'a GpuModel,
    b: &'a Buffers,
    batched: bool,
    ops: Vec<Op>,
    segments: Vec<Segment>,
    /// A post-norm whose residual add is left to the next RMS norm, which fuses it:
    /// `x += rms_norm(a) · w` before normalising `x`.
    pending_post: Option<&'a wgpu::Buffer>,
}

impl<'a> GraphBuilder<'a> {
    fn layer(&self, il: usize) -> Result<&'a GpuLayer> {
        let m: &'a GpuModel = self.m;
        il.checked_sub(m.first_layer as usize).and_then(|i| m.layers.get(i)).ok_or_else(|| {
            EngineError::InvalidArgument(format!("layer {il} is not on the GPU (from {})", m.first_layer))
        })
    }

    fn linear(&mut self, w: &GpuWeight, io: LinearIo<'_>, epi: Epilogue) -> Result<()> {
        self.ops.extend(linear_op(&self.m.gpu, w, &io, epi, &self.b.step, self.batched)?);
        Ok(())
    }

    /// h = rms_norm(x) · w, finishing a pending post-norm first.
    fn norm(&mut self, weight: &GpuVec) -> Result<()> {
        let post = self.pending_post.take().map(|w| (&self.b.a, w));
        let c = &self.m.cfg;
        let args = NormArgs {
            n: c.n_embd,
            eps: c.rms_eps,
            x: &self.b.x,
            weight: whole(weight)?,
            out: &self.b.h,
            post,
            last_row_of: None,
            rows_from: None,
        };
        self.ops.push(rms_norm(&self.m.gpu, &args)?);
        Ok(())
    }

    /// Where a block writes its output: into `a` when a post-norm follows (the next RMS norm
    /// adds it to `x`), else straight onto `x`.
    fn block_out(&self, post_norm: bool) -> (&'a wgpu::Buffer, Epilogue) {
        let b: &'a Buffers = self.b;
        if post_norm { (&b.a, Epilogue::Store) } else { (&b.x, Epilogue::Add) }
    }

    /// Leaves the block's post-norm for the next RMS norm to fuse.
    fn post_norm(&mut self, w: &'a Option<GpuVec>, on: bool, il: usize, what: &str) -> Result<()> {
        if on {
            self.pending_post = Some(whole(required(w, il, what)?)?);
        }
        Ok(())
    }

    /// With `gate`, Wq's rows give each head's query then its gate logits, so the q part of a
    /// packed row is twice as wide (see `rope::qkv_stride`).
    fn qkv(&mut self, l: &'a GpuLayer, bias: bool, gate: bool, il: usize) -> Result<()> {
        let c = &self.m.cfg;
        let q_width = if gate { 2 * c.n_embd_q() } else { c.n_embd_q() };
        let (e, stride) = (c.n_embd, packed_qkv(c));
        let projs = [
            (required(&l.attn_q, il, "q projection")?, &l.attn_q_bias, 0),
            (required(&l.attn_k, il, "k projection")?, &l.attn_k_bias, q_width),
            (required(&l.attn_v, il, "v projection")?, &l.attn_v_bias, q_width + c.n_embd_k()),
        ];
        // Neighbours stacked in one weight take one dispatch over the whole weight.
        let mut i = 0;
        while i < projs.len() {
            let mut j = i + 1;
            while j < projs.len() && projs[j - 1].0.followed_by(projs[j].0) {
                j += 1;
            }
            let (mat, b, row0) = projs[i];
            if mat.row0 != 0 || projs[j - 1].0.row0 + projs[j - 1].0.rows != mat.weight.nrows {
                return Err(EngineError::InvalidArgument(format!(
                    "layer {il}: q, k, v stacked out of order"
                )));
            }
            let mut o = io(&self.b.h, e, &self.b.qkv, row0, stride);
            o.bias = if bias { Some(whole(required(b, il, "q/k/v bias")?)?) } else { None };
            self.linear(&mat.weight, o, Epilogue::Store)?;
            i = j;
        }
        Ok(())
    }

    fn rope_kv(&mut self, l: &'a GpuLayer, qk_norm: bool, table: RopeTable, il: usize) -> Result<()> {
        let (c, b) = (&self.m.cfg, self.b);
        let qk_norm = match qk_norm {
            false => None,
            true => {
                let (q, k) =
                    (required(&l.attn_q_norm, il, "q norm")?, required(&l.attn_k_norm, il, "k norm")?);
                if !Arc::ptr_eq(&q.buffer, &k.buffer) || k.offset != q.len {
                    return Err(EngineError::InvalidArgument(format!(
                        "layer {il}: q and k norms not packed"
                    )));
                }
                Some(whole(q)?)
            }
        };
        let i = il - self.m.first_layer as usize;
        let args = RopeArgs {
            n_head: c.n_head,
            n_kv: c.n_head_kv,
            head_dim: c.head_dim,
            head_dim_v: c.head_dim_v,
            n_rot: self.m.plan.rope.n_rot,
            neox: self.m.plan.rope.layout == RopeLayout::Neox,
            ctx: b.n_ctx * b.n_seq,
            eps: c.rms_eps,
            cache: b.cache,
            qkv: &b.qkv,
            k_cache: b.kv(i)?.0,
            v_cache: b.kv(i)?.1,
            table: &b.rope_tables[table as usize],
            positions: &b.positions,
            qk_norm,
            gated: c.attn_output_gate,
        };
        self.ops.push(rope_kv(&self.m.gpu, &args)?);
        Ok(())
    }

    fn attention(&mut self, l: &'a GpuLayer, scale: f32, window: u32, sinks: bool, il: usize) -> Result<()> {
        let (c, b) = (&self.m.cfg, self.b);
        let i = il - self.m.first_layer as usize;
        let sinks = if sinks { Some(whole(required(&l.attn_sinks, il, "attention sinks")?)?) } else { None };
        let args = AttentionArgs {
            n_head: c.n_head,
            n_kv: c.n_head_kv,
            head_dim: c.head_dim,
            head_dim_v: c.head_dim_v,
            ctx: b.n_ctx * b.n_seq,
            window,
            scale,
            cache: b.cache,
            qkv: &b.qkv,
            k_cache: b.kv(i)?.0,
            v_cache: b.kv(i)?.1,
            out: &b.attn,
            step: &b.step,
            positions: &b.positions,
            sinks,
            gated: c.attn_output_gate,
        };
        // One-token steps over a deep context split the keys (flash-decoding); prompt steps
        // share staged tiles of them.
        match (&b.attn_partials, self.batched) {
            (Some((partials, splits)), false) => {
                self.ops.extend(attention_split(&self.m.gpu, &args, *splits, partials, 1)?)
            }
            (_, false) => self.ops.push(attention(&self.m.gpu, &args)?),
            (_, true) => self.ops.push(attention_prefill(&self.m.gpu, &args)?),
        }
        // A rotated V cache gives a rotated output: turn it back (and gate it, when gated).
        if v_rotation(b.cache.v, c.head_dim_v).is_some() {
            let gate = c.attn_output_gate.then(|| Gate {
                qkv: &b.qkv,
                qkv_stride: qkv_stride(c.n_head, c.n_head_kv, c.head_dim, c.head_dim_v, true),
                head_dim: c.head_dim,
            });
            self.ops.push(hadamard64(&self.m.gpu, &b.attn, c.n_head * c.head_dim_v, gate)?);
        }
        Ok(())
    }

    fn dense_ffn(
        &mut self,
        gate: &GpuMat,
        up: &GpuMat,
        down: &GpuMat,
        act: FfnActivation,
        dst: (&wgpu::Buffer, Epilogue),
    ) -> Result<()> {
        let (b, e, nff) = (self.b, self.m.cfg.n_embd, gate.rows);
        if gate.followed_by(up) && gate.row0 == 0 && up.row0 + up.rows == gate.weight.nrows {
            // Gate and up stacked: one dispatch writes act(gate) ⊙ up.
            self.linear(&gate.weight, io(&b.h, e, &b.u, 0, nff), Epilogue::pair(act))?;
        } else {
            let glu = Epilogue::glu(act);
            self.linear(&gate.weight, io(&b.h, e, &b.g, 0, nff), Epilogue::Store)?;
            let mut o = io(&b.h, e, &b.u, 0, nff);
            o.gate = Some(&b.g);
            self.linear(&up.weight, o, glu)?;
        }
        self.linear(&down.weight, io(&b.u, nff, dst.0, 0, e), dst.1)
    }

    fn moe_ffn(
        &mut self,
        experts: [&GpuMat; 4],
        biases: Option<&MoeBiases<GpuVec>>,
        moe: &MoeConfig,
        act: FfnActivation,
        dst: &wgpu::Buffer,
    ) -> Result<()> {
        let (gpu, b, e) = (&self.m.gpu, self.b, self.m.cfg.n_embd);
        let [router, gate_exps, up_exps, down_exps] = experts.map(|m| &*m.weight);
        let (Some(mb), Some(mx)) = (&b.moe, &b.moe_bufs) else {
            return Err(EngineError::InvalidArgument("MoE layer without MoE buffers".into()));
        };
        let (k, nff) = (moe.n_expert_used, moe.n_ff_expert);
        let shape = MoeShape {
            n_expert: moe.n_expert,
            k,
            n_embd: e,
            scale: moe.weights_scale,
            renormalize: renormalizes(moe),
        };
        let bias = |pick: fn(&MoeBiases<GpuVec>) -> &GpuVec| biases.map(|b| whole(pick(b))).transpose();
        let mut router_io = io(&b.h, e, &mx.router_logits, 0, moe.n_expert);
        router_io.bias = bias(|b| &b.router)?;
        self.linear(router, router_io, Epilogue::Store)?;
        self.ops.push(moe::route(gpu, &shape, &mx.router_logits, mb, &b.step)?);
        let mut gate_io = io(&b.h, e, &mx.g, 0, nff);
        gate_io.bias = bias(|b| &b.gate)?;
        let mut up_io = io(&b.h, e, &mx.u, 0, nff);
        up_io.gate = Some(&mx.g);
        up_io.bias = bias(|b| &b.up)?;
        let mut down_io = io(&mx.u, nff, &mx.y, 0, e);
        down_io.bias = bias(|b| &b.down)?;
        let glu = Epilogue::glu(act);
        let ex = |expert_rows, x_per_token| ExpertIds { ids: &mb.ids, k, expert_rows, x_per_token };
        let store = Epilogue::Store;
        if self.batched {
            let (gate_rows, tile) = grouped_shape(gpu, nff);
            let (down_rows, _) = grouped_shape(gpu, e);
            self.ops.push(moe::plan(gpu, &shape, tile, (gate_rows, down_rows), mb, &b.step)?);
            let g = |args_offset| Grouped { pairs: &mb.pairs, tiles: &mb.tiles, args: &mb.args, args_offset };
            self.ops.extend(linear_grouped(gpu, gate_exps, &gate_io, store, &b.step, &ex(nff, true), &g(0))?);
            self.ops.extend(linear_grouped(gpu, up_exps, &up_io, glu, &b.step, &ex(nff, true), &g(0))?);
            self.ops.extend(linear_grouped(gpu, down_exps, &down_io, store, &b.step, &ex(e, false), &g(12))?);
        } else {
            self.ops.extend(linear_ids(gpu, gate_exps, &gate_io, store, &b.step, &ex(nff, true))?);
            self.ops.extend(linear_ids(gpu, up_exps, &up_io, glu, &b.step, &ex(nff, true))?);
            self.ops.extend(linear_ids(gpu, down_exps, &down_io, store, &b.step, &ex(e, false))?);
        }
        self.ops.push(moe::combine(gpu, &shape, mb, &mx.y, dst, &b.step)?);
        Ok(())
    }

    /// A Gated DeltaNet block from `h` onto `x` (see [`Step::DeltaNet`]): the four
    /// projections, the convolution with its state, the q/k norms and gates, the delta rule
    /// (recurrent for decode, chunked for prefill), the gated norm and the output projection.
    fn delta_net(&mut self, l: &'a GpuLayer, d: &DeltaNetConfig, il: usize) -> Result<()> {
        let (gpu, b, c) = (&self.m.gpu, self.b, &self.m.cfg);
        let w = required(&l.delta_net, il, "DeltaNet tensors")?;
        let dn = b.delta_net.as_ref().ok_or_else(|| {
            EngineError::InvalidArgument(format!("layer {il} is recurrent but the context has no states"))
        })?;
        let i = il - self.m.first_layer as usize;
        let state = dn.states.get(i).and_then(Option::as_ref).ok_or_else(|| {
            EngineError::InvalidArgument(format!("layer {il} has no recurrent state buffers"))
        })?;
        let (e, ch, vd, nv) = (c.n_embd, d.conv_channels(), d.value_dim(), d.n_v_heads);
        let store = Epilogue::Store;
        self.linear(&w.qkv.weight, io(&b.h, e, &dn.conv_in, 0, ch), store)?;
        self.linear(&w.z.weight, io(&b.h, e, &dn.z, 0, vd), store)?;
        // Betas then alphas per group of value heads: the fused weight's own layout (a group
        // per key head), or the separate ones written side by side (one group).
        let group = match &w.beta_alpha {
            BetaAlpha::Separate { beta, alpha } => {
                self.linear(&beta.weight, io(&b.h, e, &dn.beta_alpha, 0, 2 * nv), store)?;
                self.linear(&alpha.weight, io(&b.h, e, &dn.beta_alpha, nv, 2 * nv), store)?;
                nv
            }
            BetaAlpha::Fused(ba) => {
                self.linear(&ba.weight, io(&b.h, e, &dn.beta_alpha, 0, 2 * nv), store)?;
                nv / d.n_k_heads
            }
        };
        let conv = ConvArgs {
            dims: d,
            n_ctx: b.n_ctx,
            n_seq: b.n_seq,
            input: &dn.conv_in,
            weight: whole(&w.conv)?,
            state: &state.conv,
            out: &dn.conv_out,
            step: &b.step,
            positions: &b.positions,
        };
        self.ops.extend(delta_net::conv(gpu, &conv)?);
        let gates = GateArgs {
            dims: d,
            eps: c.rms_eps,
            conv_out: &dn.conv_out,
            beta_alpha: &dn.beta_alpha,
            group,
            dt_bias: whole(&w.dt_bias)?,
            a: whole(&w.a)?,
            gates: &dn.gates,
            step: &b.step,
        };
        self.ops.extend(delta_net::qk_norm_gates(gpu, &gates)?);
        let rule = DeltaRuleArgs {
            dims: d,
            n_ctx: b.n_ctx,
            n_seq: b.n_seq,
            conv_out: &dn.conv_out,
            gates: &dn.gates,
            state: &state.ssm,
            out: &dn.out,
            step: &b.step,
            positions: &b.positions,
            scratch: Some(&dn.rule),
        };
        self.ops.extend(delta_rule(gpu, &rule, self.batched && gpu.tuning.chunked_delta_rule)?);
        self.ops.push(delta_net::gated_norm(gpu, d, c.rms_eps, &dn.out, &dn.z, whole(&w.norm)?, &b.step)?);
        self.linear(&w.out.weight, io(&dn.out, vd, &b.x, 0, e), Epilogue::Add)
    }

    /// The shared expert every token runs beside the routed ones (Qwen3.5 MoE, Qwen3-Next):
    /// its FFN of `h` into `a`, scaled by the sigmoid of its per-token gate logit, added to `dst`.
    fn shared_expert(
        &mut self,
        s: &'a SharedExpert<GpuMat>,
        act: FfnActivation,
        dst: &wgpu::Buffer,
    ) -> Result<()> {
        let (gpu, b, e) = (&self.m.gpu, self.b, self.m.cfg.n_embd);
        let gate_logit = b
            .shared_gate
            .as_ref()
            .ok_or_else(|| EngineError::InvalidArgument("a shared expert without its gate buffer".into()))?;
        self.dense_ffn(&s.gate, &s.up, &s.down, act, (&b.a, Epilogue::Store))?;
        self.linear(&s.gate_inp.weight, io(&b.h, e, gate_logit, 0, 1), Epilogue::Store)?;
        self.ops.push(add_gated(gpu, &b.a, gate_logit, dst, e, &b.step)?);
        Ok(())
    }

    /// A layer whose experts run on the CPU: the segment ends here; the CPU reads `h` and
    /// writes the experts' sum to `a`, which the next segment adds to the residual.
    fn experts_elsewhere(&mut self, il: usize, post_norm: bool) -> Result<()> {
        if post_norm {
            return Err(EngineError::Unsupported("post-norms around MoE layers".into()));
        }
        self.segments.push(Segment { ops: std::mem::take(&mut self.ops), cpu_moe: Some(il) });
        // Whole batch: rows past the step's tokens are scratch nobody reads.
        let (b, e) = (self.b, self.m.cfg.n_embd);
        self.ops.push(elementwise(&self.m.gpu, ElementwiseKey::Add, &b.a, &b.x, b.n_batch * e)?);
        Ok(())
    }
}

impl LayerBackend for GraphBuilder<'_> {
    fn step(&mut self, layer: &LayerPlan, step: &Step) -> Result<()> {
        let il = layer.index;
        let l = self.layer(il)?;
        let (b, c) = (self.b, &self.m.cfg);
        match step {
            Step::AttnNorm => self.norm(&l.attn_norm)?,
            Step::FfnNorm => self.norm(&l.ffn_norm)?,
            Step::DeltaNet { dims } => self.delta_net(l, dims, il)?,
            Step::Qkv { bias, gate } => {
                if *gate != c.attn_output_gate {
                    return Err(EngineError::InvalidArgument(format!(
                        "layer {il}: the plan's attention gate and the model's disagree"
                    )));
                }
                self.qkv(l, *bias, *gate, il)?
            }
            Step::RopeKv { qk_norm, table } => self.rope_kv(l, *qk_norm, *table, il)?,
            Step::Attention { scale, window, sinks } => self.attention(l, *scale, *window, *sinks, il)?,
            // The attention kernel has applied the output gate already (`AttentionArgs::gated`).
            Step::AttnOut { post_norm, bias, gate: _ } => {
                let (dst, epi) = self.block_out(*post_norm);
                let attn_w = c.n_head * c.head_dim_v;
                let mut o = io(&b.attn, attn_w, dst, 0, c.n_embd);
                if *bias {
                    o.bias = Some(whole(required(&l.attn_output_bias, il, "attention output bias")?)?);
                }
                self.linear(&required(&l.attn_output, il, "output projection")?.weight, o, epi)?;
                self.post_norm(&l.post_attention_norm, *post_norm, il, "post-attention norm")?;
            }
            Step::Ffn { ffn, post_norm } => {
                let dst = self.block_out(*post_norm);
                match (ffn, &l.ffn) {
                    (FfnPlan::Dense { act, .. }, FfnWeights::Dense { gate, up, down }) => {
                        self.dense_ffn(gate, up, down, *act, dst)?
                    }
                    (
                        FfnPlan::Moe { act, moe },
                        FfnWeights::Moe { router, gate_exps, up_exps, down_exps, biases, shared },
                    ) => {
                        if *post_norm {
                            return Err(EngineError::Unsupported("post-norms around MoE layers".into()));
                        }
                        let experts = [router, gate_exps, up_exps, down_exps];
                        self.moe_ffn(experts, biases.as_ref(), moe, *act, dst.0)?;
                        if let Some(shared) = shared {
                            self.shared_expert(shared, *act, dst.0)?;
                        }
                    }
                    (FfnPlan::Moe { .. }, FfnWeights::Elsewhere) => {
                        return self.experts_elsewhere(il, *post_norm);
                    }
                    _ => {
                        return Err(EngineError::InvalidArgument(format!(
                            "layer {il}: the plan's FFN and the layer's weights disagree"
                        )));
                    }
                }
                self.post_norm(&l.post_ffw_norm, *post_norm, il, "post-FFN norm")?;
            }
        }
        Ok(())
    }
}

/// The embedding (when the GPU holds the first layer) and the GPU's layers, as segments.
fn body(m: &GpuModel, b: &Buffers, batched: bool) -> Result<Vec<Segment>> {
    let c = &m.cfg;
    // With CPU layers in front, the step starts from their hidden state, already in `x`.
    let ops = match (&m.token_embd, m.first_layer) {
        (Some(embd), 0) => get_rows(&m.gpu, embd, &b.tokens, &b.x, c.n_embd, m.plan.embed_scale)?,
        _ => Vec::new(),
    };
    let mut builder = GraphBuilder { m, b, batched, ops, segments: Vec::new(), pending_post: None };
    m.plan.run(m.first_layer as usize..c.n_layer as usize, &mut builder)?;
    builder.segments.push(Segment { ops: builder.ops, cpu_moe: None });
    Ok(builder.segments)
}

/// Which rows of the step the head runs on.
#[derive(Copy, Clone, PartialEq, Eq)]
enum HeadRows {
    /// The last (single-sequence prompt or decode).
    Last,
    All,
    /// Those listed in `head_rows` (one per sequence of a multi-sequence step).
    Listed,
}

fn head(m: &GpuModel, b: &Buffers, rows: HeadRows) -> Result<Vec<Op>> {
    let gpu = &m.gpu;
    let c = &m.cfg;
    let e = c.n_embd;
    // The last layer's post-FFN norm, left for the head's norm to fuse.
    let post = match (m.layers.last(), c.has_post_norms) {
        (Some(l), true) => {
            Some((&b.a, whole(required(&l.post_ffw_norm, c.n_layer as usize - 1, "post-FFN norm")?)?))
        }
        _ => None,
    };
    // With Listed rows the fused post-norm completes only those rows of x: the step reads no
    // other row after this.
    let mut ops = vec![rms_norm(
        gpu,
        &NormArgs {
            n: e,
            eps: c.rms_eps,
            x: &b.x,
            weight: whole(&m.output_norm)?,
            out: &b.h,
            post,
            last_row_of: (rows == HeadRows::Last).then_some(&b.step),
            rows_from: (rows == HeadRows::Listed).then_some(&b.head_rows),
        },
    )?];
    let o = io(&b.h, e, &b.logits, 0, c.n_vocab);
    match rows {
        HeadRows::All => ops.extend(linear_op(gpu, m.head()?, &o, Epilogue::Store, &b.step, true)?),
        HeadRows::Listed => ops.extend(linear_op(gpu, m.head()?, &o, Epilogue::Store, &b.head_step, true)?),
        HeadRows::Last => {
            // One row (the last one, moved to row 0 by the norm) whatever the batch.
            for mut op in linear_op(gpu, m.head()?, &o, Epilogue::Store, &b.step, false)? {
                op.grid = Grid::Fixed(op.grid.dims(1));
                ops.push(op);
            }
        }
    }
    if let Some(cap) = m.plan.logit_softcap {
        let n_rows = if rows == HeadRows::Last { 1 } else { b.logit_rows };
        ops.push(softcap(gpu, &b.logits, cap, n_rows * c.n_vocab)?);
    }
    Ok(ops)
}
