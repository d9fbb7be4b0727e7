//! Token generation: sampling, streaming detokenization, stop conditions, cancellation.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wllm_engine::Logits;
use wllm_engine::sampling::{Sampler, SamplerConfig, StopMatcher};
use wllm_loaders::Utf8Stream;

use crate::error::{Error, Result};
use crate::session::Session;

/// Stops a generation from another thread (or a Ctrl-C handler).
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> CancelToken {
        CancelToken::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
    pub fn reset(&self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// Most tokens to generate (`-n`).
    pub max_tokens: usize,
    pub sampling: SamplerConfig,
    /// Stop when one of these strings appears in the output (it is not emitted).
    pub stop: Vec<String>,
    /// Stop at the model's end-of-generation tokens (EOS, EOT, ...).
    pub stop_at_eog: bool,
    pub cancel: Option<CancelToken>,
    /// Keep the logits of every row: each prompt position, then each generated token that was
    /// fed back (`--dump-logits`). Costs a logits download per step.
    pub collect_logits: bool,
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
        }
    }
}

/// Why generation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    MaxTokens,
    /// The model produced an end-of-generation token (not emitted).
    EndOfGeneration(u32),
    /// Index of the stop string that matched.
    StopString(usize),
    Cancelled,
    /// The context is full.
    ContextFull,
}

/// One step's output. `text` can be empty (a token that ends mid-character) and the last
/// chunk may carry only held-back text (`token: None`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub token: Option<u32>,
    pub text: String,
}

/// Figures in the form `ollama run --verbose` prints them.
#[derive(Clone, Debug, Default)]
pub struct GenerationStats {
    pub prompt_tokens: usize,
    pub prompt_time: Duration,
    pub generated_tokens: usize,
    pub generation_time: Duration,
    pub time_to_first_token: Duration,
}

impl GenerationStats {
    pub fn prompt_tps(&self) -> f64 {
        self.prompt_tokens as f64 / self.prompt_time.as_secs_f64().max(1e-9)
    }
    pub fn generation_tps(&self) -> f64 {
        self.generated_tokens as f64 / self.generation_time.as_secs_f64().max(1e-9)
    }
}

pub struct Generation<'s> {
    session: &'s mut Session,
    opts: GenerateOptions,
    /// `None`: greedy, chosen on the device.
    sampler: Option<Sampler>,
    next: Option<u32>,
    produced: usize,
    utf8: Utf8Stream,
    stop: StopMatcher,
    finished: Option<StopReason>,
    flushed: bool,
    logits: Vec<f32>,
    ids: Vec<u32>,
    stats: GenerationStats,
    gen_start: Instant,
}

impl<'s> Generation<'s> {
    pub(crate) fn start(
        session: &'s mut Session,
        prompt: &[u32],
        opts: GenerateOptions,
        start: Instant,
    ) -> Result<Self> {
        if prompt.is_empty() {
            return Err(Error::InvalidArgument("the prompt has no tokens".into()));
        }
        let n_vocab = session.model.config().n_vocab as usize;
        let greedy = opts.sampling.temp <= 0.0
            && opts.sampling.logit_bias.is_empty()
            && (opts.sampling.repeat_penalty == 1.0 || opts.sampling.repeat_last_n == 0)
            && opts.sampling.frequency_penalty == 0.0
            && opts.sampling.presence_penalty == 0.0;
        let mut sampler = if greedy { None } else { Some(Sampler::new(opts.sampling.clone())?) };
        if let Some(s) = sampler.as_mut() {
            for &t in session.history.iter().chain(prompt) {
                s.accept(t);
            }
        }
        let on_device = sampler.is_none() && !opts.collect_logits;
        let mode = if opts.collect_logits {
            Logits::All
        } else if on_device {
            Logits::None
        } else {
            Logits::Last
        };
        let out = session.step(prompt, mode, on_device)?;
        let mut logits = Vec::new();
        let next = if on_device {
            out.token
        } else {
            let last = &out.logits[out.logits.len() - n_vocab..];
            let t = choose(&mut sampler, last)?;
            if opts.collect_logits {
                logits = out.logits;
            }
            Some(t)
        };
        let prompt_time = start.elapsed();
        let stop = StopMatcher::new(opts.stop.clone());
        Ok(Generation {
            session,
            sampler,
            next,
            produced: 0,
            utf8: Utf8Stream::new(),
            stop,
            finished: None,
            flushed: false,
            logits,
            ids: Vec::new(),
            stats: GenerationStats {
                prompt_tokens: prompt.len(),
                prompt_time,
                time_to_first_token: prompt_time,
                ..Default::default()
            },
            gen_start: Instant::now(),
            opts,
        })
    }

    pub fn stop_reason(&self) -> Option<&StopReason> {
        self.finished.as_ref()
    }
    pub fn stats(&self) -> &GenerationStats {
        &self.stats
    }
    /// Generated token ids so far (end-of-generation tokens excluded).
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }
    /// Collected logits rows (with [`GenerateOptions::collect_logits`]).
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }

    fn finish(&mut self, reason: StopReason) -> Option<Result<Chunk>> {
        self.finished = Some(reason);
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
        (!text.is_empty()).then_some(Ok(Chunk { token: None, text }))
    }

    fn advance(&mut self) -> Result<Option<Chunk>> {
        let Some(tok) = self.next.take() else { return Ok(None) };
        let tokenizer = &self.session.model.inner.tokenizer;
        if self.opts.stop_at_eog && tokenizer.is_eog(tok) {
            self.finished = Some(StopReason::EndOfGeneration(tok));
            return Ok(None);
        }
        let piece = tokenizer.token_to_piece(tok);
        let text = self.utf8.push_bytes(&piece);
        let step = self.stop.push(&text);
        self.produced += 1;
        self.ids.push(tok);
        self.stats.generated_tokens = self.produced;
        if let Some(i) = step.stop {
            self.finished = Some(StopReason::StopString(i));
            return Ok(Some(Chunk { token: Some(tok), text: step.text }));
        }
        if let Some(s) = self.sampler.as_mut() {
            s.accept(tok);
        }
        if self.produced < self.opts.max_tokens {
            if self.session.history.len() >= self.session.n_ctx() {
                self.finished = Some(StopReason::ContextFull);
            } else {
                let n_vocab = self.session.model.config().n_vocab as usize;
                let on_device = self.sampler.is_none() && !self.opts.collect_logits;
                let mode = if on_device { Logits::None } else { Logits::Last };
                let out = self.session.step(&[tok], mode, on_device)?;
                self.next = if on_device {
                    out.token
                } else {
                    let t = choose(&mut self.sampler, &out.logits[..n_vocab])?;
                    if self.opts.collect_logits {
                        self.logits.extend_from_slice(&out.logits);
                    }
                    Some(t)
                };
            }
        } else {
            self.finished = Some(StopReason::MaxTokens);
        }
        self.stats.generation_time = self.gen_start.elapsed();
        Ok(Some(Chunk { token: Some(tok), text: step.text }))
    }
}

fn choose(sampler: &mut Option<Sampler>, logits: &[f32]) -> Result<u32> {
    match sampler {
        Some(s) => Ok(s.sample(logits)?),
        None => Ok(argmax(logits)),
    }
}

/// Index of the largest value, lowest index on ties (as on the device).
fn argmax(v: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

impl Iterator for Generation<'_> {
    type Item = Result<Chunk>;

    fn next(&mut self) -> Option<Result<Chunk>> {
        if self.finished.is_some() {
            return self.flush();
        }
        if self.opts.cancel.as_ref().is_some_and(|c| c.is_cancelled()) {
            return self.finish(StopReason::Cancelled);
        }
        if self.produced >= self.opts.max_tokens {
            return self.finish(StopReason::MaxTokens);
        }
        match self.advance() {
            Ok(Some(chunk)) => Some(Ok(chunk)),
            Ok(None) => {
                if self.finished.is_none() {
                    self.finished = Some(StopReason::MaxTokens);
                }
                self.flush()
            }
            Err(e) => {
                self.finished = Some(StopReason::Cancelled);
                self.flushed = true;
                Some(Err(e))
            }
        }
    }
}
