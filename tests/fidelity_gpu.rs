//! Whole-model fidelity on the GPU path against the llama.cpp fixtures and the exact reference:
//! teacher-forced logits (prompt as one batch, then one token per step) and free-running greedy
//! tokens on the prefix exact math vouches for.

mod support;

use std::sync::Arc;

use wllm::engine::{Context, ContextOptions, DeviceOptions, Gpu, GpuModel, Logits};
use wllm::loaders::{GgufFile, ModelConfig};

const MEAN_BUDGET: f64 = 0.05;
const MAX_BUDGET: f64 = 0.5;

fn load(gpu: &Arc<Gpu>, path: &std::path::Path) -> Arc<GpuModel> {
    let f = GgufFile::open(path).unwrap();
    let cfg = ModelConfig::from_gguf(&f).unwrap();
    Arc::new(GpuModel::load(gpu.clone(), cfg, &f, &mut |_, _| {}).unwrap())
}

fn check_cases(filter: &dyn Fn(&support::Case) -> bool) {
    let gpu = match Gpu::new(&DeviceOptions::default()) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("skipping: {e}");
            return;
        }
    };
    let mut failures = Vec::new();
    let mut cache: Option<(std::path::PathBuf, Arc<GpuModel>)> = None;
    for case in support::cases().into_iter().filter(|c| filter(c)) {
        if !case.model_path.exists() {
            eprintln!(
                "{}: model {} absent (run scripts/fetch-models.sh); skipped",
                case.name,
                case.model_path.display()
            );
            continue;
        }
        let model = match &cache {
            Some((p, m)) if *p == case.model_path => m.clone(),
            _ => {
                let m = load(&gpu, &case.model_path);
                cache = Some((case.model_path.clone(), m.clone()));
                m
            }
        };
        let v = case.n_vocab;
        // Teacher-forced: the prompt as one batch, then each greedy token on its own.
        let mut ctx =
            Context::new(model.clone(), &ContextOptions { n_ctx: 512, n_batch: 64, ..Default::default() })
                .unwrap();
        let mut got = ctx.eval(&case.prompt_ids, Logits::All, false).unwrap().logits;
        for &t in &case.greedy_ids {
            got.extend(ctx.eval(&[t], Logits::Last, false).unwrap().logits);
        }
        let rows = case.prompt_ids.len() + case.greedy_ids.len();
        assert_eq!(got.len(), rows * v);
        let (mean, max) = support::compare(&case, &got, rows);
        let (lm, lx) = support::llama_vs_exact(&case, rows).unwrap_or((f64::NAN, f64::NAN));
        // Free-running greedy on the GPU (argmax there, only the id comes back).
        let p = case.greedy_prefix_agree_exact;
        let mut ctx =
            Context::new(model.clone(), &ContextOptions { n_ctx: 512, n_batch: 64, ..Default::default() })
                .unwrap();
        let mut tok = ctx.eval(&case.prompt_ids, Logits::None, true).unwrap().token.unwrap();
        let mut greedy = vec![tok];
        while greedy.len() < p {
            tok = ctx.eval(&[tok], Logits::None, true).unwrap().token.unwrap();
            greedy.push(tok);
        }
        let greedy_ok = greedy[..p.min(greedy.len())] == case.greedy_ids[..p];
        eprintln!(
            "{:<38} exact |d| mean {mean:.4} max {max:.4}   (llama.cpp: mean {lm:.4} max {lx:.4})   greedy {}/{p} {}",
            case.name,
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
fn tiny_llama_and_gemma3_on_gpu() {
    check_cases(&|c| !c.real && (c.name.starts_with("tiny-llama-q") || c.name.starts_with("tiny-gemma3-q")));
}

/// Llama 3 RoPE factors (`rope_freqs.weight`), and the 62-layer Gemma 3 with llama.cpp's
/// attention scale for it and a final logit softcap.
#[test]
fn tiny_rope_factors_and_gemma3_27b_rules_on_gpu() {
    check_cases(&|c| c.name.starts_with("tiny-llama-ropefreqs") || c.name.starts_with("tiny-gemma3-62l"));
}

#[test]
fn real_models_on_gpu() {
    check_cases(&|c| c.real);
}

#[test]
fn tiny_qwen2_qwen3_on_gpu() {
    check_cases(&|c| c.name.starts_with("tiny-qwen2") || c.name.starts_with("tiny-qwen3-"));
}

#[test]
fn tiny_moe_on_gpu() {
    check_cases(&|c| c.name.starts_with("tiny-qwen3moe") || c.name.starts_with("tiny-llama-moe"));
}

/// gpt-oss: attention sinks, alternating sliding-window layers (window 8 under 12–34-token
/// prompts), YaRN, q/k/v/o biases, biased experts with the clamped SwiGLU; F32 and MXFP4 experts.
#[test]
fn tiny_gpt_oss_on_gpu() {
    check_cases(&|c| c.name.starts_with("tiny-gptoss"));
}

/// The tiny llama in IQ4_NL and IQ4_XS (token embedding included; the output head is Q6_K).
#[test]
fn tiny_iq4_on_gpu() {
    check_cases(&|c| c.name.starts_with("tiny-llama-iq4"));
}

/// The tiny llama in the codebook presets, quantized with an importance matrix: IQ3_XXS, IQ3_S,
/// IQ2_XXS, IQ2_XS, IQ2_S, IQ1_S and IQ1_M (with the other types those presets mix in).
#[test]
fn tiny_iq_codebook_presets_on_gpu() {
    check_cases(&|c| ["iq1", "iq2", "iq3"].iter().any(|p| c.name.starts_with(&format!("tiny-llama-{p}"))));
}
