//! The step loop: admits queued requests into free sequences (reusing the longest cached
//! prefix), builds each step from every running sequence's next token plus prompt chunks, and
//! hands each sequence the logits of its last position.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use wllm_engine::{Executor, SeqSpan};

use super::sequence::{After, Sequence};
use super::{BatcherOptions, Event, Shared, Submitted};
use crate::error::{Error, Result};
use crate::generate::StopReason;
use crate::model::Model;
use crate::session::{MAX_BATCH, build_executor};

/// One KV cache region and the request using it.
struct Slot {
    /// Tokens whose keys and values the region holds, in order (kept after a request ends,
    /// for the next request that starts with them).
    history: Vec<u32>,
    seq: Option<Sequence>,
    /// When the region was last used; the least recently used free region goes first to a
    /// request that shares no prefix with any.
    last_used: Instant,
}

pub(crate) struct Runner {
    model: Model,
    exec: Executor,
    slots: Vec<Slot>,
    n_ctx: usize,
    n_batch: usize,
}

impl Runner {
    /// Returns the runner and the positions each sequence holds.
    pub fn new(model: &Model, opts: &BatcherOptions) -> Result<(Runner, u32)> {
        let planned = model.inner.info.plan.n_ctx;
        let n_ctx = opts.n_ctx.unwrap_or(model.inner.seq_ctx).max(1);
        let total = n_ctx.checked_mul(opts.parallel).ok_or_else(|| Error::InvalidOption {
            option: "parallel",
            message: format!("{} sequences of {n_ctx} positions overflow", opts.parallel),
        })?;
        if total > planned {
            // The load-time plan covered fewer positions; refuse now rather than fail under load.
            model.plan_for_context(total)?;
        }
        let n_batch = opts.n_batch.clamp(1, MAX_BATCH).max(opts.parallel.min(MAX_BATCH));
        let exec = build_executor(model, n_ctx, n_batch, opts.parallel)?;
        let now = Instant::now();
        let slots =
            (0..opts.parallel).map(|_| Slot { history: Vec::new(), seq: None, last_used: now }).collect();
        Ok((
            Runner { model: model.clone(), exec, slots, n_ctx: n_ctx as usize, n_batch: n_batch as usize },
            n_ctx,
        ))
    }

    pub fn run(mut self, rx: Receiver<Submitted>, shared: Arc<Shared>) {
        let mut queue: VecDeque<Submitted> = VecDeque::new();
        let mut open = true;
        loop {
            let busy = self.slots.iter().filter(|s| s.seq.is_some()).count();
            if busy == 0 && queue.is_empty() {
                if !open {
                    return;
                }
                // Idle: sleep until a request comes (with a timeout so a closed channel is seen).
                match rx.recv_timeout(Duration::from_millis(250)) {
                    Ok(s) => queue.push_back(s),
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => open = false,
                }
            }
            while let Ok(s) = rx.try_recv() {
                queue.push_back(s);
            }
            self.admit(&mut queue, &shared);
            let start = Instant::now();
            self.step(&shared);
            shared.busy_micros.fetch_add(start.elapsed().as_micros() as u64, Ordering::Relaxed);
            self.publish(&shared);
        }
    }

    fn publish(&self, shared: &Shared) {
        let busy: Vec<&Slot> = self.slots.iter().filter(|s| s.seq.is_some()).collect();
        shared.busy.store(busy.len(), Ordering::Relaxed);
        shared.kv_used.store(busy.iter().map(|s| s.history.len()).sum(), Ordering::Relaxed);
    }

    /// Moves queued requests into free slots, each into the one whose cache shares the longest
    /// prefix with its prompt.
    fn admit(&mut self, queue: &mut VecDeque<Submitted>, shared: &Shared) {
        // Requests cancelled while they waited leave without a word (their client is gone).
        queue.retain(|s| !s.request.cancel.as_ref().is_some_and(|c| c.is_cancelled()));
        while !queue.is_empty() {
            let Some(at) = self.pick_slot(&queue[0].request.prompt) else { return };
            let Some(Submitted { request, callback, ticket, constraint }) = queue.pop_front() else { return };
            let slot = &mut self.slots[at];
            // At least the last prompt token is fed: its logits give the first token.
            let mut cached = common_prefix(&slot.history, &request.prompt).min(request.prompt.len() - 1);
            // Recurrent states cannot be cut back: a slot's state serves a prompt that
            // continues its whole history, and otherwise the prompt starts over.
            if self.model.inner.cfg.has_recurrent_layers() && cached < slot.history.len() {
                cached = 0;
            }
            slot.history.truncate(cached);
            slot.last_used = Instant::now();
            shared.prompt_tokens.fetch_add(request.prompt.len() as u64, Ordering::Relaxed);
            shared.cached_tokens.fetch_add(cached as u64, Ordering::Relaxed);
            let mut seq = match Sequence::new(request, callback, ticket, constraint, cached, &slot.history) {
                Ok(s) => s,
                Err(refused) => {
                    let (e, mut callback) = *refused;
                    callback(Event::Error(e));
                    continue;
                }
            };
            if seq.send(Event::Started { cached_tokens: cached }) {
                slot.seq = Some(seq);
            } else {
                seq.ended = true;
            }
        }
        self.publish(shared);
    }

    fn pick_slot(&self, prompt: &[u32]) -> Option<usize> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.seq.is_none())
            .max_by_key(|(_, s)| (common_prefix(&s.history, prompt), std::cmp::Reverse(s.last_used)))
            .map(|(i, _)| i)
    }

    /// One step over every running sequence: decode tokens first, then prompt chunks in the room
    /// left, oldest request first.
    fn step(&mut self, shared: &Shared) {
        self.drop_cancelled();
        let mut tokens = Vec::new();
        let mut spans = Vec::new();
        let mut owners = Vec::new();
        for (i, slot) in self.slots.iter().enumerate() {
            if let Some(t) = slot.seq.as_ref().and_then(|s| s.next) {
                spans.push(SeqSpan { seq: i as u32, pos0: slot.history.len() as u32, len: 1, logits: true });
                tokens.push(t);
                owners.push(i);
            }
        }
        let mut prefilling: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].seq.as_ref().is_some_and(|s| s.is_prefilling()))
            .collect();
        prefilling.sort_by_key(|&i| self.slots[i].seq.as_ref().map(|s| s.started));
        for i in prefilling {
            let room = self.n_batch.saturating_sub(tokens.len());
            if room == 0 {
                break;
            }
            let slot = &self.slots[i];
            let Some(seq) = slot.seq.as_ref() else { continue };
            let take = seq.unfed.len().min(room);
            let chunk = &seq.request.prompt[seq.unfed.start..seq.unfed.start + take];
            spans.push(SeqSpan {
                seq: i as u32,
                pos0: slot.history.len() as u32,
                len: take as u32,
                logits: take == seq.unfed.len(),
            });
            tokens.extend_from_slice(chunk);
            owners.push(i);
        }
        if spans.is_empty() {
            return;
        }
        if let Err(e) = self.model.check_files() {
            return self.fail(&owners, e);
        }
        let out = self.exec.step_seqs(&tokens, &spans);
        let out = out.map_err(Error::from).and_then(|o| self.model.check_files().map(|_| o));
        let logits = match out {
            Ok(l) => l,
            Err(e) => return self.fail(&owners, e),
        };
        self.advance(&tokens, &spans, &logits, shared);
    }

    /// Records what the step fed and gives each sequence that asked for logits its row.
    fn advance(&mut self, tokens: &[u32], spans: &[SeqSpan], logits: &[f32], shared: &Shared) {
        let n_vocab = self.model.config().n_vocab as usize;
        let tokenizer = self.model.tokenizer();
        let mut fed = 0;
        let mut row = 0;
        for span in spans {
            let slot = &mut self.slots[span.seq as usize];
            let len = span.len as usize;
            slot.history.extend_from_slice(&tokens[fed..fed + len]);
            fed += len;
            let Some(seq) = slot.seq.as_mut() else { continue };
            if seq.next.take().is_none() {
                seq.unfed.start += len;
            }
            if !span.logits {
                continue;
            }
            let r = &logits[row * n_vocab..(row + 1) * n_vocab];
            row += 1;
            let room = self.n_ctx - slot.history.len();
            match seq.take_logits(r, tokenizer, room) {
                Ok(After::Continue) => {
                    shared.generated_tokens.fetch_add(1, Ordering::Relaxed);
                }
                Ok(After::Finish(reason)) => {
                    if reason != StopReason::Cancelled && !matches!(reason, StopReason::EndOfGeneration(_)) {
                        shared.generated_tokens.fetch_add(1, Ordering::Relaxed);
                    }
                    seq.finish(reason);
                    slot.seq = None;
                    slot.last_used = Instant::now();
                }
                Err(e) => {
                    seq.ended = true;
                    seq.send(Event::Error(e));
                    slot.seq = None;
                }
            }
        }
    }

    /// Ends the requests whose clients went away, so their slots are free for this step.
    fn drop_cancelled(&mut self) {
        for slot in &mut self.slots {
            if slot.seq.as_ref().is_some_and(|s| s.request.cancel.as_ref().is_some_and(|c| c.is_cancelled()))
            {
                if let Some(mut seq) = slot.seq.take() {
                    seq.finish(StopReason::Cancelled);
                }
                slot.last_used = Instant::now();
            }
        }
    }

    /// A step failed: its sequences end with the error and their caches are forgotten.
    fn fail(&mut self, owners: &[usize], e: Error) {
        let msg = e.to_string();
        log::error!("step failed: {msg}");
        let mut first = Some(e);
        for &i in owners {
            let slot = &mut self.slots[i];
            slot.history.clear();
            if let Some(mut seq) = slot.seq.take() {
                seq.ended = true;
                let err = first.take().unwrap_or_else(|| Error::StepFailed(msg.clone()));
                seq.send(Event::Error(err));
            }
        }
    }
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}
