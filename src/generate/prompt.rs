//! Feeding a generation's prompt in batches, so that a cancel is seen between them and a polled
//! generation never queues more than one batch per call.
//!
//! What the cache holds after a cancel during the prompt: the batches fed before the cancel
//! was seen, whole (a polled batch in flight counts as fed: it runs to its end on the device);
//! [`Session::tokens`] lists them. The rest of the prompt was never fed.

use std::task::Poll;

use wllm_engine::{Logits, StepOutput};

use super::{Drive, Generation, StopReason};
use crate::error::{Error, Result};
use crate::session::Session;

/// Refuses a prompt no batch of it could complete: empty, outside the vocabulary, or longer
/// than the context has room for. Checked up front so a refusal leaves the cache as it was.
pub(crate) fn check(session: &Session, prompt: &[u32]) -> Result<()> {
    if prompt.is_empty() {
        return Err(Error::EmptyPrompt);
    }
    let n_vocab = session.model().config().n_vocab;
    if let Some(&token) = prompt.iter().find(|&&t| t >= n_vocab) {
        return Err(Error::TokenOutOfVocab { token, n_vocab });
    }
    let needed = session.tokens().len() + prompt.len();
    if needed > session.n_ctx() {
        return Err(Error::ContextOverflow { needed, n_ctx: session.n_ctx() });
    }
    Ok(())
}

impl Generation<'_> {
    /// Blocking: the whole prompt, a batch at a time, stopping early on a cancel. Polled: the
    /// first batch, queued.
    pub(super) fn start_prompt(&mut self, drive: Drive) -> Result<()> {
        if self.cancelled() {
            self.finished = Some(StopReason::Cancelled);
            return Ok(());
        }
        self.feed_prompt(drive).map(|_| ())
    }

    /// Feeds prompt batches until the prompt is in (blocking) or one batch is queued (polled:
    /// `Pending`). A cancel seen between batches ends the generation.
    pub(super) fn feed_prompt(&mut self, drive: Drive) -> Result<Poll<()>> {
        loop {
            self.feed_prompt_batch(drive)?;
            if drive == Drive::Poll {
                return Ok(Poll::Pending);
            }
            if self.prompt_rest.is_empty() {
                return Ok(Poll::Ready(()));
            }
            if self.cancelled() {
                self.finished = Some(StopReason::Cancelled);
                return Ok(Poll::Ready(()));
            }
        }
    }

    /// The prompt's next batch. Only the last asks for what chooses the first token; earlier
    /// ones fill the cache (and the collected logits).
    fn feed_prompt_batch(&mut self, drive: Drive) -> Result<()> {
        let n = self.session.get().n_batch().min(self.prompt_rest.len());
        let batch: Vec<u32> = self.prompt_rest.drain(..n).collect();
        let last = self.prompt_rest.is_empty();
        let mode = match (self.opts.collect_logits, last) {
            (true, _) => Logits::All,
            (false, true) => self.step_logits(),
            (false, false) => Logits::None,
        };
        self.run_step(&batch, mode, last && self.on_device(), drive)
    }

    /// A finished step's output: the step that ended the prompt (or fed a token) gives the next
    /// token; an earlier prompt batch only adds its logits rows, when they are collected.
    pub(super) fn take_output(&mut self, out: StepOutput) -> Result<()> {
        if self.prompt_rest.is_empty() {
            return self.resolve(out);
        }
        if self.opts.collect_logits {
            self.logits.extend_from_slice(&out.logits);
        }
        Ok(())
    }
}
