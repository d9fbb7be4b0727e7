//! Architecture hyperparameters, read from GGUF metadata in exactly one place.
//!
//! One struct covers every supported architecture; the differences between them are data
//! (which norms exist, which RoPE layout, which activation), so the engine has a single
//! transformer implementation. Key names follow llama.cpp's `llama-arch.cpp` at 0c1e570.

use super::ModelError;
use crate::gguf::GgufFile;

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Arch {
    /// Llama and the many models that reuse its GGUF name (SmolLM, Mistral, Mixtral-style MoE).
    Llama,
    Qwen2,
    Qwen3,
    Qwen3Moe,
    Gemma3,
}

impl Arch {
    pub fn from_name(name: &str) -> Option<Arch> {
        Some(match name {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            "qwen3" => Arch::Qwen3,
            "qwen3moe" => Arch::Qwen3Moe,
            "gemma3" => Arch::Gemma3,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Qwen3Moe => "qwen3moe",
            Arch::Gemma3 => "gemma3",
        }
    }
    pub const SUPPORTED: &'static str = "llama, qwen2, qwen3, qwen3moe, gemma3";
}

/// How the two halves of a RoPE pair are laid out inside a head.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum RopeLayout {
    /// Adjacent elements (2i, 2i+1): GGUF llama (the converter permuted Q/K for it).
    Normal,
    /// Elements i and i + d/2: qwen, gemma, and any unpermuted Hugging Face checkpoint.
    Neox,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum FfnActivation {
    /// SwiGLU: silu(gate) * up.
    Silu,
    /// GeGLU with the tanh approximation of GELU.
    GeluTanh,
}

/// How router probabilities become expert weights.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ExpertGating {
    /// softmax over all experts, pick top-k, optionally renormalise the k weights.
    SoftmaxTopK { renormalize: bool },
}

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
    /// Multiplier on positions (1 / linear scaling factor).
    pub rope_freq_scale: f32,
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
    pub moe: Option<MoeConfig>,
    /// Architecture traits that select optional tensors and ops.
    pub has_qk_norm: bool,
    pub has_post_norms: bool,
    pub has_qkv_bias: bool,
}

impl ModelConfig {
    pub fn from_gguf(f: &GgufFile) -> Result<ModelConfig, ModelError> {
        let arch_name =
            f.opt_str("general.architecture")?.ok_or(ModelError::MissingArchitecture)?.to_string();
        let arch =
            Arch::from_name(&arch_name).ok_or_else(|| ModelError::UnknownArchitecture(arch_name.clone()))?;
        let k = |s: &str| format!("{arch_name}.{s}");

        let n_layer = f.get_u32(&k("block_count"))?;
        let n_embd = f.get_u32(&k("embedding_length"))?;
        let n_head = f.get_u32(&k("attention.head_count"))?;
        let n_head_kv = f.opt_u32(&k("attention.head_count_kv"))?.unwrap_or(n_head);
        if n_layer == 0 {
            return Err(ModelError::BadHyperparameter("block_count is 0".into()));
        }
        // Per-layer vectors are sized by this count, so it must be bounded before anything is.
        if n_layer > MAX_LAYERS {
            return Err(ModelError::BadHyperparameter(format!(
                "block_count {n_layer} is larger than any supported model ({MAX_LAYERS} layers at most)"
            )));
        }
        if n_embd == 0 {
            return Err(ModelError::BadHyperparameter("embedding_length is 0".into()));
        }
        if n_head == 0 || n_head_kv == 0 {
            return Err(ModelError::BadHyperparameter(format!(
                "attention.head_count {n_head} / head_count_kv {n_head_kv}: a model needs at least one head"
            )));
        }
        if n_head % n_head_kv != 0 {
            return Err(ModelError::BadHyperparameter(format!(
                "attention.head_count {n_head} is not a multiple of head_count_kv {n_head_kv}"
            )));
        }
        let head_dim = match f.opt_u32(&k("attention.key_length"))? {
            Some(d) => d,
            None if n_embd % n_head == 0 => n_embd / n_head,
            None => {
                return Err(ModelError::BadHyperparameter(format!(
                    "embedding_length {n_embd} is not divisible by head_count {n_head}"
                )));
            }
        };
        let head_dim_v = f.opt_u32(&k("attention.value_length"))?.unwrap_or(head_dim);
        if head_dim == 0 || head_dim % 2 != 0 || head_dim_v == 0 {
            return Err(ModelError::BadHyperparameter(format!(
                "head size {head_dim} (v {head_dim_v}) must be even and non-zero"
            )));
        }
        // n_embd_q / n_embd_k / n_embd_v and the output projection multiply these in u32.
        if head_dim.max(head_dim_v).checked_mul(n_head).is_none() {
            return Err(ModelError::BadHyperparameter(format!(
                "head size {} times head_count {n_head} overflows a 32-bit size",
                head_dim.max(head_dim_v)
            )));
        }
        let n_ff = f.opt_u32(&k("feed_forward_length"))?.unwrap_or(0);
        let n_vocab = match f.opt_u32(&k("vocab_size"))? {
            Some(v) => v,
            None => {
                let tokens = f.opt_array("tokenizer.ggml.tokens")?.ok_or_else(|| {
                    ModelError::BadHyperparameter("no vocab_size and no tokenizer.ggml.tokens".into())
                })?;
                u32::try_from(tokens.len()).map_err(|_| {
                    ModelError::BadHyperparameter(format!(
                        "tokenizer.ggml.tokens has {} entries, more than a u32 vocabulary holds",
                        tokens.len()
                    ))
                })?
            }
        };
        if n_vocab == 0 {
            return Err(ModelError::BadHyperparameter("the vocabulary is empty".into()));
        }
        let context_length = f.opt_u32(&k("context_length"))?.unwrap_or(2048);
        let rms_eps = f.get_f32(&k("attention.layer_norm_rms_epsilon"))?;
        let rope_base = f.opt_f32(&k("rope.freq_base"))?.unwrap_or(10000.0);
        let rope_base_swa = f.opt_f32(&k("rope.freq_base_swa"))?.unwrap_or(10000.0);
        let rope_dim = f.opt_u32(&k("rope.dimension_count"))?.unwrap_or(head_dim);
        if rope_dim > head_dim || rope_dim % 2 != 0 {
            return Err(ModelError::BadHyperparameter(format!(
                "rope.dimension_count {rope_dim} must be even and at most the head size {head_dim}"
            )));
        }
        let rope_freq_scale = match f.opt_str(&k("rope.scaling.type"))? {
            None | Some("none") => 1.0,
            Some("linear") => {
                let factor = f.opt_f32(&k("rope.scaling.factor"))?.unwrap_or(1.0);
                if factor > 0.0 { 1.0 / factor } else { 1.0 }
            }
            Some(other) => return Err(ModelError::Unsupported(format!("RoPE scaling type {other:?}"))),
        };

        let (sliding_window, swa_layers) = if arch == Arch::Gemma3 {
            let window = f.opt_u32(&k("attention.sliding_window"))?.unwrap_or(0);
            let layers = if window == 0 {
                vec![false; n_layer as usize]
            } else {
                swa_pattern(f, &k("attention.sliding_window_pattern"), n_layer, 6)?
            };
            (window, layers)
        } else {
            (0, vec![false; n_layer as usize])
        };

        let n_expert = f.opt_u32(&k("expert_count"))?.unwrap_or(0);
        let moe = if n_expert > 0 {
            let n_expert_used = f.get_u32(&k("expert_used_count"))?;
            if n_expert_used == 0 || n_expert_used > n_expert {
                return Err(ModelError::BadHyperparameter(format!(
                    "expert_used_count {n_expert_used} must be between 1 and expert_count {n_expert}"
                )));
            }
            let n_ff_expert = f.opt_u32(&k("expert_feed_forward_length"))?.unwrap_or(n_ff);
            // Both qwen3moe and mixtral-style llama renormalise the top-k weights in llama.cpp.
            let renormalize = f.opt_bool(&k("expert_weights_norm"))?.unwrap_or(true);
            Some(MoeConfig {
                n_expert,
                n_expert_used,
                n_ff_expert,
                gating: ExpertGating::SoftmaxTopK { renormalize },
                weights_scale: f.opt_f32(&k("expert_weights_scale"))?.filter(|s| *s != 0.0).unwrap_or(1.0),
            })
        } else {
            None
        };
        if arch == Arch::Qwen3Moe && moe.is_none() {
            return Err(ModelError::BadHyperparameter("qwen3moe model without expert_count".into()));
        }
        if moe.is_none() && n_ff == 0 {
            return Err(ModelError::BadHyperparameter("feed_forward_length is missing or 0".into()));
        }

        let gemma = arch == Arch::Gemma3;
        Ok(ModelConfig {
            arch,
            name: f.opt_str("general.name").ok().flatten().map(str::to_string),
            n_layer,
            n_embd,
            n_head,
            n_head_kv,
            head_dim,
            head_dim_v,
            n_ff,
            n_vocab,
            context_length,
            rms_eps,
            rope_base,
            rope_base_swa: if gemma { rope_base_swa } else { rope_base },
            rope_freq_scale,
            rope_dim,
            rope_layout: if arch == Arch::Llama { RopeLayout::Normal } else { RopeLayout::Neox },
            sliding_window,
            swa_layers,
            ffn_act: if gemma { FfnActivation::GeluTanh } else { FfnActivation::Silu },
            embed_scale: gemma.then(|| (n_embd as f32).sqrt()),
            attn_scale: 1.0 / (head_dim as f32).sqrt(),
            final_logit_softcap: f.opt_f32(&k("final_logit_softcapping"))?.filter(|c| *c > 0.0),
            moe,
            has_qk_norm: matches!(arch, Arch::Qwen3 | Arch::Qwen3Moe | Arch::Gemma3),
            has_post_norms: gemma,
            has_qkv_bias: arch == Arch::Qwen2,
        })
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

/// llama.cpp accepts either a per-layer bool array or a period `n` (every n-th layer global).
fn swa_pattern(f: &GgufFile, key: &str, n_layer: u32, default_period: u32) -> Result<Vec<bool>, ModelError> {
    if let Ok(Some(arr)) = f.opt_array(key) {
        let flags: Vec<bool> = arr
            .iter()
            .map(|v| matches!(v, crate::gguf::Value::Scalar(crate::gguf::Scalar::Bool(true))))
            .collect();
        if flags.len() != n_layer as usize {
            return Err(ModelError::BadHyperparameter(format!(
                "{key} has {} entries for {n_layer} layers",
                flags.len()
            )));
        }
        return Ok(flags);
    }
    let period = f.opt_u32(key)?.unwrap_or(default_period);
    Ok((0..n_layer).map(|il| period == 0 || il % period < period - 1).collect())
}
