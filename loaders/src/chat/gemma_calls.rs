//! Gemma 4's tool-call syntax: `<|tool_call>call:NAME{key:value,…}<tool_call|>`.
//!
//! The values are not JSON: keys are bare words, strings sit between two `<|"|>` tokens (so
//! they need no escapes), objects and arrays use JSON's brackets, numbers and `true`/`false`
//! are written as JSON writes them. The model's chat template renders past calls this way (its
//! `format_argument` macro), so the model writes new ones the same way.

use serde_json::{Map, Number, Value};

use super::tools::{ToolCall, take_blocks};

pub(super) const CALL_OPEN: &str = "<|tool_call>";
pub(super) const CALL_CLOSE: &str = "<tool_call|>";
/// What the model writes after its calls: the opening of the tool's response, which the
/// caller fills in. Generation stops there.
pub(super) const RESPONSE_OPEN: &str = "<|tool_response>";
const QUOTE: &str = "<|\"|>";

/// Takes the calls out of a reply; a block that does not parse stays text.
pub(super) fn parse(reply: &str, calls: &mut Vec<ToolCall>) -> String {
    let content = take_blocks(reply, CALL_OPEN, CALL_CLOSE, calls, parse_call);
    if calls.is_empty() {
        return content;
    }
    // The response marker the model wrote after its calls is not part of its answer.
    content.strip_suffix(RESPONSE_OPEN).unwrap_or(&content).trim().to_string()
}

/// `call:NAME{…}` into a call with JSON arguments.
fn parse_call(body: &str) -> Option<ToolCall> {
    let body = body.trim().strip_prefix("call:")?;
    let brace = body.find('{')?;
    let name = body[..brace].trim();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return None;
    }
    let mut reader = Reader { text: &body[brace..] };
    let arguments = reader.object()?;
    if !reader.text.trim().is_empty() {
        return None;
    }
    Some(ToolCall { id: String::new(), name: name.to_string(), arguments: arguments.to_string() })
}

/// A cursor over the value syntax.
struct Reader<'a> {
    text: &'a str,
}

impl Reader<'_> {
    fn skip_space(&mut self) {
        self.text = self.text.trim_start();
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_space();
        match self.text.strip_prefix(token) {
            Some(rest) => {
                self.text = rest;
                true
            }
            None => false,
        }
    }

    fn value(&mut self) -> Option<Value> {
        self.skip_space();
        if self.text.starts_with(QUOTE) {
            return self.string().map(Value::String);
        }
        match self.text.chars().next()? {
            '{' => self.object(),
            '[' => self.array(),
            _ => self.scalar(),
        }
    }

    fn string(&mut self) -> Option<String> {
        let inner = self.text.strip_prefix(QUOTE)?;
        let end = inner.find(QUOTE)?;
        self.text = &inner[end + QUOTE.len()..];
        Some(inner[..end].to_string())
    }

    /// A key: a bare word up to the colon, or a quoted one (the template quotes keys inside
    /// nested mappings of some values).
    fn key(&mut self) -> Option<String> {
        self.skip_space();
        if self.text.starts_with(QUOTE) {
            return self.string();
        }
        let end = self.text.find(':')?;
        let key = self.text[..end].trim();
        if key.is_empty() || key.contains(['{', '}', '[', ']', ',']) {
            return None;
        }
        self.text = &self.text[end..];
        Some(key.to_string())
    }

    fn object(&mut self) -> Option<Value> {
        if !self.eat("{") {
            return None;
        }
        let mut members = Map::new();
        if self.eat("}") {
            return Some(Value::Object(members));
        }
        loop {
            let key = self.key()?;
            if !self.eat(":") {
                return None;
            }
            members.insert(key, self.value()?);
            if self.eat("}") {
                return Some(Value::Object(members));
            }
            if !self.eat(",") {
                return None;
            }
        }
    }

    fn array(&mut self) -> Option<Value> {
        if !self.eat("[") {
            return None;
        }
        let mut items = Vec::new();
        if self.eat("]") {
            return Some(Value::Array(items));
        }
        loop {
            items.push(self.value()?);
            if self.eat("]") {
                return Some(Value::Array(items));
            }
            if !self.eat(",") {
                return None;
            }
        }
    }

    /// A number, boolean or null, written bare up to the next delimiter.
    fn scalar(&mut self) -> Option<Value> {
        let end = self.text.find([',', '}', ']']).unwrap_or(self.text.len());
        let word = self.text[..end].trim();
        self.text = &self.text[end..];
        match word {
            "true" | "True" => Some(Value::Bool(true)),
            "false" | "False" => Some(Value::Bool(false)),
            // Jinja writes Python's None for a null argument.
            "null" | "None" | "none" => Some(Value::Null),
            _ => number(word),
        }
    }
}

fn number(word: &str) -> Option<Value> {
    if let Ok(i) = word.parse::<i64>() {
        return Some(Value::Number(i.into()));
    }
    let f = word.parse::<f64>().ok()?;
    Number::from_f64(f).map(Value::Number)
}

/// A Lark grammar for a reply made only of calls, each to one of `tools` with arguments in
/// Gemma's syntax that follow the tool's parameter schema. The call markers and the string
/// quote are the model's control tokens, which Lark names as `<|…>` without quotes.
pub(super) fn calls_grammar(tools: &[Value], parallel: bool) -> String {
    let mut rules = RuleSet::default();
    let mut alternatives = Vec::new();
    for tool in tools {
        let Some(function) = tool.get("function") else { continue };
        let Some(name) = function.get("name").and_then(Value::as_str) else { continue };
        let empty = serde_json::json!({"type": "object"});
        let params = function.get("parameters").unwrap_or(&empty);
        let arguments = rules.object_rule(params);
        alternatives.push(format!("\"call:{}\" {arguments}", lark_escape(name)));
    }
    let repeat = if parallel { "+" } else { "" };
    let mut grammar = format!(
        "start: call{repeat}\ncall: {CALL_OPEN} call_body {CALL_CLOSE}\ncall_body: {}\n",
        alternatives.join(" | ")
    );
    grammar.push_str(&rules.text);
    grammar.push_str(&format!(
        "string: {QUOTE} STRING_TEXT? {QUOTE}\nSTRING_TEXT: /[^\\x00]+/\n\
         any_value: string | NUMBER | \"true\" | \"false\" | \"null\" | any_object | any_array\n\
         any_object: \"{{\" (KEY \":\" any_value (\",\" KEY \":\" any_value)*)? \"}}\"\n\
         any_array: \"[\" (any_value (\",\" any_value)*)? \"]\"\n\
         KEY: /[A-Za-z_][A-Za-z0-9_]*/\n\
         NUMBER: /-?(0|[1-9][0-9]*)(\\.[0-9]+)?([eE][+-]?[0-9]+)?/\n\
         INTEGER: /-?(0|[1-9][0-9]*)/\n"
    ));
    grammar
}

/// Lark rules written for schemas, numbered as they are made.
#[derive(Default)]
struct RuleSet {
    text: String,
    count: usize,
}

impl RuleSet {
    fn add(&mut self, body: String) -> String {
        let name = format!("schema_{}", self.count);
        self.count += 1;
        self.text.push_str(&format!("{name}: {body}\n"));
        name
    }

    /// The rule for a value under `schema`: the types Gemma's syntax has, anything else as
    /// any value.
    fn value_rule(&mut self, schema: &Value) -> String {
        if let Some(choices) = schema.get("enum").and_then(Value::as_array) {
            let literals: Vec<String> = choices.iter().map(literal).collect();
            return self.add(literals.join(" | "));
        }
        match schema.get("type").and_then(Value::as_str) {
            Some("string") => "string".into(),
            Some("number") => "NUMBER".into(),
            Some("integer") => "INTEGER".into(),
            Some("boolean") => self.add("\"true\" | \"false\"".into()),
            Some("null") => self.add("\"null\"".into()),
            Some("array") => {
                let item = match schema.get("items") {
                    Some(items) => self.value_rule(items),
                    None => "any_value".into(),
                };
                self.add(format!("\"[\" ({item} (\",\" {item})*)? \"]\""))
            }
            Some("object") if schema.get("properties").is_some() => self.object_rule(schema),
            Some("object") => "any_object".into(),
            _ => "any_value".into(),
        }
    }

    /// An object with the schema's properties in the order the template writes them (sorted
    /// by name), the required ones present, the others optional; an object schema without
    /// properties takes any keys.
    fn object_rule(&mut self, schema: &Value) -> String {
        let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
            return "any_object".into();
        };
        let required: Vec<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut names: Vec<&String> = properties.keys().collect();
        names.sort();
        let members: Vec<(String, bool)> = names
            .iter()
            .map(|name| {
                let value = self.value_rule(&properties[name.as_str()]);
                (format!("\"{}:\" {value}", lark_escape(name)), required.contains(&name.as_str()))
            })
            .collect();
        // Each alternative starts at one member, all before it absent (so optional).
        let mut starts = Vec::new();
        for (first, (member, is_required)) in members.iter().enumerate() {
            let mut sequence = member.clone();
            for (later, later_required) in &members[first + 1..] {
                let piece = format!("\",\" {later}");
                sequence.push_str(&if *later_required {
                    format!(" {piece}")
                } else {
                    format!(" ({piece})?")
                });
            }
            starts.push(sequence);
            if *is_required {
                break;
            }
        }
        let all_optional = members.iter().all(|(_, r)| !r);
        let body = match (starts.is_empty(), all_optional) {
            (true, _) => "\"{\" \"}\"".to_string(),
            (false, true) => format!("\"{{\" ({})? \"}}\"", starts.join(" | ")),
            (false, false) => format!("\"{{\" ({}) \"}}\"", starts.join(" | ")),
        };
        self.add(body)
    }
}

/// An enum member as Gemma writes it: strings quoted with the quote token, others as JSON.
fn literal(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{QUOTE} \"{}\" {QUOTE}", lark_escape(s)),
        other => format!("\"{}\"", lark_escape(&other.to_string())),
    }
}

/// `text` inside a Lark string literal.
fn lark_escape(text: &str) -> String {
    serde_json::to_string(text).map(|quoted| quoted[1..quoted.len() - 1].to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_with_nested_values() {
        let reply = "Checking.<|tool_call>call:weather{city:<|\"|>Oslo, Norway<|\"|>,days:3,metric:true,\
                     hours:[9,12.5],opts:{lang:<|\"|>nb<|\"|>,extra:None}}<tool_call|><|tool_call>call:time{}<tool_call|><|tool_response>";
        let mut calls = Vec::new();
        let content = parse(reply, &mut calls);
        assert_eq!(content, "Checking.");
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].name, "weather");
        let args: Value = serde_json::from_str(&calls[0].arguments).unwrap();
        assert_eq!(
            args,
            serde_json::json!({"city": "Oslo, Norway", "days": 3, "metric": true, "hours": [9, 12.5],
                               "opts": {"lang": "nb", "extra": null}})
        );
        assert_eq!((calls[1].name.as_str(), calls[1].arguments.as_str()), ("time", "{}"));
    }

    #[test]
    fn malformed_and_truncated_calls_stay_text() {
        for reply in [
            "<|tool_call>call:weather{city:<|\"|>Oslo<tool_call|>",
            "<|tool_call>weather{}<tool_call|>",
            "<|tool_call>call:weather{city:<|\"|>Os",
            "<|tool_call>call:weather{city Oslo}<tool_call|>",
            "<|tool_call>call:weather{a:1} trailing<tool_call|>",
        ] {
            let mut calls = Vec::new();
            assert_eq!(parse(reply, &mut calls), reply, "{reply}");
            assert!(calls.is_empty(), "{reply}");
        }
    }

    #[test]
    fn grammar_orders_members_and_marks_optional_ones() {
        let tools = [serde_json::json!({"type": "function", "function": {"name": "weather", "parameters": {
            "type": "object",
            "properties": {"days": {"type": "integer"}, "city": {"type": "string"},
                           "unit": {"type": "string", "enum": ["C", "F"]}},
            "required": ["city"]}}})];
        let g = calls_grammar(&tools, false);
        assert!(g.starts_with("start: call\ncall: <|tool_call> call_body <tool_call|>\n"), "{g}");
        assert!(g.contains("call_body: \"call:weather\" schema_1\n"), "{g}");
        // city is required and first in name order, so every object starts with it.
        assert!(g.contains("schema_1: \"{\" (\"city:\" string (\",\" \"days:\" INTEGER)? (\",\" \"unit:\" schema_0)?) \"}\""), "{g}");
        assert!(g.contains("schema_0: <|\"|> \"C\" <|\"|> | <|\"|> \"F\" <|\"|>"), "{g}");
        assert!(calls_grammar(&tools, true).starts_with("start: call+\n"));
    }
}
