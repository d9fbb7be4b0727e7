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
//! The library never prints; it reports through return values and the `log` facade.

mod device;
mod error;
mod generate;
mod model;
mod session;
mod stepping;

pub use device::Engine;
pub use error::{Error, Result};
pub use generate::{CancelToken, Chunk, GenerateOptions, Generation, GenerationStats, StopReason};
pub use model::{LoadOptions, Model, ModelInfo};
pub use session::{Session, SessionOptions};
pub use wllm_engine as engine;
pub use wllm_engine::{Logits, PendingStep, StepOutput};
pub use wllm_engine::sampling::SamplerConfig;
pub use wllm_loaders as loaders;
/// The wgpu wllm is built against; a host passing its own device must use this version.
pub use wllm_engine::wgpu;
