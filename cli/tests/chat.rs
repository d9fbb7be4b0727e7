//! `wllm chat` and `wllm run --chat` driven as a script would drive them: stdin not a terminal,
//! replies on stdout, per-turn figures from `--verbose` on stderr.
//!
//! Tests that need the real models skip when they are not downloaded; every test skips when no
//! GPU adapter exists.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data").join(rel)
}

fn tiny() -> PathBuf {
    data("models/tiny-llama-q8_0.gguf")
}

fn real(name: &str) -> Option<PathBuf> {
    let dir = match std::env::var("WLLM_MODELS") {
        Ok(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/wllm/models"),
    };
    let path = dir.join(name);
    if path.exists() {
        Some(path)
    } else {
        eprintln!("skipping: {} is not there (scripts fetch the real models)", path.display());
        None
    }
}

fn have_gpu() -> bool {
    match wllm::engine::Gpu::new(&wllm::engine::DeviceOptions::default()) {
        Ok(_) => true,
        Err(e) => {
            eprintln!("skipping: {e}");
            false
        }
    }
}

fn wllm() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wllm"));
    c.env("XDG_RUNTIME_DIR", std::env::temp_dir());
    c
}

/// Runs `wllm chat MODEL ARGS...` with `input` on stdin.
fn chat(model: &Path, args: &[&str], input: &str) -> Output {
    let mut child = wllm()
        .arg("chat")
        .arg(model)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting wllm");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// One reply's `--verbose` figures.
#[derive(Debug)]
struct Turn {
    evaluated: usize,
    prompt: usize,
    reused: usize,
    generated: usize,
}

fn number_after(line: &str, prefix: &str) -> usize {
    let rest =
        &line[line.find(prefix).unwrap_or_else(|| panic!("{prefix:?} not in {line:?}")) + prefix.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap_or_else(|_| panic!("no number after {prefix:?} in {line:?}"))
}

fn turns(stderr: &str) -> Vec<Turn> {
    let mut turns = Vec::new();
    for line in stderr.lines() {
        if line.starts_with("prompt tokens evaluated:") {
            turns.push(Turn {
                evaluated: number_after(line, "evaluated: "),
                prompt: number_after(line, "(of "),
                reused: number_after(line, ", "),
                generated: 0,
            });
        } else if line.starts_with("eval count:") {
            turns.last_mut().expect("eval count before a turn").generated = number_after(line, "count: ");
        }
    }
    for t in &turns {
        assert_eq!(t.evaluated + t.reused, t.prompt, "{t:?}");
    }
    turns
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn scripted_two_turn_chat_evaluates_only_the_new_turn() {
    let Some(model) = real("SmolLM2-135M-Instruct.Q4_1.gguf") else { return };
    if !have_gpu() {
        return;
    }
    let out = chat(
        &model,
        &["--temp", "0", "-n", "32", "--verbose"],
        "What is the capital of France?\nWhat is the capital of Germany?\n",
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    let replies: Vec<&str> = stdout.lines().collect();
    assert_eq!(replies.len(), 2, "one line per reply: {stdout:?}");
    assert!(replies[0].contains("Paris"), "{stdout:?}");
    assert!(replies[1].contains("Berlin"), "{stdout:?}");

    let t = turns(&stderr);
    assert_eq!(t.len(), 2, "{stderr}");
    assert_eq!(t[0].reused, 0);
    // Turn one's prompt and reply (which ended at the end-of-turn token, so every reply token
    // was fed back) stay in the cache; only the closing of turn one and the new message run.
    assert_eq!(t[1].reused, t[0].prompt + t[0].generated, "{t:?}");
    // "<|im_end|>\n<|im_start|>user\nWhat is the capital of Germany?<|im_end|>\n<|im_start|>assistant\n"
    assert_eq!(t[1].evaluated, 18, "{t:?}");
}

#[test]
fn line_mode_keeps_the_cache_across_turns_and_clear_forgets() {
    if !have_gpu() {
        return;
    }
    let out = chat(
        &tiny(),
        &["--temp", "0", "-n", "8", "--ctx", "512", "--verbose"],
        "hello there\n\nhow are you\n/clear\nhello there\n/exit\nnever sent\n",
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.ends_with('\n'), "{stdout:?}");
    let t = turns(&stderr);
    assert_eq!(t.len(), 3, "blank lines and commands are not messages: {stderr}");
    assert_eq!(t[0].reused, 0);
    // The tiny model's replies need not tokenize back to the ids it sampled, so only the whole
    // first prompt is sure to be reused.
    assert!(t[1].reused >= t[0].prompt, "{t:?}");
    assert!(t[1].evaluated < t[1].prompt - t[0].prompt + t[0].generated, "{t:?}");
    assert_eq!((t[2].reused, t[2].prompt), (0, t[0].prompt), "after /clear: {t:?}");
}

/// Three messages of the same length in a 128-token context: the tiny model's ChatML prompt
/// for one message is 54 tokens, two messages with a reply no longer fit with 8 to spare.
const OVERFLOWING: &str = "hello there\nhow are you\nwhat is next\n";

#[test]
fn context_overflow_error_refuses_with_a_clear_message() {
    if !have_gpu() {
        return;
    }
    let out = chat(&tiny(), &["--temp", "0", "-n", "8", "--ctx", "128", "--verbose"], OVERFLOWING);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("the context holds 128"), "{stderr}");
    assert!(stderr.contains("--context-overflow truncate-oldest"), "{stderr}");
    assert_eq!(turns(&stderr).len(), 1, "{stderr}");
}

#[test]
fn context_overflow_truncate_oldest_drops_turns_and_goes_on() {
    if !have_gpu() {
        return;
    }
    let args =
        ["--temp", "0", "-n", "8", "--ctx", "128", "--verbose", "--context-overflow", "truncate-oldest"];
    let out = chat(&tiny(), &args, OVERFLOWING);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("dropped the 1 oldest turn(s)"), "{stderr}");
    let t = turns(&stderr);
    assert_eq!(t.len(), 3, "{stderr}");
    for turn in &t {
        assert!(turn.prompt + 8 <= 128, "{t:?}");
    }
    // A lone message of the same length again: the older turns are gone.
    assert!(t[2].prompt.abs_diff(t[0].prompt) <= 2, "{t:?}");

    // A message that cannot fit even alone is an error under either policy.
    let long = format!("{}\n", "word ".repeat(200));
    let out = chat(&tiny(), &args, &long);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the context holds 128") && !stderr.contains("panicked"), "{stderr}");
}

#[test]
fn run_chat_json_prompt_ids_are_llama_cpp_templated_ids() {
    if !have_gpu() {
        return;
    }
    for fixture in ["smollm2-135m-instruct.json", "gemma-3-270m.json"] {
        let path = data("chat").join(fixture);
        let fx: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let Some(model) = real(fx["model"].as_str().unwrap()) else { continue };
        for case in fx["cases"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            if !matches!(name, "single_user" | "system_user") {
                continue;
            }
            let mut cmd = wllm();
            cmd.args(["run", "--chat", "--json", "-n", "1", "--temp", "0"]).arg(&model);
            for m in case["messages"].as_array().unwrap() {
                let content = m["content"].as_str().unwrap();
                match m["role"].as_str().unwrap() {
                    "system" => cmd.args(["--system", content]),
                    _ => cmd.args(["-p", content]),
                };
            }
            let out = cmd.output().unwrap();
            assert!(out.status.success(), "{fixture} / {name}: {}", text(&out.stderr));
            let json: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(json["prompt_ids"], case["token_ids"], "{fixture} / {name}");
        }
    }
}

#[cfg(unix)]
#[test]
fn ctrl_c_stops_the_reply_and_the_chat_goes_on() {
    if !have_gpu() {
        return;
    }
    // Replies long enough to interrupt: the tiny model rarely ends one by itself.
    let mut child = wllm()
        .arg("chat")
        .arg(tiny())
        .args(["--temp", "0", "-n", "4000", "--ctx", "1024", "--verbose"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdin.write_all(b"tell me a long story\n").unwrap();
    stdin.flush().unwrap();
    // The first reply bytes show the reply is under way.
    assert!(!stdout.fill_buf().unwrap().is_empty());
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    stdin.write_all(b"/clear\nand another\n").unwrap();
    drop(stdin);
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}: {stderr}");
    assert!(stderr.contains("(reply stopped)"), "{stderr}");
    let t = turns(&stderr);
    assert_eq!(t.len(), 2, "the chat answered after the interrupted reply: {stderr}");
    assert!(t[0].generated < 500, "the first reply ran on: {t:?}");
}

/// `wllm run --chat --json` with a template that opens `<think>` in the prompt: the tiny
/// model's noise is all reasoning, and `text` (the answer) is empty. `--hide-reasoning` prints
/// nothing of it, and `--reasoning-effort` reaches the gpt-oss template.
#[test]
fn run_chat_json_gives_reasoning_and_text_apart() {
    if !have_gpu() {
        return;
    }
    let templates = data("chat/templates");
    let deepseek = templates.join("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja");
    let run = |template: &Path, extra: &[&str]| {
        let mut cmd = wllm();
        cmd.args(["run", "--chat", "-n", "12", "--temp", "0", "--ignore-eos", "-p", "hi", "--chat-template"])
            .arg(template)
            .args(extra)
            .arg(tiny());
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        out
    };
    let out = run(&deepseek, &["--json"]);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let gguf = wllm::loaders::GgufFile::open(tiny()).unwrap();
    let tokenizer = wllm::loaders::Tokenizer::from_gguf(&gguf).unwrap();
    let ids: Vec<u32> = json["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let raw = tokenizer.decode(&ids);
    assert!(!raw.contains("</think>") && !raw.trim().is_empty(), "{raw:?}");
    assert_eq!(json["reasoning"], raw.trim(), "{json}");
    assert_eq!(json["text"], "", "{json}");

    let shown = run(&deepseek, &[]);
    assert_eq!(
        text(&shown.stdout),
        format!("{}\n", raw.trim()),
        "reasoning is printed (not dimmed: not a terminal)"
    );
    let hidden = run(&deepseek, &["--hide-reasoning"]);
    assert_eq!(text(&hidden.stdout), "\n");

    let out = run(&templates.join("openai-gpt-oss-120b.jinja"), &["--json", "--reasoning-effort", "high"]);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let prompt: Vec<u32> =
        json["prompt_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    assert!(tokenizer.decode(&prompt).contains("Reasoning: high"));
    let bad =
        wllm().args(["run", "--chat", "-p", "hi", "--reasoning-effort", "max"]).arg(tiny()).output().unwrap();
    assert!(
        !bad.status.success() && text(&bad.stderr).contains("low, medium or high"),
        "{}",
        text(&bad.stderr)
    );
}
