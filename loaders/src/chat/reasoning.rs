//! Reasoning in generated replies: which markup a model uses for it, how much of it to ask
//! for, and an incremental parser that splits a streamed reply into reasoning and answer.
//!
//! Two markups are known:
//! - OpenAI's harmony (gpt-oss): each message is `<|start|>ROLE<|channel|>CHANNEL<|message|>TEXT`
//!   closed by `<|end|>`, `<|return|>` or `<|call|>`. The `analysis` channel is reasoning, `final`
//!   is the answer. The generation prompt ends at `<|start|>assistant`, so a reply begins inside
//!   a header (`<|channel|>analysis<|message|>...`).
//! - `<think>...</think>` before the answer (Qwen3, DeepSeek-R1, SmolLM3). Some templates open
//!   `<think>` in the prompt, so the reply begins inside the reasoning.
//!
//! Pieces may split a marker anywhere (`<|chan` + `nel|>`): text that could still become a
//! marker is held back until the next piece decides it. A stream that ends there (a reply cut
//! off by the token limit) ends with part of a marker, which is shown in neither part; the
//! parser's [`raw`](ReasoningParser::raw) text keeps it.

use std::str::FromStr;

use super::ToolCall;

/// How a model's replies mark their reasoning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ReasoningFormat {
    /// No markup the parser knows: the whole reply is the answer.
    #[default]
    None,
    /// OpenAI harmony channels (gpt-oss).
    Harmony,
    /// `<think>...</think>` ahead of the answer (Qwen3, DeepSeek-R1).
    Think,
}

impl ReasoningFormat {
    /// The format a chat template's replies use, judged from the markers it writes: a template
    /// that builds harmony messages names `<|channel|>`, one that strips or opens thinking
    /// names `<think>`.
    pub fn detect(template_source: &str) -> ReasoningFormat {
        if template_source.contains(HARMONY_CHANNEL) {
            ReasoningFormat::Harmony
        } else if template_source.contains(THINK_OPEN) {
            ReasoningFormat::Think
        } else {
            ReasoningFormat::None
        }
    }

    /// A stable lowercase name: `none`, `harmony`, `think`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ReasoningFormat::None => "none",
            ReasoningFormat::Harmony => "harmony",
            ReasoningFormat::Think => "think",
        }
    }
}

/// How much a model should reason, for templates that take a `reasoning_effort` variable
/// (gpt-oss writes it into the system message as `Reasoning: low|medium|high`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReasoningEffort {
    Low,
    Medium,
    High,
}

impl ReasoningEffort {
    /// The word templates expect: `low`, `medium`, `high`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ReasoningEffort::Low => "low",
            ReasoningEffort::Medium => "medium",
            ReasoningEffort::High => "high",
        }
    }
}

impl std::fmt::Display for ReasoningEffort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reasoning effort that is not `low`, `medium` or `high`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown reasoning effort {0:?} (expected low, medium or high)")]
pub struct ParseEffortError(pub String);

impl FromStr for ReasoningEffort {
    type Err = ParseEffortError;

    fn from_str(s: &str) -> Result<ReasoningEffort, ParseEffortError> {
        match s {
            "low" => Ok(ReasoningEffort::Low),
            "medium" => Ok(ReasoningEffort::Medium),
            "high" => Ok(ReasoningEffort::High),
            _ => Err(ParseEffortError(s.to_string())),
        }
    }
}

/// Text a [`ReasoningParser`] released from one piece: the reasoning and the answer apart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReasoningDelta {
    pub reasoning: String,
    /// The answer: what a user reads as the reply.
    pub content: String,
    /// Harmony: tool calls whose message ended (commentary messages to `functions.NAME`),
    /// with empty ids.
    pub tool_calls: Vec<ToolCall>,
}

impl ReasoningDelta {
    pub fn is_empty(&self) -> bool {
        self.reasoning.is_empty() && self.content.is_empty() && self.tool_calls.is_empty()
    }

    /// Appends another delta's text and calls to this one.
    pub fn extend(&mut self, other: ReasoningDelta) {
        self.reasoning.push_str(&other.reasoning);
        self.content.push_str(&other.content);
        self.tool_calls.extend(other.tool_calls);
    }
}

const HARMONY_START: &str = "<|start|>";
const HARMONY_CHANNEL: &str = "<|channel|>";
const HARMONY_MESSAGE: &str = "<|message|>";
const HARMONY_END: &str = "<|end|>";
const HARMONY_RETURN: &str = "<|return|>";
const HARMONY_CALL: &str = "<|call|>";
const HARMONY_CONSTRAIN: &str = "<|constrain|>";
const HARMONY_MARKERS: &[&str] = &[
    HARMONY_START,
    HARMONY_CHANNEL,
    HARMONY_MESSAGE,
    HARMONY_END,
    HARMONY_RETURN,
    HARMONY_CALL,
    HARMONY_CONSTRAIN,
];
const THINK_OPEN: &str = "<think>";
const THINK_CLOSE: &str = "</think>";

/// A header that grows this long without a single marker is not a harmony header: the model
/// is writing plain text, which is then kept as the answer rather than swallowed.
const MAX_BARE_HEADER: usize = 256;

/// Where a harmony message's text goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Channel {
    Analysis,
    Final,
    /// Preambles (no recipient) are written for the user; tool calls (`to=...`) are not the
    /// answer, so until tool calls are parsed their arguments are shown as reasoning.
    Commentary {
        to_tool: bool,
    },
}

impl Channel {
    /// The channel a header (`assistant to=functions.f<|channel|>commentary json`) names; a
    /// header without one (or an unknown name) is taken as the answer.
    fn of_header(header: &str) -> Channel {
        let to_tool = header.contains("to=");
        let Some(at) = header.find(HARMONY_CHANNEL) else { return Channel::Final };
        let rest = &header[at + HARMONY_CHANNEL.len()..];
        let end = rest.find(|c: char| c.is_whitespace() || c == '<').unwrap_or(rest.len());
        match &rest[..end] {
            "analysis" => Channel::Analysis,
            "commentary" => Channel::Commentary { to_tool },
            _ => Channel::Final,
        }
    }

    fn is_reasoning(self) -> bool {
        matches!(self, Channel::Analysis)
    }
}

/// The function a harmony header addresses (`assistant to=functions.get_weather<|channel|>…`).
fn recipient(header: &str) -> String {
    let Some(at) = header.find("to=") else { return String::new() };
    let rest = &header[at + 3..];
    let end = rest.find(|c: char| c.is_whitespace() || c == '<').unwrap_or(rest.len());
    let to = &rest[..end];
    to.strip_prefix("functions.").unwrap_or(to).to_string()
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Everything is the answer.
    Plain,
    /// Harmony: reading a message header up to `<|message|>`.
    Header(String),
    /// Harmony: inside a message's text.
    Body(Channel),
    /// Harmony: after a message closed, before the next `<|start|>`.
    Between,
    /// Think: nothing but whitespace so far; a `<think>` may still come.
    ThinkStart,
    /// Think: inside `<think>`.
    Thinking,
    /// Think: after `</think>` (or with no `<think>` at all).
    Answer,
}

/// Splits a streamed reply into reasoning and answer, one piece at a time.
///
/// ```
/// use wllm_loaders::chat::{ReasoningFormat, ReasoningParser};
///
/// let mut p = ReasoningParser::new(ReasoningFormat::Harmony);
/// let mut all = p.push("<|channel|>analysis<|message|>Say hi.<|end|><|start|>assistant<|chan");
/// all.extend(p.push("nel|>final<|message|>Hi!"));
/// all.extend(p.finish());
/// assert_eq!((all.reasoning.as_str(), all.content.as_str()), ("Say hi.", "Hi!"));
/// ```
#[derive(Debug, Clone)]
pub struct ReasoningParser {
    format: ReasoningFormat,
    state: State,
    /// Received text not yet released: it may be the start of a marker.
    pending: String,
    /// Think: whitespace at the end of the reasoning so far, dropped if `</think>` follows.
    trailing_ws: String,
    /// Think: nothing of the current part has been released yet (leading whitespace is
    /// dropped, as the tags are usually followed by newlines).
    part_start: bool,
    /// Every piece fed, markers included.
    raw: String,
    /// Harmony: the part of the first header the prompt wrote (`assistant`), which names the
    /// recipient or channel as much as the generated part does but is never released.
    prompt_header: String,
    /// Harmony: the tool call being written (function, arguments so far).
    call: Option<(String, String)>,
}

impl ReasoningParser {
    /// A parser for a reply that starts right after the generation prompt most templates
    /// write (`<|start|>assistant` for harmony, nothing for `<think>`).
    pub fn new(format: ReasoningFormat) -> ReasoningParser {
        let state = match format {
            ReasoningFormat::None => State::Plain,
            ReasoningFormat::Harmony => State::Header(String::new()),
            ReasoningFormat::Think => State::ThinkStart,
        };
        ReasoningParser {
            format,
            state,
            pending: String::new(),
            trailing_ws: String::new(),
            part_start: true,
            prompt_header: String::new(),
            raw: String::new(),
            call: None,
        }
    }

    /// A parser for the reply to `prompt` (the rendered text): a prompt that ends inside
    /// `<think>` (DeepSeek-R1's template, Qwen3's with thinking forced on) or inside a harmony
    /// header or message starts the reply there.
    pub fn for_prompt(format: ReasoningFormat, prompt: &str) -> ReasoningParser {
        let mut p = ReasoningParser::new(format);
        match format {
            ReasoningFormat::None => {}
            ReasoningFormat::Think => {
                if prompt.trim_end().ends_with(THINK_OPEN) {
                    p.state = State::Thinking;
                }
            }
            ReasoningFormat::Harmony => {
                let tail = prompt.rfind(HARMONY_START).map_or("", |at| &prompt[at + HARMONY_START.len()..]);
                let closed = [HARMONY_END, HARMONY_RETURN, HARMONY_CALL].iter().any(|m| tail.contains(m));
                p.state = match tail.find(HARMONY_MESSAGE) {
                    _ if closed => State::Between,
                    Some(at) => p.enter_body(&tail[..at]),
                    None => {
                        p.prompt_header = tail.to_string();
                        State::Header(String::new())
                    }
                };
            }
        }
        p
    }

    /// Everything fed so far, markers included.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    pub fn format(&self) -> ReasoningFormat {
        self.format
    }

    /// Whether text arriving now would be reasoning (for a caller that shows a placeholder).
    pub fn in_reasoning(&self) -> bool {
        match &self.state {
            State::Body(c) => c.is_reasoning(),
            State::Thinking => true,
            _ => false,
        }
    }

    /// Feeds the next piece of generated text; returns what can be released already.
    pub fn push(&mut self, piece: &str) -> ReasoningDelta {
        self.raw.push_str(piece);
        self.pending.push_str(piece);
        let mut out = ReasoningDelta::default();
        while self.step(&mut out, false) {}
        out
    }

    /// Ends the stream and releases what was held back, except the start of a marker cut off
    /// at the very end. A harmony header cut off before `<|message|>` carries no message text
    /// and is dropped too, unless no marker was ever seen in it (plain text from a model that
    /// did not write harmony), which is kept as the answer. [`raw`](Self::raw) keeps both.
    pub fn finish(&mut self) -> ReasoningDelta {
        let mut out = ReasoningDelta::default();
        while self.step(&mut out, true) {}
        // A call cut off by the token limit is still handed over (its arguments incomplete).
        self.end_call(&mut out);
        if let State::Header(h) = &mut self.state
            && !h.contains("<|")
        {
            out.content.push_str(h);
            h.clear();
        }
        self.trailing_ws.clear();
        out
    }

    /// Processes what is pending once; false when nothing more can be done now.
    fn step(&mut self, out: &mut ReasoningDelta, at_end: bool) -> bool {
        if self.pending.is_empty() {
            return false;
        }
        match self.state.clone() {
            State::Plain => {
                out.content.push_str(&std::mem::take(&mut self.pending));
                false
            }
            State::Header(mut header) => {
                header.push_str(&std::mem::take(&mut self.pending));
                match header.find(HARMONY_MESSAGE) {
                    Some(at) => {
                        self.pending = header[at + HARMONY_MESSAGE.len()..].to_string();
                        let prompt_part = std::mem::take(&mut self.prompt_header);
                        self.state = self.enter_body(&(prompt_part + &header[..at]));
                        true
                    }
                    None if header.len() > MAX_BARE_HEADER && !header.contains("<|") => {
                        self.prompt_header.clear();
                        self.pending = header;
                        self.state = State::Body(Channel::Final);
                        true
                    }
                    None => {
                        self.state = State::Header(header);
                        false
                    }
                }
            }
            State::Body(channel) => {
                let (text, marker) = self.take_until(HARMONY_MARKERS, at_end);
                match &mut self.call {
                    Some((_, args)) => args.push_str(&text),
                    None => self.release(out, channel.is_reasoning(), &text),
                }
                if marker.is_some() || at_end {
                    self.end_call(out);
                }
                match marker {
                    Some(HARMONY_START) => self.state = State::Header(String::new()),
                    // A model that skips `<|end|><|start|>assistant` still starts a message.
                    Some(HARMONY_CHANNEL) => self.state = State::Header(HARMONY_CHANNEL.to_string()),
                    Some(HARMONY_END | HARMONY_RETURN | HARMONY_CALL) => self.state = State::Between,
                    _ => {}
                }
                marker.is_some()
            }
            State::Between => {
                let (text, marker) = self.take_until(HARMONY_MARKERS, at_end);
                // Text outside any message is not expected; keep it where a user sees it.
                out.content.push_str(&text);
                match marker {
                    Some(HARMONY_START) => self.state = State::Header(String::new()),
                    Some(HARMONY_CHANNEL) => self.state = State::Header(HARMONY_CHANNEL.to_string()),
                    _ => {}
                }
                marker.is_some()
            }
            State::ThinkStart => {
                let lead = self.pending.trim_start();
                if let Some(rest) = lead.strip_prefix(THINK_OPEN) {
                    self.pending = rest.to_string();
                    self.state = State::Thinking;
                    self.part_start = true;
                    true
                } else if THINK_OPEN.starts_with(lead) {
                    if at_end {
                        self.pending.clear();
                    }
                    false
                } else {
                    self.state = State::Answer;
                    true
                }
            }
            State::Thinking => {
                let (text, marker) = self.take_until(&[THINK_CLOSE], at_end);
                self.release(out, true, &text);
                if marker.is_some() {
                    self.trailing_ws.clear();
                    self.state = State::Answer;
                    self.part_start = true;
                }
                marker.is_some()
            }
            State::Answer => {
                let text = std::mem::take(&mut self.pending);
                self.release(out, false, &text);
                false
            }
        }
    }

    /// The state for a message with this header: a commentary message to a function starts a
    /// tool call, whose text is its arguments.
    fn enter_body(&mut self, header: &str) -> State {
        let channel = Channel::of_header(header);
        if channel == (Channel::Commentary { to_tool: true }) {
            self.call = Some((recipient(header), String::new()));
        }
        State::Body(channel)
    }

    /// Hands over the tool call being written, if any (its message ended).
    fn end_call(&mut self, out: &mut ReasoningDelta) {
        if let Some((name, arguments)) = self.call.take() {
            out.tool_calls.push(ToolCall {
                id: String::new(),
                name,
                arguments: arguments.trim().to_string(),
            });
        }
    }

    /// Splits off the pending text before the first of `markers`, consuming the marker. With no
    /// marker, everything is taken except an end that could still grow into one, which is kept
    /// for the next piece, or dropped if the stream has ended.
    fn take_until(&mut self, markers: &[&'static str], at_end: bool) -> (String, Option<&'static str>) {
        let first = markers.iter().filter_map(|m| self.pending.find(m).map(|at| (at, *m))).min();
        if let Some((at, marker)) = first {
            let text = self.pending[..at].to_string();
            self.pending.drain(..at + marker.len());
            return (text, Some(marker));
        }
        let keep = partial_marker_len(&self.pending, markers);
        let text = self.pending[..self.pending.len() - keep].to_string();
        self.pending.drain(..text.len());
        if at_end {
            self.pending.clear();
        }
        (text, None)
    }

    /// Adds released text to the reasoning or the answer. For `<think>` the whitespace that
    /// pads the tags is dropped: at the start of each part, and at the end of the reasoning.
    fn release(&mut self, out: &mut ReasoningDelta, reasoning: bool, text: &str) {
        if self.format != ReasoningFormat::Think {
            let to = if reasoning { &mut out.reasoning } else { &mut out.content };
            to.push_str(text);
            return;
        }
        let mut text = text;
        if self.part_start {
            text = text.trim_start();
            if text.is_empty() {
                return;
            }
            self.part_start = false;
        }
        if reasoning {
            let body = text.trim_end();
            if !body.is_empty() {
                out.reasoning.push_str(&std::mem::take(&mut self.trailing_ws));
                out.reasoning.push_str(body);
            }
            self.trailing_ws.push_str(&text[body.len()..]);
        } else {
            out.content.push_str(text);
        }
    }
}

/// Length of the longest end of `text` that is the start of one of `markers` (but not all of
/// it: a whole marker would have been found).
fn partial_marker_len(text: &str, markers: &[&str]) -> usize {
    let longest = markers.iter().map(|m| m.len()).max().unwrap_or(0);
    let from = text.len().saturating_sub(longest.saturating_sub(1));
    (from..text.len())
        .filter(|&i| text.is_char_boundary(i))
        .find(|&i| markers.iter().any(|m| m.starts_with(&text[i..])))
        .map_or(0, |i| text.len() - i)
}
