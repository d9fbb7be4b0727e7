//! Chat templates rendered by minijinja against llama.cpp's rendering of the same
//! conversations (fixtures in `tests/data/chat/`, see its README), plus the error paths and
//! the Jinja features real templates lean on.

use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Value, json};
use wllm_loaders::chat::{
    ChatError, ChatMessage, ChatTemplate, RenderOptions, SpecialTokens, TemplateOrigin,
};
use wllm_loaders::{GgufFile, Tokenizer};

fn data(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/chat").join(rel)
}

fn fixture(name: &str) -> Value {
    let path = data(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn models_dir() -> PathBuf {
    match std::env::var("WLLM_MODELS") {
        Ok(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/wllm/models"),
    }
}

fn messages(case: &Value) -> Vec<ChatMessage> {
    case["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| ChatMessage::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect()
}

/// Renders every case of a fixture and compares with llama.cpp's string, byte for byte.
fn check_cases(template: &ChatTemplate, cases: &Value, options: &RenderOptions, what: &str) {
    for case in cases.as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let options = RenderOptions {
            add_generation_prompt: case["add_generation_prompt"].as_bool().unwrap(),
            ..options.clone()
        };
        let got = template
            .render_with(&messages(case), &options)
            .unwrap_or_else(|e| panic!("{what} / {name}: rendering failed: {e}"));
        let want = case["prompt"].as_str().unwrap();
        assert_eq!(got, want, "{what} / {name}: differs from llama.cpp's rendering");
    }
}

fn fixture_tokens(fx: &Value) -> SpecialTokens {
    SpecialTokens {
        bos: fx["bos_token"].as_str().unwrap().into(),
        eos: fx["eos_token"].as_str().unwrap().into(),
        add_bos: fx["add_bos"].as_bool().unwrap(),
        add_eos: fx["add_eos"].as_bool().unwrap(),
    }
}

/// From the template text stored in the fixture: runs without the model file.
fn check_model_fixture_offline(name: &str) {
    let fx = fixture(name);
    let template = match fx["template_source"].as_str() {
        Some(src) => ChatTemplate::new(src, "", "").unwrap(),
        None => ChatTemplate::new(wllm_loaders::chat::CHATML_TEMPLATE, "", "").unwrap(),
    }
    .with_special_tokens(fixture_tokens(&fx));
    check_cases(&template, &fx["cases"], &RenderOptions::default(), name);
}

/// From the GGUF itself, as the CLI loads it, through to token ids; skipped when the model is
/// not downloaded.
fn check_model_fixture_gguf(name: &str, origin: TemplateOrigin) {
    let fx = fixture(name);
    let path = models_dir().join(fx["model"].as_str().unwrap());
    if !path.exists() {
        eprintln!("skipping: {} is not there (scripts fetch the real models)", path.display());
        return;
    }
    let gguf = GgufFile::open(&path).unwrap();
    let template = ChatTemplate::from_gguf(&gguf).unwrap();
    assert_eq!(template.origin(), &origin);
    assert_eq!(template.special_tokens(), &fixture_tokens(&fx));
    if let Some(src) = fx["template_source"].as_str() {
        assert_eq!(template.source(), src);
    }
    check_cases(&template, &fx["cases"], &RenderOptions::default(), name);

    // The whole prompt path: our render through our tokenizer gives llama.cpp's token ids.
    let tokenizer = Tokenizer::from_gguf(&gguf).unwrap();
    for case in fx["cases"].as_array().unwrap() {
        let prompt =
            template.render(&messages(case), case["add_generation_prompt"].as_bool().unwrap()).unwrap();
        let want: Vec<u32> = serde_json::from_value(case["token_ids"].clone()).unwrap();
        assert_eq!(tokenizer.encode(&prompt, true, true), want, "{name} / {}: token ids", case["name"]);
    }
}

#[test]
fn smollm2_matches_llama_cpp() {
    check_model_fixture_offline("smollm2-135m-instruct.json");
    check_model_fixture_gguf("smollm2-135m-instruct.json", TemplateOrigin::Gguf);
}

/// gemma-3-270m (the base model) carries no chat template: llama.cpp falls back to ChatML and
/// so do we. Its tokenizer adds BOS, which the ChatML text does not contain.
#[test]
fn gemma3_270m_matches_llama_cpp_chatml_fallback() {
    check_model_fixture_offline("gemma-3-270m.json");
    check_model_fixture_gguf("gemma-3-270m.json", TemplateOrigin::ChatmlFallback);
}

#[test]
fn other_models_templates_match_llama_cpp() {
    let fx = fixture("other-templates.json");
    let now = UNIX_EPOCH + Duration::from_secs(fx["now"].as_u64().unwrap());
    for t in fx["templates"].as_array().unwrap() {
        let file = t["template"].as_str().unwrap();
        let source = std::fs::read_to_string(data("templates").join(file)).unwrap();
        let template =
            ChatTemplate::new(source, t["bos_token"].as_str().unwrap(), t["eos_token"].as_str().unwrap())
                .unwrap_or_else(|e| panic!("{file}: {e}"));
        let extra = t["kwargs"].as_object().cloned().unwrap_or_default();
        check_cases(
            &template,
            &t["cases"],
            &RenderOptions { now: Some(now), extra, ..Default::default() },
            file,
        );
    }
}

fn gemma2() -> ChatTemplate {
    let source = std::fs::read_to_string(data("templates/google-gemma-2-2b-it.jinja")).unwrap();
    ChatTemplate::new(source, "<bos>", "<eos>").unwrap()
}

#[test]
fn raise_exception_reaches_the_caller_with_its_message() {
    let err = gemma2().render(&[ChatMessage::system("be brief"), ChatMessage::user("hi")], true).unwrap_err();
    match &err {
        ChatError::Raised { message } => assert_eq!(message, "System role not supported"),
        other => panic!("expected the template's own exception, got {other:?}"),
    }
    assert!(err.to_string().contains("System role not supported"), "{err}");
    let err = gemma2().render(&[ChatMessage::user("a"), ChatMessage::user("b")], true).unwrap_err();
    assert!(matches!(err, ChatError::Raised { ref message } if message.contains("alternate")), "{err}");
}

#[test]
fn leading_bos_is_dropped_when_the_tokenizer_adds_it() {
    let msgs = [ChatMessage::user("hi")];
    assert!(gemma2().render(&msgs, true).unwrap().starts_with("<bos><start_of_turn>"));
    let tokens = SpecialTokens { bos: "<bos>".into(), eos: "<eos>".into(), add_bos: true, add_eos: false };
    let t = gemma2().with_special_tokens(tokens);
    assert_eq!(
        t.render(&msgs, true).unwrap(),
        "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n"
    );
}

#[test]
fn errors_name_the_construct_and_line() {
    let err =
        ChatTemplate::new("line one\n{% for m in messages %}{{ m.content }}\n{% endfor", "", "").unwrap_err();
    let ChatError::Syntax(f) = &err else { panic!("expected a syntax error, got {err:?}") };
    assert_eq!(f.line, Some(3), "{err}");

    let t =
        ChatTemplate::new("{% for m in messages %}\n{{ m.content | shout }}\n{% endfor %}", "", "").unwrap();
    let msg = t.render(&[ChatMessage::user("x")], false).unwrap_err().to_string();
    assert!(msg.contains("unknown filter") && msg.contains("line 2"), "{msg}");

    let t = ChatTemplate::new("{% for m in messages %}\n\n{{ m.content.frobnicate() }}{% endfor %}", "", "")
        .unwrap();
    let err = t.render(&[ChatMessage::user("x")], false).unwrap_err();
    let ChatError::Render(f) = &err else { panic!("expected a render error, got {err:?}") };
    assert_eq!(f.line, Some(3), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("frobnicate") && msg.contains("line 3"), "{msg}");

    let t = ChatTemplate::new("{{ messages[0].content + 1 }}", "", "").unwrap();
    let msg = t.render(&[ChatMessage::user("x")], false).unwrap_err().to_string();
    assert!(msg.contains("line 1") && msg.contains("messages[0].content + 1"), "{msg}");
}

#[test]
fn python_string_methods_and_builtins_work() {
    let src = "{{ '  a b  '.strip() }}|{{ 'x,y,z'.split(',') | join('+') }}|{{ 'Hello'.startswith('He') }}|\
               {{ 'Hello'.endswith('x') }}|{{ 'abc'.upper() }}|{{ 'a-b'.replace('-', '_') }}|{{ '  q'.lstrip() }}|\
               {%- set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}|\
               {{ messages | selectattr('role', 'equalto', 'user') | list | length }}|{{ messages[-1]['content'] }}|\
               {% for k, v in {'k': 1}.items() %}{{ k }}={{ v }}{% endfor %}|{{ messages[1:] | length }}|\
               {% for m in messages %}{% if loop.index0 == 1 %}{% break %}{% endif %}{{ m.role }}{% endfor %}";
    let t = ChatTemplate::new(src, "", "").unwrap();
    let got = t
        .render(&[ChatMessage::user("u1"), ChatMessage::assistant("a1"), ChatMessage::user("u2")], false)
        .unwrap();
    assert_eq!(got, "a b|x+y+z|True|False|ABC|a_b|q|3|2|u2|k=1|2|user");
}

#[test]
fn tojson_writes_python_json() {
    let t = ChatTemplate::new(
        "{{ {'a': [1, 2.5, none, true], 'b': 'é\"<&>'} | tojson }}\n{{ {'k': [1]} | tojson(indent=2) }}\n\
         {{ 'é' | tojson(ensure_ascii=true) }} {{ {} | tojson }} {{ [] | tojson }} {{ 1e-7 | tojson }}",
        "",
        "",
    )
    .unwrap();
    let got = t.render(&[], false).unwrap();
    assert_eq!(
        got,
        "{\"a\": [1, 2.5, null, true], \"b\": \"é\\\"<&>\"}\n{\n  \"k\": [\n    1\n  ]\n}\n\"\\u00e9\" {} [] 1e-07"
    );
}

#[test]
fn strftime_now_and_dates_use_the_given_clock() {
    let t =
        ChatTemplate::new("{{ strftime_now('%d %B %Y') }}|{{ date_string }}|{{ datetime }}", "", "").unwrap();
    let options =
        RenderOptions { now: Some(UNIX_EPOCH + Duration::from_secs(1_721_999_109)), ..Default::default() };
    assert_eq!(t.render_with(&[], &options).unwrap(), "26 July 2024|26 Jul 2024|Jul 26 2024");
    let t = ChatTemplate::new("{{ strftime_now('%Q') }}", "", "").unwrap();
    let msg = t.render(&[], false).unwrap_err().to_string();
    assert!(msg.contains("%Q"), "{msg}");
}

#[test]
fn extra_variables_override_the_defaults() {
    // Booleans print the Python way, as in Jinja2.
    let t = ChatTemplate::new("{{ enable_thinking }} {{ custom is defined }}", "", "").unwrap();
    assert_eq!(t.render(&[], false).unwrap(), "True False");
    let t = ChatTemplate::new("{{ enable_thinking }} {{ custom.x[1] }}", "", "").unwrap();
    let extra = json!({"enable_thinking": false, "custom": {"x": [1, "two"]}}).as_object().unwrap().clone();
    assert_eq!(t.render_with(&[], &RenderOptions { extra, ..Default::default() }).unwrap(), "False two");
}

#[test]
fn generation_markers_are_ignored() {
    let t = ChatTemplate::new(
        "{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}<{{ m.content }}>{% endgeneration %}{% else %}{{ m.content }}{% endif %}{% endfor %}",
        "",
        "",
    )
    .unwrap();
    assert_eq!(t.render(&[ChatMessage::user("q"), ChatMessage::assistant("a")], false).unwrap(), "q<a>");
}

#[test]
fn tokenizer_config_forms() {
    let config = json!({
        "chat_template": "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}{{ eos_token }}",
        "bos_token": {"content": "<s>", "lstrip": false},
        "eos_token": "</s>",
        "add_bos_token": true,
    });
    let t = ChatTemplate::from_tokenizer_config(&config).unwrap();
    assert_eq!(t.origin(), &TemplateOrigin::TokenizerConfig);
    assert_eq!(
        t.special_tokens(),
        &SpecialTokens { bos: "<s>".into(), eos: "</s>".into(), add_bos: true, add_eos: false }
    );
    assert_eq!(t.render(&[ChatMessage::user("x")], false).unwrap(), "x</s>");

    let named = json!({"chat_template": [
        {"name": "tool_use", "template": "TOOLS"},
        {"name": "default", "template": "DEFAULT"},
    ]});
    assert_eq!(ChatTemplate::from_tokenizer_config(&named).unwrap().render(&[], false).unwrap(), "DEFAULT");

    let no_default =
        json!({"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "rag", "template": "R"}]});
    let msg = ChatTemplate::from_tokenizer_config(&no_default).unwrap_err().to_string();
    assert!(msg.contains("tool_use, rag") && msg.contains("default"), "{msg}");
    let msg = ChatTemplate::from_tokenizer_config(&json!({})).unwrap_err().to_string();
    assert!(msg.contains("no chat_template"), "{msg}");
    let msg = ChatTemplate::from_tokenizer_config(&json!({"chat_template": 3})).unwrap_err().to_string();
    assert!(msg.contains("neither a string nor a list"), "{msg}");
}

#[test]
fn template_files_override() {
    let dir = std::env::temp_dir().join(format!("wllm-chat-template-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let jinja = dir.join("t.jinja");
    std::fs::write(
        &jinja,
        "{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}\n",
    )
    .unwrap();
    let t = ChatTemplate::from_file(&jinja)
        .unwrap()
        .with_special_tokens(SpecialTokens { bos: "<s>".into(), ..Default::default() });
    assert_eq!(t.origin(), &TemplateOrigin::File(jinja.clone()));
    // One trailing newline of the file is dropped, as Jinja does.
    assert_eq!(t.render(&[ChatMessage::user("hi")], false).unwrap(), "<s>[user]hi");

    let config = dir.join("tokenizer_config.json");
    std::fs::write(&config, r#"{"chat_template": "{{ messages | length }}", "eos_token": "</s>"}"#).unwrap();
    let t = ChatTemplate::from_file(&config).unwrap();
    assert_eq!(t.special_tokens().eos, "</s>");
    assert_eq!(t.render(&[ChatMessage::user("hi")], false).unwrap(), "1");

    let missing = dir.join("missing.jinja");
    let msg = ChatTemplate::from_file(&missing).unwrap_err().to_string();
    assert!(msg.contains("missing.jinja"), "{msg}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn render_delta_for_a_repl() {
    let fx = fixture("smollm2-135m-instruct.json");
    let t = ChatTemplate::new(fx["template_source"].as_str().unwrap(), "", "").unwrap();
    let past = [ChatMessage::user("Hi"), ChatMessage::assistant("Hello!")];
    let new = [ChatMessage::user("More?")];
    let options = RenderOptions { add_generation_prompt: true, ..Default::default() };
    let d = t.render_delta(&past, &new, &options).unwrap();
    assert!(d.is_append_only());
    assert!(d.past.ends_with("Hello!<|im_end|>\n"));
    assert_eq!(d.appended(), "<|im_start|>user\nMore?<|im_end|>\n<|im_start|>assistant\n");
    assert_eq!(format!("{}{}", d.past, d.appended()), d.full);

    // A template that marks the last message differently rewrites the earlier text.
    let t = ChatTemplate::new("{% for m in messages %}{% if loop.last %}[{{ m.content }}]{% else %}{{ m.content }}{% endif %}{% endfor %}", "", "").unwrap();
    let d = t
        .render_delta(&[ChatMessage::user("ab")], &[ChatMessage::user("cd")], &RenderOptions::default())
        .unwrap();
    assert_eq!((d.past.as_str(), d.full.as_str()), ("[ab]", "ab[cd]"));
    assert!(!d.is_append_only());
    assert_eq!((d.common, d.appended()), (0, "ab[cd]"));
}
