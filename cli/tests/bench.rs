//! `wllm bench` as llama-bench is used: comma lists of prompt and generation sizes, and
//! depths of context already filled before each test.

use std::path::PathBuf;
use std::process::{Command, Output};

fn tiny() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/models/tiny-llama-q4_k_m.gguf")
}

fn wllm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wllm"))
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .expect("running wllm")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `bench` with llama-bench's comma lists and depths: one row per depth and test, named as
/// llama-bench names them, each with a speed; the context filled to each depth.
#[test]
fn bench_runs_every_listed_test_at_every_depth() {
    let model = tiny();
    let out = wllm(&[
        "bench",
        model.to_str().unwrap(),
        "-p",
        "8,12",
        "-n",
        "4",
        "-d",
        "0,40",
        "-r",
        "1",
        "--json",
        "--gpu-layers",
        "0",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let names: Vec<&str> =
        json["results"].as_array().unwrap().iter().map(|r| r["test"].as_str().unwrap()).collect();
    assert_eq!(names, ["pp8", "pp12", "tg4", "pp8 @ d40", "pp12 @ d40", "tg4 @ d40"]);
    assert!(json["results"].as_array().unwrap().iter().all(|r| r["tps"].as_f64().unwrap() > 0.0), "{json}");
    assert!(stdout.contains("| tg4 @ d40 |"), "{stdout}");
    assert_eq!(json["pp_tps"], json["results"][0]["tps"]);
}
