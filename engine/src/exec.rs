//! Where a model's layers run: all on the GPU, all on the CPU, or the first layers on the CPU
//! and the rest with the head on the GPU. Sessions and tools see one step interface.
//!
//! In a split, the CPU runs layers `0..k` and hands their hidden state to the GPU, which runs
//! `k..n_layer` and the head: activations cross once per step, and the sampled token (or the
//! logits asked for) comes back as on the pure GPU path.

use std::sync::Arc;
use std::time::Instant;

use crate::cpu::{CpuExperts, CpuStack, LogitRows};
use crate::error::{EngineError, Result};
use crate::gpu::model::{Context, ContextOptions, GpuModel, Logits, PendingStep, StepOutput, StepTimings};
pub use crate::gpu::ops::logprob::NO_TARGET;
pub use crate::layers::SeqSpan;

enum Parts {
    // Boxed: a context's prebuilt graph is large, and an executor is made once per session.
    Gpu(Box<Context>),
    Cpu(Box<CpuStack>),
    Split { cpu: Box<CpuStack>, gpu: Box<Context>, hidden: Vec<f32> },
}

/// Runs forward steps of one sequence, or of several sharing each step.
pub struct Executor {
    parts: Parts,
    timings: StepTimings,
}

impl Executor {
    /// Every layer on the GPU.
    pub fn gpu(model: Arc<GpuModel>, opts: &ContextOptions) -> Result<Executor> {
        Self::gpu_with_experts(model, opts, None)
    }

    /// Every layer on the GPU except the experts of the model's `cpu_moe_layers`.
    pub fn gpu_with_experts(
        model: Arc<GpuModel>,
        opts: &ContextOptions,
        experts: Option<CpuExperts>,
    ) -> Result<Executor> {
        Ok(Executor::new(Parts::Gpu(Box::new(Context::with_cpu_experts(model, opts, experts)?))))
    }

    /// Every layer and the head on the CPU (the stack must have been built with the head).
    pub fn cpu(stack: CpuStack) -> Executor {
        Executor::new(Parts::Cpu(Box::new(stack)))
    }

    /// The stack's layers on the CPU, then the GPU model's (which must start where the stack
    /// ends) and the head on the GPU.
    pub fn split(
        cpu: CpuStack,
        gpu: Arc<GpuModel>,
        opts: &ContextOptions,
        experts: Option<CpuExperts>,
    ) -> Result<Executor> {
        if cpu.n_layers() as u32 != gpu.first_layer {
            return Err(EngineError::InvalidArgument(format!(
                "the CPU runs {} layers but the GPU part starts at layer {}",
                cpu.n_layers(),
                gpu.first_layer
            )));
        }
        if cpu.n_ctx() < opts.n_ctx as usize {
            return Err(EngineError::InvalidArgument(format!(
                "the CPU layers hold {} positions, fewer than the context of {}",
                cpu.n_ctx(),
                opts.n_ctx
            )));
        }
        let gpu = Context::with_cpu_experts(gpu, opts, experts)?;
        Ok(Executor::new(Parts::Split { cpu: Box::new(cpu), gpu: Box::new(gpu), hidden: Vec::new() }))
    }

    fn new(parts: Parts) -> Executor {
        Executor { parts, timings: StepTimings::default() }
    }

    /// Feeds `tokens` at the current position. Returns the logits asked for and, if `argmax`,
    /// the greedy next token (computed on the device that runs the head).
    pub fn eval(&mut self, tokens: &[u32], logits: Logits, argmax: bool) -> Result<StepOutput> {
        let start = Instant::now();
        let out = match &mut self.parts {
            Parts::Gpu(c) => c.eval(tokens, logits, argmax)?,
            Parts::Split { cpu, gpu, hidden } => {
                let pos = gpu.n_past();
                cpu.forward(tokens, pos, hidden)?;
                gpu.eval_hidden(hidden, logits, argmax)?
            }
            Parts::Cpu(s) => cpu_eval(s, tokens, logits, argmax)?,
        };
        let dt = start.elapsed();
        if tokens.len() == 1 {
            self.timings.decode_tokens += 1;
            self.timings.decode_time += dt;
        } else {
            self.timings.prompt_tokens += tokens.len() as u64;
            self.timings.prompt_time += dt;
        }
        Ok(out)
    }

    /// Feeds `tokens` and returns, per token, the log-probability of `targets[i]` as the next
    /// token (`NO_TARGET`: 0). The log-softmax and the gather run where the head runs (a WGSL
    /// kernel on the GPU, the CPU kernel otherwise); only these values come back.
    pub fn score(&mut self, tokens: &[u32], targets: &[u32]) -> Result<Vec<f32>> {
        let start = Instant::now();
        let out = match &mut self.parts {
            Parts::Gpu(c) => c.score(tokens, targets)?,
            Parts::Split { cpu, gpu, hidden } => {
                let pos = gpu.n_past();
                cpu.forward(tokens, pos, hidden)?;
                gpu.score_hidden(hidden, targets)?
            }
            Parts::Cpu(s) => {
                let pos = s.n_filled() as u32;
                s.score(tokens, pos, targets)?
            }
        };
        self.timings.prompt_tokens += tokens.len() as u64;
        self.timings.prompt_time += start.elapsed();
        Ok(out)
    }

    /// Feeds `tokens` and returns the final-norm hidden state of each (what the output head
    /// reads), `n_embd` values per token, from the same layer plan as every other step.
    pub fn final_hidden(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let start = Instant::now();
        let out = match &mut self.parts {
            Parts::Gpu(c) => c.final_hidden(tokens)?,
            Parts::Split { cpu, gpu, hidden } => {
                let pos = gpu.n_past();
                cpu.forward(tokens, pos, hidden)?;
                gpu.final_hidden_from(hidden)?
            }
            Parts::Cpu(s) => {
                let pos = s.n_filled() as u32;
                s.final_hidden(tokens, pos)?
            }
        };
        self.timings.prompt_tokens += tokens.len() as u64;
        self.timings.prompt_time += start.elapsed();
        Ok(out)
    }

    /// One step over several sequences: `tokens` holds each span's tokens in span order.
    /// Returns, row-major, the logits of the last token of every span that asks for them.
    /// Every backend reads the weights once for the whole step.
    pub fn step_seqs(&mut self, tokens: &[u32], spans: &[SeqSpan]) -> Result<Vec<f32>> {
        let start = Instant::now();
        let out = match &mut self.parts {
            Parts::Gpu(c) => c.step_seqs(tokens, spans)?,
            Parts::Split { cpu, gpu, hidden } => {
                cpu.forward_seqs(tokens, spans, hidden)?;
                gpu.eval_hidden_seqs(hidden, spans)?
            }
            Parts::Cpu(s) => {
                let out = s.logits_seqs(tokens, spans)?;
                let v = s.config().n_vocab;
                for (row, pos) in out.chunks(v as usize).zip(last_positions(spans)) {
                    crate::finite::check_logits(row, v, pos)?;
                }
                out
            }
        };
        let dt = start.elapsed();
        let decode = spans.iter().filter(|s| s.len == 1).count() as u64;
        self.timings.decode_tokens += decode;
        self.timings.prompt_tokens += tokens.len() as u64 - decode;
        // A mixed step's time counts as decode when it carries decode tokens.
        if decode > 0 {
            self.timings.decode_time += dt
        } else {
            self.timings.prompt_time += dt
        }
        Ok(out)
    }

    /// Sequences the cache holds.
    pub fn n_seq(&self) -> u32 {
        match &self.parts {
            Parts::Gpu(c) | Parts::Split { gpu: c, .. } => c.n_seq(),
            Parts::Cpu(s) => s.n_seq() as u32,
        }
    }

    /// Queues the step and returns at once; see [`Context::submit`]. Only with every layer on
    /// the GPU: CPU layers would make the caller wait for them anyway.
    pub fn submit(&mut self, tokens: &[u32], logits: Logits, argmax: bool) -> Result<PendingStep> {
        match &mut self.parts {
            Parts::Gpu(c) => c.submit(tokens, logits, argmax),
            _ => Err(EngineError::Unsupported("non-blocking steps need every layer on the GPU".into())),
        }
    }

    pub fn n_past(&self) -> u32 {
        match &self.parts {
            Parts::Gpu(c) | Parts::Split { gpu: c, .. } => c.n_past(),
            Parts::Cpu(s) => s.n_filled() as u32,
        }
    }

    pub fn n_ctx(&self) -> u32 {
        match &self.parts {
            Parts::Gpu(c) | Parts::Split { gpu: c, .. } => c.n_ctx(),
            Parts::Cpu(s) => s.n_ctx() as u32,
        }
    }

    pub fn clear(&mut self) {
        match &mut self.parts {
            Parts::Gpu(c) => c.clear(),
            Parts::Cpu(s) => s.clear(),
            Parts::Split { cpu, gpu, .. } => {
                cpu.clear();
                gpu.clear();
            }
        }
    }

    /// Keeps the first `n` positions at most and returns how many were kept: fewer where
    /// recurrent states cannot be cut back that far (see [`CpuStack::truncate`]); the caller
    /// evaluates the rest again.
    pub fn truncate(&mut self, n: u32) -> u32 {
        match &mut self.parts {
            Parts::Gpu(c) => c.truncate(n),
            Parts::Cpu(s) => s.truncate(n as usize) as u32,
            // Both sides checkpoint at the same steps, so they normally agree at once; where the
            // GPU keeps less, the CPU goes back again (each round asks for strictly less).
            Parts::Split { cpu, gpu, .. } => {
                let mut want = n;
                loop {
                    let cpu_kept = cpu.truncate(want as usize) as u32;
                    let kept = gpu.truncate(cpu_kept);
                    if kept == cpu_kept {
                        return kept;
                    }
                    want = kept;
                }
            }
        }
    }

    /// Wall-clock time spent in steps, split into prompt and decode.
    pub fn timings(&self) -> StepTimings {
        self.timings
    }

    /// Times every following step per GPU dispatch (the GPU part only).
    pub fn enable_profiling(&mut self) {
        match &mut self.parts {
            Parts::Gpu(c) | Parts::Split { gpu: c, .. } => c.enable_profiling(),
            Parts::Cpu(s) => s.enable_profile(),
        }
    }

    /// Stops timing; steps no longer wait for the profiler's readbacks.
    pub fn disable_profiling(&mut self) {
        match &mut self.parts {
            Parts::Gpu(c) => c.disable_profiling(),
            Parts::Cpu(s) => s.disable_profile(),
            Parts::Split { cpu, gpu, .. } => {
                cpu.disable_profile();
                gpu.disable_profiling();
            }
        }
    }

    /// The GPU part's per-kernel summary since the last one, clearing its events; `None` when
    /// profiling is off or nothing runs on the GPU.
    pub fn take_profile(&mut self) -> Option<crate::gpu::profile::ProfileSummary> {
        match &mut self.parts {
            Parts::Gpu(c) | Parts::Split { gpu: c, .. } => c.profiler_mut().map(|p| p.take_summary()),
            Parts::Cpu(_) => None,
        }
    }

    pub fn profiler(&self) -> Option<&crate::gpu::profile::Profiler> {
        match &self.parts {
            Parts::Gpu(c) | Parts::Split { gpu: c, .. } => c.profiler(),
            Parts::Cpu(_) => None,
        }
    }

    /// Per-op CPU time, when the CPU runs layers and profiling is on.
    pub fn cpu_profile(&self) -> Option<&crate::cpu::Profile> {
        match &self.parts {
            Parts::Cpu(s) | Parts::Split { cpu: s, .. } => s.profile(),
            Parts::Gpu(_) => None,
        }
    }

    /// Where the work runs: `vulkan`, `metal`, `dx12`, `gl`, `cpu`, or `cpu+vulkan` (etc.) for
    /// a split.
    pub fn backend_name(&self) -> &'static str {
        match &self.parts {
            Parts::Gpu(c) => c.model().gpu.backend().name(),
            Parts::Cpu(_) => "cpu",
            Parts::Split { gpu, .. } => match gpu.model().gpu.backend().name() {
                "vulkan" => "cpu+vulkan",
                "metal" => "cpu+metal",
                "dx12" => "cpu+dx12",
                "gl" => "cpu+gl",
                _ => "cpu+gpu",
            },
        }
    }

    /// Layers on the CPU and on the GPU.
    pub fn layer_split(&self) -> (u32, u32) {
        match &self.parts {
            Parts::Gpu(c) => (0, c.model().layers.len() as u32),
            Parts::Cpu(s) => (s.n_layers() as u32, 0),
            Parts::Split { cpu, gpu, .. } => (cpu.n_layers() as u32, gpu.model().layers.len() as u32),
        }
    }
}

/// A step entirely on the CPU: the logits asked for, and the argmax of the last row.
fn cpu_eval(s: &mut CpuStack, tokens: &[u32], logits: Logits, argmax: bool) -> Result<StepOutput> {
    let pos = s.n_filled() as u32;
    let mut out = StepOutput::default();
    let rows = match logits {
        Logits::All => Some(LogitRows::All),
        Logits::Last => Some(LogitRows::Last),
        Logits::None if argmax => Some(LogitRows::Last),
        Logits::None => None,
    };
    match rows {
        None => {
            let mut hidden = Vec::new();
            s.forward(tokens, pos, &mut hidden)?;
        }
        Some(rows) => {
            let l = s.logits(tokens, pos, rows)?;
            let v = s.config().n_vocab as usize;
            // Every row is checked: NaN compares false, so the argmax below would pick token 0.
            let first =
                if rows == LogitRows::All { pos } else { (pos + tokens.len() as u32).saturating_sub(1) };
            crate::finite::check_logits(&l, v as u32, first)?;
            if argmax {
                let last = &l[l.len() - v..];
                out.token = Some(crate::sampling::argmax(last));
            }
            if logits != Logits::None {
                out.logits = l;
            }
        }
    }
    Ok(out)
}

/// Positions of the last token of each span that asks for logits.
fn last_positions(spans: &[SeqSpan]) -> impl Iterator<Item = u32> + '_ {
    spans.iter().filter(|s| s.logits).map(|s| s.pos0 + s.len - 1)
}
