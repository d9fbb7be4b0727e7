//! The layer plan: what a forward step computes, as a backend-neutral list of steps per layer,
//! built once from a model's config (its architecture's traits) and its RoPE factors. The GPU
//! graph builder and the CPU stack both walk this plan through [`LayerBackend`]; each gives
//! every [`Step`] one kernel (or fused group of kernels) of its own. A new layer feature is a
//! new step or step field here plus its kernel in each backend, and the compiler points at
//! every backend that does not handle it yet.

use wllm_loaders::ModelConfig;
use wllm_loaders::model::{
    DeltaNetConfig, ExpertGating, FfnActivation, ModelWeights, MoeConfig, RopeLayout, TensorSource, Yarn,
};

use crate::error::{EngineError, Result};

/// Which RoPE table a layer reads.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RopeTable {
    Global = 0,
    /// Sliding-window layers with their own base (Gemma 3).
    Sliding = 1,
}

/// Everything that decides the (cos, sin) tables.
#[derive(Clone, Debug, PartialEq)]
pub struct RopeSpec {
    /// Rotated dimensions per head.
    pub n_rot: u32,
    pub layout: RopeLayout,
    /// Bases of the global and the sliding-window table.
    pub bases: [f32; 2],
    /// Multiplier on positions (linear scaling).
    pub freq_scale: f32,
    /// Per-frequency divisors (`rope_freqs.weight`; Llama 3.x), one per rotated pair.
    pub factors: Option<Vec<f32>>,
    /// YaRN's per-pair blend of scaled and unscaled frequencies, and its magnitude factor.
    pub yarn: Option<Yarn>,
}

impl RopeSpec {
    /// (cos, sin) for positions `0..n_ctx` and each of the `n_rot / 2` frequencies, computed
    /// in f64. Frequency `i` is `freq_scale · base^(-2i / n_rot) / factor_i`, as llama.cpp's
    /// rope with freq factors computes it; with YaRN, pair `i` blends that with the unscaled
    /// frequency by llama.cpp's ramp and both values are multiplied by YaRN's magnitude factor.
    pub fn table(&self, which: RopeTable, n_ctx: u32) -> Vec<[f32; 2]> {
        let half = (self.n_rot / 2) as usize;
        let base = self.bases[which as usize];
        let scale = self.freq_scale as f64;
        let yarn =
            self.yarn.as_ref().map(|y| (y.corr_dims(self.n_rot, base), y.mscale(self.freq_scale) as f64));
        let inv: Vec<f64> = (0..half)
            .map(|i| {
                let factor = self.factors.as_ref().map_or(1.0, |f| f[i] as f64);
                let extrapolated = (base as f64).powf(-2.0 * i as f64 / self.n_rot as f64) / factor;
                match yarn {
                    None => extrapolated * scale,
                    Some(([low, high], _)) => {
                        let ramp = yarn_ramp(low, high, i);
                        extrapolated * scale * (1.0 - ramp) + extrapolated * ramp
                    }
                }
            })
            .collect();
        let mscale = yarn.map_or(1.0, |(_, m)| m);
        let mut out = Vec::with_capacity(n_ctx as usize * half);
        for pos in 0..n_ctx {
            for f in &inv {
                let angle = pos as f64 * f;
                out.push([(angle.cos() * mscale) as f32, (angle.sin() * mscale) as f32]);
            }
        }
        out
    }

    /// Whether the sliding-window table differs from the global one.
    pub fn has_sliding(&self) -> bool {
        self.bases[0] != self.bases[1]
    }
}

/// How much of pair `i` keeps its unscaled frequency: 1 below `low`, 0 above `high`, linear
/// between (llama.cpp's `rope_yarn_ramp`).
fn yarn_ramp(low: f32, high: f32, i: usize) -> f64 {
    let y = (i as f64 - low as f64) / (high as f64 - low as f64).max(0.001);
    1.0 - y.clamp(0.0, 1.0)
}

/// A layer's feed-forward block.
#[derive(Clone, Debug, PartialEq)]
pub enum FfnPlan {
    /// act(h · Wgate) ⊙ (h · Wup) · Wdown.
    Dense { act: FfnActivation, n_ff: u32 },
    /// The same per expert, for the top-k experts the router picks, weighted and summed.
    Moe { act: FfnActivation, moe: MoeConfig },
}

impl FfnPlan {
    pub fn act(&self) -> FfnActivation {
        match self {
            FfnPlan::Dense { act, .. } | FfnPlan::Moe { act, .. } => *act,
        }
    }
}

/// One step of a layer, in order. `x` is the residual stream, `h` the normed input of a block.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// h = rms_norm(x) · attn_norm.
    AttnNorm,
    /// [q | k | v] = h · [Wq | Wk | Wv] (+ biases). With `gate`, Wq yields per head the query
    /// and then as many output-gate logits, which are set aside for [`Step::AttnOut`].
    Qkv { bias: bool, gate: bool },
    /// Per-head RMS norms of q and k (when `qk_norm`), RoPE on q and k from `table`, then k and
    /// v into the KV cache at the step's positions.
    RopeKv { qk_norm: bool, table: RopeTable },
    /// Causal softmax(q·kᵀ·scale)·v over the cache, within `window` positions when non-zero;
    /// with `sinks`, each head's learned logit joins the softmax's denominator.
    Attention { scale: f32, window: u32, sinks: bool },
    /// x += attn · Wo (+ bias), through post_attention_norm first when `post_norm`; with
    /// `gate`, attn is first multiplied by the sigmoid of the gate logits from [`Step::Qkv`].
    AttnOut { post_norm: bool, bias: bool, gate: bool },
    /// A Gated DeltaNet block in place of attention, from h to x += out:
    /// `[q|k|v] = h · W_qkv` through the causal depthwise convolution (state: the sequence's
    /// last `conv_kernel - 1` inputs) and SiLU; q, k L2-normalised per head;
    /// `beta = sigmoid(h · W_beta)`, `g = softplus(h · W_alpha + dt_bias) · a` per value head;
    /// per token and value head `S ← exp(g)·S`, `S += k ⊗ beta·(v − Sᵀk)`, `o = Sᵀq / √d`;
    /// `o = rms_norm(o) · norm · silu(h · W_z)` per head; x += o · W_out.
    DeltaNet { dims: DeltaNetConfig },
    /// h = rms_norm(x) · ffn_norm.
    FfnNorm,
    /// x += FFN(h), through post_ffw_norm first when `post_norm`.
    Ffn { ffn: FfnPlan, post_norm: bool },
}

#[derive(Clone, Debug, PartialEq)]
pub struct LayerPlan {
    /// Model layer index.
    pub index: usize,
    pub steps: Vec<Step>,
}

/// The whole forward pass.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelPlan {
    pub n_embd: u32,
    pub rms_eps: f32,
    /// The token embedding is multiplied by this.
    pub embed_scale: f32,
    pub rope: RopeSpec,
    pub layers: Vec<LayerPlan>,
    /// logits = cap · tanh(logits / cap) after the output head.
    pub logit_softcap: Option<f32>,
}

/// A backend runs (or records) one step of one layer.
pub trait LayerBackend {
    fn step(&mut self, layer: &LayerPlan, step: &Step) -> Result<()>;
}

impl ModelPlan {
    /// The plan for `cfg`, with the RoPE factors found in `src`.
    pub fn new(cfg: &ModelConfig, src: &dyn TensorSource) -> Result<ModelPlan> {
        let factors = rope_factors(cfg, src)?;
        Ok(Self::with_factors(cfg, factors))
    }

    pub fn with_factors(cfg: &ModelConfig, factors: Option<Vec<f32>>) -> ModelPlan {
        let layers = (0..cfg.n_layer as usize).map(|il| layer_plan(cfg, il)).collect();
        ModelPlan {
            n_embd: cfg.n_embd,
            rms_eps: cfg.rms_eps,
            embed_scale: cfg.embed_scale.unwrap_or(1.0),
            rope: RopeSpec {
                n_rot: cfg.rope_dim,
                layout: cfg.rope_layout,
                bases: [cfg.rope_base, cfg.rope_base_swa],
                freq_scale: cfg.rope_freq_scale,
                factors,
                yarn: cfg.rope_yarn.clone(),
            },
            layers,
            logit_softcap: cfg.final_logit_softcap,
        }
    }

    /// Whether any layer reads RoPE table `t`.
    pub fn uses_table(&self, t: RopeTable) -> bool {
        self.layers
            .iter()
            .flat_map(|l| &l.steps)
            .any(|s| matches!(s, Step::RopeKv { table, .. } if *table == t))
    }

    /// Runs layers `range` through `backend`, step by step.
    pub fn run(&self, range: std::ops::Range<usize>, backend: &mut dyn LayerBackend) -> Result<()> {
        let layers = self.layers.get(range.clone()).ok_or_else(|| {
            EngineError::InvalidArgument(format!("layers {range:?} of a {}-layer plan", self.layers.len()))
        })?;
        for layer in layers {
            for step in &layer.steps {
                backend.step(layer, step)?;
            }
        }
        Ok(())
    }
}

fn layer_plan(c: &ModelConfig, il: usize) -> LayerPlan {
    let swa = c.is_swa(il);
    let table = if swa && c.rope_base_swa != c.rope_base { RopeTable::Sliding } else { RopeTable::Global };
    let ffn = match &c.moe {
        None => FfnPlan::Dense { act: c.ffn_act, n_ff: c.n_ff },
        Some(moe) => FfnPlan::Moe { act: c.ffn_act, moe: moe.clone() },
    };
    let mixer = match (&c.delta_net, c.is_recurrent(il)) {
        (Some(dims), true) => vec![Step::DeltaNet { dims: dims.clone() }],
        _ => vec![
            Step::Qkv { bias: c.has_qkv_bias, gate: c.attn_output_gate },
            Step::RopeKv { qk_norm: c.has_qk_norm, table },
            Step::Attention {
                scale: c.attn_scale,
                window: if swa { c.sliding_window } else { 0 },
                sinks: c.has_attn_sinks,
            },
            Step::AttnOut {
                post_norm: c.has_post_norms,
                bias: c.has_attn_out_bias,
                gate: c.attn_output_gate,
            },
        ],
    };
    let mut steps = vec![Step::AttnNorm];
    steps.extend(mixer);
    steps.extend([Step::FfnNorm, Step::Ffn { ffn, post_norm: c.has_post_norms }]);
    LayerPlan { index: il, steps }
}

/// `rope_freqs.weight` as f32, checked: one positive finite factor per rotated pair.
fn rope_factors(cfg: &ModelConfig, src: &dyn TensorSource) -> Result<Option<Vec<f32>>> {
    let metas = ModelWeights::resolve(cfg, src)?;
    let Some(meta) = metas.rope_freqs else { return Ok(None) };
    let bytes =
        src.bytes(&meta.name).ok_or_else(|| wllm_loaders::ModelError::MissingTensor(meta.name.clone()))?;
    let factors = wllm_loaders::quant::dequantize(meta.ggml_type, &bytes.bytes, meta.n_elements() as usize)
        .map_err(|e| EngineError::InvalidArgument(format!("{}: {e}", meta.name)))?;
    if let Some((i, f)) = factors.iter().enumerate().find(|(_, f)| !(f.is_finite() && **f > 0.0)) {
        return Err(EngineError::InvalidArgument(format!(
            "{}: factor {i} is {f}; RoPE frequency factors must be positive and finite",
            meta.name
        )));
    }
    Ok(Some(factors))
}

/// A weight the plan calls for: missing means the plan and the layer's weights disagree.
pub fn required<'w, T>(weight: &'w Option<T>, layer: usize, what: &str) -> Result<&'w T> {
    weight.as_ref().ok_or_else(|| EngineError::InvalidArgument(format!("layer {layer} has no {what}")))
}

/// Whether the experts' top-k weights are renormalised.
pub fn renormalizes(moe: &MoeConfig) -> bool {
    matches!(moe.gating, ExpertGating::SoftmaxTopK { renormalize: true })
}

#[cfg(test)]
mod tests {
    use wllm_loaders::model::{Arch, Hyperparams, KeyFormat};

    use super::*;

    fn config(arch: Arch) -> ModelConfig {
        let mut h = Hyperparams::new(arch, KeyFormat::Gguf { prefix: arch.name().into() });
        (h.n_layer, h.n_embd, h.n_head, h.n_ff, h.n_vocab, h.rms_eps) = (6, 64, 4, Some(128), 32, 1e-6);
        h.sliding_window = Some(8);
        h.rope_base = Some(1e6);
        h.build().unwrap()
    }

    #[test]
    fn steps_follow_the_traits() {
        let qwen2 = ModelPlan::with_factors(&config(Arch::Qwen2), None);
        assert_eq!(qwen2.layers[0].steps[1], Step::Qkv { bias: true, gate: false });
        assert_eq!(qwen2.layers[0].steps[2], Step::RopeKv { qk_norm: false, table: RopeTable::Global });
        let gemma = ModelPlan::with_factors(&config(Arch::Gemma3), None);
        assert_eq!(gemma.embed_scale, 8.0);
        // Every sixth layer is global, with the global base; the others slide with their own.
        let tables: Vec<bool> = gemma
            .layers
            .iter()
            .map(|l| l.steps[2] == Step::RopeKv { qk_norm: true, table: RopeTable::Sliding })
            .collect();
        assert_eq!(tables, [true, true, true, true, true, false]);
        assert_eq!(gemma.layers[0].steps[3], Step::Attention { scale: 0.25, window: 8, sinks: false });
        assert_eq!(gemma.layers[5].steps[3], Step::Attention { scale: 0.25, window: 0, sinks: false });
        assert!(matches!(gemma.layers[0].steps[6], Step::Ffn { post_norm: true, .. }));
        assert!(gemma.uses_table(RopeTable::Sliding) && !qwen2.uses_table(RopeTable::Sliding));
    }

    #[test]
    fn hybrid_layers_get_delta_net_or_gated_attention() {
        let mut h = Hyperparams::new(Arch::Qwen35, KeyFormat::Gguf { prefix: "qwen35".into() });
        (h.n_layer, h.n_embd, h.n_head, h.n_ff, h.n_vocab, h.rms_eps) = (4, 64, 4, Some(128), 32, 1e-6);
        h.head_dim = Some(16);
        h.delta_net = Some(wllm_loaders::model::DeltaNetHyper {
            conv_kernel: 4,
            inner_size: 64,
            state_size: 16,
            time_step_rank: 4,
            group_count: 2,
            ..Default::default()
        });
        let cfg = h.build().unwrap();
        let plan = ModelPlan::with_factors(&cfg, None);
        assert!(matches!(plan.layers[0].steps[1], Step::DeltaNet { .. }));
        assert_eq!(plan.layers[0].steps.len(), 4);
        assert_eq!(plan.layers[3].steps[1], Step::Qkv { bias: false, gate: true });
        assert!(matches!(plan.layers[3].steps[4], Step::AttnOut { gate: true, .. }));
    }

    #[test]
    fn rope_factors_divide_each_frequency() {
        let spec = |factors| RopeSpec {
            n_rot: 8,
            layout: RopeLayout::Neox,
            bases: [10_000.0; 2],
            freq_scale: 0.5,
            factors,
            yarn: None,
        };
        let factors = vec![1.0, 2.0, 4.0, 8.0];
        let table = spec(Some(factors.clone())).table(RopeTable::Global, 50);
        for pos in [0usize, 1, 17, 49] {
            for (i, f) in factors.iter().enumerate() {
                let angle = pos as f64 * 0.5 * 10_000f64.powf(-2.0 * i as f64 / 8.0) / *f as f64;
                let [c, s] = table[pos * 4 + i];
                assert!(
                    (c as f64 - angle.cos()).abs() < 1e-6 && (s as f64 - angle.sin()).abs() < 1e-6,
                    "pos {pos} pair {i}"
                );
            }
        }
        assert_eq!(
            spec(Some(vec![1.0; 4])).table(RopeTable::Global, 50),
            spec(None).table(RopeTable::Global, 50)
        );
    }
}

/// One sequence's share of a step that carries several: `len` tokens at positions
/// `pos0..pos0 + len` of sequence `seq`, and whether the step returns the logits of its last
/// token. Both backends place sequence `s` at cache rows `s · n_ctx ..`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SeqSpan {
    pub seq: u32,
    pub pos0: u32,
    pub len: u32,
    pub logits: bool,
}

/// Per token of a step: (position in its sequence, cache row of the sequence's position 0),
/// after checking every span fits a cache of `n_seq` sequences of `n_ctx` positions.
pub fn token_positions(spans: &[SeqSpan], n_seq: u32, n_ctx: u32) -> Result<Vec<[u32; 2]>> {
    let mut out = Vec::new();
    for s in spans {
        if s.seq >= n_seq {
            return Err(EngineError::InvalidArgument(format!(
                "sequence {} of a cache that holds {n_seq}",
                s.seq
            )));
        }
        if s.len == 0 {
            return Err(EngineError::InvalidArgument(format!("sequence {} has an empty span", s.seq)));
        }
        let end = s.pos0 as usize + s.len as usize;
        if end > n_ctx as usize {
            return Err(EngineError::ContextOverflow { n_tokens: end, n_ctx: n_ctx as usize });
        }
        out.extend((s.pos0..s.pos0 + s.len).map(|p| [p, s.seq * n_ctx]));
    }
    Ok(out)
}

/// Indices, within the step, of the last token of each span that asks for logits.
pub fn logit_rows(spans: &[SeqSpan]) -> Vec<u32> {
    let mut end = 0;
    let mut rows = Vec::new();
    for s in spans {
        end += s.len;
        if s.logits {
            rows.push(end - 1);
        }
    }
    rows
}
