//! `wllm run --json-schema / --grammar / --regex`: outputs that fit, `--json` saying whether the
//! constraint completed, and bad constraints refused with a message and a failing exit.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data").join(rel)
}

fn wllm_run(extra: &[&str]) -> Output {
    let model = data("models/tiny-llama-q4_k_m.gguf");
    Command::new(env!("CARGO_BIN_EXE_wllm"))
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .args([
            "run",
            model.to_str().unwrap(),
            "-p",
            "Answer:",
            "--gpu-layers",
            "0",
            "--temp",
            "1.2",
            "-s",
            "7",
        ])
        .args(extra)
        .output()
        .unwrap()
}

fn json_of(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn json_schema_flag_gives_valid_json_and_reports_completion() {
    let schema = r#"{"type":"object","properties":{"ok":{"type":"boolean"},"n":{"type":"integer"}},"required":["ok","n"],"additionalProperties":false}"#;
    let o = json_of(&wllm_run(&["--json-schema", schema, "-n", "64", "--json"]));
    assert_eq!(o["stop_reason"], "constraint", "{o}");
    assert_eq!(o["constraint"]["complete"], true, "{o}");
    let v: serde_json::Value = serde_json::from_str(o["text"].as_str().unwrap()).unwrap();
    assert!(v["ok"].is_boolean() && v["n"].is_i64(), "{v}");
    // Too few tokens: the output stops short and says so.
    let o = json_of(&wllm_run(&["--json-schema", schema, "-n", "2", "--json"]));
    assert_eq!(o["constraint"]["complete"], false, "{o}");
    assert_eq!(o["stop_reason"], "length", "{o}");
}

#[test]
fn grammar_file_and_regex_flags() {
    let dir = std::env::temp_dir().join(format!("wllm-constraint-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let gbnf = dir.join("yn.gbnf");
    std::fs::write(&gbnf, "root ::= (\"yes\" | \"no\") \"!\"\n").unwrap();
    let o = json_of(&wllm_run(&["--grammar", gbnf.to_str().unwrap(), "--json"]));
    assert!(["yes!", "no!"].contains(&o["text"].as_str().unwrap()), "{o}");
    let lark = dir.join("n.lark");
    std::fs::write(&lark, "start: /[1-9][0-9]?/ \"%\"\n").unwrap();
    let o = json_of(&wllm_run(&["--grammar", lark.to_str().unwrap(), "--json"]));
    let text = o["text"].as_str().unwrap();
    assert!(text.ends_with('%') && text[..text.len() - 1].parse::<u32>().is_ok_and(|n| n > 0), "{o}");
    let o = json_of(&wllm_run(&["--regex", "[A-Z]{4}", "--json"]));
    let text = o["text"].as_str().unwrap();
    assert!(text.len() == 4 && text.bytes().all(|b| b.is_ascii_uppercase()), "{o}");
}

#[test]
fn bad_constraints_fail_with_a_message() {
    let out = wllm_run(&["--json-schema", r#"{"type": 17}"#]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid JSON schema"), "{out:?}");
    let out = wllm_run(&["--json-schema", "{not json"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--json-schema"), "{out:?}");
    let out = wllm_run(&["--regex", "a", "--json-schema", "{}"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"), "{out:?}");
    let out = wllm_run(&["--grammar", "/nonexistent/g.gbnf"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--grammar"), "{out:?}");
}
