//! MoE files whose gate and up experts are one `ffn_gate_up_exps` tensor (llama.cpp's converter
//! with `--fuse-gate-up-exps`: per expert its gate rows, then its up rows) run as the same
//! model with the two tensors apart: the committed tiny Qwen3.5-MoE and Qwen3-MoE files are
//! rewritten fused, byte for byte otherwise, and give the same logits on the CPU and the GPU.

mod support;

use std::path::Path;

use wllm::loaders::gguf::GgufWriter;
use wllm::loaders::{GgmlType, GgufFile};
use wllm::{GpuLayers, LoadOptions, Logits, Model, SessionOptions};

const PROMPT: &[u32] = &[1, 15, 200, 33, 7, 480, 2, 99, 311, 64, 128, 5];
const DECODE: &[u32] = &[17, 402, 250];

/// `src` with each layer's gate and up experts fused, written to `out`.
fn write_fused(src: &GgufFile, out: &Path) -> usize {
    let mut w = GgufWriter::new();
    for k in src.keys().filter(|&k| k != "general.alignment") {
        w.add_metadata(k, src.value(k).unwrap()).unwrap();
    }
    let mut fused = 0;
    for t in src.tensors() {
        if t.name.ends_with(".ffn_up_exps.weight") {
            continue;
        }
        let Some(stem) = t.name.strip_suffix(".ffn_gate_exps.weight") else {
            w.add_tensor(&t.name, t.ggml_type, &t.dims, src.tensor_data(t)).unwrap();
            continue;
        };
        let up = src.tensors().iter().find(|u| u.name == format!("{stem}.ffn_up_exps.weight")).unwrap();
        assert_eq!((up.ggml_type, &up.dims), (t.ggml_type, &t.dims), "{stem}: gate and up differ");
        let half = src.tensor_data(t).len() / t.dims[2] as usize;
        let mut bytes = Vec::with_capacity(2 * src.tensor_data(t).len());
        for (g, u) in src.tensor_data(t).chunks_exact(half).zip(src.tensor_data(up).chunks_exact(half)) {
            bytes.extend_from_slice(g);
            bytes.extend_from_slice(u);
        }
        let dims = [t.dims[0], 2 * t.dims[1], t.dims[2]];
        w.add_tensor(format!("{stem}.ffn_gate_up_exps.weight"), t.ggml_type, &dims, bytes).unwrap();
        fused += 1;
    }
    w.write_file(out).unwrap();
    fused
}

fn logits(path: &Path, gpu_layers: GpuLayers) -> Vec<f32> {
    let opts = LoadOptions { gpu_layers, warm_up: false, ..Default::default() };
    let model = Model::load_with(path, &opts, &mut |_, _| {}).unwrap();
    let mut s = model.session(&SessionOptions { n_ctx: Some(64), n_batch: 16 }).unwrap();
    let mut got = s.eval(PROMPT, Logits::All).unwrap();
    for &t in DECODE {
        got.extend(s.eval(&[t], Logits::Last).unwrap());
    }
    got
}

#[test]
fn fused_gate_up_experts_run_as_the_separate_ones() {
    let dir = std::env::temp_dir().join(format!("wllm-fused-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let data = support::data_dir();
    for name in ["hybrid/models/tiny-qwen35moe-q8_0.gguf", "models/tiny-qwen3moe-q4_k_m.gguf"] {
        let path = data.join(name);
        let src = GgufFile::open(&path).unwrap();
        let fused_path = dir.join(Path::new(name).file_name().unwrap());
        let n = write_fused(&src, &fused_path);
        assert!(n > 0, "{name} has no experts to fuse");
        let f = GgufFile::open(&fused_path).unwrap();
        assert!(f.tensors().iter().all(|t| !t.name.contains("ffn_gate_exps")), "{name}");
        assert!(
            f.tensors().iter().any(|t| t.name.contains("ffn_gate_up_exps") && t.ggml_type != GgmlType::F32)
        );
        let mut placements = vec![("cpu", GpuLayers::Count(0))];
        if wllm::Gpu::new(&Default::default()).is_ok() {
            placements.push(("gpu", GpuLayers::All));
        }
        for (place, gpu_layers) in placements {
            let (apart, together) = (logits(&path, gpu_layers), logits(&fused_path, gpu_layers));
            assert_eq!(apart.len(), together.len());
            let worst = apart.iter().zip(&together).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst == 0.0, "{name} on {place}: fused experts change the logits by {worst}");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}
