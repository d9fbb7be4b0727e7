//! Architecture hyperparameters, read from GGUF metadata in exactly one place.
//!
//! One struct covers every supported architecture; the differences between them are data
//! from the traits table (`arch.rs`), applied in one place (`hyper.rs`), so the engine has a
//! single layer plan.

use super::ModelError;
use super::hyper::{DeltaNetHyper, Hyperparams, KeyFormat, MoeHyper, SwaLayers, YarnHyper};
use crate::gguf::GgufFile;

pub use super::arch::{Arch, ExpertGating, FfnActivation, KeyHeadMap, RopeLayout};

#[derive(Clone, Debug, PartialEq)]
pub struct MoeConfig {
    pub n_expert: u32,
    pub n_expert_used: u32,
    /// Hidden size of one expert's FFN.
    pub n_ff_expert: u32,
    pub gating: ExpertGating,
    /// Multiplier on the final expert weights (llama.cpp `expert_weights_scale`, 1.0 if absent).
    pub weights_scale: f32,
    /// Hidden size of the shared expert every token also runs, scaled by
    /// `sigmoid(h · ffn_gate_inp_shexp)` (Qwen3.5 MoE, Qwen3-Next); `None` without one.
    pub shared_expert_ff: Option<u32>,
}

/// A Gated DeltaNet layer's sizes (llama.cpp's `ssm_*` hyperparameters).
#[derive(Clone, Debug, PartialEq)]
pub struct DeltaNetConfig {
    /// Taps of the causal depthwise convolution (`ssm.conv_kernel`); the state keeps the last
    /// `conv_kernel - 1` inputs.
    pub conv_kernel: u32,
    /// Key (and query) heads (`ssm.group_count`).
    pub n_k_heads: u32,
    /// Value heads (`ssm.time_step_rank`), a multiple of the key heads.
    pub n_v_heads: u32,
    /// Size of a key head and of a value head (`ssm.state_size`; llama.cpp requires them equal).
    pub head_dim: u32,
    pub key_heads: KeyHeadMap,
    pub fused_beta_alpha: bool,
}

impl DeltaNetConfig {
    pub fn key_dim(&self) -> u32 {
        self.n_k_heads * self.head_dim
    }
    pub fn value_dim(&self) -> u32 {
        self.n_v_heads * self.head_dim
    }
    /// Channels of the convolution: q, k and v side by side.
    pub fn conv_channels(&self) -> u32 {
        2 * self.key_dim() + self.value_dim()
    }
    /// Floats of one sequence's recurrent state in one layer: one `head_dim²` matrix per
    /// value head.
    pub fn state_len(&self) -> usize {
        self.n_v_heads as usize * (self.head_dim as usize).pow(2)
    }
    /// Floats of one sequence's convolution state in one layer.
    pub fn conv_state_len(&self) -> usize {
        (self.conv_kernel as usize - 1) * self.conv_channels() as usize
    }
    /// The key head value head `h` reads.
    pub fn key_head(&self, h: usize) -> usize {
        match self.key_heads {
            KeyHeadMap::Tiled => h % self.n_k_heads as usize,
            KeyHeadMap::Grouped => h / (self.n_v_heads / self.n_k_heads) as usize,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub arch: Arch,
    pub name: Option<String>,
    pub n_layer: u32,
    pub n_embd: u32,
    pub n_head: u32,
    pub n_head_kv: u32,
    /// Per-head size of Q and K.
    pub head_dim: u32,
    /// Per-head size of V.
    pub head_dim_v: u32,
    /// Dense FFN hidden size (unused by MoE layers).
    pub n_ff: u32,
    pub n_vocab: u32,
    /// Training context length from the metadata.
    pub context_length: u32,
    pub rms_eps: f32,
    pub rope_base: f32,
    /// RoPE base of sliding-window layers (gemma3), when it differs.
    pub rope_base_swa: f32,
    /// Multiplier on positions (1 / linear or YaRN scaling factor).
    pub rope_freq_scale: f32,
    /// YaRN's blend of interpolated and extrapolated frequencies, when the model uses it.
    pub rope_yarn: Option<Yarn>,
    /// How many dimensions of each head are rotated (the rest pass through).
    pub rope_dim: u32,
    pub rope_layout: RopeLayout,
    /// Sliding-window size for SWA layers; 0 = none.
    pub sliding_window: u32,
    /// Per-layer flag: does layer `il` use the sliding window?
    pub swa_layers: Vec<bool>,
    pub ffn_act: FfnActivation,
    /// Multiply the input embedding by this (gemma: sqrt(n_embd)).
    pub embed_scale: Option<f32>,
    /// Scale applied to QK^T before softmax.
    pub attn_scale: f32,
    /// `cap * tanh(logits / cap)` on the output (gemma2-style), when present in the metadata.
    pub final_logit_softcap: Option<f32>,
    /// How the model's converter says to pool its hidden states into an embedding, in
    /// llama.cpp's codes (`<arch>.pooling_type`: 0 none, 1 mean, 2 cls, 3 last, 4 rank);
    /// `None` when the file does not say.
    pub pooling_type: Option<u32>,
    pub moe: Option<MoeConfig>,
    /// Architecture traits that select optional tensors and ops.
    pub has_qk_norm: bool,
    pub has_post_norms: bool,
    pub has_qkv_bias: bool,
    pub has_attn_out_bias: bool,
    pub has_attn_sinks: bool,
    pub has_moe_biases: bool,
    /// GGUF name (without `blk.N.` and `.weight`) of the norm before the FFN.
    pub ffn_norm_name: &'static str,
    /// Attention output times the sigmoid of a per-head gate from the doubled q projection.
    pub attn_output_gate: bool,
    /// The Gated DeltaNet layers' sizes, in hybrid architectures.
    pub delta_net: Option<DeltaNetConfig>,
    /// Per layer: a Gated DeltaNet (recurrent) layer rather than an attention one.
    pub recurrent_layers: Vec<bool>,
}

/// YaRN RoPE scaling as llama.cpp applies it (`ggml_rope_yarn_corr_dims`, `rope_yarn`): pairs
/// below `corr_dims[0]` keep the trained (extrapolated) frequency, pairs above `corr_dims[1]`
/// are interpolated by `rope_freq_scale`, a linear ramp blends the ones between, and every
/// (cos, sin) is multiplied by `mscale`.
#[derive(Clone, Debug, PartialEq)]
pub struct Yarn {
    /// The training context the interpolation counts from.
    pub orig_ctx: u32,
    pub beta_fast: f32,
    pub beta_slow: f32,
    /// The metadata's extra attention factor (`rope.scaling.attn_factor`, 1 if absent).
    pub attn_factor: f32,
}

impl Yarn {
    /// The first and last rotated pair of the ramp, for `n_rot` rotated dimensions and `base`.
    pub fn corr_dims(&self, n_rot: u32, base: f32) -> [f32; 2] {
        let dim = |beta: f32| {
            n_rot as f32 * (self.orig_ctx as f32 / (beta * 2.0 * std::f32::consts::PI)).ln()
                / (2.0 * base.ln())
        };
        let start = dim(self.beta_fast).floor();
        let end = dim(self.beta_slow).ceil();
        [start.max(0.0), end.min(n_rot as f32 - 1.0)]
    }

    /// What (cos, sin) are multiplied by: llama.cpp's `1 + 0.1 ln(factor)` magnitude
    /// correction (its context cancels its own `get_mscale` against the kernel's) times the
    /// metadata's attention factor.
    pub fn mscale(&self, freq_scale: f32) -> f32 {
        self.attn_factor * (1.0 + 0.1 * (1.0 / freq_scale).ln())
    }
}

impl ModelConfig {
    /// Reads the hyperparameters from GGUF metadata (key names as llama.cpp's `llama-arch.cpp`
    /// at 0c1e570) and checks them with the architecture's traits.
    pub fn from_gguf(f: &GgufFile) -> Result<ModelConfig, ModelError> {
        let arch_name =
            f.opt_str("general.architecture")?.ok_or(ModelError::MissingArchitecture)?.to_string();
        let arch =
            Arch::from_name(&arch_name).ok_or_else(|| ModelError::UnknownArchitecture(arch_name.clone()))?;
        let k = |s: &str| format!("{arch_name}.{s}");
        let mut h = Hyperparams::new(arch, KeyFormat::Gguf { prefix: arch_name.clone() });
        h.name = f.opt_str("general.name").ok().flatten().map(str::to_string);
        h.n_layer = f.get_u32(&k("block_count"))?;
        h.n_embd = f.get_u32(&k("embedding_length"))?;
        h.n_head = f.get_u32(&k("attention.head_count"))?;
        h.n_head_kv = f.opt_u32(&k("attention.head_count_kv"))?;
        h.head_dim = f.opt_u32(&k("attention.key_length"))?;
        h.head_dim_v = f.opt_u32(&k("attention.value_length"))?;
        h.n_ff = f.opt_u32(&k("feed_forward_length"))?;
        h.n_vocab = match f.opt_u32(&k("vocab_size"))? {
            Some(v) => v,
            None => vocab_from_tokens(f)?,
        };
        h.context_length = f.opt_u32(&k("context_length"))?;
        h.rms_eps = f.get_f32(&k("attention.layer_norm_rms_epsilon"))?;
        h.rope_base = f.opt_f32(&k("rope.freq_base"))?;
        h.rope_base_swa = f.opt_f32(&k("rope.freq_base_swa"))?;
        h.rope_dim = f.opt_u32(&k("rope.dimension_count"))?;
        let factor = f.opt_f32(&k("rope.scaling.factor"))?.filter(|&f| f != 0.0);
        h.rope_freq_scale = match f.opt_str(&k("rope.scaling.type"))? {
            None | Some("none") => 1.0,
            Some("linear") => factor.map_or(1.0, |f| 1.0 / f),
            Some("yarn") => {
                if f.opt_f32(&k("rope.scaling.yarn_log_multiplier"))?.is_some_and(|m| m != 0.0) {
                    return Err(ModelError::Unsupported(
                        "YaRN with a log multiplier (DeepSeek-style)".into(),
                    ));
                }
                h.rope_yarn = Some(YarnHyper {
                    orig_ctx: f.opt_u32(&k("rope.scaling.original_context_length"))?,
                    beta_fast: f.opt_f32(&k("rope.scaling.yarn_beta_fast"))?,
                    beta_slow: f.opt_f32(&k("rope.scaling.yarn_beta_slow"))?,
                    attn_factor: f.opt_f32(&k("rope.scaling.attn_factor"))?,
                });
                factor.map_or(1.0, |f| 1.0 / f)
            }
            Some(other) => return Err(ModelError::Unsupported(format!("RoPE scaling type {other:?}"))),
        };
        h.sliding_window = f.opt_u32(&k("attention.sliding_window"))?;
        h.swa_layers = swa_layers(f, &k("attention.sliding_window_pattern"))?;
        h.final_logit_softcap = f.opt_f32(&k("final_logit_softcapping"))?;
        h.pooling_type = f.opt_u32(&k("pooling_type"))?;
        if let Some(n_expert) = f.opt_u32(&k("expert_count"))? {
            h.moe = Some(MoeHyper {
                n_expert,
                n_expert_used: f.opt_u32(&k("expert_used_count"))?.unwrap_or(0),
                n_ff_expert: f.opt_u32(&k("expert_feed_forward_length"))?,
                renormalize: f.opt_bool(&k("expert_weights_norm"))?,
                weights_scale: f.opt_f32(&k("expert_weights_scale"))?,
                shared_ff: f.opt_u32(&k("expert_shared_feed_forward_length"))?,
            });
        }
        if arch.traits().delta_net.is_some() {
            h.delta_net = Some(DeltaNetHyper {
                conv_kernel: f.get_u32(&k("ssm.conv_kernel"))?,
                inner_size: f.get_u32(&k("ssm.inner_size"))?,
                state_size: f.get_u32(&k("ssm.state_size"))?,
                time_step_rank: f.get_u32(&k("ssm.time_step_rank"))?,
                group_count: f.get_u32(&k("ssm.group_count"))?,
                full_attention_interval: f.opt_u32(&k("full_attention_interval"))?,
                recurrent_layers: bool_array(f, &k("attention.recurrent_layers"))?,
            });
            h.nextn_layers = f.opt_u32(&k("nextn_predict_layers"))?.unwrap_or(0);
            h.rope_sections = u32_array(f, &k("rope.dimension_sections"))?;
        }
        h.build()
    }

    /// Whether layer `layer` is a Gated DeltaNet layer.
    pub fn is_recurrent(&self, layer: usize) -> bool {
        self.recurrent_layers.get(layer).copied().unwrap_or(false)
    }

    /// Whether any layer carries a recurrent state (which, unlike a KV cache, cannot be cut
    /// back to an earlier position).
    pub fn has_recurrent_layers(&self) -> bool {
        self.recurrent_layers.contains(&true)
    }

    pub fn is_swa(&self, layer: usize) -> bool {
        self.swa_layers.get(layer).copied().unwrap_or(false)
    }

    pub fn rope_base_for(&self, layer: usize) -> f32 {
        if self.is_swa(layer) { self.rope_base_swa } else { self.rope_base }
    }

    /// Rows of the K (and V) projection: one head_dim per KV head.
    pub fn n_embd_k(&self) -> u32 {
        self.head_dim * self.n_head_kv
    }
    pub fn n_embd_v(&self) -> u32 {
        self.head_dim_v * self.n_head_kv
    }
    pub fn n_embd_q(&self) -> u32 {
        self.head_dim * self.n_head
    }
}

/// Far above any released model (the largest have ~128 layers); only here so a corrupt count
/// cannot size per-layer allocations.
pub const MAX_LAYERS: u32 = 1 << 14;

fn vocab_from_tokens(f: &GgufFile) -> Result<u32, ModelError> {
    let tokens = f
        .opt_array("tokenizer.ggml.tokens")?
        .ok_or_else(|| ModelError::BadHyperparameter("no vocab_size and no tokenizer.ggml.tokens".into()))?;
    u32::try_from(tokens.len()).map_err(|_| {
        ModelError::BadHyperparameter(format!(
            "tokenizer.ggml.tokens has {} entries, more than a u32 vocabulary holds",
            tokens.len()
        ))
    })
}

/// A bool array, when the key holds one.
fn bool_array(f: &GgufFile, key: &str) -> Result<Option<Vec<bool>>, ModelError> {
    use crate::gguf::{Scalar, Value};
    let Some(arr) = f.opt_array(key)? else { return Ok(None) };
    arr.iter()
        .map(|v| match v {
            Value::Scalar(Scalar::Bool(b)) => Ok(b),
            other => Err(ModelError::BadHyperparameter(format!("{key} holds {other:?}, not booleans"))),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// An integer array, when the key holds one.
fn u32_array(f: &GgufFile, key: &str) -> Result<Option<Vec<u32>>, ModelError> {
    use crate::gguf::{Scalar, Value};
    let Some(arr) = f.opt_array(key)? else { return Ok(None) };
    arr.iter()
        .map(|v| match v {
            Value::Scalar(Scalar::I32(x)) if x >= 0 => Ok(x as u32),
            Value::Scalar(Scalar::U32(x)) => Ok(x),
            other => Err(ModelError::BadHyperparameter(format!(
                "{key} holds {other:?}, not non-negative integers"
            ))),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// llama.cpp accepts either a per-layer bool array or a period `n` (every n-th layer global).
fn swa_layers(f: &GgufFile, key: &str) -> Result<SwaLayers, ModelError> {
    if let Ok(Some(arr)) = f.opt_array(key) {
        return Ok(SwaLayers::Listed(
            arr.iter()
                .map(|v| matches!(v, crate::gguf::Value::Scalar(crate::gguf::Scalar::Bool(true))))
                .collect(),
        ));
    }
    Ok(f.opt_u32(key)?.map_or(SwaLayers::Default, SwaLayers::Period))
}
