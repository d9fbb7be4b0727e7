//! One chunk of tokens through the embedding and the layers, and the output head.

use std::ops::Range;

use wllm_loaders::ModelConfig;
use wllm_loaders::model::{FfnActivation, FfnWeights, MoeBiases, MoeConfig, RopeLayout};

use super::profile::{Clock, Profile};
use super::weights::{Layer, Weight};
use super::{CpuStack, Scratch};
use crate::cpu::Isa;
use crate::cpu::exec::Exec;
use crate::cpu::kv::KvCache;
use crate::cpu::linear::{LinearJob, WeightView, dequantize_rows, linear_multi_on};
use crate::cpu::ops::{
    Activation, Attention, Rope, add_in_place, add_rms_normed, attention_at, glu_on, rms_norm,
    rms_norm_in_place, rope_in_place, route,
};
use crate::error::{EngineError, Result};
use crate::layers::{FfnPlan, LayerBackend, LayerPlan, Step, required};

fn linear(exec: &dyn Exec, isa: Isa, w: WeightView<'_>, x: &[f32], n: usize, y: &mut [f32]) -> Result<()> {
    linear_multi_on(exec, isa, &mut [LinearJob { w, out: y }], x, n)
}

fn resize(v: &mut Vec<f32>, n: usize) {
    v.clear();
    v.resize(n, 0.0);
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
                kv: &mut self.kv,
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
        resize(x, tokens.len() * e);
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
    kv: &'a mut KvCache,
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
                resize(&mut sc.h, n * e);
                rms_norm(isa, &sc.x, w, c.rms_eps, &mut sc.h)?;
                self.clock.mark(&mut self.profile.norms);
            }
            Step::Qkv { bias } => {
                resize(&mut sc.q, n * c.n_embd_q() as usize);
                resize(&mut sc.k, n * c.n_embd_k() as usize);
                resize(&mut sc.v, n * c.n_embd_v() as usize);
                linear_multi_on(
                    exec,
                    isa,
                    &mut [
                        LinearJob { w: l.attn_q.view(), out: &mut sc.q },
                        LinearJob { w: l.attn_k.view(), out: &mut sc.k },
                        LinearJob { w: l.attn_v.view(), out: &mut sc.v },
                    ],
                    &sc.h,
                    n,
                )?;
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
                self.clock.mark(&mut self.profile.attention);
            }
            Step::AttnOut { post_norm, bias } => {
                resize(&mut sc.a, n * e);
                linear(exec, isa, l.attn_output.view(), &sc.attn, n, &mut sc.a)?;
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
                resize(&mut sc.a, n * e);
                let act = activation(ffn.act());
                match (ffn, &l.ffn) {
                    (FfnPlan::Dense { .. }, FfnWeights::Dense { gate, up, down }) => {
                        resize(&mut sc.g, n * gate.view().rows);
                        resize(&mut sc.u, n * up.view().rows);
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
                        FfnWeights::Moe { router, gate_exps, up_exps, down_exps, biases },
                    ) => {
                        let experts = Experts {
                            router,
                            gate: gate_exps,
                            up: up_exps,
                            down: down_exps,
                            biases: biases.as_ref(),
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
        }
        Ok(())
    }
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
        Ok(())
    }
}
