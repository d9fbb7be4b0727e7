//! Response bodies in OpenAI's shapes: whole completions, stream chunks, usage and
//! log-probabilities, for chat (`chat.completion`) and legacy text completions
//! (`text_completion`).
//!
//! Chat replies of models that reason carry the reasoning beside the answer as llama-server
//! does: `message.reasoning_content`, and `delta.reasoning_content` in stream chunks.

use serde_json::{Map, Value, json};
use wllm::batch::{TokenLogprob, Usage};
use wllm::loaders::chat::{ToolCall, ToolCallFormat, answer_so_far, call_start, parse_tool_calls};
use wllm::{ReasoningDelta, ReasoningParser, StopReason};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Chat,
    Text,
}

/// A generated token's log-probability and its alternatives, as the batcher reports them.
pub type TokenLogprobs = (TokenLogprob, Vec<TokenLogprob>);

/// What every body of one response repeats.
pub struct Meta {
    pub kind: Kind,
    pub id: String,
    pub created: u64,
    pub model: String,
}

/// `finish_reason`: OpenAI has `stop` (a stop string or the model's end) and `length` (the
/// token limit, or here also a full context, which is a limit too).
pub fn finish_reason(r: &StopReason) -> &'static str {
    match r {
        StopReason::MaxTokens | StopReason::ContextFull => "length",
        StopReason::EndOfGeneration(_)
        | StopReason::StopString(_)
        | StopReason::Cancelled
        | StopReason::Constraint => "stop",
    }
}

pub fn usage(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": { "cached_tokens": u.cached_tokens },
    })
}

/// Identifies the build, as OpenAI's `system_fingerprint` identifies its backend config.
const FINGERPRINT: &str = concat!("wllm-", env!("CARGO_PKG_VERSION"));

impl Meta {
    fn envelope(&self, chunk: bool, choices: Value) -> Map<String, Value> {
        let object = match (self.kind, chunk) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Text, _) => "text_completion",
        };
        let mut m = Map::new();
        m.insert("id".into(), json!(self.id));
        m.insert("object".into(), json!(object));
        m.insert("created".into(), json!(self.created));
        m.insert("model".into(), json!(self.model));
        m.insert("system_fingerprint".into(), json!(FINGERPRINT));
        m.insert("choices".into(), choices);
        m
    }

    /// A whole (non-streamed) completion. `reply.reasoning` is left out when empty.
    pub fn full(
        &self,
        reply: &ReplyText,
        finish: &str,
        logprobs: Option<&[TokenLogprobs]>,
        u: &Usage,
    ) -> Value {
        let text = reply.content.as_str();
        let choice = match self.kind {
            Kind::Chat => {
                let mut message = json!({ "role": "assistant", "content": text });
                if !reply.reasoning.is_empty() {
                    message["reasoning_content"] = json!(reply.reasoning);
                }
                if !reply.tool_calls.is_empty() {
                    message["tool_calls"] = tool_calls_value(&reply.tool_calls, false);
                    if text.is_empty() {
                        message["content"] = Value::Null;
                    }
                }
                json!({
                    "index": 0,
                    "message": message,
                    "logprobs": logprobs.map(chat_logprobs),
                    "finish_reason": finish,
                })
            }
            Kind::Text => json!({
                "index": 0,
                "text": text,
                "logprobs": logprobs.map(|l| text_logprobs(l, 0)),
                "finish_reason": finish,
            }),
        };
        let mut m = self.envelope(false, json!([choice]));
        m.insert("usage".into(), usage(u));
        Value::Object(m)
    }

    /// The chat stream's first chunk: the role, before any text.
    pub fn role_chunk(&self) -> Value {
        let choice = json!({
            "index": 0,
            "delta": { "role": "assistant", "content": "" },
            "logprobs": null,
            "finish_reason": null,
        });
        Value::Object(self.envelope(true, json!([choice])))
    }

    /// A chunk of streamed text (with the log-probabilities of the tokens it came from), or
    /// the last chunk, which carries `finish_reason` and no text. `offset`: bytes streamed
    /// before, for the legacy format's `text_offset`. A chat delta holds the keys that have
    /// text: `content`, `reasoning_content` or both.
    pub fn chunk(
        &self,
        reply: &ReplyText,
        logprobs: Option<&[TokenLogprobs]>,
        offset: usize,
        finish: Option<&str>,
    ) -> Value {
        let text = reply.content.as_str();
        let choice = match self.kind {
            Kind::Chat => {
                let mut delta = json!({});
                if !reply.reasoning.is_empty() {
                    delta["reasoning_content"] = json!(reply.reasoning);
                }
                if !reply.tool_calls.is_empty() {
                    delta["tool_calls"] = tool_calls_value(&reply.tool_calls, true);
                }
                if !text.is_empty()
                    || (finish.is_none() && reply.reasoning.is_empty() && reply.tool_calls.is_empty())
                {
                    delta["content"] = json!(text);
                }
                json!({
                    "index": 0,
                    "delta": delta,
                    "logprobs": logprobs.map(chat_logprobs),
                    "finish_reason": finish,
                })
            }
            Kind::Text => json!({
                "index": 0,
                "text": text,
                "logprobs": logprobs.map(|l| text_logprobs(l, offset)),
                "finish_reason": finish,
            }),
        };
        Value::Object(self.envelope(true, json!([choice])))
    }

    /// `stream_options.include_usage`: a last chunk with no choices and the usage.
    pub fn usage_chunk(&self, u: &Usage) -> Value {
        let mut m = self.envelope(true, json!([]));
        m.insert("usage".into(), usage(u));
        Value::Object(m)
    }
}

/// Text of a reply, or of a piece of one: the answer and, for models that reason, the
/// reasoning apart.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplyText {
    pub content: String,
    pub reasoning: String,
    /// Tool calls read out of the answer (requests with `tools`).
    pub tool_calls: Vec<ToolCall>,
}

impl ReplyText {
    pub fn plain(text: &str) -> ReplyText {
        ReplyText { content: text.to_string(), ..Default::default() }
    }

    pub fn is_empty(&self) -> bool {
        self.content.is_empty() && self.reasoning.is_empty() && self.tool_calls.is_empty()
    }
}

impl From<ReasoningDelta> for ReplyText {
    fn from(d: ReasoningDelta) -> ReplyText {
        ReplyText { content: d.content, reasoning: d.reasoning, tool_calls: d.tool_calls }
    }
}

/// The `finish_reason` of a reply: `tool_calls` when it ended (not at the token limit) after
/// making calls.
pub fn reply_finish<'a>(reply: &ReplyText, reason: &'a str) -> &'a str {
    if reply.tool_calls.is_empty() || reason != "stop" { reason } else { "tool_calls" }
}

/// OpenAI's `tool_calls` array; streamed deltas carry each call whole, with its `index`.
fn tool_calls_value(calls: &[ToolCall], indexed: bool) -> Value {
    let one = |(i, c): (usize, &ToolCall)| {
        let mut v = json!({
            "id": c.id,
            "type": "function",
            "function": { "name": c.name, "arguments": c.arguments },
        });
        if indexed {
            v["index"] = json!(i);
        }
        v
    };
    Value::Array(calls.iter().enumerate().map(one).collect())
}

/// Splits generated text with the request's reasoning parser (chat requests to models that
/// reason), or passes it whole as the answer; with tools, holds back answer text that may be
/// a tool call and reads the calls out of it at the end.
#[derive(Debug, Default)]
pub struct ReplySplitter {
    reasoning: Option<ReasoningParser>,
    /// The model's call format and the answer text held back so far.
    tools: Option<(ToolCallFormat, String)>,
    /// Prefix of the calls' ids (the completion's id), and calls numbered so far.
    call_ids: String,
    calls: usize,
    /// Generic format: bytes of the decoded `response` answer sent so far.
    answer_sent: usize,
}

impl ReplySplitter {
    pub fn with_reasoning(mut self, parser: ReasoningParser) -> Self {
        self.reasoning = Some(parser);
        self
    }

    pub fn with_tools(mut self, format: ToolCallFormat, call_ids: &str) -> Self {
        self.tools = Some((format, String::new()));
        self.call_ids = call_ids.to_string();
        self
    }

    pub fn push(&mut self, text: &str) -> ReplyText {
        let mut reply = match &mut self.reasoning {
            Some(p) => p.push(text).into(),
            None => ReplyText::plain(text),
        };
        if let Some((format, held)) = &mut self.tools {
            held.push_str(&reply.content);
            if *format == ToolCallFormat::Generic {
                // The whole reply is held (it may be calls), but an answer is shown as it comes.
                let answer = answer_so_far(held).unwrap_or_default();
                reply.content = answer.get(self.answer_sent..).unwrap_or_default().to_string();
                self.answer_sent = self.answer_sent.max(answer.len());
            } else {
                let safe = call_start(*format, held).unwrap_or(held.len());
                reply.content = held.drain(..safe).collect();
            }
        }
        self.number(&mut reply);
        reply
    }

    /// Gives the reply's calls their ids, counting on from the calls sent before; calls the
    /// reasoning parser found (harmony) go only where tools were offered.
    fn number(&mut self, reply: &mut ReplyText) {
        if self.tools.is_none() {
            reply.tool_calls.clear();
        }
        for call in &mut reply.tool_calls {
            call.id = format!("{}call_{}", self.call_ids, self.calls);
            self.calls += 1;
        }
    }

    /// The last of the text, then whatever the parsers still held.
    pub fn finish(&mut self, text: &str) -> ReplyText {
        let mut reply: ReplyText = match &mut self.reasoning {
            Some(p) => {
                let mut d = p.push(text);
                d.extend(p.finish());
                d.into()
            }
            None => ReplyText::plain(text),
        };
        if let Some((format, held)) = &mut self.tools {
            held.push_str(&reply.content);
            let parsed = parse_tool_calls(*format, &std::mem::take(held), "");
            // What a streamed generic answer already showed is not sent again.
            reply.content = parsed.content.get(self.answer_sent..).unwrap_or_default().to_string();
            reply.tool_calls.extend(parsed.calls);
        }
        self.number(&mut reply);
        reply
    }
}

/// A token's text for JSON: its bytes as UTF-8, with replacement characters where the token
/// ends mid-character (`bytes` carries the exact bytes).
fn token_text(t: &TokenLogprob) -> String {
    String::from_utf8_lossy(&t.bytes).into_owned()
}

/// Chat's format: `{"content": [{token, logprob, bytes, top_logprobs: [...]}]}`.
fn chat_logprobs(entries: &[TokenLogprobs]) -> Value {
    let one = |t: &TokenLogprob| json!({ "token": token_text(t), "logprob": t.logprob, "bytes": t.bytes });
    let content: Vec<Value> = entries
        .iter()
        .map(|(chosen, top)| {
            let mut v = one(chosen);
            v["top_logprobs"] = Value::Array(top.iter().map(one).collect());
            v
        })
        .collect();
    json!({ "content": content, "refusal": null })
}

/// The legacy completions format: parallel arrays, and each position's alternatives as a map
/// from token text to log-probability.
fn text_logprobs(entries: &[TokenLogprobs], mut offset: usize) -> Value {
    let mut tokens = Vec::new();
    let mut token_logprobs = Vec::new();
    let mut top_logprobs = Vec::new();
    let mut text_offset = Vec::new();
    for (chosen, top) in entries {
        tokens.push(json!(token_text(chosen)));
        token_logprobs.push(json!(chosen.logprob));
        let mut alts = Map::new();
        for t in top {
            alts.insert(token_text(t), json!(t.logprob));
        }
        top_logprobs.push(Value::Object(alts));
        text_offset.push(json!(offset));
        offset += chosen.bytes.len();
    }
    json!({
        "tokens": tokens,
        "token_logprobs": token_logprobs,
        "top_logprobs": top_logprobs,
        "text_offset": text_offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(kind: Kind) -> Meta {
        Meta { kind, id: "x-1".into(), created: 7, model: "m".into() }
    }

    fn lp(token: u32, text: &str, logprob: f32) -> TokenLogprob {
        TokenLogprob { token, bytes: text.as_bytes().to_vec(), logprob }
    }

    #[test]
    fn shapes() {
        let u = Usage { prompt_tokens: 5, completion_tokens: 2, cached_tokens: 3 };
        let lps = vec![(lp(1, "a", -0.5), vec![lp(1, "a", -0.5), lp(2, "b", -1.5)])];
        let v = meta(Kind::Chat).full(&ReplyText::plain("hi"), "stop", Some(&lps), &u);
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["choices"][0]["message"]["content"], "hi");
        assert_eq!(v["usage"]["total_tokens"], 7);
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 3);
        assert_eq!(v["choices"][0]["logprobs"]["content"][0]["top_logprobs"][1]["token"], "b");
        assert_eq!(v["choices"][0]["logprobs"]["content"][0]["bytes"], json!([97]));
        let v = meta(Kind::Text).full(&ReplyText::plain("hi"), "length", Some(&lps), &u);
        assert_eq!(v["object"], "text_completion");
        assert_eq!(v["choices"][0]["logprobs"]["top_logprobs"][0]["b"], -1.5);
        let c = meta(Kind::Chat).chunk(&ReplyText::default(), None, 0, Some("stop"));
        assert_eq!(c["choices"][0]["delta"], json!({}));
        assert_eq!(meta(Kind::Chat).role_chunk()["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(meta(Kind::Chat).usage_chunk(&u)["choices"], json!([]));
        assert!(v["choices"][0]["message"].get("reasoning_content").is_none());
    }

    /// A gpt-oss reply as the batcher streams it, token by token (harmony markers are single
    /// tokens), assembled into a whole message and into stream deltas.
    const PIECES: &[&str] = &[
        "<|channel|>",
        "analysis",
        "<|message|>",
        "User",
        " greets",
        ".",
        "<|end|>",
        "<|start|>",
        "assistant",
        "<|channel|>",
        "final",
        "<|message|>",
        "Hello",
        "!",
    ];

    fn harmony() -> ReplySplitter {
        ReplySplitter::default().with_reasoning(ReasoningParser::new(wllm::ReasoningFormat::Harmony))
    }

    #[test]
    fn reasoning_content_beside_content() {
        let u = Usage { prompt_tokens: 5, completion_tokens: 14, cached_tokens: 0 };
        let whole = harmony().finish(&PIECES.concat());
        let v = meta(Kind::Chat).full(&whole, "stop", None, &u);
        let message = &v["choices"][0]["message"];
        assert_eq!(message["content"], "Hello!");
        assert_eq!(message["reasoning_content"], "User greets.");

        let mut splitter = harmony();
        let mut deltas: Vec<Value> = PIECES
            .iter()
            .map(|p| splitter.push(p))
            .filter(|piece| !piece.is_empty())
            .map(|piece| meta(Kind::Chat).chunk(&piece, None, 0, None)["choices"][0]["delta"].clone())
            .collect();
        let rest = splitter.finish("");
        assert!(rest.is_empty(), "{rest:?}");
        deltas.push(meta(Kind::Chat).chunk(&rest, None, 0, Some("stop"))["choices"][0]["delta"].clone());
        let want = [
            json!({"reasoning_content": "User"}),
            json!({"reasoning_content": " greets"}),
            json!({"reasoning_content": "."}),
            json!({"content": "Hello"}),
            json!({"content": "!"}),
            json!({}),
        ];
        assert_eq!(deltas, want);

        // Without a parser (a model that does not reason) the markers stay text.
        let plain = ReplySplitter::default().finish("<|channel|>x");
        assert_eq!(plain, ReplyText::plain("<|channel|>x"));
    }

    #[test]
    fn generic_answers_stream_and_generic_calls_come_whole() {
        let answer = ["{\"resp", "onse\": \"Hel", "lo, \\\"A", "nna\\\"!\"}"];
        let mut splitter = ReplySplitter::default().with_tools(ToolCallFormat::Generic, "c-");
        let mut shown: Vec<String> = answer.iter().map(|p| splitter.push(p).content).collect();
        shown.push(splitter.finish("").content);
        assert_eq!(shown, ["", "Hel", "lo, \"A", "nna\"!", ""]);
        let whole =
            ReplySplitter::default().with_tools(ToolCallFormat::Generic, "c-").finish(&answer.concat());
        assert_eq!(whole.content, "Hello, \"Anna\"!");
        let call = ["{\"tool_call\": {\"name\": \"f\", ", "\"arguments\": {}}}"];
        let mut splitter = ReplySplitter::default().with_tools(ToolCallFormat::Generic, "c-");
        assert_eq!(splitter.push(call[0]).content, "");
        assert_eq!(splitter.push(call[1]).content, "");
        let rest = splitter.finish("");
        assert_eq!((rest.content.as_str(), rest.tool_calls.len()), ("", 1));
    }

    #[test]
    fn tool_calls_are_held_while_streaming_and_sent_whole() {
        let mut splitter = ReplySplitter::default().with_tools(ToolCallFormat::Hermes, "c-");
        let pieces =
            ["Checking", ". <tool", "_call>\n{\"name\": \"f\", ", "\"arguments\": {\"a\": 1}}\n</tool_call>"];
        let shown: String = pieces.iter().map(|p| splitter.push(p).content).collect();
        assert_eq!(shown, "Checking. ");
        let rest = splitter.finish("");
        assert_eq!(rest.tool_calls.len(), 1);
        assert_eq!(reply_finish(&rest, "stop"), "tool_calls");
        let delta = &meta(Kind::Chat).chunk(&rest, None, 0, None)["choices"][0]["delta"];
        assert_eq!(delta["tool_calls"][0]["index"], 0);
        assert_eq!(delta["tool_calls"][0]["id"], "c-call_0");
        assert_eq!(delta["tool_calls"][0]["function"]["arguments"], r#"{"a":1}"#);
        assert!(delta.get("content").is_none(), "{delta}");
        let whole =
            ReplySplitter::default().with_tools(ToolCallFormat::Hermes, "c-").finish(&pieces.concat());
        let u = Usage { prompt_tokens: 1, completion_tokens: 1, cached_tokens: 0 };
        let message = &meta(Kind::Chat).full(&whole, "tool_calls", None, &u)["choices"][0]["message"];
        assert_eq!(message["content"], "Checking.");
        assert_eq!(message["tool_calls"][0]["function"]["name"], "f");
    }
}
