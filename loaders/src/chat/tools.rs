//! Tool calls: how a model family writes a call to one of the tools it was shown, and the
//! parser that takes those calls back out of its reply.
//!
//! The formats are the families' own, as their chat templates teach them:
//! - **Hermes** (Qwen 2.5 / 3, Hermes, many fine-tunes): `<tool_call>{"name": …, "arguments":
//!   {…}}</tool_call>`, one block per call, text before them allowed.
//! - **Llama 3.x**: the whole reply is `{"name": …, "parameters": {…}}` (optionally after
//!   `<|python_tag|>`), several calls separated by `;`.
//! - **Mistral**: `[TOOL_CALLS]` then a JSON array of `{"name": …, "arguments": {…}}`.
//! - **Harmony** (gpt-oss): a `commentary` message to `functions.NAME` whose text is the
//!   arguments; the [`ReasoningParser`](super::ReasoningParser) that follows the channels
//!   hands these calls over, so the parser here leaves harmony text alone.
//! - **Generic** (templates that show no tools): one JSON object, `{"tool_call": …}`,
//!   `{"tool_calls": […]}` or `{"response": …}`, always grammar-constrained (see
//!   `generic_tools`).
//! - **Gemma 4**: `<|tool_call>call:NAME{key:value,…}<tool_call|>` in Gemma's own value syntax
//!   (see `gemma_calls`), then `<|tool_response>` where the caller's answer goes.

use serde_json::Value;

use super::gemma_calls;
use super::generic_tools::{self, generic_schema};

/// One call of a tool: its id, the function's name and its arguments as a JSON text (as the
/// OpenAI API carries them).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// How a model writes tool calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolCallFormat {
    Hermes,
    Llama3,
    Mistral,
    Harmony,
    Gemma4,
    /// For templates that show no tools: the tools described in a system message and the
    /// reply constrained to JSON ([`generic_schema`](super::generic_schema)). Never detected;
    /// chosen where [`detect`](Self::detect) finds nothing.
    Generic,
}

/// The whitespace allowed between JSON tokens in constrained output, as llama.cpp's schema
/// grammars allow it: none, one space, or a line break and an indent of up to 20 (unbounded
/// whitespace lets a model pad its output instead of finishing it). A regular expression, as
/// llguidance's `x-guidance.whitespace_pattern` takes it.
pub const JSON_WHITESPACE: &str = "( |\n[ \t]{0,20})?";

/// `schema` as constrained output reads it, the way llama.cpp's schema grammars read it:
/// [`JSON_WHITESPACE`] as its layout unless it sets its own (`x-guidance`), objects that list
/// `properties` without saying `additionalProperties` closed to those properties (the JSON
/// Schema default would let a model pad a tool's arguments or an answer with keys nobody asked
/// for), and numbers held to 16 digits before the point and 10 after it (an unbounded number
/// lets a hot sampler write digits until the token limit, and the output never completes).
pub fn constrained_schema(mut schema: Value) -> Value {
    close_objects(&mut schema);
    if let Some(object) = schema.as_object_mut()
        && !object.contains_key("x-guidance")
    {
        object.insert("x-guidance".into(), serde_json::json!({ "whitespace_pattern": JSON_WHITESPACE }));
    }
    schema
}

/// The largest magnitude with 16 digits, llama.cpp's bound on a number's integral part.
const NUMBER_LIMIT: i64 = 9_999_999_999_999_999;

/// Bounds an `integer` or `number` schema that leaves a side open to 16 integral digits (as
/// llama.cpp's number rules do), and a `number` without `multipleOf` to 10 decimals (llama.cpp
/// allows 16, but llguidance reads `multipleOf` through repeated f64 scaling, which is exact
/// only to 1e-10): a subset of what the schema allows.
fn bound_number(object: &mut serde_json::Map<String, Value>) {
    let is_number = match object.get("type").and_then(Value::as_str) {
        Some("integer") => false,
        Some("number") => true,
        _ => return,
    };
    if !object.contains_key("minimum") && !object.contains_key("exclusiveMinimum") {
        object.insert("minimum".into(), Value::from(-NUMBER_LIMIT));
    }
    if !object.contains_key("maximum") && !object.contains_key("exclusiveMaximum") {
        object.insert("maximum".into(), Value::from(NUMBER_LIMIT));
    }
    if is_number && !object.contains_key("multipleOf") {
        object.insert("multipleOf".into(), serde_json::json!(1e-10));
    }
}

/// Sets `additionalProperties: false` on every object schema with `properties` and no word on
/// extra keys, through the places subschemas live.
fn close_objects(schema: &mut Value) {
    let Some(object) = schema.as_object_mut() else { return };
    bound_number(object);
    if object.contains_key("properties")
        && !object.contains_key("additionalProperties")
        && !object.contains_key("patternProperties")
        && !object.contains_key("unevaluatedProperties")
    {
        object.insert("additionalProperties".into(), Value::Bool(false));
    }
    for (key, child) in object.iter_mut() {
        match key.as_str() {
            "properties" | "$defs" | "definitions" | "patternProperties" => {
                child.as_object_mut().into_iter().flat_map(|m| m.values_mut()).for_each(close_objects)
            }
            "anyOf" | "oneOf" | "allOf" | "prefixItems" => {
                child.as_array_mut().into_iter().flatten().for_each(close_objects)
            }
            "items" | "additionalProperties" | "not" | "if" | "then" | "else" | "contains" => {
                close_objects(child)
            }
            _ => {}
        }
    }
}

const HERMES_OPEN: &str = "<tool_call>";
const HERMES_CLOSE: &str = "</tool_call>";
const LLAMA_TAG: &str = "<|python_tag|>";
const MISTRAL_TAG: &str = "[TOOL_CALLS]";

impl ToolCallFormat {
    /// The format a chat template teaches, from its source; `None` when it shows no tools.
    pub fn detect(template_source: &str) -> Option<ToolCallFormat> {
        if template_source.contains(gemma_calls::CALL_OPEN) {
            Some(ToolCallFormat::Gemma4)
        } else if template_source.contains(HERMES_OPEN) {
            Some(ToolCallFormat::Hermes)
        } else if template_source.contains(MISTRAL_TAG) {
            Some(ToolCallFormat::Mistral)
        } else if template_source.contains("<|channel|>") && template_source.contains("to=") {
            Some(ToolCallFormat::Harmony)
        } else if template_source.contains("<|start_header_id|>") && template_source.contains("tools") {
            Some(ToolCallFormat::Llama3)
        } else {
            None
        }
    }

    /// Text after which a reply in this format is over although the model may not end its
    /// turn: Gemma 4 writes the opening of the tool's response after its calls.
    pub fn stop_markers(self) -> &'static [&'static str] {
        match self {
            ToolCallFormat::Gemma4 => &[gemma_calls::RESPONSE_OPEN],
            _ => &[],
        }
    }

    /// The grammar for `tool_choice: auto`: `None` for the formats whose calls the model
    /// writes freely among its text; the generic format always answers in JSON.
    pub fn auto_grammar(self, tools: &[Value], parallel: bool) -> Option<String> {
        (self == ToolCallFormat::Generic).then(|| json_grammar(generic_schema(tools, parallel, true)))
    }

    /// The key the call's arguments go under.
    fn arguments_key(self) -> &'static str {
        match self {
            ToolCallFormat::Llama3 => "parameters",
            ToolCallFormat::Hermes
            | ToolCallFormat::Mistral
            | ToolCallFormat::Harmony
            | ToolCallFormat::Gemma4
            | ToolCallFormat::Generic => "arguments",
        }
    }

    /// A Lark grammar for a reply made only of calls, each to one of `tools` (OpenAI tool
    /// objects) with arguments valid under that tool's parameter schema: what `tool_choice:
    /// required` (or a named function, given alone) constrains the reply to. `parallel`
    /// allows several calls.
    pub fn calls_grammar(self, tools: &[Value], parallel: bool) -> String {
        // Further calls, each after the format's separator.
        let more =
            |sep: &str, item: &str| if parallel { format!(" (\"{sep}\" {item})*") } else { String::new() };
        let calls = match self {
            ToolCallFormat::Hermes => format!(
                "start: call{}\ncall: \"{HERMES_OPEN}\\n\" obj \"\\n{HERMES_CLOSE}\"",
                more("\\n", "call")
            ),
            ToolCallFormat::Llama3 => format!("start: obj{}", more("; ", "obj")),
            ToolCallFormat::Mistral => format!("start: \"{MISTRAL_TAG}[\" obj{} \"]\"", more(", ", "obj")),
            // One call per message, its arguments the message text.
            ToolCallFormat::Harmony => return harmony_grammar(tools),
            ToolCallFormat::Gemma4 => return gemma_calls::calls_grammar(tools, parallel),
            ToolCallFormat::Generic => return json_grammar(generic_schema(tools, parallel, false)),
        };
        let key = self.arguments_key();
        let alternatives: Vec<Value> = tools
            .iter()
            .filter_map(|t| {
                let f = t.get("function")?;
                let params =
                    f.get("parameters").cloned().unwrap_or_else(|| serde_json::json!({"type": "object"}));
                Some(serde_json::json!({
                    "type": "object",
                    "properties": { "name": { "const": f.get("name")? }, key: params },
                    "required": ["name", key],
                    "additionalProperties": false,
                }))
            })
            .collect();
        let call = constrained_schema(serde_json::json!({ "anyOf": alternatives }));
        format!("{calls}\nobj: %json {call}\n")
    }
}

/// A Lark grammar for one JSON value under `schema`, in the constrained-output layout.
fn json_grammar(schema: Value) -> String {
    format!("start: %json {}\n", constrained_schema(schema))
}

/// Harmony's call, one per message: the header after the generation prompt's `assistant`,
/// then the arguments as the message text, for one of `tools`.
fn harmony_grammar(tools: &[Value]) -> String {
    let mut rules = Vec::new();
    let mut names = Vec::new();
    for (i, t) in tools.iter().enumerate() {
        let Some(f) = t.get("function") else { continue };
        let Some(name) = f.get("name").and_then(Value::as_str) else { continue };
        let params = constrained_schema(
            f.get("parameters").cloned().unwrap_or_else(|| serde_json::json!({"type": "object"})),
        );
        let header =
            serde_json::to_string(&format!(" to=functions.{name}<|channel|>commentary json<|message|>"))
                .unwrap_or_default();
        rules.push(format!("call_{i}: {header} args_{i}\nargs_{i}: %json {params}"));
        names.push(format!("call_{i}"));
    }
    format!("start: {}\n{}\n", names.join(" | "), rules.join("\n"))
}

/// A reply split into its text and its tool calls.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParsedReply {
    pub content: String,
    pub calls: Vec<ToolCall>,
}

/// Takes the tool calls out of a whole reply. Text that only looks like a call (bad JSON, no
/// name) stays content, so nothing the model wrote is lost. Calls get ids `call_<n>` after
/// `id_prefix`.
pub fn parse_tool_calls(format: ToolCallFormat, reply: &str, id_prefix: &str) -> ParsedReply {
    let mut calls = Vec::new();
    let content = match format {
        ToolCallFormat::Hermes => parse_hermes(reply, &mut calls),
        ToolCallFormat::Llama3 => parse_llama3(reply, &mut calls),
        ToolCallFormat::Mistral => parse_mistral(reply, &mut calls),
        ToolCallFormat::Harmony => reply.to_string(),
        ToolCallFormat::Gemma4 => gemma_calls::parse(reply, &mut calls),
        ToolCallFormat::Generic => generic_tools::parse(reply, &mut calls),
    };
    for (i, c) in calls.iter_mut().enumerate() {
        c.id = format!("{id_prefix}call_{i}");
    }
    ParsedReply { content, calls }
}

/// A call object `{"name": …, key: {…}}`, its arguments re-serialised compactly.
fn call_of(v: &Value, key: &str) -> Option<ToolCall> {
    let name = v.get("name")?.as_str()?.to_string();
    let args = v.get(key).cloned().unwrap_or(Value::Object(Default::default()));
    let arguments = match args {
        // Some models write the arguments as a JSON string already.
        Value::String(s) => s,
        other => other.to_string(),
    };
    Some(ToolCall { id: String::new(), name, arguments })
}

/// A call object with its arguments under `arguments`.
pub(super) fn call_of_arguments(v: &Value) -> Option<ToolCall> {
    call_of(v, "arguments")
}

fn parse_hermes(reply: &str, calls: &mut Vec<ToolCall>) -> String {
    take_blocks(reply, HERMES_OPEN, HERMES_CLOSE, calls, |body| {
        serde_json::from_str::<Value>(body.trim()).ok().and_then(|v| call_of(&v, "arguments"))
    })
}

/// Takes the calls out of a reply that writes each as `open … close` among its text: `read`
/// turns a block's body into a call, and a block it refuses (or one cut off before `close`)
/// stays text. With calls found, the text around them is trimmed.
pub(super) fn take_blocks(
    reply: &str,
    open_marker: &str,
    close_marker: &str,
    calls: &mut Vec<ToolCall>,
    read: impl Fn(&str) -> Option<ToolCall>,
) -> String {
    let mut content = String::new();
    let mut rest = reply;
    while let Some(open) = rest.find(open_marker) {
        let after = &rest[open + open_marker.len()..];
        let (body, next) = match after.find(close_marker) {
            Some(close) => (&after[..close], &after[close + close_marker.len()..]),
            None => (after, ""),
        };
        match read(body) {
            Some(call) => {
                content.push_str(&rest[..open]);
                calls.push(call);
            }
            None => content.push_str(&rest[..rest.len() - next.len()]),
        }
        rest = next;
    }
    content.push_str(rest);
    if calls.is_empty() { content } else { content.trim().to_string() }
}

fn parse_llama3(reply: &str, calls: &mut Vec<ToolCall>) -> String {
    let body = reply.trim();
    let body = body.strip_prefix(LLAMA_TAG).unwrap_or(body).trim();
    if !body.starts_with('{') {
        return reply.to_string();
    }
    let mut found = Vec::new();
    for part in body.split(';') {
        let Some(call) = serde_json::from_str::<Value>(part.trim())
            .ok()
            .and_then(|v| call_of(&v, "parameters").or_else(|| call_of(&v, "arguments")))
        else {
            return reply.to_string();
        };
        found.push(call);
    }
    calls.extend(found);
    String::new()
}

fn parse_mistral(reply: &str, calls: &mut Vec<ToolCall>) -> String {
    let Some(at) = reply.find(MISTRAL_TAG) else { return reply.to_string() };
    let body = reply[at + MISTRAL_TAG.len()..].trim();
    let Some(list) = serde_json::from_str::<Value>(body).ok().and_then(|v| v.as_array().cloned()) else {
        return reply.to_string();
    };
    let found: Option<Vec<ToolCall>> = list.iter().map(|v| call_of(v, "arguments")).collect();
    match found {
        Some(found) => {
            calls.extend(found);
            reply[..at].trim().to_string()
        }
        None => reply.to_string(),
    }
}

/// Where a streamed reply may be starting a tool call: the text before `at` is safe to show,
/// the rest is held until the reply ends (and then parsed whole).
pub fn call_start(format: ToolCallFormat, text: &str) -> Option<usize> {
    let marker = match format {
        ToolCallFormat::Harmony => return None,
        ToolCallFormat::Hermes => HERMES_OPEN,
        ToolCallFormat::Mistral => MISTRAL_TAG,
        ToolCallFormat::Gemma4 => gemma_calls::CALL_OPEN,
        // The whole reply is one JSON object, an answer included: held until it is complete.
        ToolCallFormat::Generic => return Some(0),
        // A Llama 3 call is the whole reply: hold it while it could be one.
        ToolCallFormat::Llama3 => {
            let lead = text.len() - text.trim_start().len();
            let rest = &text[lead..];
            let could_be = rest.is_empty()
                || rest.starts_with('{')
                || rest.starts_with(LLAMA_TAG)
                || LLAMA_TAG.starts_with(rest);
            return could_be.then_some(0);
        }
    };
    if let Some(i) = text.find(marker) {
        return Some(i);
    }
    // A marker cut at the end of what has arrived so far.
    (1..marker.len()).rev().find(|&n| text.ends_with(&marker[..n])).map(|n| text.len() - n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hermes_calls_and_text() {
        let reply = "Let me check.\n<tool_call>\n{\"name\": \"weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"time\", \"arguments\": {}}\n</tool_call>";
        let p = parse_tool_calls(ToolCallFormat::Hermes, reply, "x");
        assert_eq!(p.content, "Let me check.");
        assert_eq!(p.calls.len(), 2);
        assert_eq!(
            (p.calls[0].name.as_str(), p.calls[0].arguments.as_str()),
            ("weather", r#"{"city":"Oslo"}"#)
        );
        assert_eq!(p.calls[1].id, "xcall_1");
        // Broken JSON stays text.
        let bad = "<tool_call>{not json}</tool_call>";
        assert_eq!(parse_tool_calls(ToolCallFormat::Hermes, bad, "").content, bad);
    }

    #[test]
    fn llama3_and_mistral_calls() {
        let p = parse_tool_calls(
            ToolCallFormat::Llama3,
            "<|python_tag|>{\"name\": \"a\", \"parameters\": {\"x\": 1}}; {\"name\": \"b\", \"parameters\": {}}",
            "",
        );
        assert_eq!(p.calls.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(p.calls[0].arguments, r#"{"x":1}"#);
        assert_eq!(parse_tool_calls(ToolCallFormat::Llama3, "{ not a call", "").content, "{ not a call");
        let p = parse_tool_calls(
            ToolCallFormat::Mistral,
            "[TOOL_CALLS][{\"name\": \"f\", \"arguments\": {\"q\": \"s\"}}]",
            "",
        );
        assert_eq!((p.content.as_str(), p.calls[0].arguments.as_str()), ("", r#"{"q":"s"}"#));
    }

    #[test]
    fn streamed_text_is_held_from_a_possible_call() {
        assert_eq!(call_start(ToolCallFormat::Hermes, "Sure <tool_"), Some(5));
        assert_eq!(call_start(ToolCallFormat::Hermes, "Sure <tool_call>{"), Some(5));
        assert_eq!(call_start(ToolCallFormat::Hermes, "Sure."), None);
        assert_eq!(call_start(ToolCallFormat::Llama3, " {\"na"), Some(0));
        assert_eq!(call_start(ToolCallFormat::Llama3, "Hello"), None);
        assert_eq!(call_start(ToolCallFormat::Mistral, "ok [TOOL"), Some(3));
    }

    #[test]
    fn formats_from_templates() {
        assert_eq!(ToolCallFormat::detect("{{ '<tool_call>' }}"), Some(ToolCallFormat::Hermes));
        assert_eq!(ToolCallFormat::detect("[TOOL_CALLS]"), Some(ToolCallFormat::Mistral));
        assert_eq!(ToolCallFormat::detect("<|im_start|>{{ m.content }}"), None);
        assert_eq!(
            ToolCallFormat::detect("{{- \"<|start|>assistant to=\" }}{{ \"<|channel|>commentary \" }}"),
            Some(ToolCallFormat::Harmony)
        );
        let tools = [serde_json::json!({"type": "function", "function": {"name": "f"}})];
        let g = ToolCallFormat::Harmony.calls_grammar(&tools, true);
        assert!(
            g.starts_with(
                "start: call_0\ncall_0: \" to=functions.f<|channel|>commentary json<|message|>\" args_0"
            ),
            "{g}"
        );
    }

    #[test]
    fn objects_with_properties_are_closed_unless_the_schema_says_otherwise() {
        let schema = constrained_schema(serde_json::json!({
            "type": "object",
            "properties": {"inner": {"type": "object", "properties": {"x": {}}},
                           "open": {"type": "object", "properties": {}, "additionalProperties": true},
                           "list": {"type": "array", "items": {"properties": {"y": {}}}}},
            "$defs": {"d": {"anyOf": [{"properties": {"z": {}}}, {"type": "string"}]}},
        }));
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(schema["properties"]["inner"]["additionalProperties"], false);
        assert_eq!(schema["properties"]["open"]["additionalProperties"], true);
        assert_eq!(schema["properties"]["list"]["items"]["additionalProperties"], false);
        assert_eq!(schema["$defs"]["d"]["anyOf"][0]["additionalProperties"], false);
        assert!(schema["$defs"]["d"]["anyOf"][1].get("additionalProperties").is_none());
        let bounded = constrained_schema(serde_json::json!({"properties": {
            "n": {"type": "integer", "minimum": 0}, "x": {"type": "number", "multipleOf": 0.5}}}));
        assert_eq!(bounded["properties"]["n"]["maximum"], 9_999_999_999_999_999_i64);
        assert_eq!(bounded["properties"]["n"]["minimum"], 0);
        assert_eq!(bounded["properties"]["x"]["minimum"], -9_999_999_999_999_999_i64);
        assert_eq!(bounded["properties"]["x"]["multipleOf"], 0.5);
        // A bare object stays open.
        assert!(
            constrained_schema(serde_json::json!({"type": "object"})).get("additionalProperties").is_none()
        );
    }

    #[test]
    fn required_calls_grammar_names_each_tool() {
        let tools = [
            serde_json::json!({"type": "function", "function": {"name": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}),
        ];
        let g = ToolCallFormat::Hermes.calls_grammar(&tools, false);
        assert!(g.starts_with("start: call\ncall: \"<tool_call>"), "{g}");
        let g = ToolCallFormat::Hermes.calls_grammar(&tools, true);
        assert!(g.starts_with("start: call (\"\\n\" call)*\n"), "{g}");
        assert!(g.contains(r#""const":"weather""#), "{g}");
    }
}
