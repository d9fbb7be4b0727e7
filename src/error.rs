use wllm_engine::EngineError;
use wllm_engine::sampling::SamplingError;
use wllm_loaders::chat::ChatError;
use wllm_loaders::{ModelError, TokenizerError};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the library can report. Each variant says what failed in terms a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Load(#[from] wllm_loaders::Error),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("tokenizer: {0}")]
    Tokenizer(#[from] TokenizerError),
    #[error("chat template: {0}")]
    Chat(#[from] ChatError),
    #[error("sampling: {0}")]
    Sampling(#[from] SamplingError),
    /// A constraint ([`GenerateOptions::constraint`](crate::GenerateOptions::constraint)) does
    /// not compile, or the grammar engine failed.
    #[error("constraint: {0}")]
    Constraint(#[from] crate::constraint::ConstraintError),
    #[error("{}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the model has no chat template (give one as a Jinja file or tokenizer_config.json)")]
    NoChatTemplate,
    /// The conversation and the room kept for the reply do not fit the context.
    #[error(
        "the conversation needs {prompt} tokens plus {reserve} for the reply, but the context holds {n_ctx}"
    )]
    ContextOverflow { prompt: usize, reserve: usize, n_ctx: usize },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A batcher refused a request ([`Batcher::submit`](crate::batch::Batcher::submit)).
    #[error("request refused: {0}")]
    Refused(#[from] crate::batch::SubmitError),
}
