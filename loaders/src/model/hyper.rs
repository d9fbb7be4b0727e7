//! The one validation of a model's hyperparameters. A reader (GGUF metadata, a Hugging Face
//! `config.json`) fills [`Hyperparams`] with the numbers it found, unchecked; [`Hyperparams::build`]
//! checks each one the math uses (naming the key it came from, in that format's spelling) and
//! applies the architecture's traits to make the [`ModelConfig`].

use super::ModelError;
use super::arch::{Arch, AttnScaleRule, ExpertGating, FfnKind, RopeLayout, SwaRule};
use super::config::{DeltaNetConfig, MAX_LAYERS, ModelConfig, MoeConfig, Yarn};

/// The largest released MoE models have a few hundred experts.
pub const MAX_EXPERTS: u32 = 1 << 12;

/// Where the numbers came from, so that errors name the key the user can look for.
#[derive(Clone, Debug)]
pub enum KeyFormat {
    /// GGUF metadata: keys are `<arch>.<field>`.
    Gguf { prefix: String },
    /// A transformers `config.json`.
    HuggingFace,
}

impl KeyFormat {
    /// The key that holds `field` (named as in GGUF, without the architecture prefix).
    pub fn key(&self, field: &str) -> String {
        match self {
            KeyFormat::Gguf { prefix } => format!("{prefix}.{field}"),
            KeyFormat::HuggingFace => {
                let hf = match field {
                    "block_count" => "num_hidden_layers",
                    "embedding_length" => "hidden_size",
                    "attention.head_count" => "num_attention_heads",
                    "attention.head_count_kv" => "num_key_value_heads",
                    "attention.key_length" | "attention.value_length" => "head_dim",
                    "feed_forward_length" => "intermediate_size",
                    "context_length" => "max_position_embeddings",
                    "attention.layer_norm_rms_epsilon" => "rms_norm_eps",
                    "rope.freq_base" => "rope_theta",
                    "rope.freq_base_swa" => "rope_local_base_freq",
                    "rope.scaling.factor" => "rope_scaling.factor",
                    "rope.dimension_count" => "partial_rotary_factor",
                    "attention.sliding_window" => "sliding_window",
                    "attention.sliding_window_pattern" => "layer_types",
                    "expert_count" => "num_experts",
                    "expert_used_count" => "num_experts_per_tok",
                    "expert_feed_forward_length" => "moe_intermediate_size",
                    "expert_shared_feed_forward_length" => "shared_expert_intermediate_size",
                    "ssm.conv_kernel" => "linear_conv_kernel_dim",
                    "ssm.state_size" => "linear_key_head_dim",
                    "ssm.group_count" => "linear_num_key_heads",
                    "ssm.time_step_rank" => "linear_num_value_heads",
                    "ssm.inner_size" => "linear_value_head_dim",
                    "attention.recurrent_layers" => "layer_types",
                    "rope.dimension_sections" => "mrope_section",
                    other => other,
                };
                format!("config.json {hf}")
            }
        }
    }
}

/// Which layers use the sliding window, as the metadata states it.
#[derive(Clone, Debug, PartialEq)]
pub enum SwaLayers {
    /// Not stated: the architecture's default.
    Default,
    /// Every `n`-th layer is global (0: every layer windowed).
    Period(u32),
    /// One flag per layer.
    Listed(Vec<bool>),
}

/// YaRN's numbers as the metadata states them (`None`: llama.cpp's defaults).
#[derive(Clone, Debug, Default)]
pub struct YarnHyper {
    pub orig_ctx: Option<u32>,
    pub beta_fast: Option<f32>,
    pub beta_slow: Option<f32>,
    pub attn_factor: Option<f32>,
}

#[derive(Clone, Debug, Default)]
pub struct MoeHyper {
    pub n_expert: u32,
    pub n_expert_used: u32,
    pub n_ff_expert: Option<u32>,
    pub renormalize: Option<bool>,
    pub weights_scale: Option<f32>,
    /// The shared expert's hidden size (`expert_shared_feed_forward_length`).
    pub shared_ff: Option<u32>,
}

/// A hybrid model's Gated DeltaNet numbers, in llama.cpp's `ssm.*` terms.
#[derive(Clone, Debug, Default)]
pub struct DeltaNetHyper {
    pub conv_kernel: u32,
    /// All value heads together (`ssm.inner_size`).
    pub inner_size: u32,
    /// Size of one key (and value) head (`ssm.state_size`).
    pub state_size: u32,
    /// Value heads (`ssm.time_step_rank`).
    pub time_step_rank: u32,
    /// Key heads (`ssm.group_count`).
    pub group_count: u32,
    /// Every n-th layer is full attention, when no per-layer list is given (default 4).
    pub full_attention_interval: Option<u32>,
    /// Per layer: recurrent (`attention.recurrent_layers`).
    pub recurrent_layers: Option<Vec<bool>>,
}

/// The largest convolution a DeltaNet layer may have: released models use 4 taps.
const MAX_CONV_KERNEL: u32 = 64;
/// The numbers a reader found; `None` where the file does not say.
#[derive(Clone, Debug)]
pub struct Hyperparams {
    pub arch: Arch,
    pub keys: KeyFormat,
    pub name: Option<String>,
    pub n_layer: u32,
    pub n_embd: u32,
    pub n_head: u32,
    pub n_head_kv: Option<u32>,
    pub head_dim: Option<u32>,
    pub head_dim_v: Option<u32>,
    pub n_ff: Option<u32>,
    pub n_vocab: u32,
    pub context_length: Option<u32>,
    pub rms_eps: f32,
    pub rope_base: Option<f32>,
    pub rope_base_swa: Option<f32>,
    /// Positions are multiplied by this (1 / linear scaling factor).
    pub rope_freq_scale: f32,
    /// YaRN scaling (with `rope_freq_scale` its 1 / factor).
    pub rope_yarn: Option<YarnHyper>,
    /// Rotated dimensions per head (`None`: all of them).
    pub rope_dim: Option<u32>,
    /// Or the rotated share of each head (Hugging Face `partial_rotary_factor`, in (0, 1]).
    pub rope_fraction: Option<f32>,
    /// Forced by the format (Hugging Face: NeoX); `None`: the architecture's GGUF layout.
    pub rope_layout: Option<RopeLayout>,
    pub sliding_window: Option<u32>,
    pub swa_layers: SwaLayers,
    pub query_pre_attn_scalar: Option<f32>,
    pub final_logit_softcap: Option<f32>,
    /// llama.cpp's pooling code for embedding models (`<arch>.pooling_type`), unchecked.
    pub pooling_type: Option<u32>,
    pub moe: Option<MoeHyper>,
    pub delta_net: Option<DeltaNetHyper>,
    /// Multi-token-prediction layers stored after the trunk's and counted in `block_count`;
    /// the main pass does not run them.
    pub nextn_layers: u32,
    /// Multi-section RoPE (`rope.dimension_sections`): which position component each rotated
    /// pair reads.
    pub rope_sections: Option<Vec<u32>>,
}

impl Hyperparams {
    /// An empty set for `arch`, for readers to fill.
    pub fn new(arch: Arch, keys: KeyFormat) -> Hyperparams {
        Hyperparams {
            arch,
            keys,
            name: None,
            n_layer: 0,
            n_embd: 0,
            n_head: 0,
            n_head_kv: None,
            head_dim: None,
            head_dim_v: None,
            n_ff: None,
            n_vocab: 0,
            context_length: None,
            rms_eps: f32::NAN,
            rope_base: None,
            rope_base_swa: None,
            rope_freq_scale: 1.0,
            rope_yarn: None,
            rope_dim: None,
            rope_fraction: None,
            rope_layout: None,
            sliding_window: None,
            swa_layers: SwaLayers::Default,
            query_pre_attn_scalar: None,
            final_logit_softcap: None,
            pooling_type: None,
            moe: None,
            delta_net: None,
            nextn_layers: 0,
            rope_sections: None,
        }
    }

    fn bad(&self, field: &str, what: String) -> ModelError {
        ModelError::BadHyperparameter(format!("{} {what}", self.keys.key(field)))
    }

    /// A positive, finite float.
    fn positive(&self, field: &str, v: f32) -> Result<f32, ModelError> {
        if v.is_finite() && v > 0.0 {
            Ok(v)
        } else {
            Err(self.bad(field, format!("{v}: it must be a positive finite number")))
        }
    }

    fn nonzero(&self, field: &str, v: u32) -> Result<u32, ModelError> {
        if v == 0 { Err(self.bad(field, "0: it must be positive".into())) } else { Ok(v) }
    }

    /// Checks every number and applies the architecture's traits.
    pub fn build(self) -> Result<ModelConfig, ModelError> {
        let t = self.arch.traits();
        let n_layer = self.nonzero("block_count", self.n_layer)?;
        if self.nextn_layers >= n_layer {
            return Err(self.bad(
                "nextn_predict_layers",
                format!("{} leaves no trunk layers of the {n_layer} blocks", self.nextn_layers),
            ));
        }
        let n_layer = n_layer - self.nextn_layers;
        // Per-layer vectors are sized by this count, so it must be bounded before anything is.
        if n_layer > MAX_LAYERS {
            return Err(self.bad(
                "block_count",
                format!("{n_layer} is more than any supported model has ({MAX_LAYERS} layers at most)"),
            ));
        }
        let n_embd = self.nonzero("embedding_length", self.n_embd)?;
        let (n_head, n_head_kv) = self.heads()?;
        let (head_dim, head_dim_v) = self.head_dims(n_embd, n_head)?;
        let n_vocab = self.nonzero("vocab_size", self.n_vocab)?;
        let context_length = self.nonzero("context_length", self.context_length.unwrap_or(2048))?;
        let rms_eps = self.positive("attention.layer_norm_rms_epsilon", self.rms_eps)?;
        let (rope_base, rope_base_swa) = self.rope_bases()?;
        let rope_freq_scale = self.positive("rope.scaling.factor", self.rope_freq_scale)?;
        let rope_dim = self.rope_dim(head_dim)?;
        let rope_yarn = self.yarn(context_length)?;
        let (sliding_window, swa_layers) = self.swa(n_layer)?;
        let moe = self.moe()?;
        let n_ff = self.n_ff(&moe)?;
        let final_logit_softcap = match self.final_logit_softcap {
            None => None,
            Some(0.0) => None,
            Some(c) => Some(self.positive("final_logit_softcapping", c)?),
        };
        let attn_scale = self.attn_scale(n_layer, n_embd, n_head, head_dim)?;
        let (delta_net, recurrent_layers) = self.delta_net(n_layer)?;
        if t.attn_output_gate && head_dim != head_dim_v {
            return Err(self.bad(
                "attention.value_length",
                format!(
                    "{head_dim_v} differs from the key size {head_dim}; gated attention needs them equal"
                ),
            ));
        }
        self.check_rope_sections(rope_dim)?;
        Ok(ModelConfig {
            arch: self.arch,
            name: self.name.clone(),
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
            rope_base_swa,
            rope_freq_scale,
            rope_yarn,
            rope_dim,
            rope_layout: self.rope_layout.unwrap_or(t.gguf_rope_layout),
            sliding_window,
            swa_layers,
            ffn_act: t.ffn_act,
            embed_scale: t.embed_scale_sqrt.then(|| (n_embd as f32).sqrt()),
            attn_scale,
            final_logit_softcap,
            pooling_type: self.pooling_type,
            moe,
            has_qk_norm: t.qk_norm,
            has_post_norms: t.post_norms,
            has_qkv_bias: t.qkv_bias,
            has_attn_out_bias: t.attn_out_bias,
            has_attn_sinks: t.attn_sinks,
            has_moe_biases: t.moe_biases,
            ffn_norm_name: t.ffn_norm_name,
            attn_output_gate: t.attn_output_gate,
            delta_net,
            recurrent_layers,
        })
    }

    /// The DeltaNet sizes and the per-layer recurrent flags (all `false` without DeltaNet).
    fn delta_net(&self, n_layer: u32) -> Result<(Option<DeltaNetConfig>, Vec<bool>), ModelError> {
        let Some(traits) = self.arch.traits().delta_net else {
            return Ok((None, vec![false; n_layer as usize]));
        };
        let Some(d) = &self.delta_net else {
            return Err(self.bad("ssm.conv_kernel", "is missing: a hybrid architecture needs it".into()));
        };
        if d.conv_kernel == 0 || d.conv_kernel > MAX_CONV_KERNEL {
            return Err(
                self.bad("ssm.conv_kernel", format!("{}: it must be 1 to {MAX_CONV_KERNEL}", d.conv_kernel))
            );
        }
        let head_dim = self.nonzero("ssm.state_size", d.state_size)?;
        let n_v_heads = self.nonzero("ssm.time_step_rank", d.time_step_rank)?;
        let n_k_heads = self.nonzero("ssm.group_count", d.group_count)?;
        if !n_v_heads.is_multiple_of(n_k_heads) {
            return Err(self.bad(
                "ssm.time_step_rank",
                format!("{n_v_heads} value heads are not a multiple of the {n_k_heads} key heads (ssm.group_count)"),
            ));
        }
        // llama.cpp derives the value head size from the inner size and requires it to equal
        // the key head size (its delta-rule op takes square states).
        if n_v_heads.checked_mul(head_dim) != Some(d.inner_size) {
            return Err(self.bad(
                "ssm.inner_size",
                format!(
                    "{} is not ssm.time_step_rank {n_v_heads} × ssm.state_size {head_dim}: value heads the \
                     size of key heads are the only layout supported",
                    d.inner_size
                ),
            ));
        }
        // The states and the convolution channels are sized in u32 and usize from these.
        if (2 * n_k_heads as u64 + n_v_heads as u64) * head_dim as u64 * head_dim as u64 > u32::MAX as u64 {
            return Err(self.bad("ssm.state_size", format!("{head_dim} makes the recurrent state too large")));
        }
        let flags = match (&d.recurrent_layers, d.full_attention_interval) {
            (Some(flags), _) => {
                // The list may cover the multi-token-prediction layers too; those are not run.
                if flags.len() < n_layer as usize {
                    return Err(self.bad(
                        "attention.recurrent_layers",
                        format!("has {} entries for {n_layer} layers", flags.len()),
                    ));
                }
                flags[..n_layer as usize].to_vec()
            }
            (None, interval) => {
                let every = self.nonzero("full_attention_interval", interval.unwrap_or(4))?;
                (0..n_layer).map(|il| (il + 1) % every != 0).collect()
            }
        };
        let config = DeltaNetConfig {
            conv_kernel: d.conv_kernel,
            n_k_heads,
            n_v_heads,
            head_dim,
            key_heads: traits.key_heads,
            fused_beta_alpha: traits.fused_beta_alpha,
        };
        Ok((Some(config), flags))
    }

    /// Multi-section RoPE gives each rotated pair one of four position components. Text tokens
    /// have the same position in the first three and 0 in the fourth, so the rotation is plain
    /// NeoX RoPE as long as no pair reads the fourth; a layout where one does is refused.
    fn check_rope_sections(&self, rope_dim: u32) -> Result<(), ModelError> {
        let Some(s) = &self.rope_sections else { return Ok(()) };
        let mut sections = [0u32; 4];
        for (dst, src) in sections.iter_mut().zip(s) {
            *dst = *src;
        }
        let total: u32 = sections.iter().sum();
        if total == 0 {
            return Ok(());
        }
        if total > rope_dim / 2 {
            return Err(self.bad(
                "rope.dimension_sections",
                format!("{s:?} covers more than the {} rotated pairs", rope_dim / 2),
            ));
        }
        // llama.cpp's interleaved multi-section rule (`ggml_mrope_cache_init`, imrope).
        let reads_fourth = (0..rope_dim / 2).any(|pair| {
            let sector = pair % total;
            let first_three = (sector % 3 == 1 && sector < 3 * sections[1])
                || (sector % 3 == 2 && sector < 3 * sections[2])
                || (sector.is_multiple_of(3) && sector < 3 * sections[0]);
            !first_three
        });
        if reads_fourth {
            return Err(ModelError::Unsupported(format!(
                "{} {s:?}: a rotated pair reads the fourth (vision) position component",
                self.keys.key("rope.dimension_sections")
            )));
        }
        Ok(())
    }

    fn heads(&self) -> Result<(u32, u32), ModelError> {
        let n_head_kv = self.n_head_kv.unwrap_or(self.n_head);
        for (field, n) in [("attention.head_count", self.n_head), ("attention.head_count_kv", n_head_kv)] {
            if n == 0 {
                return Err(self.bad(field, "0: a model needs at least one head".into()));
            }
        }
        if !self.n_head.is_multiple_of(n_head_kv) {
            let kv_key = self.keys.key("attention.head_count_kv");
            let what = format!("{} is not a multiple of {kv_key} {n_head_kv}", self.n_head);
            return Err(self.bad("attention.head_count", what));
        }
        Ok((self.n_head, n_head_kv))
    }

    /// The global and the sliding-window RoPE base (the same where the traits share one).
    fn rope_bases(&self) -> Result<(f32, f32), ModelError> {
        let base = self.positive("rope.freq_base", self.rope_base.unwrap_or(10_000.0))?;
        match self.arch.traits().swa_rope_base {
            true => Ok((base, self.positive("rope.freq_base_swa", self.rope_base_swa.unwrap_or(10_000.0))?)),
            false => Ok((base, base)),
        }
    }

    fn yarn(&self, context_length: u32) -> Result<Option<Yarn>, ModelError> {
        let Some(y) = &self.rope_yarn else { return Ok(None) };
        let orig_ctx =
            self.nonzero("rope.scaling.original_context_length", y.orig_ctx.unwrap_or(context_length))?;
        Ok(Some(Yarn {
            orig_ctx,
            beta_fast: self.positive("rope.scaling.yarn_beta_fast", y.beta_fast.unwrap_or(32.0))?,
            beta_slow: self.positive("rope.scaling.yarn_beta_slow", y.beta_slow.unwrap_or(1.0))?,
            attn_factor: self.positive("rope.scaling.attn_factor", y.attn_factor.unwrap_or(1.0))?,
        }))
    }

    fn rope_dim(&self, head_dim: u32) -> Result<u32, ModelError> {
        let from_fraction = self.rope_fraction.map(|p| (head_dim as f32 * p).round() as u32);
        let rope_dim = self.rope_dim.or(from_fraction).unwrap_or(head_dim);
        if rope_dim == 0 || rope_dim > head_dim || !rope_dim.is_multiple_of(2) {
            let what = format!(
                "{rope_dim}: the rotated dimensions must be even, non-zero and at most the head size {head_dim}"
            );
            return Err(self.bad("rope.dimension_count", what));
        }
        Ok(rope_dim)
    }

    /// The dense FFN size; MoE models without one take the experts'.
    fn n_ff(&self, moe: &Option<MoeConfig>) -> Result<u32, ModelError> {
        match (moe, self.n_ff) {
            (Some(m), None | Some(0)) => Ok(m.n_ff_expert),
            (Some(_), Some(f)) => Ok(f),
            (None, Some(f)) => self.nonzero("feed_forward_length", f),
            (None, None) => Err(self.bad("feed_forward_length", "is missing: a dense model needs it".into())),
        }
    }

    fn head_dims(&self, n_embd: u32, n_head: u32) -> Result<(u32, u32), ModelError> {
        let head_dim = match self.head_dim {
            Some(d) => d,
            None if n_embd.is_multiple_of(n_head) => n_embd / n_head,
            None => {
                return Err(self.bad(
                    "embedding_length",
                    format!(
                        "{n_embd} is not divisible by the head count {n_head}, and no head size is given"
                    ),
                ));
            }
        };
        let head_dim_v = self.head_dim_v.unwrap_or(head_dim);
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(self.bad(
                "attention.key_length",
                format!("{head_dim}: the head size must be even and non-zero"),
            ));
        }
        self.nonzero("attention.value_length", head_dim_v)?;
        // n_embd_q / n_embd_k / n_embd_v and the output projection multiply these in u32.
        if head_dim.max(head_dim_v).checked_mul(n_head).is_none() {
            return Err(self.bad(
                "attention.key_length",
                format!("{} times the head count {n_head} overflows a 32-bit size", head_dim.max(head_dim_v)),
            ));
        }
        Ok((head_dim, head_dim_v))
    }

    fn swa(&self, n_layer: u32) -> Result<(u32, Vec<bool>), ModelError> {
        let SwaRule::Periodic { default_period } = self.arch.traits().swa else {
            return Ok((0, vec![false; n_layer as usize]));
        };
        let window = self.sliding_window.unwrap_or(0);
        let flags = match &self.swa_layers {
            SwaLayers::Listed(flags) if flags.len() != n_layer as usize => {
                return Err(self.bad(
                    "attention.sliding_window_pattern",
                    format!("has {} entries for {n_layer} layers", flags.len()),
                ));
            }
            SwaLayers::Listed(flags) => flags.clone(),
            SwaLayers::Period(p) => periodic(*p, n_layer),
            SwaLayers::Default => periodic(default_period, n_layer),
        };
        if window == 0 || !flags.contains(&true) {
            return Ok((0, vec![false; n_layer as usize]));
        }
        Ok((window, flags))
    }

    fn moe(&self) -> Result<Option<MoeConfig>, ModelError> {
        let t = self.arch.traits();
        let m = match (&self.moe, t.ffn) {
            (Some(m), FfnKind::Moe | FfnKind::Either) if m.n_expert > 0 => m,
            (_, FfnKind::Moe) => {
                return Err(
                    self.bad("expert_count", "is missing or 0 in a mixture-of-experts architecture".into())
                );
            }
            _ => return Ok(None),
        };
        if m.n_expert > MAX_EXPERTS {
            return Err(self.bad("expert_count", format!("{} is more than {MAX_EXPERTS}", m.n_expert)));
        }
        if m.n_expert_used == 0 || m.n_expert_used > m.n_expert {
            return Err(self.bad(
                "expert_used_count",
                format!("{}: it must be between 1 and the expert count {}", m.n_expert_used, m.n_expert),
            ));
        }
        let n_ff_expert = match m.n_ff_expert.or(self.n_ff) {
            Some(f) => self.nonzero("expert_feed_forward_length", f)?,
            None => return Err(self.bad("expert_feed_forward_length", "is missing".into())),
        };
        let weights_scale = match m.weights_scale {
            None => 1.0,
            Some(0.0) => 1.0,
            Some(s) => self.positive("expert_weights_scale", s)?,
        };
        Ok(Some(MoeConfig {
            n_expert: m.n_expert,
            n_expert_used: m.n_expert_used,
            n_ff_expert,
            gating: ExpertGating::SoftmaxTopK { renormalize: m.renormalize.unwrap_or(t.default_renormalize) },
            weights_scale,
            shared_expert_ff: match t.shared_expert {
                false => None,
                // llama.cpp: the dense FFN size when the key is absent.
                true => {
                    Some(self.nonzero(
                        "expert_shared_feed_forward_length",
                        m.shared_ff.or(self.n_ff).unwrap_or(0),
                    )?)
                }
            },
        }))
    }

    fn attn_scale(&self, n_layer: u32, n_embd: u32, n_head: u32, head_dim: u32) -> Result<f32, ModelError> {
        let scalar = match (self.arch.traits().attn_scale, self.query_pre_attn_scalar) {
            (AttnScaleRule::Gemma3, Some(s)) => self.positive("query_pre_attn_scalar", s)?,
            // llama.cpp's rule for GGUF files: the 27B model (62 layers) scales by the
            // integer n_embd / n_head (5376 / 32 = 168), the others by the head size.
            (AttnScaleRule::Gemma3, None) if n_layer == 62 => (n_embd / n_head) as f32,
            _ => head_dim as f32,
        };
        Ok(1.0 / scalar.sqrt())
    }
}

/// `period` n: every n-th layer (n-1, 2n-1, …) is global, the others windowed; 0: all windowed.
fn periodic(period: u32, n_layer: u32) -> Vec<bool> {
    (0..n_layer).map(|il| period == 0 || il % period < period - 1).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llama() -> Hyperparams {
        let mut h = Hyperparams::new(Arch::Llama, KeyFormat::Gguf { prefix: "llama".into() });
        h.n_layer = 2;
        h.n_embd = 64;
        h.n_head = 4;
        h.n_ff = Some(128);
        h.n_vocab = 32;
        h.rms_eps = 1e-5;
        h
    }

    #[test]
    fn non_finite_floats_are_refused_with_their_key() {
        for (field, set) in [
            ("llama.rope.freq_base", (|h: &mut Hyperparams| h.rope_base = Some(f32::NAN)) as fn(&mut _)),
            ("llama.attention.layer_norm_rms_epsilon", |h| h.rms_eps = f32::INFINITY),
            ("llama.rope.scaling.factor", |h| h.rope_freq_scale = -1.0),
            ("llama.final_logit_softcapping", |h| h.final_logit_softcap = Some(f32::NAN)),
        ] {
            let mut h = llama();
            set(&mut h);
            let err = h.build().unwrap_err().to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
        assert!(llama().build().is_ok());
    }

    #[test]
    fn hugging_face_errors_name_config_keys() {
        let mut h = llama();
        h.keys = KeyFormat::HuggingFace;
        h.rope_base = Some(f32::NAN);
        assert!(h.build().unwrap_err().to_string().contains("config.json rope_theta"));
    }

    #[test]
    fn gemma3_attention_scale_follows_llama_cpp_for_gguf_and_the_config_for_hf() {
        let mut h = llama();
        h.arch = Arch::Gemma3;
        h.n_layer = 62;
        h.n_embd = 5376;
        h.n_head = 32;
        h.head_dim = Some(128);
        assert_eq!(h.clone().build().unwrap().attn_scale, 1.0 / 168f32.sqrt());
        h.n_layer = 34;
        assert_eq!(h.clone().build().unwrap().attn_scale, 1.0 / 128f32.sqrt());
        h.query_pre_attn_scalar = Some(256.0);
        assert_eq!(h.build().unwrap().attn_scale, 1.0 / 16.0);
    }

    #[test]
    fn a_rotated_fraction_counts_from_the_head_size() {
        let mut h = llama();
        h.head_dim = Some(32);
        h.rope_fraction = Some(0.25);
        assert_eq!(h.clone().build().unwrap().rope_dim, 8);
        h.rope_fraction = Some(0.01);
        assert!(h.build().unwrap_err().to_string().contains("rope.dimension_count"));
    }

    #[test]
    fn moe_architectures_need_experts() {
        let mut h = llama();
        h.arch = Arch::Qwen3Moe;
        assert!(h.clone().build().unwrap_err().to_string().contains("expert_count"));
        h.moe = Some(MoeHyper { n_expert: 4, n_expert_used: 5, ..Default::default() });
        assert!(h.build().unwrap_err().to_string().contains("expert_used_count"));
    }

    fn qwen35() -> Hyperparams {
        let mut h = llama();
        h.arch = Arch::Qwen35;
        h.keys = KeyFormat::Gguf { prefix: "qwen35".into() };
        h.n_layer = 8;
        h.head_dim = Some(32);
        h.rope_dim = Some(16);
        h.delta_net = Some(DeltaNetHyper {
            conv_kernel: 4,
            inner_size: 128,
            state_size: 32,
            time_step_rank: 4,
            group_count: 2,
            ..Default::default()
        });
        h
    }

    #[test]
    fn hybrid_layers_follow_the_interval_or_the_list() {
        let c = qwen35().build().unwrap();
        assert_eq!(c.recurrent_layers, [true, true, true, false, true, true, true, false]);
        let d = c.delta_net.as_ref().unwrap();
        assert_eq!((d.conv_channels(), d.state_len(), d.conv_state_len()), (256, 4 * 32 * 32, 3 * 256));
        assert_eq!((d.key_head(3), c.attn_output_gate), (1, true));
        let mut h = qwen35();
        h.delta_net.as_mut().unwrap().full_attention_interval = Some(2);
        assert_eq!(h.build().unwrap().recurrent_layers, [true, false, true, false, true, false, true, false]);
        let mut h = qwen35();
        h.delta_net.as_mut().unwrap().recurrent_layers = Some(vec![false; 3]);
        assert!(h.build().unwrap_err().to_string().contains("qwen35.attention.recurrent_layers"));
        // Multi-token-prediction blocks are counted in block_count but not run.
        let mut h = qwen35();
        h.nextn_layers = 1;
        assert_eq!(h.build().unwrap().n_layer, 7);
    }

    #[test]
    fn bad_delta_net_sizes_are_refused_with_their_key() {
        for (key, set) in [
            ("qwen35.ssm.time_step_rank", (|d: &mut DeltaNetHyper| d.time_step_rank = 3) as fn(&mut _)),
            ("qwen35.ssm.inner_size", |d| d.inner_size = 100),
            ("qwen35.ssm.conv_kernel", |d| d.conv_kernel = 0),
            ("qwen35.ssm.group_count", |d| d.group_count = 0),
        ] {
            let mut h = qwen35();
            set(h.delta_net.as_mut().unwrap());
            let err = h.build().unwrap_err().to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
        let mut h = qwen35();
        h.delta_net = None;
        assert!(h.build().unwrap_err().to_string().contains("ssm.conv_kernel"));
    }

    #[test]
    fn rope_sections_that_read_the_fourth_position_are_refused() {
        let mut h = qwen35();
        h.rope_sections = Some(vec![3, 3, 2, 0]);
        assert!(h.clone().build().is_ok());
        h.rope_sections = Some(vec![2, 2, 2, 2]);
        assert!(h.clone().build().unwrap_err().to_string().contains("fourth"));
        h.rope_sections = Some(vec![8, 8, 8, 0]);
        assert!(h.build().unwrap_err().to_string().contains("rope.dimension_sections"));
    }
}
