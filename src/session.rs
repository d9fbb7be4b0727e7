//! A session: one conversation's KV cache over a shared model.

use std::time::Instant;

use wllm_engine::cpu::{CpuExperts, CpuOptions, CpuStack};
use wllm_engine::profile::ProfileSummary;
use wllm_engine::{ContextOptions, EngineError, Executor, Logits, StepTimings};

use crate::error::Result;
use crate::generate::{GenerateOptions, Generation};
use crate::model::Model;

/// Per-session settings.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// Context size in tokens; `None`: the one the model was loaded for (see
    /// [`crate::LoadOptions::n_ctx`]).
    pub n_ctx: Option<u32>,
    /// Most prompt tokens processed in one step (at most the context, and at most
    /// [`MAX_BATCH`]; larger values are lowered to that).
    pub n_batch: u32,
}

/// The most prompt tokens a step processes, whatever a session asks for: the step's buffers
/// grow with it and the memory plan does not count more.
pub const MAX_BATCH: u32 = 8192;

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions { n_ctx: None, n_batch: 256 }
    }
}

/// One conversation: its own KV cache over a shared [`Model`](crate::Model). Tokens fed stay
/// in the cache, so each call continues where the last one stopped.
///
/// ```no_run
/// use wllm::{Logits, Model, SessionOptions};
///
/// let model = Model::load("model.gguf")?;
/// let mut session = model.session(&SessionOptions { n_ctx: Some(2048), n_batch: 256 })?;
/// // Logits of the prompt's last position, n_vocab values.
/// let logits = session.eval(&model.tokenize("The capital of France is"), Logits::Last)?;
/// assert_eq!(logits.len(), model.config().n_vocab as usize);
/// // Or let the device pick the greedy token and read back only that.
/// let next = session.eval_greedy(&model.tokenize(" Paris"))?;
/// println!("{}", model.detokenize(&[next]));
/// session.truncate(0); // forget everything, keep the buffers
/// # Ok::<(), wllm::Error>(())
/// ```
pub struct Session {
    pub(crate) model: Model,
    pub(crate) exec: Executor,
    /// The tokens whose keys and values are in the cache, in order.
    pub(crate) history: Vec<u32>,
    /// Most tokens one step feeds: a generation's prompt goes in batches of this many.
    n_batch: usize,
}

/// The executor for `n_seq` sequences of `n_ctx` positions each with the model's placement:
/// all on the GPU, all on the CPU, or split.
pub(crate) fn build_executor(model: &Model, n_ctx: u32, n_batch: u32, n_seq: u32) -> Result<Executor> {
    let inner = &model.inner;
    let ctx = ContextOptions { n_ctx, n_batch, n_seq, cache: inner.cache };
    let n_cpu = inner.info.plan.cpu_layers();
    let cpu = |with_head| {
        let opts = CpuOptions {
            threads: inner.info.threads,
            n_seq,
            cache: inner.cache.for_cpu(),
            ..CpuOptions::default()
        };
        CpuStack::with_options(&inner.cfg, inner.source.clone(), n_cpu, with_head, n_ctx, &opts)
    };
    let experts = match &inner.gpu_model {
        Some(g) if !g.cpu_moe_layers.is_empty() => {
            Some(CpuExperts::new(&inner.cfg, inner.source.clone(), &g.cpu_moe_layers, inner.info.threads)?)
        }
        _ => None,
    };
    Ok(match &inner.gpu_model {
        Some(g) if n_cpu == 0 => Executor::gpu_with_experts(g.clone(), &ctx, experts)?,
        Some(g) => Executor::split(cpu(false)?, g.clone(), &ctx, experts)?,
        None => Executor::cpu(cpu(true)?),
    })
}

impl Session {
    pub(crate) fn new(model: Model, opts: &SessionOptions) -> Result<Session> {
        let inner = &model.inner;
        let planned = inner.info.plan.n_ctx;
        if opts.n_ctx == Some(0) {
            return Err(crate::model::zero_context());
        }
        let n_ctx = opts.n_ctx.unwrap_or(inner.seq_ctx.min(planned)).max(1);
        if n_ctx > planned {
            // The load-time plan covered `planned` positions; check the larger cache fits.
            model.plan_for_context(n_ctx)?;
        }
        let n_batch = opts.n_batch.clamp(1, n_ctx.min(MAX_BATCH));
        let exec = build_executor(&model, n_ctx, n_batch, 1)?;
        Ok(Session { model, exec, history: Vec::new(), n_batch: n_batch as usize })
    }

    /// The model this session runs.
    pub fn model(&self) -> &Model {
        &self.model
    }
    /// Positions the cache holds.
    pub fn n_ctx(&self) -> usize {
        self.exec.n_ctx() as usize
    }
    /// Most tokens one step feeds ([`SessionOptions::n_batch`], lowered to the context and
    /// [`MAX_BATCH`]). A generation evaluates its prompt in batches of this many, checking its
    /// [`CancelToken`](crate::CancelToken) between them.
    pub fn n_batch(&self) -> usize {
        self.n_batch
    }
    /// Tokens currently in the cache.
    pub fn tokens(&self) -> &[u32] {
        &self.history
    }
    /// Where the steps run: `vulkan`, `cpu`, `cpu+vulkan`, ...
    pub fn backend_name(&self) -> &'static str {
        self.exec.backend_name()
    }
    /// Wall-clock time spent in blocking steps, split into prompt and decode.
    pub fn timings(&self) -> StepTimings {
        self.exec.timings()
    }

    /// Times every following step per GPU dispatch (see `wllm profile`), and the CPU layers'
    /// ops per kind. **While profiling is on every step blocks** until the GPU is done, polled
    /// ones included ([`Session::submit`], [`Generation::poll_next`](crate::Generation::poll_next)):
    /// timestamps are read back after each step, and on adapters without timestamp queries each
    /// dispatch is submitted and waited for alone. Turn it off with
    /// [`disable_profiling`](Self::disable_profiling).
    pub fn enable_profiling(&mut self) {
        self.exec.enable_profiling();
    }

    /// Stops timing: later steps are submitted without waiting again. Events not taken with
    /// [`take_profile`](Self::take_profile) are dropped.
    pub fn disable_profiling(&mut self) {
        self.exec.disable_profiling();
    }

    /// Count, total and mean GPU time per kernel since profiling was enabled or the last
    /// summary was taken, whose events are then cleared; `None` when profiling is off or no
    /// layer runs on the GPU.
    ///
    /// ```no_run
    /// # fn f(model: &wllm::Model, session: &mut wllm::Session) -> wllm::Result<()> {
    /// session.enable_profiling();
    /// session.eval(&model.tokenize("The capital of France is"), wllm::Logits::Last)?;
    /// if let Some(summary) = session.take_profile() {
    ///     for k in &summary.kernels {
    ///         println!("{:>8.1?} {:>4}x {:>8.1?}  {}", k.total, k.count, k.mean(), k.label);
    ///     }
    /// }
    /// session.disable_profiling();
    /// # Ok(()) }
    /// ```
    pub fn take_profile(&mut self) -> Option<ProfileSummary> {
        self.exec.take_profile()
    }

    /// Per-dispatch GPU timings recorded since profiling was enabled (the raw events; see `take_profile` for a summary).
    pub fn profiler(&self) -> Option<&wllm_engine::profile::Profiler> {
        self.exec.profiler()
    }

    /// Time per op kind of the layers on the CPU, once profiling is enabled.
    pub fn cpu_profile(&self) -> Option<&wllm_engine::cpu::Profile> {
        self.exec.cpu_profile()
    }

    /// Layers this session runs on the CPU and on the GPU.
    pub fn layer_split(&self) -> (u32, u32) {
        self.exec.layer_split()
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.exec.clear();
        self.history.clear();
    }

    /// Keeps the first `n` tokens of the cache (later steps overwrite the rest) and returns
    /// how many it kept. That is `n` (or the whole cache, if shorter) except with models whose
    /// layers carry recurrent states (Qwen3.5, Qwen3-Next): those cannot be cut back, so the
    /// cache goes back to the end of the last evaluated prompt if that is not past `n`, or
    /// else to nothing, and [`tokens`](Self::tokens) says what is left.
    pub fn truncate(&mut self, n: usize) -> usize {
        let n = n.min(self.history.len());
        let kept = self.exec.truncate(n as u32) as usize;
        self.history.truncate(kept);
        kept
    }

    /// Feeds `tokens` after what is in the cache and returns the logits asked for
    /// (row-major, `n_vocab` per row).
    pub fn eval(&mut self, tokens: &[u32], logits: Logits) -> Result<Vec<f32>> {
        self.check_files()?;
        let out = self.exec.eval(tokens, logits, false)?;
        self.history.extend_from_slice(tokens);
        // A read of a file truncated during the step gave zeros: its output must not be used.
        self.check_files()?;
        Ok(out.logits)
    }

    /// Feeds `tokens` and returns the most likely next token, chosen on the device.
    pub fn eval_greedy(&mut self, tokens: &[u32]) -> Result<u32> {
        self.check_files()?;
        let out = self.exec.eval(tokens, Logits::None, true)?;
        self.history.extend_from_slice(tokens);
        // A read of a file truncated during the step gave zeros: its output must not be used.
        self.check_files()?;
        out.token.ok_or_else(|| EngineError::gpu("greedy step", "the device returned no token").into())
    }

    pub(crate) fn step(
        &mut self,
        tokens: &[u32],
        logits: Logits,
        argmax: bool,
    ) -> Result<wllm_engine::StepOutput> {
        self.check_files()?;
        let out = self.exec.eval(tokens, logits, argmax)?;
        self.history.extend_from_slice(tokens);
        // A read of a file truncated during the step gave zeros: its output must not be used.
        self.check_files()?;
        Ok(out)
    }

    /// Before and after a step that reads the memory-mapped weights: errors if the file changed
    /// on disk (truncated, or written in place) since the model was loaded.
    pub(crate) fn check_files(&self) -> Result<()> {
        if self.model.inner.reads_map { self.model.check_files() } else { Ok(()) }
    }

    /// Starts generating after `prompt`, which is evaluated first in batches of
    /// [`n_batch`](Self::n_batch) tokens; a [`CancelToken`](crate::CancelToken) that fires
    /// meanwhile is seen between two batches, so this returns within one batch's time. After
    /// such a cancel the cache holds the batches evaluated before it ([`tokens`](Self::tokens)
    /// lists them) and the generation yields nothing. The returned iterator runs one decode
    /// step per `next()`, so a host can drive it one token per frame.
    pub fn generate(&mut self, prompt: &[u32], opts: GenerateOptions) -> Result<Generation<'_>> {
        Generation::start(self, prompt, opts, Instant::now())
    }
}
