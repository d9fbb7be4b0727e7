//! The engine of wllm: the layer plan every backend runs (`layers`), the GPU backend on wgpu
//! (`gpu`: device, WGSL kernels as typed ops, the step graph), the CPU backend (`cpu`), where
//! layers run and how much memory each device needs (`exec`, `plan`), and sampling.

pub mod cpu;
pub mod error;
pub mod exec;
pub mod finite;
pub mod gpu;
pub mod kv_type;
pub mod layers;
pub mod plan;
pub mod sampling;

// The GPU modules under their earlier top-level paths, which the library facade, tests and
// benches use.
pub use gpu::{device, model, ops, pipeline, profile, repack, shader, tensor, variants};

pub use device::{Backend, Caps, DeviceOptions, Gpu, Tuning};
pub use error::{EngineError, Result};
pub use exec::{Executor, SeqSpan};
pub use kv_type::{CacheRequest, CacheTypes, KvType};
pub use model::{
    Context, ContextBytes, ContextOptions, GpuModel, Logits, PendingStep, StepOutput, StepTimings,
    context_bytes,
};
pub use plan::{GpuLayers, Plan, PlanRequest};
pub use wgpu;
