//! `wllm run` on Hugging Face directories of the hybrid architectures: the tiny Qwen3.5 and
//! Qwen3.5-MoE checkpoints (tests/data/hybrid/safetensors, the F32 GGUFs converted backwards)
//! generate the GGUF's greedy tokens with the GGUF's logits, on the CPU.
//!
//! The checkpoints come without a tokenizer, so the test gives each a copy with a word-level
//! `tokenizer.json` whose word `wN` is token N: the text prompt reaches the model as known ids,
//! which the GGUF run is then given directly.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

const PROMPT_IDS: [u32; 8] = [5, 17, 200, 33, 7, 480, 99, 311];

fn data(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/hybrid").join(rel)
}

fn wllm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wllm"))
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .expect("running wllm")
}

/// The checkpoint's files beside a word-level tokenizer over its vocabulary.
fn with_tokenizer(src: &Path, dst: &Path, n_vocab: usize) {
    std::fs::create_dir_all(dst).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    let mut vocab = serde_json::Map::new();
    vocab.insert("<unk>".into(), json!(0));
    for i in 1..n_vocab {
        vocab.insert(format!("w{i}"), json!(i));
    }
    let tokenizer = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null,
        "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"},
    });
    std::fs::write(dst.join("tokenizer.json"), serde_json::to_vec(&tokenizer).unwrap()).unwrap();
}

/// `wllm run --json` with greedy decoding on the CPU: the reply's JSON and the dumped logits.
fn run(model: &Path, prompt: &[&str], dump: &Path) -> (Value, Vec<f32>) {
    let dump_s = dump.to_str().unwrap();
    let mut args = vec![
        "run",
        model.to_str().unwrap(),
        "-n",
        "6",
        "--temp",
        "0",
        "--json",
        "--ctx",
        "64",
        "--ignore-eos",
        "--gpu-layers",
        "0",
        "--dump-logits",
        dump_s,
    ];
    args.extend(prompt);
    let out = wllm(&args);
    assert!(out.status.success(), "{}: {}", model.display(), String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let j: Value = serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap();
    (j, bytemuck::pod_collect_to_vec(&std::fs::read(dump).unwrap()))
}

fn ids(j: &Value, key: &str) -> Vec<u32> {
    j[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {j}"))
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn wllm_run_on_qwen35_directories_matches_the_gguf() {
    let tmp = std::env::temp_dir().join(format!("wllm-cli-hybrid-st-{}", std::process::id()));
    for name in ["qwen35", "qwen35moe"] {
        let dir = tmp.join(name);
        with_tokenizer(&data(&format!("safetensors/tiny-{name}")), &dir, 512);
        let words: Vec<String> = PROMPT_IDS.iter().map(|i| format!("w{i}")).collect();
        let words = words.join(" ");
        let (st, st_logits) = run(&dir, &["--prompt", &words], &tmp.join(format!("{name}-st.f32")));
        assert_eq!(ids(&st, "prompt_ids"), PROMPT_IDS, "{name}: the text prompt's ids");

        let gguf = data(&format!("models/tiny-{name}-f32.gguf"));
        let list: Vec<String> = PROMPT_IDS.iter().map(u32::to_string).collect();
        let list = list.join(",");
        let (g, g_logits) = run(&gguf, &["--prompt-tokens", &list], &tmp.join(format!("{name}-gguf.f32")));
        assert_eq!(st["backend"], "cpu", "{name}");
        assert_eq!(ids(&st, "ids"), ids(&g, "ids"), "{name}: greedy tokens");
        assert_eq!(st_logits.len(), g_logits.len(), "{name}: dumped logits");
        assert!(!st_logits.is_empty(), "{name}: no logits dumped");
        let spread = g_logits.iter().fold(0f32, |m, x| m.max(x.abs()));
        let worst = st_logits.iter().zip(&g_logits).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        eprintln!("{name}: wllm run, directory vs GGUF: max |d logit| {worst:.3e} (max |logit| {spread:.2})");
        // Value heads in the checkpoint's order: the same sums in another order (see
        // tests/hybrid_safetensors.rs).
        assert!(worst <= 1e-5 * spread, "{name}: max |d logit| {worst}");
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
