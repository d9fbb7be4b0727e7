//! Architecture hyperparameters, read from GGUF metadata in exactly one place.
//!
//! One struct covers every supported architecture; the differences between them are data
//! from the traits table (`arch.rs`), applied in one place (`hyper.rs`), so the engine has a
//! single layer plan.

use super::ModelError;
use super::hyper::{Hyperparams, KeyFormat, MoeHyper, SwaLayers, YarnHyper};
use crate::gguf::GgufFile;

pub use super::arch::{Arch, ExpertGating, FfnActivation, RopeLayout};

#[derive(Clone, Debug, PartialEq)]
pub struct MoeConfig {
    pub n_expert: u32,
    pub n_expert_used: u32,
    /// Hidden size of one expert's FFN.
    pub n_ff_expert: u32,
    pub gating: ExpertGating,
    /// Multiplier on the final expert weights (llama.cpp `expert_weights_scale`, 1.0 if absent).
    pub weights_scale: f32,
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
            });
        }
        h.build()
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
