use wllm_engine::EngineError;
use wllm_engine::sampling::SamplingError;
use wllm_loaders::chat::ChatError;
use wllm_loaders::{ModelError, TokenizerError};

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the library can report. Each variant says what failed in terms a user can act
/// on; conditions a program may want to handle (the context is full, the device is too small,
/// the model does not fit) are variants of their own, whichever call reports them. Messages
/// name no command-line flags: a tool adds its own hints where it prints them.
///
/// ```no_run
/// # fn f(session: &mut wllm::Session, prompt: &[u32]) {
/// match session.eval(prompt, wllm::Logits::Last) {
///     Err(wllm::Error::ContextOverflow { needed, n_ctx }) => {
///         eprintln!("{needed} positions needed, {n_ctx} available");
///     }
///     Err(e) => eprintln!("{e}"),
///     Ok(logits) => println!("{} logits", logits.len()),
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A model file could not be read or is malformed.
    #[error(transparent)]
    Load(#[from] wllm_loaders::Error),
    /// The model's configuration or tensors are not usable.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The engine failed in a way none of the variants below describes.
    #[error(transparent)]
    Engine(EngineError),
    /// The tokenizer could not be built.
    #[error("tokenizer: {0}")]
    Tokenizer(#[from] TokenizerError),
    /// The chat template could not be parsed or rendered.
    #[error("chat template: {0}")]
    Chat(#[from] ChatError),
    /// A sampler setting is out of range.
    #[error("sampling: {0}")]
    Sampling(#[from] SamplingError),
    /// A constraint ([`GenerateOptions::constraint`](crate::GenerateOptions::constraint)) does
    /// not compile, or the grammar engine failed.
    #[error("constraint: {0}")]
    Constraint(#[from] crate::constraint::ConstraintError),
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A configuration file beside the model (`tokenizer_config.json`) is not valid JSON.
    #[error("{}: {message}", path.display())]
    Config {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// Chat needs a template and the model has none (give one through [`LoadOptions`](crate::LoadOptions)).
    #[error("the model has no chat template (give one as a Jinja file or tokenizer_config.json)")]
    NoChatTemplate,
    /// The model needs a part of wllm this build left out (a cargo feature).
    #[error("{what} needs wllm built with the `{feature}` feature")]
    FeatureDisabled {
        /// The cargo feature.
        feature: &'static str,
        /// What needs it.
        what: &'static str,
    },
    /// No GPU adapter was found (with the reason, when there is one).
    #[error("no usable GPU adapter{0}")]
    NoAdapter(String),
    /// A device handed over by the application lacks a limit wllm needs.
    #[error("the device allows {have} {limit}; wllm needs {need} (request the adapter's limits)")]
    DeviceUnsuitable {
        /// The wgpu limit, in words (`storage buffers per shader stage`).
        limit: &'static str,
        /// What the device allows.
        have: u64,
        /// What wllm needs.
        need: u64,
    },
    /// The model (or a session's cache) does not fit the memory budget; nothing was allocated.
    #[error("the model does not fit: {advice}\n{plan}")]
    OverBudget {
        /// The memory plan that did not fit, as a table.
        plan: String,
        /// What to change, in words.
        advice: String,
    },
    /// More positions are needed than the context holds. From a [`Chat`](crate::Chat) turn
    /// `needed` counts the conversation and the room kept for the reply; from a step, the
    /// tokens already in the cache and those fed.
    #[error("{needed} positions are needed but the context holds {n_ctx}")]
    ContextOverflow {
        /// Positions the call needed.
        needed: usize,
        /// Positions the session's context holds.
        n_ctx: usize,
    },
    /// A prompt (or a rendered chat) has no tokens.
    #[error("the prompt has no tokens")]
    EmptyPrompt,
    /// A token id is not in the model's vocabulary.
    #[error("token id {token} is outside the vocabulary of {n_vocab}")]
    TokenOutOfVocab {
        /// The id.
        token: u32,
        /// Vocabulary size.
        n_vocab: u32,
    },
    /// The forward pass produced NaN or infinite logits (corrupt weights or hyperparameters).
    #[error(
        "the model produced non-finite logits ({what}) at position {position}: the weights or hyperparameters are likely corrupt"
    )]
    NonFiniteLogits {
        /// `NaN` or `infinity`.
        what: &'static str,
        /// The position whose logits were not finite.
        position: u64,
    },
    /// An option has a value no call can honour.
    #[error("{option}: {message}")]
    InvalidOption {
        /// The option's name as the library spells it (`n_ctx`, `parallel`, ...).
        option: &'static str,
        /// What is wrong with the value.
        message: String,
    },
    /// A chat turn from [`Chat::start`](crate::Chat::start) is open: commit or discard it
    /// before the next turn or an edit of the history.
    #[error("a reply is still open: commit or discard it first")]
    ReplyOpen,
    /// A thread could not be started.
    #[error("cannot start a thread: {0}")]
    Thread(#[source] std::io::Error),
    /// A batched step shared with other requests failed; the first request got the error
    /// itself, the others get its message.
    #[error("a shared step failed: {0}")]
    StepFailed(String),
    /// A batcher refused a request ([`Batcher::submit`](crate::batch::Batcher::submit)).
    #[error("request refused: {0}")]
    Refused(#[from] crate::batch::SubmitError),
}

/// The engine's conditions that have a variant of their own become that variant, so a caller
/// matches one name whichever layer noticed.
impl From<EngineError> for Error {
    fn from(e: EngineError) -> Error {
        match e {
            EngineError::ContextOverflow { n_tokens, n_ctx } => {
                Error::ContextOverflow { needed: n_tokens, n_ctx }
            }
            EngineError::NoAdapter(why) => Error::NoAdapter(why),
            EngineError::OverBudget { plan, advice } => Error::OverBudget { plan, advice },
            EngineError::NonFiniteLogits { what, position } => Error::NonFiniteLogits { what, position },
            EngineError::Loader(e) => Error::Load(e),
            EngineError::Model(e) => Error::Model(e),
            e => Error::Engine(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One variant for a full context, whether the engine or the chat noticed.
    #[test]
    fn engine_conditions_become_the_library_variants() {
        let e = Error::from(EngineError::ContextOverflow { n_tokens: 70, n_ctx: 64 });
        assert!(matches!(e, Error::ContextOverflow { needed: 70, n_ctx: 64 }), "{e:?}");
        assert!(!e.to_string().contains("--"), "no CLI flags in library messages: {e}");
        let e = Error::from(EngineError::OverBudget { plan: "p".into(), advice: "a".into() });
        assert!(matches!(e, Error::OverBudget { .. }), "{e:?}");
        let e = Error::from(EngineError::NoAdapter(String::new()));
        assert!(matches!(e, Error::NoAdapter(_)), "{e:?}");
        let e = Error::from(EngineError::NonFiniteLogits { what: "NaN", position: 3 });
        assert!(matches!(e, Error::NonFiniteLogits { position: 3, .. }), "{e:?}");
        let e = Error::from(EngineError::Unsupported("x".into()));
        assert!(matches!(e, Error::Engine(EngineError::Unsupported(_))), "{e:?}");
    }
}
