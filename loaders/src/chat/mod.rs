//! Chat templates: the model's own Jinja template (`tokenizer.chat_template` in GGUF,
//! `chat_template` in `tokenizer_config.json`, or a file) rendered with minijinja the way
//! llama.cpp and Hugging Face render it.
//!
//! Rendering follows llama.cpp at commit 0c1e570 (`common/chat.cpp`, `common/jinja`):
//! `trim_blocks` and `lstrip_blocks` on, one trailing newline of the template dropped, Python
//! string/dict methods, `raise_exception`, `strftime_now`, a Python-style `tojson`,
//! transformers' `{% generation %}` markers ignored, ChatML when the model has no template, and
//! a leading BOS (trailing EOS) dropped from the render when the tokenizer adds it anyway.
//! Templates that fail name the failing construct and its line ([`ChatError`]).
//!
//! Replies that carry reasoning (harmony channels, `<think>`) are split by [`ReasoningParser`],
//! in the [`ReasoningFormat`] the template calls for.
//!
//! Tool calls: an assistant turn's [`ToolCall`]s and a tool's reply (role `tool`) are rendered
//! as templates expect them (OpenAI's message shape), the tool list through `tools`; the
//! calls in a reply are read back in the family's [`ToolCallFormat`].
//!
//! Not done here: llama.cpp's per-template workarounds (folding a system message into the first
//! user turn for templates without a system role, typed content parts).

mod env;
mod error;
mod gemma_calls;
mod generic_tools;
mod reasoning;
mod render;
mod strftime;
mod template;
mod tojson;
mod tools;

pub use error::{ChatError, TemplateFailure};
pub use generic_tools::{answer_so_far, generic_messages, generic_schema};
pub use reasoning::{ParseEffortError, ReasoningDelta, ReasoningEffort, ReasoningFormat, ReasoningParser};
pub use render::{RenderDelta, RenderOptions};
pub use template::{CHATML_TEMPLATE, ChatTemplate, SpecialTokens, TemplateOrigin};
pub use tools::{
    JSON_WHITESPACE, ParsedReply, ToolCall, ToolCallFormat, call_start, constrained_schema, parse_tool_calls,
};

/// One turn of a conversation. `role` is free text (`system`, `user`, `assistant`, `tool`,
/// ...): templates decide which they accept.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
    /// The calls an assistant turn made.
    pub tool_calls: Vec<ToolCall>,
    /// For a `tool` turn: the call it answers, and the tool's name.
    pub tool_call_id: Option<String>,
    pub name: Option<String>,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage { role: role.into(), content: content.into(), ..Default::default() }
    }
    pub fn system(content: impl Into<String>) -> ChatMessage {
        ChatMessage::new("system", content)
    }
    pub fn user(content: impl Into<String>) -> ChatMessage {
        ChatMessage::new("user", content)
    }
    pub fn assistant(content: impl Into<String>) -> ChatMessage {
        ChatMessage::new("assistant", content)
    }
}
