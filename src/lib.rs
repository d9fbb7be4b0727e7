//! wllm: portable LLM inference on wgpu.
pub use wllm_engine as engine;
pub use wllm_loaders as loaders;
