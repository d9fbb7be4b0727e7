//! Gemma 4's tool calls through its own chat template: the tools and a past call rendered as the
//! template writes them, the format detected from the template, and replies in that syntax
//! parsed back, whole and streamed.

use std::path::PathBuf;

use wllm_loaders::chat::{
    ChatMessage, ChatTemplate, RenderOptions, ToolCall, ToolCallFormat, call_start, parse_tool_calls,
};

fn gemma4() -> ChatTemplate {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/chat/templates/google-gemma-4-31B-it.jinja");
    ChatTemplate::from_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn weather_tool() -> serde_json::Value {
    serde_json::json!({"type": "function", "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "City name"},
            "unit": {"type": "string", "enum": ["C", "F"]}},
            "required": ["city"]}}})
}

#[test]
fn gemma4_template_is_detected_and_renders_tools_and_calls() {
    let template = gemma4();
    assert_eq!(template.tool_call_format(), Some(ToolCallFormat::Gemma4));
    let call =
        ToolCall { id: "c1".into(), name: "get_weather".into(), arguments: r#"{"city":"Oslo"}"#.into() };
    let messages = vec![
        ChatMessage::user("Weather in Oslo?"),
        ChatMessage { role: "assistant".into(), tool_calls: vec![call], ..Default::default() },
        ChatMessage {
            role: "tool".into(),
            content: "{\"temp\": 3}".into(),
            tool_call_id: Some("c1".into()),
            ..Default::default()
        },
    ];
    let options =
        RenderOptions { add_generation_prompt: true, tools: vec![weather_tool()], ..Default::default() };
    let text = template.render_with(&messages, &options).expect("render");
    assert!(
        text.contains("<|tool>declaration:get_weather{description:<|\"|>Current weather in a city<|\"|>"),
        "{text}"
    );
    // The past call in the syntax the parser reads, followed by the tool's answer.
    let past = "<|tool_call>call:get_weather{city:<|\"|>Oslo<|\"|>}<tool_call|>";
    assert!(text.contains(past), "{text}");
    assert!(
        text.contains(
            "<|tool_response>response:get_weather{value:<|\"|>{\"temp\": 3}<|\"|>}<tool_response|>"
        ),
        "{text}"
    );
    let mut calls = Vec::new();
    calls.extend(parse_tool_calls(ToolCallFormat::Gemma4, past, "").calls);
    assert_eq!(calls[0].arguments, r#"{"city":"Oslo"}"#);
}

#[test]
fn gemma4_replies_parse_whole_and_streamed() {
    let reply =
        "Let me look.<|tool_call>call:get_weather{city:<|\"|>São Paulo<|\"|>,unit:<|\"|>C<|\"|>}<tool_call|>";
    let parsed = parse_tool_calls(ToolCallFormat::Gemma4, reply, "id-");
    assert_eq!(parsed.content, "Let me look.");
    assert_eq!(parsed.calls.len(), 1);
    assert_eq!(parsed.calls[0].id, "id-call_0");
    assert_eq!(parsed.calls[0].arguments, r#"{"city":"São Paulo","unit":"C"}"#);
    // Streamed, the text before the call is released and the call held back at every cut.
    for cut in 1..reply.len() {
        if !reply.is_char_boundary(cut) {
            continue;
        }
        let shown = call_start(ToolCallFormat::Gemma4, &reply[..cut]).unwrap_or(cut);
        assert!(shown <= "Let me look.".len(), "cut {cut}: {shown}");
    }
    // Cut off by the token limit: the text comes back as written.
    let cut_off = "<|tool_call>call:get_weather{city:<|\"|>Sã";
    let parsed = parse_tool_calls(ToolCallFormat::Gemma4, cut_off, "");
    assert_eq!((parsed.content.as_str(), parsed.calls.len()), (cut_off, 0));
    assert_eq!(ToolCallFormat::Gemma4.stop_markers(), ["<|tool_response>"]);
}
