//! Placement from the command line: the CPU alone says so, `wllm plan` prints a plan without
//! loading, and a request over the memory budget is refused before anything is allocated;
//! `wllm bench` sizes its context from its depths and lists and measures each.

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

#[test]
fn cpu_only_run_says_backend_cpu() {
    let m = tiny();
    let out = wllm(&[
        "run",
        m.to_str().unwrap(),
        "--prompt-tokens",
        "1,2,3",
        "-n",
        "4",
        "--temp",
        "0",
        "--gpu-layers",
        "0",
        "--verbose",
    ]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("backend:              cpu "), "{err}");
    assert!(err.contains("0 on the GPU"), "{err}");
    assert!(err.contains("peak memory"), "{err}");
}

#[test]
fn plan_prints_without_loading_and_over_budget_requests_are_refused() {
    let m = tiny();
    let m = m.to_str().unwrap();
    let out = wllm(&["plan", m, "--ctx", "128", "--gpu-layers", "0"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan = text(&out.stdout);
    assert!(plan.contains("memory plan: 0 of") && plan.contains("fits"), "{plan}");

    // Needs a GPU adapter to have something to refuse; lavapipe in CI.
    if wllm::engine::Gpu::new(&Default::default()).is_err() {
        eprintln!("no GPU adapter: refusal not tested");
        return;
    }
    for cmd in ["run", "plan"] {
        let out = wllm(
            &[
                cmd,
                m,
                "--prompt-tokens",
                "1,2",
                "--gpu-layers",
                "all",
                "--memory-budget",
                "64KiB",
                "--ctx",
                "128",
            ]
            .into_iter()
            .filter(|a| cmd == "run" || !(*a == "--prompt-tokens" || *a == "1,2"))
            .collect::<Vec<_>>(),
        );
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{cmd}: accepted a plan over budget");
        assert!(err.contains("does NOT fit") && err.contains("--gpu-layers"), "{cmd}: {err}");
    }
    // auto under the same budget falls back to fewer layers and runs.
    let out = wllm(&[
        "run",
        m,
        "--prompt-tokens",
        "1,2",
        "-n",
        "2",
        "--temp",
        "0",
        "--memory-budget",
        "64KiB",
        "--verbose",
    ]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("backend:              cpu"), "{err}");
}

/// `--verbose` says how long building the GPU kernels took, and that the load's warm-up did it.
#[test]
fn verbose_run_reports_the_shader_build() {
    let m = tiny();
    let args = ["run", m.to_str().unwrap(), "--prompt-tokens", "1,2", "-n", "2", "--temp", "0", "--verbose"];
    let out = wllm(&args);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    if err.contains("backend:              cpu") {
        eprintln!("no GPU; skipped");
        return;
    }
    let line = err.lines().find(|l| l.starts_with("shader build:")).unwrap_or_else(|| panic!("{err}"));
    assert!(line.contains("warm-up steps"), "{line}");
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
    // The CPU path's generation rows come with the host's read bandwidth and the rate each
    // read the weights at, the figures of the bandwidth target.
    assert!(json["read_bandwidth_gbs"].as_f64().unwrap() > 0.1, "{json}");
    assert!(json["decode_weight_bytes"].as_u64().unwrap() > 0, "{json}");
    assert!(stdout.contains("host memory read bandwidth:"), "{stdout}");
    assert!(stdout.contains("tg4 @ d40: weights read at"), "{stdout}");
}

/// `--cache-type-k/-v` (and llama.cpp's `--ctk/--ctv` names) set the KV cache's types, which the
/// plan names; an unknown type is refused with the accepted ones.
#[test]
fn cache_types_are_taken_by_name_and_shown_in_the_plan() {
    let m = tiny();
    let m = m.to_str().unwrap();
    let args =
        ["run", m, "--prompt-tokens", "1,2,3", "-n", "3", "--temp", "0", "--gpu-layers", "0", "--verbose"];
    let out = wllm(&[&args[..], &["--ctk", "q8_0", "--ctv", "q4_0"]].concat());
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("KV cache:             K q8_0 V q4_0"), "{err}");

    let out = wllm(&["plan", m, "--ctx", "128", "--gpu-layers", "0", "--cache-type-k", "q4_0"]);
    let plan = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(plan.contains("KV cache: K q4_0 V f16"), "{plan}");

    let out = wllm(&[&args[..], &["--cache-type-v", "q5_1"]].concat());
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("unknown KV cache type") && err.contains("q8_0"), "{err}");
}
