//! wllm: portable LLM inference on wgpu (Vulkan, Metal, DX12).
//!
//! ```no_run
//! use wllm::{GenerateOptions, Model, SessionOptions};
//!
//! let model = Model::load("SmolLM2-135M-Instruct.Q4_1.gguf")?;
//! let mut session = model.session(&SessionOptions::default())?;
//! let prompt = model.tokenize("The capital of France is");
//! for chunk in session.generate(&prompt, GenerateOptions::default())? {
//!     print!("{}", chunk?.text);
//! }
//! # Ok::<(), wllm::Error>(())
//! ```
//!
//! - [`Model`] loads a GGUF file or safetensors directory ([`LoadOptions`]); it is `Send + Sync`
//!   and any number of [`Session`]s (each its own KV cache) share its weights.
//! - [`Session::generate`] returns a [`Generation`]: an iterator of text [`Chunk`]s with sampling,
//!   stop strings and a [`CancelToken`] ([`GenerateOptions`]). [`Session::eval`] returns logits.
//! - [`Chat`] holds a conversation through the model's chat template, blocking
//!   ([`Chat::send`]) or polled from a frame loop ([`Chat::start`], [`ChatTurn::poll_next`],
//!   then [`Chat::commit`] or [`Chat::discard`]); [`Model::chat_prompt`] renders one turn. Replies of reasoning models come split into reasoning and answer
//!   ([`ReasoningParser`], [`Chunk::reasoning`]).
//! - [`Engine::from_device`] runs on a wgpu device the application created; with
//!   [`Session::start_generation`] and [`Generation::poll_next`] the application advances
//!   generation from its own frame loop without ever waiting for the GPU.
//!
//! - [`Session::enable_profiling`] times every GPU dispatch; [`Session::take_profile`] sums
//!   them per kernel ([`ProfileSummary`]) and clears them, [`Session::disable_profiling`]
//!   stops. While profiling is on, **every step blocks** until the GPU is done (polled steps
//!   included), so profile a run apart from one that must not wait.
//!
//! The library never prints; it reports through typed errors ([`Error`]) and the `log` facade.

#![warn(missing_docs)]

pub mod batch;
pub use batch::TokenLogprob;
mod chat;
mod constraint;
mod device;
mod error;
mod generate;
mod model;
mod research;
mod session;
mod stepping;
mod warm_up;

pub use chat::{Chat, ChatOptions, ChatPrompt, ChatTurn, ContextOverflow, Reply, TurnInfo};
pub use constraint::{Constraint, ConstraintError, ConstraintReport, GbnfError, gbnf_to_lark};
pub use device::Engine;
pub use error::{Error, Result};
pub use generate::{CancelToken, Chunk, GenerateOptions, Generation, GenerationStats, StopReason};
pub use model::{LoadOptions, Model, ModelInfo};
pub use research::{Perplexity, Pooling, l2_normalize, perplexity};
pub use session::{MAX_BATCH, Session, SessionOptions};
/// The engine crate: device, kernels, layer plans, sampling.
pub use wllm_engine as engine;
// Every type a signature or a public field of this crate uses, so that programs need no
// `use` of the inner crates.
pub use wllm_engine::cpu::Profile as CpuProfile;
pub use wllm_engine::plan::{GpuFacts, Usage as PlanUsage};
pub use wllm_engine::profile::{KernelEvent, KernelStats, Phase, ProfileSummary, Profiler, TimingMode};
pub use wllm_engine::sampling::{LogitBias, SamplerConfig, SamplingError};
/// The wgpu wllm is built against; a host passing its own device must use this version.
pub use wllm_engine::wgpu;
pub use wllm_engine::{
    Backend, CacheRequest, CacheTypes, DeviceOptions, EngineError, Gpu, GpuLayers, KvType, Logits,
    PendingStep, Plan, StepOutput, StepTimings,
};
/// The loaders crate: GGUF and safetensors files, tokenizers, chat templates.
pub use wllm_loaders as loaders;
/// Why a model file could not be read.
pub use wllm_loaders::Error as LoadError;
pub use wllm_loaders::chat::{
    ChatError, ChatMessage, ChatTemplate, ReasoningDelta, ReasoningEffort, ReasoningFormat, ReasoningParser,
    RenderOptions, TemplateOrigin,
};
pub use wllm_loaders::{Arch, GgmlType, ModelConfig, ModelError, Tokenizer, TokenizerError};
