use std::path::PathBuf;

use crate::gguf::GgufError;

/// Why a tokenizer could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("tokenizer metadata: {0}")]
    Gguf(#[from] GgufError),

    #[error("missing tokenizer metadata key `{0}`")]
    MissingKey(&'static str),

    #[error(
        "tokenizer model `{0}` is not supported (supported: `llama` SentencePiece, `gpt2` byte-level BPE)"
    )]
    UnsupportedModel(String),

    #[error("pre-tokenizer `{0}` is not supported")]
    UnsupportedPreTokenizer(String),

    #[error("split rule `{pattern}` cannot be reproduced: {reason}")]
    UnsupportedRegex { pattern: String, reason: String },

    #[error("`{key}` has {found} entries but the vocabulary has {n_vocab} tokens")]
    LengthMismatch { key: &'static str, found: usize, n_vocab: usize },

    #[error("the vocabulary is empty")]
    EmptyVocab,

    #[error("the vocabulary has {0} tokens, more than token ids can address")]
    VocabTooLarge(usize),

    #[error("token {first} and token {second} have the same text {text:?}")]
    DuplicateToken { first: u32, second: u32, text: String },

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: {reason}", path.display())]
    HfTokenizer { path: PathBuf, reason: String },

    #[error("{}: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}
