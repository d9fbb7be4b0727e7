//! Continuous batching: many requests share one model and one step loop. Every step carries the
//! next token of each running sequence plus chunks of newly arrived prompts, so the weights are
//! read once per step for the whole batch (what a server needs to serve a team at once).
//!
//! ```no_run
//! use wllm::batch::{BatchRequest, Batcher, BatcherOptions, Event};
//! use wllm::{Model, SamplerConfig};
//!
//! let model = Model::load("model.gguf")?;
//! let batcher = Batcher::start(model.clone(), BatcherOptions { parallel: 8, ..Default::default() })?;
//! let (tx, rx) = std::sync::mpsc::channel();
//! let request = BatchRequest {
//!     prompt: model.tokenize("The capital of France is"),
//!     sampling: SamplerConfig::greedy(),
//!     ..BatchRequest::default()
//! };
//! // The callback runs on the batcher's thread; returning false cancels the request.
//! batcher.submit(request, move |event| tx.send(event).is_ok())?;
//! for event in rx {
//!     match event {
//!         Event::Token(t) => print!("{}", t.text),
//!         Event::Done(done) => println!("\n{} ({} tokens)", done.reason, done.usage.completion_tokens),
//!         Event::Error(e) => eprintln!("{e}"),
//!         Event::Started { .. } => {}
//!     }
//! }
//! # Ok::<(), wllm::Error>(())
//! ```

mod scheduler;
mod sequence;
pub(crate) use sequence::token_logprobs;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use wllm_engine::sampling::SamplerConfig;

use crate::constraint::{ActiveConstraint, Constraint};
use crate::error::{Error, Result};
use crate::generate::{CancelToken, StopReason};
use crate::model::Model;

/// How a [`Batcher`] is sized.
#[derive(Clone, Debug)]
pub struct BatcherOptions {
    /// Sequences running at once (`--parallel`), each with its own KV cache region.
    pub parallel: u32,
    /// Positions per sequence (`--ctx`); `None`: the context the model was loaded for
    /// ([`LoadOptions::n_ctx`](crate::LoadOptions::n_ctx)). Load with
    /// [`LoadOptions::n_seq`](crate::LoadOptions::n_seq) = `parallel` so that the memory plan
    /// (and the placement of layers) counts every sequence.
    pub n_ctx: Option<u32>,
    /// Most tokens in one step (decode tokens plus prompt chunks).
    pub n_batch: u32,
    /// Requests waiting for a free sequence beyond which [`Batcher::submit`] refuses
    /// (`--max-queue`).
    pub max_queue: usize,
}

impl Default for BatcherOptions {
    fn default() -> Self {
        BatcherOptions { parallel: 4, n_ctx: None, n_batch: 256, max_queue: 64 }
    }
}

/// One completion request: a tokenized prompt and how to continue it.
#[derive(Clone, Debug)]
pub struct BatchRequest {
    /// The prompt's token ids.
    pub prompt: Vec<u32>,
    /// Most tokens to generate; `None`: until the context is full.
    pub max_tokens: Option<usize>,
    /// How to choose each token.
    pub sampling: SamplerConfig,
    /// Stop when one of these strings appears in the output (it is not emitted).
    pub stop: Vec<String>,
    /// Stop at the model's end-of-generation tokens.
    pub stop_at_eog: bool,
    /// Log-probabilities of each generated token, with this many alternatives (`Some(0)`: the
    /// chosen token's only).
    pub logprobs: Option<usize>,
    /// Cancelling it ends the request before the next step (or takes it out of the queue).
    pub cancel: Option<CancelToken>,
    /// What the output must match (compiled when submitted: an invalid one is refused then).
    pub constraint: Option<Constraint>,
}

impl Default for BatchRequest {
    fn default() -> Self {
        BatchRequest {
            prompt: Vec::new(),
            max_tokens: Some(256),
            sampling: SamplerConfig::default(),
            stop: Vec::new(),
            stop_at_eog: true,
            logprobs: None,
            cancel: None,
            constraint: None,
        }
    }
}

/// A token and its log-probability under the model (before sampling filters).
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprob {
    /// The token id.
    pub token: u32,
    /// The token's text as raw bytes (a token may end mid-character).
    pub bytes: Vec<u8>,
    /// Natural log of its probability.
    pub logprob: f32,
}

/// One generated token.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenEvent {
    /// The token id.
    pub token: u32,
    /// Text released by this token: may be empty (mid-character, or held back while it could
    /// be the start of a stop string) or carry earlier held-back text.
    pub text: String,
    /// The chosen token first, then the `logprobs` most likely ones.
    pub logprobs: Option<(TokenLogprob, Vec<TokenLogprob>)>,
}

/// Token counts of a finished request.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Tokens of the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub completion_tokens: usize,
    /// Prompt tokens whose keys and values were already in the sequence's cache (prefix reuse).
    pub cached_tokens: usize,
}

/// The end of a request.
#[derive(Clone, Debug, PartialEq)]
pub struct Done {
    /// Why generation ended.
    pub reason: StopReason,
    /// Held-back text released at the end (empty when there was none).
    pub text: String,
    /// Token counts.
    pub usage: Usage,
}

/// What a request reports, in order: `Started` once it has a sequence, a `Token` per generated
/// token, then `Done` or `Error`. [`Batcher::submit`] checks everything about a request that
/// can be checked before it runs, so an `Error` is the engine's (a failed step, a model file
/// changed on disk, non-finite logits) or a sampler that found nothing to draw from (a
/// `logit_bias` that bans every token).
#[derive(Debug)]
pub enum Event {
    /// The request got a sequence and its prompt is being evaluated.
    Started {
        /// Prompt tokens found in the sequence's cache and not evaluated again.
        cached_tokens: usize,
    },
    /// One generated token.
    Token(TokenEvent),
    /// The request finished; no event follows.
    Done(Done),
    /// The request failed; no event follows.
    Error(Error),
}

/// Why [`Batcher::submit`] refused a request. Nothing was queued.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    #[error("the queue is full ({0} requests waiting); retry later")]
    /// As many requests as allowed are waiting (the number waiting).
    QueueFull(usize),
    #[error("the prompt has {prompt} tokens; a sequence holds {n_ctx} (prompt and reply)")]
    /// The prompt leaves no room for a reply in a sequence.
    PromptTooLong {
        /// Tokens of the prompt.
        prompt: usize,
        /// Positions of a sequence.
        n_ctx: usize,
    },
    #[error("the prompt has no tokens")]
    /// The prompt has no tokens.
    EmptyPrompt,
    #[error("prompt token {index} is {token}, outside the vocabulary of {n_vocab}")]
    /// A prompt token is not in the vocabulary.
    TokenOutOfVocab {
        /// Where in the prompt.
        index: usize,
        /// The id.
        token: u32,
        /// Vocabulary size.
        n_vocab: u32,
    },
    #[error("the server is shutting down")]
    /// The batcher is stopping.
    ShuttingDown,
    #[error(transparent)]
    /// A setting of the request is invalid (a sampler value, a logit bias).
    Invalid(Box<Error>),
}

/// Counters for monitoring (`/metrics`).
#[derive(Copy, Clone, Debug, Default)]
pub struct BatcherStats {
    /// Requests accepted.
    pub requests_total: u64,
    /// Requests refused by `submit`.
    pub requests_rejected: u64,
    /// Prompt tokens of accepted requests.
    pub prompt_tokens_total: u64,
    /// Of those, tokens found in a sequence's cache.
    pub cached_tokens_total: u64,
    /// Tokens generated.
    pub generated_tokens_total: u64,
    /// Seconds the step loop spent in steps.
    pub busy_seconds: f64,
    /// Requests waiting for a free sequence.
    pub queue_len: usize,
    /// Sequences generating.
    pub busy_sequences: usize,
    /// Sequences in all.
    pub parallel: usize,
    /// Positions in use across all sequences, and their total.
    pub kv_used: usize,
    /// Positions of all sequences together.
    pub kv_capacity: usize,
}

pub(crate) type Callback = Box<dyn FnMut(Event) -> bool + Send>;

pub(crate) struct Submitted {
    request: BatchRequest,
    callback: Callback,
    ticket: Ticket,
    constraint: Option<ActiveConstraint>,
}

/// Counts a request as accepted until it is dropped, whichever way it ends (finished,
/// cancelled, failed, or dropped from the queue), so the admission limit is exact.
pub(crate) struct Ticket(Arc<Shared>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counters shared between the loop and readers.
#[derive(Default)]
pub(crate) struct Shared {
    requests_total: AtomicU64,
    requests_rejected: AtomicU64,
    prompt_tokens: AtomicU64,
    cached_tokens: AtomicU64,
    generated_tokens: AtomicU64,
    busy_micros: AtomicU64,
    /// Requests accepted and not yet ended: running or queued.
    live: AtomicUsize,
    busy: AtomicUsize,
    kv_used: AtomicUsize,
    stopping: AtomicBool,
}

/// Runs requests with continuous batching on a thread of its own.
pub struct Batcher {
    model: Model,
    tx: Option<mpsc::Sender<Submitted>>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    parallel: u32,
    n_ctx: u32,
    max_queue: usize,
}

impl Batcher {
    /// Allocates `parallel` sequences of `n_ctx` positions and starts the step loop. Errors
    /// (nothing allocated) when the memory plan cannot hold them.
    pub fn start(model: Model, opts: BatcherOptions) -> Result<Batcher> {
        if opts.parallel == 0 {
            return Err(Error::InvalidOption { option: "parallel", message: "must be at least 1".into() });
        }
        let (runner, n_ctx) = scheduler::Runner::new(&model, &opts)?;
        let shared = Arc::new(Shared::default());
        let (tx, rx) = mpsc::channel();
        let loop_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("wllm-batcher".into())
            .spawn(move || runner.run(rx, loop_shared))
            .map_err(Error::Thread)?;
        Ok(Batcher {
            model,
            tx: Some(tx),
            shared,
            thread: Some(thread),
            parallel: opts.parallel,
            n_ctx,
            max_queue: opts.max_queue,
        })
    }

    /// The model the batcher runs.
    pub fn model(&self) -> &Model {
        &self.model
    }
    /// Positions per sequence.
    pub fn n_ctx(&self) -> u32 {
        self.n_ctx
    }
    /// Sequences generated at once.
    pub fn parallel(&self) -> u32 {
        self.parallel
    }

    /// Queues a request. `callback` receives its events on the batcher's thread and must not
    /// block; when it returns false (the client went away) the request is cancelled and its
    /// sequence freed before the next step.
    pub fn submit(
        &self,
        request: BatchRequest,
        callback: impl FnMut(Event) -> bool + Send + 'static,
    ) -> Result<(), SubmitError> {
        let s = &self.shared;
        let refuse = |e| {
            s.requests_rejected.fetch_add(1, Ordering::Relaxed);
            Err(e)
        };
        if s.stopping.load(Ordering::Relaxed) {
            return refuse(SubmitError::ShuttingDown);
        }
        if request.prompt.is_empty() {
            return refuse(SubmitError::EmptyPrompt);
        }
        if request.prompt.len() >= self.n_ctx as usize {
            return refuse(SubmitError::PromptTooLong {
                prompt: request.prompt.len(),
                n_ctx: self.n_ctx as usize,
            });
        }
        let n_vocab = self.model.config().n_vocab;
        if let Some((index, &token)) = request.prompt.iter().enumerate().find(|(_, t)| **t >= n_vocab) {
            return refuse(SubmitError::TokenOutOfVocab { index, token, n_vocab });
        }
        if let Err(e) = request.sampling.validate() {
            return refuse(SubmitError::Invalid(Box::new(e.into())));
        }
        if let Some(b) = request.sampling.logit_bias.iter().find(|b| b.token >= n_vocab) {
            return refuse(SubmitError::Invalid(Box::new(Error::TokenOutOfVocab {
                token: b.token,
                n_vocab,
            })));
        }
        // Compiled here, on the caller's thread: a schema takes milliseconds, which the step
        // loop would make every running request wait.
        let constraint = match request.constraint.as_ref().map(|c| self.model.start_constraint(c)).transpose()
        {
            Ok(c) => c,
            Err(e) => return refuse(SubmitError::Invalid(Box::new(e))),
        };
        // Counted before the check so that concurrent submits cannot both take the last place.
        let limit = self.parallel as usize + self.max_queue;
        let live = s.live.fetch_add(1, Ordering::SeqCst);
        let ticket = Ticket(s.clone());
        if live >= limit {
            drop(ticket);
            return refuse(SubmitError::QueueFull(live - self.parallel as usize));
        }
        let tx = self.tx.as_ref().ok_or(SubmitError::ShuttingDown)?;
        s.requests_total.fetch_add(1, Ordering::Relaxed);
        tx.send(Submitted { request, callback: Box::new(callback), ticket, constraint })
            .map_err(|_| SubmitError::ShuttingDown)
    }

    /// The counters so far.
    pub fn stats(&self) -> BatcherStats {
        let s = &self.shared;
        BatcherStats {
            requests_total: s.requests_total.load(Ordering::Relaxed),
            requests_rejected: s.requests_rejected.load(Ordering::Relaxed),
            prompt_tokens_total: s.prompt_tokens.load(Ordering::Relaxed),
            cached_tokens_total: s.cached_tokens.load(Ordering::Relaxed),
            generated_tokens_total: s.generated_tokens.load(Ordering::Relaxed),
            busy_seconds: s.busy_micros.load(Ordering::Relaxed) as f64 * 1e-6,
            queue_len: s.live.load(Ordering::Relaxed).saturating_sub(s.busy.load(Ordering::Relaxed)),
            busy_sequences: s.busy.load(Ordering::Relaxed),
            parallel: self.parallel as usize,
            kv_used: s.kv_used.load(Ordering::Relaxed),
            kv_capacity: self.parallel as usize * self.n_ctx as usize,
        }
    }

    /// Stops accepting requests, lets the running and queued ones finish, and joins the loop.
    pub fn shutdown(mut self) {
        self.stop();
    }

    /// Stops accepting requests; those already accepted still run to their end.
    pub fn stop_accepting(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
    }

    fn stop(&mut self) {
        self.stop_accepting();
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.stop();
    }
}
