//! Loading warms the kernels up by default, so the first request builds none; the opt-out
//! leaves that to the first steps.

mod support;

use wllm::{GenerateOptions, LoadOptions, Model, SamplerConfig, SessionOptions};

fn tiny() -> std::path::PathBuf {
    support::data_dir().join("models/tiny-llama-q4_k_m.gguf")
}

/// A prompt and a few greedy and sampled tokens, as a first request would run them.
fn first_request(model: &Model) {
    let mut session = model.session(&SessionOptions::default()).unwrap();
    let prompt = model.tokenize("Once upon a time, in a land far away");
    for sampling in [SamplerConfig::greedy(), SamplerConfig { seed: Some(1), ..Default::default() }] {
        let opts = GenerateOptions { max_tokens: 3, sampling, ..Default::default() };
        session.clear();
        for chunk in session.generate(&prompt, opts).unwrap() {
            chunk.unwrap();
        }
    }
}

#[test]
fn the_default_load_builds_every_kernel_a_request_needs() {
    assert!(LoadOptions::default().warm_up, "warm-up is on by default");
    let Ok(warm) = Model::load(tiny()) else {
        eprintln!("cannot load; skipped");
        return;
    };
    let Some(gpu) = warm.gpu() else {
        eprintln!("no GPU layers; skipped");
        return;
    };
    let info = warm.info();
    assert!(info.warm_up_time.is_some(), "{info:?}");
    assert!(!info.shader_build_time.is_zero() && info.shader_build_time <= info.load_time, "{info:?}");
    let (built, spent) = (gpu.pipelines.len(), gpu.pipelines.build_time());
    let before: Vec<String> = gpu.pipelines.keys().iter().map(|k| k.label()).collect();
    first_request(&warm);
    let new: Vec<String> =
        gpu.pipelines.keys().iter().map(|k| k.label()).filter(|l| !before.contains(l)).collect();
    assert_eq!(gpu.pipelines.len(), built, "the first request built kernels: {new:?}");
    assert_eq!(gpu.pipelines.build_time(), spent);

    let cold =
        Model::load_with(tiny(), &LoadOptions { warm_up: false, ..Default::default() }, &mut |_, _| {})
            .unwrap();
    assert!(cold.info().warm_up_time.is_none());
    let gpu = cold.gpu().unwrap();
    let built = gpu.pipelines.len();
    first_request(&cold);
    assert!(gpu.pipelines.len() > built, "without warm-up the first request builds kernels");
}
