//! Seeding, popping and editing a conversation. Nothing here touches the cache: the next turn
//! renders the whole conversation and keeps only the cached tokens it still starts with, so
//! any edit costs exactly the re-evaluation from the first token it changed.

use wllm_loaders::chat::ChatMessage;

use super::{Chat, ChatOptions};
use crate::error::{Error, Result};
use crate::session::Session;

impl Chat {
    /// A conversation that starts from `history` (user and assistant messages in order, as
    /// a saved game or an earlier session left them). A system message first in `history`
    /// takes the place of `options.system`. Nothing is evaluated until the next turn.
    pub fn with_history(
        session: Session,
        mut options: ChatOptions,
        history: Vec<ChatMessage>,
    ) -> Result<Chat> {
        let mut history = history.into_iter().peekable();
        if let Some(system) = history.next_if(|m| m.role == "system") {
            options.system = Some(system.content);
        }
        let mut chat = Chat::new(session, options)?;
        chat.turns = history.collect();
        Ok(chat)
    }

    /// The user and assistant messages so far, without the system message.
    pub fn history(&self) -> &[ChatMessage] {
        &self.turns
    }

    /// The messages to edit in place (rewrite a reply, insert or remove turns); refused with
    /// [`Error::ReplyOpen`] while a turn from [`Chat::start`] is open.
    pub fn history_mut(&mut self) -> Result<&mut Vec<ChatMessage>> {
        if self.turn.is_some() {
            return Err(Error::ReplyOpen);
        }
        Ok(&mut self.turns)
    }

    /// Removes the last message (a reply, or a user message without one); refused with
    /// [`Error::ReplyOpen`] while a turn is open.
    pub fn pop(&mut self) -> Result<Option<ChatMessage>> {
        Ok(self.history_mut()?.pop())
    }
}
