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

impl Arch {
    pub const ALL: [Arch; 5] = [Arch::Llama, Arch::Qwen2, Arch::Qwen3, Arch::Qwen3Moe, Arch::Gemma3];
    pub const SUPPORTED: &'static str = "llama, qwen2, qwen3, qwen3moe, gemma3";

    pub fn traits(self) -> &'static ArchTraits {
        match self {
            Arch::Llama => &LLAMA,
            Arch::Qwen2 => &QWEN2,
            Arch::Qwen3 => &QWEN3,
            Arch::Qwen3Moe => &QWEN3MOE,
            Arch::Gemma3 => &GEMMA3,
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
