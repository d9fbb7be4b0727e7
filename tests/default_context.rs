//! The context a load takes when none is asked for.

mod support;

use wllm::{DeviceOptions, Gpu, LoadOptions, Model};

/// With no context asked for, a load takes the largest one (in steps of 256) whose plan keeps
/// every layer on the GPU, up to the trained context: gemma-3-270m (trained for 32768) under a
/// GPU budget between what 4096 and 32768 positions need.
#[test]
fn the_default_context_is_the_largest_that_keeps_every_layer_on_the_gpu() {
    let path = support::real_model_path("gemma-3-270m-q4_k_m.gguf");
    if !path.exists() {
        eprintln!("{} absent (run scripts/fetch-models.sh); skipped", path.display());
        return;
    }
    if Gpu::new(&DeviceOptions::default()).is_err() {
        eprintln!("no GPU adapter; skipped");
        return;
    }
    let plan = |n_ctx: Option<u32>, memory_budget: Option<u64>| {
        let opts = LoadOptions { n_ctx, memory_budget, ..Default::default() };
        Model::plan(&path, &opts).unwrap()
    };
    let gpu_total = |n: u32| plan(Some(n), None).gpu.unwrap().1.total();
    let (small, large) = (gpu_total(4096), gpu_total(32768));
    let budget = (small + large) / 2;
    let chosen = plan(None, Some(budget));
    let n = chosen.n_ctx;
    assert!((4096..32768).contains(&n) && n % 256 == 0, "chose {n}");
    assert_eq!(chosen.gpu_layers, chosen.n_layer, "{chosen}");
    // 256 more positions would push a layer off the GPU.
    let more = plan(Some(n + 256), Some(budget));
    assert!(more.gpu_layers < more.n_layer, "{n} + 256 still fits:\n{more}");
    // A budget with room for everything gets the trained context; a model trained for less
    // than 4096 positions gets its own.
    assert_eq!(plan(None, None).n_ctx, 32768);
    let tiny = support::data_dir().join("models/tiny-llama-q8_0.gguf");
    assert_eq!(Model::plan(&tiny, &LoadOptions::default()).unwrap().n_ctx, 2048);
}
