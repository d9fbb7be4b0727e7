//! A conversation over a [`Session`]: the model's chat template, KV-cache reuse between turns,
//! and a policy for a conversation that outgrows the context.
//!
//! Each turn renders the whole conversation and tokenizes it, then keeps the cached tokens it
//! shares with that and evaluates only the rest. Rendering the whole conversation (rather than
//! appending a rendered delta) keeps the cache right for templates that rewrite earlier turns
//! and for replies whose text tokenizes differently from the ids the model sampled: the cache
//! is cut back to where they part.
//!
//! A turn is blocking ([`Chat::send`]) or polled from a frame loop ([`Chat::start`], in
//! `turn.rs`); the history can be seeded, popped and edited (`history.rs`).
//!
//! Models that reason before answering (gpt-oss's harmony channels, Qwen3's `<think>`) have
//! their replies split into [`Reply::reasoning`] and [`Reply::text`]; only the answer joins the
//! conversation, as these templates drop the reasoning of past turns anyway.

use wllm_loaders::chat::{
    ChatMessage, ChatTemplate, ReasoningEffort, ReasoningFormat, ReasoningParser, RenderOptions,
    TemplateOrigin,
};

use crate::error::{Error, Result};
use crate::generate::{Chunk, GenerateOptions, Generation, GenerationStats, StopReason};
use crate::model::Model;
use crate::session::Session;

mod history;
mod turn;

pub use turn::ChatTurn;

/// What to do when the conversation plus room for the reply no longer fits the context.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ContextOverflow {
    /// Refuse the turn with [`Error::ContextOverflow`]; the conversation is left as it was.
    #[default]
    Error,
    /// Drop the oldest turns (a user message and the replies to it, never the system message)
    /// until the conversation fits, then evaluate it again from where the cache parts.
    TruncateOldest,
}

#[derive(Clone, Debug, Default)]
/// How a [`Chat`] behaves.
pub struct ChatOptions {
    /// The system message, kept first through `clear` and truncation.
    pub system: Option<String>,
    /// What a turn that does not fit the context does.
    pub overflow: ContextOverflow,
    /// How much to reason, for templates that take it (gpt-oss); `None`: the template's default.
    pub reasoning_effort: Option<ReasoningEffort>,
}

/// A conversation rendered for generation: its tokens, and the parser that splits the reply
/// the model will write after them.
#[derive(Clone, Debug)]
pub struct ChatPrompt {
    /// The templated conversation, generation prompt included.
    pub tokens: Vec<u32>,
    /// Set to the model's [`ReasoningFormat`], starting where the prompt leaves the reply
    /// (inside `<think>` when the template opened it). Pass it as
    /// [`GenerateOptions::reasoning`].
    pub reasoning: ReasoningParser,
}

/// How one turn used the cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TurnInfo {
    /// Tokens of the templated conversation, generation prompt included.
    pub prompt_tokens: usize,
    /// Of those, tokens already in the cache and kept.
    pub reused_tokens: usize,
    /// Of those, tokens evaluated for this turn (`prompt_tokens - reused_tokens`).
    pub evaluated_tokens: usize,
    /// Oldest turns dropped to fit the context ([`ContextOverflow::TruncateOldest`]).
    pub dropped_turns: usize,
}

impl Model {
    /// The templated token ids of `messages`, as llama.cpp tokenizes a chat prompt: the
    /// tokenizer's own BOS/EOS added, special-token text parsed as special tokens.
    pub fn chat_tokens(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<Vec<u32>> {
        let options = RenderOptions { add_generation_prompt, ..Default::default() };
        Ok(self.chat_prompt(messages, &options)?.tokens)
    }

    /// [`chat_tokens`](Self::chat_tokens) with every render option (the reasoning effort among
    /// them), and the reply's reasoning parser.
    ///
    /// ```no_run
    /// use wllm::loaders::chat::RenderOptions;
    /// use wllm::{ChatMessage, GenerateOptions, Model, ReasoningEffort, SessionOptions};
    ///
    /// let model = Model::load("gpt-oss-20b.gguf")?;
    /// let options = RenderOptions {
    ///     add_generation_prompt: true,
    ///     reasoning_effort: Some(ReasoningEffort::Low),
    ///     ..Default::default()
    /// };
    /// let prompt = model.chat_prompt(&[ChatMessage::user("Why is the sky blue?")], &options)?;
    /// let opts = GenerateOptions { reasoning: Some(prompt.reasoning), ..Default::default() };
    /// let mut session = model.session(&SessionOptions::default())?;
    /// for chunk in session.generate(&prompt.tokens, opts)? {
    ///     let chunk = chunk?;
    ///     eprint!("{}", chunk.reasoning);
    ///     print!("{}", chunk.text);
    /// }
    /// # Ok::<(), wllm::Error>(())
    /// ```
    pub fn chat_prompt(&self, messages: &[ChatMessage], options: &RenderOptions) -> Result<ChatPrompt> {
        let template = self.template()?;
        let text = template.render_with(messages, options)?;
        let reasoning = ReasoningParser::for_prompt(template.reasoning_format(), &text);
        Ok(ChatPrompt { tokens: self.tokenizer().encode(&text, true, true), reasoning })
    }

    /// How the model's replies mark reasoning, judged from its chat template
    /// ([`ReasoningFormat::None`] without one).
    pub fn reasoning_format(&self) -> ReasoningFormat {
        self.chat_template().map_or(ReasoningFormat::None, ChatTemplate::reasoning_format)
    }

    /// The text a template writes after an assistant reply, trimmed (`<|im_end|>`,
    /// `<end_of_turn>`, ...); `None` when it writes nothing or there is no template.
    ///
    /// Models usually end a reply with that as one end-of-generation token, which stops
    /// generation by itself; a model without it as a special token (ChatML on a base model's
    /// vocabulary) spells it out, and then it is a stop string.
    pub fn chat_end_of_turn(&self) -> Option<String> {
        // Private-use characters: no template trims, splits on or escapes them.
        const MARK: &str = "\u{e000}wllm\u{e001}";
        let t = self.chat_template()?;
        let text = t.render(&[ChatMessage::user("Hi"), ChatMessage::assistant(MARK)], false).ok()?;
        let after = text[text.find(MARK)? + MARK.len()..].trim();
        (!after.is_empty()).then(|| after.to_string())
    }

    fn template(&self) -> Result<&ChatTemplate> {
        let t = self.chat_template().ok_or(Error::NoChatTemplate)?;
        if *t.origin() == TemplateOrigin::ChatmlFallback
            && !self.inner.chatml_warned.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            log::warn!(
                "{}: the model has no chat template; using ChatML, which it may not have been trained on (give the right one as a template override)",
                self.info().path.display()
            );
        }
        Ok(t)
    }
}

/// A multi-turn conversation that owns its session.
///
/// Two ways to run a turn: [`Chat::send`] returns a [`Reply`] to iterate (blocking, borrowing
/// the chat), and [`Chat::start`] opens a [`ChatTurn`] the chat keeps, advanced with
/// [`ChatTurn::poll_next`] from a frame loop and ended with [`Chat::commit`] or
/// [`Chat::discard`]. Either way the whole conversation is rendered and only what the cache
/// does not already hold is evaluated, so history seeded, popped or edited
/// ([`Chat::with_history`], [`Chat::pop`], [`Chat::history_mut`]) stays exact.
pub struct Chat {
    /// The conversation's cache; `None` while an open turn holds it.
    session: Option<Session>,
    /// The reply [`Chat::start`] opened, until committed or discarded.
    turn: Option<ChatTurn>,
    options: ChatOptions,
    /// User and assistant messages in order, without the system message.
    turns: Vec<ChatMessage>,
    end_of_turn: Option<String>,
}

/// A turn ready to generate: its messages, the prompt tokens the cache lacks, and options.
struct Prepared {
    turns: Vec<ChatMessage>,
    prompt: Vec<u32>,
    opts: GenerateOptions,
    info: TurnInfo,
}

impl Chat {
    /// A conversation on `session` (whose cache it takes over); errors if the model has no chat template.
    pub fn new(session: Session, options: ChatOptions) -> Result<Chat> {
        session.model().template()?;
        let end_of_turn = session.model().chat_end_of_turn();
        Ok(Chat { session: Some(session), turn: None, options, turns: Vec::new(), end_of_turn })
    }

    /// The session holding the conversation's cache.
    pub fn session(&self) -> &Session {
        match (&self.session, &self.turn) {
            (Some(s), _) => s,
            (None, Some(t)) => t.generation.session(),
            (None, None) => unreachable!("a chat's session is in the chat or in its open turn"),
        }
    }

    /// The session, when no turn holds it.
    fn idle_session(&mut self) -> Result<&mut Session> {
        self.session.as_mut().ok_or(Error::ReplyOpen)
    }

    /// The conversation so far, system message first.
    pub fn messages(&self) -> Vec<ChatMessage> {
        self.options.system.iter().map(ChatMessage::system).chain(self.turns.iter().cloned()).collect()
    }

    /// Forgets every turn (and the cache), an open one included; the system message stays.
    pub fn clear(&mut self) {
        self.discard();
        self.turns.clear();
        if let Some(s) = self.session.as_mut() {
            s.clear();
        }
    }

    /// Adds a user message and starts the reply. Iterate the returned [`Reply`] to stream it;
    /// when it is dropped, what it produced (all of it, or as far as a cancel or an error let
    /// it get) joins the conversation as the assistant's message, unless
    /// [`Reply::discard`] dropped the turn.
    ///
    /// Room for the reply is `opts.max_tokens`, at most a quarter of the context: the
    /// conversation must fit with that much to spare, else the overflow policy applies. A reply
    /// that still fills the context stops with [`StopReason::ContextFull`]. Refused with
    /// [`Error::ReplyOpen`] while a turn from [`Chat::start`] is open.
    pub fn send(&mut self, user: &str, opts: GenerateOptions) -> Result<Reply<'_>> {
        let Prepared { turns, prompt, opts, info } = self.prepare(user, opts)?;
        let previous = std::mem::replace(&mut self.turns, turns);
        let session = self.session.as_mut().ok_or(Error::ReplyOpen)?;
        let generation = match session.generate(&prompt, opts) {
            Ok(g) => g,
            Err(e) => {
                self.turns = previous;
                return Err(e);
            }
        };
        Ok(Reply {
            generation,
            turns: &mut self.turns,
            previous: Some(previous),
            text: String::new(),
            reasoning: String::new(),
            info,
        })
    }

    /// Renders the conversation with `user` added, applies the overflow policy, and cuts the
    /// cache back to what it shares with the new prompt.
    fn prepare(&mut self, user: &str, mut opts: GenerateOptions) -> Result<Prepared> {
        let n_ctx = self.idle_session()?.n_ctx();
        let reserve = opts.max_tokens.min(n_ctx / 4);
        let mut turns = self.turns.clone();
        turns.push(ChatMessage::user(user));
        let mut dropped_turns = 0;
        let ChatPrompt { tokens: prompt, reasoning } = loop {
            let prompt = self.prompt(&turns)?;
            if prompt.tokens.len() + reserve <= n_ctx {
                break prompt;
            }
            // The oldest turn runs to the next user message; the newest is the one being sent.
            let next_user = turns.iter().skip(1).position(|m| m.role == "user").map(|i| i + 1);
            match (self.options.overflow, next_user) {
                (ContextOverflow::TruncateOldest, Some(end)) => {
                    turns.drain(..end);
                    dropped_turns += 1;
                }
                _ => {
                    return Err(Error::ContextOverflow { needed: prompt.tokens.len() + reserve, n_ctx });
                }
            }
        };
        let session = self.idle_session()?;
        let cached = session.tokens();
        let mut reused = cached.iter().zip(&prompt).take_while(|(a, b)| a == b).count();
        // The last prompt token is always evaluated: its logits choose the first reply token.
        reused = reused.min(prompt.len() - 1);
        // A model with recurrent states may keep less than asked (back to a checkpoint).
        reused = session.truncate(reused);
        if let Some(eot) = &self.end_of_turn
            && !opts.stop.contains(eot)
        {
            opts.stop.push(eot.clone());
        }
        if reasoning.format() != ReasoningFormat::None {
            opts.reasoning = Some(reasoning);
        }
        let info = TurnInfo {
            prompt_tokens: prompt.len(),
            reused_tokens: reused,
            evaluated_tokens: prompt.len() - reused,
            dropped_turns,
        };
        Ok(Prepared { turns, prompt: prompt[reused..].to_vec(), opts, info })
    }

    fn prompt(&self, turns: &[ChatMessage]) -> Result<ChatPrompt> {
        let system = self.options.system.iter().map(ChatMessage::system);
        let messages: Vec<ChatMessage> = system.chain(turns.iter().cloned()).collect();
        let options = RenderOptions {
            add_generation_prompt: true,
            reasoning_effort: self.options.reasoning_effort,
            ..Default::default()
        };
        let prompt = self.session().model().chat_prompt(&messages, &options)?;
        if prompt.tokens.is_empty() {
            return Err(Error::EmptyPrompt);
        }
        Ok(prompt)
    }
}

/// A reply being generated: an iterator of text chunks like [`Generation`], with reasoning
/// in [`Chunk::reasoning`] for models that reason (see [`Model::reasoning_format`]).
pub struct Reply<'c> {
    generation: Generation<'c>,
    turns: &'c mut Vec<ChatMessage>,
    /// The conversation before this turn, to put back if the turn is discarded.
    previous: Option<Vec<ChatMessage>>,
    text: String,
    reasoning: String,
    info: TurnInfo,
}

impl Reply<'_> {
    /// How this turn used the cache.
    pub fn info(&self) -> TurnInfo {
        self.info
    }
    /// Speed figures of the reply so far.
    pub fn stats(&self) -> &GenerationStats {
        self.generation.stats()
    }
    /// Why the reply ended; `None` while it goes on.
    pub fn stop_reason(&self) -> Option<&StopReason> {
        self.generation.stop_reason()
    }
    /// The answer so far, without the reasoning.
    pub fn text(&self) -> &str {
        &self.text
    }
    /// The reasoning so far (empty for models that do not reason).
    pub fn reasoning(&self) -> &str {
        &self.reasoning
    }
    /// The reply as the model wrote it, reasoning markers included; `None` for models that do
    /// not reason.
    pub fn raw_text(&self) -> Option<&str> {
        self.generation.raw_text()
    }
    /// Drops the turn: the conversation is again as it was before [`Chat::send`] (the user
    /// message goes too), and the next turn cuts the cache back to where it parts from it.
    pub fn discard(mut self) {
        if let Some(previous) = self.previous.take() {
            *self.turns = previous;
        }
    }
}

impl Iterator for Reply<'_> {
    type Item = Result<Chunk>;

    fn next(&mut self) -> Option<Result<Chunk>> {
        let chunk = self.generation.next()?;
        if let Ok(c) = &chunk {
            self.text.push_str(&c.text);
            self.reasoning.push_str(&c.reasoning);
        }
        Some(chunk)
    }
}

impl Drop for Reply<'_> {
    fn drop(&mut self) {
        if self.previous.is_some() {
            self.turns.push(ChatMessage::assistant(std::mem::take(&mut self.text)));
        }
    }
}
