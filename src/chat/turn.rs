//! A chat turn a frame loop can drive: the chat keeps the reply in progress, the host polls it
//! once per frame and says at the end whether it joins the conversation.

use std::task::Poll;

use wllm_loaders::chat::ChatMessage;

use super::{Chat, Prepared, TurnInfo};
use crate::error::{Error, Result};
use crate::generate::{Chunk, GenerateOptions, Generation, GenerationStats, StopReason};

/// A reply in progress that its [`Chat`] owns (from [`Chat::start`]; again from
/// [`Chat::turn_mut`] on later frames). [`ChatTurn::poll_next`] never blocks, like
/// [`Generation::poll_next`]; iterating it blocks, as [`Reply`](super::Reply) does. It joins
/// the conversation only when [`Chat::commit`] says so.
pub struct ChatTurn {
    pub(super) generation: Generation<'static>,
    /// The conversation before this turn, put back by [`Chat::discard`].
    previous: Vec<ChatMessage>,
    text: String,
    reasoning: String,
    info: TurnInfo,
}

impl ChatTurn {
    /// Never blocks: [`Poll::Pending`] while the GPU works on the prompt (one batch per call)
    /// or the next token, else the next chunk, or `None` once the reply has ended.
    pub fn poll_next(&mut self) -> Poll<Option<Result<Chunk>>> {
        let item = self.generation.poll_next();
        if let Poll::Ready(Some(Ok(c))) = &item {
            self.text.push_str(&c.text);
            self.reasoning.push_str(&c.reasoning);
        }
        item
    }
    /// Whether the reply has ended (a stop, the token limit, a cancel or an error).
    pub fn is_finished(&self) -> bool {
        self.generation.stop_reason().is_some()
    }
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
    /// The generated token ids so far.
    pub fn ids(&self) -> &[u32] {
        self.generation.ids()
    }
    /// The answer so far, without the reasoning.
    pub fn text(&self) -> &str {
        &self.text
    }
    /// The reasoning so far (empty for models that do not reason).
    pub fn reasoning(&self) -> &str {
        &self.reasoning
    }
}

impl Iterator for ChatTurn {
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

impl Chat {
    /// Adds a user message and opens its reply without waiting for anything: only the
    /// prompt's first batch is queued. Advance it with [`ChatTurn::poll_next`] (once per frame)
    /// through the returned handle or [`Chat::turn_mut`], then end the turn with
    /// [`Chat::commit`] (the reply joins the conversation) or [`Chat::discard`] (the turn never
    /// happened). The same rules as [`Chat::send`] apply to the context; tokens match `send`'s.
    /// Refused with [`Error::ReplyOpen`] while another turn is open.
    ///
    /// ```no_run
    /// use std::task::Poll;
    /// # fn f(chat: &mut wllm::Chat) -> wllm::Result<()> {
    /// chat.start("Hello!", wllm::GenerateOptions::default())?;
    /// // Each frame:
    /// if let Some(turn) = chat.turn_mut() {
    ///     match turn.poll_next() {
    ///         Poll::Ready(Some(chunk)) => print!("{}", chunk?.text),
    ///         Poll::Ready(None) => {
    ///             chat.commit();
    ///         }
    ///         Poll::Pending => {}
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn start(&mut self, user: &str, opts: GenerateOptions) -> Result<&mut ChatTurn> {
        let Prepared { turns, prompt, opts, info } = self.prepare(user, opts)?;
        let session = self.session.take().ok_or(Error::ReplyOpen)?;
        let generation = match Generation::start_owned(session, &prompt, opts) {
            Ok(g) => g,
            Err(refused) => {
                let (e, session) = *refused;
                self.session = Some(session);
                return Err(e);
            }
        };
        let previous = std::mem::replace(&mut self.turns, turns);
        let turn = ChatTurn { generation, previous, text: String::new(), reasoning: String::new(), info };
        Ok(self.turn.insert(turn))
    }

    /// The turn [`Chat::start`] opened, until it is committed or discarded.
    pub fn turn(&self) -> Option<&ChatTurn> {
        self.turn.as_ref()
    }

    /// The open turn, to poll it.
    pub fn turn_mut(&mut self) -> Option<&mut ChatTurn> {
        self.turn.as_mut()
    }

    /// Ends the open turn and adds its reply (as far as it got) to the conversation as the
    /// assistant's message; returns that message, or `None` when no turn was open.
    pub fn commit(&mut self) -> Option<&ChatMessage> {
        let (_, text) = self.close_turn()?;
        self.turns.push(ChatMessage::assistant(text));
        self.turns.last()
    }

    /// Ends the open turn and drops it, user message included: the conversation is again as
    /// it was before [`Chat::start`] (the next turn cuts the cache back to where it parts from
    /// it). Returns whether a turn was open.
    pub fn discard(&mut self) -> bool {
        match self.close_turn() {
            Some((previous, _)) => {
                self.turns = previous;
                true
            }
            None => false,
        }
    }

    /// Takes the open turn apart, giving its session back to the chat: the conversation
    /// before it and the reply's text.
    fn close_turn(&mut self) -> Option<(Vec<ChatMessage>, String)> {
        let ChatTurn { generation, previous, text, .. } = self.turn.take()?;
        self.session = generation.into_session();
        Some((previous, text))
    }
}
