//! The fidelity standard of the GPU path holds wherever the layers run: every public case through
//! the library (`Model` + `Session`) with no layer on the GPU, a split in the middle (first
//! half on the CPU, second half and the head on the GPU), one layer on the GPU, and every
//! layer on the GPU (real models: the CPU alone and the middle split). Same budgets as
//! `fidelity_gpu.rs`.

mod support;

use wllm::engine::GpuLayers;
use wllm::{LoadOptions, Logits, Model, SessionOptions};

const MEAN_BUDGET: f64 = 0.05;
const MAX_BUDGET: f64 = 0.5;

fn check(filter: &dyn Fn(&support::Case) -> bool, splits: &dyn Fn(u32) -> Vec<u32>) {
    check_with(filter, splits, 0);
}

/// `n_cpu_moe`: MoE layers below it keep their experts on the CPU.
fn check_with(filter: &dyn Fn(&support::Case) -> bool, splits: &dyn Fn(u32) -> Vec<u32>, n_cpu_moe: u32) {
    if wllm::engine::Gpu::new(&Default::default()).is_err() {
        eprintln!("no GPU adapter: skipped");
        return;
    }
    let mut failures = Vec::new();
    for case in support::cases().into_iter().filter(|c| filter(c)) {
        if !case.model_path.exists() {
            eprintln!("{}: model absent (run scripts/fetch-models.sh); skipped", case.name);
            continue;
        }
        let n_layer = {
            let f = wllm::loaders::GgufFile::open(&case.model_path).unwrap();
            wllm::loaders::ModelConfig::from_gguf(&f).unwrap().n_layer
        };
        let mut gs = splits(n_layer);
        gs.dedup();
        for g in gs {
            let opts = LoadOptions {
                gpu_layers: GpuLayers::Count(g),
                n_ctx: Some(512),
                n_cpu_moe,
                ..Default::default()
            };
            let model = Model::load_with(&case.model_path, &opts, &mut |_, _| {}).unwrap();
            assert_eq!(model.info().plan.gpu_layers, g);
            if n_cpu_moe > 0 {
                assert!(model.info().plan.cpu.weights > 0, "{}: no experts on the CPU", case.name);
            }
            let mut s = model.session(&SessionOptions { n_ctx: Some(512), n_batch: 64 }).unwrap();
            assert_eq!(s.layer_split(), (n_layer - g, g));
            let mut got = s.eval(&case.prompt_ids, Logits::All).unwrap();
            for &t in &case.greedy_ids {
                got.extend(s.eval(&[t], Logits::Last).unwrap());
            }
            let rows = case.prompt_ids.len() + case.greedy_ids.len();
            assert_eq!(got.len(), rows * case.n_vocab);
            let (mean, max) = support::compare(&case, &got, rows);
            let p = case.greedy_prefix_agree_exact;
            s.clear();
            let mut tok = s.eval_greedy(&case.prompt_ids).unwrap();
            let mut greedy = vec![tok];
            while greedy.len() < p {
                tok = s.eval_greedy(&[tok]).unwrap();
                greedy.push(tok);
            }
            let greedy_ok = greedy[..p] == case.greedy_ids[..p];
            eprintln!(
                "{:<38} gpu layers {g:>2}/{n_layer:<2} cpu experts below {n_cpu_moe} ({:<10}) exact |d| mean {mean:.4} max {max:.4} greedy {}",
                case.name,
                s.backend_name(),
                if greedy_ok { "ok" } else { "MISMATCH" }
            );
            if mean > MEAN_BUDGET || max > MAX_BUDGET || !greedy_ok {
                failures.push(format!(
                    "{} with {g} GPU layers: mean {mean:.4} max {max:.4} greedy_ok {greedy_ok}",
                    case.name
                ));
            }
        }
    }
    assert!(failures.is_empty(), "fidelity failures:\n{}", failures.join("\n"));
}

#[test]
fn tiny_models_on_cpu_gpu_and_splits() {
    check(&|c| !c.real, &|n| vec![0, n / 2, 1, n]);
}

#[test]
fn real_models_on_cpu_and_split() {
    // Every layer on the GPU is `fidelity_gpu.rs`; one prompt per model keeps CI short.
    check(&|c| c.real && c.name.ends_with("_c0"), &|n| vec![0, n / 2]);
}

#[test]
fn tiny_moe_with_experts_on_cpu() {
    let moe = |c: &support::Case| {
        ["tiny-qwen3moe", "tiny-llama-moe", "tiny-gptoss"].iter().any(|m| c.name.starts_with(m))
    };
    // --cpu-moe with every layer on the GPU, and with a CPU/GPU split.
    check_with(&moe, &|n| vec![n, n / 2], u32::MAX);
    // --n-cpu-moe 1: the first MoE layer's experts only.
    check_with(&moe, &|n| vec![n], 1);
}
