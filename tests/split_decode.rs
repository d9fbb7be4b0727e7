//! Decode attention split along the keys (flash-decoding) in whole models: a context deep
//! enough to split (4096 positions: 4 splits), one-token steps on the GPU with the split
//! forced on and off, against each other and the exact reference.

mod support;

use wllm::{DeviceOptions, Gpu, GpuLayers, LoadOptions, Logits, Model, SessionOptions};

#[test]
fn split_decode_attention_matches_the_whole_kernel_and_the_exact_pass() {
    let Ok(default) = Gpu::new(&DeviceOptions::default()) else {
        eprintln!("no GPU adapter; skipped");
        return;
    };
    let gpu = |split| {
        let tuning = wllm::engine::Tuning { split_decode_attention: split, ..default.tuning };
        Gpu::new(&DeviceOptions { tuning: Some(tuning), ..Default::default() }).unwrap()
    };
    let all = support::cases();
    for name in ["tiny-llama-q8_0_c0", "tiny-gptoss-mxfp4_c0", "tiny-gemma3-q4_k_m_c0"] {
        let case = all.iter().find(|c| c.name == name).expect("a shipped case");
        let rows = case.prompt_ids.len() + case.greedy_ids.len();
        let run = |split: bool| {
            let opts = LoadOptions {
                gpu: Some(gpu(split)),
                gpu_layers: GpuLayers::All,
                warm_up: false,
                n_ctx: Some(4096),
                ..Default::default()
            };
            let model = Model::load_with(&case.model_path, &opts, &mut |_, _| {}).unwrap();
            let mut s = model.session(&SessionOptions { n_ctx: None, n_batch: 64 }).unwrap();
            assert_eq!(s.n_ctx(), 4096);
            let mut got = s.eval(&case.prompt_ids, Logits::All).unwrap();
            for &t in &case.greedy_ids {
                got.extend(s.eval(&[t], Logits::Last).unwrap());
            }
            got
        };
        let (split, whole) = (run(true), run(false));
        let prompt = case.prompt_ids.len() * case.n_vocab;
        let worst =
            split[prompt..].iter().zip(&whole[prompt..]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        let (mean, max) = support::compare(case, &split, rows);
        eprintln!("{name}: split vs whole max |d| {worst:.2e}; split vs exact mean {mean:.2e} max {max:.2e}");
        assert!(worst < 1e-3, "{name}: the split decode differs from the whole one by {worst}");
        assert!(mean < 0.05 && max < 0.5, "{name}: mean {mean} max {max} from the exact pass");
    }
}
