//! One statement of each supported architecture: what sets it apart from a plain pre-norm
//! transformer. The GGUF and Hugging Face readers only map keys to numbers; every rule that
//! depends on the architecture is read from [`Arch::traits`], in [`super::hyper`].

/// The architectures wllm runs.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Arch {
    /// Llama and the many models that reuse its GGUF name (SmolLM, Mistral, Mixtral-style MoE).
    Llama,
    Qwen2,
    Qwen3,
    Qwen3Moe,
    Gemma3,
    /// OpenAI's gpt-oss (20b, 120b): attention sinks, alternating sliding-window layers, YaRN,
    /// biased experts with a clamped SwiGLU. llama.cpp calls it `openai-moe` inside.
    GptOss,
    /// Qwen3.5 (dense): Gated DeltaNet layers with every `full_attention_interval`-th layer
    /// a gated full-attention one.
    Qwen35,
    /// Qwen3.5/3.6 MoE: the same layers with routed experts plus a gated shared expert.
    Qwen35Moe,
    /// Qwen3-Next: Qwen3.5 MoE's layers with the older tensor layout (fused beta/alpha
    /// projection, key heads repeated head by head).
    Qwen3Next,
}

/// Which key head a DeltaNet value head reads when there are fewer key heads than value heads.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum KeyHeadMap {
    /// Value head `h` reads key head `h % n_k_heads` (llama.cpp's `ggml_repeat` for qwen35).
    Tiled,
    /// Value head `h` reads key head `h / (n_v_heads / n_k_heads)` (qwen3next's
    /// repeat-interleave).
    Grouped,
}

/// How a Gated DeltaNet layer's tensors are stored.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct DeltaNetTraits {
    pub key_heads: KeyHeadMap,
    /// One `ssm_ba` projection holding beta and alpha grouped per key head (qwen3next), instead
    /// of separate `ssm_beta` and `ssm_alpha`.
    pub fused_beta_alpha: bool,
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
    /// gpt-oss's clamped SwiGLU (llama.cpp `swiglu_oai`): with `g = min(gate, 7)` and
    /// `u = clamp(up, -7, 7)`, `g · sigmoid(1.702 g) · (u + 1)`.
    SwigluOai,
}

/// gpt-oss's SwiGLU constants: llama.cpp hard-codes them (they are not in the GGUF).
pub const SWIGLU_OAI_ALPHA: f32 = 1.702;
pub const SWIGLU_OAI_LIMIT: f32 = 7.0;

/// How router probabilities become expert weights.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ExpertGating {
    /// softmax over all experts, pick top-k, optionally renormalise the k weights. (gpt-oss's
    /// softmax over the k chosen logits is this with renormalisation: both are
    /// `exp(l_i) / sum over the chosen of exp(l_j)`.)
    SoftmaxTopK { renormalize: bool },
}

/// Which factor multiplies q·k before the softmax.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum AttnScaleRule {
    /// 1/sqrt(head size).
    HeadDim,
    /// Gemma 3: the checkpoint's `query_pre_attn_scalar` where it states one; in GGUF files,
    /// which do not carry it, llama.cpp's rule: 1/sqrt(n_embd / n_head) for the 62-layer
    /// (27B) model, 1/sqrt(head size) for the others.
    Gemma3,
}

/// Which layers attend through a sliding window.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SwaRule {
    /// None of them.
    None,
    /// Every `period`-th layer is global, the others windowed, unless the metadata lists the
    /// layers.
    Periodic { default_period: u32 },
}

/// Whether the architecture's layers are dense, mixture-of-experts, or either.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FfnKind {
    Dense,
    Moe,
    /// Dense unless the metadata gives an expert count (llama: Mixtral-style files).
    Either,
}

/// The traits table: everything architecture-specific about the math and the tensors.
#[derive(Clone, Debug, PartialEq)]
pub struct ArchTraits {
    /// GGUF's `general.architecture`.
    pub name: &'static str,
    /// Per-head RMS norms of q and k before RoPE (`attn_q_norm`, `attn_k_norm`).
    pub qk_norm: bool,
    /// RMS norms on the attention and FFN outputs before the residual add.
    pub post_norms: bool,
    /// Biases on the q, k and v projections.
    pub qkv_bias: bool,
    /// The input embedding is multiplied by sqrt(n_embd).
    pub embed_scale_sqrt: bool,
    pub ffn_act: FfnActivation,
    pub ffn: FfnKind,
    /// RoPE pairing in GGUF files. Hugging Face checkpoints keep Q and K unpermuted, so they
    /// are always [`RopeLayout::Neox`].
    pub gguf_rope_layout: RopeLayout,
    /// Sliding-window layers use their own RoPE base (`rope.freq_base_swa`).
    pub swa_rope_base: bool,
    pub attn_scale: AttnScaleRule,
    pub swa: SwaRule,
    /// Renormalise the top-k expert weights when the metadata does not say.
    pub default_renormalize: bool,
    /// RMS norms multiply by `1 + w`: Hugging Face checkpoints store `w`, GGUF files `1 + w`.
    pub norm_plus_one: bool,
    /// A bias on the attention output projection (`attn_output.bias`).
    pub attn_out_bias: bool,
    /// A learned per-head logit joins each softmax denominator (`attn_sinks.weight`).
    pub attn_sinks: bool,
    /// Biases on the router and on every expert's gate, up and down projections.
    pub moe_biases: bool,
    /// GGUF name of the norm before the FFN (gpt-oss calls it `post_attention_norm`).
    pub ffn_norm_name: &'static str,
    /// The q projection yields, per head, the query and then as many gate logits; the
    /// attention output is multiplied by their sigmoid before `attn_output`.
    pub attn_output_gate: bool,
    /// Gated DeltaNet layers beside the attention ones (which layers: metadata).
    pub delta_net: Option<DeltaNetTraits>,
    /// MoE layers add a shared expert scaled by `sigmoid(h · ffn_gate_inp_shexp)`.
    pub shared_expert: bool,
}

const LLAMA: ArchTraits = ArchTraits {
    name: "llama",
    qk_norm: false,
    post_norms: false,
    qkv_bias: false,
    embed_scale_sqrt: false,
    ffn_act: FfnActivation::Silu,
    ffn: FfnKind::Either,
    gguf_rope_layout: RopeLayout::Normal,
    swa_rope_base: false,
    attn_scale: AttnScaleRule::HeadDim,
    swa: SwaRule::None,
    default_renormalize: true,
    norm_plus_one: false,
    attn_out_bias: false,
    attn_sinks: false,
    moe_biases: false,
    ffn_norm_name: "ffn_norm",
    attn_output_gate: false,
    delta_net: None,
    shared_expert: false,
};

const QWEN2: ArchTraits = ArchTraits {
    name: "qwen2",
    qkv_bias: true,
    ffn: FfnKind::Dense,
    gguf_rope_layout: RopeLayout::Neox,
    ..LLAMA
};

const QWEN3: ArchTraits = ArchTraits { name: "qwen3", qkv_bias: false, qk_norm: true, ..QWEN2 };

const QWEN3MOE: ArchTraits = ArchTraits { name: "qwen3moe", ffn: FfnKind::Moe, ..QWEN3 };

const GEMMA3: ArchTraits = ArchTraits {
    name: "gemma3",
    qk_norm: true,
    post_norms: true,
    embed_scale_sqrt: true,
    ffn_act: FfnActivation::GeluTanh,
    ffn: FfnKind::Dense,
    gguf_rope_layout: RopeLayout::Neox,
    swa_rope_base: true,
    attn_scale: AttnScaleRule::Gemma3,
    swa: SwaRule::Periodic { default_period: 6 },
    norm_plus_one: true,
    ..LLAMA
};

const GPT_OSS: ArchTraits = ArchTraits {
    name: "gpt-oss",
    qkv_bias: true,
    ffn_act: FfnActivation::SwigluOai,
    ffn: FfnKind::Moe,
    gguf_rope_layout: RopeLayout::Neox,
    // Even layers windowed, odd ones global (llama.cpp: a pattern of period 2).
    swa: SwaRule::Periodic { default_period: 2 },
    // The weights are a softmax over the chosen experts' logits (see ExpertGating).
    default_renormalize: true,
    attn_out_bias: true,
    attn_sinks: true,
    moe_biases: true,
    ffn_norm_name: "post_attention_norm",
    ..LLAMA
};

const QWEN35: ArchTraits = ArchTraits {
    name: "qwen35",
    ffn_norm_name: "post_attention_norm",
    norm_plus_one: true,
    attn_output_gate: true,
    delta_net: Some(DeltaNetTraits { key_heads: KeyHeadMap::Tiled, fused_beta_alpha: false }),
    ..QWEN3
};

const QWEN35MOE: ArchTraits =
    ArchTraits { name: "qwen35moe", ffn: FfnKind::Moe, shared_expert: true, ..QWEN35 };

const QWEN3NEXT: ArchTraits = ArchTraits {
    name: "qwen3next",
    delta_net: Some(DeltaNetTraits { key_heads: KeyHeadMap::Grouped, fused_beta_alpha: true }),
    ..QWEN35MOE
};

impl Arch {
    pub const ALL: [Arch; 9] = [
        Arch::Llama,
        Arch::Qwen2,
        Arch::Qwen3,
        Arch::Qwen3Moe,
        Arch::Gemma3,
        Arch::GptOss,
        Arch::Qwen35,
        Arch::Qwen35Moe,
        Arch::Qwen3Next,
    ];
    pub const SUPPORTED: &'static str =
        "llama, qwen2, qwen3, qwen3moe, gemma3, gpt-oss, qwen35, qwen35moe, qwen3next";

    pub fn traits(self) -> &'static ArchTraits {
        match self {
            Arch::Llama => &LLAMA,
            Arch::Qwen2 => &QWEN2,
            Arch::Qwen3 => &QWEN3,
            Arch::Qwen3Moe => &QWEN3MOE,
            Arch::Gemma3 => &GEMMA3,
            Arch::GptOss => &GPT_OSS,
            Arch::Qwen35 => &QWEN35,
            Arch::Qwen35Moe => &QWEN35MOE,
            Arch::Qwen3Next => &QWEN3NEXT,
        }
    }

    pub fn from_name(name: &str) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.name() == name)
    }

    pub fn name(self) -> &'static str {
        self.traits().name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_listed() {
        for a in Arch::ALL {
            assert_eq!(Arch::from_name(a.name()), Some(a));
            assert!(Arch::SUPPORTED.split(", ").any(|n| n == a.name()), "{} not in SUPPORTED", a.name());
        }
        assert_eq!(Arch::SUPPORTED.split(", ").count(), Arch::ALL.len());
    }
}
