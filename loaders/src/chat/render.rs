use std::time::SystemTime;

use minijinja::Value;

use super::ChatMessage;
use super::env::TEMPLATE_NAME;
use super::error::{ChatError, from_render};
use super::reasoning::{ReasoningEffort, ReasoningFormat};
use super::strftime::strftime;
use super::template::ChatTemplate;

/// Everything a render can be given beyond the messages.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    /// Append the opening of an assistant turn (`add_generation_prompt`).
    pub add_generation_prompt: bool,
    /// The time `strftime_now`, `date_string` and `datetime` show (UTC); `None` is now.
    pub now: Option<SystemTime>,
    /// `reasoning_effort` for templates that read it (gpt-oss: `Reasoning: low|medium|high`
    /// in the system message); `None` leaves it undefined, so the template's default applies.
    pub reasoning_effort: Option<ReasoningEffort>,
    /// Extra template variables (llama.cpp's `--chat-template-kwargs`), e.g.
    /// `{"enable_thinking": false}`. They override the built-in ones of the same name.
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// The tools the model may call (OpenAI tool objects), given to the template as `tools`;
    /// empty leaves `tools` undefined.
    pub tools: Vec<serde_json::Value>,
}

/// Two renders of a growing conversation, for reusing a KV cache between turns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderDelta {
    /// The conversation so far, without a generation prompt.
    pub past: String,
    /// The conversation with the new messages (and the generation prompt, if asked for).
    pub full: String,
    /// Length in bytes of the longest common prefix of `past` and `full`, on a char boundary.
    pub common: usize,
}

impl RenderDelta {
    /// True when `full` only appends to `past`, which holds for most templates. It does not
    /// for templates that rewrite earlier turns, e.g. dropping the reasoning of past replies.
    pub fn is_append_only(&self) -> bool {
        self.common == self.past.len()
    }

    /// The text after the common prefix: what to feed once the cache is cut back to it.
    pub fn appended(&self) -> &str {
        &self.full[self.common..]
    }
}

impl ChatTemplate {
    /// Renders a conversation into the prompt text, with the model's special tokens as plain
    /// text (tokenize with special-token parsing on).
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String, ChatError> {
        self.render_with(messages, &RenderOptions { add_generation_prompt, ..Default::default() })
    }

    /// [`render`](Self::render) with a fixed clock and extra variables.
    ///
    /// The variables are those llama.cpp gives a template: `messages` (each with `role` and
    /// `content`), `add_generation_prompt`, `bos_token`, `eos_token`, `enable_thinking`
    /// (true), `date_string` / `datetime`, and the functions `raise_exception` and
    /// `strftime_now`, `reasoning_effort` when [`RenderOptions::reasoning_effort`] is set; then
    /// `options.extra` on top.
    pub fn render_with(
        &self,
        messages: &[ChatMessage],
        options: &RenderOptions,
    ) -> Result<String, ChatError> {
        let now = options.now.unwrap_or_else(SystemTime::now);
        let date = |fmt| strftime(fmt, now).unwrap_or_default();
        let mut vars: Vec<(String, Value)> = vec![
            ("messages".into(), Value::from(messages.iter().map(message_value).collect::<Vec<_>>())),
            ("add_generation_prompt".into(), Value::from(options.add_generation_prompt)),
            ("bos_token".into(), Value::from(self.tokens.bos.as_str())),
            ("eos_token".into(), Value::from(self.tokens.eos.as_str())),
            ("enable_thinking".into(), Value::from(true)),
            ("date_string".into(), Value::from(date("%d %b %Y"))),
            ("datetime".into(), Value::from(date("%b %d %Y"))),
            (
                "strftime_now".into(),
                Value::from_function(move |format: &str| {
                    strftime(format, now)
                        .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e))
                }),
            ),
        ];
        if let Some(effort) = options.reasoning_effort {
            vars.push(("reasoning_effort".into(), Value::from(effort.as_str())));
        }
        if !options.tools.is_empty() {
            vars.push((
                "tools".into(),
                Value::from(options.tools.iter().map(json_value).collect::<Vec<_>>()),
            ));
        }
        for (k, v) in &options.extra {
            vars.retain(|(name, _)| name != k);
            vars.push((k.clone(), json_value(v)));
        }
        let template = self.env.get_template(TEMPLATE_NAME).map_err(|e| self.render_error(e))?;
        let mut out = template.render(Value::from_pairs(vars)).map_err(|e| self.render_error(e))?;
        if self.tokens.add_bos && !self.tokens.bos.is_empty() && out.starts_with(&self.tokens.bos) {
            out.drain(..self.tokens.bos.len());
        }
        if self.tokens.add_eos && !self.tokens.eos.is_empty() && out.ends_with(&self.tokens.eos) {
            out.truncate(out.len() - self.tokens.eos.len());
        }
        Ok(out)
    }

    /// Renders `past` alone (no generation prompt) and `past` + `new`, and finds where they part.
    ///
    /// A chat REPL that keeps `past` in its KV cache feeds [`RenderDelta::appended`] for the next
    /// turn. Templates close a turn with text the model does not generate (ChatML writes `\n`
    /// after `<|im_end|>`), so the cache holds the model's reply but not that text: compare the
    /// cached tokens with the tokens of `past` and feed the difference too, as llama.cpp's
    /// `common_chat_format_single` does for the newline.
    pub fn render_delta(
        &self,
        past: &[ChatMessage],
        new: &[ChatMessage],
        options: &RenderOptions,
    ) -> Result<RenderDelta, ChatError> {
        let past_text = if past.is_empty() {
            String::new()
        } else {
            self.render_with(past, &RenderOptions { add_generation_prompt: false, ..options.clone() })?
        };
        let all: Vec<ChatMessage> = past.iter().chain(new).cloned().collect();
        let full = self.render_with(&all, options)?;
        let mut common = past_text.bytes().zip(full.bytes()).take_while(|(a, b)| a == b).count();
        while !full.is_char_boundary(common) {
            common -= 1;
        }
        Ok(RenderDelta { past: past_text, full, common })
    }

    /// How this template's model writes tool calls; `None` when the template shows no tools.
    pub fn tool_call_format(&self) -> Option<super::ToolCallFormat> {
        super::ToolCallFormat::detect(&self.source)
    }

    /// How this template's model marks reasoning in its replies.
    pub fn reasoning_format(&self) -> ReasoningFormat {
        ReasoningFormat::detect(&self.source)
    }

    fn render_error(&self, err: minijinja::Error) -> ChatError {
        let source = self.env.get_template(TEMPLATE_NAME).map(|t| t.source().to_string()).unwrap_or_default();
        from_render(err, &source)
    }
}

/// A message as templates read it: OpenAI's shape, a call's arguments as a mapping when they
/// are a JSON object (templates write them with `tojson`), else as the text.
fn message_value(m: &ChatMessage) -> Value {
    let mut pairs =
        vec![("role", Value::from(m.role.as_str())), ("content", Value::from(m.content.as_str()))];
    if !m.tool_calls.is_empty() {
        let calls: Vec<Value> = m.tool_calls.iter().map(call_value).collect();
        pairs.push(("tool_calls", Value::from(calls)));
    }
    if let Some(id) = &m.tool_call_id {
        pairs.push(("tool_call_id", Value::from(id.as_str())));
    }
    if let Some(name) = &m.name {
        pairs.push(("name", Value::from(name.as_str())));
    }
    Value::from_pairs(pairs)
}

fn call_value(c: &super::ToolCall) -> Value {
    let arguments = match serde_json::from_str::<serde_json::Value>(&c.arguments) {
        Ok(v @ serde_json::Value::Object(_)) => json_value(&v),
        _ => Value::from(c.arguments.as_str()),
    };
    let function = Value::from_pairs([("name", Value::from(c.name.as_str())), ("arguments", arguments)]);
    Value::from_pairs([
        ("id", Value::from(c.id.as_str())),
        ("type", Value::from("function")),
        ("function", function),
    ])
}

fn json_value(v: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    match v {
        J::Null => Value::from(()),
        J::Bool(b) => Value::from(*b),
        J::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Value::from(i),
            (_, Some(u), _) => Value::from(u),
            (_, _, f) => Value::from(f.unwrap_or(f64::NAN)),
        },
        J::String(s) => Value::from(s.as_str()),
        J::Array(a) => Value::from(a.iter().map(json_value).collect::<Vec<_>>()),
        J::Object(o) => Value::from_pairs(o.iter().map(|(k, v)| (k.as_str(), json_value(v)))),
    }
}
