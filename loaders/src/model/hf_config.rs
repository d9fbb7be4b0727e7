//! Architecture hyperparameters from a Hugging Face `config.json`, into the same
//! [`ModelConfig`] that GGUF metadata fills.
//!
//! Key names and the defaults of absent keys follow transformers' config classes; what they
//! mean in GGUF terms follows llama.cpp's `convert_hf_to_gguf.py` (commit 0c1e570). Google
//! publishes Gemma 3 configs that leave most keys at their class defaults, so those defaults
//! matter; for the other families only keys that do not shape tensors have defaults.

use serde_json::{Map, Value};

use super::ModelError;
use super::arch::{Arch, FfnActivation, KeyHeadMap, RopeLayout, SWIGLU_OAI_ALPHA, SWIGLU_OAI_LIMIT};
use super::config::ModelConfig;
use super::hyper::{DeltaNetHyper, Hyperparams, KeyFormat, MoeHyper, SwaLayers, YarnHyper};

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
    GptOss,
    Qwen35,
    Qwen35Moe,
    Qwen3Next,
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
            "GptOssForCausalLM" => Family::GptOss,
            "Qwen3_5ForConditionalGeneration" | "Qwen3_5ForCausalLM" => Family::Qwen35,
            "Qwen3_5MoeForConditionalGeneration" | "Qwen3_5MoeForCausalLM" => Family::Qwen35Moe,
            "Qwen3NextForCausalLM" => Family::Qwen3Next,
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
            "gpt_oss" => Family::GptOss,
            "qwen3_5" | "qwen3_5_text" => Family::Qwen35,
            "qwen3_5_moe" | "qwen3_5_moe_text" => Family::Qwen35Moe,
            "qwen3_next" => Family::Qwen3Next,
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
            Family::GptOss => Arch::GptOss,
            Family::Qwen35 => Arch::Qwen35,
            Family::Qwen35Moe => Arch::Qwen35Moe,
            Family::Qwen3Next => Arch::Qwen3Next,
        }
    }

    /// Qwen3.5 and Qwen3-Next: Gated DeltaNet layers between the attention ones.
    fn hybrid(self) -> bool {
        matches!(self, Family::Qwen35 | Family::Qwen35Moe | Family::Qwen3Next)
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
            (GptOss, "rope_theta") => 150_000.0,
            (GptOss, "max_position_embeddings") => 131_072.0,
            (GptOss, "sliding_window") => 128.0,
            (GptOss, "rms_norm_eps") => 1e-5,
            (Qwen3Next | Qwen35 | Qwen35Moe, "full_attention_interval") => 4.0,
            // The converter's default when neither the top level nor the RoPE parameters say.
            (Qwen3Next | Qwen35 | Qwen35Moe, "partial_rotary_factor") => 0.25,
            (
                Llama | Mistral | Qwen2 | Qwen3 | Qwen3Moe | Gemma3 | Qwen35 | Qwen35Moe | Qwen3Next,
                "rms_norm_eps",
            ) => 1e-6,
            (_, "rope_theta") => 10_000.0,
            (Llama, "max_position_embeddings") => 2048.0,
            (Mistral | Mixtral, "max_position_embeddings") => 131_072.0,
            (Qwen2 | Qwen3 | Qwen3Moe | Qwen35 | Qwen35Moe | Qwen3Next, "max_position_embeddings") => {
                32_768.0
            }
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
    /// `Qwen3MoeForCausalLM`, `Gemma3ForCausalLM`, `GptOssForCausalLM`, `Qwen3NextForCausalLM`,
    /// `Qwen3_5ForCausalLM`, `Qwen3_5MoeForCausalLM`, and the multimodal
    /// `Gemma3ForConditionalGeneration`, `Qwen3_5ForConditionalGeneration` and
    /// `Qwen3_5MoeForConditionalGeneration`, whose `text_config` is read.
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
        let gemma = family == Family::Gemma3;
        let mut h = Hyperparams::new(family.arch(), KeyFormat::HuggingFace);
        h.name = k.opt_str("_name_or_path")?.filter(|s| !s.is_empty()).map(str::to_string);
        h.n_layer = k.u32("num_hidden_layers")?;
        h.n_embd = k.u32("hidden_size")?;
        h.n_head = k.u32("num_attention_heads")?;
        h.n_head_kv = k.opt_u32("num_key_value_heads")?;
        h.head_dim = k.opt_u32("head_dim")?;
        h.n_vocab = k.u32("vocab_size")?;
        check_biases(&k)?;
        check_activation(&k, gemma)?;
        let rope = rope(&k)?;
        h.rope_base = Some(rope.base);
        h.rope_base_swa = Some(rope.base_swa);
        h.rope_freq_scale = rope.freq_scale;
        h.rope_yarn = rope.yarn;
        h.rope_fraction = rope.partial;
        h.rope_layout = Some(RopeLayout::Neox);
        h.moe = moe(&k, family, h.n_layer)?;
        h.n_ff = k.opt_u32("intermediate_size")?;
        h.context_length = k.opt_u32("max_position_embeddings")?;
        h.rms_eps = k.opt_f32("rms_norm_eps")?.ok_or_else(|| missing("rms_norm_eps"))?;
        if gemma || family == Family::GptOss {
            h.sliding_window = k.opt_u32("sliding_window")?;
            h.swa_layers = swa_layers(&k, h.n_layer)?;
        }
        if gemma {
            h.query_pre_attn_scalar = k.opt_f32("query_pre_attn_scalar")?;
        }
        h.final_logit_softcap = k.opt_f32("final_logit_softcapping")?;
        if family.hybrid() {
            h.delta_net = Some(delta_net(&k, h.n_layer)?);
            // The converter writes Qwen3.5's default sections when the checkpoint omits them,
            // and llama.cpp requires them for qwen35 and qwen35moe.
            h.rope_sections = match (rope.sections, family) {
                (Some(s), _) => Some(s),
                (None, Family::Qwen3Next) => None,
                (None, _) => Some(QWEN35_MROPE_SECTIONS.to_vec()),
            };
            if k.opt_bool("attn_output_gate")? == Some(false) {
                return Err(ModelError::Unsupported(format!(
                    "config.json: attn_output_gate = false in a {} model",
                    family.arch().name()
                )));
            }
        }
        let mut config = h.build()?;
        // Checkpoints keep each key head's value heads together; llama.cpp's converter reorders
        // them for qwen35 and qwen35moe GGUFs, which the engine reads tiled. Reading the stored
        // order instead keeps those tensors zero-copy and computes the same model.
        if let Some(d) = config.delta_net.as_mut() {
            d.key_heads = KeyHeadMap::Grouped;
        }
        Ok(config)
    }
}

/// `attention_bias` must say what the architecture's traits say: gpt-oss has biases on
/// q, k, v and o (and states `true`); the other families have none that the flag governs
/// (qwen2's q/k/v biases are built into its class). `mlp_bias` is never supported.
fn check_biases(k: &Keys) -> Result<(), ModelError> {
    let t = k.family.arch().traits();
    let attn = t.qkv_bias && t.attn_out_bias;
    match k.opt_bool("attention_bias")? {
        Some(b) if b != attn => {
            return Err(ModelError::Unsupported(format!(
                "config.json: attention_bias = {b} in a {} model",
                k.family.arch().name()
            )));
        }
        _ => {}
    }
    if k.opt_bool("mlp_bias")? == Some(true) {
        return Err(ModelError::Unsupported("config.json: mlp_bias = true".into()));
    }
    Ok(())
}

/// Checks the FFN activation is the one the architecture's traits name.
fn check_activation(k: &Keys, gemma: bool) -> Result<(), ModelError> {
    if k.family == Family::GptOss {
        return check_swiglu_oai(k);
    }
    let act_key =
        if gemma && k.get("hidden_activation").is_some() { "hidden_activation" } else { "hidden_act" };
    let act = match k.opt_str(act_key)? {
        None => return Ok(()),
        Some("silu") | Some("swish") => FfnActivation::Silu,
        Some("gelu_pytorch_tanh") | Some("gelu_new") => FfnActivation::GeluTanh,
        Some(other) => return Err(ModelError::Unsupported(format!("config.json: {act_key} {other:?}"))),
    };
    if act != k.family.arch().traits().ffn_act {
        return Err(ModelError::Unsupported(format!(
            "config.json: {act_key} {act:?} in a {} model",
            k.family.arch().name()
        )));
    }
    Ok(())
}

/// gpt-oss states `hidden_act: "silu"`, but its experts clamp and gain the SwiGLU with
/// `swiglu_limit` and `swiglu_alpha`, which the engine has fixed at the released models'
/// values (as llama.cpp does): other values are refused rather than silently ignored.
fn check_swiglu_oai(k: &Keys) -> Result<(), ModelError> {
    match k.opt_str("hidden_act")? {
        None | Some("silu") | Some("swish") => {}
        Some(other) => {
            return Err(ModelError::Unsupported(format!("config.json: hidden_act {other:?} in gpt-oss")));
        }
    }
    for (key, fixed) in [("swiglu_limit", SWIGLU_OAI_LIMIT), ("swiglu_alpha", SWIGLU_OAI_ALPHA)] {
        if let Some(v) = k.opt_f32(key)?.filter(|&v| v != fixed) {
            return Err(ModelError::Unsupported(format!("config.json: {key} {v} (wllm runs {fixed})")));
        }
    }
    Ok(())
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
    /// Multi-section RoPE (`mrope_section`), padded to four sections.
    sections: Option<Vec<u32>>,
    base: f32,
    base_swa: f32,
    freq_scale: f32,
    yarn: Option<YarnHyper>,
    /// Share of each head that is rotated.
    partial: Option<f32>,
}

/// RoPE settings, from transformers' older flat keys (`rope_theta`, `rope_scaling`) or the
/// newer `rope_parameters`, which may hold separate `full_attention` and `sliding_attention`
/// entries.
fn rope(k: &Keys) -> Result<Rope, ModelError> {
    let params = match k.opt_object("rope_parameters")? {
        Some(p) => Some(p),
        None => k.opt_object("rope_scaling")?,
    };
    let full = params.and_then(|p| p.get("full_attention")).and_then(Value::as_object).or(params);
    let sliding = params.and_then(|p| p.get("sliding_attention")).and_then(Value::as_object);

    let base = match sub_f32(full, "rope_theta")? {
        Some(b) => b,
        None => k.opt_f32("rope_theta")?.unwrap_or(10_000.0),
    };
    let base_swa = match sub_f32(sliding, "rope_theta")? {
        Some(b) => b,
        None => k.opt_f32("rope_local_base_freq")?.unwrap_or(10_000.0),
    };

    let scaling = full.and_then(|m| m.get("rope_type").or_else(|| m.get("type"))).filter(|v| !v.is_null());
    let mut yarn = None;
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
            "yarn" => {
                let (scale, y) = yarn_params(full)?;
                yarn = Some(y);
                scale
            }
            other => return Err(ModelError::Unsupported(format!("RoPE scaling type {other:?}"))),
        },
        Some(v) => return Err(wrong("rope_scaling.rope_type", "a string", v)),
    };

    let partial = match sub_f32(full, "partial_rotary_factor")? {
        Some(p) => Some(p),
        None => k.opt_f32("partial_rotary_factor")?,
    };
    if let Some(p) = partial.filter(|p| !(*p > 0.0 && *p <= 1.0)) {
        return Err(bad(format!("partial_rotary_factor {p} must be in (0, 1]")));
    }
    let sections = match full.and_then(|m| m.get("mrope_section")).filter(|v| !v.is_null()) {
        None => None,
        Some(Value::Array(list)) if list.len() <= 4 => {
            let mut s = list
                .iter()
                .enumerate()
                .map(|(i, v)| as_u32(&format!("mrope_section[{i}]"), v))
                .collect::<Result<Vec<u32>, _>>()?;
            s.resize(4, 0);
            Some(s)
        }
        Some(v) => return Err(wrong("mrope_section", "a list of at most four section sizes", v)),
    };
    Ok(Rope { sections, base, base_swa, freq_scale, yarn, partial })
}

/// YaRN as convert_hf_to_gguf.py writes it: `factor` (as 1 / freq_scale),
/// `original_max_position_embeddings`, `beta_fast`, `beta_slow`, and `attention_factor` (or
/// `attn_factor`) as the extra factor on (cos, sin). transformers' `truncate: false` (gpt-oss)
/// is ignored as the converter ignores it: llama.cpp always rounds the ramp's ends to whole
/// dimensions, and wllm follows llama.cpp. An extrapolation factor other than 1 is refused
/// (the engine has none).
fn yarn_params(params: Option<&Map<String, Value>>) -> Result<(f32, YarnHyper), ModelError> {
    let factor = match sub_f32(params, "factor")? {
        Some(f) if f > 0.0 => f,
        other => return Err(bad(format!("YaRN RoPE scaling needs a positive factor, found {other:?}"))),
    };
    if let Some(e) = sub_f32(params, "extrapolation_factor")?.filter(|&e| e != 1.0) {
        return Err(ModelError::Unsupported(format!("YaRN with extrapolation_factor {e}")));
    }
    let orig_ctx = match params.and_then(|m| m.get("original_max_position_embeddings")) {
        None | Some(Value::Null) => None,
        Some(v) => Some(as_u32("rope_scaling.original_max_position_embeddings", v)?),
    };
    let attn_factor = match sub_f32(params, "attention_factor")? {
        Some(a) => Some(a),
        None => sub_f32(params, "attn_factor")?,
    };
    let y = YarnHyper {
        orig_ctx,
        beta_fast: sub_f32(params, "beta_fast")?,
        beta_slow: sub_f32(params, "beta_slow")?,
        attn_factor,
    };
    Ok((1.0 / factor, y))
}

/// A number inside a RoPE parameter object (`null`: absent).
fn sub_f32(m: Option<&Map<String, Value>>, key: &str) -> Result<Option<f32>, ModelError> {
    m.and_then(|m| m.get(key)).filter(|v| !v.is_null()).map(|v| as_f32(key, v)).transpose()
}

fn moe(k: &Keys, family: Family, n_layer: u32) -> Result<Option<MoeHyper>, ModelError> {
    let (experts_key, ff_key, renormalize) = match family {
        // Mixtral always renormalises the top-k softmax weights.
        Family::Mixtral => ("num_local_experts", "intermediate_size", true),
        Family::Qwen3Moe => {
            ("num_experts", "moe_intermediate_size", k.opt_bool("norm_topk_prob")?.unwrap_or(false))
        }
        // A softmax over the chosen experts' logits, which is top-k renormalised (see
        // ExpertGating).
        Family::GptOss => ("num_local_experts", "intermediate_size", true),
        // llama.cpp always renormalises these (its qwen35moe and qwen3next graphs fix the flag).
        Family::Qwen35Moe | Family::Qwen3Next => {
            if k.opt_bool("norm_topk_prob")? == Some(false) {
                return Err(ModelError::Unsupported(format!(
                    "config.json: norm_topk_prob = false in a {} model",
                    family.arch().name()
                )));
            }
            ("num_experts", "moe_intermediate_size", true)
        }
        _ => return Ok(None),
    };
    // gpt-oss-20b's config.json states both spellings; the original checkpoint's only the second.
    let used_key = match k.get("num_experts_per_tok") {
        None if family == Family::GptOss && k.get("experts_per_token").is_some() => "experts_per_token",
        _ => "num_experts_per_tok",
    };
    if matches!(family, Family::Qwen3Moe | Family::Qwen35Moe | Family::Qwen3Next) {
        // Dense layers between MoE layers would need a per-layer FFN kind.
        let step = k.opt_u32("decoder_sparse_step")?.unwrap_or(1);
        let dense_layers = match k.get("mlp_only_layers") {
            None => false,
            Some(Value::Array(a)) => !a.is_empty(),
            Some(v) => return Err(wrong("mlp_only_layers", "a list of layer indices", v)),
        };
        if (step != 1 && n_layer > 1) || dense_layers {
            return Err(ModelError::Unsupported(format!(
                "{} with dense layers (decoder_sparse_step != 1 or mlp_only_layers)",
                family.arch().name()
            )));
        }
    }
    Ok(Some(MoeHyper {
        n_expert: k.u32(experts_key)?,
        n_expert_used: k.u32(used_key)?,
        n_ff_expert: Some(k.u32(ff_key)?),
        renormalize: Some(renormalize),
        weights_scale: None,
        shared_ff: k.opt_u32("shared_expert_intermediate_size")?,
    }))
}

/// Qwen3.5's `mrope_section` when a checkpoint leaves it out (transformers' and the
/// converter's default), padded to four.
const QWEN35_MROPE_SECTIONS: [u32; 4] = [11, 11, 10, 0];

/// The Gated DeltaNet sizes (`linear_*`) and which layers are recurrent: `layer_types`, or
/// else every `full_attention_interval`-th layer is full attention.
fn delta_net(k: &Keys, n_layer: u32) -> Result<DeltaNetHyper, ModelError> {
    let key_dim = k.u32("linear_key_head_dim")?;
    let value_dim = k.u32("linear_value_head_dim")?;
    let n_v = k.u32("linear_num_value_heads")?;
    // llama.cpp's delta-rule op takes square states.
    if key_dim != value_dim {
        return Err(ModelError::Unsupported(format!(
            "config.json: linear_value_head_dim {value_dim} differs from linear_key_head_dim {key_dim}"
        )));
    }
    let inner_size = value_dim.checked_mul(n_v).ok_or_else(|| {
        bad(format!("linear_num_value_heads {n_v} × linear_value_head_dim {value_dim} overflows"))
    })?;
    let recurrent_layers = match k.get("layer_types") {
        None => None,
        Some(Value::Array(types)) => {
            if types.len() != n_layer as usize {
                return Err(bad(format!("layer_types has {} entries for {n_layer} layers", types.len())));
            }
            let flags = types.iter().enumerate().map(|(il, t)| match t.as_str() {
                Some("linear_attention") => Ok(true),
                Some("full_attention") => Ok(false),
                _ => {
                    Err(wrong(&format!("layer_types[{il}]"), "\"linear_attention\" or \"full_attention\"", t))
                }
            });
            Some(flags.collect::<Result<Vec<bool>, _>>()?)
        }
        Some(v) => return Err(wrong("layer_types", "a list", v)),
    };
    Ok(DeltaNetHyper {
        conv_kernel: k.u32("linear_conv_kernel_dim")?,
        inner_size,
        state_size: key_dim,
        time_step_rank: n_v,
        group_count: k.u32("linear_num_key_heads")?,
        full_attention_interval: k.opt_u32("full_attention_interval")?,
        recurrent_layers,
    })
}

/// Gemma 3 and gpt-oss alternate sliding-window and global layers, given either as
/// `layer_types` or as a period (`sliding_window_pattern` n: every n-th layer is global);
/// without either, the architecture's own period (Gemma 3: 6, gpt-oss: 2).
fn swa_layers(k: &Keys, n_layer: u32) -> Result<SwaLayers, ModelError> {
    let Some(types) = k.get("layer_types") else {
        return Ok(k.opt_u32("sliding_window_pattern")?.map_or(SwaLayers::Default, SwaLayers::Period));
    };
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
    Ok(SwaLayers::Listed(flags))
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
