//! Architecture hyperparameters from a Hugging Face `config.json`, into the same
//! [`ModelConfig`] that GGUF metadata fills.
//!
//! Key names and the defaults of absent keys follow transformers' config classes; what they
//! mean in GGUF terms follows llama.cpp's `convert_hf_to_gguf.py` (commit 0c1e570). Google
//! publishes Gemma 3 configs that leave most keys at their class defaults, so those defaults
//! matter; for the other families only keys that do not shape tensors have defaults.

use serde_json::{Map, Value};

use super::ModelError;
use super::config::{Arch, ExpertGating, FfnActivation, MAX_LAYERS, ModelConfig, MoeConfig, RopeLayout};

/// The largest released MoE models have a few hundred experts.
const MAX_EXPERTS: u32 = 1 << 12;

/// The transformers model classes wllm reads, as families that share key semantics.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Family {
    Llama,
    Mistral,
    Mixtral,
    Qwen2,
    Qwen3,
    Qwen3Moe,
    Gemma3,
}

impl Family {
    fn from_class(class: &str) -> Option<Family> {
        Some(match class {
            "LlamaForCausalLM" => Family::Llama,
            "MistralForCausalLM" => Family::Mistral,
            "MixtralForCausalLM" => Family::Mixtral,
            "Qwen2ForCausalLM" => Family::Qwen2,
            "Qwen3ForCausalLM" => Family::Qwen3,
            "Qwen3MoeForCausalLM" => Family::Qwen3Moe,
            "Gemma3ForCausalLM" | "Gemma3ForConditionalGeneration" => Family::Gemma3,
            _ => return None,
        })
    }

    /// transformers' `model_type`, for configs without an `architectures` list.
    fn from_model_type(t: &str) -> Option<Family> {
        Some(match t {
            "llama" => Family::Llama,
            "mistral" => Family::Mistral,
            "mixtral" => Family::Mixtral,
            "qwen2" => Family::Qwen2,
            "qwen3" => Family::Qwen3,
            "qwen3_moe" => Family::Qwen3Moe,
            "gemma3" | "gemma3_text" => Family::Gemma3,
            _ => return None,
        })
    }

    fn arch(self) -> Arch {
        match self {
            Family::Llama | Family::Mistral | Family::Mixtral => Arch::Llama,
            Family::Qwen2 => Arch::Qwen2,
            Family::Qwen3 => Arch::Qwen3,
            Family::Qwen3Moe => Arch::Qwen3Moe,
            Family::Gemma3 => Arch::Gemma3,
        }
    }

    /// The config-class default of a numeric key, where configs are known to omit it.
    fn default(self, key: &str) -> Option<f64> {
        use Family::*;
        Some(match (self, key) {
            (Gemma3, "vocab_size") => 262_208.0,
            (Gemma3, "hidden_size") => 2304.0,
            (Gemma3, "intermediate_size") => 9216.0,
            (Gemma3, "num_hidden_layers") => 26.0,
            (Gemma3, "num_attention_heads") => 8.0,
            (Gemma3, "num_key_value_heads") => 4.0,
            (Gemma3, "head_dim") => 256.0,
            (Gemma3, "max_position_embeddings") => 131_072.0,
            (Gemma3, "rope_theta") => 1_000_000.0,
            (Gemma3, "rope_local_base_freq") => 10_000.0,
            (Gemma3, "query_pre_attn_scalar") => 256.0,
            (Gemma3, "sliding_window") => 4096.0,
            (Gemma3, "sliding_window_pattern") => 6.0,
            (Mixtral, "rms_norm_eps") => 1e-5,
            (Mixtral, "rope_theta") => 1_000_000.0,
            (Mixtral, "num_local_experts") => 8.0,
            (Mixtral, "num_experts_per_tok") => 2.0,
            (Qwen3Moe, "num_experts") => 128.0,
            (Qwen3Moe, "num_experts_per_tok") => 8.0,
            (Qwen3Moe, "moe_intermediate_size") => 768.0,
            (Qwen3Moe, "decoder_sparse_step") => 1.0,
            (Llama | Mistral | Qwen2 | Qwen3 | Qwen3Moe | Gemma3, "rms_norm_eps") => 1e-6,
            (_, "rope_theta") => 10_000.0,
            (Llama, "max_position_embeddings") => 2048.0,
            (Mistral | Mixtral, "max_position_embeddings") => 131_072.0,
            (Qwen2 | Qwen3 | Qwen3Moe, "max_position_embeddings") => 32_768.0,
            _ => return None,
        })
    }
}

/// Key lookup with Gemma 3's `text_config` taking precedence over the top level, as the
/// converter merges them. JSON `null` counts as absent (`"head_dim": null` is common).
struct Keys<'a> {
    root: &'a Map<String, Value>,
    text: Option<&'a Map<String, Value>>,
    family: Family,
}

impl<'a> Keys<'a> {
    fn get(&self, key: &str) -> Option<&'a Value> {
        let found = self.text.and_then(|t| t.get(key)).filter(|v| !v.is_null());
        found.or_else(|| self.root.get(key)).filter(|v| !v.is_null())
    }

    fn opt_u32(&self, key: &str) -> Result<Option<u32>, ModelError> {
        match self.get(key) {
            None => match self.family.default(key) {
                Some(d) => Ok(Some(d as u32)),
                None => Ok(None),
            },
            Some(v) => as_u32(key, v).map(Some),
        }
    }

    fn u32(&self, key: &str) -> Result<u32, ModelError> {
        self.opt_u32(key)?.ok_or_else(|| missing(key))
    }

    fn opt_f32(&self, key: &str) -> Result<Option<f32>, ModelError> {
        match self.get(key) {
            None => Ok(self.family.default(key).map(|d| d as f32)),
            Some(v) => as_f32(key, v).map(Some),
        }
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>, ModelError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(wrong(key, "a bool", v)),
        }
    }

    fn opt_str(&self, key: &str) -> Result<Option<&'a str>, ModelError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(wrong(key, "a string", v)),
        }
    }

    fn opt_object(&self, key: &str) -> Result<Option<&'a Map<String, Value>>, ModelError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(v) => Err(wrong(key, "an object", v)),
        }
    }
}

impl ModelConfig {
    /// Reads a transformers `config.json` of one of the classes `LlamaForCausalLM`,
    /// `MistralForCausalLM`, `MixtralForCausalLM`, `Qwen2ForCausalLM`, `Qwen3ForCausalLM`,
    /// `Qwen3MoeForCausalLM`, `Gemma3ForCausalLM` and `Gemma3ForConditionalGeneration` (whose
    /// `text_config` is read).
    ///
    /// Hugging Face checkpoints keep Q and K in the order the model computes with, so RoPE is
    /// [`RopeLayout::Neox`] for every family, llama included: convert_hf_to_gguf.py's `permute`
    /// moves row `j + h * d/2` of each head to row `2j + h`, which makes GGUF's adjacent-pair
    /// rotation act on exactly the (j, j + d/2) pairs that NeoX rotation uses here.
    pub fn from_hf_config(cfg: &Value) -> Result<ModelConfig, ModelError> {
        let root =
            cfg.as_object().ok_or_else(|| bad(format!("config.json is {}, not an object", kind(cfg))))?;
        let family = family_of(root)?;
        let text = match root.get("text_config") {
            None | Some(Value::Null) => None,
            Some(Value::Object(t)) => Some(t),
            Some(v) => return Err(wrong("text_config", "an object", v)),
        };
        let k = Keys { root, text, family };
        let arch = family.arch();
        let gemma = family == Family::Gemma3;

        let n_layer = k.u32("num_hidden_layers")?;
        let n_embd = k.u32("hidden_size")?;
        let n_head = k.u32("num_attention_heads")?;
        let n_head_kv = k.opt_u32("num_key_value_heads")?.unwrap_or(n_head);
        if n_layer == 0 || n_layer > MAX_LAYERS {
            return Err(bad(format!("num_hidden_layers {n_layer} must be between 1 and {MAX_LAYERS}")));
        }
        if n_embd == 0 {
            return Err(bad("hidden_size is 0".into()));
        }
        if n_head == 0 || n_head_kv == 0 {
            return Err(bad(format!(
                "num_attention_heads {n_head} / num_key_value_heads {n_head_kv}: a model needs at least one head"
            )));
        }
        if n_head % n_head_kv != 0 {
            return Err(bad(format!(
                "num_attention_heads {n_head} is not a multiple of num_key_value_heads {n_head_kv}"
            )));
        }
        let head_dim = match k.opt_u32("head_dim")? {
            Some(d) => d,
            None if n_embd % n_head == 0 => n_embd / n_head,
            None => {
                return Err(bad(format!(
                    "hidden_size {n_embd} is not divisible by num_attention_heads {n_head} and there is no head_dim"
                )));
            }
        };
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(bad(format!("head_dim {head_dim} must be even and non-zero")));
        }
        if head_dim.checked_mul(n_head).is_none() {
            return Err(bad(format!("head_dim {head_dim} times num_attention_heads {n_head} overflows")));
        }
        let n_vocab = k.u32("vocab_size")?;
        if n_vocab == 0 {
            return Err(bad("vocab_size is 0".into()));
        }

        for flag in ["attention_bias", "mlp_bias"] {
            if k.opt_bool(flag)? == Some(true) {
                return Err(ModelError::Unsupported(format!("config.json: {flag} = true")));
            }
        }

        let act_key =
            if gemma && k.get("hidden_activation").is_some() { "hidden_activation" } else { "hidden_act" };
        let ffn_act = match k.opt_str(act_key)? {
            None if gemma => FfnActivation::GeluTanh,
            None | Some("silu") | Some("swish") => FfnActivation::Silu,
            Some("gelu_pytorch_tanh") | Some("gelu_new") => FfnActivation::GeluTanh,
            Some(other) => {
                return Err(ModelError::Unsupported(format!("config.json: {act_key} {other:?}")));
            }
        };

        let rope = rope(&k, head_dim)?;
        let moe = moe(&k, family, n_layer)?;
        let n_ff = match &moe {
            Some(m) if family == Family::Qwen3Moe => k.opt_u32("intermediate_size")?.unwrap_or(m.n_ff_expert),
            _ => k.u32("intermediate_size")?,
        };
        if n_ff == 0 {
            return Err(bad("intermediate_size is 0".into()));
        }

        let (sliding_window, swa_layers) =
            if gemma { gemma_swa(&k, n_layer)? } else { (0, vec![false; n_layer as usize]) };
        let attn_scale = if gemma {
            let s = k.opt_f32("query_pre_attn_scalar")?.unwrap_or(head_dim as f32);
            if s <= 0.0 {
                return Err(bad(format!("query_pre_attn_scalar {s} must be positive")));
            }
            1.0 / s.sqrt()
        } else {
            1.0 / (head_dim as f32).sqrt()
        };
        let rms_eps = k.opt_f32("rms_norm_eps")?.ok_or_else(|| missing("rms_norm_eps"))?;

        Ok(ModelConfig {
            arch,
            name: k.opt_str("_name_or_path")?.filter(|s| !s.is_empty()).map(str::to_string),
            n_layer,
            n_embd,
            n_head,
            n_head_kv,
            head_dim,
            head_dim_v: head_dim,
            n_ff,
            n_vocab,
            context_length: k.opt_u32("max_position_embeddings")?.unwrap_or(2048),
            rms_eps,
            rope_base: rope.base,
            rope_base_swa: if gemma { rope.base_swa } else { rope.base },
            rope_freq_scale: rope.freq_scale,
            rope_dim: rope.dim,
            rope_layout: RopeLayout::Neox,
            sliding_window,
            swa_layers,
            ffn_act,
            embed_scale: gemma.then(|| (n_embd as f32).sqrt()),
            attn_scale,
            final_logit_softcap: k.opt_f32("final_logit_softcapping")?.filter(|c| *c > 0.0),
            moe,
            has_qk_norm: matches!(arch, Arch::Qwen3 | Arch::Qwen3Moe | Arch::Gemma3),
            has_post_norms: gemma,
            has_qkv_bias: arch == Arch::Qwen2,
        })
    }
}

fn family_of(root: &Map<String, Value>) -> Result<Family, ModelError> {
    match root.get("architectures") {
        Some(Value::Array(list)) if !list.is_empty() => {
            let class = match &list[0] {
                Value::String(s) => s.as_str(),
                v => return Err(wrong("architectures[0]", "a class name", v)),
            };
            Family::from_class(class).ok_or_else(|| ModelError::UnknownArchitecture(class.to_string()))
        }
        None | Some(Value::Null) | Some(Value::Array(_)) => match root.get("model_type") {
            Some(Value::String(t)) => {
                Family::from_model_type(t).ok_or_else(|| ModelError::UnknownArchitecture(t.to_string()))
            }
            _ => {
                Err(bad("config.json names no model class (no \"architectures\", no \"model_type\")".into()))
            }
        },
        Some(v) => Err(wrong("architectures", "a list of class names", v)),
    }
}

struct Rope {
    base: f32,
    base_swa: f32,
    freq_scale: f32,
    dim: u32,
}

/// RoPE settings, from transformers' older flat keys (`rope_theta`, `rope_scaling`) or the
/// newer `rope_parameters`, which may hold separate `full_attention` and `sliding_attention`
/// entries.
fn rope(k: &Keys, head_dim: u32) -> Result<Rope, ModelError> {
    let params = match k.opt_object("rope_parameters")? {
        Some(p) => Some(p),
        None => k.opt_object("rope_scaling")?,
    };
    let full = params.and_then(|p| p.get("full_attention")).and_then(Value::as_object).or(params);
    let sliding = params.and_then(|p| p.get("sliding_attention")).and_then(Value::as_object);
    let sub_f32 = |m: Option<&Map<String, Value>>, key: &str| -> Result<Option<f32>, ModelError> {
        m.and_then(|m| m.get(key)).filter(|v| !v.is_null()).map(|v| as_f32(key, v)).transpose()
    };

    let base = match sub_f32(full, "rope_theta")? {
        Some(b) => b,
        None => k.opt_f32("rope_theta")?.unwrap_or(10_000.0),
    };
    let base_swa = match sub_f32(sliding, "rope_theta")? {
        Some(b) => b,
        None => k.opt_f32("rope_local_base_freq")?.unwrap_or(10_000.0),
    };
    if base <= 0.0 || base_swa <= 0.0 {
        return Err(bad(format!("rope_theta {base} / local {base_swa} must be positive")));
    }

    let scaling = full.and_then(|m| m.get("rope_type").or_else(|| m.get("type"))).filter(|v| !v.is_null());
    let freq_scale = match scaling {
        None => 1.0,
        Some(Value::String(t)) => match t.as_str() {
            "default" => 1.0,
            "linear" => match sub_f32(full, "factor")? {
                Some(f) if f > 0.0 => 1.0 / f,
                other => {
                    return Err(bad(format!("linear RoPE scaling needs a positive factor, found {other:?}")));
                }
            },
            // Per-frequency factors, which the safetensors loader supplies as the
            // `rope_freqs.weight` tensor exactly as the converter does.
            "llama3" => 1.0,
            other => return Err(ModelError::Unsupported(format!("RoPE scaling type {other:?}"))),
        },
        Some(v) => return Err(wrong("rope_scaling.rope_type", "a string", v)),
    };

    let partial = match sub_f32(full, "partial_rotary_factor")? {
        Some(p) => Some(p),
        None => k.opt_f32("partial_rotary_factor")?,
    };
    let dim = match partial {
        None => head_dim,
        Some(p) if p > 0.0 && p <= 1.0 => (head_dim as f32 * p).round() as u32,
        Some(p) => return Err(bad(format!("partial_rotary_factor {p} must be in (0, 1]"))),
    };
    if dim == 0 || dim % 2 != 0 {
        return Err(bad(format!("rotary dimension {dim} (head_dim {head_dim}) must be even and non-zero")));
    }
    Ok(Rope { base, base_swa, freq_scale, dim })
}

fn moe(k: &Keys, family: Family, n_layer: u32) -> Result<Option<MoeConfig>, ModelError> {
    let (experts_key, ff_key, renormalize) = match family {
        // Mixtral always renormalises the top-k softmax weights.
        Family::Mixtral => ("num_local_experts", "intermediate_size", true),
        Family::Qwen3Moe => {
            ("num_experts", "moe_intermediate_size", k.opt_bool("norm_topk_prob")?.unwrap_or(false))
        }
        _ => return Ok(None),
    };
    let n_expert = k.u32(experts_key)?;
    let n_expert_used = k.u32("num_experts_per_tok")?;
    if n_expert == 0 || n_expert > MAX_EXPERTS {
        return Err(bad(format!("{experts_key} {n_expert} must be between 1 and {MAX_EXPERTS}")));
    }
    if n_expert_used == 0 || n_expert_used > n_expert {
        return Err(bad(format!(
            "num_experts_per_tok {n_expert_used} must be between 1 and {experts_key} {n_expert}"
        )));
    }
    let n_ff_expert = k.u32(ff_key)?;
    if n_ff_expert == 0 {
        return Err(bad(format!("{ff_key} is 0")));
    }
    if family == Family::Qwen3Moe {
        // Dense layers between MoE layers would need a per-layer FFN kind.
        let step = k.opt_u32("decoder_sparse_step")?.unwrap_or(1);
        let dense_layers = match k.get("mlp_only_layers") {
            None => false,
            Some(Value::Array(a)) => !a.is_empty(),
            Some(v) => return Err(wrong("mlp_only_layers", "a list of layer indices", v)),
        };
        if (step != 1 && n_layer > 1) || dense_layers {
            return Err(ModelError::Unsupported(
                "qwen3moe with dense layers (decoder_sparse_step != 1 or mlp_only_layers)".into(),
            ));
        }
    }
    Ok(Some(MoeConfig {
        n_expert,
        n_expert_used,
        n_ff_expert,
        gating: ExpertGating::SoftmaxTopK { renormalize },
        weights_scale: 1.0,
    }))
}

/// Gemma 3 alternates sliding-window and global layers, given either as `layer_types` or as a
/// period (`sliding_window_pattern` n: every n-th layer is global).
fn gemma_swa(k: &Keys, n_layer: u32) -> Result<(u32, Vec<bool>), ModelError> {
    let window = k.opt_u32("sliding_window")?.unwrap_or(0);
    if let Some(types) = k.get("layer_types") {
        let Value::Array(types) = types else {
            return Err(wrong("layer_types", "a list", types));
        };
        if types.len() != n_layer as usize {
            return Err(bad(format!("layer_types has {} entries for {n_layer} layers", types.len())));
        }
        let mut flags = Vec::with_capacity(types.len());
        for (il, t) in types.iter().enumerate() {
            flags.push(match t.as_str() {
                Some("sliding_attention") => true,
                Some("full_attention") => false,
                _ => {
                    return Err(wrong(
                        &format!("layer_types[{il}]"),
                        "\"sliding_attention\" or \"full_attention\"",
                        t,
                    ));
                }
            });
        }
        let window = if flags.contains(&true) { window } else { 0 };
        return Ok((window, flags));
    }
    let period = k.opt_u32("sliding_window_pattern")?.unwrap_or(6);
    if window == 0 || period == 1 {
        return Ok((0, vec![false; n_layer as usize]));
    }
    Ok((window, (0..n_layer).map(|il| period == 0 || il % period < period - 1).collect()))
}

fn as_u32(key: &str, v: &Value) -> Result<u32, ModelError> {
    v.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or_else(|| wrong(key, "an unsigned 32-bit integer", v))
}

fn as_f32(key: &str, v: &Value) -> Result<f32, ModelError> {
    v.as_f64().map(|f| f as f32).filter(|f| f.is_finite()).ok_or_else(|| wrong(key, "a number", v))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn bad(msg: String) -> ModelError {
    ModelError::BadHyperparameter(msg)
}

fn missing(key: &str) -> ModelError {
    bad(format!("config.json has no {key:?}"))
}

fn wrong(key: &str, expected: &str, found: &Value) -> ModelError {
    let shown = match found {
        Value::Array(_) | Value::Object(_) => kind(found).to_string(),
        Value::String(s) if s.len() > 40 => kind(found).to_string(),
        _ => found.to_string(),
    };
    bad(format!("{key:?} is {shown}, expected {expected}"))
}
