//! Reasoning: the gpt-oss and Qwen3 templates rendered with their reasoning variables, and the
//! parser that splits replies (written as gpt-oss and Qwen3 write them) into reasoning and
//! answer, fed whole, in every split into two pieces, and one byte at a time.

use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use wllm_loaders::chat::{
    ChatMessage, ChatTemplate, ReasoningDelta, ReasoningEffort, ReasoningFormat, ReasoningParser,
    RenderOptions,
};

fn template(name: &str) -> ChatTemplate {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/chat/templates").join(name);
    ChatTemplate::from_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn gpt_oss() -> ChatTemplate {
    template("openai-gpt-oss-120b.jinja")
}

fn qwen3() -> ChatTemplate {
    template("Qwen-Qwen3-0.6B.jinja")
}

/// 2024-07-26 13:05:09 UTC, so gpt-oss's `Current date:` line is fixed.
fn options(effort: Option<ReasoningEffort>) -> RenderOptions {
    RenderOptions {
        add_generation_prompt: true,
        now: Some(UNIX_EPOCH + Duration::from_secs(1_721_999_109)),
        reasoning_effort: effort,
        ..Default::default()
    }
}

fn gpt_oss_system(effort: &str) -> String {
    format!(
        "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\nKnowledge cutoff: 2024-06\nCurrent date: 2024-07-26\n\nReasoning: {effort}\n\n# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|>"
    )
}

#[test]
fn gpt_oss_template_renders_harmony_with_the_reasoning_effort() {
    let t = gpt_oss();
    let msgs = [ChatMessage::user("hi")];
    let high = t.render_with(&msgs, &options(Some(ReasoningEffort::High))).unwrap();
    assert_eq!(
        high,
        format!("{}<|start|>user<|message|>hi<|end|><|start|>assistant", gpt_oss_system("high"))
    );
    let low = t.render_with(&msgs, &options(Some(ReasoningEffort::Low))).unwrap();
    assert_eq!(low, format!("{}<|start|>user<|message|>hi<|end|><|start|>assistant", gpt_oss_system("low")));
    // Without an effort the template's own default applies.
    let default = t.render_with(&msgs, &options(None)).unwrap();
    assert_eq!(
        default,
        format!("{}<|start|>user<|message|>hi<|end|><|start|>assistant", gpt_oss_system("medium"))
    );
}

#[test]
fn gpt_oss_template_renders_a_conversation() {
    let t = gpt_oss();
    let msgs = [
        ChatMessage::system("Answer briefly."),
        ChatMessage::user("Capital of France?"),
        ChatMessage::assistant("Paris."),
        ChatMessage::user("And of Italy?"),
    ];
    let got = t.render_with(&msgs, &options(Some(ReasoningEffort::Medium))).unwrap();
    let want = format!(
        "{}<|start|>developer<|message|># Instructions\n\nAnswer briefly.\n\n<|end|><|start|>user<|message|>Capital of France?<|end|><|start|>assistant<|channel|>final<|message|>Paris.<|end|><|start|>user<|message|>And of Italy?<|end|><|start|>assistant",
        gpt_oss_system("medium")
    );
    assert_eq!(got, want);
    // Without the generation prompt the last assistant message is a finished one.
    let done = [ChatMessage::user("hi"), ChatMessage::assistant("Hello!")];
    let got = t.render_with(&done, &RenderOptions { add_generation_prompt: false, ..options(None) }).unwrap();
    assert!(
        got.ends_with(
            "<|start|>user<|message|>hi<|end|><|start|>assistant<|channel|>final<|message|>Hello!<|return|>"
        ),
        "{got}"
    );
}

#[test]
fn gpt_oss_template_refuses_raw_channels_in_a_reply() {
    let msgs = [
        ChatMessage::user("hi"),
        ChatMessage::assistant("<|channel|>analysis<|message|>x<|end|>"),
        ChatMessage::user("again"),
    ];
    let err = gpt_oss().render_with(&msgs, &options(None)).unwrap_err();
    assert!(err.to_string().contains("<|channel|> tags"), "{err}");
}

#[test]
fn qwen3_template_follows_enable_thinking() {
    let t = qwen3();
    let msgs = [ChatMessage::system("Be terse."), ChatMessage::user("hi")];
    let base =
        "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n";
    assert_eq!(t.render_with(&msgs, &options(None)).unwrap(), base);
    let mut off = options(None);
    off.extra.insert("enable_thinking".into(), false.into());
    assert_eq!(t.render_with(&msgs, &off).unwrap(), format!("{base}<think>\n\n</think>\n\n"));
    // The template drops the reasoning of past replies.
    let past = [
        ChatMessage::user("hi"),
        ChatMessage::assistant("<think>\nGreet back.\n</think>\n\nHello!"),
        ChatMessage::user("bye"),
    ];
    let got = t.render_with(&past, &options(None)).unwrap();
    assert!(got.contains("<|im_start|>assistant\nHello!<|im_end|>"), "{got}");
    // The effort is a variable Qwen3 does not read.
    assert_eq!(t.render_with(&msgs, &options(Some(ReasoningEffort::High))).unwrap(), base);
}

#[test]
fn formats_are_detected_from_templates() {
    assert_eq!(gpt_oss().reasoning_format(), ReasoningFormat::Harmony);
    assert_eq!(qwen3().reasoning_format(), ReasoningFormat::Think);
    assert_eq!(
        template("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja").reasoning_format(),
        ReasoningFormat::Think
    );
    assert_eq!(template("Qwen-Qwen2.5-7B-Instruct.jinja").reasoning_format(), ReasoningFormat::None);
    assert_eq!(template("meta-llama-Llama-3.1-8B-Instruct.jinja").reasoning_format(), ReasoningFormat::None);
}

#[test]
fn efforts_parse() {
    assert_eq!("high".parse::<ReasoningEffort>(), Ok(ReasoningEffort::High));
    assert_eq!("low".parse::<ReasoningEffort>().unwrap().to_string(), "low");
    assert!("max".parse::<ReasoningEffort>().unwrap_err().to_string().contains("\"max\""));
}

fn parse_pieces(parser: &ReasoningParser, pieces: &[&str]) -> ReasoningDelta {
    let mut p = parser.clone();
    let mut all = ReasoningDelta::default();
    for piece in pieces {
        all.extend(p.push(piece));
    }
    all.extend(p.finish());
    assert_eq!(p.raw(), pieces.concat(), "the raw text keeps every piece");
    all
}

/// Parses `text` whole, split in two at every char boundary, and a char at a time, and checks
/// that each gives `reasoning` and `content`.
fn check(parser: ReasoningParser, text: &str, reasoning: &str, content: &str) {
    let want = (reasoning, content);
    let got = parse_pieces(&parser, &[text]);
    assert_eq!((got.reasoning.as_str(), got.content.as_str()), want, "whole");
    for at in (0..=text.len()).filter(|&i| text.is_char_boundary(i)) {
        let got = parse_pieces(&parser, &[&text[..at], &text[at..]]);
        assert_eq!((got.reasoning.as_str(), got.content.as_str()), want, "split at byte {at}");
    }
    let chars: Vec<String> = text.chars().map(String::from).collect();
    let chars: Vec<&str> = chars.iter().map(String::as_str).collect();
    let got = parse_pieces(&parser, &chars);
    assert_eq!((got.reasoning.as_str(), got.content.as_str()), want, "char by char");
}

fn harmony() -> ReasoningParser {
    ReasoningParser::new(ReasoningFormat::Harmony)
}

fn think() -> ReasoningParser {
    ReasoningParser::new(ReasoningFormat::Think)
}

// gpt-oss-20b's reply to "What is the capital of France?" after `<|start|>assistant`.
// `<|return|>` is an end-of-generation token and is not part of the text.
const GPT_OSS_REPLY: &str = "<|channel|>analysis<|message|>The user asks: \"What is the capital of France?\" The answer: Paris. Provide a concise answer.<|end|><|start|>assistant<|channel|>final<|message|>The capital of France is **Paris**.";

#[test]
fn harmony_analysis_then_final() {
    check(
        harmony(),
        GPT_OSS_REPLY,
        "The user asks: \"What is the capital of France?\" The answer: Paris. Provide a concise answer.",
        "The capital of France is **Paris**.",
    );
    // With end-of-generation tokens shown (`--ignore-eos`), `<|return|>` closes the answer.
    check(
        harmony(),
        &format!("{GPT_OSS_REPLY}<|return|>"),
        "The user asks: \"What is the capital of France?\" The answer: Paris. Provide a concise answer.",
        "The capital of France is **Paris**.",
    );
}

#[test]
fn harmony_final_only() {
    check(harmony(), "<|channel|>final<|message|>Hello! How can I help?", "", "Hello! How can I help?");
}

#[test]
fn harmony_truncated_mid_analysis() {
    let text = "<|channel|>analysis<|message|>We need to compute 17*23. 17*20=340, 17*3=51, sum";
    check(harmony(), text, "We need to compute 17*23. 17*20=340, 17*3=51, sum", "");
}

#[test]
fn harmony_truncated_inside_a_marker() {
    // Cut inside `<|end|>`: the reasoning before it is all there, the cut marker nowhere.
    check(harmony(), "<|channel|>analysis<|message|>Short question.<|en", "Short question.", "");
    // Cut inside the next header: nothing of it is shown.
    let text = "<|channel|>analysis<|message|>Greet.<|end|><|start|>assistant<|channel|>fin";
    check(harmony(), text, "Greet.", "");
    // Cut inside the very first marker.
    check(harmony(), "<|chan", "", "");
    // Cut inside the answer's closing marker.
    check(harmony(), "<|channel|>final<|message|>Done.<|ret", "", "Done.");
}

#[test]
fn harmony_text_that_only_looks_like_a_marker_is_kept() {
    let text = "<|channel|>final<|message|>In C, `a <| b` is not valid; <|not a marker|> either.";
    check(harmony(), text, "", "In C, `a <| b` is not valid; <|not a marker|> either.");
}

#[test]
fn harmony_commentary_preamble_is_content_and_tool_calls_are_neither() {
    let preamble = "<|channel|>analysis<|message|>Need the weather tool.<|end|><|start|>assistant<|channel|>commentary<|message|>Let me check the weather.<|end|>";
    check(harmony(), preamble, "Need the weather tool.", "Let me check the weather.");
    let call = "<|channel|>analysis<|message|>Call it.<|end|><|start|>assistant to=functions.get_weather<|channel|>commentary <|constrain|>json<|message|>{\"city\":\"Paris\"}";
    check(harmony(), call, "Call it.", "");
    // The recipient can also follow the generation prompt directly.
    let direct = " to=functions.get_weather<|channel|>commentary json<|message|>{\"city\":\"Rome\"}";
    check(harmony(), direct, "", "");
}

#[test]
fn harmony_tool_calls_come_out_whole() {
    let call = "<|channel|>analysis<|message|>Call it.<|end|><|start|>assistant to=functions.get_weather<|channel|>commentary <|constrain|>json<|message|>{\"city\":\"Paris\"}";
    for split in [1, 7, call.len()] {
        let mut p = harmony();
        let mut all = wllm_loaders::chat::ReasoningDelta::default();
        for piece in call.as_bytes().chunks(split) {
            all.extend(p.push(std::str::from_utf8(piece).unwrap()));
        }
        all.extend(p.finish());
        assert_eq!(all.tool_calls.len(), 1, "split {split}");
        let c = &all.tool_calls[0];
        assert_eq!((c.name.as_str(), c.arguments.as_str()), ("get_weather", "{\"city\":\"Paris\"}"));
    }
    // A call after the generation prompt's recipient, then a second message.
    let mut p = harmony();
    let mut all = p.push(" to=functions.time<|channel|>commentary json<|message|>{}<|start|>assistant<|channel|>final<|message|>ok");
    all.extend(p.finish());
    assert_eq!((all.tool_calls[0].name.as_str(), all.content.as_str()), ("time", "ok"));
}

#[test]
fn harmony_without_markers_is_the_answer() {
    check(
        harmony(),
        "Plain text from a model that ignores harmony.",
        "",
        "Plain text from a model that ignores harmony.",
    );
    let long = "word ".repeat(80);
    let mut p = harmony();
    let released = p.push(&long);
    assert_eq!(released.content, long, "a long header-less stream is released before it ends");
}

#[test]
fn harmony_prompt_sets_where_the_reply_starts() {
    let prompt = format!("{}<|start|>user<|message|>hi<|end|><|start|>assistant", gpt_oss_system("low"));
    let p = ReasoningParser::for_prompt(ReasoningFormat::Harmony, &prompt);
    check(
        p,
        "<|channel|>analysis<|message|>Hi back.<|end|><|start|>assistant<|channel|>final<|message|>Hi!",
        "Hi back.",
        "Hi!",
    );
    // A prompt that already opened the final channel.
    let prefilled = format!("{prompt}<|channel|>final<|message|>");
    check(ReasoningParser::for_prompt(ReasoningFormat::Harmony, &prefilled), "Bonjour.", "", "Bonjour.");
    let analysis = format!("{prompt}<|channel|>analysis<|message|>");
    assert!(ReasoningParser::for_prompt(ReasoningFormat::Harmony, &analysis).in_reasoning());
    // The prompt's `assistant` is never shown, even when the reply has no harmony in it.
    check(ReasoningParser::for_prompt(ReasoningFormat::Harmony, &prompt), "Hi.", "", "Hi.");
}

// Qwen3-0.6B's reply to "hi" with thinking on.
const QWEN3_REPLY: &str = "<think>\nOkay, the user said \"hi\". I should respond in a friendly way.\n</think>\n\nHello! How can I assist you today? 😊";

#[test]
fn think_tags_split_the_reply() {
    check(
        think(),
        QWEN3_REPLY,
        "Okay, the user said \"hi\". I should respond in a friendly way.",
        "Hello! How can I assist you today? 😊",
    );
    // Thinking switched off in the template: an empty block, then the answer.
    check(think(), "<think>\n\n</think>\n\nHello!", "", "Hello!");
    check(think(), "Hello, no thinking here.", "", "Hello, no thinking here.");
    // A tag later in the answer is text.
    check(think(), "Use <think> tags.", "", "Use <think> tags.");
}

#[test]
fn think_opened_by_the_prompt() {
    let prompt = "<｜User｜>2+2?<｜Assistant｜><think>\n";
    let p = ReasoningParser::for_prompt(ReasoningFormat::Think, prompt);
    assert!(p.in_reasoning());
    check(p, "2 plus 2 is 4.\n</think>\n\n**4**", "2 plus 2 is 4.", "**4**");
    let closed =
        ReasoningParser::for_prompt(ReasoningFormat::Think, "<|im_start|>assistant\n<think>\n\n</think>\n\n");
    check(closed, "Hi!", "", "Hi!");
}

#[test]
fn think_truncated() {
    check(think(), "<think>\nLet me count: one, two, three", "Let me count: one, two, three", "");
    check(think(), "<think>\nCounting.\n</thi", "Counting.", "");
    check(think(), "  <thi", "", "");
    // Inner whitespace of the reasoning is kept; only what pads the tags goes.
    check(think(), "<think>\nA.\n\nB.\n</think>\nC.\n", "A.\n\nB.", "C.\n");
}

#[test]
fn no_format_passes_everything() {
    let text = "<think>x</think><|channel|>final<|message|>y";
    check(ReasoningParser::new(ReasoningFormat::None), text, "", text);
}
