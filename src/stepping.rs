//! Stepping a session without blocking the caller's thread, for hosts that drive generation
//! from their own frame loop.

use wllm_engine::{Logits, PendingStep};

use crate::error::Result;
use crate::generate::{GenerateOptions, Generation};
use crate::session::Session;

impl Session {
    /// Queues `tokens` on the GPU and returns at once; the step's output (the logits asked
    /// for, and with `argmax` the greedy next token) comes from [`PendingStep::poll`] or
    /// [`PendingStep::wait`]. The tokens count as fed immediately, so further steps may be
    /// submitted before this one finishes.
    pub fn submit(&mut self, tokens: &[u32], logits: Logits, argmax: bool) -> Result<PendingStep> {
        self.check_files()?;
        let pending = self.exec.submit(tokens, logits, argmax)?;
        self.history.extend_from_slice(tokens);
        Ok(pending)
    }

    /// Starts generating after `prompt` without waiting for anything: only the prompt's first
    /// batch ([`Session::n_batch`] tokens) is queued, and each [`Generation::poll_next`] queues
    /// at most one more, so neither this call nor a frame waits for a whole prompt, and a
    /// cancel leaves at most one batch running. The generation owns the session (take it back
    /// with [`Generation::into_session`]), so a host can keep it in its own state and call
    /// [`Generation::poll_next`] once per frame. With layers on the CPU, which cannot run behind
    /// the caller's back, each `poll_next` runs its step (one prompt batch, or one token)
    /// blocking.
    pub fn start_generation(self, prompt: &[u32], opts: GenerateOptions) -> Result<Generation<'static>> {
        Generation::start_owned(self, prompt, opts).map_err(|refused| refused.0)
    }
}
