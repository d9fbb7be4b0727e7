/// Errors from building a [`Sampler`](super::Sampler) or sampling a logits row.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SamplingError {
    #[error("invalid sampler setting {name} = {value}: {reason}")]
    InvalidSetting { name: &'static str, value: f32, reason: &'static str },

    #[error(
        "invalid logit bias {input:?}: {reason} (expected TOKEN_ID+BIAS or TOKEN_ID-BIAS, e.g. 15043+1.5 or 15043-inf)"
    )]
    InvalidLogitBias { input: String, reason: String },

    #[error("logit bias for token {token} is outside the vocabulary of {n_vocab} tokens")]
    BiasOutOfVocab { token: u32, n_vocab: usize },

    #[error("the logits row is empty")]
    EmptyLogits,

    #[error("logit of token {token} is {value}; the model produced a non-finite value")]
    NonFiniteLogit { token: u32, value: f32 },

    #[error("every token has a logit of -inf after logit bias and penalties; nothing can be sampled")]
    AllMasked,
}
