//! The wgpu engine of wllm: device selection, WGSL kernels as typed ops, the transformer, and
//! sampling.

pub mod cpu;
pub mod device;
pub mod error;
pub mod exec;
pub mod model;
pub mod ops;
pub mod pipeline;
pub mod plan;
pub mod profile;
pub mod repack;
pub mod sampling;
pub mod shader;
pub mod tensor;
pub mod variants;

pub use device::{Backend, Caps, DeviceOptions, Gpu, Tuning};
pub use error::{EngineError, Result};
pub use exec::Executor;
pub use model::{
    Context, ContextBytes, ContextOptions, GpuModel, Logits, PendingStep, StepOutput, StepTimings,
    context_bytes,
};
pub use plan::{GpuLayers, Plan, PlanRequest};
pub use wgpu;
