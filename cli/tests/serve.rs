//! `wllm serve` end to end: the built binary on a free port with a real model, driven by a
//! plain HTTP/1.1 client (raw sockets, so a test can send malformed bodies and hang up
//! mid-stream) and by the official `openai` Python package (`tests/serve/openai_e2e.py`).
//!
//! Servers run one at a time (the machines that run CI have few cores). Tests skip when the
//! real model is not downloaded; the `openai` test also skips when the package is missing,
//! unless `WLLM_REQUIRE_OPENAI` is set (CI sets it up with `scripts/setup.sh`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const MODEL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const ALIAS: &str = "SmolLM2-135M-Instruct.Q4_1";

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
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
        eprintln!("skipping: {} is not there (scripts/setup.sh fetches the real models)", path.display());
        None
    }
}

struct Server {
    child: Child,
    addr: String,
    key: Option<String>,
    stderr: Arc<Mutex<String>>,
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: String,
    body: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

impl Server {
    /// Starts `wllm serve MODEL --port 0 ARGS` and waits until `/health` says ok. Answers
    /// other than that while loading must be 503 `{"status": "loading"}`.
    fn start(model: &Path, args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wllm"))
            .arg("serve")
            .arg(model)
            .args(["--port", "0"])
            .args(args)
            .env("XDG_RUNTIME_DIR", std::env::temp_dir())
            .env_remove("WLLM_API_KEY")
            .env_remove("WLLM_BACKEND")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let key = args.iter().position(|a| *a == "--api-key").map(|i| args[i + 1].to_string());
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                eprintln!("[server] {line}");
                if let Some(a) = line.strip_prefix("listening on http://") {
                    let _ = tx.send(a.split(' ').next().unwrap_or_default().to_string());
                }
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(30)).expect("the server printed no address");
        let server = Server { child, addr, key, stderr };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let r = server.get("/health");
            if r.status == 200 {
                assert_eq!(r.json(), json!({"status": "ok"}));
                break;
            }
            assert_eq!((r.status, r.json()), (503, json!({"status": "loading"})));
            assert!(Instant::now() < deadline, "not ready in time: {}", server.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn get(&self, path: &str) -> Resp {
        self.call("GET", path, None, self.key.as_deref())
    }

    fn post(&self, path: &str, body: &str) -> Resp {
        self.call("POST", path, Some(body), self.key.as_deref())
    }

    fn call(&self, method: &str, path: &str, body: Option<&str>, key: Option<&str>) -> Resp {
        let mut s = self.send(method, path, body, key);
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        parse_response(&raw)
    }

    /// Sends a request and returns the connection, to read the answer as it comes.
    fn send(&self, method: &str, path: &str, body: Option<&str>, key: Option<&str>) -> TcpStream {
        let mut s = TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        let body = body.unwrap_or("");
        let auth = key.map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body.as_bytes()).unwrap();
        s
    }

    /// A gauge or counter from `/metrics`.
    fn metric(&self, name: &str) -> f64 {
        let r = self.get("/metrics");
        assert_eq!(r.status, 200);
        r.body
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("no {name} in {}", r.body))
            .trim()
            .parse()
            .unwrap()
    }

    fn assert_alive(&self) {
        assert_eq!(self.get("/health").status, 200, "the server stopped answering: {}", self.log());
    }

    /// Token ids that end generation, so a test can ban them and get long replies.
    fn end_tokens(&self) -> Vec<u32> {
        let r = self.post("/tokenize", r#"{"content": "<|im_end|><|endoftext|>", "parse_special": true}"#);
        r.json()["tokens"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect()
    }

    fn signal(&self, sig: &str) {
        let ok =
            Command::new("kill").args([&format!("-{sig}"), &self.child.id().to_string()]).status().unwrap();
        assert!(ok.success());
    }

    /// Waits for the process to exit; its exit code.
    fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            assert!(Instant::now() < deadline, "the server did not exit: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse_response(raw: &[u8]) -> Resp {
    let text = String::from_utf8_lossy(raw);
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no header end in {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    let headers = head.to_ascii_lowercase();
    let body = if headers.contains("transfer-encoding: chunked") { unchunk(rest) } else { rest.to_string() };
    Resp { status, headers, body }
}

fn unchunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// The `data:` payloads of an SSE body.
fn sse_data(body: &str) -> Vec<String> {
    body.lines().filter_map(|l| l.strip_prefix("data: ")).map(str::to_string).collect()
}

fn chat_body(extra: Value) -> String {
    let mut v =
        json!({"model": ALIAS, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 4});
    v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    v.to_string()
}

#[test]
fn endpoints_auth_and_malformed_requests() {
    let Some(model) = real(MODEL) else { return };
    let _one = serial();
    let s = Server::start(&model, &["--api-key", "sekret", "--parallel", "2", "--ctx", "256"]);

    // Health is open; everything else needs the key.
    assert_eq!(s.call("GET", "/health", None, None).status, 200);
    for key in [None, Some("wrong")] {
        let r = s.call("GET", "/v1/models", None, key);
        assert_eq!(r.status, 401, "{r:?}");
        assert_eq!(r.json()["error"]["code"], "invalid_api_key");
        let r = s.call("POST", "/v1/chat/completions", Some(&chat_body(json!({}))), key);
        assert_eq!(r.status, 401);
    }
    let r = s.get("/v1/models");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["data"][0]["id"], ALIAS);
    assert_eq!(s.get(&format!("/v1/models/{ALIAS}")).json()["id"], ALIAS);
    assert_eq!(s.get(&format!("/v1/models/{MODEL}")).status, 200);
    assert_eq!(s.get("/v1/models/gpt-4").json()["error"]["code"], "model_not_found");

    // Tokenize and detokenize as llama-server has them.
    let ids = s.post("/tokenize", r#"{"content": "Hello world"}"#).json()["tokens"].clone();
    assert!(ids.as_array().is_some_and(|a| !a.is_empty()), "{ids}");
    let pieces = s.post("/tokenize", r#"{"content": "Hello world", "with_pieces": true}"#).json();
    let joined: String =
        pieces["tokens"].as_array().unwrap().iter().map(|p| p["piece"].as_str().unwrap()).collect();
    assert_eq!(joined, "Hello world");
    let back = s.post("/detokenize", &json!({"tokens": ids}).to_string()).json();
    assert_eq!(back["content"], "Hello world");

    let m = s.get("/metrics");
    assert!(m.headers.contains("content-type: text/plain"), "{}", m.headers);
    assert_eq!(s.metric("wllm_parallel"), 2.0);
    assert_eq!(s.metric("wllm_kv_cache_capacity_tokens"), 512.0);
    assert_eq!(s.metric("wllm_busy_sequences"), 0.0);

    // The malformed-request corpus: (endpoint, body, status, the error's `param`).
    let long = "hello ".repeat(400);
    let chat = "/v1/chat/completions";
    let text = "/v1/completions";
    let cases: Vec<(&str, String, u16, Option<&str>)> = vec![
        (chat, "{".into(), 400, None),
        (chat, "".into(), 400, None),
        (chat, "[1, 2]".into(), 400, None),
        (chat, "null".into(), 400, None),
        (chat, r#"{"messages": [{"role": "user", "content": "hi"}]} trailing"#.into(), 400, None),
        (
            chat,
            json!({"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}).to_string(),
            404,
            Some("model"),
        ),
        (chat, json!({"model": ALIAS}).to_string(), 400, Some("messages")),
        (chat, json!({"messages": "hi"}).to_string(), 400, Some("messages")),
        (chat, json!({"messages": []}).to_string(), 400, Some("messages")),
        (chat, json!({"messages": [{"content": "hi"}]}).to_string(), 400, Some("messages[0].role")),
        (
            chat,
            json!({"messages": [{"role": "user", "content": 5}]}).to_string(),
            400,
            Some("messages[0].content"),
        ),
        (chat, chat_body(json!({"temperature": "hot"})), 400, Some("temperature")),
        (chat, chat_body(json!({"temperature": 7})), 400, Some("temperature")),
        (chat, chat_body(json!({"top_p": 1.5})), 400, Some("top_p")),
        (chat, chat_body(json!({"max_tokens": -1})), 400, Some("max_tokens")),
        (chat, chat_body(json!({"max_tokens": 1.5})), 400, Some("max_tokens")),
        (chat, chat_body(json!({"n": 3})), 400, Some("n")),
        (chat, chat_body(json!({"stream": "yes"})), 400, Some("stream")),
        (chat, chat_body(json!({"stop": [1]})), 400, Some("stop[0]")),
        (chat, chat_body(json!({"logit_bias": {"abc": 1}})), 400, Some("logit_bias.abc")),
        (chat, chat_body(json!({"frequency_penalty": 3})), 400, Some("frequency_penalty")),
        (chat, chat_body(json!({"top_logprobs": 3})), 400, Some("top_logprobs")),
        (chat, chat_body(json!({"stream_options": {"include_usage": true}})), 400, Some("stream_options")),
        (chat, chat_body(json!({"messages": [{"role": "user", "content": long}]})), 400, Some("messages")),
        (text, json!({"model": ALIAS}).to_string(), 400, Some("prompt")),
        (text, json!({"prompt": ["a", "b"]}).to_string(), 400, Some("prompt")),
        (text, json!({"prompt": {"text": "a"}}).to_string(), 400, Some("prompt")),
        (text, json!({"prompt": [1, -5]}).to_string(), 400, Some("prompt[1]")),
        (text, json!({"prompt": "hi", "echo": true}).to_string(), 400, Some("echo")),
        (text, json!({"prompt": "hi", "logprobs": true}).to_string(), 400, Some("logprobs")),
        (text, json!({"prompt": long}).to_string(), 400, Some("prompt")),
        (text, json!({"prompt": [4_000_000_000u32]}).to_string(), 400, None),
        ("/tokenize", "{}".into(), 400, Some("content")),
        ("/detokenize", json!({"tokens": [1, 99_999_999]}).to_string(), 400, Some("tokens[1]")),
        ("/detokenize", json!({"tokens": "abc"}).to_string(), 400, Some("tokens")),
    ];
    for (path, body, status, param) in &cases {
        let r = s.post(path, body);
        let what = format!("POST {path} {body:.80}: {} {}", r.status, r.body);
        assert_eq!(r.status, *status, "{what}");
        let e = &r.json()["error"];
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}");
        assert_eq!(e["type"], "invalid_request_error", "{what}");
        if let Some(p) = param {
            assert_eq!(e["param"], *p, "{what}");
        }
        s.assert_alive();
    }
    let r = s.post(text, &json!({"prompt": long}).to_string());
    assert_eq!(r.json()["error"]["code"], "context_length_exceeded");
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("256"), "{}", r.body);
    // Unknown paths and methods answer in the same shape.
    let r = s.get("/v1/nothing");
    assert_eq!((r.status, r.json()["error"]["code"].clone()), (404, json!("not_found")));
    assert_eq!(s.get(chat).status, 405);
    // A request cut off mid-body leaves the server serving.
    let mut half = TcpStream::connect(&s.addr).unwrap();
    let head = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sekret\r\nContent-Length: 100\r\n\r\n";
    half.write_all(format!("{head}{{\"messages\": [").as_bytes()).unwrap();
    drop(half);
    s.assert_alive();
    assert!(s.log().contains("POST /v1/chat/completions 400"), "no request log lines: {}", s.log());
}

/// A completion request that runs long: the end-of-generation tokens are banned.
fn long_request(s: &Server, max_tokens: usize, stream: bool) -> String {
    let bias: serde_json::Map<String, Value> =
        s.end_tokens().iter().map(|t| (t.to_string(), json!(-100))).collect();
    json!({"prompt": "Once upon a time", "max_tokens": max_tokens, "temperature": 0, "logit_bias": bias, "stream": stream})
        .to_string()
}

#[test]
fn queue_overflow_disconnect_and_sigterm() {
    let Some(model) = real(MODEL) else { return };
    let _one = serial();
    // On the CPU path, which is the faster one on machines without a GPU (the GPU path has the
    // openai test).
    let mut s =
        Server::start(&model, &["--gpu-layers", "0", "--parallel", "1", "--max-queue", "1", "--ctx", "512"]);

    // One running, one waiting: more at once get 429 with an OpenAI-style body.
    let body = long_request(&s, 48, false);
    let answers: Vec<Resp> = std::thread::scope(|sc| {
        let calls: Vec<_> = (0..4).map(|_| sc.spawn(|| s.post("/v1/completions", &body))).collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let refused: Vec<&Resp> = answers.iter().filter(|r| r.status == 429).collect();
    assert!(!refused.is_empty(), "no 429 among {:?}", answers.iter().map(|r| r.status).collect::<Vec<_>>());
    for r in &refused {
        assert_eq!(r.json()["error"]["type"], "rate_limit_exceeded", "{}", r.body);
        assert!(r.headers.contains("retry-after: 1"), "{}", r.headers);
    }
    for r in answers.iter().filter(|r| r.status != 429) {
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["usage"]["completion_tokens"], 48, "{}", r.body);
    }
    assert!(s.metric("wllm_requests_rejected_total") >= refused.len() as f64);

    // A client that hangs up mid-stream frees its sequence.
    let conn = s.send("POST", "/v1/completions", Some(&long_request(&s, 400, true)), None);
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut seen = 0;
    let mut line = String::new();
    while seen < 3 {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "the stream ended early");
        seen += usize::from(line.contains("data: {"));
    }
    assert_eq!(s.metric("wllm_busy_sequences"), 1.0);
    conn.shutdown(std::net::Shutdown::Both).unwrap();
    drop((conn, reader));
    let hung_up = Instant::now();
    while s.metric("wllm_busy_sequences") != 0.0 {
        assert!(
            hung_up.elapsed() < Duration::from_secs(3),
            "the sequence is still busy after the client left"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("slot freed {:?} after the hang-up", hung_up.elapsed());
    let r = s.post("/v1/completions", r#"{"prompt": "Hello", "max_tokens": 3}"#);
    assert_eq!((r.status, r.json()["usage"]["completion_tokens"].clone()), (200, json!(3)), "{}", r.body);

    // SIGTERM: the running stream ends normally, then the process exits 0.
    let conn = s.send("POST", "/v1/completions", Some(&long_request(&s, 40, true)), None);
    let mut reader = BufReader::new(conn);
    let mut first = String::new();
    while !first.starts_with("data: {") {
        first.clear();
        reader.read_line(&mut first).unwrap();
    }
    s.signal("TERM");
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    let data = sse_data(&unchunk_lines(&rest));
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "the stream was cut: {rest}");
    let finish = serde_json::from_str::<Value>(&data[data.len() - 2]).unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "length");
    assert_eq!(s.wait_exit(Duration::from_secs(20)), Some(0), "{}", s.log());
}

/// The lines of a chunked body read as it came (chunk sizes interleaved): the size lines
/// are dropped by keeping only SSE lines.
fn unchunk_lines(s: &str) -> String {
    s.lines().filter(|l| l.starts_with("data: ")).collect::<Vec<_>>().join("\n")
}

/// Whether `python3` can import `openai`; without it the test skips, unless
/// `WLLM_REQUIRE_OPENAI` is set.
fn have_openai() -> bool {
    let ok = Command::new("python3").args(["-c", "import openai"]).status().is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("WLLM_REQUIRE_OPENAI").is_none(),
            "WLLM_REQUIRE_OPENAI is set but python3 cannot import openai (scripts/setup.sh installs it)"
        );
        eprintln!("skipping: python3 cannot import the openai package (scripts/setup.sh installs it)");
    }
    ok
}

fn run_openai_checks(s: &Server, args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/serve/openai_e2e.py");
    let out = Command::new("python3")
        .arg(script)
        .args(["--base-url", &format!("http://{}/v1", s.addr), "--model", ALIAS])
        .args(s.key.as_deref().map(|k| ["--api-key", k]).into_iter().flatten())
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "openai checks failed:\n{stdout}\nserver log:\n{}", s.log());
}

#[test]
fn openai_client_end_to_end() {
    let Some(model) = real(MODEL) else { return };
    if !have_openai() {
        return;
    }
    let _one = serial();
    let s = Server::start(&model, &["--parallel", "8", "--ctx", "1024", "--api-key", "e2e-key"]);
    run_openai_checks(&s, &["--threads", "8"]);
}

/// The CPU path (no GPU layers): streaming, completions, embeddings, and the same answers alone and
/// batched.
#[test]
fn openai_client_on_the_cpu_path() {
    let Some(model) = real(MODEL) else { return };
    if !have_openai() {
        return;
    }
    let _one = serial();
    let s = Server::start(&model, &["--gpu-layers", "0", "--parallel", "4", "--ctx", "512"]);
    run_openai_checks(
        &s,
        &["--threads", "4", "--only", "chat_streamed", "completions", "equivalence", "embeddings"],
    );
}

/// Tool calls through a template that shows tools in the Hermes format (the test models'
/// own templates show none).
#[test]
fn openai_client_tool_calls() {
    let Some(model) = real(MODEL) else { return };
    if !have_openai() {
        return;
    }
    let _one = serial();
    let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/serve/hermes_tools.jinja");
    let s = Server::start(
        &model,
        &["--parallel", "2", "--ctx", "1024", "--chat-template", template.to_str().unwrap()],
    );
    run_openai_checks(&s, &["--only", "tool_calls"]);
}

/// Tool calls through the model's own template, which shows no tools: the generic JSON format
/// (tools in a system message, replies constrained to `{"tool_call": …}` or `{"response": …}`).
#[test]
fn openai_client_tool_calls_without_a_tool_template() {
    let Some(model) = real(MODEL) else { return };
    if !have_openai() {
        return;
    }
    let _one = serial();
    let s = Server::start(&model, &["--parallel", "2", "--ctx", "2048"]);
    run_openai_checks(&s, &["--only", "tool_calls_generic"]);
}

/// gpt-oss's harmony tool calls with the model family's own template: a required call comes
/// back as `tool_calls` (arguments fitting the tool's schema, none of it in the content or
/// the reasoning), streamed as one indexed delta; `tool_choice: "none"` keeps tools out.
#[test]
fn harmony_tool_calls_on_tiny_gpt_oss() {
    let _one = serial();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/models/tiny-gptoss-f32.gguf");
    let template =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/templates/openai-gpt-oss-120b.jinja");
    let s = Server::start(
        &model,
        &[
            "--gpu-layers",
            "0",
            "--parallel",
            "2",
            "--ctx",
            "1024",
            "--chat-template",
            template.to_str().unwrap(),
        ],
    );
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "The weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 10}},
        "required": ["city"], "additionalProperties": false}}}]);
    let body = |extra: Value| {
        let mut b = json!({"messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": tools,
            "tool_choice": "required", "max_tokens": 120, "temperature": 0});
        b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        b.to_string()
    };
    let r = s.post("/v1/chat/completions", &body(json!({})));
    assert_eq!(r.status, 200, "{}", r.body);
    let choice = &r.json()["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{choice}");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather", "{choice}");
    let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(args["city"].as_str().is_some_and(|c| c.chars().count() <= 10), "{args}");
    assert!(choice["message"]["content"].is_null(), "{choice}");
    assert!(
        !choice["message"]
            .get("reasoning_content")
            .is_some_and(|r| r.as_str().unwrap_or("").contains("city"))
    );
    let r = s.post("/v1/chat/completions", &body(json!({"stream": true})));
    let events: Vec<Value> = sse_data(&r.body)
        .iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let deltas: Vec<&Value> =
        events.iter().filter_map(|e| e["choices"][0]["delta"].get("tool_calls")).collect();
    assert_eq!(deltas.len(), 1, "{events:?}");
    assert_eq!(
        (deltas[0][0]["index"].as_u64(), deltas[0][0]["function"]["name"].as_str()),
        (Some(0), Some("get_weather"))
    );
    let r = s.post("/v1/chat/completions", &body(json!({"tool_choice": "none", "max_tokens": 8})));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["choices"][0]["message"].get("tool_calls").is_none(), "{}", r.body);
}

/// Decodes standard base64 (what `encoding_format: "base64"` sends) into little-endian f32s.
fn base64_f32(s: &str) -> Vec<f32> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("{c:?} is not base64"),
    } as u32;
    let mut bytes = Vec::new();
    for quad in s.as_bytes().chunks(4) {
        let data: Vec<u8> = quad.iter().copied().filter(|&c| c != b'=').collect();
        let n = data.iter().fold(0u32, |acc, &c| acc << 6 | val(c)) << (6 * (4 - data.len()));
        bytes.extend(&n.to_be_bytes()[1..data.len()]);
    }
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

/// `/v1/embeddings` on the CPU path: the vector equals the library's
/// `Session::embed_normalized` with the default pooling (`last`: SmolLM2's file names none),
/// `--pooling mean` changes it, base64 carries the same floats, and bad requests are 400s
/// naming the field.
#[test]
fn embeddings_endpoint_matches_the_library() {
    let Some(model) = real(MODEL) else { return };
    let text = "The lighthouse on the northern point was built from stone.";
    let lib = wllm::Model::load_with(
        &model,
        &wllm::LoadOptions { gpu_layers: wllm::GpuLayers::Count(0), n_ctx: Some(256), ..Default::default() },
        &mut |_, _| {},
    )
    .unwrap();
    let ids = lib.tokenize(text);
    let mut session = lib.session(&wllm::SessionOptions { n_ctx: Some(256), n_batch: 256 }).unwrap();
    let want_last = session.embed_normalized(&ids, wllm::Pooling::Last).unwrap();
    let want_mean = session.embed_normalized(&ids, wllm::Pooling::Mean).unwrap();
    drop((session, lib));
    let floats =
        |v: &Value| v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect::<Vec<f32>>();
    let close =
        |a: &[f32], b: &[f32]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5);
    let _one = serial();
    for (args, want) in [(vec![], &want_last), (vec!["--pooling", "mean"], &want_mean)] {
        let mut all = vec!["--gpu-layers", "0", "--parallel", "1", "--ctx", "256"];
        all.extend(args.iter().copied());
        let s = Server::start(&model, &all);
        let r = s.post("/v1/embeddings", &json!({ "input": text, "model": ALIAS }).to_string());
        assert_eq!(r.status, 200, "{}", r.body);
        let j = r.json();
        assert_eq!(j["object"], "list");
        assert_eq!(j["usage"], json!({ "prompt_tokens": ids.len(), "total_tokens": ids.len() }));
        let got = floats(&j["data"][0]["embedding"]);
        assert!(close(&got, want), "{args:?}: the server's vector is not the library's");
        let r = s.post(
            "/v1/embeddings",
            &json!({ "input": [ids, [1, 2, 3]], "encoding_format": "base64" }).to_string(),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let j = r.json();
        let got = base64_f32(j["data"][0]["embedding"].as_str().unwrap());
        assert!(close(&got, want), "{args:?}: base64 of token ids is not the text's vector");
        assert_eq!(j["data"][1]["index"], 1);
        if args.is_empty() {
            for (body, param) in [
                (json!({ "input": [] }), "input"),
                (json!({ "input": "x", "encoding_format": "int8" }), "encoding_format"),
                (json!({ "input": "x", "dimensions": 7 }), "dimensions"),
                (json!({ "input": [[1, 2], "x"] }), "input[1]"),
                (json!({ "input": [1, 99999999] }), "input[0]"),
                (json!({ "input": vec![1; 300] }), "input[0]"),
                (json!({ "model": "other" }), "input"),
            ] {
                let r = s.post("/v1/embeddings", &body.to_string());
                assert_eq!(r.status, 400, "{body}: {}", r.body);
                assert_eq!(r.json()["error"]["param"], param, "{body}: {}", r.body);
            }
            let r = s.post("/v1/embeddings", &json!({ "input": vec![1; 300] }).to_string());
            assert_eq!(r.json()["error"]["code"], "context_length_exceeded", "{}", r.body);
        }
    }
}
