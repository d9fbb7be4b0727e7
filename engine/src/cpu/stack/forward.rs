//! One chunk of tokens through the embedding and the layers, and the output head.

use std::ops::Range;

use wllm_loaders::ModelConfig;
use wllm_loaders::model::{FfnActivation, MoeConfig};

use super::profile::{Clock, Profile};
use super::weights::{Ffn, Layer, Weight};
use super::{CpuStack, Scratch};
use crate::cpu::Isa;
use crate::cpu::exec::Exec;
use crate::cpu::kv::KvCache;
use crate::cpu::linear::{LinearJob, WeightView, dequantize_rows, linear_multi_on};
use crate::cpu::ops::{
    Activation, Attention, Rope, add_in_place, add_rms_normed, attention_on, glu_on, rms_norm,
    rms_norm_in_place, rope_in_place, route,
};
use crate::error::{EngineError, Result};

fn linear(exec: &dyn Exec, isa: Isa, w: WeightView<'_>, x: &[f32], n: usize, y: &mut [f32]) -> Result<()> {
    linear_multi_on(exec, isa, &mut [LinearJob { w, out: y }], x, n)
}

fn resize(v: &mut Vec<f32>, n: usize) {
    v.clear();
    v.resize(n, 0.0);
}

impl CpuStack {
    /// `tokens` at positions `pos0..` through the embedding and every layer, leaving the
    /// residual stream in `scratch.x`.
    pub(super) fn chunk(&mut self, tokens: &[u32], pos0: usize) -> Result<()> {
        let on = self.profile.is_some();
        let mut p = self.profile.take().unwrap_or_default();
        let mut clock = Clock::new(on);
        let r = (|| {
            self.embed(tokens)?;
            clock.mark(&mut p.embed);
            for il in 0..self.w.layers.len() {
                let table = if self.cfg.is_swa(il) && !self.rope[1].is_empty() {
                    &self.rope[1]
                } else {
                    &self.rope[0]
                };
                let ctx = LayerCtx {
                    cfg: &self.cfg,
                    isa: self.isa,
                    exec: &self.team,
                    il,
                    pos0,
                    n: tokens.len(),
                    table,
                };
                ctx.run(&self.w.layers[il], &mut self.kv, &mut self.scratch, &mut clock, &mut p)?;
            }
            Ok(())
        })();
        if on {
            self.profile = Some(p);
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
        if let Some(scale) = self.cfg.embed_scale {
            x.iter_mut().for_each(|v| *v *= scale);
        }
        Ok(())
    }

    /// The final norm and the output head for `rows` of the chunk in `scratch.x`, appended to
    /// `out`.
    pub(super) fn head(&mut self, rows: Range<usize>, out: &mut Vec<f32>) -> Result<()> {
        let Some((norm, head)) = &self.w.head else {
            return Err(EngineError::InvalidArgument(
                "this CPU stack was built without the output head".into(),
            ));
        };
        let t0 = std::time::Instant::now();
        let e = self.cfg.n_embd as usize;
        let m = rows.len();
        let mut h = vec![0f32; m * e];
        rms_norm(self.isa, &self.scratch.x[rows.start * e..rows.end * e], norm, self.cfg.rms_eps, &mut h)?;
        let w = head.as_ref().unwrap_or(&self.w.token_embd).view();
        let start = out.len();
        out.resize(start + m * w.rows, 0.0);
        linear(&self.team, self.isa, w, &h, m, &mut out[start..])?;
        if let Some(cap) = self.cfg.final_logit_softcap {
            out[start..].iter_mut().for_each(|v| *v = cap * (*v / cap).tanh());
        }
        if let Some(p) = &mut self.profile {
            p.head += t0.elapsed();
        }
        Ok(())
    }
}

/// What one layer's step needs besides its weights, cache and scratch.
struct LayerCtx<'a> {
    cfg: &'a ModelConfig,
    isa: Isa,
    exec: &'a dyn Exec,
    il: usize,
    pos0: usize,
    n: usize,
    table: &'a [[f32; 2]],
}

impl LayerCtx<'_> {
    fn run(
        &self,
        l: &Layer,
        kv: &mut KvCache,
        sc: &mut Scratch,
        clock: &mut Clock,
        p: &mut Profile,
    ) -> Result<()> {
        let (c, isa, n, exec) = (self.cfg, self.isa, self.n, self.exec);
        let e = c.n_embd as usize;
        let (nq, nk, nv) = (c.n_embd_q() as usize, c.n_embd_k() as usize, c.n_embd_v() as usize);
        resize(&mut sc.h, n * e);
        resize(&mut sc.q, n * nq);
        resize(&mut sc.k, n * nk);
        resize(&mut sc.v, n * nv);
        resize(&mut sc.attn, n * c.n_head as usize * c.head_dim_v as usize);
        resize(&mut sc.a, n * e);

        rms_norm(isa, &sc.x, &l.attn_norm, c.rms_eps, &mut sc.h)?;
        clock.mark(&mut p.norms);
        linear_multi_on(
            exec,
            isa,
            &mut [
                LinearJob { w: l.wq.view(), out: &mut sc.q },
                LinearJob { w: l.wk.view(), out: &mut sc.k },
                LinearJob { w: l.wv.view(), out: &mut sc.v },
            ],
            &sc.h,
            n,
        )?;
        for (bias, y) in [(&l.bq, &mut sc.q), (&l.bk, &mut sc.k), (&l.bv, &mut sc.v)] {
            if let Some(b) = bias {
                y.chunks_exact_mut(b.len()).try_for_each(|row| add_in_place(row, b))?;
            }
        }
        clock.mark(&mut p.qkv);
        self.rope_and_cache(l, kv, sc)?;
        clock.mark(&mut p.rope);
        let window = if c.is_swa(self.il) { c.sliding_window as usize } else { 0 };
        let att = Attention {
            n_head: c.n_head as usize,
            n_kv: c.n_head_kv as usize,
            head_dim: c.head_dim as usize,
            head_dim_v: c.head_dim_v as usize,
            n_ctx: kv.n_ctx,
            scale: c.attn_scale,
            window,
            pos0: self.pos0,
        };
        attention_on(exec, isa, &att, &sc.q, kv.layer(self.il), &mut sc.attn)?;
        clock.mark(&mut p.attention);
        linear(exec, isa, l.wo.view(), &sc.attn, n, &mut sc.a)?;
        clock.mark(&mut p.attn_out);
        match &l.post_attn_norm {
            Some(w) => add_rms_normed(isa, &mut sc.x, &sc.a, w, c.rms_eps)?,
            None => add_in_place(&mut sc.x, &sc.a)?,
        }
        rms_norm(isa, &sc.x, &l.ffn_norm, c.rms_eps, &mut sc.h)?;
        clock.mark(&mut p.norms);
        let act = match c.ffn_act {
            FfnActivation::Silu => Activation::Silu,
            FfnActivation::GeluTanh => Activation::GeluTanh,
        };
        match &l.ffn {
            Ffn::Dense { gate, up, down } => {
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
                clock.mark(&mut p.ffn_in);
                glu_on(exec, isa, act, &mut sc.g, &mut sc.u)?;
                clock.mark(&mut p.glu);
                linear(exec, isa, down.view(), &sc.u, n, &mut sc.a)?;
            }
            Ffn::Moe { router, gate_exps, up_exps, down_exps } => {
                let moe = c.moe.as_ref().ok_or_else(|| {
                    EngineError::InvalidArgument("expert tensors in a model without expert_count".into())
                })?;
                let experts = Experts { router, gate: gate_exps, up: up_exps, down: down_exps };
                experts.run(exec, isa, moe, act, e, &sc.h, n, &mut sc.a)?;
            }
        }
        clock.mark(&mut p.ffn_out);
        match &l.post_ffw_norm {
            Some(w) => add_rms_normed(isa, &mut sc.x, &sc.a, w, c.rms_eps)?,
            None => add_in_place(&mut sc.x, &sc.a)?,
        }
        clock.mark(&mut p.norms);
        Ok(())
    }

    /// q/k norms and RoPE on every head of the chunk, then K and V into the cache.
    fn rope_and_cache(&self, l: &Layer, kv: &mut KvCache, sc: &mut Scratch) -> Result<()> {
        let (c, isa) = (self.cfg, self.isa);
        let hd = c.head_dim as usize;
        let (nq, nk, nv) = (c.n_embd_q() as usize, c.n_embd_k() as usize, c.n_embd_v() as usize);
        let half = c.rope_dim as usize / 2;
        let rope = Rope { n_rot: c.rope_dim as usize, layout: c.rope_layout };
        for t in 0..self.n {
            let pos = self.pos0 + t;
            let cs = self.table.get(pos * half..(pos + 1) * half).ok_or(EngineError::ContextOverflow {
                n_tokens: pos + 1,
                n_ctx: self.table.len() / half.max(1),
            })?;
            for (rows, norm) in
                [(&mut sc.q[t * nq..(t + 1) * nq], &l.q_norm), (&mut sc.k[t * nk..(t + 1) * nk], &l.k_norm)]
            {
                for head in rows.chunks_exact_mut(hd) {
                    if let Some(w) = norm {
                        rms_norm_in_place(isa, head, w, c.rms_eps)?;
                    }
                    rope_in_place(rope, head, cs)?;
                }
            }
            kv.write(isa, self.il, pos, &sc.k[t * nk..(t + 1) * nk], &sc.v[t * nv..(t + 1) * nv]);
        }
        Ok(())
    }
}

/// A layer's experts, stacked as rows: expert `x` owns rows `x·n_ff..(x+1)·n_ff` of gate and
/// up and `x·n_embd..(x+1)·n_embd` of down.
pub(crate) struct Experts<'a> {
    // Borrowed from a stack's layer or a `CpuExperts`.
    pub router: &'a Weight,
    pub gate: &'a Weight,
    pub up: &'a Weight,
    pub down: &'a Weight,
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
            glu_on(exec, isa, act, &mut g, &mut u)?;
            linear(exec, isa, self.down.view().rows(x * e, (x + 1) * e), &u, m, &mut o)?;
            for (&(t, wt), row) in toks.iter().zip(o.chunks_exact(e)) {
                for (y, v) in out[t * e..(t + 1) * e].iter_mut().zip(row) {
                    *y += wt * v;
                }
            }
        }
        Ok(())
    }
}
