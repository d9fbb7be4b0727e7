//! Whole-model fidelity on the CPU path (every layer and the head on the CPU) against the
//! llama.cpp fixtures and the exact reference: teacher-forced logits (prompt as one batch,
//! then one token per step) and free-running greedy tokens on the prefix exact math vouches
//! for. The same checks and budgets as `fidelity_gpu.rs`. The weights are held as loading holds
//! them (copied, and on AVX-512 VNNI with Q4_K/Q6_K packed for the decode kernels).

mod support;

use std::sync::Arc;

use wllm::engine::cpu::{CpuPacker, CpuStack, Isa, LogitRows};
use wllm::loaders::model::{ResidentSource, TensorSource};
use wllm::loaders::{GgufFile, ModelConfig};

const MEAN_BUDGET: f64 = 0.05;
const MAX_BUDGET: f64 = 0.5;

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

fn check_cases(filter: &dyn Fn(&support::Case) -> bool) {
    let mut failures = Vec::new();
    let mut cache: Option<(std::path::PathBuf, ModelConfig, Arc<dyn TensorSource>)> = None;
    for case in support::cases().into_iter().filter(|c| filter(c)) {
        if !case.model_path.exists() {
            eprintln!(
                "{}: model {} absent (run scripts/fetch-models.sh); skipped",
                case.name,
                case.model_path.display()
            );
            continue;
        }
        let (cfg, src) = match &cache {
            Some((p, cfg, src)) if *p == case.model_path => (cfg.clone(), src.clone()),
            _ => {
                let f = GgufFile::open(&case.model_path).unwrap();
                let cfg = ModelConfig::from_gguf(&f).unwrap();
                // As loading holds the weights: copied, Q4_K/Q6_K packed where this CPU's
                // kernels read them so.
                let names: Vec<String> = f.tensors().iter().map(|t| t.name.clone()).collect();
                let packer = CpuPacker(Isa::best());
                let src: Arc<dyn TensorSource> =
                    Arc::new(ResidentSource::new(Arc::new(f), &names, Some(&packer)).unwrap());
                cache = Some((case.model_path.clone(), cfg.clone(), src.clone()));
                (cfg, src)
            }
        };
        let mut stack = CpuStack::new(&cfg, src, cfg.n_layer, true, 512, 0).unwrap();
        let v = case.n_vocab;
        // Teacher-forced: the prompt as one batch, then each greedy token on its own.
        let mut got = stack.logits(&case.prompt_ids, 0, LogitRows::All).unwrap();
        for (pos, &t) in (case.prompt_ids.len() as u32..).zip(&case.greedy_ids) {
            got.extend(stack.logits(&[t], pos, LogitRows::Last).unwrap());
        }
        let rows = case.prompt_ids.len() + case.greedy_ids.len();
        assert_eq!(got.len(), rows * v);
        let (mean, max) = support::compare(&case, &got, rows);
        let (lm, lx) = support::llama_vs_exact(&case, rows).unwrap_or((f64::NAN, f64::NAN));
        // Free-running greedy.
        // Steps a near-tie leaves to rounding are not held (see `exact_vouched`).
        let p = support::exact_vouched(&case, max);
        stack.clear();
        let mut tok = argmax(&stack.logits(&case.prompt_ids, 0, LogitRows::Last).unwrap());
        let mut pos = case.prompt_ids.len() as u32;
        let mut greedy = vec![tok];
        while greedy.len() < p {
            tok = argmax(&stack.logits(&[tok], pos, LogitRows::Last).unwrap());
            pos += 1;
            greedy.push(tok);
        }
        let greedy_ok = greedy[..p.min(greedy.len())] == case.greedy_ids[..p];
        eprintln!(
            "{:<38} [{}] exact |d| mean {mean:.2e} max {max:.2e}   (llama.cpp: mean {lm:.4} max {lx:.4})   greedy {}/{p} {}",
            case.name,
            stack.isa(),
            if greedy_ok { p } else { 0 },
            if greedy_ok { "ok" } else { "MISMATCH" }
        );
        if mean > MEAN_BUDGET || max > MAX_BUDGET || !greedy_ok {
            failures.push(format!(
                "{}: mean {mean:.4} max {max:.4} greedy_ok {greedy_ok} ({greedy:?} vs {:?})",
                case.name,
                &case.greedy_ids[..p]
            ));
        }
    }
    assert!(failures.is_empty(), "fidelity failures:\n{}", failures.join("\n"));
}

#[test]
fn tiny_models_on_cpu() {
    check_cases(&|c| !c.real);
}

#[test]
fn real_models_on_cpu() {
    check_cases(&|c| c.real);
}
