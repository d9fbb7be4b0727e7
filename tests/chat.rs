//! `Chat`: KV-cache reuse between turns gives what a full evaluation gives, and the context
//! overflow policies keep the conversation well formed.

mod support;

use wllm::engine::{DeviceOptions, Gpu};
use wllm::{
    Chat, ChatMessage, ChatOptions, ContextOverflow, Error, GenerateOptions, LoadOptions, Model,
    SamplerConfig, SessionOptions,
};

fn greedy(max_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        max_tokens,
        sampling: SamplerConfig { temp: 0.0, ..Default::default() },
        ..Default::default()
    }
}

/// `None` (after saying why) when the model file or a GPU adapter is missing.
fn load(path: std::path::PathBuf) -> Option<Model> {
    load_with_template(path, None)
}

fn load_with_template(path: std::path::PathBuf, chat_template_source: Option<String>) -> Option<Model> {
    if !path.exists() {
        eprintln!("skipping: {} is not there (scripts fetch the real models)", path.display());
        return None;
    }
    let gpu = match Gpu::new(&DeviceOptions::default()) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("skipping: {e}");
            return None;
        }
    };
    let opts = LoadOptions { gpu: Some(gpu), chat_template_source, ..Default::default() };
    Some(Model::load_with(&path, &opts, &mut |_, _| {}).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

fn tiny() -> Option<Model> {
    load(support::data_dir().join("models/tiny-llama-q8_0.gguf"))
}

fn roles(chat: &Chat) -> Vec<String> {
    chat.messages().iter().map(|m| format!("{}:{}", m.role, m.content)).collect()
}

fn say(chat: &mut Chat, text: &str, max_tokens: usize) -> (String, wllm::TurnInfo) {
    let mut reply = chat.send(text, greedy(max_tokens)).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    for chunk in reply.by_ref() {
        chunk.unwrap();
    }
    (reply.text().to_string(), reply.info())
}

#[test]
fn second_turn_reuses_the_cache_and_answers_as_a_full_evaluation_does() {
    let Some(model) = load(support::real_model_path("SmolLM2-135M-Instruct.Q4_1.gguf")) else { return };
    let opts = SessionOptions { n_ctx: Some(512), n_batch: 256 };
    let mut chat = Chat::new(model.session(&opts).unwrap(), ChatOptions::default()).unwrap();
    let (_, first) = say(&mut chat, "What is the capital of France?", 32);
    let cached_after_first = chat.session().tokens().len();
    let (second_reply, second) = say(&mut chat, "What is the capital of Germany?", 32);
    assert_eq!((first.reused_tokens, first.evaluated_tokens), (0, first.prompt_tokens));
    assert_eq!(second.reused_tokens, cached_after_first, "the whole first turn stays cached");
    assert!(second.evaluated_tokens < 24, "{second:?}");

    let messages = chat.messages();
    let prompt = model.chat_tokens(&messages[..3], true).unwrap();
    assert_eq!(prompt.len(), second.prompt_tokens);
    assert_eq!(&chat.session().tokens()[..prompt.len()], &prompt[..]);

    let mut fresh = model.session(&opts).unwrap();
    let full: String = fresh.generate(&prompt, greedy(32)).unwrap().map(|c| c.unwrap().text).collect();
    assert_eq!(second_reply, full);
    assert_eq!(messages[3], ChatMessage::assistant(full));
}

#[test]
fn truncate_oldest_keeps_the_system_message_and_drops_whole_turns() {
    let Some(model) = tiny() else { return };
    let session = model.session(&SessionOptions { n_ctx: Some(160), n_batch: 64 }).unwrap();
    let options = ChatOptions {
        system: Some("be brief".into()),
        overflow: ContextOverflow::TruncateOldest,
        ..Default::default()
    };
    let mut chat = Chat::new(session, options).unwrap();
    let (a1, t1) = say(&mut chat, "hello there", 8);
    assert_eq!(t1.dropped_turns, 0);
    let (a2, t2) = say(&mut chat, "how are you", 8);
    assert!(t2.dropped_turns == 1 && t2.prompt_tokens + 8 <= 160, "{t2:?}");
    assert_eq!(
        roles(&chat),
        ["system:be brief".to_string(), "user:how are you".into(), format!("assistant:{a2}")]
    );
    assert_ne!(a1, "", "the tiny model says something");
    // The system message's tokens were still cached.
    assert!(t2.reused_tokens > 0, "{t2:?}");

    // A message that cannot fit alone: refused, and nothing is dropped for it.
    let err = chat.send(&"word ".repeat(100), greedy(8)).err().expect("too long to fit");
    assert!(matches!(err, Error::ContextOverflow { n_ctx: 160, .. }), "{err}");
    assert_eq!(roles(&chat).len(), 3);

    chat.clear();
    assert_eq!(roles(&chat), ["system:be brief"]);
    assert!(chat.session().tokens().is_empty());
}

#[test]
fn error_policy_refuses_the_turn_and_leaves_the_conversation() {
    let Some(model) = tiny() else { return };
    let session = model.session(&SessionOptions { n_ctx: Some(128), n_batch: 64 }).unwrap();
    let mut chat = Chat::new(session, ChatOptions::default()).unwrap();
    say(&mut chat, "hello there", 8);
    let before = (roles(&chat), chat.session().tokens().to_vec());
    let err = chat.send("how are you", greedy(8)).err().expect("overflows");
    let Error::ContextOverflow { needed, n_ctx } = err else { panic!("{err}") };
    assert!(needed > n_ctx && n_ctx == 128);
    assert!(err.to_string().contains("the context holds 128"), "{err}");
    assert_eq!((roles(&chat), chat.session().tokens().to_vec()), before);
}

#[test]
fn end_of_turn_text_comes_from_the_template() {
    let Some(model) = tiny() else { return };
    // No template in the file: llama.cpp's ChatML fallback.
    assert_eq!(model.chat_end_of_turn().as_deref(), Some("<|im_end|>"));
    let ids = model.chat_tokens(&[ChatMessage::user("hi")], true).unwrap();
    let text = model.detokenize(&ids);
    assert!(text.ends_with("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"), "{text:?}");
}

fn template_fixture(name: &str) -> String {
    std::fs::read_to_string(support::data_dir().join("chat/templates").join(name)).unwrap()
}

/// Runs one turn of `chat` to its end (EOG ignored, as the tiny model's output is noise) and
/// checks that the chunks add up to the reply.
fn reply_parts(chat: &mut Chat, text: &str) -> (String, String, String) {
    let opts = GenerateOptions { stop_at_eog: false, ..greedy(16) };
    let mut reply = chat.send(text, opts).unwrap();
    let (mut content, mut reasoning) = (String::new(), String::new());
    for chunk in reply.by_ref() {
        let chunk = chunk.unwrap();
        content.push_str(&chunk.text);
        reasoning.push_str(&chunk.reasoning);
    }
    assert_eq!((reply.text(), reply.reasoning()), (content.as_str(), reasoning.as_str()));
    let raw = reply.raw_text().expect("a reasoning template keeps the raw reply").to_string();
    (reasoning, content, raw)
}

#[test]
fn a_template_that_opens_think_makes_the_reply_reasoning() {
    // DeepSeek-R1's generation prompt ends in `<think>\n`: whatever the model writes before a
    // `</think>` is reasoning, and only the (here empty) answer joins the conversation.
    let template = template_fixture("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja");
    let Some(model) =
        load_with_template(support::data_dir().join("models/tiny-llama-q8_0.gguf"), Some(template))
    else {
        return;
    };
    assert_eq!(model.reasoning_format(), wllm::ReasoningFormat::Think);
    let mut chat =
        Chat::new(model.session(&SessionOptions::default()).unwrap(), ChatOptions::default()).unwrap();
    let (reasoning, content, raw) = reply_parts(&mut chat, "hi");
    assert!(!raw.contains("</think>"), "the noise closed the block: {raw:?}");
    assert!(!raw.trim().is_empty(), "the model wrote nothing visible");
    assert_eq!((reasoning.as_str(), content.as_str()), (raw.trim(), ""));
    assert_eq!(chat.messages().last(), Some(&ChatMessage::assistant("")));
}

#[test]
fn gpt_oss_template_gets_the_effort_and_unmarked_output_is_the_answer() {
    let template = template_fixture("openai-gpt-oss-120b.jinja");
    let Some(model) =
        load_with_template(support::data_dir().join("models/tiny-llama-q8_0.gguf"), Some(template))
    else {
        return;
    };
    assert_eq!(model.reasoning_format(), wllm::ReasoningFormat::Harmony);
    let options = ChatOptions { reasoning_effort: Some(wllm::ReasoningEffort::High), ..Default::default() };
    let mut chat = Chat::new(model.session(&SessionOptions::default()).unwrap(), options).unwrap();
    let (reasoning, content, raw) = reply_parts(&mut chat, "hi");
    let prompt = model.tokenizer().decode(chat.session().tokens());
    assert!(prompt.contains("Reasoning: high"), "{prompt}");
    // The noise has no harmony markers, so nothing of it is taken for reasoning or dropped.
    assert!(!raw.contains("<|"), "{raw:?}");
    assert_eq!((reasoning.as_str(), content.as_str()), ("", raw.as_str()));
    assert_eq!(chat.messages().last(), Some(&ChatMessage::assistant(raw)));
}
