//! Tool calls for models whose chat template shows no tools (Gemma 2 and 3, ChatML on a base
//! model, most small models): the tools are described in a system message, the reply is
//! constrained to one JSON object that either calls tools or answers, and past calls and tool
//! answers are written into the conversation as JSON text the template can carry as plain
//! messages. This is the fallback llama.cpp's server also uses for such templates.

use serde_json::{Value, json};

use super::ChatMessage;
use super::tools::ToolCall;

/// The reply's JSON schema: a call (`{"tool_call": {"name", "arguments"}}`), several calls
/// (`{"tool_calls": [...]}`) when `parallel`, or, when `allow_answer`, a plain answer
/// (`{"response": "..."}`). Each call names one of `tools` and has arguments valid under its
/// parameter schema.
pub fn generic_schema(tools: &[Value], parallel: bool, allow_answer: bool) -> Value {
    let calls: Vec<Value> = tools
        .iter()
        .filter_map(|tool| {
            let function = tool.get("function")?;
            let parameters = function.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object"}));
            Some(json!({
                "type": "object",
                "properties": {"name": {"const": function.get("name")?}, "arguments": parameters},
                "required": ["name", "arguments"],
                "additionalProperties": false,
            }))
        })
        .collect();
    let call = json!({"anyOf": calls});
    let calling = if parallel {
        json!({"type": "object",
               "properties": {"tool_calls": {"type": "array", "items": call, "minItems": 1}},
               "required": ["tool_calls"], "additionalProperties": false})
    } else {
        json!({"type": "object", "properties": {"tool_call": call},
               "required": ["tool_call"], "additionalProperties": false})
    };
    if !allow_answer {
        return calling;
    }
    let answer = json!({"type": "object", "properties": {"response": {"type": "string"}},
                        "required": ["response"], "additionalProperties": false});
    json!({"anyOf": [calling, answer]})
}

/// What the system message tells the model about `tools` and the reply's shape.
fn instructions(tools: &[Value], parallel: bool) -> String {
    let call = if parallel {
        r#"{"tool_calls": [{"name": "<tool name>", "arguments": {...}}, ...]}"#
    } else {
        r#"{"tool_call": {"name": "<tool name>", "arguments": {...}}}"#
    };
    let listed: Vec<String> = tools
        .iter()
        .filter_map(|t| t.get("function"))
        .map(|f| {
            json!({"name": f.get("name"), "description": f.get("description"), "parameters": f.get("parameters")})
                .to_string()
        })
        .collect();
    format!(
        "You can use these tools:\n{}\n\nReply with one JSON object and nothing else: {call} to call \
         tools, or {{\"response\": \"<your answer>\"}} to answer directly. A tool's result comes \
         back as {{\"tool_response\": ...}}.",
        listed.join("\n")
    )
}

/// The conversation as a template without tool support can render it: past calls become the
/// assistant's JSON reply, tool answers become user turns holding `{"tool_response": …}`
/// (merged when several follow each other, for templates that want roles to alternate), and
/// when `tools` are offered their description goes into the system message, or, with
/// `fold_system` (templates that refuse a system role), ahead of the first user turn.
pub fn generic_messages(
    messages: &[ChatMessage],
    tools: &[Value],
    parallel: bool,
    fold_system: bool,
) -> Vec<ChatMessage> {
    let mut out: Vec<ChatMessage> = Vec::new();
    let mut last_calls: &[ToolCall] = &[];
    for message in messages {
        let converted = match message.role.as_str() {
            "assistant" if !message.tool_calls.is_empty() => {
                last_calls = &message.tool_calls;
                let text = calls_text(&message.tool_calls);
                let content = match message.content.trim() {
                    "" => text,
                    said => format!("{said}\n{text}"),
                };
                ChatMessage::assistant(content)
            }
            "tool" => {
                let name = message.name.clone().or_else(|| {
                    let id = message.tool_call_id.as_deref()?;
                    last_calls.iter().find(|c| c.id == id).map(|c| c.name.clone())
                });
                let answer = json!({"tool_response": {"name": name, "tool_call_id": message.tool_call_id,
                                                       "content": message.content}});
                match out.last_mut() {
                    Some(previous)
                        if previous.role == "user" && previous.content.starts_with("{\"tool_response\"") =>
                    {
                        previous.content = format!("{}\n{answer}", previous.content);
                        continue;
                    }
                    _ => ChatMessage::user(answer.to_string()),
                }
            }
            _ => message.clone(),
        };
        out.push(converted);
    }
    if !tools.is_empty() {
        add_instructions(&mut out, instructions(tools, parallel), fold_system);
    }
    out
}

fn add_instructions(messages: &mut Vec<ChatMessage>, text: String, fold_system: bool) {
    match messages.first_mut() {
        Some(first) if first.role == "system" || first.role == "developer" => {
            first.content = format!("{}\n\n{text}", first.content);
        }
        _ if !fold_system => messages.insert(0, ChatMessage::system(text)),
        _ => match messages.iter_mut().find(|m| m.role == "user") {
            Some(user) => user.content = format!("{text}\n\n{}", user.content),
            None => messages.insert(0, ChatMessage::user(text)),
        },
    }
    if fold_system && messages.first().is_some_and(|m| m.role == "system" || m.role == "developer") {
        let system = messages.remove(0);
        match messages.iter_mut().find(|m| m.role == "user") {
            Some(user) => user.content = format!("{}\n\n{}", system.content, user.content),
            None => messages.insert(0, ChatMessage::user(system.content)),
        }
    }
}

/// Past calls as the JSON reply that made them.
fn calls_text(calls: &[ToolCall]) -> String {
    let call = |c: &ToolCall| {
        let arguments =
            serde_json::from_str::<Value>(&c.arguments).unwrap_or(Value::String(c.arguments.clone()));
        json!({"name": c.name, "arguments": arguments})
    };
    match calls {
        [one] => json!({"tool_call": call(one)}).to_string(),
        many => json!({"tool_calls": many.iter().map(call).collect::<Vec<_>>()}).to_string(),
    }
}

/// The answer of a reply in the generic format as far as it has arrived: `Some` once the reply
/// is visibly `{"response": "…`, with the JSON string decoded up to its last complete
/// character (so a streamed answer is shown as it is written, not only when it ends).
pub fn answer_so_far(reply: &str) -> Option<String> {
    let rest = reply.trim_start().strip_prefix('{')?.trim_start();
    let rest = rest.strip_prefix("\"response\"")?.trim_start();
    let rest = rest.strip_prefix(':')?.trim_start();
    let body = rest.strip_prefix('"')?;
    let mut answer = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => break,
            '\\' => {
                let escaped = match chars.next() {
                    Some('n') => '\n',
                    Some('t') => '\t',
                    Some('r') => '\r',
                    Some('b') => '\u{8}',
                    Some('f') => '\u{c}',
                    Some('u') => match unicode_escape(&mut chars) {
                        Some(c) => c,
                        None => break,
                    },
                    Some(other) => other,
                    None => break,
                };
                answer.push(escaped);
            }
            c => answer.push(c),
        }
    }
    Some(answer)
}

/// The four hex digits of a `\u` escape (and the low half of a surrogate pair after a high
/// one); `None` while they have not all arrived.
fn unicode_escape(chars: &mut std::str::Chars<'_>) -> Option<char> {
    let hex = |chars: &mut std::str::Chars<'_>| {
        let digits: String = chars.by_ref().take(4).collect();
        (digits.len() == 4).then(|| u32::from_str_radix(&digits, 16).ok()).flatten()
    };
    let high = hex(chars)?;
    if !(0xD800..0xDC00).contains(&high) {
        return Some(char::from_u32(high).unwrap_or(char::REPLACEMENT_CHARACTER));
    }
    if chars.next()? != '\\' || chars.next()? != 'u' {
        return Some(char::REPLACEMENT_CHARACTER);
    }
    let low = hex(chars)?;
    let code = 0x10000 + ((high - 0xD800) << 10) + (low.wrapping_sub(0xDC00) & 0x3FF);
    Some(char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER))
}

/// Reads a reply in the JSON shape of [`generic_schema`]: its calls, or its answer as the
/// content. A reply that is not that shape (cut off by the token limit) stays text.
pub(super) fn parse(reply: &str, calls: &mut Vec<ToolCall>) -> String {
    let Ok(Value::Object(object)) = serde_json::from_str::<Value>(reply.trim()) else {
        // Cut off inside an answer: the answer so far, as it was streamed.
        return answer_so_far(reply).unwrap_or_else(|| reply.to_string());
    };
    let listed: Vec<&Value> =
        match (object.get("tool_calls"), object.get("tool_call"), object.get("response")) {
            (Some(Value::Array(many)), _, _) => many.iter().collect(),
            (_, Some(one @ Value::Object(_)), _) => vec![one],
            (_, _, Some(Value::String(answer))) => return answer.clone(),
            _ => return reply.to_string(),
        };
    let found: Option<Vec<ToolCall>> = listed.into_iter().map(super::tools::call_of_arguments).collect();
    match found {
        Some(found) => {
            calls.extend(found);
            String::new()
        }
        None => reply.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weather() -> Value {
        json!({"type": "function", "function": {"name": "weather", "description": "Weather now",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}})
    }

    #[test]
    fn replies_parse_to_calls_or_an_answer() {
        let mut calls = Vec::new();
        let one = r#"{"tool_call": {"name": "weather", "arguments": {"city": "Oslo"}}}"#;
        assert_eq!(parse(one, &mut calls), "");
        assert_eq!((calls[0].name.as_str(), calls[0].arguments.as_str()), ("weather", r#"{"city":"Oslo"}"#));
        let many =
            r#"{"tool_calls": [{"name": "a", "arguments": {}}, {"name": "b", "arguments": {"x": 1}}]}"#;
        assert_eq!(parse(many, &mut calls), "");
        assert_eq!(calls.len(), 3);
        assert_eq!(parse(r#" {"response": "Hello there."} "#, &mut calls), "Hello there.");
        for raw in
            [r#"{"tool_call": {"name": "weath"#, "plain words", r#"{"tool_calls": [{"arguments": {}}]}"#]
        {
            assert_eq!(parse(raw, &mut calls), raw);
        }
        assert_eq!(calls.len(), 3);
    }

    #[test]
    fn answers_are_decoded_as_they_arrive() {
        let reply = r#"{"response": "Hi \"Anna\",\nsee \u00e9 and \ud83d\ude00."}"#;
        let mut shown = String::new();
        for cut in 0..=reply.len() {
            if let Some(so_far) = answer_so_far(&reply[..cut]) {
                assert!(
                    so_far.starts_with(&shown) || shown.ends_with('\u{fffd}'),
                    "cut {cut}: {so_far:?} after {shown:?}"
                );
                shown = so_far;
            }
        }
        assert_eq!(shown, "Hi \"Anna\",\nsee é and 😀.");
        assert_eq!(answer_so_far(r#"{"tool_call": {"#), None);
        assert_eq!(answer_so_far(r#"{"resp"#), None);
        // Cut off by the token limit: the answer so far, not the envelope.
        assert_eq!(parse(r#"{"response": "Hello, wor"#, &mut Vec::new()), "Hello, wor");
    }

    #[test]
    fn history_is_rewritten_as_json_turns() {
        let call =
            ToolCall { id: "c1".into(), name: "weather".into(), arguments: r#"{"city":"Oslo"}"#.into() };
        let messages = vec![
            ChatMessage::user("Weather?"),
            ChatMessage { role: "assistant".into(), tool_calls: vec![call], ..Default::default() },
            ChatMessage {
                role: "tool".into(),
                content: "3 C".into(),
                tool_call_id: Some("c1".into()),
                ..Default::default()
            },
            ChatMessage {
                role: "tool".into(),
                content: "windy".into(),
                tool_call_id: Some("c1".into()),
                ..Default::default()
            },
        ];
        let out = generic_messages(&messages, &[weather()], false, false);
        let roles: Vec<&str> = out.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "user"]);
        assert!(out[0].content.contains(r#""name":"weather""#), "{}", out[0].content);
        // Compared as JSON: serde_json's key order depends on the features a build unifies.
        let past: Value = serde_json::from_str(&out[2].content).unwrap();
        assert_eq!(past, json!({"tool_call": {"name": "weather", "arguments": {"city": "Oslo"}}}));
        assert!(
            out[3].content.contains(r#""name":"weather""#) && out[3].content.contains("windy"),
            "{}",
            out[3].content
        );
        let folded = generic_messages(&messages, &[weather()], false, true);
        assert_eq!(folded[0].role, "user");
        assert!(
            folded[0].content.starts_with("You can use these tools")
                && folded[0].content.ends_with("Weather?")
        );
    }

    #[test]
    fn schema_allows_an_answer_only_in_auto() {
        let required = generic_schema(&[weather()], false, false);
        assert_eq!(required["required"], json!(["tool_call"]));
        let auto = generic_schema(&[weather()], true, true);
        assert_eq!(auto["anyOf"][1]["required"], json!(["response"]));
        assert_eq!(
            auto["anyOf"][0]["properties"]["tool_calls"]["items"]["anyOf"][0]["properties"]["name"]["const"],
            "weather"
        );
    }
}
