//! Prompt attention in tiles (keys and values staged in workgroup memory, shared by 16 tokens)
//! in whole models: each case's prompt and greedy continuation evaluated in 24-token steps, so
//! steps start deep in the cache and end inside a block, with the tiled kernel forced on and
//! off, against each other and the exact reference. The cases cover a plain llama, gpt-oss
//! (sinks, a sliding window shorter than the text), Gemma 3 (sliding-window layers) and
//! Qwen3.5 (gated attention between DeltaNet layers).

mod support;

use wllm::{DeviceOptions, Gpu, GpuLayers, LoadOptions, Logits, Model, SessionOptions};

#[test]
fn tiled_prompt_attention_matches_the_row_walk_and_the_exact_pass() {
    let Ok(default) = Gpu::new(&DeviceOptions::default()) else {
        eprintln!("no GPU adapter; skipped");
        return;
    };
    let gpu = |tiled| {
        let tuning = wllm::engine::Tuning { tiled_prefill_attention: tiled, ..default.tuning };
        Gpu::new(&DeviceOptions { tuning: Some(tuning), ..Default::default() }).unwrap()
    };
    let cases: Vec<_> = support::cases().into_iter().chain(support::hybrid_cases()).collect();
    for name in ["tiny-llama-q8_0_c0", "tiny-gptoss-mxfp4_c0", "tiny-gemma3-q4_k_m_c0", "tiny-qwen35-f32_c0"]
    {
        let case = cases.iter().find(|c| c.name == name).expect("a shipped case");
        let text: Vec<u32> = case.prompt_ids.iter().chain(&case.greedy_ids).copied().collect();
        let run = |tiled: bool| {
            let opts = LoadOptions {
                gpu: Some(gpu(tiled)),
                gpu_layers: GpuLayers::All,
                warm_up: false,
                n_ctx: Some(256),
                ..Default::default()
            };
            let model = Model::load_with(&case.model_path, &opts, &mut |_, _| {}).unwrap();
            let mut s = model.session(&SessionOptions { n_ctx: None, n_batch: 24 }).unwrap();
            s.eval(&text, Logits::All).unwrap()
        };
        let (tiled, rows) = (run(true), run(false));
        let worst = tiled.iter().zip(&rows).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        let (mean, max) = support::compare(case, &tiled, text.len());
        let (rows_mean, _) = support::compare(case, &rows, text.len());
        eprintln!(
            "{name}: tiled vs rows max |d| {worst:.2e}; from the exact pass: tiled mean {mean:.2e} max {max:.2e}, rows mean {rows_mean:.2e}"
        );
        // The two differ in summation order only (teams of different sizes).
        assert!(worst < 5e-3, "{name}: tiled prompt attention differs from the row walk by {worst}");
        assert!(mean < 0.05 && max < 0.5, "{name}: mean {mean} max {max} from the exact pass");
        assert!(
            mean <= rows_mean * 1.1 + 1e-4,
            "{name}: tiled mean {mean} from the exact pass, rows {rows_mean}"
        );
    }
}
