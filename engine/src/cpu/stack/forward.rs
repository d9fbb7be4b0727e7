//! One chunk of tokens through the embedding and the layers, and the output head.

use std::ops::Range;

use wllm_loaders::ModelConfig;
use wllm_loaders::model::{
    BetaAlpha, DeltaNetConfig, DeltaNetWeights, FfnActivation, FfnWeights, MoeBiases, MoeConfig, RopeLayout,
    SharedExpert,
};

use super::profile::{Clock, Profile};
use super::weights::{Layer, Weight};
use super::{CpuStack, Scratch};
use crate::cpu::Isa;
use crate::cpu::exec::Exec;
use crate::cpu::kv::KvCache;
use crate::cpu::linear::{LinearJob, WeightView, dequantize_rows, linear_multi_on};
use crate::cpu::ops::{
    Activation, Attention, Rope, add_in_place, add_rms_normed, attention_at, conv_silu, delta_rule_on,
    gated_rms_norm, gates, glu_on, l2_norm_heads, rms_norm, rms_norm_in_place, rope_in_place, route,
};
use crate::cpu::recurrent::RecurrentStates;
use crate::error::{EngineError, Result};
use crate::kv_type::hadamard_in_place;
use crate::layers::{FfnPlan, LayerBackend, LayerPlan, Step, required};

fn linear(exec: &dyn Exec, isa: Isa, w: WeightView<'_>, x: &[f32], n: usize, y: &mut [f32]) -> Result<()> {
    linear_multi_on(exec, isa, &mut [LinearJob { w, out: y }], x, n)
}

fn resize(v: &mut Vec<f32>, n: usize) {
    v.clear();
    v.resize(n, 0.0);
}

/// `v` as `n` elements for an op that writes every one of them: what is there is left as it
/// is, not zeroed. Zeroing each op's output had taken about a tenth of a 128-token prompt's
/// time on 2 threads (3.6 MB of scratch per SmolLM2 layer, on the calling thread alone).
fn for_overwrite(v: &mut Vec<f32>, n: usize) {
    match v.len() < n {
        true => v.resize(n, 0.0),
        false => v.truncate(n),
    }
}

impl CpuStack {
    /// `tokens`, each at its (position, cache row of its sequence's position 0), through the
    /// embedding and every layer, leaving the residual stream in `scratch.x`.
    pub(super) fn chunk(&mut self, tokens: &[u32], positions: &[[u32; 2]]) -> Result<()> {
        let on = self.profile.is_some();
        let mut profile = self.profile.take().unwrap_or_default();
        let mut clock = Clock::new(on);
        let r = (|| {
            self.embed(tokens)?;
            clock.mark(&mut profile.embed);
            let mut backend = CpuLayers {
                cfg: &self.cfg,
                isa: self.isa,
                exec: &self.team,
                layers: &self.w.layers,
                rope: &self.rope,
                n_rot: self.plan.rope.n_rot as usize,
                layout: self.plan.rope.layout,
                positions,
                n: tokens.len(),
                seq_ctx: self.seq_ctx,
                kv: &mut self.kv,
                states: &mut self.states,
                sc: &mut self.scratch,
                clock: &mut clock,
                profile: &mut profile,
            };
            self.plan.run(0..self.w.layers.len(), &mut backend)
        })();
        if on {
            self.profile = Some(profile);
        }
        r
    }

    fn embed(&mut self, tokens: &[u32]) -> Result<()> {
        let e = self.cfg.n_embd as usize;
        let x = &mut self.scratch.x;
        for_overwrite(x, tokens.len() * e);
        let w = self.w.token_embd.view();
        for (&t, row) in tokens.iter().zip(x.chunks_exact_mut(e)) {
            dequantize_rows(self.isa, w, t as usize, t as usize + 1, row)?;
        }
        let scale = self.plan.embed_scale;
        if scale != 1.0 {
            x.iter_mut().for_each(|v| *v *= scale);
        }
        Ok(())
    }

    /// The final norm and the output head for `rows` of the chunk in `scratch.x`, appended to
    /// `out`.
    pub(super) fn head(&mut self, rows: Range<usize>, out: &mut Vec<f32>) -> Result<()> {
        let rows: Vec<usize> = rows.collect();
        self.head_rows(&rows, out)
    }

    /// As [`head`](Self::head) for any rows of the chunk, in the order given: one pass over the
    /// head's weights for all of them.
    pub(super) fn head_rows(&mut self, rows: &[usize], out: &mut Vec<f32>) -> Result<()> {
        let Some((norm, head)) = &self.w.head else {
            return Err(EngineError::InvalidArgument(
                "this CPU stack was built without the output head".into(),
            ));
        };
        let t0 = std::time::Instant::now();
        let m = rows.len();
        let h = self.final_norm(rows, norm)?;
        let w = head.as_ref().unwrap_or(&self.w.token_embd).view();
        let start = out.len();
        out.resize(start + m * w.rows, 0.0);
        linear(&self.team, self.isa, w, &h, m, &mut out[start..])?;
        if let Some(cap) = self.plan.logit_softcap {
            softcap(&mut out[start..], cap);
        }
        if let Some(p) = &mut self.profile {
            p.head += t0.elapsed();
        }
        Ok(())
    }
}

impl CpuStack {
    /// The final norm of `rows` of the chunk in `scratch.x`: what the head reads.
    fn final_norm(&self, rows: &[usize], norm: &[f32]) -> Result<Vec<f32>> {
        let e = self.cfg.n_embd as usize;
        let m = rows.len();
        let x = &self.scratch.x;
        let picked: Vec<f32> = match rows.windows(2).all(|w| w[1] == w[0] + 1) {
            // Consecutive rows (a whole chunk, or its last row) need no copy.
            true if m > 0 => x[rows[0] * e..(rows[0] + m) * e].to_vec(),
            _ => rows.iter().flat_map(|&r| x[r * e..(r + 1) * e].iter().copied()).collect(),
        };
        let mut h = vec![0f32; m * e];
        rms_norm(self.isa, &picked, norm, self.cfg.rms_eps, &mut h)?;
        Ok(h)
    }

    /// The final-norm hidden state of every row of the chunk in `scratch.x`, appended to `out`.
    pub(super) fn normed_rows(&mut self, out: &mut Vec<f32>) -> Result<()> {
        let Some((norm, _)) = &self.w.head else {
            return Err(EngineError::InvalidArgument(
                "this CPU stack was built without the output norm".into(),
            ));
        };
        let n = self.scratch.x.len() / self.cfg.n_embd as usize;
        let rows: Vec<usize> = (0..n).collect();
        out.extend(self.final_norm(&rows, norm)?);
        Ok(())
    }
}

/// cap · tanh(v / cap): squashes logits into (-cap, cap).
pub fn softcap(logits: &mut [f32], cap: f32) {
    logits.iter_mut().for_each(|v| *v = cap * (*v / cap).tanh());
}

/// The CPU backend of the layer plan: one chunk of tokens through the plan's steps.
struct CpuLayers<'a> {
    cfg: &'a ModelConfig,
    isa: Isa,
    exec: &'a dyn Exec,
    layers: &'a [Layer],
    /// (cos, sin) tables by [`RopeTable`].
    rope: &'a [Vec<[f32; 2]>; 2],
    n_rot: usize,
    layout: RopeLayout,
    /// Per token: (position, cache row of its sequence's position 0).
    positions: &'a [[u32; 2]],
    n: usize,
    /// Positions per sequence: a token's sequence is its cache row over this.
    seq_ctx: usize,
    kv: &'a mut KvCache,
    states: &'a mut RecurrentStates,
    sc: &'a mut Scratch,
    clock: &'a mut Clock,
    profile: &'a mut Profile,
}

impl LayerBackend for CpuLayers<'_> {
    fn step(&mut self, layer: &LayerPlan, step: &Step) -> Result<()> {
        let il = layer.index;
        let l = self.layers.get(il).ok_or_else(|| {
            EngineError::InvalidArgument(format!(
                "layer {il} is not one of this stack's {}",
                self.layers.len()
            ))
        })?;
        let (c, isa, n, exec) = (self.cfg, self.isa, self.n, self.exec);
        let e = c.n_embd as usize;
        let sc = &mut *self.sc;
        match step {
            Step::AttnNorm | Step::FfnNorm => {
                let w = if *step == Step::AttnNorm { &l.attn_norm } else { &l.ffn_norm };
                for_overwrite(&mut sc.h, n * e);
                rms_norm(isa, &sc.x, w, c.rms_eps, &mut sc.h)?;
                self.clock.mark(&mut self.profile.norms);
            }
            Step::Qkv { bias, gate } => {
                let nq = c.n_embd_q() as usize;
                // With a gate, q's rows hold each head's query then its gate logits.
                let q_rows = if *gate { 2 * nq } else { nq };
                for_overwrite(&mut sc.q, n * q_rows);
                for_overwrite(&mut sc.k, n * c.n_embd_k() as usize);
                for_overwrite(&mut sc.v, n * c.n_embd_v() as usize);
                linear_multi_on(
                    exec,
                    isa,
                    &mut [
                        LinearJob { w: required(&l.attn_q, il, "q projection")?.view(), out: &mut sc.q },
                        LinearJob { w: required(&l.attn_k, il, "k projection")?.view(), out: &mut sc.k },
                        LinearJob { w: required(&l.attn_v, il, "v projection")?.view(), out: &mut sc.v },
                    ],
                    &sc.h,
                    n,
                )?;
                if *gate {
                    split_query_gate(&mut sc.q, &mut sc.gate, c.head_dim as usize);
                }
                if *bias {
                    for (b, y, what) in [
                        (&l.attn_q_bias, &mut sc.q, "q bias"),
                        (&l.attn_k_bias, &mut sc.k, "k bias"),
                        (&l.attn_v_bias, &mut sc.v, "v bias"),
                    ] {
                        add_rows(y, required(b, il, what)?)?;
                    }
                }
                self.clock.mark(&mut self.profile.qkv);
            }
            Step::RopeKv { qk_norm, table } => {
                let norms = match qk_norm {
                    true => Some((
                        required(&l.attn_q_norm, il, "q norm")?,
                        required(&l.attn_k_norm, il, "k norm")?,
                    )),
                    false => None,
                };
                let table = &self.rope[*table as usize];
                rope_and_cache(
                    self.cfg,
                    isa,
                    il,
                    self.positions,
                    (self.n_rot, self.layout),
                    table,
                    norms,
                    self.kv,
                    sc,
                )?;
                self.clock.mark(&mut self.profile.rope);
            }
            Step::Attention { scale, window, sinks } => {
                resize(&mut sc.attn, n * c.n_head as usize * c.head_dim_v as usize);
                let att = Attention {
                    n_head: c.n_head as usize,
                    n_kv: c.n_head_kv as usize,
                    head_dim: c.head_dim as usize,
                    head_dim_v: c.head_dim_v as usize,
                    n_ctx: self.kv.n_ctx,
                    scale: *scale,
                    window: *window as usize,
                    pos0: 0,
                };
                let sinks =
                    if *sinks { Some(&required(&l.attn_sinks, il, "attention sinks")?[..]) } else { None };
                let kv = self.kv.layer(il);
                attention_at(exec, isa, &att, &sc.q, self.positions, kv, sinks, &mut sc.attn)?;
                // A rotated V gave a rotated output; the rotation is its own inverse.
                if let Some(block) = self.kv.v_rotation {
                    hadamard_in_place(&mut sc.attn, block);
                }
                self.clock.mark(&mut self.profile.attention);
            }
            Step::AttnOut { post_norm, bias, gate } => {
                for_overwrite(&mut sc.a, n * e);
                if *gate {
                    if sc.gate.len() != sc.attn.len() {
                        return Err(EngineError::InvalidArgument(format!(
                            "layer {il}: {} gate logits for {} attention outputs",
                            sc.gate.len(),
                            sc.attn.len()
                        )));
                    }
                    for (o, g) in sc.attn.iter_mut().zip(&sc.gate) {
                        *o *= 1.0 / (1.0 + (-g).exp());
                    }
                }
                let wo = required(&l.attn_output, il, "output projection")?;
                linear(exec, isa, wo.view(), &sc.attn, n, &mut sc.a)?;
                if *bias {
                    add_rows(&mut sc.a, required(&l.attn_output_bias, il, "attention output bias")?)?;
                }
                self.clock.mark(&mut self.profile.attn_out);
                let post = if *post_norm {
                    Some(required(&l.post_attention_norm, il, "post-attention norm")?)
                } else {
                    None
                };
                add_residual(isa, sc, post, c.rms_eps)?;
            }
            Step::Ffn { ffn, post_norm } => {
                // The dense down projection writes every element; the experts zero it first.
                for_overwrite(&mut sc.a, n * e);
                let act = activation(ffn.act());
                match (ffn, &l.ffn) {
                    (FfnPlan::Dense { .. }, FfnWeights::Dense { gate, up, down }) => {
                        for_overwrite(&mut sc.g, n * gate.view().rows);
                        for_overwrite(&mut sc.u, n * up.view().rows);
                        linear_multi_on(
                            exec,
                            isa,
                            &mut [
                                LinearJob { w: gate.view(), out: &mut sc.g },
                                LinearJob { w: up.view(), out: &mut sc.u },
                            ],
                            &sc.h,
                            n,
                        )?;
                        self.clock.mark(&mut self.profile.ffn_in);
                        glu_on(exec, isa, act, &mut sc.g, &mut sc.u)?;
                        self.clock.mark(&mut self.profile.glu);
                        linear(exec, isa, down.view(), &sc.u, n, &mut sc.a)?;
                    }
                    (
                        FfnPlan::Moe { moe, .. },
                        FfnWeights::Moe { router, gate_exps, up_exps, down_exps, biases, shared },
                    ) => {
                        let experts = Experts {
                            router,
                            gate: gate_exps,
                            up: up_exps,
                            down: down_exps,
                            biases: biases.as_ref(),
                            shared: shared.as_ref(),
                        };
                        experts.run(exec, isa, moe, act, e, &sc.h, n, &mut sc.a)?;
                    }
                    _ => {
                        return Err(EngineError::InvalidArgument(format!(
                            "layer {il}: the plan's FFN and the layer's weights disagree"
                        )));
                    }
                }
                self.clock.mark(&mut self.profile.ffn_out);
                let post =
                    if *post_norm { Some(required(&l.post_ffw_norm, il, "post-FFN norm")?) } else { None };
                add_residual(isa, sc, post, c.rms_eps)?;
                self.clock.mark(&mut self.profile.norms);
            }
            Step::DeltaNet { dims } => {
                let w = required(&l.delta_net, il, "DeltaNet tensors")?;
                let seqs = self.positions.iter().map(|&[pos, row0]| (row0 as usize / self.seq_ctx, pos));
                let seqs: Vec<(usize, u32)> = seqs.collect();
                delta_net_block(exec, isa, c, dims, w, il, &seqs, self.states, sc)?;
                self.clock.mark(&mut self.profile.attention);
                add_in_place(&mut sc.x, &sc.a)?;
            }
        }
        Ok(())
    }
}

/// Moves each head's gate logits (the second half of its rows in `q`) into `gate`, leaving
/// `q` the plain queries.
fn split_query_gate(q: &mut Vec<f32>, gate: &mut Vec<f32>, hd: usize) {
    let mut queries = Vec::with_capacity(q.len() / 2);
    gate.clear();
    for pair in q.chunks_exact(2 * hd) {
        queries.extend_from_slice(&pair[..hd]);
        gate.extend_from_slice(&pair[hd..]);
    }
    *q = queries;
}

/// A Gated DeltaNet block (see [`Step::DeltaNet`]) from `sc.h` into `sc.a`. `seqs` gives each
/// token's (sequence, position); a sequence's tokens are consecutive and in order, and one
/// at position 0 starts the sequence's states afresh.
#[allow(clippy::too_many_arguments)]
fn delta_net_block(
    exec: &dyn Exec,
    isa: Isa,
    c: &ModelConfig,
    d: &DeltaNetConfig,
    w: &DeltaNetWeights<Weight, Vec<f32>>,
    il: usize,
    seqs: &[(usize, u32)],
    states: &mut RecurrentStates,
    sc: &mut Scratch,
) -> Result<()> {
    let n = seqs.len();
    let (ch, vd, nv, hd) =
        (d.conv_channels() as usize, d.value_dim() as usize, d.n_v_heads as usize, d.head_dim as usize);
    let kd = d.key_dim() as usize;
    resize(&mut sc.q, n * ch);
    resize(&mut sc.gate, n * vd);
    match &w.beta_alpha {
        BetaAlpha::Separate { beta, alpha } => {
            resize(&mut sc.g, n * nv);
            resize(&mut sc.u, n * nv);
            linear_multi_on(
                exec,
                isa,
                &mut [
                    LinearJob { w: w.qkv.view(), out: &mut sc.q },
                    LinearJob { w: w.z.view(), out: &mut sc.gate },
                    LinearJob { w: beta.view(), out: &mut sc.g },
                    LinearJob { w: alpha.view(), out: &mut sc.u },
                ],
                &sc.h,
                n,
            )?;
        }
        BetaAlpha::Fused(ba) => {
            resize(&mut sc.k, n * 2 * nv);
            linear_multi_on(
                exec,
                isa,
                &mut [
                    LinearJob { w: w.qkv.view(), out: &mut sc.q },
                    LinearJob { w: w.z.view(), out: &mut sc.gate },
                    LinearJob { w: ba.view(), out: &mut sc.k },
                ],
                &sc.h,
                n,
            )?;
            // Per key head: its group's betas, then its alphas.
            let r = (d.n_v_heads / d.n_k_heads) as usize;
            sc.g.clear();
            sc.u.clear();
            for group in sc.k.chunks_exact(2 * r) {
                sc.g.extend_from_slice(&group[..r]);
                sc.u.extend_from_slice(&group[r..]);
            }
        }
    }
    gates(&mut sc.g, &mut sc.u, &w.dt_bias, &w.a)?;
    let (beta, g) = (&sc.g, &sc.u);
    // The convolution output, then q, k, v split out of it per token.
    resize(&mut sc.v, n * ch);
    resize(&mut sc.attn, n * vd);
    let mut t0 = 0;
    while t0 < n {
        let seq = seqs[t0].0;
        let t1 = t0 + seqs[t0..].iter().take_while(|s| s.0 == seq).count();
        let (conv_state, ssm_state) = states.get(il, seq).ok_or_else(|| {
            EngineError::InvalidArgument(format!("layer {il} has no recurrent state for sequence {seq}"))
        })?;
        if seqs[t0].1 == 0 {
            conv_state.fill(0.0);
            ssm_state.fill(0.0);
        }
        let conv_out = &mut sc.v[t0 * ch..t1 * ch];
        conv_silu(d, &w.conv, conv_state, &sc.q[t0 * ch..t1 * ch], conv_out)?;
        let m = t1 - t0;
        let (mut q, mut k, mut v) =
            (Vec::with_capacity(m * kd), Vec::with_capacity(m * kd), Vec::with_capacity(m * vd));
        for row in conv_out.chunks_exact(ch) {
            q.extend_from_slice(&row[..kd]);
            k.extend_from_slice(&row[kd..2 * kd]);
            v.extend_from_slice(&row[2 * kd..]);
        }
        l2_norm_heads(isa, &mut q, hd, c.rms_eps)?;
        l2_norm_heads(isa, &mut k, hd, c.rms_eps)?;
        let out = &mut sc.attn[t0 * vd..t1 * vd];
        delta_rule_on(
            exec,
            isa,
            d,
            ssm_state,
            &q,
            &k,
            &v,
            &g[t0 * nv..t1 * nv],
            &beta[t0 * nv..t1 * nv],
            out,
        )?;
        t0 = t1;
    }
    gated_rms_norm(isa, &mut sc.attn, &sc.gate, &w.norm, c.rms_eps)?;
    resize(&mut sc.a, n * c.n_embd as usize);
    linear(exec, isa, w.out.view(), &sc.attn, n, &mut sc.a)
}

pub(crate) fn activation(act: FfnActivation) -> Activation {
    match act {
        FfnActivation::Silu => Activation::Silu,
        FfnActivation::GeluTanh => Activation::GeluTanh,
        FfnActivation::SwigluOai => Activation::SwigluOai,
    }
}

/// Adds `bias` to each of the rows of `y`.
fn add_rows(y: &mut [f32], bias: &[f32]) -> Result<()> {
    y.chunks_exact_mut(bias.len()).try_for_each(|row| add_in_place(row, bias))
}

/// x += a, or x += rms_norm(a) · post.
fn add_residual(isa: Isa, sc: &mut Scratch, post: Option<&Vec<f32>>, eps: f32) -> Result<()> {
    match post {
        Some(w) => add_rms_normed(isa, &mut sc.x, &sc.a, w, eps),
        None => add_in_place(&mut sc.x, &sc.a),
    }
}

/// q/k norms and RoPE on every head of the chunk, then K and V into the cache.
#[allow(clippy::too_many_arguments)]
fn rope_and_cache(
    c: &ModelConfig,
    isa: Isa,
    il: usize,
    positions: &[[u32; 2]],
    (n_rot, layout): (usize, RopeLayout),
    table: &[[f32; 2]],
    norms: Option<(&Vec<f32>, &Vec<f32>)>,
    kv: &mut KvCache,
    sc: &mut Scratch,
) -> Result<()> {
    let hd = c.head_dim as usize;
    let (nq, nk, nv) = (c.n_embd_q() as usize, c.n_embd_k() as usize, c.n_embd_v() as usize);
    let half = n_rot / 2;
    let rope = Rope { n_rot, layout };
    for (t, &[pos, row0]) in positions.iter().enumerate() {
        let pos = pos as usize;
        let cs = table
            .get(pos * half..(pos + 1) * half)
            .ok_or(EngineError::ContextOverflow { n_tokens: pos + 1, n_ctx: table.len() / half.max(1) })?;
        for (rows, norm) in [
            (&mut sc.q[t * nq..(t + 1) * nq], norms.map(|n| n.0)),
            (&mut sc.k[t * nk..(t + 1) * nk], norms.map(|n| n.1)),
        ] {
            for head in rows.chunks_exact_mut(hd) {
                if let Some(w) = norm {
                    rms_norm_in_place(isa, head, w, c.rms_eps)?;
                }
                rope_in_place(rope, head, cs)?;
            }
        }
        // q turns with a rotated K, so that scores stay what they were.
        if let Some(block) = kv.k_rotation {
            hadamard_in_place(&mut sc.q[t * nq..(t + 1) * nq], block);
        }
        let row = row0 as usize + pos;
        kv.write(isa, il, row, &sc.k[t * nk..(t + 1) * nk], &sc.v[t * nv..(t + 1) * nv]);
    }
    Ok(())
}

/// A layer's experts, stacked as rows: expert `x` owns rows `x·n_ff..(x+1)·n_ff` of gate and
/// up and `x·n_embd..(x+1)·n_embd` of down.
pub(crate) struct Experts<'a> {
    // Borrowed from a stack's layer or a `CpuExperts`.
    pub router: &'a Weight,
    pub gate: &'a Weight,
    pub up: &'a Weight,
    pub down: &'a Weight,
    pub biases: Option<&'a MoeBiases<Vec<f32>>>,
    pub shared: Option<&'a SharedExpert<Weight>>,
}

impl Experts<'_> {
    /// `out` (n × e) = the routed experts' FFNs of `h`, weighted and summed. Tokens are grouped
    /// by expert so that each expert's weights are read once per chunk.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run(
        &self,
        exec: &dyn Exec,
        isa: Isa,
        moe: &MoeConfig,
        act: Activation,
        e: usize,
        h: &[f32],
        n: usize,
        out: &mut [f32],
    ) -> Result<()> {
        let n_exp = moe.n_expert as usize;
        let nff = moe.n_ff_expert as usize;
        let mut logits = vec![0f32; n * n_exp];
        linear(exec, isa, self.router.view(), h, n, &mut logits)?;
        if let Some(b) = self.biases {
            add_rows(&mut logits, &b.router)?;
        }
        let mut by_expert: Vec<Vec<(usize, f32)>> = vec![Vec::new(); n_exp];
        for (t, row) in logits.chunks_exact(n_exp).enumerate() {
            for r in route(moe, row)? {
                by_expert[r.expert].push((t, r.weight));
            }
        }
        out.fill(0.0);
        let (mut hx, mut g, mut u, mut o) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (x, toks) in by_expert.iter().enumerate().filter(|(_, t)| !t.is_empty()) {
            let m = toks.len();
            hx.clear();
            for &(t, _) in toks {
                hx.extend_from_slice(&h[t * e..(t + 1) * e]);
            }
            resize(&mut g, m * nff);
            resize(&mut u, m * nff);
            resize(&mut o, m * e);
            let (gate, up) =
                (self.gate.view().rows(x * nff, (x + 1) * nff), self.up.view().rows(x * nff, (x + 1) * nff));
            linear_multi_on(
                exec,
                isa,
                &mut [LinearJob { w: gate, out: &mut g }, LinearJob { w: up, out: &mut u }],
                &hx,
                m,
            )?;
            if let Some(b) = self.biases {
                add_rows(&mut g, &b.gate[x * nff..(x + 1) * nff])?;
                add_rows(&mut u, &b.up[x * nff..(x + 1) * nff])?;
            }
            glu_on(exec, isa, act, &mut g, &mut u)?;
            linear(exec, isa, self.down.view().rows(x * e, (x + 1) * e), &u, m, &mut o)?;
            if let Some(b) = self.biases {
                add_rows(&mut o, &b.down[x * e..(x + 1) * e])?;
            }
            for (&(t, wt), row) in toks.iter().zip(o.chunks_exact(e)) {
                for (y, v) in out[t * e..(t + 1) * e].iter_mut().zip(row) {
                    *y += wt * v;
                }
            }
        }
        if let Some(sh) = self.shared {
            let s_ff = sh.gate.view().rows;
            resize(&mut g, n * s_ff);
            resize(&mut u, n * s_ff);
            let mut logit = vec![0f32; n];
            linear_multi_on(
                exec,
                isa,
                &mut [
                    LinearJob { w: sh.gate.view(), out: &mut g },
                    LinearJob { w: sh.up.view(), out: &mut u },
                    LinearJob { w: sh.gate_inp.view(), out: &mut logit },
                ],
                h,
                n,
            )?;
            glu_on(exec, isa, act, &mut g, &mut u)?;
            resize(&mut o, n * e);
            linear(exec, isa, sh.down.view(), &u, n, &mut o)?;
            for ((row, y), l) in o.chunks_exact(e).zip(out.chunks_exact_mut(e)).zip(&logit) {
                let wt = 1.0 / (1.0 + (-l).exp());
                for (y, v) in y.iter_mut().zip(row) {
                    *y += wt * v;
                }
            }
        }
        Ok(())
    }
}
