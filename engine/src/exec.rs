//! Where a model's layers run. Today: all on the GPU. The CPU path and layer splits plug in
//! here, behind the same step interface, so sessions and tools never care where layers live.

use std::sync::Arc;

use crate::error::Result;
use crate::model::{Context, ContextOptions, GpuModel, Logits, PendingStep, StepOutput, StepTimings};

/// Runs forward steps of one sequence.
pub enum Executor {
    Gpu(Context),
}

impl Executor {
    pub fn gpu(model: Arc<GpuModel>, opts: &ContextOptions) -> Result<Executor> {
        Ok(Executor::Gpu(Context::new(model, opts)?))
    }

    /// Feeds `tokens` at the current position; see [`Context::eval`].
    pub fn eval(&mut self, tokens: &[u32], logits: Logits, argmax: bool) -> Result<StepOutput> {
        match self {
            Executor::Gpu(c) => c.eval(tokens, logits, argmax),
        }
    }
    /// Queues the step and returns at once; see [`Context::submit`].
    pub fn submit(&mut self, tokens: &[u32], logits: Logits, argmax: bool) -> Result<PendingStep> {
        match self {
            Executor::Gpu(c) => c.submit(tokens, logits, argmax),
        }
    }
    pub fn n_past(&self) -> u32 {
        match self {
            Executor::Gpu(c) => c.n_past(),
        }
    }
    pub fn n_ctx(&self) -> u32 {
        match self {
            Executor::Gpu(c) => c.n_ctx(),
        }
    }
    pub fn clear(&mut self) {
        match self {
            Executor::Gpu(c) => c.clear(),
        }
    }
    pub fn truncate(&mut self, n: u32) {
        match self {
            Executor::Gpu(c) => c.truncate(n),
        }
    }
    pub fn timings(&self) -> StepTimings {
        match self {
            Executor::Gpu(c) => c.timings,
        }
    }
    /// Times every following step per dispatch.
    pub fn enable_profiling(&mut self) {
        match self {
            Executor::Gpu(c) => c.enable_profiling(),
        }
    }

    pub fn profiler(&self) -> Option<&crate::profile::Profiler> {
        match self {
            Executor::Gpu(c) => c.profiler(),
        }
    }

    /// Short name of where the work runs: `vulkan`, `metal`, `dx12`, `gl` or `cpu`.
    pub fn backend_name(&self) -> &'static str {
        match self {
            Executor::Gpu(c) => c.model().gpu.backend().name(),
        }
    }
}
