//! Token generation: sampling, streaming detokenization, stop conditions, cancellation.

pub(crate) mod prompt;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use wllm_engine::sampling::{Sampler, SamplerConfig, SamplingError, StopMatcher, argmax, argmax_masked};
use wllm_engine::{EngineError, Logits, PendingStep, StepOutput};
use wllm_loaders::Utf8Stream;
use wllm_loaders::chat::ReasoningParser;

use crate::batch::TokenLogprob;
use crate::constraint::{ActiveConstraint, Constraint, ConstraintReport};
use crate::error::{Error, Result};
use crate::session::Session;

/// Stops a generation from another thread (or a Ctrl-C handler).
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token not yet cancelled.
    pub fn new() -> CancelToken {
        CancelToken::default()
    }
    /// Cancels every generation holding a clone of this token (checked before each step).
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
    /// Whether [`cancel`](Self::cancel) was called since the last [`reset`](Self::reset).
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
    /// Makes the token usable again for the next generation.
    pub fn reset(&self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

/// How to generate: length, sampling, stop conditions and cancellation.
///
/// ```no_run
/// use wllm::{CancelToken, GenerateOptions, Model, SamplerConfig, SessionOptions};
///
/// let model = Model::load("model.gguf")?;
/// let mut session = model.session(&SessionOptions::default())?;
/// let cancel = CancelToken::new();
/// let opts = GenerateOptions {
///     max_tokens: 128,
///     sampling: SamplerConfig { temp: 0.7, top_p: 0.9, seed: Some(1), ..SamplerConfig::default() },
///     stop: vec!["\nUser:".into()],
///     cancel: Some(cancel.clone()), // cancel.cancel() from any thread stops it
///     ..GenerateOptions::default()
/// };
/// let mut generation = session.generate(&model.tokenize("User: hi\nAssistant:"), opts)?;
/// for chunk in generation.by_ref() {
///     print!("{}", chunk?.text);
/// }
/// println!("\n{:?}, {:.1} tokens/s", generation.stop_reason(), generation.stats().generation_tps());
/// # Ok::<(), wllm::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// Most tokens to generate (`-n`).
    pub max_tokens: usize,
    /// How to choose each token (greedy, or llama.cpp's sampler chain).
    pub sampling: SamplerConfig,
    /// Stop when one of these strings appears in the output (it is not emitted).
    pub stop: Vec<String>,
    /// Stop at the model's end-of-generation tokens (EOS, EOT, ...).
    pub stop_at_eog: bool,
    /// Stops the generation when cancelled, from any thread.
    pub cancel: Option<CancelToken>,
    /// Keep the logits of every row: each prompt position, then each generated token that was
    /// fed back (`--dump-logits`). Costs a logits download per step.
    pub collect_logits: bool,
    /// Splits the output into reasoning ([`Chunk::reasoning`]) and answer ([`Chunk::text`]),
    /// with the markers between them removed. [`Model::chat_prompt`](crate::Model::chat_prompt)
    /// makes the parser for a chat prompt; `None` leaves the output as generated.
    pub reasoning: Option<ReasoningParser>,
    /// What the output must match (a JSON schema, a regex, a grammar): every token is drawn
    /// from those the constraint allows, and generation ends when it is complete
    /// ([`StopReason::Constraint`]). An invalid constraint fails the call that starts the
    /// generation.
    pub constraint: Option<Constraint>,
    /// Log-probabilities on each chunk ([`Chunk::logprobs`]): the chosen token's and those of
    /// this many most likely tokens (0: the chosen one alone), from the raw logits before
    /// sampling filters. Costs a logits download per step, as sampling does.
    pub logprobs: Option<usize>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 256,
            sampling: SamplerConfig::default(),
            stop: Vec::new(),
            stop_at_eog: true,
            cancel: None,
            collect_logits: false,
            reasoning: None,
            constraint: None,
            logprobs: None,
        }
    }
}

/// Why generation ended. [`StopReason::as_str`] names each with a stable word for machine
/// output (`wllm run --json` prints it as `stop_reason`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// `max_tokens` tokens were generated.
    MaxTokens,
    /// The model produced an end-of-generation token (not emitted).
    EndOfGeneration(u32),
    /// Index of the stop string that matched.
    StopString(usize),
    /// The [`CancelToken`] fired.
    Cancelled,
    /// The context is full.
    ContextFull,
    /// The constraint ([`GenerateOptions::constraint`]) admits nothing more.
    Constraint,
}

impl StopReason {
    /// The stable name: `length` (the token limit), `stop` (an end-of-generation token),
    /// `stop_string` (one of the stop strings), `cancelled`, `context_full`, `constraint` (the
    /// output completed its constraint). These words do not
    /// change between versions; new reasons may be added.
    pub fn as_str(&self) -> &'static str {
        match self {
            StopReason::MaxTokens => "length",
            StopReason::EndOfGeneration(_) => "stop",
            StopReason::StopString(_) => "stop_string",
            StopReason::Cancelled => "cancelled",
            StopReason::ContextFull => "context_full",
            StopReason::Constraint => "constraint",
        }
    }
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One step's output. `text` can be empty (a token that ends mid-character, a marker, text
/// that may be one) and the last chunk may carry only held-back text (`token: None`).
#[derive(Clone, Debug, PartialEq)]
pub struct Chunk {
    /// The token this step produced; `None` for a last chunk of held-back text.
    pub token: Option<u32>,
    /// The answer's text (everything generated, without [`GenerateOptions::reasoning`]).
    pub text: String,
    /// Reasoning text, with [`GenerateOptions::reasoning`]; else always empty.
    pub reasoning: String,
    /// With [`GenerateOptions::logprobs`]: the chosen token's log-probability, then the most
    /// likely tokens', most likely first (the same shape as a batched request's
    /// [`TokenEvent::logprobs`](crate::batch::TokenEvent::logprobs)).
    pub logprobs: Option<(TokenLogprob, Vec<TokenLogprob>)>,
}

impl Chunk {
    fn new(token: Option<u32>, text: String, reasoning: &mut Option<ReasoningParser>, end: bool) -> Chunk {
        let Some(parser) = reasoning else {
            return Chunk { token, text, reasoning: String::new(), logprobs: None };
        };
        let mut delta = parser.push(&text);
        if end {
            delta.extend(parser.finish());
        }
        Chunk { token, text: delta.content, reasoning: delta.reasoning, logprobs: None }
    }
}

/// Figures in the form `ollama run --verbose` prints them.
#[derive(Clone, Debug, Default)]
pub struct GenerationStats {
    /// Tokens evaluated before the first generated one.
    pub prompt_tokens: usize,
    /// Time from the call to the first token's logits.
    pub prompt_time: Duration,
    /// Tokens generated so far.
    pub generated_tokens: usize,
    /// Time spent generating after the prompt.
    pub generation_time: Duration,
    /// Time from the call to the first generated token.
    pub time_to_first_token: Duration,
}

impl GenerationStats {
    /// Prompt tokens per second.
    pub fn prompt_tps(&self) -> f64 {
        self.prompt_tokens as f64 / self.prompt_time.as_secs_f64().max(1e-9)
    }
    /// Generated tokens per second.
    pub fn generation_tps(&self) -> f64 {
        self.generated_tokens as f64 / self.generation_time.as_secs_f64().max(1e-9)
    }
}

/// A generation in progress: an iterator of [`Chunk`]s, one decode step per item.
///
/// [`Iterator::next`] blocks until the GPU has produced the token. A host that must not block
/// (a game advancing one token per frame) calls [`Generation::poll_next`] instead, which
/// returns [`Poll::Pending`] while the GPU is still working and queues at most one batch of
/// the prompt per call. Both may be mixed freely.
///
/// A [`CancelToken`] is checked before every step, prompt batches included. After a cancel the
/// session's cache holds what was fed before it: whole prompt batches (a batch queued by
/// `poll_next` counts, as it runs to its end on the GPU) and the tokens generated so far but
/// the last; [`Session::tokens`] lists them.
///
/// ```no_run
/// use std::task::Poll;
/// use wllm::{GenerateOptions, Model, SessionOptions};
///
/// let model = Model::load("model.gguf")?;
/// let session = model.session(&SessionOptions::default())?;
/// let prompt = model.tokenize("Once upon a time");
/// // Owns the session, so it can live in the host's state between frames.
/// let mut generation = session.start_generation(&prompt, GenerateOptions::default())?;
/// loop {
///     // ... render a frame ...
///     match generation.poll_next() {
///         Poll::Pending => continue,
///         Poll::Ready(Some(chunk)) => print!("{}", chunk?.text),
///         Poll::Ready(None) => break,
///     }
/// }
/// # Ok::<(), wllm::Error>(())
/// ```
pub struct Generation<'s> {
    session: SessionSlot<'s>,
    opts: GenerateOptions,
    /// `None`: greedy, chosen on the device.
    sampler: Option<Sampler>,
    constraint: Option<ActiveConstraint>,
    next: Option<u32>,
    /// `next`'s log-probabilities, with [`GenerateOptions::logprobs`].
    next_logprobs: Option<(TokenLogprob, Vec<TokenLogprob>)>,
    /// The step in flight whose output gives `next`.
    pending: Option<PendingStep>,
    /// The pending step is the prompt's (stats are taken when it resolves).
    prompt_pending: bool,
    /// Prompt tokens not fed yet: the prompt goes in batches of the session's `n_batch`.
    prompt_rest: Vec<u32>,
    produced: usize,
    utf8: Utf8Stream,
    stop: StopMatcher,
    reasoning: Option<ReasoningParser>,
    finished: Option<StopReason>,
    flushed: bool,
    logits: Vec<f32>,
    ids: Vec<u32>,
    stats: GenerationStats,
    started: Instant,
    gen_start: Instant,
}

/// A generation either borrows its session (the common case) or owns it, so that a host can
/// keep it in its own state across frames without a self-referential struct.
enum SessionSlot<'s> {
    Borrowed(&'s mut Session),
    Owned(Box<Session>),
}

/// Whether a step may block the caller.
#[derive(Copy, Clone, PartialEq, Eq)]
enum Drive {
    Block,
    Poll,
}

impl<'s> Generation<'s> {
    pub(crate) fn start(
        session: &'s mut Session,
        prompt: &[u32],
        opts: GenerateOptions,
        start: Instant,
    ) -> Result<Self> {
        Self::begin(SessionSlot::Borrowed(session), prompt, opts, start, Drive::Block).map_err(|r| r.0)
    }

    fn begin(
        session: SessionSlot<'s>,
        prompt: &[u32],
        opts: GenerateOptions,
        start: Instant,
        drive: Drive,
    ) -> Result<Self, Box<(Error, SessionSlot<'s>)>> {
        if let Err(e) = prompt::check(session.get(), prompt) {
            return Err(Box::new((e, session)));
        }
        let mut sampler = match opts.sampling.is_greedy() {
            true => None,
            false => match Sampler::new(opts.sampling.clone()) {
                Ok(s) => Some(s),
                Err(e) => return Err(Box::new((e.into(), session))),
            },
        };
        if let Some(s) = sampler.as_mut() {
            for &t in session.get().history.iter().chain(prompt) {
                s.accept(t);
            }
        }
        let constraint = match opts.constraint.as_ref().map(|c| session.get().model.start_constraint(c)) {
            Some(Ok(c)) => Some(c),
            Some(Err(e)) => return Err(Box::new((e, session))),
            None => None,
        };
        let stop = StopMatcher::new(opts.stop.clone());
        let mut g = Generation {
            session,
            sampler,
            constraint,
            next: None,
            next_logprobs: None,
            pending: None,
            prompt_pending: true,
            prompt_rest: prompt.to_vec(),
            produced: 0,
            utf8: Utf8Stream::new(),
            stop,
            reasoning: opts.reasoning.clone(),
            finished: None,
            flushed: false,
            logits: Vec::new(),
            ids: Vec::new(),
            stats: GenerationStats { prompt_tokens: prompt.len(), ..Default::default() },
            started: start,
            gen_start: start,
            opts,
        };
        match g.start_prompt(drive) {
            Ok(()) => Ok(g),
            Err(e) => Err(Box::new((e, g.session))),
        }
    }

    /// Returns the session (for an owned generation, see [`Session::start_generation`]).
    pub fn into_session(self) -> Option<Session> {
        match self.session {
            SessionSlot::Owned(s) => Some(*s),
            SessionSlot::Borrowed(_) => None,
        }
    }

    /// The session generating.
    pub fn session(&self) -> &Session {
        self.session.get()
    }

    /// Why generation ended; `None` while it goes on.
    pub fn stop_reason(&self) -> Option<&StopReason> {
        self.finished.as_ref()
    }
    /// Speed figures so far.
    pub fn stats(&self) -> &GenerationStats {
        &self.stats
    }
    /// Generated token ids so far (end-of-generation tokens excluded).
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }
    /// All text generated so far as the model wrote it, reasoning markers included; `None`
    /// without [`GenerateOptions::reasoning`].
    pub fn raw_text(&self) -> Option<&str> {
        self.reasoning.as_ref().map(ReasoningParser::raw)
    }
    /// Whether the output completed its constraint, and what the masks cost; `None` without
    /// [`GenerateOptions::constraint`].
    pub fn constraint_report(&mut self) -> Option<ConstraintReport> {
        self.constraint.as_mut().map(ActiveConstraint::report)
    }
    /// Collected logits rows (with [`GenerateOptions::collect_logits`]).
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }

    /// Never blocks: [`Poll::Pending`] while the GPU is still computing the next token,
    /// otherwise exactly what [`Iterator::next`] would return.
    pub fn poll_next(&mut self) -> Poll<Option<Result<Chunk>>> {
        self.drive(Drive::Poll)
    }

    /// Whether a step is in flight on the GPU.
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Greedy decoding without collected logits picks the token on the device and reads back
    /// only that; anything else needs the last row's logits.
    fn on_device(&self) -> bool {
        self.sampler.is_none()
            && !self.opts.collect_logits
            && self.constraint.is_none()
            && self.opts.logprobs.is_none()
    }

    fn step_logits(&self) -> Logits {
        if self.on_device() { Logits::None } else { Logits::Last }
    }

    /// Feeds `tokens`, either finishing the step now or leaving it in flight; `argmax` picks
    /// the next token on the device.
    fn run_step(&mut self, tokens: &[u32], mode: Logits, argmax: bool, drive: Drive) -> Result<()> {
        let session = self.session.get_mut();
        // Layers on the CPU cannot run behind the caller's back: their steps block.
        let drive = if session.layer_split().0 > 0 { Drive::Block } else { drive };
        match drive {
            Drive::Block => {
                let out = session.step(tokens, mode, argmax)?;
                self.take_output(out)
            }
            Drive::Poll => {
                self.pending = Some(session.submit(tokens, mode, argmax)?);
                Ok(())
            }
        }
    }

    /// Turns a finished step's output into the next token.
    fn resolve(&mut self, out: StepOutput) -> Result<()> {
        let n_vocab = self.session.get().model.config().n_vocab as usize;
        self.next = if self.on_device() {
            out.token
        } else {
            let Some(last) = out.logits.len().checked_sub(n_vocab).map(|at| &out.logits[at..]) else {
                return Err(EngineError::gpu("step", "the device returned no logits").into());
            };
            let t = choose(self.sampler.as_mut(), self.constraint.as_mut(), last)?;
            if let Some(n) = self.opts.logprobs {
                let tokenizer = &self.session.get().model.inner.tokenizer;
                self.next_logprobs = Some(crate::batch::token_logprobs(last, t, n, tokenizer));
            }
            if self.opts.collect_logits {
                self.logits.extend_from_slice(&out.logits);
            }
            Some(t)
        };
        if std::mem::take(&mut self.prompt_pending) {
            self.stats.prompt_time = self.started.elapsed();
            self.stats.time_to_first_token = self.stats.prompt_time;
            self.gen_start = Instant::now();
        }
        Ok(())
    }

    fn finish(&mut self, reason: StopReason) -> Option<Result<Chunk>> {
        self.finished = Some(reason);
        self.pending = None;
        self.flush()
    }

    fn flush(&mut self) -> Option<Result<Chunk>> {
        if self.flushed {
            return None;
        }
        self.flushed = true;
        let mut text = self.utf8.finish();
        if !self.stop.is_stopped() {
            text = self.stop.push(&text).text;
            text.push_str(&self.stop.finish());
        }
        let chunk = Chunk::new(None, text, &mut self.reasoning, true);
        (!chunk.text.is_empty() || !chunk.reasoning.is_empty()).then_some(Ok(chunk))
    }

    fn advance(&mut self, drive: Drive) -> Result<Poll<Option<Chunk>>> {
        if let Some(mut p) = self.pending.take() {
            let out = match drive {
                Drive::Block => p.wait()?,
                Drive::Poll => match p.poll()? {
                    Some(out) => out,
                    None => {
                        self.pending = Some(p);
                        return Ok(Poll::Pending);
                    }
                },
            };
            self.take_output(out)?;
        }
        if !self.prompt_rest.is_empty() && self.feed_prompt(drive)?.is_pending() {
            return Ok(Poll::Pending);
        }
        let Some(tok) = self.next.take() else { return Ok(Poll::Ready(None)) };
        let logprobs = self.next_logprobs.take();
        let tokenizer = &self.session.get().model.inner.tokenizer;
        if self.opts.stop_at_eog && tokenizer.is_eog(tok) {
            self.finished = Some(StopReason::EndOfGeneration(tok));
            return Ok(Poll::Ready(None));
        }
        if let Some(c) = self.constraint.as_mut() {
            c.commit(tok)?;
        }
        let piece = tokenizer.token_to_piece(tok);
        let text = self.utf8.push_bytes(&piece);
        let step = self.stop.push(&text);
        self.produced += 1;
        self.ids.push(tok);
        self.stats.generated_tokens = self.produced;
        if let Some(i) = step.stop {
            self.finished = Some(StopReason::StopString(i));
            let mut chunk = Chunk::new(Some(tok), step.text, &mut self.reasoning, false);
            chunk.logprobs = logprobs;
            return Ok(Poll::Ready(Some(chunk)));
        }
        if let Some(s) = self.sampler.as_mut() {
            s.accept(tok);
        }
        if self.constraint.as_ref().is_some_and(ActiveConstraint::is_finished) {
            self.finished = Some(StopReason::Constraint);
        } else if self.produced < self.opts.max_tokens {
            let session = self.session.get();
            if session.history.len() >= session.n_ctx() {
                self.finished = Some(StopReason::ContextFull);
            } else {
                self.run_step(&[tok], self.step_logits(), self.on_device(), drive)?;
            }
        } else {
            self.finished = Some(StopReason::MaxTokens);
        }
        self.stats.generation_time = self.gen_start.elapsed();
        let mut chunk = Chunk::new(Some(tok), step.text, &mut self.reasoning, false);
        chunk.logprobs = logprobs;
        Ok(Poll::Ready(Some(chunk)))
    }

    fn cancelled(&self) -> bool {
        self.opts.cancel.as_ref().is_some_and(|c| c.is_cancelled())
    }

    fn drive(&mut self, drive: Drive) -> Poll<Option<Result<Chunk>>> {
        if self.finished.is_some() {
            return Poll::Ready(self.flush());
        }
        if self.cancelled() {
            return Poll::Ready(self.finish(StopReason::Cancelled));
        }
        if self.produced >= self.opts.max_tokens {
            return Poll::Ready(self.finish(StopReason::MaxTokens));
        }
        Poll::Ready(match self.advance(drive) {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(Some(chunk))) => Some(Ok(chunk)),
            Ok(Poll::Ready(None)) => {
                if self.finished.is_none() {
                    self.finished = Some(StopReason::MaxTokens);
                }
                self.flush()
            }
            Err(e) => {
                self.finished = Some(StopReason::Cancelled);
                self.pending = None;
                self.flushed = true;
                Some(Err(e))
            }
        })
    }
}

impl Generation<'static> {
    /// Takes ownership of `session` and queues `prompt` without waiting for it.
    /// Takes ownership of `session` and queues the prompt's first batch without waiting for it;
    /// on an error the session comes back with it.
    pub(crate) fn start_owned(
        session: Session,
        prompt: &[u32],
        opts: GenerateOptions,
    ) -> Result<Self, Box<(Error, Session)>> {
        let slot = SessionSlot::Owned(Box::new(session));
        Self::begin(slot, prompt, opts, Instant::now(), Drive::Poll).map_err(|refused| match *refused {
            (e, SessionSlot::Owned(s)) => Box::new((e, *s)),
            (_, SessionSlot::Borrowed(_)) => unreachable!("an owned start keeps its session owned"),
        })
    }
}

impl SessionSlot<'_> {
    fn get(&self) -> &Session {
        match self {
            SessionSlot::Borrowed(s) => s,
            SessionSlot::Owned(s) => s,
        }
    }
    fn get_mut(&mut self) -> &mut Session {
        match self {
            SessionSlot::Borrowed(s) => s,
            SessionSlot::Owned(s) => s,
        }
    }
}

/// The next token from a logits row: drawn by `sampler` (`None`: the argmax), among the tokens
/// `constraint` allows.
pub(crate) fn choose(
    sampler: Option<&mut Sampler>,
    constraint: Option<&mut ActiveConstraint>,
    logits: &[f32],
) -> Result<u32> {
    let mask = constraint.map(ActiveConstraint::mask).transpose()?;
    match (sampler, mask) {
        (Some(s), mask) => Ok(s.sample_masked(logits, mask)?),
        (None, Some(mask)) => argmax_masked(logits, mask).ok_or(Error::Sampling(SamplingError::AllMasked)),
        (None, None) => Ok(argmax(logits)),
    }
}

impl Iterator for Generation<'_> {
    type Item = Result<Chunk>;

    fn next(&mut self) -> Option<Result<Chunk>> {
        match self.drive(Drive::Block) {
            Poll::Ready(item) => item,
            // A blocking drive waits for every step it starts.
            Poll::Pending => None,
        }
    }
}
