use wllm_loaders::ModelError;

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// Errors from the engine. Each says what went wrong in terms a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("no usable GPU adapter{0}")]
    NoAdapter(String),

    #[error("could not open the GPU device on {adapter}: {message}")]
    RequestDevice { adapter: String, message: String },

    #[error("unknown backend {0:?} (expected vulkan, metal, dx12 or gl)")]
    UnknownBackend(String),

    #[error("shader {name}: {message}")]
    Shader { name: String, message: String },

    #[error("GPU error in {context}: {message}")]
    Gpu { context: String, message: String },

    #[error(transparent)]
    Loader(#[from] wllm_loaders::Error),

    #[error(transparent)]
    Model(#[from] ModelError),

    #[error("unsupported: {0}")]
    Unsupported(String),

    #[error("{n_tokens} tokens do not fit in the context of {n_ctx}")]
    ContextOverflow { n_tokens: usize, n_ctx: usize },

    #[error("the model does not fit: {advice}\n{plan}")]
    OverBudget { plan: String, advice: String },

    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The forward pass produced NaN or infinite logits: no token can be chosen from them.
    #[error(
        "the model produced non-finite logits ({what}) at position {position}: the weights or hyperparameters are likely corrupt"
    )]
    NonFiniteLogits { what: &'static str, position: u64 },

    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl EngineError {
    pub fn gpu(context: impl Into<String>, message: impl ToString) -> EngineError {
        EngineError::Gpu { context: context.into(), message: message.to_string() }
    }
}
