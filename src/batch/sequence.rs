//! One request while it runs: what is left of its prompt, its sampler, streamed text and stop
//! conditions, and the callback that reports to its client.

use std::time::Instant;

use wllm_engine::sampling::{Sampler, StopMatcher};
use wllm_loaders::{Tokenizer, Utf8Stream};

use super::{BatchRequest, Callback, Done, Event, Ticket, TokenEvent, TokenLogprob, Usage};
use crate::constraint::ActiveConstraint;
use crate::error::{Error, Result};
use crate::generate::{StopReason, choose};

pub(crate) struct Sequence {
    pub request: BatchRequest,
    callback: Callback,
    /// Held until the sequence is dropped: it counts against the admission limit.
    _ticket: Ticket,
    /// Prompt tokens not yet fed (the cached prefix was skipped).
    pub unfed: std::ops::Range<usize>,
    /// The sampled token that the next step feeds.
    pub next: Option<u32>,
    /// `None`: greedy (argmax of the row).
    sampler: Option<Sampler>,
    constraint: Option<ActiveConstraint>,
    utf8: Utf8Stream,
    stop: StopMatcher,
    pub usage: Usage,
    pub started: Instant,
    /// Set once the request has ended (reported or cancelled); the slot is freed.
    pub ended: bool,
}

/// What to do with a sequence after it took a token.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum After {
    Continue,
    Finish(StopReason),
}

impl Sequence {
    /// Errors (handing the callback back) when the sampling settings are refused.
    pub fn new(
        request: BatchRequest,
        callback: Callback,
        ticket: Ticket,
        constraint: Option<ActiveConstraint>,
        cached: usize,
        history: &[u32],
    ) -> std::result::Result<Self, Box<(Error, Callback)>> {
        let mut sampler = match request.sampling.is_greedy() {
            true => None,
            false => match Sampler::new(request.sampling.clone()) {
                Ok(sm) => Some(sm),
                Err(e) => return Err(Box::new((e.into(), callback))),
            },
        };
        if let Some(sm) = sampler.as_mut() {
            for &t in &history[..cached] {
                sm.accept(t);
            }
            for &t in &request.prompt[cached..] {
                sm.accept(t);
            }
        }
        let stop = StopMatcher::new(request.stop.clone());
        let usage =
            Usage { prompt_tokens: request.prompt.len(), completion_tokens: 0, cached_tokens: cached };
        Ok(Sequence {
            unfed: cached..request.prompt.len(),
            request,
            callback,
            _ticket: ticket,
            next: None,
            sampler,
            constraint,
            utf8: Utf8Stream::new(),
            stop,
            usage,
            started: Instant::now(),
            ended: false,
        })
    }

    /// Reports to the client; false when it went away.
    pub fn send(&mut self, event: Event) -> bool {
        (self.callback)(event)
    }

    pub fn is_prefilling(&self) -> bool {
        !self.unfed.is_empty()
    }

    /// Picks the next token from the logits of the sequence's last fed position, reports it,
    /// and says whether the sequence goes on. `room`: positions left in its cache.
    pub fn take_logits(&mut self, row: &[f32], tokenizer: &Tokenizer, room: usize) -> Result<After> {
        let token = choose(self.sampler.as_mut(), self.constraint.as_mut(), row)?;
        if self.request.stop_at_eog && tokenizer.is_eog(token) {
            return Ok(After::Finish(StopReason::EndOfGeneration(token)));
        }
        if let Some(c) = self.constraint.as_mut() {
            c.commit(token)?;
        }
        let logprobs = self.request.logprobs.map(|n| token_logprobs(row, token, n, tokenizer));
        let piece = tokenizer.token_to_piece(token);
        let step = self.stop.push(&self.utf8.push_bytes(&piece));
        self.usage.completion_tokens += 1;
        if let Some(s) = self.sampler.as_mut() {
            s.accept(token);
        }
        let alive = self.send(Event::Token(TokenEvent { token, text: step.text, logprobs }));
        if !alive {
            return Ok(After::Finish(StopReason::Cancelled));
        }
        if let Some(i) = step.stop {
            return Ok(After::Finish(StopReason::StopString(i)));
        }
        if self.constraint.as_ref().is_some_and(ActiveConstraint::is_finished) {
            return Ok(After::Finish(StopReason::Constraint));
        }
        if self.request.max_tokens.is_some_and(|m| self.usage.completion_tokens >= m) {
            return Ok(After::Finish(StopReason::MaxTokens));
        }
        if room == 0 {
            return Ok(After::Finish(StopReason::ContextFull));
        }
        self.next = Some(token);
        Ok(After::Continue)
    }

    /// Releases held-back text and reports the end.
    pub fn finish(&mut self, reason: StopReason) {
        self.ended = true;
        let mut text = self.utf8.finish();
        if !self.stop.is_stopped() {
            text = self.stop.push(&text).text;
            text.push_str(&self.stop.finish());
        }
        let usage = self.usage;
        self.send(Event::Done(Done { reason, text, usage }));
    }
}

/// The chosen token's log-probability and the `n` most likely tokens', from the raw logits:
/// what a batched request's [`TokenEvent`] and a generation's [`Chunk`](crate::Chunk) carry.
pub(crate) fn token_logprobs(
    row: &[f32],
    chosen: u32,
    n: usize,
    tokenizer: &Tokenizer,
) -> (TokenLogprob, Vec<TokenLogprob>) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = row.iter().map(|&x| f64::from(x - max).exp()).sum();
    let log_z = f64::from(max) + sum.ln();
    let entry = |token: u32| TokenLogprob {
        token,
        bytes: tokenizer.token_to_piece(token),
        logprob: (f64::from(row[token as usize]) - log_z) as f32,
    };
    let mut top: Vec<u32> = Vec::with_capacity(n + 1);
    if n > 0 {
        let mut order: Vec<u32> = (0..row.len() as u32).collect();
        let k = n.min(order.len());
        order.select_nth_unstable_by(k - 1, |&a, &b| {
            row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b))
        });
        order.truncate(k);
        order.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
        top = order;
    }
    (entry(chosen), top.into_iter().map(entry).collect())
}
