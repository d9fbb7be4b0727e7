//! The tool fields of a chat request: `tools`, `tool_choice`, `parallel_tool_calls`, and the
//! tool calls and tool replies inside `messages`.

use serde::Deserialize;
use serde_json::Value;
use wllm::loaders::chat::{ToolCall, ToolCallFormat};

use super::errors::ApiError;

/// Which calls the reply may or must make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// The model decides: text, calls, or both.
    Auto,
    /// At least one call, to any of the tools.
    Required,
    /// A call to this function.
    Named(String),
}

/// Tools a request offers, checked.
#[derive(Debug, Clone)]
pub struct Tools {
    /// The tool objects as given (the template renders them).
    pub list: Vec<Value>,
    pub choice: ToolChoice,
    pub parallel: bool,
}

impl Tools {
    /// The grammar a `required` or named choice puts on the reply, in the model's format;
    /// for `auto`, only the generic format's (its replies are always JSON).
    pub fn grammar(&self, format: ToolCallFormat) -> Option<String> {
        match &self.choice {
            ToolChoice::Auto => format.auto_grammar(&self.list, self.parallel),
            ToolChoice::Required => Some(format.calls_grammar(&self.list, self.parallel)),
            ToolChoice::Named(name) => {
                let chosen: Vec<Value> =
                    self.list.iter().filter(|t| function_name(t) == Some(name.as_str())).cloned().collect();
                Some(format.calls_grammar(&chosen, false))
            }
        }
    }
}

fn function_name(tool: &Value) -> Option<&str> {
    tool.get("function")?.get("name")?.as_str()
}

/// `tools`, `tool_choice` and `parallel_tool_calls` of a request; `None` when no tools are
/// offered or `tool_choice` is `none`.
pub fn tools(
    tools: Option<&Value>,
    choice: Option<&Value>,
    parallel: Option<bool>,
) -> Result<Option<Tools>, ApiError> {
    let list = match tools {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.clone(),
        Some(v) => return Err(ApiError::field("tools", format!("tools is {v}: expected an array of tools"))),
    };
    let mut names = Vec::new();
    for (i, t) in list.iter().enumerate() {
        let name = t.get("function").and_then(|f| f.get("name")).and_then(Value::as_str);
        match (t.get("type").and_then(Value::as_str), name) {
            (Some("function"), Some(name)) if !name.is_empty() => names.push(name.to_string()),
            _ => {
                return Err(ApiError::field(
                    format!("tools[{i}]"),
                    format!(
                        "tools[{i}]: expected {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}"
                    ),
                ));
            }
        }
    }
    let choice = match choice {
        None | Some(Value::Null) => ToolChoice::Auto,
        Some(Value::String(s)) if s == "none" => return Ok(None),
        Some(Value::String(s)) if s == "auto" => ToolChoice::Auto,
        Some(Value::String(s)) if s == "required" => ToolChoice::Required,
        Some(v) => match v.get("function").and_then(|f| f.get("name")).and_then(Value::as_str) {
            Some(name) if names.iter().any(|n| n == name) => ToolChoice::Named(name.to_string()),
            Some(name) => {
                return Err(ApiError::field(
                    "tool_choice",
                    format!("tool_choice names {name:?}, which is not in tools"),
                ));
            }
            None => {
                return Err(ApiError::field(
                    "tool_choice",
                    format!(
                        "tool_choice is {v}: expected \"none\", \"auto\", \"required\" or {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}"
                    ),
                ));
            }
        },
    };
    if list.is_empty() {
        return match choice {
            ToolChoice::Auto => Ok(None),
            _ => Err(ApiError::field("tool_choice", "tool_choice needs tools")),
        };
    }
    Ok(Some(Tools { list, choice, parallel: parallel.unwrap_or(true) }))
}

/// A call inside an assistant message, as OpenAI writes it.
#[derive(Deserialize, Debug)]
pub struct MessageCall {
    #[serde(default)]
    pub id: String,
    pub function: MessageFunction,
}

#[derive(Deserialize, Debug)]
pub struct MessageFunction {
    pub name: String,
    /// A JSON text; some clients send the object itself.
    pub arguments: Value,
}

/// The calls of an assistant message, for the template.
pub fn message_calls(calls: &[MessageCall]) -> Vec<ToolCall> {
    calls
        .iter()
        .map(|c| ToolCall {
            id: c.id.clone(),
            name: c.function.name.clone(),
            arguments: match &c.function.arguments {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn weather() -> Value {
        json!([{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}])
    }

    #[test]
    fn choices_and_refusals() {
        let t = tools(Some(&weather()), None, None).unwrap().unwrap();
        assert_eq!((t.choice, t.parallel), (ToolChoice::Auto, true));
        assert!(tools(Some(&weather()), Some(&json!("none")), None).unwrap().is_none());
        let named = json!({"type": "function", "function": {"name": "weather"}});
        let t = tools(Some(&weather()), Some(&named), Some(false)).unwrap().unwrap();
        assert_eq!(t.choice, ToolChoice::Named("weather".into()));
        assert!(t.grammar(ToolCallFormat::Hermes).unwrap().contains("weather"));
        let param = |r: Result<Option<Tools>, ApiError>| r.unwrap_err().param;
        let other = json!({"type": "function", "function": {"name": "time"}});
        assert_eq!(param(tools(Some(&weather()), Some(&other), None)).as_deref(), Some("tool_choice"));
        assert_eq!(param(tools(Some(&json!([{"type": "web"}])), None, None)).as_deref(), Some("tools[0]"));
        assert_eq!(param(tools(None, Some(&json!("required")), None)).as_deref(), Some("tool_choice"));
    }
}
