//! The CPU's copy of its weights (made at load unless `map_cpu_weights`): it holds exactly the
//! matrices the CPU streams (its layers', the head when every layer is on the CPU, the
//! experts it runs), and a model reads the same logits from it as from the file map: the
//! same bits, or where the copy packed Q4_K rows for the AVX-512 VNNI kernel (other sums in
//! another order), the same up to f32 rounding.

mod support;

use wllm::engine::GpuLayers;
use wllm::loaders::GgufFile;
use wllm::{LoadOptions, Logits, Model, SessionOptions};

fn logits(model: &Model) -> Vec<f32> {
    let mut s = model.session(&SessionOptions { n_ctx: Some(64), n_batch: 16 }).unwrap();
    let prompt: Vec<u32> = (1..40).map(|i| (i * 7) % 500).collect();
    let mut out = s.eval(&prompt, Logits::All).unwrap();
    out.extend(s.eval(&[3], Logits::Last).unwrap());
    out
}

/// Bytes of the matrices of layers `0..below`, plus the head (tied: the embedding).
fn matrix_bytes(file: &GgufFile, below: u32, head: bool) -> u64 {
    let cfg = wllm::loaders::ModelConfig::from_gguf(file).unwrap();
    let w = wllm::loaders::model::ModelWeights::resolve(&cfg, file).unwrap();
    let layers: u64 = w.layers[..below as usize].iter().flat_map(|l| l.matrices()).map(|m| m.n_bytes()).sum();
    let head = if head { w.output.as_ref().unwrap_or(&w.token_embd).n_bytes() } else { 0 };
    layers + head
}

/// Whether the loader packs Q4_K matrices on this CPU.
fn packs() -> bool {
    wllm::engine::cpu::packs(wllm::engine::cpu::Isa::best(), wllm::loaders::GgmlType::Q4_K, 16)
}

/// `copied` against `mapped`: equal, or when `packed` within 1e-2 (logits of these models are
/// below 30): the packed matrices' 16-token batches take passes of the packed kernels, whose
/// activations are quantized per token in 256-element groups, where the file's layout takes
/// the GEMM, which quantizes them per 32 elements; both stay within the i16 rounding bound of the
/// kernel tests.
fn same_logits(what: &str, copied: &[f32], mapped: &[f32], packed: bool) {
    assert_eq!(copied.len(), mapped.len());
    let tol = if packed { 1e-2 } else { 0.0 };
    for (i, (c, m)) in copied.iter().zip(mapped).enumerate() {
        assert!((c - m).abs() <= tol, "{what}: logit {i}: {c} from the copy, {m} from the map");
    }
    if packed {
        assert!(copied != mapped, "{what}: packed weights summed in the same order?");
    }
}

fn load(path: &std::path::Path, gpu_layers: u32, map_cpu_weights: bool, n_cpu_moe: u32) -> Model {
    let opts = LoadOptions {
        gpu_layers: GpuLayers::Count(gpu_layers),
        n_ctx: Some(64),
        map_cpu_weights,
        n_cpu_moe,
        ..Default::default()
    };
    Model::load_with(path, &opts, &mut |_, _| {}).unwrap()
}

#[test]
fn the_cpu_reads_the_same_logits_from_its_copy_as_from_the_map() {
    let has_gpu = wllm::engine::Gpu::new(&Default::default()).is_ok();
    for name in ["tiny-llama-q8_0.gguf", "tiny-gemma3-q4_k_m.gguf"] {
        let path = support::data_dir().join("models").join(name);
        let file = GgufFile::open(&path).unwrap();
        let n_layer = wllm::loaders::ModelConfig::from_gguf(&file).unwrap().n_layer;
        let mut placements = vec![0];
        if has_gpu {
            placements.extend([1, n_layer]);
        }
        for gpu_layers in placements {
            let cpu_layers = n_layer - gpu_layers;
            let copied = load(&path, gpu_layers, false, 0);
            let mapped = load(&path, gpu_layers, true, 0);
            let want = matrix_bytes(&file, cpu_layers, gpu_layers == 0);
            let got = copied.info().cpu_weight_copy.map(|c| c.0);
            assert_eq!(got, (want > 0).then_some(want), "{name}, {gpu_layers} GPU layers: bytes copied");
            assert!(mapped.info().cpu_weight_copy.is_none(), "{name}: copied though asked to map");
            let packed = copied.info().cpu_weights_packed;
            let q4k_on_cpu = name.contains("q4_k") && cpu_layers > 0;
            assert_eq!(
                packed > 0,
                packs() && q4k_on_cpu,
                "{name}, {gpu_layers} GPU layers: {packed} bytes packed"
            );
            assert_eq!(mapped.info().cpu_weights_packed, 0);
            let what = format!("{name}, {gpu_layers} GPU layers");
            same_logits(&what, &logits(&copied), &logits(&mapped), packed > 0);
        }
    }
}

#[test]
fn cpu_experts_beside_gpu_attention_read_from_the_copy() {
    if wllm::engine::Gpu::new(&Default::default()).is_err() {
        eprintln!("no GPU adapter: skipped");
        return;
    }
    let path = support::data_dir().join("models/tiny-qwen3moe-q4_k_m.gguf");
    let file = GgufFile::open(&path).unwrap();
    let cfg = wllm::loaders::ModelConfig::from_gguf(&file).unwrap();
    let w = wllm::loaders::model::ModelWeights::resolve(&cfg, &file).unwrap();
    let experts: u64 = w.layers.iter().flat_map(|l| l.ffn.iter()).map(|m| m.n_bytes()).sum();
    let copied = load(&path, cfg.n_layer, false, u32::MAX);
    let mapped = load(&path, cfg.n_layer, true, u32::MAX);
    assert_eq!(copied.info().cpu_weight_copy.map(|c| c.0), Some(experts));
    let packed = copied.info().cpu_weights_packed;
    assert_eq!(packed > 0, packs(), "{packed} bytes of experts packed");
    same_logits("CPU experts", &logits(&copied), &logits(&mapped), packed > 0);
}
