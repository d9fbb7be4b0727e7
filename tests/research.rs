//! The researcher API on tiny models, wherever the layers run (every layer on the CPU, a split
//! in the middle, every layer on the GPU): `Session::score` equals the log-softmax of `eval`'s
//! logits taken in f64, across batches and logit-readback chunks; inputs longer than the
//! context are refused; `Session::embed` equals the float64 exact pass's final-norm hidden
//! state for each pooling (`tests/data/embed`, made by `tools/exact_ref.py --embed`).

mod support;

use wllm::engine::GpuLayers;
use wllm::{Error, GenerateOptions, LoadOptions, Logits, Model, Pooling, SamplerConfig, SessionOptions};

const MODELS: [&str; 3] = ["tiny-llama-q8_0", "tiny-gemma3-q4_k_m", "tiny-qwen3-q4_k_m"];

/// Placements to test: the CPU alone, then with an adapter a middle split and the GPU alone.
fn placements(n_layer: u32) -> Vec<u32> {
    match wllm::engine::Gpu::new(&Default::default()) {
        Ok(_) => vec![0, n_layer / 2, n_layer],
        Err(e) => {
            eprintln!("no GPU adapter ({e}): the CPU placement only");
            vec![0]
        }
    }
}

fn load(name: &str, gpu_layers: u32) -> Model {
    let path = support::data_dir().join("models").join(format!("{name}.gguf"));
    let opts =
        LoadOptions { gpu_layers: GpuLayers::Count(gpu_layers), n_ctx: Some(256), ..Default::default() };
    let model = Model::load_with(&path, &opts, &mut |_, _| {}).unwrap();
    assert_eq!(model.info().plan.gpu_layers, gpu_layers);
    model
}

fn n_layer(name: &str) -> u32 {
    let path = support::data_dir().join("models").join(format!("{name}.gguf"));
    let f = wllm::loaders::GgufFile::open(&path).unwrap();
    wllm::loaders::ModelConfig::from_gguf(&f).unwrap().n_layer
}

/// A text of `n` ids spread over the vocabulary (deterministic).
fn ids(n: usize, n_vocab: u32) -> Vec<u32> {
    (0..n as u64).map(|i| ((i * 2_654_435_761 + 17) % n_vocab as u64) as u32).collect()
}

fn log_softmax_at(row: &[f32], t: u32) -> f64 {
    let max = row.iter().map(|&v| v as f64).fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
    row[t as usize] as f64 - max - sum.ln()
}

#[test]
fn score_equals_log_softmax_of_eval_logits() {
    for name in MODELS {
        for g in placements(n_layer(name)) {
            let model = load(name, g);
            let v = model.config().n_vocab;
            // n_batch 24 over 100 tokens: batches of 24 and a tail, each target crossing into
            // the next batch.
            let mut s = model.session(&SessionOptions { n_ctx: Some(128), n_batch: 24 }).unwrap();
            let text = ids(100, v);
            // The same batches as `score` feeds, so that the CPU layers see the same shapes.
            let mut logits = Vec::new();
            for batch in text.chunks(s.n_batch()) {
                logits.extend(s.eval(batch, Logits::All).unwrap());
            }
            s.clear();
            let got = s.score(&text).unwrap();
            assert_eq!(got.len(), text.len() - 1, "{name} gpu_layers={g}: one score per next token");
            assert_eq!(s.tokens(), &text[..], "{name} gpu_layers={g}: the cache holds the text");
            // The same forward pass. The GPU head runs on the same rows either way: only the
            // f32 reduction differs. The CPU head runs a few rows at a time when scoring (a
            // different kernel shape than a whole batch's), which moves logits by ~2e-4. A
            // wrong row or target moves a score by whole units.
            let budget = if g == 0 { 1e-3 } else { 1e-5 };
            let mut worst = (0, 0f64);
            for (i, &x) in got.iter().enumerate() {
                let want = log_softmax_at(&logits[i * v as usize..(i + 1) * v as usize], text[i + 1]);
                let d = (x as f64 - want).abs();
                assert!(
                    d <= budget * want.abs().max(1.0),
                    "{name} gpu_layers={g}: position {i}: score {x} vs log-softmax of eval {want}"
                );
                if d > worst.1 {
                    worst = (i, d);
                }
            }
            eprintln!("{name} gpu_layers={g} [{}]: max |d| {:.2e} at {}", s.backend_name(), worst.1, worst.0);
        }
    }
}

#[test]
fn score_refuses_what_does_not_fit() {
    let model = load(MODELS[0], 0);
    let mut s = model.session(&SessionOptions { n_ctx: Some(64), n_batch: 16 }).unwrap();
    let text = ids(65, model.config().n_vocab);
    match s.score(&text) {
        Err(Error::ContextOverflow { needed: 65, n_ctx: 64 }) => {}
        other => panic!("65 tokens in a context of 64: {other:?}"),
    }
    assert!(s.tokens().is_empty(), "a refused input must leave the cache as it was");
    assert!(matches!(s.score(&[]), Err(Error::EmptyPrompt)));
    let v = model.config().n_vocab;
    assert!(matches!(s.score(&[1, v]), Err(Error::TokenOutOfVocab { token, .. }) if token == v));
    // One token has no next token to score.
    assert_eq!(s.score(&[1]).unwrap(), Vec::<f32>::new());
}

/// The exact pass's pooled states for one model.
struct EmbedRef {
    ids: Vec<u32>,
    pooled: Vec<(Pooling, Vec<f64>)>,
}

fn embed_ref(name: &str) -> EmbedRef {
    let path = support::data_dir().join("embed").join(format!("{name}.json"));
    let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let vec = |k: &str| j[k].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect::<Vec<f64>>();
    EmbedRef {
        ids: j["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect(),
        pooled: vec![(Pooling::Mean, vec("mean")), (Pooling::Last, vec("last")), (Pooling::Cls, vec("cls"))],
    }
}

/// |got - want| / |want| (Euclidean).
fn rel_err(got: &[f32], want: &[f64]) -> f64 {
    let d: f64 = got.iter().zip(want).map(|(&g, &w)| (g as f64 - w).powi(2)).sum::<f64>().sqrt();
    d / want.iter().map(|w| w * w).sum::<f64>().sqrt()
}

/// Relative error budget against the exact pass: measured errors are 1e-6 to 4e-4 (CPU,
/// split, GPU with f16 KV cache); a wrong row, norm or pooling is off by far more.
const EMBED_BUDGET: f64 = 2e-3;

#[test]
fn embed_matches_the_exact_pass_for_each_pooling() {
    for name in MODELS {
        let r = embed_ref(name);
        for g in placements(n_layer(name)) {
            let model = load(name, g);
            // Batches of 16: the mean spans batches and the last token is in the last one.
            let mut s = model.session(&SessionOptions { n_ctx: Some(128), n_batch: 16 }).unwrap();
            s.eval(&[1, 2, 3], Logits::None).unwrap();
            for (pooling, want) in &r.pooled {
                let got = s.embed(&r.ids, *pooling).unwrap();
                assert_eq!(s.tokens(), &r.ids[..], "{name}: embed starts from an empty cache");
                let e = rel_err(&got, want);
                eprintln!("{name} gpu_layers={g} [{}] {pooling}: relative error {e:.2e}", s.backend_name());
                assert!(
                    e < EMBED_BUDGET,
                    "{name} gpu_layers={g} {pooling}: relative error {e} against the exact pass"
                );
                let unit = s.embed_normalized(&r.ids, *pooling).unwrap();
                let norm = unit.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
                assert!((norm - 1.0).abs() < 1e-5, "{name} {pooling}: normalized length {norm}");
                let cos: f64 = unit.iter().zip(&got).map(|(&u, &x)| u as f64 * x as f64).sum::<f64>()
                    / got.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
                assert!((cos - 1.0).abs() < 1e-5, "{name} {pooling}: normalizing changed the direction");
            }
        }
    }
}

#[test]
fn pooling_names_and_gguf_codes() {
    for p in [Pooling::Mean, Pooling::Last, Pooling::Cls] {
        assert_eq!(p.as_str().parse::<Pooling>().unwrap(), p);
    }
    assert!(matches!("max".parse::<Pooling>(), Err(Error::InvalidOption { option: "pooling", .. })));
    assert_eq!(Pooling::from_llama_code(1), Some(Pooling::Mean));
    assert_eq!(Pooling::from_llama_code(2), Some(Pooling::Cls));
    assert_eq!(Pooling::from_llama_code(3), Some(Pooling::Last));
    assert_eq!(Pooling::from_llama_code(0), None);
    assert!((wllm::perplexity(&[-1.0, -3.0]) - 2f64.exp()).abs() < 1e-12);
}

/// `GenerateOptions::logprobs`: each chunk carries its token's log-probability, which equals
/// `score` over the prompt and the generated tokens, and the top alternatives, most likely
/// first (greedy: the chosen token leads them). Asking for them does not change the tokens.
#[test]
fn generated_chunks_carry_logprobs_that_score_agrees_with() {
    for name in MODELS {
        for g in placements(n_layer(name)) {
            let model = load(name, g);
            let prompt = ids(20, model.config().n_vocab);
            let opts = |logprobs| GenerateOptions {
                max_tokens: 12,
                sampling: SamplerConfig::greedy(),
                stop_at_eog: false,
                logprobs,
                ..Default::default()
            };
            let mut s = model.session(&SessionOptions { n_ctx: Some(128), n_batch: 8 }).unwrap();
            let plain: Vec<u32> =
                s.generate(&prompt, opts(None)).unwrap().filter_map(|c| c.unwrap().token).collect();
            s.clear();
            let chunks: Vec<wllm::Chunk> =
                s.generate(&prompt, opts(Some(3))).unwrap().map(|c| c.unwrap()).collect();
            let tokens: Vec<u32> = chunks.iter().filter_map(|c| c.token).collect();
            assert_eq!(tokens, plain, "{name} gpu_layers={g}: logprobs changed the greedy tokens");
            let mut text = prompt.clone();
            text.extend(&tokens);
            s.clear();
            let scores = s.score(&text).unwrap();
            for (i, c) in chunks.iter().filter(|c| c.token.is_some()).enumerate() {
                let (chosen, top) =
                    c.logprobs.as_ref().unwrap_or_else(|| panic!("{name}: chunk {i} without logprobs"));
                assert_eq!(Some(chosen.token), c.token);
                assert_eq!(top.len(), 3);
                assert_eq!(top[0].token, chosen.token, "{name}: greedy picks the most likely token");
                assert!(top.windows(2).all(|w| w[0].logprob >= w[1].logprob), "{name}: top not sorted");
                let want = scores[prompt.len() - 1 + i];
                // Decode steps against a batched forward pass: the CPU's kernel shapes differ.
                assert!(
                    (chosen.logprob - want).abs() <= 2e-3 * want.abs().max(1.0),
                    "{name} gpu_layers={g}: token {i}: chunk logprob {} vs score {want}",
                    chosen.logprob
                );
            }
        }
    }
}
