//! Steps submitted without waiting. A host that owns the frame loop (a game, an editor) queues
//! a step, goes on rendering, and polls once per frame until the token is back. The blocking
//! [`Context::eval`] path is untouched: this one reads back through buffers of its own, so a
//! step in flight never holds a mapping the blocking path wants.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::{Context, Logits, StepOutput};
use crate::error::{EngineError, Result};
use crate::gpu::device::Gpu;
use crate::gpu::model::graph::logit_bytes;
use crate::gpu::ops::Op;

/// A step in flight on the GPU. Poll it with [`PendingStep::poll`] (never blocks) or finish it
/// with [`PendingStep::wait`]. Dropping it is safe: the step still runs and its KV entries stay
/// in the cache, only its output is lost.
#[must_use = "a submitted step's output is only available through poll or wait"]
pub struct PendingStep {
    gpu: Arc<Gpu>,
    state: State,
}

enum State {
    Ready(StepOutput),
    Waiting(Readback),
    Taken,
}

struct Readback {
    submission: wgpu::SubmissionIndex,
    logits: Option<(wgpu::Buffer, u64)>,
    token: Option<wgpu::Buffer>,
    /// Callbacks still to fire (one per mapped buffer, or one for work-done).
    left: Arc<AtomicUsize>,
    /// Vocabulary size and the positions of the first and last row, to check the output.
    n_vocab: u32,
    first_pos: u32,
    last_pos: u32,
    failure: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for PendingStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingStep").field("ready", &self.is_ready()).finish()
    }
}

impl PendingStep {
    /// A step that already finished (executors that cannot run asynchronously return these).
    pub fn ready(gpu: Arc<Gpu>, out: StepOutput) -> PendingStep {
        PendingStep { gpu, state: State::Ready(out) }
    }

    /// Whether the output can be taken without waiting. Does not poll the device.
    pub fn is_ready(&self) -> bool {
        match &self.state {
            State::Ready(_) => true,
            State::Waiting(r) => r.left.load(Ordering::Acquire) == 0,
            State::Taken => false,
        }
    }

    /// Checks the device once without blocking. `Ok(None)` while the GPU is still working;
    /// the output once, when it is done.
    pub fn poll(&mut self) -> Result<Option<StepOutput>> {
        if let State::Waiting(r) = &self.state
            && r.left.load(Ordering::Acquire) > 0
        {
            self.gpu.device.poll(wgpu::PollType::Poll).map_err(|e| EngineError::gpu("poll", e))?;
            if r.left.load(Ordering::Acquire) > 0 {
                return Ok(None);
            }
        }
        self.take().map(Some)
    }

    /// Blocks until the step is done and returns its output.
    pub fn wait(mut self) -> Result<StepOutput> {
        if let State::Waiting(r) = &self.state {
            let submission_index = Some(r.submission.clone());
            while r.left.load(Ordering::Acquire) > 0 {
                self.gpu
                    .device
                    .poll(wgpu::PollType::Wait { submission_index: submission_index.clone(), timeout: None })
                    .map_err(|e| EngineError::gpu("poll", e))?;
            }
        }
        self.take()
    }

    fn take(&mut self) -> Result<StepOutput> {
        match std::mem::replace(&mut self.state, State::Taken) {
            State::Ready(out) => Ok(out),
            State::Waiting(r) => r.read(),
            State::Taken => Err(EngineError::InvalidArgument("this step's output was already taken".into())),
        }
    }
}

impl Readback {
    fn read(self) -> Result<StepOutput> {
        if let Some(msg) = self.failure.lock().ok().and_then(|mut m| m.take()) {
            return Err(EngineError::gpu("readback", msg));
        }
        let mut out = StepOutput::default();
        if let Some((buf, bytes)) = &self.logits {
            out.logits = mapped_f32(buf, *bytes)?;
            let first = if out.logits.len() > self.n_vocab as usize { self.first_pos } else { self.last_pos };
            crate::finite::check_logits(&out.logits, self.n_vocab, first)?;
        }
        if let Some(buf) = &self.token {
            out.token = match mapped_f32(buf, 4)?.first() {
                Some(v) => Some(crate::finite::check_token(v.to_bits(), self.n_vocab, self.last_pos)?),
                None => None,
            };
        }
        Ok(out)
    }
}

fn mapped_f32(buf: &wgpu::Buffer, bytes: u64) -> Result<Vec<f32>> {
    let v = {
        let view = buf.slice(0..bytes).get_mapped_range().map_err(|e| EngineError::gpu("readback", e))?;
        bytemuck::pod_collect_to_vec::<u8, f32>(&view)
    };
    buf.unmap();
    Ok(v)
}

impl Context {
    /// Like [`Context::eval`], but returns as soon as the work is queued. The position advances
    /// at once (later steps queue behind this one), so steps may be submitted back to back.
    ///
    /// With profiling on, or when every row's logits do not fit one readback, the step runs
    /// blocking and comes back already ready. Steps submitted this way are not counted in
    /// [`Context::timings`]: their wall time depends on how often the host polls.
    pub fn submit(&mut self, tokens: &[u32], logits: Logits, argmax: bool) -> Result<PendingStep> {
        let gpu = self.model.gpu.clone();
        // Hand-overs to CPU experts wait for the GPU by nature: those steps run blocking.
        let cpu_handover = self.graph.body_decode.len() > 1;
        if self.profiler.is_some()
            || cpu_handover
            || (logits == Logits::All && tokens.len() > self.bufs.logit_rows as usize)
        {
            let out = self.eval(tokens, logits, argmax)?;
            return Ok(PendingStep::ready(gpu, out));
        }
        if argmax && logits == Logits::All {
            return Err(EngineError::InvalidArgument("argmax with all-row logits".into()));
        }
        self.check_tokens(tokens)?;
        let chunk = self.bufs.n_batch as usize;
        let n_chunks = tokens.len().div_ceil(chunk);
        let mut readback = None;
        for (i, part) in tokens.chunks(chunk).enumerate() {
            let last = i + 1 == n_chunks;
            let (want, arg) = if last { (logits, argmax) } else { (Logits::None, false) };
            readback = Some(self.submit_one(&gpu, part, want, arg)?);
        }
        let r = readback.ok_or_else(|| EngineError::InvalidArgument("no tokens to evaluate".into()))?;
        Ok(PendingStep { gpu, state: State::Waiting(r) })
    }

    fn check_tokens(&self, tokens: &[u32]) -> Result<()> {
        if tokens.is_empty() {
            return Err(EngineError::InvalidArgument("no tokens to evaluate".into()));
        }
        self.check_token_input(tokens)?;
        let total = self.n_past as usize + tokens.len();
        if total > self.bufs.n_ctx as usize {
            return Err(EngineError::ContextOverflow { n_tokens: total, n_ctx: self.bufs.n_ctx as usize });
        }
        Ok(())
    }

    /// Records one batch (at most `n_batch` tokens) into one pass, submits it, and asks for the
    /// readback buffers to be mapped when the GPU is done.
    fn submit_one(&mut self, gpu: &Gpu, tokens: &[u32], logits: Logits, argmax: bool) -> Result<Readback> {
        let n = tokens.len() as u32;
        gpu.queue.write_buffer(&self.bufs.tokens, 0, bytemuck::cast_slice(tokens));
        self.write_step(n)?;
        let body = if n == 1 { &self.graph.body_decode } else { &self.graph.body_prefill };
        // One segment: `submit` runs steps with CPU hand-overs through `eval`.
        let mut ops: Vec<&Op> = body.iter().flat_map(|s| s.ops.iter()).collect();
        ops.extend(self.graph.tail(logits, argmax));
        let logit_bytes = logit_bytes(logits, n, self.model.cfg.n_vocab);
        let staging = |label: &str, size: u64| {
            gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        };
        let logits_buf = (logit_bytes > 0).then(|| (staging("submit.logits", logit_bytes), logit_bytes));
        let token_buf = argmax.then(|| staging("submit.token", 4));
        let mut enc =
            gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("step") });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("step"),
                timestamp_writes: None,
            });
            for op in &ops {
                op.record(&mut pass, n);
            }
        }
        if let Some((buf, bytes)) = &logits_buf {
            enc.copy_buffer_to_buffer(&self.bufs.logits, 0, buf, 0, *bytes);
        }
        if let Some(buf) = &token_buf {
            enc.copy_buffer_to_buffer(&self.bufs.tokens, 0, buf, 0, 4);
        }
        let submission = gpu.queue.submit([enc.finish()]);
        let (first_pos, last_pos) = (self.n_past, self.n_past + n - 1);
        self.n_past += n;

        let left = Arc::new(AtomicUsize::new(0));
        let failure = Arc::new(Mutex::new(None));
        let bufs = logits_buf.iter().map(|(b, bytes)| (b, *bytes)).chain(token_buf.iter().map(|b| (b, 4)));
        for (buf, bytes) in bufs {
            left.fetch_add(1, Ordering::AcqRel);
            let (left, failure) = (left.clone(), failure.clone());
            buf.slice(0..bytes).map_async(wgpu::MapMode::Read, move |r| {
                if let (Err(e), Ok(mut f)) = (r, failure.lock()) {
                    *f = Some(e.to_string());
                }
                left.fetch_sub(1, Ordering::AcqRel);
            });
        }
        if left.load(Ordering::Acquire) == 0 {
            left.store(1, Ordering::Release);
            let left = left.clone();
            gpu.queue.on_submitted_work_done(move || {
                left.fetch_sub(1, Ordering::AcqRel);
            });
        }
        Ok(Readback {
            submission,
            logits: logits_buf,
            token: token_buf,
            left,
            failure,
            n_vocab: self.model.cfg.n_vocab,
            first_pos,
            last_pos,
        })
    }
}
