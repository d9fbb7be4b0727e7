//! The request bodies of `/v1/chat/completions` and `/v1/completions`, and their checks.
//!
//! One struct serves both endpoints: they share every sampling field, and each endpoint checks
//! the fields it needs (`messages` or `prompt`). Fields whose type depends on the endpoint
//! (`logprobs`: a bool for chat, a count for completions) or that take several shapes
//! (`prompt`, `stop`, message `content`) are read as JSON values and checked by hand, so a
//! refusal names the field and what it allows rather than an untagged enum's "did not match".

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use wllm::engine::sampling::LogitBias;
use wllm::loaders::chat::ParseEffortError;
use wllm::{ChatMessage, Constraint, ReasoningEffort, SamplerConfig};

use super::errors::ApiError;
use super::tools::{MessageCall, Tools, message_calls};

#[derive(Deserialize, Default, Debug)]
pub struct Request {
    pub model: Option<String>,
    pub messages: Option<Vec<Message>>,
    pub prompt: Option<Value>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub min_p: Option<f64>,
    pub repeat_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub seed: Option<i64>,
    pub stop: Option<Value>,
    pub logit_bias: Option<BTreeMap<String, f64>>,
    pub logprobs: Option<Value>,
    pub top_logprobs: Option<i64>,
    pub n: Option<i64>,
    pub echo: Option<bool>,
    pub best_of: Option<i64>,
    pub suffix: Option<String>,
    pub tools: Option<Value>,
    pub tool_choice: Option<Value>,
    pub parallel_tool_calls: Option<bool>,
    /// llama-server's: keep generating past end-of-generation tokens (benchmarks use it for
    /// replies of a fixed length).
    pub ignore_eos: Option<bool>,
    /// `low`, `medium` or `high`, for chat templates that read it (gpt-oss).
    pub reasoning_effort: Option<String>,
    /// `{"type": "text" | "json_object" | "json_schema", "json_schema": {"schema": ...}}`.
    pub response_format: Option<Value>,
    /// llama-server's: a GBNF grammar the output must match.
    pub grammar: Option<String>,
    /// llama-server's: a JSON schema the output must match.
    pub json_schema: Option<Value>,
}

#[derive(Deserialize, Default, Debug)]
pub struct StreamOptions {
    pub include_usage: Option<bool>,
}

#[derive(Deserialize, Debug)]
pub struct Message {
    pub role: String,
    /// A string, an array of `{"type": "text", "text": ...}` parts, or null (an assistant turn
    /// that only called tools).
    pub content: Option<Value>,
    /// An assistant turn's calls.
    pub tool_calls: Option<Vec<MessageCall>>,
    /// A tool turn's answer: the call it answers, and the tool.
    pub tool_call_id: Option<String>,
    pub name: Option<String>,
}

/// What both endpoints take from a request, checked.
#[derive(Debug)]
pub struct Params {
    pub sampling: SamplerConfig,
    pub max_tokens: Option<usize>,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
    /// Alternatives per token when log-probabilities were asked for.
    pub logprobs: Option<usize>,
    pub ignore_eos: bool,
    pub reasoning_effort: Option<ReasoningEffort>,
    /// What the output must match, and the field it came from.
    pub constraint: Option<(Constraint, &'static str)>,
    /// The tools offered (chat), unless `tool_choice` is `none`.
    pub tools: Option<Tools>,
}

/// OpenAI's `response_format`: `text` (no constraint), `json_object`, or `json_schema` with
/// its schema in `json_schema.schema`.
fn response_format(v: &Value) -> Result<Option<Constraint>, ApiError> {
    let field = "response_format";
    let kind = v.get("type").and_then(Value::as_str);
    match kind {
        Some("text") => Ok(None),
        // llama-server takes a schema here too.
        Some("json_object") => Ok(Some(match v.get("schema") {
            Some(schema) => Constraint::JsonSchema(schema.clone()),
            None => Constraint::JsonObject,
        })),
        Some("json_schema") => {
            let schema = v.get("json_schema").and_then(|j| j.get("schema")).ok_or_else(|| {
                ApiError::field(
                    "response_format.json_schema.schema",
                    "response_format.json_schema.schema is required for type json_schema",
                )
            })?;
            Ok(Some(Constraint::JsonSchema(schema.clone())))
        }
        _ => Err(ApiError::field(
            field,
            format!(
                "response_format.type is {}: expected \"text\", \"json_object\" or \"json_schema\"",
                v.get("type").map_or("missing".into(), Value::to_string)
            ),
        )),
    }
}

/// A completion prompt: text to tokenize, or token ids.
#[derive(Debug, PartialEq)]
pub enum Prompt {
    Text(String),
    Tokens(Vec<u32>),
}

/// Most stop strings a request may give (OpenAI allows 4; llama-server any number).
const MAX_STOP: usize = 16;
/// Most alternatives per token (OpenAI's limit for `top_logprobs`).
const MAX_TOP_LOGPROBS: i64 = 20;

/// Parses a completion request, naming the field a type error is in.
pub fn parse(body: &[u8]) -> Result<Request, ApiError> {
    parse_body(body)
}

/// Parses a JSON body into `T`, naming the field a type error is in.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("the request body is empty: expected a JSON object"));
    }
    // Syntax first, then the shape: serde would read a struct from an array, field by field.
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request(format!("expected a JSON object, not {}", short(&value))));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let msg = without_position(&e.into_inner().to_string());
        match msg.strip_prefix("missing field `").and_then(|m| m.split('`').next()) {
            Some(field) => {
                let field = if path == "." { field.to_string() } else { format!("{path}.{field}") };
                ApiError::field(&field, format!("{field} is required"))
            }
            None if path == "." => ApiError::bad_request(msg),
            None => ApiError::field(&path, format!("{path}: {msg}")),
        }
    })
}

/// serde_json's message without its " at line 1 column 20" (the field is named instead).
fn without_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// A number field within `lo..=hi`, or its default.
fn number(name: &str, v: Option<f64>, lo: f64, hi: f64, default: f32) -> Result<f32, ApiError> {
    match v {
        None => Ok(default),
        Some(x) if x.is_finite() && x >= lo && x <= hi => Ok(x as f32),
        Some(x) => Err(ApiError::field(name, format!("{name} is {x}: expected a number from {lo} to {hi}"))),
    }
}

/// A whole-number field within `lo..=hi`.
fn whole(name: &str, v: Option<i64>, lo: i64, hi: i64) -> Result<Option<i64>, ApiError> {
    match v {
        Some(x) if x < lo || x > hi => {
            let range = if hi == i64::MAX { format!("{lo} or more") } else { format!("from {lo} to {hi}") };
            Err(ApiError::field(name, format!("{name} is {x}: expected a whole number {range}")))
        }
        v => Ok(v),
    }
}

impl Request {
    /// Checks the fields both endpoints share and maps them onto the sampler. Absent fields
    /// take OpenAI's defaults (temperature 1, top_p 1, no top-k, no min-p), not llama.cpp's.
    /// `chat` picks how `logprobs` is read: a bool with `top_logprobs` (chat) or a count.
    pub fn params(&self, chat: bool, n_vocab: u32) -> Result<Params, ApiError> {
        if let Some(n) = self.n
            && n != 1
        {
            return Err(ApiError::field(
                "n",
                format!("n is {n}: this server makes one choice per request (n = 1)"),
            ));
        }
        if let Some(b) = self.best_of
            && b != 1
        {
            return Err(ApiError::field("best_of", format!("best_of is {b}: only 1 is supported")));
        }
        if self.echo == Some(true) {
            return Err(ApiError::field("echo", "echo is not supported"));
        }
        if self.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err(ApiError::field("suffix", "suffix (fill-in-the-middle) is not supported"));
        }
        let tools =
            super::tools::tools(self.tools.as_ref(), self.tool_choice.as_ref(), self.parallel_tool_calls)?;
        if tools.is_some() && !chat {
            return Err(ApiError::field("tools", "tools are for /v1/chat/completions"));
        }
        let max_tokens = match (self.max_completion_tokens, self.max_tokens) {
            (Some(m), _) => whole("max_completion_tokens", Some(m), 1, i64::MAX)?,
            (None, m) => whole("max_tokens", m, 1, i64::MAX)?,
        }
        .map(|m| usize::try_from(m).unwrap_or(usize::MAX));
        let temp = number("temperature", self.temperature, 0.0, 2.0, 1.0)?;
        let top_p = number("top_p", self.top_p, 0.0, 1.0, 1.0)?;
        let min_p = number("min_p", self.min_p, 0.0, 1.0, 0.0)?;
        let repeat_penalty = number("repeat_penalty", self.repeat_penalty, 0.0, f64::MAX, 1.0)?;
        if repeat_penalty <= 0.0 || !repeat_penalty.is_finite() {
            return Err(ApiError::field("repeat_penalty", "repeat_penalty must be greater than 0"));
        }
        let presence_penalty = number("presence_penalty", self.presence_penalty, -2.0, 2.0, 0.0)?;
        let frequency_penalty = number("frequency_penalty", self.frequency_penalty, -2.0, 2.0, 0.0)?;
        let top_k = whole("top_k", self.top_k, 0, u32::MAX as i64)?.unwrap_or(0) as usize;
        let mut logit_bias = Vec::new();
        for (key, &bias) in self.logit_bias.iter().flatten() {
            let param = format!("logit_bias.{key}");
            let token = key.trim().parse::<u32>().ok().filter(|&t| t < n_vocab).ok_or_else(|| {
                ApiError::field(
                    &param,
                    format!("logit_bias key {key:?}: expected a token id below {n_vocab}"),
                )
            })?;
            let bias = number(&param, Some(bias), -100.0, 100.0, 0.0)?;
            logit_bias.push(LogitBias { token, bias });
        }
        let sampling = SamplerConfig {
            temp,
            top_k,
            top_p,
            min_p,
            typical_p: 1.0,
            repeat_penalty,
            frequency_penalty,
            presence_penalty,
            // A seed is a bit pattern: negative ones are as good as any.
            seed: self.seed.map(|s| s as u64),
            logit_bias,
            ..SamplerConfig::default()
        };
        let stream = self.stream.unwrap_or(false);
        let include_usage = self.stream_options.as_ref().and_then(|o| o.include_usage).unwrap_or(false);
        if self.stream_options.is_some() && !stream {
            return Err(ApiError::field(
                "stream_options",
                "stream_options is only allowed with stream: true",
            ));
        }
        let logprobs = if chat { self.chat_logprobs()? } else { self.completion_logprobs()? };
        let ignore_eos = self.ignore_eos.unwrap_or(false);
        let stop = self.stop_strings()?;
        let reasoning_effort = self
            .reasoning_effort
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e: ParseEffortError| ApiError::field("reasoning_effort", e.to_string()))?;
        let constraint = self.constraint()?;
        Ok(Params {
            sampling,
            max_tokens,
            stop,
            stream,
            include_usage,
            logprobs,
            ignore_eos,
            reasoning_effort,
            constraint,
            tools,
        })
    }

    /// The output constraint of `response_format`, `grammar` or `json_schema` (one at most).
    fn constraint(&self) -> Result<Option<(Constraint, &'static str)>, ApiError> {
        let format = self.response_format.as_ref().map(response_format).transpose()?.flatten();
        let given = [
            format.map(|c| (c, "response_format")),
            self.grammar.clone().map(|g| (Constraint::Gbnf(g), "grammar")),
            self.json_schema.clone().map(|s| (Constraint::JsonSchema(s), "json_schema")),
        ];
        let mut given = given.into_iter().flatten();
        let first = given.next();
        if let Some((_, field)) = given.next() {
            return Err(ApiError::field(
                field,
                format!("{field}: give one of response_format, grammar and json_schema"),
            ));
        }
        Ok(first)
    }

    fn chat_logprobs(&self) -> Result<Option<usize>, ApiError> {
        let on = match &self.logprobs {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(v) => {
                return Err(ApiError::field("logprobs", format!("logprobs is {v}: expected true or false")));
            }
        };
        let top = whole("top_logprobs", self.top_logprobs, 0, MAX_TOP_LOGPROBS)?;
        match (on, top) {
            (false, Some(_)) => Err(ApiError::field("top_logprobs", "top_logprobs needs logprobs: true")),
            (false, None) => Ok(None),
            (true, top) => Ok(Some(top.unwrap_or(0) as usize)),
        }
    }

    fn completion_logprobs(&self) -> Result<Option<usize>, ApiError> {
        match &self.logprobs {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(k) => Ok(whole("logprobs", Some(k), 0, MAX_TOP_LOGPROBS)?.map(|k| k as usize)),
                None => Err(ApiError::field(
                    "logprobs",
                    format!("logprobs is {n}: expected a whole number from 0 to {MAX_TOP_LOGPROBS}"),
                )),
            },
            Some(v) => Err(ApiError::field(
                "logprobs",
                format!("logprobs is {v}: expected a whole number from 0 to {MAX_TOP_LOGPROBS}"),
            )),
        }
    }

    /// `stop`: a string or an array of strings. Empty strings are dropped (they would stop
    /// before the first token).
    fn stop_strings(&self) -> Result<Vec<String>, ApiError> {
        let list = match &self.stop {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s.clone()),
                    v => Err(ApiError::field(
                        format!("stop[{i}]"),
                        format!("stop[{i}] is {v}: expected a string"),
                    )),
                })
                .collect::<Result<_, _>>()?,
            Some(v) => {
                return Err(ApiError::field(
                    "stop",
                    format!("stop is {v}: expected a string or an array of strings"),
                ));
            }
        };
        if list.len() > MAX_STOP {
            return Err(ApiError::field("stop", format!("{} stop strings: at most {MAX_STOP}", list.len())));
        }
        Ok(list.into_iter().filter(|s| !s.is_empty()).collect())
    }

    /// The conversation of a chat request. OpenAI's `developer` role is the newer name of
    /// `system`, which is what templates know.
    pub fn chat_messages(&self) -> Result<Vec<ChatMessage>, ApiError> {
        let messages =
            self.messages.as_ref().ok_or_else(|| ApiError::field("messages", "messages is required"))?;
        if messages.is_empty() {
            return Err(ApiError::field("messages", "messages is empty: give at least one message"));
        }
        messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let role = match m.role.as_str() {
                    "developer" => "system",
                    "" => return Err(ApiError::field(format!("messages[{i}].role"), "the role is empty")),
                    r => r,
                };
                let mut message = ChatMessage::new(role, message_text(i, m.content.as_ref())?);
                message.tool_calls = m.tool_calls.as_deref().map(message_calls).unwrap_or_default();
                message.tool_call_id = m.tool_call_id.clone();
                message.name = m.name.clone();
                Ok(message)
            })
            .collect()
    }

    /// The prompt of a completion request: a string, an array of one string, token ids, or an
    /// array of one array of token ids. Several prompts in one request are refused.
    pub fn completion_prompt(&self) -> Result<Prompt, ApiError> {
        let expected = "expected a string, an array of token ids, or an array holding one of these";
        let p = match &self.prompt {
            None | Some(Value::Null) => return Err(ApiError::field("prompt", "prompt is required")),
            Some(p) => p,
        };
        match p {
            Value::String(s) => Ok(Prompt::Text(s.clone())),
            Value::Array(items) if items.is_empty() => Err(ApiError::field("prompt", "prompt is empty")),
            Value::Array(items) if items.iter().all(Value::is_number) => {
                Ok(Prompt::Tokens(token_ids("prompt", items)?))
            }
            Value::Array(items) if items.len() == 1 => match &items[0] {
                Value::String(s) => Ok(Prompt::Text(s.clone())),
                Value::Array(ids) => Ok(Prompt::Tokens(token_ids("prompt[0]", ids)?)),
                v => Err(ApiError::field("prompt[0]", format!("prompt[0] is {v}: {expected}"))),
            },
            Value::Array(items) => Err(ApiError::field(
                "prompt",
                format!("{} prompts in one request: this server takes one prompt per request", items.len()),
            )),
            v => Err(ApiError::field("prompt", format!("prompt is {}: {expected}", short(v)))),
        }
    }
}

fn token_ids(param: &str, items: &[Value]) -> Result<Vec<u32>, ApiError> {
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_u64().and_then(|t| u32::try_from(t).ok()).ok_or_else(|| {
                ApiError::field(
                    format!("{param}[{i}]"),
                    format!("{param}[{i}] is {}: expected a token id", short(v)),
                )
            })
        })
        .collect()
}

/// A message's text: a string, or the concatenated text parts of an array.
fn message_text(i: usize, content: Option<&Value>) -> Result<String, ApiError> {
    let param = format!("messages[{i}].content");
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (j, part) in parts.iter().enumerate() {
                let kind = part.get("type").and_then(Value::as_str);
                match (kind, part.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    (Some(k), _) if k != "text" => {
                        return Err(ApiError::field(
                            format!("{param}[{j}].type"),
                            format!("content parts of type {k:?} are not supported: this server reads text"),
                        ));
                    }
                    _ => {
                        return Err(ApiError::field(
                            format!("{param}[{j}]"),
                            "expected a content part {\"type\": \"text\", \"text\": \"...\"}",
                        ));
                    }
                }
            }
            Ok(text)
        }
        Some(v) => Err(ApiError::field(
            &param,
            format!("{param} is {}: expected a string or an array of text parts", short(v)),
        )),
    }
}

/// A JSON value for a message, cut short.
fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 40 { format!("{}...", s.chars().take(40).collect::<String>()) } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(body: &str) -> Result<Request, ApiError> {
        parse(body.as_bytes())
    }

    #[test]
    fn type_errors_name_the_field() {
        let e = req(r#"{"messages": [{"role": 5, "content": "x"}]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].role"), "{e:?}");
        let e = req(r#"{"temperature": "hot"}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("temperature"));
        assert!(!e.message.contains("line 1"), "{}", e.message);
        let e = req(r#"{"messages": [}"#).unwrap_err();
        assert!(e.message.starts_with("malformed JSON"), "{}", e.message);
        let e = req("[1, 2]").unwrap_err();
        assert!(e.message.contains("JSON object"), "{}", e.message);
        assert!(req("").unwrap_err().message.contains("empty"));
        assert!(req(r#"{} {}"#).is_err());
        let e = req(r#"{"messages": [{"content": "x"}]}"#).unwrap_err();
        assert_eq!(
            (e.param.as_deref(), e.message.as_str()),
            (Some("messages[0].role"), "messages[0].role is required")
        );
    }

    #[test]
    fn ranges_and_defaults() {
        let p = req("{}").unwrap().params(true, 100).unwrap();
        assert_eq!(
            (p.sampling.temp, p.sampling.top_p, p.sampling.top_k, p.sampling.min_p),
            (1.0, 1.0, 0, 0.0)
        );
        assert!(!p.ignore_eos);
        assert!(req(r#"{"ignore_eos": true}"#).unwrap().params(true, 100).unwrap().ignore_eos);
        assert_eq!(p.reasoning_effort, None);
        let high = req(r#"{"reasoning_effort": "high"}"#).unwrap().params(true, 100).unwrap();
        assert_eq!(high.reasoning_effort, Some(ReasoningEffort::High));
        for (body, field) in [
            (r#"{"temperature": 3}"#, "temperature"),
            (r#"{"top_p": -0.1}"#, "top_p"),
            (r#"{"reasoning_effort": "max"}"#, "reasoning_effort"),
            (r#"{"max_tokens": 0}"#, "max_tokens"),
            (r#"{"n": 2}"#, "n"),
            (r#"{"top_k": -1}"#, "top_k"),
            (r#"{"logit_bias": {"100": 1}}"#, "logit_bias.100"),
            (r#"{"logit_bias": {"7": 101}}"#, "logit_bias.7"),
            (r#"{"top_logprobs": 2}"#, "top_logprobs"),
            (r#"{"stop": 5}"#, "stop"),
            (r#"{"stop": ["a", 1]}"#, "stop[1]"),
        ] {
            let e = req(body).unwrap().params(true, 100).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(field), "{body}: {e:?}");
        }
        let p = req(r#"{"temperature": 0, "stop": "x", "logit_bias": {"3": -100}, "max_completion_tokens": 5, "max_tokens": 9}"#)
            .unwrap()
            .params(true, 100)
            .unwrap();
        assert_eq!((p.sampling.temp, p.stop, p.max_tokens), (0.0, vec!["x".to_string()], Some(5)));
        assert_eq!(p.sampling.logit_bias, vec![LogitBias { token: 3, bias: -100.0 }]);
        let p = req(r#"{"logprobs": 3}"#).unwrap().params(false, 100).unwrap();
        assert_eq!(p.logprobs, Some(3));
        assert!(req(r#"{"logprobs": true}"#).unwrap().params(false, 100).is_err());
        assert!(req(r#"{"logprobs": 3}"#).unwrap().params(true, 100).is_err());
    }

    #[test]
    fn prompts_and_messages() {
        let prompt = |b: &str| req(b).unwrap().completion_prompt();
        assert_eq!(prompt(r#"{"prompt": "hi"}"#).unwrap(), Prompt::Text("hi".into()));
        assert_eq!(prompt(r#"{"prompt": ["hi"]}"#).unwrap(), Prompt::Text("hi".into()));
        assert_eq!(prompt(r#"{"prompt": [1, 2]}"#).unwrap(), Prompt::Tokens(vec![1, 2]));
        assert_eq!(prompt(r#"{"prompt": [[1, 2]]}"#).unwrap(), Prompt::Tokens(vec![1, 2]));
        assert_eq!(prompt(r#"{"prompt": ["a", "b"]}"#).unwrap_err().param.as_deref(), Some("prompt"));
        assert_eq!(prompt(r#"{"prompt": [1, -2]}"#).unwrap_err().param.as_deref(), Some("prompt[1]"));
        assert_eq!(prompt(r#"{}"#).unwrap_err().param.as_deref(), Some("prompt"));
        let msgs = req(r#"{"messages": [{"role": "developer", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]}"#)
            .unwrap()
            .chat_messages()
            .unwrap();
        assert_eq!(msgs, vec![ChatMessage::system("ab")]);
        let e = req(r#"{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}"#)
            .unwrap()
            .chat_messages();
        assert_eq!(e.unwrap_err().param.as_deref(), Some("messages[0].content[0].type"));
        assert_eq!(req("{}").unwrap().chat_messages().unwrap_err().param.as_deref(), Some("messages"));
    }

    #[test]
    fn response_format_grammar_and_json_schema() {
        let constraint = |body: &str| req(body).unwrap().params(true, 100).map(|p| p.constraint);
        assert_eq!(constraint(r#"{"response_format": {"type": "text"}}"#).unwrap(), None);
        assert_eq!(
            constraint(r#"{"response_format": {"type": "json_object"}}"#).unwrap(),
            Some((Constraint::JsonObject, "response_format"))
        );
        let schema = serde_json::json!({"type": "integer"});
        assert_eq!(
            constraint(r#"{"response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "integer"}}}}"#)
                .unwrap(),
            Some((Constraint::JsonSchema(schema.clone()), "response_format"))
        );
        assert_eq!(
            constraint(r#"{"grammar": "root ::= \"a\""}"#).unwrap(),
            Some((Constraint::Gbnf("root ::= \"a\"".into()), "grammar"))
        );
        assert_eq!(
            constraint(r#"{"json_schema": {"type": "integer"}}"#).unwrap(),
            Some((Constraint::JsonSchema(schema), "json_schema"))
        );
        let param = |body: &str| constraint(body).unwrap_err().param;
        assert_eq!(param(r#"{"response_format": {"type": "xml"}}"#).as_deref(), Some("response_format"));
        assert_eq!(
            param(r#"{"response_format": {"type": "json_schema", "json_schema": {}}}"#).as_deref(),
            Some("response_format.json_schema.schema")
        );
        assert_eq!(
            param(r#"{"response_format": {"type": "json_object"}, "grammar": "root ::= \"a\""}"#).as_deref(),
            Some("grammar")
        );
    }
}
